package api

import (
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

// TestLaneFor: operators' paths take the admin lane, logins and everything
// else the client lane.
func TestLaneFor(t *testing.T) {
	g := newGovernor(GovernorConfig{}, NewMetrics(nil))
	cases := []struct{ path, want string }{
		{"/v1/admin/tiers", laneAdmin},
		{"/v1/admin/login", laneClient},
		{"/v1/dashboard/snapshot", laneAdmin},
		{"/v1/dashboard/login", laneClient},
		{"/v1/topology", laneAdmin},
		{"/v1/sync/status", laneAdmin},
		{"/v1/sync/feed", laneClient},
		{"/v1/client/register", laneClient},
		{"/v1/blobs/x", laneClient},
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
