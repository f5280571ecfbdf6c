package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestRetryAfterFromDrain: the advised wait is the requests ahead over the
// measured drain rate, rounded up and clamped.
func TestRetryAfterFromDrain(t *testing.T) {
	cases := []struct {
		name  string
		ahead int
		rate  float64
		want  int
	}{
		{"nothing measured", 500, 0, retryAfterSeconds},
		{"fast drain", 10, 1000, 1},
		{"1500 ahead at 500/s", 1500, 500, 3},
		{"rounds up", 1001, 500, 3},
		{"capped", 1_000_000, 10, maxRetryAfter},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := retryAfter(c.ahead, c.rate); got != c.want {
				t.Fatalf("retryAfter(%d, %v): want %d, got %d", c.ahead, c.rate, c.want, got)
			}
		})
	}
}

// TestDrainMeterAverages: a steady 100 releases a second reads as about
// 100/s once a few windows have closed, and a long idle forgets it.
func TestDrainMeterAverages(t *testing.T) {
	var d drainMeter
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	now := t0
	for i := range 500 { // 5 s at 100/s
		now = t0.Add(time.Duration(i) * 10 * time.Millisecond)
		d.add(now)
	}
	if r := d.rate(now.Add(10 * time.Millisecond)); r < 90 || r > 101 {
		t.Fatalf("rate after 5s at 100/s: want about 100, got %v", r)
	}
	if r := d.rate(now.Add(time.Minute)); r != 0 {
		t.Fatalf("rate after a minute idle: want 0, got %v", r)
	}
}

// TestLaneFor: operators' paths take the admin lane, logins theirs, blob
// downloads theirs, and everything else the client lane.
func TestLaneFor(t *testing.T) {
	g := newGovernor(GovernorConfig{}, NewMetrics(nil))
	cases := []struct{ path, want string }{
		{"/v1/admin/tiers", laneAdmin},
		{"/v1/admin/login", laneLogin},
		{"/v1/dashboard/snapshot", laneAdmin},
		{"/v1/dashboard/login", laneLogin},
		{"/v1/topology", laneAdmin},
		{"/v1/sync/status", laneAdmin},
		{"/v1/sync/feed", laneClient},
		{"/v1/client/register", laneClient},
		{"/v1/blobs/x", laneBlobs},
		{"/v1/peer/blobs/x", laneBlobs},
		{"/v1/client/patch", laneClient},
	}
	for _, c := range cases {
		r := httptestRequest(c.path)
		if got := g.laneFor(r).name; got != c.want {
			t.Errorf("laneFor(%s): want %s, got %s", c.path, c.want, got)
		}
	}
}

func httptestRequest(path string) *http.Request {
	return httptest.NewRequest(http.MethodGet, path, nil)
}

// TestLaneServesNewestAndPushesOutOldest: with one slot and room for two
// waiters, a fourth request pushes the oldest waiter out (refused at once,
// with Retry-After), and released slots go to the newest waiter first.
func TestLaneServesNewestAndPushesOutOldest(t *testing.T) {
	l := newLane(laneClient, 1, 2, time.Minute, NewMetrics(nil))
	ctx := t.Context()
	if err := l.acquire(ctx); err != nil {
		t.Fatalf("first acquire: %v", err)
	}
	got := make(chan string, 3)
	waitQueued := func(n int) {
		t.Helper()
		for range 2000 { // up to 10 s
			l.mu.Lock()
			q := len(l.waiters)
			l.mu.Unlock()
			if q == n {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("want %d waiters queued, gave up", n)
	}
	start := func(name string, queued int) {
		go func() {
			if err := l.acquire(ctx); err != nil {
				got <- name + " refused"
				return
			}
			got <- name
		}()
		waitQueued(queued)
	}
	start("b", 1)
	start("c", 2)
	start("d", 2) // pushes b out
	if g := <-got; g != "b refused" {
		t.Fatalf("the oldest waiter when the queue overflowed: want refused, got %q", g)
	}
	l.release()
	if g := <-got; g != "d" {
		t.Fatalf("first release: want the newest waiter d served, got %q", g)
	}
	l.release()
	if g := <-got; g != "c" {
		t.Fatalf("second release: want c, got %q", g)
	}
	l.release()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running != 0 || len(l.waiters) != 0 {
		t.Fatalf("after every release: want the lane empty, got %d running, %d waiting", l.running, len(l.waiters))
	}
}

// TestLaneQueueTimeoutRefuses: a waiter whose wait runs out is refused and
// leaves the queue; the slot then goes back to the pool.
func TestLaneQueueTimeoutRefuses(t *testing.T) {
	l := newLane(laneClient, 1, 4, 10*time.Millisecond, NewMetrics(nil))
	if err := l.acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	err := l.acquire(t.Context())
	var oe *overloadedError
	if !errors.As(err, &oe) || oe.retryAfter < 1 {
		t.Fatalf("a wait that ran out: want an overload refusal with a Retry-After, got %v", err)
	}
	l.release()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running != 0 || len(l.waiters) != 0 {
		t.Fatalf("after the timeout and the release: want the lane empty, got %d running, %d waiting", l.running, len(l.waiters))
	}
}
