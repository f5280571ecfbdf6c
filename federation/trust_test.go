package federation_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// What an upstream says beside the signed records — heads, skips, the
// heartbeat it forwards — is checked against what the hub signed. These
// tests put a lying proxy between a downstream and an honest upstream.

// feedProxy forwards to target and lets edit rewrite every feed answer
// while it is set; it counts the feed requests it passes.
type feedProxy struct {
	*httptest.Server
	mu    sync.Mutex
	edit  func(*federation.FeedResponse)
	feeds atomic.Int64
}

func newFeedProxy(t *testing.T, target string) *feedProxy {
	t.Helper()
	u, _ := url.Parse(target)
	fp := &feedProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(r *http.Response) error {
		if !strings.HasSuffix(r.Request.URL.Path, "/sync/feed") || r.StatusCode != http.StatusOK {
			return nil
		}
		fp.feeds.Add(1)
		fp.mu.Lock()
		edit := fp.edit
		fp.mu.Unlock()
		if edit == nil {
			return nil
		}
		var page federation.FeedResponse
		if err := json.NewDecoder(r.Body).Decode(&page); err != nil {
			return err
		}
		r.Body.Close()
		edit(&page)
		body, err := json.Marshal(page)
		if err != nil {
			return err
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.Header.Set("Content-Length", fmt.Sprint(len(body)))
		return nil
	}
	fp.Server = httptest.NewServer(rp)
	t.Cleanup(fp.Close)
	return fp
}

func (fp *feedProxy) set(edit func(*federation.FeedResponse)) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	fp.edit = edit
}

// downstreamWith is downstream with the pull config adjusted by adjust.
func downstreamWith(t *testing.T, adjust func(*federation.PullConfig), keys []ed25519.PublicKey, links ...federation.Link) *meshNode {
	t.Helper()
	return downstreamConfigured(t, 10*time.Millisecond, adjust, keys, links...)
}

// securityEvents returns the security events of type event with reason in
// m's log.
func securityEvents(m *meshNode, event, reason string) []map[string]any {
	var out []map[string]any
	for line := range strings.SplitSeq(m.log.String(), "\n") {
		var ev map[string]any
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		if ev["event"] == event && (reason == "" || ev["reason"] == reason) {
			out = append(out, ev)
		}
	}
	return out
}

func wantEvent(t *testing.T, m *meshNode, event, reason, upstream string) {
	t.Helper()
	evs := securityEvents(m, event, reason)
	if len(evs) == 0 {
		t.Fatalf("want a %s security event with reason %s; log:\n%s", event, reason, m.log.String())
	}
	if evs[0]["upstream"] != upstream {
		t.Fatalf("%s security event: want upstream %s, got %v", event, upstream, evs[0])
	}
}

func TestPullCarriesTheHubHeartbeatDownACascade(t *testing.T) {
	h := newHub(t)
	keys := []ed25519.PublicKey{h.pub()}
	h.upload(t, "x86_64")
	h.upload(t, "x86_64")
	if err := h.beacon.Beat(t.Context()); err != nil {
		t.Fatal(err)
	}
	hb, ok := h.beacon.Latest("edge")
	if !ok {
		t.Fatal("the hub's beacon holds no heartbeat for tier edge after a beat")
	}
	relay := downstream(t, keys, link("edge", federation.Upstream{URL: h.srv.URL, Token: syncToken(t, h.meshNode, "edge")}))
	edge := downstream(t, keys, link("edge", federation.Upstream{URL: relay.srv.URL, Token: syncToken(t, relay, "edge")}))
	relay.sync(t)
	for _, n := range []*meshNode{relay, edge} {
		st := n.sync(t)[0]
		if st.State != federation.LinkSynced || st.HeartbeatHubHead != 2 || st.HeartbeatTime.IsZero() || st.Stale {
			t.Fatalf("want synced with a fresh heartbeat announcing hub seq 2, got %+v", st)
		}
	}
	if got, ok := edge.puller.Latest("edge"); !ok || !bytes.Equal(got.Record, hb.Record) || !bytes.Equal(got.Sig, hb.Sig) {
		t.Fatalf("the edge holds %q (found %v), want the hub's own heartbeat bytes %q", got.Record, ok, hb.Record)
	}
	if _, ok := edge.puller.Latest("beta"); ok {
		t.Fatal("a heartbeat for a tier no link feeds")
	}

	h.upload(t, "x86_64")
	if err := h.beacon.Beat(t.Context()); err != nil {
		t.Fatal(err)
	}
	relay.sync(t)
	if st := edge.sync(t)[0]; st.HeartbeatHubHead != 3 || st.HubSeq != 3 {
		t.Fatalf("after the next beat: want heartbeat and link at hub seq 3, got %+v", st)
	}
}

