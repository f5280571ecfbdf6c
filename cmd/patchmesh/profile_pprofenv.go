//go:build pprofenv

package main

// A build for profiling only (go build -tags pprofenv): every process
// started with PMPROF_DIR set writes a CPU profile of its first
// PMPROF_SECONDS seconds (default 30) to PMPROF_DIR/<name>.cpu.pprof,
// <name> being the directory of its --config file (a meshtest node's
// name) or its PID; and on each SIGUSR1 it collects garbage, then writes
// the live heap to PMPROF_DIR/<name>.heap.<n>.pprof (n counting from 1)
// and its goroutines to <name>.goroutine.<n>.txt, so that a benchmark can
// ask what a node still holds after a load. The
// variable is outside PATCHMESH_ so that meshtest, which strips those,
// passes it on to the nodes a benchmark starts. Release builds hold none
// of this.

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"
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
	go heapOnSignal(dir, name)
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

// heapOnSignal writes a heap profile on every SIGUSR1. The GC first makes
// the profile's in-use figures the live heap rather than whatever the
// last cycle, possibly before a load ended, left counted.
func heapOnSignal(dir, name string) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	for n := 1; ; n++ {
		<-sig
		runtime.GC()
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s.heap.%d.pprof", name, n)))
		if err != nil {
			fmt.Fprintln(os.Stderr, "pprofenv:", err)
			continue
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			fmt.Fprintln(os.Stderr, "pprofenv:", err)
		}
		f.Close()
		g, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s.goroutine.%d.txt", name, n)))
		if err != nil {
			fmt.Fprintln(os.Stderr, "pprofenv:", err)
			continue
		}
		if err := pprof.Lookup("goroutine").WriteTo(g, 1); err != nil {
			fmt.Fprintln(os.Stderr, "pprofenv:", err)
		}
		g.Close()
	}
}
