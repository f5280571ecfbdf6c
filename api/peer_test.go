package api_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/federation"
)

// pins stands in for the node's admissions: the key IDs admitted now,
// which a removal changes under the running API.
type pins struct {
	mu   sync.Mutex
	live map[string]bool
}

func (p *pins) Pinned(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live[id]
}

func (p *pins) Refused(string) bool { return false }

func (p *pins) set(ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live = map[string]bool{}
	for _, id := range ids {
		p.live[id] = true
	}
}

// peerNode is a node key with its certificate and an HTTP client that
// presents it.
type peerNode struct {
	id     string
	cert   tls.Certificate
	client *http.Client
}

func newPeerNode(t *testing.T) peerNode {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := federation.NodeCertificate(priv, "peer", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The test's server is pinned by the exact key the test gives it.
	return peerNode{id: federation.KeyID(priv.Public().(ed25519.PublicKey)), cert: cert}
}

// peerServer serves e's API as a peer listener, with server's certificate.
func peerServer(t *testing.T, e *env, p *pins, server peerNode) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(api.PeerListener(e.handler, p, slogFor(e)))
	srv.TLS = federation.PeerServerTLS(server.cert, p, func(string, error) {})
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func (n peerNode) dial(server peerNode) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: federation.PeerClientTLS(n.cert, nil, server.id)}}
}

func TestPeerBlobsByCertificateIdentity(t *testing.T) {
	p := &pins{}
	e := newEnv(t, func(c *api.Config) { c.Peer = &api.PeerConfig{Pins: p, URL: func(string) string { return "" }} })
	self, admitted, stranger := newPeerNode(t), newPeerNode(t), newPeerNode(t)
	p.set(self.id, admitted.id)
	srv := peerServer(t, e, p, self)
	file := content(10000, "peer-bytes")
	d := e.upload(file, "107.1")
	// A blob no patch names yet is still served: a peer may be fetching
	// for a record this node has not applied.
	loose := content(500, "loose")
	if _, err := blob.Put(t.Context(), e.blobs, blob.FromBytes(loose), bytes.NewReader(loose)); err != nil {
		t.Fatal(err)
	}
	syncTok, _ := e.token("sync", "edge", "down-edge")
	get := func(c *http.Client, path, authz string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	path := "/v1/peer/blobs/" + d.Digest
	if st, b := get(admitted.dial(self), path, ""); st != 200 || !bytes.Equal(b, file) {
		t.Fatalf("admitted peer: want 200 with the blob, got %d (%d bytes)", st, len(b))
	}
	if st, b := get(admitted.dial(self), "/v1/peer/blobs/"+digestOf(loose), ""); st != 200 || !bytes.Equal(b, loose) {
		t.Fatalf("unrecorded blob: want 200 with it, got %d", st)
	}
	if st, b := get(stranger.dial(self), path, ""); st != 403 || !strings.Contains(string(b), `"forbidden"`) {
		t.Fatalf("never admitted: want 403 forbidden, got %d %s", st, b)
	}
	// The feed, with the tier's sync token, over the peer listener.
	if st, b := get(admitted.dial(self), "/v1/sync/feed?tier=edge&wait=0s", "Bearer "+syncTok); st != 200 {
		t.Fatalf("feed on the peer listener: want 200, got %d %s", st, b)
	}
	// Machines' and admins' routes are not on the peer listener.
	if st, _ := get(admitted.dial(self), "/v1/admin/tiers", e.admin); st != 404 {
		t.Fatalf("admin route on the peer listener: want 404, got %d", st)
	}
	// With a peer listener, the sync token alone, on the main listener,
	// no longer feeds a tier, and the peer endpoint is not there.
	if r := e.request(http.MethodGet, "/v1/sync/feed?tier=edge&wait=0s", "Bearer "+syncTok, nil); r.StatusCode != 403 {
		t.Fatalf("sync token on the main listener: want 403, got %d %s", r.StatusCode, r.body)
	}
	if r := e.request(http.MethodGet, path, "", nil); r.StatusCode != 404 {
		t.Fatalf("peer blob on the main listener: want 404, got %d", r.StatusCode)
	}
	// A removal takes effect on the next request of a kept-alive
	// connection.
	c := admitted.dial(self)
	if st, _ := get(c, path, ""); st != 200 {
		t.Fatalf("before removal: want 200, got %d", st)
	}
	p.set(self.id)
	if st, _ := get(c, path, ""); st != 403 {
		t.Fatalf("after removal, same connection: want 403, got %d", st)
	}
	logs := e.logs.String()
	for _, want := range []string{`"event":"authn_peer_success"`, `"event":"authn_peer_fail"`, `"reason":"not_admitted"`, `"reason":"sync_token_off_peer_listener"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %s in the security log", want)
		}
	}
}

// Without a peer listener there is no peer endpoint, and sync tokens work
// on the main listener as before.
func TestPeerBlobsWithoutPeerListenerIsNotFound(t *testing.T) {
	e := newEnv(t)
	p := e.upload(content(100, "x"), "107.1")
	r := e.request(http.MethodGet, "/v1/peer/blobs/"+p.Digest, "", nil)
	if r.StatusCode != 404 || r.errCode() != "not_found" {
		t.Errorf("want 404 not_found, got %d %s", r.StatusCode, r.body)
	}
	syncTok, _ := e.token("sync", "edge", "down-edge")
	if r := e.request(http.MethodGet, "/v1/sync/feed?tier=edge&wait=0s", "Bearer "+syncTok, nil); r.StatusCode != 200 {
		t.Errorf("sync token without a peer listener: want 200, got %d %s", r.StatusCode, r.body)
	}
}

// slogFor logs into e's buffer, as e's API does.
func slogFor(e *env) *slog.Logger {
	return slog.New(api.NewLogHandler(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
}