func TestPullRefusesHeartbeatsTheHubDidNotSign(t *testing.T) {
	_, other, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, reason string
		edit         func(h *hub, e *federation.Envelope)
	}{
		{"altered", "heartbeat_bad_signature", func(_ *hub, e *federation.Envelope) {
			e.Record = bytes.Replace(e.Record, []byte(`"tier_seq":1`), []byte(`"tier_seq":9`), 1)
		}},
		{"unknown key", "heartbeat_unknown_key", func(_ *hub, e *federation.Envelope) {
			*e, _ = federation.SignHeartbeat(other, "edge", 9, time.Now())
		}},
		{"other tier", "heartbeat_wrong_tier", func(h *hub, e *federation.Envelope) {
			*e, _ = federation.SignHeartbeat(h.key, "beta", 9, time.Now())
		}},
		{"future", "heartbeat_future", func(h *hub, e *federation.Envelope) {
			*e, _ = federation.SignHeartbeat(h.key, "edge", 9, time.Now().Add(time.Hour))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHub(t)
			h.upload(t, "x86_64")
			if err := h.beacon.Beat(t.Context()); err != nil {
				t.Fatal(err)
			}
			px := newFeedProxy(t, h.srv.URL)
			px.set(func(p *federation.FeedResponse) {
				if p.Heartbeat != nil {
					tc.edit(h, p.Heartbeat)
				}
			})
			d := downstream(t, []ed25519.PublicKey{h.pub()}, link("edge", federation.Upstream{URL: px.URL, Token: syncToken(t, h.meshNode, "edge")}))
			st := d.sync(t)[0]
			if st.State != federation.LinkFailing || st.RecordsRejected == 0 || !st.HeartbeatTime.IsZero() {
				t.Fatalf("want failing with a rejection and no heartbeat held, got %+v", st)
			}
			wantEvent(t, d, federation.EventRecordRejected, tc.reason, px.URL)
		})
	}
}

// A patch the hub removed (its blob gone everywhere) is skipped on the
// strength of the hub's removal record, which the feed attaches.
func TestPullSkipsOnlyWithTheSignedReason(t *testing.T) {
	h := newHub(t)
	keys := []ed25519.PublicKey{h.pub()}
	gone, _ := h.upload(t, "x86_64")
	kept, _ := h.upload(t, "x86_64")
	if err := h.Store.RemovePatch(t.Context(), gone.Digest); err != nil {
		t.Fatal(err)
	}
	if err := h.Blobs.Remove(t.Context(), blob.Digest(gone.Digest)); err != nil {
		t.Fatal(err)
	}

	t.Run("explained", func(t *testing.T) {
		d := downstream(t, keys, link("edge", federation.Upstream{URL: h.srv.URL, Token: syncToken(t, h.meshNode, "edge")}))
		st := d.sync(t)[0]
		if st.State != federation.LinkSynced || st.RecordsRejected != 0 || st.HubSeq != 3 {
			t.Fatalf("want synced to hub seq 3 with nothing refused, got %+v", st)
		}
		if err := hasPatch(d, kept.Digest, "edge"); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Store.Patch(t.Context(), gone.Digest); !errors.Is(err, catalog.ErrNotFound) {
			t.Fatalf("removed patch: want absent, got %v", err)
		}
	})

	t.Run("reason stripped", func(t *testing.T) {
		px := newFeedProxy(t, h.srv.URL)
		px.set(func(p *federation.FeedResponse) {
			for i := range p.Events {
				p.Events[i].Because = nil
			}
		})
		d := downstream(t, keys, link("edge", federation.Upstream{URL: px.URL, Token: syncToken(t, h.meshNode, "edge")}))
		st := d.sync(t)[0]
		if st.State != federation.LinkFailing || st.HubSeq != 0 || st.RecordsRejected == 0 {
			t.Fatalf("a skip with no reason for a patch nobody serves: want failing at hub seq 0, got %+v", st)
		}
		wantEvent(t, d, federation.EventRecordRejected, "unexplained_skip", px.URL)
	})

	t.Run("reason of another patch", func(t *testing.T) {
		px := newFeedProxy(t, h.srv.URL)
		px.set(func(p *federation.FeedResponse) {
			// kept's add record offered as the reason for skipping gone.
			for i := range p.Events {
				if p.Events[i].Skip {
					p.Events[i].Because = &federation.Envelope{Record: p.Events[1].Record, Sig: p.Events[1].Sig}
				}
			}
		})
		d := downstream(t, keys, link("edge", federation.Upstream{URL: px.URL, Token: syncToken(t, h.meshNode, "edge")}))
		if st := d.sync(t)[0]; st.State != federation.LinkFailing || st.HubSeq != 0 {
			t.Fatalf("want failing at hub seq 0, got %+v", st)
		}
		wantEvent(t, d, federation.EventRecordRejected, "unexplained_skip", px.URL)
	})

	t.Run("forged skip", func(t *testing.T) {
		px := newFeedProxy(t, h.srv.URL)
		px.set(func(p *federation.FeedResponse) {
			for i := range p.Events {
				p.Events[i].Skip = true
			}
		})
		d := downstream(t, keys, link("edge", federation.Upstream{URL: px.URL, Token: syncToken(t, h.meshNode, "edge")}))
		st := d.sync(t)[0]
		if st.State != federation.LinkSynced || st.HubSeq != 3 || st.RecordsRejected != 1 {
			t.Fatalf("want the forged skip refused once and the patch fetched anyway, got %+v", st)
		}
		if err := hasPatch(d, kept.Digest, "edge"); err != nil {
			t.Fatalf("the patch a forged skip tried to hide: %v", err)
		}
		wantEvent(t, d, federation.EventRecordRejected, "unexplained_skip", px.URL)
	})
}

