package federation_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/nodetest"
	"github.com/patchmesh/patchmesh/replicate"
	"github.com/patchmesh/patchmesh/store"
)

// countingProxy forwards to target and counts the body bytes of its blob
// answers: what the upstream sent of blobs.
func countingProxy(t *testing.T, target string) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	// Long polls cut short when a test ends are not news.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	sent := &atomic.Int64{}
	rp.ModifyResponse = func(r *http.Response) error {
		if strings.Contains(r.Request.URL.Path, "/blobs/") {
			r.Body = countingBody{r.Body, sent}
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv, sent
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	b.n.Add(int64(k))
	return k, err
}

// dc is a data centre of downstreams of one upstream, whose Peers hook is
// wired by hand as gossip would: the designated fetcher is the first node
// not marked dead, and a node's peers are the others not marked dead, the
// designated one first.
type dc struct {
	nodes []*meshNode
	dead  []atomic.Bool
	stop  []func() // stops node i's sync loop and waits for it
	// client reaches upstream (plain http) and peers (mutual TLS) alike.
	client *http.Client
}

// anyPeer pins every node key: the test is about who fetches from whom,
// not about admissions (api and node test those).
type anyPeer struct{}

func (anyPeer) Pinned(string) bool  { return true }
func (anyPeer) Refused(string) bool { return false }

// servePeer serves n's API as its peer listener: TLS 1.3 with the node
// certificate, client certificates required; wrap, if set, stands in
// front of it.
func servePeer(t *testing.T, n *nodetest.Node, log *nodetest.LogBuffer, cert tls.Certificate, wrap func(http.Handler) http.Handler) *meshNode {
	t.Helper()
	h, err := api.New(n.Config)
	if err != nil {
		t.Fatal(err)
	}
	h = api.PeerListener(h, anyPeer{}, n.Config.Log)
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = federation.PeerServerTLS(cert, anyPeer{}, func(string, error) {})
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &meshNode{Node: n, srv: srv, log: log}
}

func newDC(t *testing.T, n int, keys []ed25519.PublicKey, up federation.Upstream, peerWait time.Duration) *dc {
	t.Helper()
	return newDCWith(t, n, keys, up, peerWait, nil)
}

// newDCWith is newDC with wrap(i, h) in front of node i's peer listener.
func newDCWith(t *testing.T, n int, keys []ed25519.PublicKey, up federation.Upstream, peerWait time.Duration,
	wrap func(i int, h http.Handler) http.Handler) *dc {
	t.Helper()
	d := &dc{dead: make([]atomic.Bool, n)}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := federation.NodeCertificate(priv, "dc", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	d.client = &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: federation.PeerClientTLS(cert, anyPeer{}, "")}}
	var reps []*replicate.Replicator
	for i := range n {
		buf, log := newLog()
		w := nodetest.Wire(t, log, nodetest.Options{Changes: &store.Changes{}})
		w.Config.Info.Role = "edge"
		rep, err := replicate.New(replicate.Config{Client: d.client, Blobs: w.Blobs})
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, rep)
		// As the node wires it: peers waiting for a blob are woken when
		// the replicator commits it.
		w.Config.Peer = &api.PeerConfig{Pins: anyPeer{}, URL: func(string) string { return "" }, Commits: rep}
		var wr func(http.Handler) http.Handler
		if wrap != nil {
			wr = func(h http.Handler) http.Handler { return wrap(i, h) }
		}
		d.nodes = append(d.nodes, servePeer(t, w, buf, cert, wr))
	}
	for i, m := range d.nodes {
		client, rep := d.client, reps[i]
		var err error
		m.puller, err = federation.NewPuller(federation.PullConfig{
			Store: m.Store, Fetcher: rep, Client: client,
			Keys:  func(context.Context) ([]ed25519.PublicKey, error) { return keys, nil },
			Links: []federation.Link{link("edge", up)}, Wait: 2 * time.Second,
			RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
			Peers: d.hook(i), PeerWait: peerWait, Log: m.Config.Log,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { m.puller.Run(ctx) })
		stop := sync.OnceFunc(func() { cancel(); wg.Wait() })
		d.stop = append(d.stop, stop)
		t.Cleanup(stop)
	}
	return d
}

func (d *dc) hook(self int) federation.Peers {
	return func(tier, upstream string) (bool, []replicate.Source) {
		var alive []int
		for i := range d.nodes {
			if !d.dead[i].Load() {
				alive = append(alive, i)
			}
		}
		if len(alive) == 0 || alive[0] == self {
			return true, nil
		}
		var peers []replicate.Source
		for _, i := range alive {
			if i != self {
				peers = append(peers, replicate.Source{BaseURL: d.nodes[i].srv.URL, Path: replicate.PeerPath})
			}
		}
		return false, peers
	}
}

