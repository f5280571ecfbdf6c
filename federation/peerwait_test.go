package federation_test

import (
	"crypto/ed25519"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/federation"
)

// slowBlobs forwards to target, holding each blob answer for delay first:
// an upstream whose blobs take a while to come.
func slowBlobs(t *testing.T, target string, delay time.Duration) *httptest.Server {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// peerAsks counts, per node, the requests its peer listener gets for peer
// blobs: all of them, and those answered 404, the asks that found nothing.
type peerAsks struct {
	asked, missed []atomic.Int64
}

func newPeerAsks(n int) *peerAsks {
	return &peerAsks{asked: make([]atomic.Int64, n), missed: make([]atomic.Int64, n)}
}

func (a *peerAsks) wrap(i int, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/peer/blobs/") {
			h.ServeHTTP(w, r)
			return
		}
		a.asked[i].Add(1)
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusNotFound {
			a.missed[i].Add(1)
		}
	})
}

// misses is the asks answered 404, in all and at each node.
func (a *peerAsks) misses() (total int64, each []int64) {
	for i := range a.missed {
		n := a.missed[i].Load()
		total += n
		each = append(each, n)
	}
	return total, each
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// olderNode strips ?wait= before h: a peer that does not know it answers
// at once.
func olderNode(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		q.Del("wait")
		r.URL.RawQuery = q.Encode()
		h.ServeHTTP(w, r)
	})
}

// The designated node takes about 1.5 s to get a blob from the hub. The
// others ask it once with a wait, and are answered when it commits the
// blob, rather than polling every 100 ms: a handful of asks that find
// nothing, where polling made about 15 per waiting node per peer.
func TestPeersWaitForABlobWithOneLongAsk(t *testing.T) {
	h := newHub(t)
	up := slowBlobs(t, h.srv.URL, 1500*time.Millisecond)
	asks := newPeerAsks(3)
	d := newDCWith(t, 3, []ed25519.PublicKey{h.pub()},
		federation.Upstream{URL: up.URL, Token: syncToken(t, h.meshNode, "edge")}, time.Minute, asks.wrap)

	start := time.Now()
	patches, _ := uploadN(t, h, 1)
	waitHave(t, d.nodes, patches)
	took := time.Since(start)
	// Each of the two waiting nodes: a 1 s ask at the designated node,
	// one at once at the other, then the ask answered at the commit.
	// Slack for a round that starts late; polling made about 60.
	got, each := asks.misses()
	if got > 10 {
		t.Errorf("peers answered 404 to %d asks (by node: %v) over %s; want at most 10, one per waiting node per peer per second",
			got, each, took)
	}
	t.Logf("asks that found nothing, by node: %v; all had the blob after %s", each, took)
	for i, m := range d.nodes[1:] {
		if strings.Contains(m.log.String(), "not at a same-DC peer in time") {
			t.Errorf("node %d gave up on its peers", i+1)
		}
	}
}

// A designated node that ignores the wait (an older node) answers every
// ask at once: the others then ask at most every 100 ms, as before, not
// in a hot loop.
func TestPeersAskAnOlderNodeAtAPace(t *testing.T) {
	h := newHub(t)
	up := slowBlobs(t, h.srv.URL, time.Second)
	asks := newPeerAsks(3)
	d := newDCWith(t, 3, []ed25519.PublicKey{h.pub()},
		federation.Upstream{URL: up.URL, Token: syncToken(t, h.meshNode, "edge")}, time.Minute,
		func(i int, h http.Handler) http.Handler { return asks.wrap(i, olderNode(h)) })

	start := time.Now()
	patches, _ := uploadN(t, h, 1)
	waitHave(t, d.nodes, patches)
	took := time.Since(start)
	// Two waiting nodes, each asking its two peers once per 100 ms.
	polls := int64(took/(100*time.Millisecond)) + 2
	got, _ := asks.misses()
	if most := 2 * 2 * polls; got > most {
		t.Errorf("peers answered 404 to %d asks in %s; want at most %d, two nodes asking two peers every 100 ms", got, took, most)
	}
	if asks.missed[0].Load() == 0 {
		t.Error("the designated node never answered 404: the test did not wait on it")
	}
	t.Logf("asks that found nothing: %d in %s", got, took)
}

// holdFirstBlob forwards to target, holding the first blob answer for
// hold: the designated node's fetch hangs, the others' do not.
func holdFirstBlob(t *testing.T, target string, hold time.Duration) (srv *httptest.Server, held chan struct{}) {
	t.Helper()
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	var n atomic.Int64
	held = make(chan struct{})
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") && n.Add(1) == 1 {
			close(held)
			select {
			case <-time.After(hold):
			case <-r.Context().Done():
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, held
}

// Gossip says the designated node died while the others hold a long ask
// at it (the node itself still up, its fetch hung): they follow the new
// designated node within about an ask, not at the end of the peer wait.
func TestPeersFollowANewDesignatedNodeMidAsk(t *testing.T) {
	h := newHub(t)
	up, held := holdFirstBlob(t, h.srv.URL, 30*time.Second)
	asks := newPeerAsks(3)
	d := newDCWith(t, 3, []ed25519.PublicKey{h.pub()},
		federation.Upstream{URL: up.URL, Token: syncToken(t, h.meshNode, "edge")}, time.Minute, asks.wrap)

	patches, _ := uploadN(t, h, 1)
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the designated node never asked the hub for the blob")
	}
	waitFor(t, "the others to ask the designated node", func() error {
		if n := asks.asked[0].Load(); n < 2 {
			return fmt.Errorf("%d asks at node 0, want one from each", n)
		}
		return nil
	})
	d.dead[0].Store(true)
	// waitFor gives up after 10 s; the hold and the peer wait are longer.
	waitHave(t, d.nodes[1:], patches)
}
