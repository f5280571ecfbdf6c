//go:build pprofenv

package main

// A build for profiling only (go build -tags pprofenv): every process
// started with PMPROF_DIR set writes a CPU profile of its first
// PMPROF_SECONDS seconds (default 30) to PMPROF_DIR/<name>.cpu.pprof,
// <name> being the directory of its --config file (a meshtest node's
// name) or its PID. The variable is outside PATCHMESH_ so that meshtest,
// which strips those, passes it on to the nodes a benchmark starts.
// Release builds hold none of this.

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"time"
)

func init() {
	dir := os.Getenv("PMPROF_DIR")
	if dir == "" {
		return
	}
	name := strconv.Itoa(os.Getpid())
	for i, a := range os.Args {
		if a == "--config" && i+1 < len(os.Args) {
			name = filepath.Base(filepath.Dir(os.Args[i+1]))
		}
	}
	secs, err := strconv.Atoi(os.Getenv("PMPROF_SECONDS"))
	if err != nil || secs <= 0 {
		secs = 30
	}
	f, err := os.Create(filepath.Join(dir, name+".cpu.pprof"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "pprofenv:", err)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "pprofenv:", err)
		return
	}
	time.AfterFunc(time.Duration(secs)*time.Second, func() {
		pprof.StopCPUProfile()
		f.Close()
	})
}