// kill stops node i's sync loop and API, as a crash would; whether gossip
// has seen it is the test's to say.
func (d *dc) kill(i int) {
	d.stop[i]()
	d.nodes[i].srv.CloseClientConnections()
	d.nodes[i].srv.Close()
}

// waitHave waits until every node listed has every patch, with its bytes.
func waitHave(t *testing.T, nodes []*meshNode, patches []catalog.Patch) {
	t.Helper()
	for i, m := range nodes {
		waitFor(t, fmt.Sprintf("node %d lists the %d patches", i, len(patches)), func() error {
			for _, p := range patches {
				if err := hasPatch(m, p.Digest, "edge"); err != nil {
					return err
				}
			}
			return nil
		})
	}
}

func uploadN(t *testing.T, h *hub, n int) ([]catalog.Patch, int64) {
	var ps []catalog.Patch
	var size int64
	for range n {
		p, _ := h.upload(t, "x86_64")
		ps = append(ps, p)
		size += p.Size
	}
	return ps, size
}

// Three nodes of one data centre: the designated one fetches from the hub,
// the others from it, so the hub sends each blob once.
func TestPeersFetchEachBlobFromTheHubOnce(t *testing.T) {
	h := newHub(t)
	proxy, sent := countingProxy(t, h.srv.URL)
	// A wait far beyond waitFor's: a node that went upstream after it
	// would fail the test rather than pass it slowly.
	d := newDC(t, 3, []ed25519.PublicKey{h.pub()},
		federation.Upstream{URL: proxy.URL, Token: syncToken(t, h.meshNode, "edge")}, time.Minute)

	patches, size := uploadN(t, h, 3)
	waitHave(t, d.nodes, patches)
	for i, m := range d.nodes {
		for _, p := range patches {
			if got := blobBytes(t, m, p.Digest); int64(len(got)) != p.Size {
				t.Errorf("node %d: blob %s has %d bytes, want %d", i, p.Digest, len(got), p.Size)
			}
		}
	}
	if got := sent.Load(); got != size {
		t.Errorf("hub sent %d blob bytes for %d bytes of blobs to a data centre of 3; want each blob sent once", got, size)
	}
	if logs := d.nodes[1].log.String() + d.nodes[2].log.String(); strings.Contains(logs, "not at a same-DC peer in time") {
		t.Errorf("a node gave up on its peers:\n%s", logs)
	}
}

// The designated node dies without gossip noticing: the others wait
// PeerWait for it, then fetch from the hub themselves.
func TestPeersFallBackToUpstreamAfterTheWait(t *testing.T) {
	h := newHub(t)
	proxy, sent := countingProxy(t, h.srv.URL)
	d := newDC(t, 3, []ed25519.PublicKey{h.pub()},
		federation.Upstream{URL: proxy.URL, Token: syncToken(t, h.meshNode, "edge")}, 300*time.Millisecond)
	d.kill(0)

	patches, size := uploadN(t, h, 2)
	waitHave(t, d.nodes[1:], patches)
	// Each survivor falls back on its own after the wait, unless the other
	// already has the blob by then and serves it as a peer: between one and
	// two copies of each blob, never more, and never none.
	if got := sent.Load(); got < size || got > 2*size {
		t.Errorf("hub sent %d blob bytes for %d bytes of blobs; want between %d and %d", got, size, size, 2*size)
	}
	fellBack := 0
	for _, m := range d.nodes[1:] {
		if strings.Contains(m.log.String(), "not at a same-DC peer in time") {
			fellBack++
		}
	}
	if fellBack == 0 {
		t.Error("no survivor logged falling back to the upstream")
	}
}

// Gossip sees the designated node die: the next one becomes designated and
// goes upstream at once, and the last fetches from it.
func TestPeersFollowTheDesignatedNodesDeath(t *testing.T) {
	h := newHub(t)
	proxy, sent := countingProxy(t, h.srv.URL)
	d := newDC(t, 3, []ed25519.PublicKey{h.pub()},
		federation.Upstream{URL: proxy.URL, Token: syncToken(t, h.meshNode, "edge")}, time.Minute)
	d.kill(0)
	d.dead[0].Store(true)

	patches, size := uploadN(t, h, 2)
	waitHave(t, d.nodes[1:], patches)
	if got := sent.Load(); got != size {
		t.Errorf("hub sent %d blob bytes for %d bytes of blobs; want each sent once, to the new designated node", got, size)
	}
}
