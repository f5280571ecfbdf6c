package abuse_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// TestNodeMemoryReturnsAfterABurst runs a real node (defaults: idle
// connections bounded to server.max_idle_conns, idle_timeout 2m) through
// a burst of 1,000 machines checking in at once, each on its own
// connection that the clients then keep open, as keep-alive clients do.
// It wants every admin call made meanwhile answered, and, within 30 s of
// the burst, the node back to its baseline: its goroutines to at most one
// per idle connection it may keep (plus a few), and its live heap after a
// GC to the baseline plus what those connections and the Go runtime's
// kept goroutine records hold, plus 2 MiB. Before the bound the node kept
// all 1,000 connections, about 12 MiB, until idle_timeout.
// BenchmarkCheckInOverload measures the same under a 10x overload.
func TestNodeMemoryReturnsAfterABurst(t *testing.T) {
	const machines = 1000
	m := meshtest.New(t)
	m.MTLS = false
	hub := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub})
	admin := hub.Admin(t)
	authTok := hub.AuthToken(t, "stable", "burst")
	tokens := make([]string, 16)
	for i := range tokens {
		tokens[i] = hub.Register(t, authTok, fmt.Sprintf("machine-burst-%08d", i), "5.15.0-107.117-generic", "x86_64")
	}
	idle := hub.Config.Server.MaxIdleConns
	if idle >= machines/2 {
		t.Fatalf("server.max_idle_conns %d: the burst of %d would not go past it", idle, machines)
	}
	base := memoryAfterGC(t, hub.URL, 30*time.Second)

	var dials atomic.Int64
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: machines,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
	}}
	defer client.CloseIdleConnections()

	ctx, stop := context.WithCancel(t.Context())
	var adminOK, adminFail atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			if err := hub.Call(ctx, http.MethodGet, "/v1/admin/tiers", admin, nil, nil); err == nil {
				adminOK.Add(1)
			} else if ctx.Err() == nil {
				adminFail.Add(1)
				t.Logf("admin call during the burst: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	// All machines start together, so that each needs a connection of
	// its own; three check-ins each, the later ones on the kept one.
	start := make(chan struct{})
	var answered, refused, failed atomic.Int64
	var machinesWG sync.WaitGroup
	for i := range machines {
		machinesWG.Go(func() {
			<-start
			for range 3 {
				switch status := checkIn(ctx, client, hub.URL, tokens[i%len(tokens)]); status {
				case http.StatusOK, http.StatusNotFound:
					answered.Add(1)
				case http.StatusServiceUnavailable:
					refused.Add(1)
				default:
					failed.Add(1)
				}
			}
		})
	}
	close(start)
	machinesWG.Wait()
	time.Sleep(300 * time.Millisecond) // one more admin call after the burst
	stop()
	wg.Wait()
	t.Logf("burst: %d connections opened, %d check-ins answered, %d refused 503, %d failed; admin calls %d answered, %d failed",
		dials.Load(), answered.Load(), refused.Load(), failed.Load(), adminOK.Load(), adminFail.Load())
	if dials.Load() < int64(2*idle) {
		t.Fatalf("the burst opened %d connections: want at least %d, twice server.max_idle_conns, for the test to mean anything", dials.Load(), 2*idle)
	}
	if adminFail.Load() > 0 || adminOK.Load() == 0 {
		t.Errorf("admin calls during the burst: %d answered, %d failed; want every one answered", adminOK.Load(), adminFail.Load())
	}
	if answered.Load() == 0 {
		t.Errorf("no check-in answered 200/404 in the burst (%d refused, %d failed)", refused.Load(), failed.Load())
	}

	// The clients keep all their connections open: only the node's bound
	// can bring it back.
	want := base.goroutines + idle + 32
	got := waitGoroutines(t, hub.URL, want, 30*time.Second)
	after := memoryAfterGC(t, hub.URL, 30*time.Second)
	gKiB := int(dials.Load()) // two goroutine records of half a KiB per connection, at most
	lim := base.heapLiveKB + idle*idleConnKiB + gKiB + 2048
	t.Logf("node: goroutines %d before, %d after; live heap %d KiB before, %d KiB after (bound %d)",
		base.goroutines, got, base.heapLiveKB, after.heapLiveKB, lim)
	if after.heapLiveKB > lim {
		t.Errorf("live heap after the burst %d KiB: want at most %d (baseline %d + %d idle connections × %d KiB + goroutine records %d + 2048)",
			after.heapLiveKB, lim, base.heapLiveKB, idle, idleConnKiB, gKiB)
	}
}

// checkIn makes one check-in and returns its status, 0 if it got none.
func checkIn(ctx context.Context, c *http.Client, base, token string) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/client/patch?kernel=5.15.0-107.117-generic&arch=x86_64", nil)
	if err != nil {
		return 0
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
