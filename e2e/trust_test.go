package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// A relay can delay what the hub signed, but whatever it says beside the
// signed records — skips, heads, the heartbeat it forwards, or silence —
// is checked against what the hub signed. In each test a lying proxy
// plays the relay between a real relay and a real edge.

// staleWithin is the documented bound for noticing a frozen or
// withholding upstream: sync.stale_after, plus one long poll for the
// heartbeat to arrive and one for the round that judges it, plus the
// hub's heartbeat interval, plus slack for a loaded machine.
const staleWithin = meshtest.StaleAfter + 2*2*time.Second + meshtest.HeartbeatEvery + 5*time.Second

// hubSeqOf reads the hub sequence a feed entry's record carries. The test
// reads it as a relay could: unverified.
func hubSeqOf(t *testing.T, e federation.FeedEvent) int64 {
	var r struct {
		TierSeq int64 `json:"tier_seq"`
	}
	if err := json.Unmarshal(e.Record, &r); err != nil {
		t.Errorf("feed entry %d: %v", e.Seq, err)
	}
	return r.TierSeq
}

// metric reads one series of n's metrics.
func metric(t *testing.T, n *meshtest.Node, series string) float64 {
	t.Helper()
	ms, err := n.Metrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	v, ok := ms[series]
	if !ok {
		t.Fatalf("%s: no metric %s", n.Name, series)
	}
	return v
}

// wantEventFrom wants a security event of type event with reason in n's
// log that names upstream, and returns it.
func wantEventFrom(t *testing.T, n *meshtest.Node, event, reason, upstream string) map[string]any {
	t.Helper()
	evs := n.LogEvents(event)
	for _, ev := range evs {
		if ev["reason"] == reason {
			if ev["upstream"] != upstream {
				t.Fatalf("%s: %s event with reason %s names upstream %v, want %s", n.Name, event, reason, ev["upstream"], upstream)
			}
			return ev
		}
	}
	t.Fatalf("%s: want a %s security event with reason %s, got %v", n.Name, event, reason, evs)
	return nil
}

// lyingCascade is a hub, a relay, a lying proxy in front of the relay, and
// an edge that pulls tier edge through the proxy.
func lyingCascade(t *testing.T) (m *meshtest.Mesh, h, relay *meshtest.Node, px *proxy, e *meshtest.Node) {
	t.Helper()
	m = meshtest.New(t)
	h = hub(m)
	relay = pull(t, m, "relay", node.RoleRelay, h, "edge")
	px = newProxy(t, m, relay)
	e = m.Start(pullSpec(t, "edge-1", node.RoleRelay, px.URL, relay, "edge"))
	return m, h, relay, px, e
}

// A skip the hub did not sign a reason for is refused: the patch is
// fetched anyway, reaches the edge and the level below it, and the
// refusal is a security event naming the liar.
func TestForgedSkipIsRefused(t *testing.T) {
	t.Parallel()
	m, h, _, px, e := lyingCascade(t)
	below := pull(t, m, "edge-2", node.RoleEdge, e, "edge")
	px.lies(func(p *federation.FeedResponse) {
		for i := range p.Events {
			p.Events[i].Skip = true
		}
	})
	p := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.1"})
	start := time.Now()
	for _, n := range []*meshtest.Node{e, below} {
		meshtest.WaitFor(t, converge, "the patch at "+n.Name+" despite the forged skip", func() error {
			return wantListed(t, n, p.Digest, []string{"edge"})
		})
	}
	t.Logf("forged skip refused and the patch delivered two levels down in %v", time.Since(start))
	wantEventFrom(t, e, federation.EventRecordRejected, "unexplained_skip", px.URL)
	if l := e.Link(t, "edge"); l.RecordsRejected == 0 {
		t.Fatalf("sync status: want the forged skip counted as rejected, got %+v", l)
	}
	if v := metric(t, e, `patchmesh_sync_records_rejected_total{tier="edge"}`); v == 0 {
		t.Fatal("metrics: want the forged skip counted in patchmesh_sync_records_rejected_total")
	}
	if evs := below.LogEvents(federation.EventRecordRejected); len(evs) != 0 {
		t.Fatalf("the forged skip travelled down: %s refused %v", below.Name, evs)
	}
}

