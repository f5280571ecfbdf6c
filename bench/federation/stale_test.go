package federation_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// staleEvery is how often the benchmark reads the sync status of the
// edges it watches: it bounds how late a detection figure can be.
const staleEvery = 50 * time.Millisecond

// BenchmarkStaleDetection measures how long a relay that lies by silence
// goes unseen on the 1 + 3 + 9 cascade: the three edges of region-0 pull
// through a proxy in front of it that can
//   - freeze: answer every feed request with nothing new and the hub
//     heartbeat of the moment it froze, as a relay that keeps answering
//     but has stopped forwarding; or
//   - withhold: drop every record past the edges' hub sequence and make
//     the heads agree, but pass the hub's heartbeats on, as a relay that
//     hides one record (and so all after it).
//
// Each op starts the lie and waits until all three edges report
// themselves stale in sync status (the figure is the last of them), then
// ends it and waits until they are fresh and caught up again. The clock
// starts when the proxy freezes, or when the withheld upload at the hub
// returns. Every node runs meshtest's timings (sync.wait 2s,
// heartbeat_every 500ms, stale_after 10s), so the bound to compare with is
// stale_after + 2 × wait + heartbeat_every = 14.5s. Run with -benchtime 20x.
//
// At the end the benchmark counts sync_stale events in the logs of the ten
// nodes that pull from honest upstreams: any is a false alarm.
func BenchmarkStaleDetection(b *testing.B) {
	m := meshtest.New(b)
	// Plain node-to-node traffic, as bench/RESULTS.md measured it (mutual
	// TLS is meshtest's default; nodetls_test.go measures its cost).
	m.MTLS = false
	hub := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub}) // meshtest's timings, not startHub's
	var watched, honest []*meshtest.Node
	var px *lyingProxy
	for r := range 3 {
		region := startTimedDownstream(b, m, fmt.Sprintf("region-%d", r), node.RoleRelay, hub.URL, hub)
		honest = append(honest, region)
		upURL := region.URL
		if r == 0 {
			px = newLyingProxy(b, region.URL)
			upURL = px.URL
		}
		for e := range 3 {
			n := startTimedDownstream(b, m, fmt.Sprintf("edge-%d%d", r, e), node.RoleEdge, upURL, region)
			if r == 0 {
				watched = append(watched, n)
			} else {
				honest = append(honest, n)
			}
		}
	}
	b.Logf("mesh: hub, 3 relays, 9 edges (13 processes); region-0's 3 edges behind a lying proxy; sync.wait %v, heartbeat_every %v, stale_after %v",
		watched[0].Config.Sync.Wait, hub.Config.Sync.HeartbeatEvery, watched[0].Config.Sync.StaleAfter)
	content := patchBytes(b, 64<<10)
	version := 0
	fresh := func(b *testing.B) {
		b.Helper()
		waitEdges(b, watched, "fresh and caught up", func(l federation.LinkStatus) bool {
			return !l.Stale && l.HeartbeatAge < 5 && l.LagEvents == 0 && l.HubSeq == l.HeartbeatHubHead
		})
	}

	b.Run("frozen", func(b *testing.B) {
		samples := make([]time.Duration, 0, b.N)
		for range b.N {
			fresh(b)
			start := time.Now()
			px.freeze()
			samples = append(samples, waitEdges(b, watched, "stale", func(l federation.LinkStatus) bool {
				return l.Stale && l.StaleReason == federation.StaleHeartbeat
			}).Sub(start))
			px.honest()
		}
		reportLatency(b, "frozen relay seen stale by all 3 edges below it", samples, time.Millisecond, "ms")
	})

	b.Run("withheld", func(b *testing.B) {
		samples := make([]time.Duration, 0, b.N)
		for range b.N {
			fresh(b)
			px.withhold(watched[0].Link(b, tier).HubSeq)
			version++
			stamp(content, version)
			hub.Upload(b, content, meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: fmt.Sprintf("107.%d", version)})
			start := time.Now()
			samples = append(samples, waitEdges(b, watched, "stale", func(l federation.LinkStatus) bool {
				return l.Stale && l.StaleReason == federation.StaleWithheld
			}).Sub(start))
			px.honest()
		}
		reportLatency(b, "withheld record seen by all 3 edges below the relay", samples, time.Millisecond, "ms")
	})

	alarms := 0
	for _, n := range honest {
		alarms += len(n.LogEvents(federation.EventStale))
	}
	b.Logf("sync_stale events on the 10 nodes with honest upstreams: %d", alarms)
	if alarms > 0 {
		b.Errorf("%d false stale reports", alarms)
	}
}

