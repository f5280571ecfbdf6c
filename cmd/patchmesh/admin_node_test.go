package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
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

const (
	nodeAdmin    = "admin"
	nodePassword = nodetest.Password
	nodeKernel   = "5.15.0-107.117-generic"
	nodeArch     = "x86_64"
)

// testNode is a real node's API — the api package over a real SQLite
// store, filesystem blobs and authenticator — served by httptest, so the
// admin tool and client are tested against the server they will meet.
type testNode struct {
	t       *testing.T
	srv     *httptest.Server
	blobDir string
	cfgDir  string // the admin tool's PATCHMESH_CONFIG_DIR
	logs    *nodetest.LogBuffer
	// hubKey is the public key the node signs with, as machines pin it.
	hubKey   string
	store    *sqlstore.Store // the node's store, to make records no file could (shared digest prefixes)
	mu       sync.Mutex
	requests []*http.Request // a copy of each request's line and headers
}

func newTestNode(t *testing.T, tune ...func(*api.Config)) *testNode {
	t.Helper()
	logs := &nodetest.LogBuffer{}
	log := slog.New(api.NewLogHandler(slog.NewJSONHandler(logs, nil)))
	// The node signs as a hub does, so that machines can verify its offers.
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	wired := nodetest.Wire(t, log, nodetest.Options{Admin: nodeAdmin, Sealer: federation.Sealer{Key: priv}})
	n := &testNode{t: t, blobDir: wired.BlobDir, cfgDir: filepath.Join(t.TempDir(), "admin-config"), logs: logs,
		hubKey: federation.FormatPublicKey(pub)}
	cfg := wired.Config
	cfg.HubKey = pub
	// Every patch answer carries the tier's hub heartbeat, as a hub's do:
	// a machine counts an answer without one as stale.
	cfg.Heartbeats = beatOnAsk{t: t, b: federation.NewBeacon(priv, wired.Store, time.Hour, nil, nil)}
	for _, f := range tune {
		f(&cfg)
	}
	// Machines register only at nodes the hub admitted, as a hub admits
	// itself at its first start: a node the test gives no identity gets
	// one, admitted below.
	var selfPub ed25519.PublicKey
	if cfg.NodeKey == nil {
		if selfPub, cfg.NodeKey, err = ed25519.GenerateKey(rand.Reader); err != nil {
			t.Fatal(err)
		}
		if cfg.Info.Node == "" {
			cfg.Info.Node = "test-node"
		}
	}
	h, err := api.New(cfg)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	n.store = wired.Store
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		n.requests = append(n.requests, &http.Request{Method: r.Method, URL: r.URL, Header: r.Header.Clone(), ContentLength: r.ContentLength, TransferEncoding: r.TransferEncoding})
		n.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(n.srv.Close)
	if selfPub != nil {
		tiers, err := n.store.Tiers(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		self := catalog.Node{Name: cfg.Info.Node, Key: federation.FormatPublicKey(selfPub), KeyID: federation.KeyID(selfPub), URLs: []string{n.srv.URL}}
		for _, tier := range tiers {
			self.Tiers = append(self.Tiers, tier.Name)
		}
		if _, err := n.store.AdmitNode(context.Background(), self); err != nil {
			t.Fatalf("admit the test node: %v", err)
		}
	}
	t.Cleanup(func() {
		if strings.Contains(n.logs.String(), nodePassword) {
			t.Error("the node's log contains the admin password")
		}
	})
	return n
}

// requestCount is how many requests the node has seen.
func (n *testNode) requestCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.requests)
}

// lastRequest returns the last request seen with this method and path.
func (n *testNode) lastRequest(method, path string) *http.Request {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.requests) - 1; i >= 0; i-- {
		if r := n.requests[i]; r.Method == method && r.URL.Path == path {
			return r
		}
	}
	return nil
}

// result is one finished command.
type result struct {
	code           int
	stdout, stderr string
}

// admin runs `patchmesh admin` against the node with stdin as standard input.
func (n *testNode) admin(stdin string, args ...string) result {
	n.t.Helper()
	return n.adminAt(time.Now(), stdin, args...)
}

// adminAt runs `patchmesh admin` with its clock at now.
func (n *testNode) adminAt(now time.Time, stdin string, args ...string) result {
	n.t.Helper()
	var stdout, stderr bytes.Buffer
	env := map[string]string{"PATCHMESH_URL": n.srv.URL, "PATCHMESH_CONFIG_DIR": n.cfgDir}
	a := &admin{stdin: strings.NewReader(stdin), stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return env[k] }, now: func() time.Time { return now }}
	code := a.run(context.Background(), args)
	return result{code, stdout.String(), stderr.String()}
}

// login logs the admin tool in.
func (n *testNode) login() {
	n.t.Helper()
	if r := n.admin(nodePassword+"\n", "login", "--password-stdin"); r.code != exitOK {
		n.t.Fatalf("login: exit %d, stderr %s", r.code, r.stderr)
	}
}

// mustAdmin runs an admin command that must succeed.
func (n *testNode) mustAdmin(args ...string) result {
	n.t.Helper()
	r := n.admin("", args...)
	if r.code != exitOK {
		n.t.Fatalf("patchmesh admin %s: exit %d, want 0; stderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// writePatchFile writes content to a temporary file and returns its path
// and digest.
func writePatchFile(t *testing.T, content []byte) (path, digest string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "patch.ko")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	return path, "sha256:" + hex.EncodeToString(sum[:])
}

// blobPath is where the node's filesystem driver keeps a blob.
func (n *testNode) blobPath(digest string) string {
	h := strings.TrimPrefix(digest, "sha256:")
	return filepath.Join(n.blobDir, "sha256", h[:2], h)
}

// beatOnAsk signs the tier's heartbeat when it is asked for, with the
// tier's real hub head: a hub that is always fresh, with no ticker for a
// test to wait on.
type beatOnAsk struct {
	t *testing.T
	b *federation.Beacon
}

func (h beatOnAsk) Latest(tier string) (federation.Envelope, bool) {
	if err := h.b.Beat(context.Background()); err != nil {
		h.t.Errorf("sign the hub heartbeats: %v", err)
	}
	return h.b.Latest(tier)
}
