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
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/nodetest"
	"github.com/patchmesh/patchmesh/replicate"
	"github.com/patchmesh/patchmesh/store"
)

// These tests run the sync loop in-process against real parts: SQLite
// stores, filesystem blobs and the real API on loopback HTTP servers. The
// multi-process cascade is in e2e/.

// meshNode is one wired node serving its API on loopback.
type meshNode struct {
	*nodetest.Node
	srv    *httptest.Server
	log    *nodetest.LogBuffer
	puller *federation.Puller
}

func serve(t *testing.T, n *nodetest.Node, log *nodetest.LogBuffer) *meshNode {
	t.Helper()
	h, err := api.New(n.Config)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &meshNode{Node: n, srv: srv, log: log}
}

func newLog() (*nodetest.LogBuffer, *slog.Logger) {
	buf := &nodetest.LogBuffer{}
	return buf, slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type hub struct {
	*meshNode
	key ed25519.PrivateKey
	// beacon signs the hub's heartbeats when a test calls Beat: no
	// ticker, so that no test depends on timing.
	beacon *federation.Beacon
}

func newHub(t *testing.T) *hub {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	buf, log := newLog()
	n := nodetest.Wire(t, log, nodetest.Options{Sealer: federation.Sealer{Key: key}, Changes: &store.Changes{}})
	n.Config.HubKey = key.Public().(ed25519.PublicKey)
	beacon := federation.NewBeacon(key, n.Store, 0, nil, log)
	n.Config.Heartbeats = beacon
	return &hub{meshNode: serve(t, n, buf), key: key, beacon: beacon}
}

func (h *hub) pub() ed25519.PublicKey { return h.key.Public().(ed25519.PublicKey) }

// syncToken issues a sync token for tier on node n.
func syncToken(t *testing.T, n *meshNode, tier string) string {
	t.Helper()
	secret, tok, err := auth.NewToken(catalog.TokenSync)
	if err != nil {
		t.Fatal(err)
	}
	tok.Tier, tok.Name, tok.Created = tier, "test", time.Now()
	if err := n.Store.AddToken(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	return secret
}

var patchSeq atomic.Int64

// upload adds a patch with random content for arch at the hub.
func (h *hub) upload(t *testing.T, arch string) (catalog.Patch, []byte) {
	t.Helper()
	content := make([]byte, 64<<10)
	rand.Read(content)
	d := blob.FromBytes(content)
	if _, err := blob.Put(t.Context(), h.Blobs, d, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	p, err := h.Store.AddPatch(t.Context(), catalog.Patch{
		Digest: string(d), Kernel: "5.15.0-107.117-generic", Arch: arch,
		Version: fmt.Sprintf("107.%d", patchSeq.Add(1)), Size: int64(len(content)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p, content
}

// downstream wires a relay or edge pulling links, and runs its loop until
// the test ends.
func downstream(t *testing.T, keys []ed25519.PublicKey, links ...federation.Link) *meshNode {
	t.Helper()
	return downstreamRetrying(t, 10*time.Millisecond, keys, links...)
}

// downstreamRetrying is downstream with the backoff after a failed round
// pinned to retry.
func downstreamRetrying(t *testing.T, retry time.Duration, keys []ed25519.PublicKey, links ...federation.Link) *meshNode {
	t.Helper()
	return downstreamConfigured(t, retry, nil, keys, links...)
}

// downstreamConfigured is downstreamRetrying with the pull config then
// adjusted by adjust, if set.
func downstreamConfigured(t *testing.T, retry time.Duration, adjust func(*federation.PullConfig), keys []ed25519.PublicKey, links ...federation.Link) *meshNode {
	t.Helper()
	buf, log := newLog()
	n := nodetest.Wire(t, log, nodetest.Options{Changes: &store.Changes{}})
	n.Config.Info.Role = "relay"
	client := &http.Client{Timeout: 30 * time.Second}
	rep, err := replicate.New(replicate.Config{Client: client, Blobs: n.Blobs, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	pc := federation.PullConfig{
		Store: n.Store, Fetcher: rep, Client: client,
		Keys:  func(context.Context) ([]ed25519.PublicKey, error) { return keys, nil },
		Links: links, Wait: 2 * time.Second, RetryMin: retry, RetryMax: max(retry, 50*time.Millisecond),
		Log: log,
	}
	if adjust != nil {
		adjust(&pc)
	}
	puller, err := federation.NewPuller(pc)
	if err != nil {
		t.Fatal(err)
	}
	// As a node wires it: the feed passes on the heartbeats its links hold.
	n.Config.Heartbeats = puller
	m := serve(t, n, buf)
	m.puller = puller
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { m.puller.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return m
}

// link is a link of tier from ups. The test servers are plain http on
// loopback, which a link must allow explicitly.
func link(tier string, ups ...federation.Upstream) federation.Link {
	for i := range ups {
		ups[i].AllowHTTP = true
	}
	return federation.Link{Tier: tier, Upstreams: ups}
}

// sync forces a round on every link of m and waits for it.
func (m *meshNode) sync(t *testing.T) []federation.LinkStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := m.puller.Trigger(ctx, true)
	if err != nil {
		t.Fatalf("trigger: %v", err)
	}
	return st
}

// waitFor polls check until it passes, for at most 10 s.
func waitFor(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not so after 10s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasPatch(m *meshNode, digest, tier string) error {
	p, err := m.Store.Patch(context.Background(), digest)
	if err != nil {
		return err
	}
	if p.Withdrawn || !slices.Contains(p.Tiers, tier) {
		return fmt.Errorf("patch on %v, withdrawn %v", p.Tiers, p.Withdrawn)
	}
	return nil
}

func blobBytes(t *testing.T, m *meshNode, digest string) []byte {
	t.Helper()
	rc, _, err := m.Blobs.Open(t.Context(), blob.Digest(digest))
	if err != nil {
		t.Fatalf("blob %s on the downstream: %v", digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hubSeqs lists the hub sequence numbers of tier's feed on m, in order.
func hubSeqs(t *testing.T, m *meshNode, tier string) []int64 {
	t.Helper()
	page, err := m.Store.Feed(t.Context(), tier, store.FeedPosition{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, e := range page.Entries {
		out = append(out, e.HubSeq)
	}
	return out
}

func wantContiguous(t *testing.T, what string, seqs []int64, n int) {
	t.Helper()
	if len(seqs) != n {
		t.Fatalf("%s: want hub sequence 1..%d, got %v", what, n, seqs)
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("%s: want hub sequence 1..%d, got %v", what, n, seqs)
		}
	}
}

func TestPullCarriesAddPromoteWithdrawRemove(t *testing.T) {
	h := newHub(t)
	d := downstream(t, []ed25519.PublicKey{h.pub()},
		link("edge", federation.Upstream{URL: h.srv.URL, Token: syncToken(t, h.meshNode, "edge")}))

	p, content := h.upload(t, "x86_64")
	d.sync(t)
	if err := hasPatch(d, p.Digest, "edge"); err != nil {
		t.Fatalf("after one round: want the patch on edge, %v", err)
	}
	if !bytes.Equal(blobBytes(t, d, p.Digest), content) {
		t.Fatal("downstream blob bytes differ from the hub's")
	}

	// A promotion to a tier the link does not carry changes nothing here.
	if _, err := h.Store.Promote(t.Context(), p.Digest, "beta"); err != nil {
		t.Fatal(err)
	}
	d.sync(t)
	got, _ := d.Store.Patch(t.Context(), p.Digest)
	if slices.Contains(got.Tiers, "beta") {
		t.Errorf("a link for edge carried a promotion to beta: tiers %v", got.Tiers)
	}

	if _, err := h.Store.Withdraw(t.Context(), p.Digest); err != nil {
		t.Fatal(err)
	}
	d.sync(t)
	if got, _ := d.Store.Patch(t.Context(), p.Digest); !got.Withdrawn {
		t.Error("withdrawal did not propagate")
	}
	if err := h.Store.RemovePatch(t.Context(), p.Digest); err != nil {
		t.Fatal(err)
	}
	st := d.sync(t)
	if _, err := d.Store.Patch(t.Context(), p.Digest); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("removal did not propagate: %v", err)
	}
	// added, withdrawn, removed on edge: three records, none lost or repeated.
	wantContiguous(t, "downstream's own edge feed", hubSeqs(t, d, "edge"), 3)
	if s := st[0]; s.State != federation.LinkSynced || s.LagEvents != 0 || s.HubSeq != 3 || s.RecordsApplied != 3 {
		t.Errorf("link status after catching up: %+v", s)
	}
}

// tamperingProxy forwards to target, altering the record with hub tier
// sequence 2 in feed answers while tamper is set.
func tamperingProxy(t *testing.T, target string, tamper *atomic.Bool) *httptest.Server {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(r *http.Response) error {
		if !tamper.Load() || !strings.HasSuffix(r.Request.URL.Path, "/sync/feed") || r.StatusCode != http.StatusOK {
			return nil
		}
		var page federation.FeedResponse
		if err := json.NewDecoder(r.Body).Decode(&page); err != nil {
			return err
		}
		r.Body.Close()
		for i, e := range page.Events {
			if bytes.Contains(e.Record, []byte(`"tier_seq":2,`)) {
				// Version 107.x becomes 108.x: a plausible, valid record
				// the hub never signed.
				page.Events[i].Record = bytes.Replace(e.Record, []byte(`"version":"107.`), []byte(`"version":"108.`), 1)
			}
		}
		body, err := json.Marshal(page)
		if err != nil {
			return err
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.Header.Set("Content-Length", fmt.Sprint(len(body)))
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv
}

func TestPullRefusesAlteredRecordAndAppliesWhatVerifiedBeforeIt(t *testing.T) {
	h := newHub(t)
	var tamper atomic.Bool
	tamper.Store(true)
	proxy := tamperingProxy(t, h.srv.URL, &tamper)
	d := downstream(t, []ed25519.PublicKey{h.pub()},
		link("edge", federation.Upstream{URL: proxy.URL, Token: syncToken(t, h.meshNode, "edge")}))

	p1, _ := h.upload(t, "x86_64")
	p2, _ := h.upload(t, "x86_64")
	st := d.sync(t)
	if err := hasPatch(d, p1.Digest, "edge"); err != nil {
		t.Errorf("the record before the altered one: want applied, %v", err)
	}
	if _, err := d.Store.Patch(t.Context(), p2.Digest); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("the altered record: want nothing applied, got %v", err)
	}
	if s := st[0]; s.State != federation.LinkFailing || s.RecordsRejected == 0 || !strings.Contains(s.LastError, "refused") {
		t.Errorf("link status after an altered record: %+v", s)
	}
	logs := d.log.String()
	if !strings.Contains(logs, `"event":"sync_record_fail"`) || !strings.Contains(logs, `"reason":"bad_signature"`) &&
		!strings.Contains(logs, `"reason":"malformed"`) {
		t.Errorf("want a sync_record_fail security event naming the signature, log:\n%s", logs)
	}

	tamper.Store(false)
	waitFor(t, "the second patch after the tampering stops", func() error { return hasPatch(d, p2.Digest, "edge") })
	wantContiguous(t, "downstream's own edge feed", hubSeqs(t, d, "edge"), 2)
}

func TestPullRefusesRecordsOfAnUnpinnedKey(t *testing.T) {
	h := newHub(t)
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	d := downstream(t, []ed25519.PublicKey{other},
		link("edge", federation.Upstream{URL: h.srv.URL, Token: syncToken(t, h.meshNode, "edge")}))
	p, _ := h.upload(t, "x86_64")
	d.sync(t)
	if _, err := d.Store.Patch(t.Context(), p.Digest); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("record by an unpinned key: want nothing applied, got %v", err)
	}
	if !strings.Contains(d.log.String(), `"reason":"unknown_key"`) {
		t.Errorf("want a security event with reason unknown_key, log:\n%s", d.log.String())
	}
}

// A link accepts only its hub tier: a token for another hub tier is a relay
// trying to move patches across tiers.
func TestPullRefusesRecordsOfAnotherHubTier(t *testing.T) {
	h := newHub(t)
	d := downstream(t, []ed25519.PublicKey{h.pub()}, federation.Link{
		Tier: "stable", HubTier: "stable",
		Upstreams: []federation.Upstream{{URL: h.srv.URL, Token: syncToken(t, h.meshNode, "edge"), AllowHTTP: true}},
	})
	p, _ := h.upload(t, "x86_64")
	d.sync(t)
	if _, err := d.Store.Patch(t.Context(), p.Digest); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("record of hub tier edge on a stable link: want refused, got %v", err)
	}
	if !strings.Contains(d.log.String(), `"reason":"wrong_tier"`) {
		t.Errorf("want a security event with reason wrong_tier, log:\n%s", d.log.String())
	}
}

// A filtered-out patch is logged, not fetched, and is served onward as a
// skip so that the next level keeps a contiguous sequence. The skip has
// no signed reason (the hub never took the patch back), so only a
// downstream that filters it out too may pass it by; one that takes the
// patch treats it as missing data: it tries to fetch it, fails, and says
// who failed it.
func TestPullFiltersAndPassesSkipsOn(t *testing.T) {
	h := newHub(t)
	relay := downstream(t, []ed25519.PublicKey{h.pub()}, federation.Link{
		Tier: "edge", Filter: federation.Filter{Archs: []string{"aarch64"}},
		Upstreams: []federation.Upstream{{URL: h.srv.URL, Token: syncToken(t, h.meshNode, "edge"), AllowHTTP: true}},
	})
	x86, _ := h.upload(t, "x86_64")
	arm, _ := h.upload(t, "aarch64")
	relay.sync(t)
	if _, err := relay.Store.Patch(t.Context(), x86.Digest); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("x86_64 patch on an aarch64-only link: want absent, got %v", err)
	}
	if _, err := relay.Blobs.Stat(t.Context(), blob.Digest(x86.Digest)); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("x86_64 blob: want never fetched, got %v", err)
	}
	if err := hasPatch(relay, arm.Digest, "edge"); err != nil {
		t.Errorf("aarch64 patch: %v", err)
	}
	page, err := relay.Store.Feed(t.Context(), "edge", store.FeedPosition{}, 10)
	if err != nil || len(page.Entries) != 2 || !page.Entries[0].Skip || page.Entries[1].Skip {
		t.Fatalf("relay feed: want [x86 skipped, arm served], got %+v, %v", page.Entries, err)
	}

	armLink := link("edge", federation.Upstream{URL: relay.srv.URL, Token: syncToken(t, relay, "edge")})
	armLink.Filter = federation.Filter{Archs: []string{"aarch64"}}
	edge := downstream(t, []ed25519.PublicKey{h.pub()}, armLink)
	st := edge.sync(t)
	if st[0].State != federation.LinkSynced || st[0].RecordsRejected != 0 {
		t.Fatalf("aarch64 edge behind an aarch64 relay: %+v", st[0])
	}
	if err := hasPatch(edge, arm.Digest, "edge"); err != nil {
		t.Errorf("edge: aarch64 patch: %v", err)
	}
	wantContiguous(t, "edge's own feed", hubSeqs(t, edge, "edge"), 2)

	wide := downstream(t, []ed25519.PublicKey{h.pub()},
		link("edge", federation.Upstream{URL: relay.srv.URL, Token: syncToken(t, relay, "edge")}))
	st = wide.sync(t)
	if st[0].State != federation.LinkFailing || st[0].RecordsRejected == 0 || st[0].HubSeq != 0 {
		t.Fatalf("edge taking every arch behind an aarch64 relay: want failing at hub seq 0 with a rejection, got %+v", st[0])
	}
	if !strings.Contains(wide.log.String(), `"reason":"unexplained_skip"`) || !strings.Contains(wide.log.String(), relay.srv.URL) {
		t.Fatalf("want an unexplained_skip security event naming %s, log:\n%s", relay.srv.URL, wide.log.String())
	}
}

// An edge whose upstream dies moves to the next candidate and resumes by
// hub sequence there: nothing missed, nothing applied twice.
func TestPullFailsOverAndResumesByHubSequence(t *testing.T) {
	h := newHub(t)
	keys := []ed25519.PublicKey{h.pub()}
	a := downstream(t, keys, link("edge", federation.Upstream{URL: h.srv.URL, Token: syncToken(t, h.meshNode, "edge")}))
	b := downstream(t, keys, link("edge", federation.Upstream{URL: h.srv.URL, Token: syncToken(t, h.meshNode, "edge")}))
	// b has more history than a in its own log numbering: a tier event
	// shifts its sequence, so the same record has different seqs on a and b.
	if _, err := b.Store.AddTier(t.Context(), "extra"); err != nil {
		t.Fatal(err)
	}
	edge := downstream(t, keys, link("edge",
		federation.Upstream{URL: a.srv.URL, Token: syncToken(t, a, "edge")},
		federation.Upstream{URL: b.srv.URL, Token: syncToken(t, b, "edge")}))

	p1, _ := h.upload(t, "x86_64")
	a.sync(t)
	b.sync(t)
	edge.sync(t)
	if err := hasPatch(edge, p1.Digest, "edge"); err != nil {
		t.Fatalf("before the failover: %v", err)
	}

	a.srv.CloseClientConnections()
	a.srv.Close()
	p2, _ := h.upload(t, "x86_64")
	p3, _ := h.upload(t, "x86_64")
	b.sync(t)
	waitFor(t, "edge gets p2 and p3 through b", func() error {
		edge.puller.Trigger(t.Context(), false)
		if err := hasPatch(edge, p2.Digest, "edge"); err != nil {
			return err
		}
		return hasPatch(edge, p3.Digest, "edge")
	})
	if up := edge.puller.Status()[0].Upstream; up != b.srv.URL {
		t.Errorf("edge upstream after a's death: want %s, got %s", b.srv.URL, up)
	}
	wantContiguous(t, "edge's own feed across the failover", hubSeqs(t, edge, "edge"), 3)
	cur, err := edge.Store.Cursor(t.Context(), "edge")
	if err != nil || cur.Upstream != b.srv.URL || cur.HubSeq != 3 {
		t.Errorf("edge cursor after the failover: want on b at hub seq 3, got %+v, %v", cur, err)
	}
}

// A corrupted blob on the upstream is refused by digest and never listed.
func TestPullRefusesCorruptBlob(t *testing.T) {
	h := newHub(t)
	d := downstream(t, []ed25519.PublicKey{h.pub()},
		link("edge", federation.Upstream{URL: h.srv.URL, Token: syncToken(t, h.meshNode, "edge")}))
	content := []byte("the bytes the hub signed for")
	digest := blob.FromBytes(content)
	// Store other bytes under the digest, as a failing disk or a hostile
	// operator on the upstream would.
	w, err := h.Blobs.Create(t.Context(), digest)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("other bytes of the same len!"))
	if err := w.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Store.AddPatch(t.Context(), catalog.Patch{Digest: string(digest), Kernel: "5.15.0-107.117-generic",
		Arch: "x86_64", Version: "1.0", Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	st := d.sync(t)
	if _, err := d.Store.Patch(t.Context(), string(digest)); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("patch with a corrupt blob: want not listed, got %v", err)
	}
	if _, err := d.Blobs.Stat(t.Context(), digest); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("corrupt blob: want nothing committed, got %v", err)
	}
	if st[0].RecordsRejected == 0 || !strings.Contains(d.log.String(), `"reason":"digest_mismatch"`) {
		t.Errorf("want a rejection and a digest_mismatch security event; status %+v", st[0])
	}
}

// An enrollment token made at the hub works at a downstream, so a machine
// can register wherever it fails over to; its revocation follows.
func TestPullCarriesEnrollmentTokens(t *testing.T) {
	h := newHub(t)
	d := downstream(t, []ed25519.PublicKey{h.pub()},
		link("edge", federation.Upstream{URL: h.srv.URL, Token: syncToken(t, h.meshNode, "edge")}))
	secret, tok, err := auth.NewToken(catalog.TokenAuth)
	if err != nil {
		t.Fatal(err)
	}
	tok.Tier, tok.Name, tok.Created = "edge", "fleet", time.Now()
	if err := h.Store.AddToken(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	d.sync(t)
	if _, err := d.Auth.Bearer(t.Context(), "Bearer "+secret, catalog.TokenAuth); err != nil {
		t.Fatalf("the hub's enrollment token at the downstream: %v", err)
	}
	if err := h.Store.RevokeToken(t.Context(), catalog.TokenAuth, tok.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	d.sync(t)
	if _, err := d.Auth.Bearer(t.Context(), "Bearer "+secret, catalog.TokenAuth); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("revoked at the hub: want refused at the downstream, got %v", err)
	}
}

// Poke (gossip saw the upstream's head move, or its health change) starts
// a round at once, even in the middle of a long backoff pause.
func TestPokeCutsABackoffPauseShort(t *testing.T) {
	h := newHub(t)
	var down atomic.Bool
	u, _ := url.Parse(h.srv.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(flaky.Close)
	down.Store(true)
	d := downstreamRetrying(t, time.Hour, []ed25519.PublicKey{h.pub()},
		link("edge", federation.Upstream{URL: flaky.URL, Token: syncToken(t, h.meshNode, "edge")}))
	waitFor(t, "the link failing", func() error {
		if s := d.puller.Status()[0]; s.State != federation.LinkFailing {
			return fmt.Errorf("state %s", s.State)
		}
		return nil
	})
	p, _ := h.upload(t, "x86_64")
	down.Store(false)
	// The loop now sleeps for about an hour; only a poke gets it going.
	d.puller.Poke("http://127.0.0.1:1") // a URL no link uses changes nothing
	time.Sleep(200 * time.Millisecond)
	if _, err := d.Store.Patch(t.Context(), p.Digest); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("a poke for another upstream started a round: %v", err)
	}
	d.puller.Poke(flaky.URL)
	waitFor(t, "the patch after the poke", func() error { return hasPatch(d, p.Digest, "edge") })
}

// An upstream rebuilt behind the same URL numbers its log anew: the link
// notices that the page it got does not continue its hub sequence and
// resumes by hub sequence, with no security event and nothing repeated.
func TestPullSurvivesAnUpstreamRenumberedBehindTheSameURL(t *testing.T) {
	h := newHub(t)
	keys := []ed25519.PublicKey{h.pub()}
	a := downstream(t, keys, link("edge", federation.Upstream{URL: h.srv.URL, Token: syncToken(t, h.meshNode, "edge")}))
	b := downstream(t, keys, link("edge", federation.Upstream{URL: h.srv.URL, Token: syncToken(t, h.meshNode, "edge")}))
	// b's log is numbered differently from a's: 40 local tier events first.
	for i := range 40 {
		if _, err := b.Store.AddTier(t.Context(), fmt.Sprintf("local%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	var target atomic.Pointer[httputil.ReverseProxy]
	proxyTo := func(m *meshNode) {
		u, _ := url.Parse(m.srv.URL)
		target.Store(httputil.NewSingleHostReverseProxy(u))
	}
	proxyTo(a)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { target.Load().ServeHTTP(w, r) }))
	t.Cleanup(front.Close)
	// One token valid on both: the same secret added to each store.
	secret, tok, err := auth.NewToken(catalog.TokenSync)
	if err != nil {
		t.Fatal(err)
	}
	tok.Tier, tok.Name, tok.Created = "edge", "edge-1", time.Now()
	for _, m := range []*meshNode{a, b} {
		if err := m.Store.AddToken(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
	}
	edge := downstream(t, keys, link("edge", federation.Upstream{URL: front.URL, Token: secret}))

	p1, _ := h.upload(t, "x86_64")
	a.sync(t)
	b.sync(t)
	edge.sync(t)
	if err := hasPatch(edge, p1.Digest, "edge"); err != nil {
		t.Fatal(err)
	}
	proxyTo(b) // "a" is rebuilt: same URL, b's numbering
	p2, _ := h.upload(t, "x86_64")
	b.sync(t)
	waitFor(t, "edge gets p2 from the renumbered upstream", func() error {
		edge.puller.Trigger(t.Context(), false)
		return hasPatch(edge, p2.Digest, "edge")
	})
	wantContiguous(t, "edge's own feed", hubSeqs(t, edge, "edge"), 2)
	if strings.Contains(edge.log.String(), "sync_record_fail") {
		t.Errorf("a renumbered upstream was reported as an attack:\n%s", edge.log.String())
	}
}

// A node admitted at the hub is in the downstream's roster with the hub's
// own signed record; its removal follows.
func TestPullCarriesNodeAdmissions(t *testing.T) {
	h := newHub(t)
	d := downstream(t, []ed25519.PublicKey{h.pub()},
		link("edge", federation.Upstream{URL: h.srv.URL, Token: syncToken(t, h.meshNode, "edge")}))
	nodePub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	n := catalog.Node{Name: "edge-a1", Key: federation.FormatPublicKey(nodePub), KeyID: federation.KeyID(nodePub),
		URLs: []string{"https://edge-a1.example"}, Tiers: []string{"edge"}, Admitted: time.Now()}
	if _, err := h.Store.AdmitNode(t.Context(), n); err != nil {
		t.Fatal(err)
	}
	d.sync(t)
	as, err := d.Store.Admissions(t.Context(), "edge")
	if err != nil || len(as) != 1 {
		t.Fatalf("the hub's admission at the downstream: %+v, %v", as, err)
	}
	env := federation.Envelope{Record: as[0].Record, Sig: as[0].Sig}
	if _, err := federation.VerifyAdmission(federation.NewVerifier(h.pub()), env, "edge-a1", nodePub); err != nil {
		t.Errorf("the downstream's roster record does not verify against the hub key: %v", err)
	}
	if err := h.Store.RemoveNode(t.Context(), "edge-a1", time.Now()); err != nil {
		t.Fatal(err)
	}
	d.sync(t)
	if as, err := d.Store.Admissions(t.Context(), "edge"); err != nil || len(as) != 0 {
		t.Errorf("removed at the hub: want no admission at the downstream, got %+v (%v)", as, err)
	}
}
