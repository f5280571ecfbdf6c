package abuse_test

import (
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

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

var (
	overloadFactor = flag.Float64("overload", 10, "offered check-in rate as a multiple of the measured capacity")
	maxOutstanding = flag.Int("max-outstanding", 15000, "most check-ins the load generator keeps open at once")
	inFlights      = flag.String("in-flight", "64,1000", "governor.max_in_flight of the nodes measured, one after the other (64 is the default; 1000 was)")
	nodeCPU        = flag.Float64("node-cpu", 0.03, "share of one CPU the node may use during capacity and overload (a cgroup CPU quota; root needed), so that the generator can offer -overload times its capacity; 0 for no limit")
	idleTimeout    = flag.Duration("idle-timeout", 30*time.Second, "the node's server.idle_timeout: the heap just after the load is read before it has passed, the settled heap once it has")
	serviceBound   = flag.Duration("service-bound", time.Second, "the in-node p99 of admitted check-ins allowed beyond governor.queue_timeout")
	heapMarginKiB  = flag.Int("heap-margin-kib", 2048, "how far above its baseline the node's heap may be once settled")
	idleConnsFlag  = flag.Int("max-idle-conns", 0, "the node's server.max_idle_conns; 0 keeps the default (a large number measures a node without the bound)")
	clientTimeout  = flag.Duration("client-timeout", 2*time.Second, "how long a generated check-in waits for its answer before it gives up, as a machine's client would")
	scavengeWait   = flag.Duration("scavenge-wait", 30*time.Second, "how long after the settled heap the RSS is read again, for the runtime to return freed memory")
)

// idleConnKiB is what one idle keep-alive connection holds in a
// node's heap, rounded up: 4,000 of them held 49 MiB (12 KiB each; a heap
// profile of the node, bench/RESULTS.md).
const idleConnKiB = 16

// BenchmarkCheckInOverload measures a real node (SQLite, the governor's
// defaults) under an open-loop check-in load of -overload times its
// measured capacity. The node runs in a cgroup that holds it to -node-cpu
// of one CPU, so that the generator, sharing the machine's cores, can
// offer that many times what it serves. First the capacity, with 8
// machines checking in as fast as they can; then the overload, check-ins
// started at the offered rate whether or not earlier ones were answered
// (at most -max-outstanding open, each given up after -client-timeout).
// It reports the admitted check-ins' latency (p50, p99, max) as clients
// saw it and in the node, goodput (admitted answers per second), the
// refusals (503 with Retry-After), an admin call's latency sampled every
// 100 ms during the overload, and the node's memory: the live heap (what
// the last GC marked) and heap in use after a GC before the load, just
// after it (once the node has read what was sent to it and
// server.read_header_timeout has passed) and once server.idle_timeout
// (-idle-timeout) has passed; the heap's peak (heap_sys); goroutines;
// RSS before, peak (VmHWM), then and -scavenge-wait later.
//
// It fails unless the offer reached -overload times the capacity, the
// admitted check-ins' in-node p99 stayed within governor.queue_timeout
// plus -service-bound, every admin call was answered, and the live heap
// came back to the baseline plus -heap-margin-kib plus what the Go
// runtime keeps of the load's goroutines (it never frees a goroutine's
// record, about half a KiB; 1 KiB is allowed per check-in open at the
// peak): just after the load with server.max_idle_conns idle connections
// more allowed, and once idle_timeout has passed without them.
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
		c.Server.IdleTimeout = *idleTimeout
		if *idleConnsFlag > 0 {
			c.Server.MaxIdleConns = *idleConnsFlag
		}
	}})
	var limit *cpuLimit
	if *nodeCPU > 0 {
		var err error
		if limit, err = newCPULimit(fmt.Sprintf("patchmesh-bench-%d", os.Getpid()), *nodeCPU); err != nil {
			hub.Stop(b)
			b.Fatal(err)
		}
		// Deferred first, so run last: the kernel removes a cgroup only
		// once its process has ended.
		defer func() {
			if err := limit.remove(); err != nil {
				b.Errorf("remove the node's cgroup: %v", err)
			}
		}()
	}
	defer hub.Stop(b)
	admin := hub.Admin(b)
	authTok := hub.AuthToken(b, "stable", "bench")
	tokens := make([]string, 64)
	for i := range tokens {
		tokens[i] = hub.Register(b, authTok, fmt.Sprintf("machine-over-%08d", i), "5.15.0-107.117-generic", "x86_64")
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *maxOutstanding, MaxConnsPerHost: *maxOutstanding}}
	cfg := hub.Config
	bound := cfg.Governor.QueueTimeout + *serviceBound
	idleKiB := cfg.Server.MaxIdleConns * idleConnKiB

	offset := 0
	for b.Loop() {
		base := memoryAfterGC(b, hub.URL, time.Minute)
		rssBefore := procKB(b, hub.PID(), "VmRSS")
		heapProfile(b, hub)
		if limit != nil {
			if err := limit.apply(); err != nil {
				b.Fatal(err)
			}
			if err := limit.add(hub.PID()); err != nil {
				b.Fatal(err)
			}
		}
		capacity := checkIns(b, client, hub.URL, tokens[:*checkers], nil)
		offset = len(hub.Log())
		offered := capacity * *overloadFactor
		res := overload(b, client, hub, admin, tokens, offered)
		loadEnd := time.Now()
		// The limit is for the load: memory does not depend on it, and
		// scraping a throttled node to its next GC would take long.
		if limit != nil {
			if err := limit.lift(); err != nil {
				b.Fatal(err)
			}
		}
		atEnd, _ := readMemory(b.Context(), hub.URL)
		// A node held to a share of a CPU may still be reading requests
		// whose clients gave up, and connections on which the client
		// sent nothing wait read_header_timeout: memory then serves work
		// or is bounded by that timeout, not retention. Wait for both,
		// down to a goroutine per idle connection it may keep and a few
		// more, and at least read_header_timeout, so that the figure is
		// taken at the same point with the bound and without.
		drainBound := base.goroutines + min(cfg.Server.MaxIdleConns, *maxOutstanding) + 32
		waitGoroutines(b, hub.URL, drainBound, time.Minute)
		time.Sleep(time.Until(loadEnd.Add(cfg.Server.ReadHeaderTimeout + time.Second)))
		drainedAt := time.Now()
		if drainedAt.Sub(loadEnd)+2*time.Second > *idleTimeout {
			b.Logf("the drain took %v: idle_timeout %v may have closed idle connections before the figure just after the load", drainedAt.Sub(loadEnd), *idleTimeout)
		}
		after := memoryAfterGC(b, hub.URL, time.Minute)
		rssAfter := procKB(b, hub.PID(), "VmRSS")
		heapProfile(b, hub)
		time.Sleep(time.Until(drainedAt.Add(*idleTimeout + time.Second)))
		settled := memoryAfterGC(b, hub.URL, time.Minute)
		settledAt := time.Now()
		rssSettled := procKB(b, hub.PID(), "VmRSS")
		heapProfile(b, hub)
		time.Sleep(*scavengeWait)
		rssLater := procKB(b, hub.PID(), "VmRSS")
		// The high-water mark, read last: a throttled node grows most
		// once the limit is lifted and it reads what queued meanwhile.
		rssPeak := procKB(b, hub.PID(), "VmHWM")

		p := func(q float64) time.Duration { return percentile(res.admitted, q) }
		served := servedDurations(hub.Log(), offset)
		nodeP99 := percentile(served, 0.99)
		offeredRate := res.started / phase.Seconds()
		b.ReportMetric(capacity, "capacity/s")
		b.ReportMetric(offeredRate, "offered/s")
		b.ReportMetric(float64(len(res.admitted))/phase.Seconds(), "goodput/s")
		b.ReportMetric(float64(p(0.50).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(p(1).Microseconds())/1000, "max-ms")
		b.ReportMetric(float64(nodeP99.Microseconds())/1000, "node-p99-ms")
		b.ReportMetric(float64(settled.heapLiveKB-base.heapLiveKB), "heap-growth-KiB")
		b.Logf("node CPU limit %v of one core; capacity %.0f/s; offered %.0f/s = %.1fx (%.0f started, %d admitted, %d refused 503, %d other, %d given up after -client-timeout %v)",
			*nodeCPU, capacity, offeredRate, offeredRate/capacity, res.started, len(res.admitted), res.refused, res.other, res.unanswered, *clientTimeout)
		b.Logf("generator: at most %d check-ins open at once, %d not started for -max-outstanding %d", res.peakOpen, res.skipped, *maxOutstanding)
		b.Logf("admitted check-ins, client-seen: p50 %v, p99 %v, max %v; goodput %.0f/s", p(0.5), p(0.99), p(1), float64(len(res.admitted))/phase.Seconds())
		b.Logf("in the node (access log, governor wait included): %d check-ins answered 200/404, p50 %v, p99 %v, max %v; bound on p99 %v",
			len(served), percentile(served, 0.5), nodeP99, percentile(served, 1), bound)
		b.Logf("admin calls during the overload: %d answered, %d failed, p50 %v, max %v",
			len(res.adminOK), res.adminFail, percentile(res.adminOK, 0.5), percentile(res.adminOK, 1))
		b.Logf("node heap live after a GC (in use): %d KiB (%d) before; peak %d KiB (heap_sys; in use, sampled: %d KiB); %d KiB (%d) just after; %d KiB (%d) at %v, past idle_timeout %v",
			base.heapLiveKB, base.heapInuseKB, after.heapSysKB, res.heapPeakKB, after.heapLiveKB, after.heapInuseKB,
			settled.heapLiveKB, settled.heapInuseKB, settledAt.Sub(loadEnd).Round(time.Second), *idleTimeout)
		b.Logf("node goroutines: %d before, peak sampled %d, %d at the load's end, %d after %v of drain, %d settled",
			base.goroutines, res.goroutinesPeak, atEnd.goroutines, after.goroutines, drainedAt.Sub(loadEnd).Round(100*time.Millisecond), settled.goroutines)
		b.Logf("node RSS: %d KiB before, peak %d KiB, %d KiB just after, %d KiB settled, %d KiB %v later",
			rssBefore, rssPeak, rssAfter, rssSettled, rssLater, *scavengeWait)

		if offeredRate < 0.95**overloadFactor*capacity {
			b.Errorf("offered %.0f/s, %.1fx the capacity %.0f/s: want %.0fx (a lower -node-cpu leaves the generator more)", offeredRate, offeredRate/capacity, capacity, *overloadFactor)
		}
		if nodeP99 > bound {
			b.Errorf("admitted check-ins' p99 in the node %v: want at most %v (queue_timeout %v + %v)", nodeP99, bound, cfg.Governor.QueueTimeout, *serviceBound)
		}
		if res.adminFail > 0 || len(res.adminOK) == 0 {
			b.Errorf("admin calls during the overload: %d answered, %d failed; want all answered", len(res.adminOK), res.adminFail)
		}
		// The Go runtime keeps every goroutine it made for reuse, about
		// half a KiB each, and never frees them: a connection the node
		// served had at most two (its own and its background read).
		gKiB := int(res.peakOpen)
		if lim := base.heapLiveKB + idleKiB + gKiB + *heapMarginKiB; after.heapLiveKB > lim {
			b.Errorf("live heap just after the load %d KiB: want at most %d (baseline %d + %d idle connections × %d KiB + goroutine records for %d connections %d + margin %d)",
				after.heapLiveKB, lim, base.heapLiveKB, cfg.Server.MaxIdleConns, idleConnKiB, res.peakOpen, gKiB, *heapMarginKiB)
		}
		if lim := base.heapLiveKB + gKiB + *heapMarginKiB; settled.heapLiveKB > lim {
			b.Errorf("live heap once idle_timeout passed %d KiB: want at most %d (baseline %d + goroutine records for %d connections %d + margin %d)",
				settled.heapLiveKB, lim, base.heapLiveKB, res.peakOpen, gKiB, *heapMarginKiB)
		}
		offset = len(hub.Log())
	}
}

