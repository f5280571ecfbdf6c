package abuse_test

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

var (
	overloadFactor = flag.Float64("overload", 10, "offered check-in rate as a multiple of the measured capacity")
	maxOutstanding = flag.Int("max-outstanding", 4000, "most check-ins the load generator keeps open at once")
	inFlights      = flag.String("in-flight", "64,1000", "governor.max_in_flight of the nodes measured, one after the other (64 is the default; 1000 was)")
)

// BenchmarkCheckInOverload measures a real node (SQLite, the governor's
// defaults) under an open-loop check-in load of -overload times its
// measured capacity: first the capacity, with 8 machines checking in as
// fast as they can; then the overload, check-ins started at the offered
// rate whether or not earlier ones were answered (at most
// -max-outstanding open). It reports the admitted check-ins' latency (p50,
// p99, max), goodput (admitted answers per second), the refusals (503
// with Retry-After), an admin call's latency sampled every 100 ms during
// the overload, and the node's RSS: before, peak (VmHWM), 5 s and 30 s
// after.
func BenchmarkCheckInOverload(b *testing.B) {
	m := meshtest.New(b)
	// Plain node-to-node traffic, as bench/RESULTS.md measured it (mutual
	// TLS is meshtest's default; nodetls_test.go measures its cost).
	m.MTLS = false
	for _, f := range strings.Split(*inFlights, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			b.Fatalf("-in-flight %q: want a list of positive numbers", *inFlights)
		}
		b.Run(fmt.Sprintf("in-flight-%d", n), func(b *testing.B) { overloadNode(b, m, n) })
	}
}

// overloadNode measures one node whose client lane runs inFlight requests
// at once.
func overloadNode(b *testing.B, m *meshtest.Mesh, inFlight int) {
	hub := m.Start(meshtest.Spec{Name: fmt.Sprintf("hub-%d", inFlight), Role: node.RoleHub, Configure: func(c *node.Config) {
		c.Governor.MaxInFlight = inFlight
	}})
	defer hub.Stop(b)
	admin := hub.Admin(b)
	authTok := hub.AuthToken(b, "stable", "bench")
	tokens := make([]string, 64)
	for i := range tokens {
		tokens[i] = hub.Register(b, authTok, fmt.Sprintf("machine-over-%08d", i), "5.15.0-107.117-generic", "x86_64")
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *maxOutstanding, MaxConnsPerHost: *maxOutstanding}}
	rssBefore := procKB(b, hub.PID(), "VmRSS")
	heapBefore := heapInuseKB(b, hub.URL)

	offset := 0
	for b.Loop() {
		capacity := checkIns(b, client, hub.URL, tokens[:*checkers], nil)
		offset = len(hub.Log())
		offered := capacity * *overloadFactor
		res := overload(b, client, hub, admin, tokens, offered)
		peak := procKB(b, hub.PID(), "VmHWM")
		time.Sleep(5 * time.Second)
		after := procKB(b, hub.PID(), "VmRSS")
		heapAfter := heapInuseKB(b, hub.URL)
		time.Sleep(25 * time.Second)
		later := procKB(b, hub.PID(), "VmRSS")
		heapLater := heapInuseKB(b, hub.URL)

		p := func(q float64) time.Duration { return percentile(res.admitted, q) }
		b.ReportMetric(capacity, "capacity/s")
		b.ReportMetric(res.started/phase.Seconds(), "offered/s")
		b.ReportMetric(float64(len(res.admitted))/phase.Seconds(), "goodput/s")
		b.ReportMetric(float64(p(0.50).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(p(1).Microseconds())/1000, "max-ms")
		b.Logf("capacity %.0f/s; offered %.0f/s (%.0f started, %d admitted, %d refused 503, %d other, %d never answered in the phase)",
			capacity, res.started/phase.Seconds(), res.started, len(res.admitted), res.refused, res.other, res.unanswered)
		b.Logf("admitted check-ins: p50 %v, p99 %v, max %v; goodput %.0f/s", p(0.5), p(0.99), p(1), float64(len(res.admitted))/phase.Seconds())
		b.Logf("admin calls during the overload: %d answered, %d failed, p50 %v, max %v",
			len(res.adminOK), res.adminFail, percentile(res.adminOK, 0.5), percentile(res.adminOK, 1))
		b.Logf("node RSS: %d KiB before, peak %d KiB, %d KiB 5 s after, %d KiB 30 s after", rssBefore, peak, after, later)
		// RSS keeps pages the Go runtime has freed but not yet returned;
		// the heap in use says whether the node still holds the overload.
		b.Logf("node heap in use: %d KiB before, %d KiB 5 s after, %d KiB 30 s after", heapBefore, heapAfter, heapLater)
		b.ReportMetric(float64(heapLater-heapBefore), "heap-growth-KiB")
		served := servedDurations(hub.Log(), offset)
		b.Logf("in the node (access log, governor wait included): %d check-ins answered 200/404, p50 %v, p99 %v, max %v",
			len(served), percentile(served, 0.5), percentile(served, 0.99), percentile(served, 1))
		b.ReportMetric(float64(percentile(served, 0.99).Microseconds())/1000, "node-p99-ms")
		offset = len(hub.Log())
	}
}