// A relay that forwards the hub's heartbeat but withholds a record (a
// withdrawal it would rather hide, and so everything after it) is seen
// within the bound: the heartbeat announces what never comes.
func TestWithheldRecordIsDetected(t *testing.T) {
	t.Parallel()
	_, h, _, px, e := lyingCascade(t)
	p := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.1"})
	meshtest.WaitFor(t, converge, "the patch at the edge", func() error {
		return wantListed(t, e, p.Digest, []string{"edge"})
	})
	at := e.Link(t, "edge")
	held := at.HubSeq
	px.lies(func(page *federation.FeedResponse) {
		// Drop every record past held, and make the heads agree, so that
		// the edge sees a quiet, consistent upstream.
		kept, head := page.Events[:0], at.Cursor
		for _, ev := range page.Events {
			if hubSeqOf(t, ev) <= held {
				kept = append(kept, ev)
				head = max(head, ev.Seq)
			}
		}
		page.Events = kept
		page.Head, page.HubHead = head, held
	})
	h.Withdraw(t, p.Digest)
	start := time.Now()
	var l federation.LinkStatus
	meshtest.WaitFor(t, staleWithin, "the edge to report the withheld withdrawal", func() error {
		l = e.Link(t, "edge")
		if !l.Stale || l.StaleReason != federation.StaleWithheld {
			return fmt.Errorf("link %+v", l)
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("withheld record detected after %v (bound %v)", took, staleWithin)
	if l.HubSeq != held || l.HeartbeatHubHead <= held || l.State != federation.LinkStale {
		t.Fatalf("want stale at hub seq %d with a heartbeat announcing more, got %+v", held, l)
	}
	meshtest.WaitFor(t, 5*time.Second, "the sync_stale security event", func() error {
		if len(e.LogEvents(federation.EventStale)) == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	wantEventFrom(t, e, federation.EventStale, federation.StaleWithheld, px.URL)
	if v := metric(t, e, `patchmesh_sync_stale{tier="edge"}`); v != 1 {
		t.Fatalf("patchmesh_sync_stale: want 1, got %v", v)
	}

	px.lies(nil)
	meshtest.WaitFor(t, converge, "the withdrawal at the edge once the relay forwards it", func() error {
		if err := wantListed(t, e, p.Digest, []string{"edge"}); err == nil {
			return fmt.Errorf("still offered")
		}
		if l := e.Link(t, "edge"); l.Stale {
			return fmt.Errorf("still stale: %+v", l)
		}
		return nil
	})
}

// A relay that keeps answering but has stopped forwarding (its answers,
// heartbeat included, frozen at one moment) is seen once that heartbeat
// is older than the bound; the edge then moves to its other upstream.
func TestFrozenRelayIsDetectedAndLeft(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	h := hub(m)
	relay := pull(t, m, "relay", node.RoleRelay, h, "edge")
	px := newProxy(t, m, relay)
	e := m.Start(meshtest.Spec{Name: "edge-1", Role: node.RoleEdge, Links: []meshtest.Link{{Tier: "edge", Upstreams: []meshtest.Upstream{
		{URL: px.URL, Token: relay.SyncToken(t, "edge", "edge-1")},
		{URL: h.URL, Token: h.SyncToken(t, "edge", "edge-1")},
	}}}})
	p := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.1"})
	meshtest.WaitFor(t, converge, "the patch at the edge", func() error {
		return wantListed(t, e, p.Digest, []string{"edge"})
	})
	meshtest.WaitFor(t, converge, "a heartbeat at the edge", func() error {
		if l := e.Link(t, "edge"); l.HeartbeatTime.IsZero() || l.Upstream != px.URL {
			return fmt.Errorf("link %+v", l)
		}
		return nil
	})

	var (
		mu     sync.Mutex
		frozen *federation.FeedResponse
		at     = e.Link(t, "edge")
	)
	px.lies(func(page *federation.FeedResponse) {
		mu.Lock()
		defer mu.Unlock()
		if frozen == nil {
			// From now on every answer is this one: nothing new since
			// where the edge is, and the heartbeat of this moment.
			f := *page
			f.Events, f.Head, f.HubHead = nil, at.Cursor, at.HubSeq
			frozen = &f
		}
		*page = *frozen
	})
	start := time.Now()
	later := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.2"})
	meshtest.WaitFor(t, staleWithin, "the edge to report the frozen relay", func() error {
		if ev := e.LogEvents(federation.EventStale); len(ev) == 0 {
			return fmt.Errorf("no %s event; link %+v", federation.EventStale, e.Link(t, "edge"))
		}
		return nil
	})
	t.Logf("frozen relay detected after %v (bound %v)", time.Since(start), staleWithin)
	ev := wantEventFrom(t, e, federation.EventStale, federation.StaleHeartbeat, px.URL)
	if age, _ := ev["heartbeat_age_seconds"].(float64); age <= meshtest.StaleAfter.Seconds() {
		t.Fatalf("stale event with a heartbeat %.1fs old, bound %v: %v", age, meshtest.StaleAfter, ev)
	}
	meshtest.WaitFor(t, converge, "the edge to leave the frozen relay and catch up through the hub", func() error {
		l := e.Link(t, "edge")
		if l.Upstream != h.LinkURL() || l.Stale {
			return fmt.Errorf("link %+v", l)
		}
		return wantListed(t, e, later.Digest, []string{"edge"})
	})
}

// An upstream whose unsigned head promises records it never sends costs a
// downstream at most two requests per backoff, not a busy loop; every
// refusal is logged.
func TestInflatedHeadBacksOff(t *testing.T) {
	t.Parallel()
	_, h, _, px, e := lyingCascade(t)
	p := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.1"})
	meshtest.WaitFor(t, converge, "the patch at the edge", func() error {
		return wantListed(t, e, p.Digest, []string{"edge"})
	})
	px.lies(func(page *federation.FeedResponse) { page.Head += 1_000_000; page.HubHead += 1_000_000 })
	var l federation.LinkStatus
	meshtest.WaitFor(t, converge, "the edge to refuse the inflated head", func() error {
		if l = e.Link(t, "edge"); l.State != federation.LinkFailing {
			return fmt.Errorf("link %+v", l)
		}
		return nil
	})
	wantEventFrom(t, e, federation.EventRecordRejected, "inflated_head", px.URL)
	feeds0, failed0 := px.feeds.Load(), l.RoundsFailed
	time.Sleep(5 * time.Second)
	l = e.Link(t, "edge")
	feeds, failed := px.feeds.Load()-feeds0, l.RoundsFailed-failed0
	t.Logf("inflated head: %d feed requests in 5s, %d failed rounds", feeds, failed)
	if failed == 0 || feeds > 2*failed+2 {
		t.Fatalf("want at most two feed requests per failed round, got %d requests for %d failed rounds", feeds, failed)
	}
	if v := metric(t, e, `patchmesh_sync_up{tier="edge"}`); v != 0 {
		t.Fatalf("patchmesh_sync_up: want 0 while the head lies, got %v", v)
	}
}

// A relay that serves an old record again in place of a new one is
// refused at once: the record's hub sequence is signed.
func TestReplayedRecordIsRefused(t *testing.T) {
	t.Parallel()
	_, h, _, px, e := lyingCascade(t)
	var (
		mu  sync.Mutex
		old *federation.FeedEvent
	)
	// First the proxy only keeps the first record it sees pass (the hub's
	// admission of itself, if the edge has not synced it yet, or the patch
	// uploaded next).
	px.lies(func(page *federation.FeedResponse) {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range page.Events {
			if old == nil {
				old = &ev
			}
		}
	})
	first := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.1"})
	meshtest.WaitFor(t, converge, "the patch at the edge", func() error {
		return wantListed(t, e, first.Digest, []string{"edge"})
	})
	mu.Lock()
	if old == nil {
		mu.Unlock()
		t.Fatal("the proxy saw no record pass")
	}
	mu.Unlock()
	px.lies(func(page *federation.FeedResponse) {
		mu.Lock()
		defer mu.Unlock()
		for i := range page.Events {
			seq := page.Events[i].Seq
			page.Events[i] = *old
			page.Events[i].Seq = seq
		}
	})
	start := time.Now()
	second := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.2"})
	meshtest.WaitFor(t, converge, "the edge to refuse the replayed record", func() error {
		if l := e.Link(t, "edge"); l.State != federation.LinkFailing || l.RecordsRejected == 0 {
			return fmt.Errorf("link %+v", l)
		}
		return nil
	})
	t.Logf("replayed record refused after %v", time.Since(start))
	wantEventFrom(t, e, federation.EventRecordRejected, "replay", px.URL)
	if v := metric(t, e, `patchmesh_sync_records_rejected_total{tier="edge"}`); v == 0 {
		t.Fatal("metrics: want the replay counted in patchmesh_sync_records_rejected_total")
	}
	if err := wantListed(t, e, second.Digest, []string{"edge"}); err == nil {
		t.Fatal("the edge applied 1.2 behind a replayed record")
	}
}
