package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// heldBeats stands in for a node's puller memory of the newest heartbeat
// (federation.Puller, covered by the federation tests): it serves the
// envelope a test set, signed for real.
// Until a test sets one, it serves a heartbeat signed when asked
// (liveBeats); after withhold, none at all.
type heldBeats struct {
	mu   sync.Mutex
	env  *federation.Envelope
	none bool
	t    *testing.T
}

func (h *heldBeats) Latest(tier string) (federation.Envelope, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.none:
		return federation.Envelope{}, false
	case h.env == nil:
		return liveBeats{h.t}.Latest(tier)
	}
	return *h.env, true
}

func (h *heldBeats) set(env federation.Envelope) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.env, h.none = &env, false
}

// withhold makes the node send no heartbeat, as a withholding node would.
func (h *heldBeats) withhold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.env, h.none = nil, true
}

// beat signs a heartbeat of tier with key, dated at, announcing head.
func beat(t *testing.T, key ed25519.PrivateKey, tier string, head int64, at time.Time) federation.Envelope {
	t.Helper()
	env, err := federation.SignHeartbeat(key, tier, head, at)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// A node whose heartbeat froze is passed over like a failing one; when
// every node is frozen, the refresh still does its work and reports stale.
func TestRefreshMovesOnFromAFrozenNodeAndReportsStale(t *testing.T) {
	m := newMesh(t, 0, 300*time.Millisecond)
	frozen, fresh := m.nodes[0], m.nodes[1]
	now := time.Now()
	m.beats[0].set(beat(t, testHubKey, meshTier, 5, now.Add(-time.Hour)))
	m.beats[1].set(beat(t, testHubKey, meshTier, 7, now))
	c := m.client(0, func(c *Config) { c.StaleAfter = 10 * time.Minute })
	if got := m.state(c).Nodes[0].URL; got != m.urls[0] {
		t.Fatalf("nearest node = %s, want the frozen one (%s) first, so that it is tried", got, m.urls[0])
	}

	res, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch})
	if err != nil || res.Stale != "" || res.State != catalog.StateNothingToApply {
		t.Fatalf("Refresh with one fresh node = %+v, %v; want nothing-to-apply, fresh, no error", res, err)
	}
	if frozen.count(http.MethodGet, "/v1/client/patch") != 1 || fresh.count(http.MethodGet, "/v1/client/patch") != 1 {
		t.Errorf("patch asked at the frozen node %d times and at the fresh one %d times, want 1 and 1",
			frozen.count(http.MethodGet, "/v1/client/patch"), fresh.count(http.MethodGet, "/v1/client/patch"))
	}
	st := m.state(c)
	if st.Heartbeat == nil || st.Heartbeat.TierSeq != 7 || st.Heartbeat.Node != m.urls[1] || st.Stale != "" {
		t.Errorf("state heartbeat = %+v, stale %q; want the fresh node's (hub seq 7) and not stale", st.Heartbeat, st.Stale)
	}

	// Now the fresh node freezes too, and hands back an older heartbeat.
	m.beats[1].set(beat(t, testHubKey, meshTier, 6, now.Add(-30*time.Minute)))
	res, err = c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch})
	if !errors.Is(err, ErrStale) || res.Stale == "" || res.State != catalog.StateNothingToApply {
		t.Fatalf("Refresh with every node frozen = %+v, %v; want nothing-to-apply reported and ErrStale", res, err)
	}
	f, err := c.Freshness()
	if err != nil || f.Stale == "" || f.Heartbeat == nil || f.Heartbeat.TierSeq != 7 {
		t.Errorf("Freshness = %+v, %v; want stale, keeping the newest heartbeat seen (hub seq 7)", f, err)
	}

	// Fresh again: the stale mark goes.
	m.beats[0].set(beat(t, testHubKey, meshTier, 8, time.Now()))
	if res, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch}); err != nil || res.Stale != "" {
		t.Fatalf("Refresh after a node recovered = %+v, %v; want fresh", res, err)
	}
	if f, _ := c.Freshness(); f.Stale != "" || f.Heartbeat.TierSeq != 8 {
		t.Errorf("Freshness after recovery = %+v, want fresh at hub seq 8", f)
	}
}

// Heartbeats a node cannot vouch for count as none: the machine moves on.
func TestRefreshRefusesHeartbeatsTheHubDidNotSign(t *testing.T) {
	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, tc := range []struct {
		name string
		env  federation.Envelope
	}{
		{"signed by a key not pinned", beat(t, otherKey, meshTier, 9, now)},
		{"of another hub tier", beat(t, testHubKey, "stable", 9, now)},
		{"from the future", beat(t, testHubKey, meshTier, 9, now.Add(time.Hour))},
		{"a replay announcing an older head", beat(t, testHubKey, meshTier, 1, now)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMesh(t, 0)
			m.beats[0].set(beat(t, testHubKey, meshTier, 5, now.Add(-time.Minute)))
			c := m.client(0)
			if _, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch}); err != nil {
				t.Fatalf("first Refresh: %v", err)
			}
			m.beats[0].set(tc.env)
			res, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch})
			if !errors.Is(err, ErrStale) || res.Stale == "" {
				t.Fatalf("Refresh = %+v, %v; want ErrStale", res, err)
			}
			if st := m.state(c); st.Heartbeat.TierSeq != 5 {
				t.Errorf("state heartbeat = %+v, want the verified one (hub seq 5) kept", st.Heartbeat)
			}
		})
	}
}

// A node that sends no heartbeat is stale, whether or not the machine has
// seen one before: a withholding node could otherwise just leave it out
// from the start and never be passed over.
func TestRefreshCountsAMissingHeartbeatStale(t *testing.T) {
	m := newMesh(t, 0)
	m.upload([]byte("a patch")) // so that the heartbeat comes in the offer, not the 404's header
	c := m.client(0)
	m.beats[0].withhold()
	if res, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch}); !errors.Is(err, ErrStale) || res.Stale == "" {
		t.Fatalf("Refresh before any heartbeat = %+v, %v; want ErrStale", res, err)
	}
	m.beats[0].set(beat(t, testHubKey, meshTier, 5, time.Now()))
	if res, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch}); err != nil || res.Stale != "" {
		t.Fatalf("Refresh with a heartbeat = %+v, %v; want fresh", res, err)
	}
	m.beats[0].withhold()
	if _, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch}); !errors.Is(err, ErrStale) {
		t.Fatalf("Refresh without a heartbeat after one was seen: %v, want ErrStale", err)
	}
}

// A machine that has verified no hub heartbeat yet, registered but never
// refreshed, is not fresh: silence is never taken for freshness.
func TestFreshnessBeforeTheFirstRefreshIsStale(t *testing.T) {
	m := newMesh(t, 0, 300*time.Millisecond)
	c := m.client(0)
	f, err := c.Freshness()
	if err != nil || f.Heartbeat != nil || !strings.Contains(f.Stale, "no hub heartbeat") {
		t.Errorf("Freshness before any refresh = %+v, %v; want stale for want of a heartbeat", f, err)
	}
	if _, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch}); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if f, err := c.Freshness(); err != nil || f.Heartbeat == nil || f.Stale != "" {
		t.Errorf("Freshness after a fresh refresh = %+v, %v; want fresh", f, err)
	}
}