type overloadResult struct {
	started                    float64
	admitted                   []time.Duration
	refused, other, unanswered int
	adminOK                    []time.Duration
	adminFail                  int
}

// overload starts check-ins at rate per second for one phase, and samples
// an admin call every 100 ms meanwhile.
func overload(b *testing.B, c *http.Client, hub *meshtest.Node, admin string, tokens []string, rate float64) overloadResult {
	ctx, cancel := context.WithTimeout(b.Context(), *phase)
	defer cancel()
	// Requests still open when the phase ends get 5 s more to be
	// answered, then count as unanswered.
	reqCtx, reqCancel := context.WithTimeout(b.Context(), *phase+5*time.Second)
	defer reqCancel()
	var (
		mu  sync.Mutex
		res overloadResult
		wg  sync.WaitGroup
		out atomic.Int64
	)
	wg.Go(func() {
		for ctx.Err() == nil {
			start := time.Now()
			err := hub.Call(ctx, http.MethodGet, "/v1/admin/tiers", admin, nil, nil)
			mu.Lock()
			if err == nil {
				res.adminOK = append(res.adminOK, time.Since(start))
			} else if ctx.Err() == nil {
				res.adminFail++
			}
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	})
	interval := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for i := 0; ctx.Err() == nil; i++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(interval)
		if out.Load() >= int64(*maxOutstanding) {
			continue // the generator's own bound: not offered
		}
		res.started++
		out.Add(1)
		tok := tokens[i%len(tokens)]
		wg.Go(func() {
			defer out.Add(-1)
			start := time.Now()
			req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, hub.URL+"/v1/client/patch?kernel=5.15.0-107.117-generic&arch=x86_64", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := c.Do(req)
			d := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.unanswered++
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK, http.StatusNotFound:
				res.admitted = append(res.admitted, d)
			case http.StatusServiceUnavailable:
				res.refused++
			default:
				res.other++
			}
		})
	}
	wg.Wait()
	return res
}

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q * float64(len(s)-1))
	return s[i]
}

// procKB reads a "Vm…: N kB" field of /proc/PID/status.
// heapInuseKB is the node's go_memstats_heap_inuse_bytes, from its
// /metrics, in KiB.
func heapInuseKB(b *testing.B, base string) int {
	req, err := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if err != nil {
		b.Fatal(err)
	}
	// Ask for the text format expfmt's text parser reads.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatalf("scrape the node's metrics: %v", err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		b.Fatalf("parse %s/metrics: %v", base, err)
	}
	f := fams["go_memstats_heap_inuse_bytes"]
	if f == nil || len(f.GetMetric()) == 0 {
		b.Fatalf("no go_memstats_heap_inuse_bytes in %s/metrics (status %d)", base, resp.StatusCode)
	}
	return int(f.GetMetric()[0].GetGauge().GetValue() / 1024)
}

func procKB(b *testing.B, pid int, field string) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatalf("read the node's memory: %v", err)
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
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// servedDurations reads the access log lines of answered check-ins past
// offset: how long the node itself took, from its first byte read to its
// last written.
func servedDurations(log string, offset int) []time.Duration {
	var out []time.Duration
	for _, line := range strings.Split(log[min(offset, len(log)):], "\n") {
		if !strings.Contains(line, `"msg":"request"`) || !strings.Contains(line, `"route":"/v1/client/patch"`) {
			continue
		}
		var e struct {
			Status   int   `json:"status"`
			Duration int64 `json:"duration"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || (e.Status != http.StatusOK && e.Status != http.StatusNotFound) {
			continue
		}
		out = append(out, time.Duration(e.Duration))
	}
	return out
}