// An upstream whose unsigned head promises records it never sends makes
// a link back off, not spin: after one immediate retry every such round
// fails, and the loop's backoff paces the next.
func TestPullBacksOffWhenTheHeadPromisesMoreThanThePage(t *testing.T) {
	h := newHub(t)
	h.upload(t, "x86_64")
	px := newFeedProxy(t, h.srv.URL)
	d := downstreamWith(t, func(c *federation.PullConfig) {
		c.RetryMin, c.RetryMax = 200*time.Millisecond, 200*time.Millisecond
	}, []ed25519.PublicKey{h.pub()}, link("edge", federation.Upstream{URL: px.URL, Token: syncToken(t, h.meshNode, "edge")}))
	d.sync(t)
	px.set(func(p *federation.FeedResponse) { p.Head += 1000; p.HubHead += 1000 })
	before := px.feeds.Load()
	var st federation.LinkStatus
	waitFor(t, "three failed rounds", func() error {
		st = d.puller.Status()[0]
		if st.RoundsFailed < 3 {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	// Each failed round costs at most one feed request, plus the one
	// immediate retry a first empty promise earns.
	if n := px.feeds.Load() - before; n > st.RoundsFailed+3 {
		t.Fatalf("%d feed requests for %d failed rounds: the loop spins", n, st.RoundsFailed)
	}
	if st.State != federation.LinkFailing || !strings.Contains(st.LastError, "sends nothing past") {
		t.Fatalf("want failing with the reason, got %+v", st)
	}
	wantEvent(t, d, federation.EventRecordRejected, "inflated_head", px.URL)
}

// A relay that forwards the hub's heartbeat but holds back a record (and
// everything after it, or it would leave a gap) is seen once the
// heartbeat has announced the record for longer than the bound.
func TestPullReportsAWithheldRecordAsStale(t *testing.T) {
	h := newHub(t)
	h.upload(t, "x86_64")
	px := newFeedProxy(t, h.srv.URL)
	d := downstreamWith(t, func(c *federation.PullConfig) {
		c.StaleAfter, c.Wait = 300*time.Millisecond, 50*time.Millisecond
	}, []ed25519.PublicKey{h.pub()}, link("edge", federation.Upstream{URL: px.URL, Token: syncToken(t, h.meshNode, "edge")}))
	if err := h.beacon.Beat(t.Context()); err != nil {
		t.Fatal(err)
	}
	d.sync(t)
	px.set(func(p *federation.FeedResponse) {
		// Hold back hub seq 2 on: drop it, and make the heads agree.
		var kept []federation.FeedEvent
		for _, e := range p.Events {
			if bytes.Contains(e.Record, []byte(`"tier_seq":1,`)) {
				kept = append(kept, e)
			}
		}
		p.Events = kept
		p.Head, p.HubHead = 1, 1
	})
	withheld, _ := h.upload(t, "x86_64")
	var st federation.LinkStatus
	waitFor(t, "the link to report the withheld record", func() error {
		if err := h.beacon.Beat(context.Background()); err != nil { // fresh heartbeats all along
			return err
		}
		st = d.puller.Status()[0]
		if !st.Stale || st.StaleReason != federation.StaleWithheld {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	if st.HeartbeatHubHead != 2 || st.HubSeq != 1 || st.State != federation.LinkStale {
		t.Fatalf("want stale at hub seq 1 with a heartbeat announcing 2, got %+v", st)
	}
	waitFor(t, "the sync_stale security event", func() error {
		if len(securityEvents(d, federation.EventStale, federation.StaleWithheld)) == 0 {
			return errors.New("none yet")
		}
		return nil
	})
	wantEvent(t, d, federation.EventStale, federation.StaleWithheld, px.URL)

	px.set(nil)
	waitFor(t, "the link to catch up and be fresh again", func() error {
		if err := h.beacon.Beat(context.Background()); err != nil {
			return err
		}
		if st = d.puller.Status()[0]; st.Stale || hasPatch(d, withheld.Digest, "edge") != nil {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
}

// A relay that keeps answering but has stopped (its heartbeat no longer
// moves) is seen once that heartbeat is older than the bound.
func TestPullReportsAFrozenUpstreamAsStale(t *testing.T) {
	h := newHub(t)
	px := newFeedProxy(t, h.srv.URL)
	d := downstreamWith(t, func(c *federation.PullConfig) {
		c.StaleAfter, c.Wait = 300*time.Millisecond, 50*time.Millisecond
	}, []ed25519.PublicKey{h.pub()}, link("edge", federation.Upstream{URL: px.URL, Token: syncToken(t, h.meshNode, "edge")}))
	if err := h.beacon.Beat(t.Context()); err != nil {
		t.Fatal(err)
	}
	d.sync(t)
	frozen, _ := h.beacon.Latest("edge")
	px.set(func(p *federation.FeedResponse) { p.Heartbeat = &frozen; p.Events = nil; p.Head, p.HubHead = 0, 0 })
	var st federation.LinkStatus
	waitFor(t, "the link to report the frozen upstream", func() error {
		if err := h.beacon.Beat(context.Background()); err != nil {
			return err
		}
		if st = d.puller.Status()[0]; st.StaleReason != federation.StaleHeartbeat {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	if st.HeartbeatAge < 0.3 {
		t.Fatalf("stale with a heartbeat %.3fs old, bound 0.3s", st.HeartbeatAge)
	}
	waitFor(t, "the sync_stale security event", func() error {
		if len(securityEvents(d, federation.EventStale, federation.StaleHeartbeat)) == 0 {
			return errors.New("none yet")
		}
		return nil
	})
	wantEvent(t, d, federation.EventStale, federation.StaleHeartbeat, px.URL)
}

// A relay that passed a patch by on the hub's reason serves that reason
// onward even while the reason itself is still in a page it has not
// fetched: its downstream never mistakes the skip for a forged one.
func TestPullServesASkipsReasonBeforeTheReasonArrives(t *testing.T) {
	h := newHub(t)
	keys := []ed25519.PublicKey{h.pub()}
	gone, _ := h.upload(t, "x86_64")
	h.upload(t, "x86_64")
	if err := h.Store.RemovePatch(t.Context(), gone.Digest); err != nil {
		t.Fatal(err)
	}
	if err := h.Blobs.Remove(t.Context(), blob.Digest(gone.Digest)); err != nil {
		t.Fatal(err)
	}
	// The relay gets hub seq 1 only, as if the rest were pages away.
	px := newFeedProxy(t, h.srv.URL)
	px.set(func(p *federation.FeedResponse) {
		var kept []federation.FeedEvent
		for _, e := range p.Events {
			if bytes.Contains(e.Record, []byte(`"tier_seq":1,`)) {
				kept = append(kept, e)
				p.Head = e.Seq
			}
		}
		p.Events, p.HubHead = kept, 1
	})
	relay := downstream(t, keys, link("edge", federation.Upstream{URL: px.URL, Token: syncToken(t, h.meshNode, "edge")}))
	if st := relay.sync(t)[0]; st.HubSeq != 1 || st.RecordsRejected != 0 {
		t.Fatalf("relay: want hub seq 1 applied as an explained skip, got %+v", st)
	}
	edge := downstream(t, keys, link("edge", federation.Upstream{URL: relay.srv.URL, Token: syncToken(t, relay, "edge")}))
	if st := edge.sync(t)[0]; st.State != federation.LinkSynced || st.HubSeq != 1 || st.RecordsRejected != 0 {
		t.Fatalf("edge behind the relay: want the skip explained and hub seq 1 applied, got %+v", st)
	}
	if evs := securityEvents(edge, federation.EventRecordRejected, ""); len(evs) != 0 {
		t.Fatalf("edge refused what the relay served: %v", evs)
	}
}
