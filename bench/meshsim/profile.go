package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/pprof/profile"
)

// byLabel sums a profile's samples (value index vi) by the value of the
// pprof label key; samples without it go under "".
func byLabel(p *profile.Profile, key string, vi int) map[string]int64 {
	out := map[string]int64{}
	for _, s := range p.Sample {
		v := ""
		if l := s.Label[key]; len(l) > 0 {
			v = l[0]
		}
		out[v] += s.Value[vi]
	}
	return out
}

// goroutinesByNode counts the live goroutines of each node by their
// pprof label, and those of nobody's (the simulator, the runtime).
func goroutinesByNode() (map[string]int64, error) {
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 0); err != nil {
		return nil, err
	}
	p, err := profile.Parse(&buf)
	if err != nil {
		return nil, err
	}
	return byLabel(p, "node", 0), nil
}

// rssBytes is the process's resident set (VmRSS) from /proc: what the
// nodes cost the machine, the SQLite page caches and mmaps included,
// which the Go heap figures miss.
func rssBytes() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/self/status")
}

// memory is the process's memory at one moment.
type memory struct {
	RSS, HeapInuse, Sys int64
	Goroutines          int
	// FDs is the process's open file descriptors: sockets, the SQLite
	// files of every connection, blob files.
	FDs int
}

// readMemory reads it as it is, without forcing a collection first: with
// a thousand nodes over five processes a forced collection of each
// process's few hundred MiB, all at the same moment, is a burst of CPU the
// mesh being measured would not otherwise see. The heap figures then
// include garbage not yet collected: upper bounds.
func readMemory() (memory, error) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, err := rssBytes()
	if err != nil {
		return memory{}, err
	}
	fds, err := os.ReadDir("/proc/self/fd")
	return memory{RSS: rss, HeapInuse: int64(ms.HeapInuse), Sys: int64(ms.Sys), Goroutines: runtime.NumGoroutine(), FDs: len(fds)}, err
}

// processCPU is the CPU time (user and system) the process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