// startTimedDownstream starts a relay or edge with one link, for tier, to
// url (up's own or a proxy's), keeping meshtest's timings.
func startTimedDownstream(b testing.TB, m *meshtest.Mesh, name, role, url string, up *meshtest.Node) *meshtest.Node {
	b.Helper()
	return m.Start(meshtest.Spec{
		Name: name, Role: role,
		Links: []meshtest.Link{{Tier: tier, Upstreams: []meshtest.Upstream{{URL: url, Token: up.SyncToken(b, tier, name)}}}},
	})
}

// waitEdges polls the edges' links every staleEvery until ok holds for
// each, and returns when it did for the last of them. It gives up after
// converge.
func waitEdges(b *testing.B, edges []*meshtest.Node, what string, ok func(federation.LinkStatus) bool) time.Time {
	b.Helper()
	deadline := time.Now().Add(*converge)
	done := make([]bool, len(edges))
	var last time.Time
	for left := len(edges); left > 0; {
		for i, e := range edges {
			if done[i] {
				continue
			}
			if l := e.Link(b, tier); ok(l) {
				done[i], last = true, time.Now()
				left--
			}
		}
		if time.Now().After(deadline) {
			for _, e := range edges {
				b.Logf("%s: %+v", e.Name, e.Link(b, tier))
			}
			b.Fatalf("edges not %s after %v", what, *converge)
		}
		time.Sleep(staleEvery)
	}
	return last
}

// lyingProxy forwards to a relay and, when told, lies about its feed by
// silence: frozen, or withholding every record past a hub sequence.
type lyingProxy struct {
	URL string

	mu       sync.Mutex
	mode     string // "", "frozen" or "withheld"
	held     int64  // withheld: the last hub sequence passed on
	frozenHB *federation.Envelope
}

func newLyingProxy(b testing.TB, upstream string) *lyingProxy {
	b.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		b.Fatal(err)
	}
	p := &lyingProxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = p.modify
	srv := httptest.NewServer(rp)
	b.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *lyingProxy) set(mode string, held int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.held, p.frozenHB = mode, held, nil
}

func (p *lyingProxy) freeze()             { p.set("frozen", 0) }
func (p *lyingProxy) withhold(held int64) { p.set("withheld", held) }
func (p *lyingProxy) honest()             { p.set("", 0) }

func (p *lyingProxy) modify(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/v1/sync/feed" {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == "" {
		return nil
	}
	var page federation.FeedResponse
	err := json.NewDecoder(resp.Body).Decode(&page)
	resp.Body.Close()
	if err != nil {
		return err
	}
	// Nothing past where the asking edge is: its own cursor is the head.
	after, _ := strconv.ParseInt(resp.Request.URL.Query().Get("after"), 10, 64)
	switch p.mode {
	case "frozen":
		if p.frozenHB == nil {
			p.frozenHB = page.Heartbeat
		}
		page.Events, page.Head, page.Heartbeat = []federation.FeedEvent{}, after, p.frozenHB
		page.HubHead = min(page.HubHead, p.heldOf(page))
	case "withheld":
		kept := page.Events[:0]
		head := after
		for _, e := range page.Events {
			var r struct {
				TierSeq int64 `json:"tier_seq"`
			}
			if json.Unmarshal(e.Record, &r) == nil && r.TierSeq <= p.held {
				kept = append(kept, e)
				head = max(head, e.Seq)
			}
		}
		page.Events, page.Head, page.HubHead = kept, head, p.held
	}
	out, err := json.Marshal(page)
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	return nil
}

// heldOf is the hub sequence a frozen answer claims: what its frozen
// heartbeat announced, so that the heads agree with the silence.
func (p *lyingProxy) heldOf(page federation.FeedResponse) int64 {
	if p.frozenHB == nil {
		return page.HubHead
	}
	var r struct {
		TierSeq int64 `json:"tier_seq"`
	}
	if json.Unmarshal(p.frozenHB.Record, &r) != nil {
		return page.HubHead
	}
	return r.TierSeq
}
