package api_test

import (
	"bytes"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/topology"
)

// keyring stands in for the gossip keyring: the node passes its peer
// tokens, which a rotation changes under the running API.
type keyring struct {
	mu   sync.Mutex
	keys [][]byte
}

func (k *keyring) tokens() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, key := range k.keys {
		out = append(out, topology.PeerToken(key))
	}
	return out
}

func (k *keyring) set(keys ...[]byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys = keys
}

func TestPeerBlobAuth(t *testing.T) {
	old, cur := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	ring := &keyring{}
	ring.set(cur, old)
	e := newEnv(t, func(c *api.Config) { c.PeerTokens = ring.tokens })
	file := content(10000, "peer-bytes")
	p := e.upload(file, "107.1") // on edge
	// A blob no patch names yet is still served: a peer may be fetching
	// for a record this node has not applied.
	loose := content(500, "loose")
	if _, err := blob.Put(t.Context(), e.blobs, blob.FromBytes(loose), bytes.NewReader(loose)); err != nil {
		t.Fatal(err)
	}
	syncTok, _ := e.token("sync", "edge", "down-edge")
	machine := e.machine("edge", "edge-machine-000001")
	good, rotated := topology.PeerToken(cur), topology.PeerToken(old)
	wrong := topology.PeerToken(bytes.Repeat([]byte{3}, 32))
	path := "/v1/peer/blobs/" + p.Digest

	for _, tc := range []struct {
		name, method, path, authz string
		status                    int
		body                      []byte
		reason                    string // of the authn_token_fail event
	}{
		{"primary key's token", http.MethodGet, path, "Bearer " + good, 200, file, ""},
		{"older key's token", http.MethodGet, path, "Bearer " + rotated, 200, file, ""},
		{"HEAD", http.MethodHead, path, "Bearer " + good, 200, nil, ""},
		{"unrecorded blob", http.MethodGet, "/v1/peer/blobs/" + digestOf(loose), "Bearer " + good, 200, loose, ""},
		{"absent blob", http.MethodGet, "/v1/peer/blobs/" + digestOf([]byte("none")), "Bearer " + good, 404, nil, ""},
		{"token of another keyring", http.MethodGet, path, "Bearer " + wrong, 401, nil, "bad_secret"},
		{"no credentials", http.MethodGet, path, "", 401, nil, "malformed"},
		{"sync token", http.MethodGet, path, "Bearer " + syncTok, 401, nil, "malformed"},
		{"machine credentials", http.MethodGet, path, machine, 401, nil, "malformed"},
		{"admin macaroon", http.MethodGet, path, e.admin, 401, nil, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := strings.Count(e.logs.String(), `"reason":"`+tc.reason+`"`)
			r := e.request(tc.method, tc.path, tc.authz, nil)
			if r.StatusCode != tc.status {
				t.Fatalf("want %d, got %d %s", tc.status, r.StatusCode, r.body)
			}
			if tc.body != nil && !bytes.Equal(r.body, tc.body) {
				t.Errorf("body of %d bytes differs from the blob's %d", len(r.body), len(tc.body))
			}
			if tc.reason == "" {
				return
			}
			var found bool
			for _, l := range e.logs.lines(t) {
				found = found || l["event"] == "authn_token_fail" && l["kind"] == "peer" && l["reason"] == tc.reason
			}
			if !found || strings.Count(e.logs.String(), `"reason":"`+tc.reason+`"`) <= before {
				t.Errorf("want an authn_token_fail event of kind peer, reason %s", tc.reason)
			}
		})
	}

	r := e.request(http.MethodGet, path, "Bearer "+good, nil, "Range", "bytes=100-199")
	if r.StatusCode != http.StatusPartialContent || !bytes.Equal(r.body, file[100:200]) || r.Header.Get("ETag") != `"`+p.Digest+`"` {
		t.Errorf("range: want 206 with bytes 100-199 and the digest ETag, got %d, %d bytes, ETag %q",
			r.StatusCode, len(r.body), r.Header.Get("ETag"))
	}

	// Once the old key is removed from the keyring, its token is refused.
	ring.set(cur)
	if r := e.request(http.MethodGet, path, "Bearer "+rotated, nil); r.StatusCode != 401 {
		t.Errorf("token of a removed key: want 401, got %d", r.StatusCode)
	}

	logs := e.logs.String()
	if !strings.Contains(logs, `"event":"authn_token_success","kind":"peer"`) {
		t.Error("an accepted peer token logged no authn_token_success security event")
	}
	for _, tok := range []string{good, rotated, wrong} {
		if strings.Contains(logs, strings.TrimPrefix(tok, topology.PeerTokenPrefix)) {
			t.Errorf("a peer token (%.10s…) is in the log", tok)
		}
	}
}

// With gossip off there are no peers and no peer endpoint.
func TestPeerBlobsWithoutGossipIsNotFound(t *testing.T) {
	e := newEnv(t)
	p := e.upload(content(100, "x"), "107.1")
	for _, authz := range []string{"", "Bearer " + topology.PeerToken(bytes.Repeat([]byte{1}, 32))} {
		r := e.request(http.MethodGet, "/v1/peer/blobs/"+p.Digest, authz, nil)
		if r.StatusCode != 404 || r.errCode() != "not_found" {
			t.Errorf("want 404 not_found, got %d %s", r.StatusCode, r.body)
		}
	}
}