type overloadResult struct {
	started                    float64
	admitted                   []time.Duration
	refused, other, unanswered int
	adminOK                    []time.Duration
	adminFail                  int
	heapPeakKB, goroutinesPeak int
	peakOpen                   int64 // most check-ins open at once
	skipped                    int   // not started: -max-outstanding open
}

// overload starts check-ins at rate per second for one phase, and samples
// an admin call every 100 ms and the node's memory every second
// meanwhile.
func overload(b *testing.B, c *http.Client, hub *meshtest.Node, admin string, tokens []string, rate float64) overloadResult {
	ctx, cancel := context.WithTimeout(b.Context(), *phase)
	defer cancel()
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
	wg.Go(func() {
		for ctx.Err() == nil {
			m, err := readMemory(ctx, hub.URL)
			if err != nil {
				continue // a node too busy to answer in time: no sample
			}
			mu.Lock()
			res.heapPeakKB = max(res.heapPeakKB, m.heapInuseKB)
			res.goroutinesPeak = max(res.goroutinesPeak, m.goroutines)
			mu.Unlock()
			time.Sleep(time.Second)
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
			res.skipped++
			continue // the generator's own bound: not offered
		}
		res.started++
		res.peakOpen = max(res.peakOpen, out.Add(1))
		tok := tokens[i%len(tokens)]
		wg.Go(func() {
			defer out.Add(-1)
			start := time.Now()
			// Past the phase too: a check-in started in it has its
			// whole client timeout to be answered.
			rctx, cancel := context.WithTimeout(b.Context(), *clientTimeout)
			defer cancel()
			req, _ := http.NewRequestWithContext(rctx, http.MethodGet, hub.URL+"/v1/client/patch?kernel=5.15.0-107.117-generic&arch=x86_64", nil)
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
