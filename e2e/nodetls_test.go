package e2e_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// refusedWithin bounds how long a removal at the hub takes to be refused
// by a peer listener: at the hub, the next pin refresh, woken by the
// commit, at most a second later; at a node downstream, the removal's
// record through the hub's feed (a long poll the record wakes) and then
// that node's own pin refresh, woken by applying it.
const refusedWithin = 10 * time.Second

// asNode is an HTTP client presenting the node key in keyFile to a peer
// listener that must hold serverKeyID.
func asNode(t *testing.T, keyFile, serverKeyID string) *http.Client {
	t.Helper()
	key, _, err := federation.LoadOrCreateNodeKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := federation.NodeCertificate(key, "test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: federation.PeerClientTLS(cert, nil, serverKeyID), DisableKeepAlives: true}}
}

// peerGet asks a peer listener for path with a bearer token and returns
// the status, or an error when the connection was refused.
func peerGet(c *http.Client, base, path, token string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func keyIDOf(t *testing.T, pub string) string {
	t.Helper()
	k, err := federation.ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return federation.KeyID(k)
}

// joinToken makes a join token for name at h, valid for validFor.
func joinToken(t *testing.T, h *meshtest.Node, name, validFor string) (id, token string) {
	t.Helper()
	var out struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	h.AdminCall(t, http.MethodPost, "/v1/admin/nodes/join-tokens", map[string]any{"name": name, "valid_for": validFor}, &out)
	if !strings.HasPrefix(out.Token, federation.JoinTokenPrefix) {
		t.Fatalf("join token: want a %s… token, got %+v", federation.JoinTokenPrefix, out)
	}
	return out.ID, out.Token
}

// runJoin runs `patchmesh join` for n (stopped) with token and returns
// its combined output and error.
func runJoin(t *testing.T, n *meshtest.Node, token string) (string, error) {
	t.Helper()
	tf := filepath.Join(n.Dir, "join-token")
	if err := os.WriteFile(tf, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, meshtest.Binary(t), "join", "--config", filepath.Join(n.Dir, "config.yaml"), "--token-file", tf)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + n.Dir}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// rosterNames is who the hub's signed roster of tier names.
func rosterNames(t *testing.T, h *meshtest.Node, tier string) []string {
	t.Helper()
	var out struct {
		Nodes []struct {
			Name string `json:"name"`
		} `json:"nodes"`
	}
	if err := h.Call(context.Background(), http.MethodGet, "/v1/client/roster?tier="+tier, "", nil, &out); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range out.Nodes {
		names = append(names, n.Name)
	}
	return names
}

// A hub and an edge with peer listeners. Before it joins, the edge —
// which trusts the hub's key, and holds a valid sync token — cannot sync
// or fetch a blob, and machines are not sent to it. It joins with a
// one-time token (made at the hub, proved without sending its secret),
// syncs, and the hub records who joined. The token does not work twice.
// Removed at the hub, the edge is refused within seconds: its live
// connection is cut and new handshakes fail. So at a second node, a relay
// that pulls from the hub: it refuses the edge before the join, accepts it
// once the admission reaches it through the feed, and refuses its
// handshake within the same bound after the removal (issue 14: a removed
// node is refused at once everywhere). A process presenting the edge's
// certificate without its key gets nowhere.
func TestNodeTLSJoinSyncRemove(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := meshtest.New(t)
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, Peer: true})
	hubKey := h.NodeKey(t)
	hubKeyID := keyIDOf(t, hubKey)
	// Added before the edge, so that meshtest does not pin the edge's key
	// in its config: the feed's admissions alone decide what it accepts.
	relay := m.Start(meshtest.Spec{Name: "relay", Role: node.RoleRelay, Peer: true,
		Links: []meshtest.Link{{Tier: "edge", Upstreams: []meshtest.Upstream{{URL: h.PeerURL, Token: h.SyncToken(t, "edge", "relay-edge")}}}},
		Configure: func(c *node.Config) {
			if !slices.Contains(c.Sync.PeerKeys, hubKey) {
				c.Sync.PeerKeys = append(c.Sync.PeerKeys, hubKey)
			}
		}})
	if !m.MTLS {
		// Plain run: meshtest admitted nobody.
		h.Admit(t, relay)
	}
	relayKeyID := keyIDOf(t, relay.NodeKey(t))
	tok := h.SyncToken(t, "edge", "e1-edge")
	// Unadmitted: under meshtest's mutual TLS mode too, the join is what
	// admits it.
	e := m.Add(meshtest.Spec{Name: "e1", Role: node.RoleEdge, Peer: true, Unadmitted: true,
		Links: []meshtest.Link{{Tier: "edge", Upstreams: []meshtest.Upstream{{URL: h.PeerURL, Token: tok}}}},
		// It trusts the hub from the start, so that it is the hub that
		// refuses it, not it the hub.
		Configure: func(c *node.Config) { c.Sync.PeerKeys = []string{hubKey} }})
	e.Start(t)
	content := randomBytes(t, 256<<10)
	p := h.Upload(t, content, meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.1"})

	// Not joined: the hub refuses the edge's feed and blob requests.
	edgeKeyFile := filepath.Join(e.DataDir, "node.key")
	asEdge := asNode(t, edgeKeyFile, hubKeyID)
	asEdgeAtRelay := asNode(t, edgeKeyFile, relayKeyID)
	meshtest.WaitFor(t, converge, "the hub to refuse the edge's sync as not admitted", func() error {
		for _, l := range h.LogEvents("authn_peer_fail") {
			if l["reason"] == "not_admitted" {
				return nil
			}
		}
		return errors.New("no authn_peer_fail not_admitted in the hub's log")
	})
	for _, path := range []string{"/v1/sync/feed?tier=edge&wait=0s", "/v1/blobs/" + p.Digest} {
		if st, err := peerGet(asEdge, h.PeerURL, path, tok); err != nil || st != http.StatusForbidden {
			t.Fatalf("not joined, GET %s: want 403, got %d %v", path, st, err)
		}
	}
	// Nor does the relay take it: its handshake passes, its request not.
	if st, err := peerGet(asEdgeAtRelay, relay.PeerURL, "/debug/info", ""); err != nil || st != http.StatusForbidden {
		t.Fatalf("not joined, GET /debug/info at the relay: want 403, got %d %v", st, err)
	}
	if ps, err := e.TryPatches(t, nil); err != nil || len(ps) != 0 {
		t.Fatalf("not joined: want no patch at the edge, got %d (%v)", len(ps), err)
	}
	for _, n := range rosterNames(t, h, "edge") {
		if n == "e1" {
			t.Fatal("not joined: the hub's roster lists e1 to machines")
		}
	}
	// Nor does the sync token work on the hub's main listener.
	// Asked directly: under meshtest's mutual TLS mode FetchBlob would take
	// a sync token to the peer listener.
	if st, err := peerGet(&http.Client{Timeout: 10 * time.Second}, h.URL, "/v1/blobs/"+p.Digest, tok); err != nil || st != http.StatusForbidden {
		t.Fatalf("the sync token on the hub's main listener: want 403, got %d %v", st, err)
	}

	// Join, the edge stopped.
	e.Stop(t)
	tokenID, token := joinToken(t, h, "e1", "1h")
	if out, err := runJoin(t, e, token); err != nil {
		t.Fatalf("patchmesh join: %v\n%s", err, out)
	}
	if strings.Contains(h.Log(), strings.TrimPrefix(token, federation.JoinTokenPrefix)[:40]) {
		t.Error("the join token is in the hub's log")
	}
	e.Start(t)
	meshtest.WaitFor(t, converge, "the patch at the joined edge", func() error {
		return wantListed(t, e, p.Digest, []string{"edge"})
	})
	if got, _ := e.FetchBlob(ctx, p.Digest, ""); got.Status == http.StatusOK {
		t.Fatal("the edge served a blob without credentials")
	}
	if !containsName(rosterNames(t, h, "edge"), "e1") {
		t.Fatal("joined: the hub's roster does not list e1")
	}
	// The admission reaches the relay through the hub's feed.
	meshtest.WaitFor(t, converge, "the relay to accept the joined edge", func() error {
		st, err := peerGet(asEdgeAtRelay, relay.PeerURL, "/debug/info", "")
		if err != nil {
			return err
		}
		if st != http.StatusOK {
			return fmt.Errorf("GET /debug/info at the relay: %d", st)
		}
		return nil
	})
	var tokens struct {
		JoinTokens []struct {
			ID        string    `json:"id"`
			UsedKeyID string    `json:"used_key_id"`
			Used      time.Time `json:"used"`
		} `json:"join_tokens"`
	}
	h.AdminCall(t, http.MethodGet, "/v1/admin/nodes/join-tokens", nil, &tokens)
	edgeKeyID := keyIDOf(t, e.NodeKey(t))
	if len(tokens.JoinTokens) != 1 || tokens.JoinTokens[0].UsedKeyID != edgeKeyID || tokens.JoinTokens[0].Used.IsZero() {
		t.Fatalf("join tokens: want %s used by key %s, got %+v", tokenID, edgeKeyID, tokens.JoinTokens)
	}

	// The token works once: another node with it is refused.
	other := m.Add(meshtest.Spec{Name: "e2", Role: node.RoleEdge, Peer: true, Unadmitted: true,
		Links: []meshtest.Link{{Tier: "edge", Upstreams: []meshtest.Upstream{{URL: h.PeerURL, Token: tok}}}}})
	if out, err := runJoin(t, other, token); err == nil || !strings.Contains(out, "join refused") {
		t.Fatalf("a used token: want join refused, got %v\n%s", err, out)
	}

	// Removed: refused within seconds, its live long poll cut.
	removed := time.Now()
	h.AdminCall(t, http.MethodDelete, "/v1/admin/nodes/e1", nil, nil)
	meshtest.WaitFor(t, refusedWithin, "the hub to refuse the removed edge", func() error {
		_, err := peerGet(asEdge, h.PeerURL, "/v1/sync/feed?tier=edge&wait=0s", tok)
		if err == nil {
			return errors.New("the handshake still succeeds")
		}
		return nil
	})
	// And the relay, within the same bound from the removal: its handshake
	// refused, as a security event naming the edge's key.
	meshtest.WaitFor(t, max(0, time.Until(removed.Add(refusedWithin))), "the relay to refuse the removed edge", func() error {
		if _, err := peerGet(asEdgeAtRelay, relay.PeerURL, "/debug/info", ""); err == nil {
			return errors.New("the handshake still succeeds")
		}
		for _, l := range relay.LogEvents(auth.EventPeerFail) {
			if l["reason"] == "handshake" && l["key_id"] == edgeKeyID {
				return nil
			}
		}
		return errors.New("no authn_peer_fail handshake for the edge's key in the relay's log")
	})
	meshtest.WaitFor(t, refusedWithin, "the edge's live connection cut", func() error {
		if len(h.LogEvents("peer_conn_closed")) == 0 {
			return errors.New("no peer_conn_closed in the hub's log")
		}
		return nil
	})
	meshtest.WaitFor(t, refusedWithin, "the edge's link failing", func() error {
		if l := e.Link(t, "edge"); l.LastErrorAt.Before(removed) {
			return fmt.Errorf("link state %+v", l)
		}
		return nil
	})

	// Another's certificate, without its key: the handshake fails.
	victim, _, err := federation.LoadOrCreateNodeKey(edgeKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	victimCert, err := federation.NodeCertificate(victim, "e1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, thiefKey, _ := ed25519.GenerateKey(rand.Reader)
	stolen := tls.Certificate{Certificate: victimCert.Certificate, PrivateKey: thiefKey}
	thief := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: federation.PeerClientTLS(stolen, nil, hubKeyID)}}
	if st, err := peerGet(thief, h.PeerURL, "/debug/info", ""); err == nil {
		t.Fatalf("a certificate presented without its key: want a failed handshake, got %d", st)
	}
}

// A join token expires, and attempts from one address are rate-limited.
func TestNodeTLSJoinTokenExpiresAndIsRateLimited(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, Peer: true})
	hubKeyID := keyIDOf(t, h.NodeKey(t))
	e := m.Add(meshtest.Spec{Name: "late", Role: node.RoleEdge, Peer: true,
		Links: []meshtest.Link{{Tier: "edge", Upstreams: []meshtest.Upstream{{URL: h.PeerURL, Token: h.SyncToken(t, "edge", "late")}}}}})
	_, token := joinToken(t, h, "late", "1s")
	// Expiry is the hub's clock against the token's: wait it out.
	time.Sleep(1500 * time.Millisecond)
	if out, err := runJoin(t, e, token); err == nil || !strings.Contains(out, "join refused") {
		t.Fatalf("an expired token: want join refused, got %v\n%s", err, out)
	}
	if !hasEvent(h, "node_join_fail", "token_expired") {
		t.Error("no node_join_fail token_expired in the hub's log")
	}

	// Wrong tokens from one address: refused, then limited.
	keyFile := filepath.Join(t.TempDir(), "node.key")
	c := asNode(t, keyFile, hubKeyID)
	var statuses []int
	for i := range api429After + 2 {
		body, _ := json.Marshal(federation.JoinStart{Token: fmt.Sprintf("%016x", i), Nonce: "abcdefghijklmnopqrstuvwxyz012345"})
		resp, err := c.Post(h.PeerURL+"/v1/join/start", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	if statuses[0] != http.StatusUnauthorized || statuses[len(statuses)-1] != http.StatusTooManyRequests {
		t.Fatalf("join attempts: want 401 first and 429 at the end, got %v", statuses)
	}
	if !hasEvent(h, "node_join_fail", "rate_limited") {
		t.Error("no node_join_fail rate_limited in the hub's log")
	}
}

// api429After is api.JoinAttemptsPerMinute: attempts beyond it are 429.
const api429After = 10

func hasEvent(n *meshtest.Node, event, reason string) bool {
	for _, l := range n.LogEvents(event) {
		if l["reason"] == reason {
			return true
		}
	}
	return false
}

func containsName(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// A relay moved to another URL at the hub (PATCH /v1/admin/nodes/relay,
// `nodes update`) stays trusted by its edge over mutual TLS throughout:
// the edge replaces the admission with the hub's fresh one, serves it in
// its roster, and keeps receiving patches through the relay, with no
// removal and no peer refusal anywhere. Removing and re-admitting the
// relay instead could leave the edge refusing the only upstream that
// brings it the re-admission.
func TestNodeMovedToNewURLsKeepsItsDownstream(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	if !m.MTLS {
		t.Fatal("this test is about mutual TLS between nodes; meshtest runs plain (PATCHMESH_MESH_MTLS=0)")
	}
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub})
	r := m.Start(pullSpec(t, "relay", node.RoleRelay, h.URL, h, "edge"))
	e := m.Start(pullSpec(t, "edge", node.RoleEdge, r.URL, r, "edge"))
	all := []*meshtest.Node{h, r, e}
	h.Admit(t, all...)
	h.Upload(t, randomBytes(t, 4<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "201.1"})
	waitListed(t, all, "201.1")

	// Refusals and removals from here on would be the move's doing.
	watched := []string{"node_removed", auth.EventPeerFail, federation.EventUpstreamAuth, auth.EventPeerClosed}
	before := map[string]int{}
	for _, n := range all {
		for _, ev := range watched {
			before[n.Name+" "+ev] = len(n.LogEvents(ev))
		}
	}
	moved := []string{r.URL, "https://relay.moved.example:8443"}
	h.AdminCall(t, http.MethodPatch, "/v1/admin/nodes/relay", map[string]any{"urls": moved}, nil)
	meshtest.WaitFor(t, converge, "the edge's roster naming the relay at its new URLs", func() error {
		var out struct {
			Nodes []struct {
				Name string   `json:"name"`
				URLs []string `json:"urls"`
			} `json:"nodes"`
		}
		if err := e.Call(context.Background(), http.MethodGet, "/v1/client/roster?tier=edge", "", nil, &out); err != nil {
			return err
		}
		for _, n := range out.Nodes {
			if n.Name == "relay" && strings.Join(n.URLs, " ") == strings.Join(moved, " ") {
				return nil
			}
		}
		return fmt.Errorf("roster %+v", out.Nodes)
	})
	h.Upload(t, randomBytes(t, 4<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "201.2"})
	waitListed(t, all, "201.2")

	for _, n := range all {
		for _, ev := range watched {
			if got := n.LogEvents(ev); len(got) != before[n.Name+" "+ev] {
				t.Errorf("%s logged %s after the move: %v", n.Name, ev, got[before[n.Name+" "+ev]:])
			}
		}
	}
	if got := h.LogEvents("node_updated"); len(got) != 1 || got[0]["node"] != "relay" {
		t.Errorf("hub: node_updated events %v, want one for the relay", got)
	}
}
