package abuse_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/patchmesh/patchmesh/internal/meshtest"
)

// nodeMemory is what a node's /metrics says of its memory.
type nodeMemory struct {
	heapLiveKB  int     // go_gc_heap_live_bytes: what the last GC found live
	heapInuseKB int     // go_memstats_heap_inuse_bytes
	heapSysKB   int     // go_memstats_heap_sys_bytes: the heap's address space, which never shrinks, so its peak
	goroutines  int     // go_goroutines
	gcs         float64 // go_gc_duration_seconds_count: GC cycles ended
}

// scrapeMemory reads the node's memory figures from its /metrics.
func scrapeMemory(tb testing.TB, base string) nodeMemory {
	tb.Helper()
	m, err := readMemory(context.Background(), base)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// readMemory is scrapeMemory for goroutines other than the test's, and
// for a node that may not answer (ctx ends the wait).
func readMemory(ctx context.Context, base string) (nodeMemory, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nodeMemory{}, err
	}
	// Ask for the text format expfmt's text parser reads.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return nodeMemory{}, fmt.Errorf("scrape the node's metrics: %w", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nodeMemory{}, fmt.Errorf("parse %s/metrics (status %d): %w", base, resp.StatusCode, err)
	}
	value := func(name string) float64 {
		f := fams[name]
		if f == nil || len(f.GetMetric()) == 0 {
			if err == nil {
				err = fmt.Errorf("no %s in %s/metrics (status %d)", name, base, resp.StatusCode)
			}
			return 0
		}
		if s := f.GetMetric()[0].GetSummary(); s != nil {
			return float64(s.GetSampleCount())
		}
		return f.GetMetric()[0].GetGauge().GetValue()
	}
	m := nodeMemory{
		heapLiveKB:  int(value("go_gc_heap_live_bytes") / 1024),
		heapInuseKB: int(value("go_memstats_heap_inuse_bytes") / 1024),
		heapSysKB:   int(value("go_memstats_heap_sys_bytes") / 1024),
		goroutines:  int(value("go_goroutines")),
		gcs:         value("go_gc_duration_seconds"),
	}
	return m, err
}

// scrapeClient keeps no connection: the scrapes must not be what holds
// the node's memory.
var scrapeClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// memoryAfterGC returns the node's memory once two GC cycles have ended
// since the call, so that at least one began after it: the live heap is
// then what the node holds now. An idle node collects only every 2
// minutes (the Go runtime's forced GC), so the scrapes themselves, each
// allocating the metrics text in the node, drive the heap to its next GC.
// The heap in use is read a second later, once the runtime has swept
// what the cycle freed (until then it still counts it). If the node's
// goroutines fell meanwhile (connections closing), the cycles may have
// marked what those held, so it tries again, at most 5 times. Bounded:
// at most within for each try.
func memoryAfterGC(tb testing.TB, base string, within time.Duration) nodeMemory {
	tb.Helper()
	var m nodeMemory
	for range 5 {
		start := scrapeMemory(tb, base)
		deadline := time.Now().Add(within)
		for {
			m = scrapeMemory(tb, base)
			if m.gcs >= start.gcs+2 {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("the node ran %v GC cycles in %v of scraping; want 2", m.gcs-start.gcs, within)
			}
		}
		time.Sleep(time.Second)
		m = scrapeMemory(tb, base)
		if m.goroutines >= start.goroutines-4 {
			return m
		}
	}
	return m
}

// waitGoroutines waits, at most within, for the node to run at most want
// goroutines, and returns how many it ran at the end; a node still above
// want then fails the benchmark.
func waitGoroutines(tb testing.TB, base string, want int, within time.Duration) int {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		m, err := readMemory(context.Background(), base)
		if err == nil && m.goroutines <= want {
			return m.goroutines
		}
		if time.Now().After(deadline) {
			tb.Errorf("the node still runs %d goroutines %v after the load (scrape error %v); want at most %d", m.goroutines, within, err, want)
			return m.goroutines
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// procKB reads a "Vm…: N kB" field of /proc/PID/status.
func procKB(tb testing.TB, pid int, field string) int {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatalf("read the node's memory: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err == nil {
				return n
			}
		}
	}
	tb.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// heapProfile asks a node of the profiling build (PMPROF_DIR set, see
// cmd/patchmesh/profile_pprofenv.go) to write its live heap; without
// PMPROF_DIR it does nothing, as a release build would die of the signal.
func heapProfile(tb testing.TB, n *meshtest.Node) {
	tb.Helper()
	if os.Getenv("PMPROF_DIR") == "" {
		return
	}
	if err := syscall.Kill(n.PID(), syscall.SIGUSR1); err != nil {
		tb.Fatalf("ask the node for a heap profile: %v", err)
	}
	time.Sleep(time.Second) // the GC and the write
}
