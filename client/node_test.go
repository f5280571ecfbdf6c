package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/nodetest"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

// testHubKey signs every test node's records; testHubPub is what machines
// pin.
var testHubKey, testHubPub = func() (ed25519.PrivateKey, string) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return priv, federation.FormatPublicKey(pub)
}()

const (
	nodeAdmin    = "admin"
	nodePassword = nodetest.Password
)

// testNode is a real node's API — the api package over a real SQLite
// store, filesystem blobs and authenticator — served by httptest. It
// records each request (and each JSON body) so tests can check what the
// client sent.
type testNode struct {
	t        *testing.T
	srv      *httptest.Server
	store    *sqlstore.Store
	blobDir  string
	macaroon string

	mu       sync.Mutex
	requests []recorded
	// intercept, when set, sees each request first; it answers the
	// request itself by returning true. Tests use it to make a real node
	// fail in ways a healthy node does not.
	intercept func(w http.ResponseWriter, r *http.Request) bool
	// roster, when set, is served as GET /v1/client/roster (admitSelf).
	roster *federation.RosterResponse
}

// recorded is one request as the node received it.
type recorded struct {
	method, path string
	query        url.Values
	header       http.Header
	body         []byte // JSON bodies only
}

func newTestNode(t *testing.T, tlsServer bool) *testNode {
	t.Helper()
	return newTestNodeWith(t, tlsServer, func(*api.Config) {})
}

// newTestNodeWith is newTestNode with the api configured by tune.
func newTestNodeWith(t *testing.T, tlsServer bool, tune func(*api.Config)) *testNode {
	t.Helper()
	return newTestNodeSigned(t, tlsServer, tune, true)
}

// newTestNodeSigned is newTestNodeWith, and with signed false a node that
// signs nothing, as one without a hub key.
func newTestNodeSigned(t *testing.T, tlsServer bool, tune func(*api.Config), signed bool) *testNode {
	t.Helper()
	o := nodetest.Options{Admin: nodeAdmin}
	if signed {
		// Every test node signs with the one test hub key, as a hub does
		// and as the records a relay or edge serves are: machines verify
		// offers.
		o.Sealer = federation.Sealer{Key: testHubKey}
	}
	wired := nodetest.Wire(t, slog.New(slog.DiscardHandler), o)
	n := &testNode{t: t, store: wired.Store, blobDir: wired.BlobDir}
	cfg := wired.Config
	if tune != nil {
		tune(&cfg)
	}
	// Machines register only at nodes the hub admitted: a node the test
	// gives no identity of its own gets one, and its admission below.
	var selfPub ed25519.PublicKey
	if cfg.NodeKey == nil {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		selfPub, cfg.NodeKey = pub, priv
		if cfg.Info.Node == "" {
			cfg.Info.Node = "test-node"
		}
	}
	if cfg.Heartbeats == nil && signed {
		// As a hub's Beacon does: a heartbeat signed now, so that the
		// node is fresh to machines.
		cfg.Heartbeats = liveBeats{t}
	}
	h, err := api.New(cfg)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	rec := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rr := recorded{method: r.Method, path: r.URL.Path, query: r.URL.Query(), header: r.Header.Clone()}
		if r.Header.Get("Content-Type") == "application/json" {
			rr.body, _ = io.ReadAll(io.LimitReader(r.Body, 1<<20))
			r.Body = io.NopCloser(bytes.NewReader(rr.body))
		}
		n.mu.Lock()
		n.requests = append(n.requests, rr)
		intercept, roster := n.intercept, n.roster
		n.mu.Unlock()
		if roster != nil && r.URL.Path == "/v1/client/roster" {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(roster)
			return
		}
		if intercept != nil && intercept(w, r) {
			return
		}
		h.ServeHTTP(w, r)
	})
	if tlsServer {
		n.srv = httptest.NewTLSServer(rec)
	} else {
		n.srv = httptest.NewServer(rec)
	}
	t.Cleanup(n.srv.Close)
	n.login()
	if selfPub != nil {
		n.admitSelf(cfg.Info.Node, selfPub, signed)
	}
	return n
}

