package main

// The real client against a real node behind a hostile front: a node that
// can answer machines (it holds the gossip key and ranks nearest, say) but
// does not hold the hub's signing key.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// hostileFront is a reverse proxy in front of a real node. By default it
// passes everything on and keeps the last patch offer; answer, when set,
// replaces the node's answer to GET /v1/client/patch, and blobs are served
// for made-up digests.
type hostileFront struct {
	srv *httptest.Server

	mu     sync.Mutex
	answer []byte            // the forged offer, nil to pass on
	blobs  map[string][]byte // made-up blobs by digest
	last   []byte            // the last genuine offer
	seen   []string          // every request line
}

func newHostileFront(t *testing.T, node string) *hostileFront {
	t.Helper()
	u, err := url.Parse(node)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	f := &hostileFront{blobs: map[string][]byte{}}
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != "/v1/client/patch" || resp.StatusCode != http.StatusOK {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		f.mu.Lock()
		f.last = b
		f.mu.Unlock()
		return nil
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen = append(f.seen, r.Method+" "+r.URL.Path)
		answer, blob := f.answer, f.blobs[strings.TrimPrefix(r.URL.Path, "/v1/blobs/")]
		f.mu.Unlock()
		switch {
		case r.URL.Path == "/v1/client/patch" && answer != nil:
			w.Header().Set("Content-Type", "application/json")
			w.Write(answer)
		case blob != nil:
			w.Write(blob)
		default:
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *hostileFront) set(answer any) {
	b, _ := json.Marshal(answer)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = b
}

// pass makes the front pass patch queries on to the node again.
func (f *hostileFront) pass() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = nil
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (f *hostileFront) lastOffer() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// blobRequests is how many times the blob digest was asked for.
func (f *hostileFront) blobRequests(digest string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, s := range f.seen {
		if s == "GET /v1/blobs/"+digest {
			n++
		}
	}
	return n
}

func TestEndToEndClientRefusesForgedAndRollbackOffers(t *testing.T) {
	work := t.TempDir()
	env := cleanEnv("PATCHMESH_DATA_DIR="+filepath.Join(work, "data"), "PATCHMESH_AUTH_BCRYPT_COST=4")
	srv := startServe(t, env, "--listen", "127.0.0.1:0")
	node := srv.url(t)
	m := e2ePasswordRE.FindStringSubmatch(srv.stderr.String())
	if m == nil {
		t.Fatalf("want a bootstrap password, got:\n%s", srv.stderr.String())
	}
	adminEnv := append(env, "PATCHMESH_CONFIG_DIR="+filepath.Join(work, "admin-config"))
	pm(t, adminEnv, m[1]+"\n", 0, "admin", "--server", node, "login", "--password-stdin")
	admin := func(out any, args ...string) {
		t.Helper()
		pmJSON(t, adminEnv, out, append([]string{"admin", "--server", node}, args...)...)
	}
	const kernel, arch = "5.15.0-107.117-generic", "x86_64"
	upload := func(version string, content []byte) e2ePatch {
		t.Helper()
		f := filepath.Join(work, "lp-"+version+".ko")
		os.WriteFile(f, content, 0o600)
		var p e2ePatch
		admin(&p, "patches", "upload", f, "--kernel", kernel, "--arch", arch, "--version", version)
		return p
	}
	var hubKey struct{ Key string }
	admin(&hubKey, "hub-key")
	var tok struct{ Token string }
	admin(&tok, "auth-tokens", "add", "edge", "fleet")

	front := newHostileFront(t, node)
	// The machine reaches the hub through the front, at another URL: the
	// hub admitted itself at its own at its first start, and is admitted
	// again with both, so that the machine sends its token there at all.
	var admitted struct {
		Nodes []struct{ Name, Key string }
	}
	admin(&admitted, "nodes", "list")
	if len(admitted.Nodes) != 1 {
		t.Fatalf("nodes list = %+v, want the hub's own admission", admitted.Nodes)
	}
	self := admitted.Nodes[0]
	pm(t, adminEnv, "", 0, "admin", "--server", node, "nodes", "remove", self.Name)
	pm(t, adminEnv, "", 0, "admin", "--server", node, "nodes", "admit", self.Name, "--key", self.Key, "--url", front.srv.URL, "--url", node)
	state := filepath.Join(work, "machine")
	marker := filepath.Join(work, "hook-ran")
	clientEnv := cleanEnv("PATCHMESH_CLIENT_ALLOW_HTTP=1")
	pm(t, clientEnv, "", 0, "client", "--state-dir", state, "--server", front.srv.URL, "register", tok.Token,
		"--hub-key", hubKey.Key, "--machine-id", "e2e-machine-offer-00000001", "--kernel", kernel, "--arch", arch)
	// refresh runs the real client; the hook records the digest it applied.
	refresh := func(wantCode int) e2eRefresh {
		t.Helper()
		os.Remove(marker)
		out := pm(t, clientEnv, "", wantCode, "client", "--state-dir", state, "refresh", "--kernel", kernel, "--arch", arch,
			"--apply-hook", `printf %s "$PATCHMESH_PATCH_DIGEST" > `+marker, "--output", "json")
		var r e2eRefresh
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("refresh output %q: %v", out, err)
		}
		return r
	}
	hooked := func() string {
		b, _ := os.ReadFile(marker)
		return string(b)
	}

	v1 := upload("107.1", []byte(strings.Repeat("genuine patch one ", 1000)))
	if r := refresh(0); r.State != "applied" || hooked() != v1.Digest {
		t.Fatalf("refresh through an honest front: %+v, hook %q; want %s applied", r, hooked(), v1.Digest)
	}
	genuineV1 := front.lastOffer()

	// A made-up patch: the node's own bytes, offered with the fields a
	// real node sends, unsigned or signed by a key of the node's own.
	evil := []byte("#!/bin/sh\necho owned\n")
	evilPatch := catalog.Patch{Digest: "sha256:" + sha256Hex(evil), Kernel: kernel, Arch: arch, Version: "999.1", Size: int64(len(evil)), Tiers: []string{"edge"}}
	front.mu.Lock()
	front.blobs[evilPatch.Digest] = evil
	front.mu.Unlock()
	_, attackerKey, _ := ed25519.GenerateKey(rand.Reader)
	forged, err := federation.Sign(attackerKey, federation.Record{Tier: "edge", TierSeq: 99, Type: catalog.EventPatchAdded, Patch: evilPatch, Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		offer federation.Offer
	}{
		{"unsigned", federation.Offer{Patch: evilPatch}},
		{"signed by the node's own key", federation.Offer{Patch: evilPatch, Signed: &forged}},
	} {
		front.set(tc.offer)
		r := refresh(exitServer)
		if hooked() != "" || front.blobRequests(evilPatch.Digest) != 0 {
			t.Errorf("%s: the made-up patch reached the hook (%q) or was downloaded (%d requests)", tc.name, hooked(), front.blobRequests(evilPatch.Digest))
		}
		if r.State != "check-failed" {
			t.Errorf("%s: refresh reported %q, want check-failed", tc.name, r.State)
		}
	}

	// A newer patch is applied; then the front hands out the hub's genuine,
	// older offer again: refused as a rollback.
	front.pass()
	v2 := upload("107.2", []byte(strings.Repeat("genuine patch two ", 1000)))
	if r := refresh(0); r.State != "applied" || hooked() != v2.Digest {
		t.Fatalf("refresh to 107.2: %+v, hook %q; want %s applied", r, hooked(), v2.Digest)
	}
	front.mu.Lock()
	front.answer = genuineV1 // the hub's own bytes, as the node once sent them
	front.mu.Unlock()
	if r := refresh(exitServer); hooked() != "" || r.State != "check-failed" {
		t.Errorf("rollback offer: hook %q, state %q; want refused, check-failed", hooked(), r.State)
	}

	// Once the hub withdraws 107.2, the honest node's offer of 107.1
	// carries the signed withdrawal and is applied.
	front.pass()
	var withdrawn e2ePatch
	admin(&withdrawn, "patches", "withdraw", v2.Digest)
	if r := refresh(0); r.State != "applied" || hooked() != v1.Digest {
		t.Errorf("refresh after the withdrawal: %+v, hook %q; want %s applied again", r, hooked(), v1.Digest)
	}
}