// admitSelf gives the node the hub's admission of itself at its URL, on
// every tier: sealed by its store with the test hub key when it signs,
// else (a node without a hub key, which holds admissions only by sync)
// as a roster of hub-signed admissions the node serves in place of its
// own, which is what a synced node would hold.
func (n *testNode) admitSelf(name string, pub ed25519.PublicKey, signed bool) {
	n.t.Helper()
	ctx := context.Background()
	tiers, err := n.store.Tiers(ctx)
	if err != nil {
		n.t.Fatal(err)
	}
	node := catalog.Node{Name: name, Key: federation.FormatPublicKey(pub), KeyID: federation.KeyID(pub), URLs: []string{n.srv.URL}}
	for _, tier := range tiers {
		node.Tiers = append(node.Tiers, tier.Name)
	}
	if signed {
		if _, err := n.store.AdmitNode(ctx, node); err != nil {
			n.t.Fatalf("admit %s: %v", name, err)
		}
		return
	}
	roster := &federation.RosterResponse{}
	for i, tier := range node.Tiers {
		env, err := federation.Sign(testHubKey, federation.Record{Tier: tier, TierSeq: int64(i + 1), Type: catalog.EventNodeAdmitted,
			Time: time.Now().UTC(), Node: &federation.NodeRecord{Name: name, Key: node.Key, URLs: node.URLs, Admitted: time.Now().UTC()}})
		if err != nil {
			n.t.Fatalf("sign the admission of %s: %v", name, err)
		}
		roster.Nodes = append(roster.Nodes, federation.RosterNode{Name: name, URL: n.srv.URL, URLs: node.URLs,
			Key: node.Key, KeyID: node.KeyID, Admission: &env})
	}
	n.mu.Lock()
	n.roster = roster
	n.mu.Unlock()
}

// adminDo sends an admin request with the test's own HTTP client (the
// client package is not used to set the node up).
func (n *testNode) adminDo(method, path string, query url.Values, body io.Reader, contentType string) []byte {
	n.t.Helper()
	u := n.srv.URL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		n.t.Fatal(err)
	}
	if n.macaroon != "" {
		req.Header.Set("Authorization", "Macaroon "+n.macaroon)
	} else {
		req.SetBasicAuth(nodeAdmin, nodePassword)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := n.srv.Client().Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		n.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return b
}

func (n *testNode) login() {
	var out struct{ Macaroon string }
	json.Unmarshal(n.adminDo(http.MethodPost, "/v1/admin/login", nil, nil, ""), &out)
	n.macaroon = out.Macaroon
}

// authToken creates an auth token on tier.
func (n *testNode) authToken(tier string) string {
	n.t.Helper()
	b, _ := json.Marshal(map[string]string{"tier": tier, "name": "fleet-" + tier})
	var out struct{ Token string }
	json.Unmarshal(n.adminDo(http.MethodPost, "/v1/admin/auth-tokens", nil, bytes.NewReader(b), "application/json"), &out)
	return out.Token
}

// upload adds content as a patch for testKernel/testArch and returns its
// record.
func (n *testNode) upload(content []byte, version string) catalog.Patch {
	n.t.Helper()
	q := url.Values{"digest": {digestOf(content)}, "kernel": {testKernel}, "arch": {testArch}, "version": {version}}
	var p catalog.Patch
	json.Unmarshal(n.adminDo(http.MethodPost, "/v1/admin/patches", q, bytes.NewReader(content), "application/octet-stream"), &p)
	return p
}

// blobPath is where the node's filesystem driver keeps a blob.
func (n *testNode) blobPath(digest string) string {
	h := strings.TrimPrefix(digest, "sha256:")
	return filepath.Join(n.blobDir, "sha256", h[:2], h)
}

func (n *testNode) count(method, path string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, r := range n.requests {
		if r.method == method && (path == "" || r.path == path || strings.HasPrefix(r.path, path)) {
			c++
		}
	}
	return c
}

// setIntercept makes f see each request first (nil: none).
func (n *testNode) setIntercept(f func(w http.ResponseWriter, r *http.Request) bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.intercept = f
}

func (n *testNode) total() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.requests)
}

// lastBody decodes the JSON body of the last request to path.
func (n *testNode) lastBody(path string) map[string]any {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.requests) - 1; i >= 0; i-- {
		if n.requests[i].path == path {
			var m map[string]any
			if err := json.Unmarshal(n.requests[i].body, &m); err != nil {
				n.t.Fatalf("body of %s is not JSON: %v", path, err)
			}
			return m
		}
	}
	n.t.Fatalf("no request to %s", path)
	return nil
}

// lastQuery is the query of the last request to path.
func (n *testNode) lastQuery(path string) url.Values {
	n.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.requests) - 1; i >= 0; i-- {
		if n.requests[i].path == path {
			return n.requests[i].query
		}
	}
	n.t.Fatalf("no request to %s", path)
	return nil
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// find returns the requests for method and path, in order.
func (n *testNode) find(method, path string) []recorded {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []recorded
	for _, r := range n.requests {
		if r.method == method && r.path == path {
			out = append(out, r)
		}
	}
	return out
}

// liveBeats hands out a hub heartbeat signed with the test hub key at the
// moment it is asked for, announcing hub seq 0: a node that is always
// fresh.
type liveBeats struct{ t *testing.T }

func (b liveBeats) Latest(tier string) (federation.Envelope, bool) {
	env, err := federation.SignHeartbeat(testHubKey, tier, 0, time.Now())
	if err != nil {
		b.t.Errorf("sign a heartbeat of %s: %v", tier, err)
		return federation.Envelope{}, false
	}
	return env, true
}
