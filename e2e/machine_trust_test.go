package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// countingProxy forwards to upstream after waiting delay, counting the
// requests for each path: a node a machine reaches from further away.
type countingProxy struct {
	URL   string
	patch atomic.Int64
}

func newCountingProxy(t *testing.T, upstream string, delay time.Duration) *countingProxy {
	t.Helper()
	target, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/client/patch" {
			p.patch.Add(1)
		}
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// requestsTo counts the requests for path (a prefix) n logged.
func requestsTo(n *meshtest.Node, path string) int {
	c := 0
	for _, line := range strings.Split(n.Log(), "\n") {
		if strings.Contains(line, `"msg":"request"`) && strings.Contains(line, `"path":"`+path) {
			c++
		}
	}
	return c
}

// A process that holds the gossip key and pulls the tier's feed (so it
// even knows the enrollment token) but was never admitted is never used
// by a real machine: never listed, never probed, never sent a token or a
// machine ID, and a machine pointed at it as its first contact refuses it
// before sending anything.
func TestMachineNeverTalksToARogueNode(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	m.Gossip = gossipProfile
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub})
	a := m.Start(pullSpec(t, "edge-a", node.RoleEdge, h.URL, h, "edge"))
	rs := pullSpec(t, "rogue", node.RoleEdge, h.URL, h, "edge")
	rs.Unadmitted = true
	rogue := m.Start(rs)
	h.Admit(t, h, a)
	all := []*meshtest.Node{h, a, rogue}
	// Over mutual TLS the rogue cannot even pull the feed (the hub refuses
	// its certificate); in a plain mesh it holds everything a node does.
	synced := all
	if m.MTLS {
		synced = []*meshtest.Node{h, a}
	}
	viewEvery(t, all, converge, "every member alive, the rogue included", allAlive(all))

	paths := []string{"/v1/client/register", "/v1/client/patch", "/v1/client/checkin", "/v1/client/nodes", "/v1/blobs/", "/debug/info"}
	before := map[string]int{} // the test's own readiness checks
	for _, path := range paths {
		before[path] = requestsTo(rogue, path)
	}
	enroll := h.AuthToken(t, "edge", "fleet")
	mc := newMachineCLI(t, m)
	meshtest.WaitFor(t, converge, "registration at edge-a", func() error {
		code, out, errs := mc.run(t, "--server", a.URL, "register", enroll, "--kernel", kernel, "--arch", arch)
		if code != 0 {
			return fmt.Errorf("exit %d: %s%s", code, out, errs)
		}
		return nil
	})
	p := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.1"})
	onEvery(t, synced, func(n *meshtest.Node) error { return wantListed(t, n, p.Digest, []string{"edge"}) }, "the patch")
	for range 3 {
		for _, n := range mc.nodes(t) {
			if n.URL == rogue.URL || n.Name == "rogue" {
				t.Fatalf("the machine ranks the rogue: %+v", n)
			}
		}
		if code, out, errs := mc.run(t, "refresh", "--kernel", kernel, "--arch", arch, "--apply-hook", "true"); code != 0 {
			t.Fatalf("refresh: exit %d: %s%s", code, out, errs)
		}
	}
	// A second machine is pointed at the rogue itself.
	mc2 := newMachineCLI(t, m)
	code, out, errs := mc2.run(t, "--server", rogue.URL, "register", enroll, "--kernel", kernel, "--arch", arch)
	if code == 0 || !strings.Contains(errs, "not one the hub admitted") {
		t.Errorf("register at the rogue: exit %d, %s%s; want a refusal naming it not admitted", code, out, errs)
	}
	// The machine registers and checks in at whichever admitted node its
	// probes find nearest; on one host that is the hub or edge-a by chance.
	if requestsTo(a, "/v1/client/register")+requestsTo(h, "/v1/client/register") == 0 ||
		requestsTo(a, "/v1/client/patch")+requestsTo(h, "/v1/client/patch") == 0 {
		t.Fatal("no admitted node logged a registration or patch request: the request count reads nothing")
	}
	for _, path := range paths {
		if got := requestsTo(rogue, path) - before[path]; got != 0 {
			t.Errorf("the rogue got %d requests for %s, want none", got, path)
		}
	}
	if ev := rogue.LogEvents("authn_token_success"); len(ev) != 0 {
		t.Errorf("the rogue authenticated a token: %v", ev)
	}
	if ev := rogue.LogEvents("machine_registered"); len(ev) != 0 {
		t.Errorf("the rogue registered a machine: %v", ev)
	}
}

// A machine whose nearest node froze (its upstream died, so the hub's
// heartbeat it hands over stops advancing) moves to another node once
// that heartbeat is older than --stale-after, registering there with its
// credential; when every node is frozen it reports itself stale (exit 7,
// and STALE in status) within the bound.
func TestMachineLeavesAFrozenEdgeAndReportsStale(t *testing.T) {
	t.Parallel()
	const staleAfter = 6 * time.Second
	m := meshtest.New(t)
	// Plain: keeping the hub off machines' lists takes removing its
	// admission, and over mutual TLS a downstream that applies that
	// removal before the hub's re-admission (on a tier no machine uses)
	// refuses the hub, which alone could bring it the re-admission.
	m.MTLS = false
	m.Gossip = gossipProfile
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub})
	rs := pullSpec(t, "relay", node.RoleRelay, h.URL, h, "edge")
	rs.Unadmitted = true
	r := m.Start(rs)
	serveNodesOnly(t, m, h, r)
	a := m.Start(pullSpec(t, "edge-a", node.RoleEdge, r.URL, r, "edge"))
	bs := pullSpec(t, "edge-b", node.RoleEdge, h.URL, h, "edge")
	bs.Unadmitted = true // admitted below, at the proxy's URL
	b := m.Start(bs)
	// edge-b is further away; machines use it only when edge-a fails. The
	// hub serves no machine here.
	far := newCountingProxy(t, b.URL, 150*time.Millisecond)
	serveNodesOnly(t, m, h, h)
	h.Admit(t, a)
	h.AdminCall(t, http.MethodPost, "/v1/admin/nodes", map[string]any{"name": "edge-b", "key": b.NodeKey(t), "urls": []string{far.URL}}, nil)
	all := []*meshtest.Node{h, r, a, b}
	viewEvery(t, all, converge, "every member alive", allAlive(all))

	enroll := h.AuthToken(t, "edge", "fleet")
	mc := newMachineCLI(t, m)
	stale := "--stale-after=" + staleAfter.String()
	meshtest.WaitFor(t, converge, "registration at edge-a and both edges known", func() error {
		if code, out, errs := mc.run(t, "--server", a.URL, "register", enroll, "--kernel", kernel, "--arch", arch); code != 0 {
			return fmt.Errorf("exit %d: %s%s", code, out, errs)
		}
		if ns := mc.nodes(t); len(ns) != 2 || ns[0].URL != a.URL || ns[1].URL != far.URL {
			return fmt.Errorf("nodes %+v, want edge-a then edge-b", ns)
		}
		return nil
	})
	if code, out, errs := mc.run(t, stale, "refresh", "--kernel", kernel, "--arch", arch); code != 0 {
		t.Fatalf("refresh with a fresh edge-a: exit %d: %s%s", code, out, errs)
	}
	if far.patch.Load() != 0 {
		t.Fatalf("edge-b was asked for the patch %d times while edge-a was fresh, want 0", far.patch.Load())
	}

	r.Kill(t)
	killed := time.Now()
	meshtest.WaitFor(t, staleAfter+converge/2, "the machine to move to edge-b", func() error {
		code, out, errs := mc.run(t, stale, "refresh", "--kernel", kernel, "--arch", arch)
		if code != 0 {
			t.Fatalf("refresh after edge-a froze: exit %d, want 0 (edge-b is fresh): %s%s", code, out, errs)
		}
		if far.patch.Load() == 0 {
			return fmt.Errorf("edge-b not asked yet")
		}
		return nil
	})
	moved := time.Since(killed)
	t.Logf("the machine left the frozen edge %v after its upstream died (bound %v)", moved.Round(100*time.Millisecond), staleAfter)
	if moved < staleAfter/2 {
		t.Errorf("the machine left edge-a after %v, before its heartbeat could be %v old", moved, staleAfter)
	}
	if ev := b.LogEvents("authn_credential_success"); len(ev) == 0 {
		t.Error("edge-b: the machine registered there without its credential")
	}

	// Now the hub goes too: every edge is frozen.
	h.Kill(t)
	var out string
	meshtest.WaitFor(t, staleAfter+converge/2, "refresh to report stale", func() error {
		code, o, errs := mc.run(t, stale, "refresh", "--kernel", kernel, "--arch", arch)
		out = o
		if code != 7 {
			return fmt.Errorf("exit %d: %s%s", code, o, errs)
		}
		return nil
	})
	if !strings.Contains(out, "STALE") {
		t.Errorf("stale refresh printed %q, want STALE", out)
	}
	code, o, errs := mc.run(t, stale, "--output", "json", "status")
	var st struct {
		Freshness struct {
			Stale string `json:"stale"`
		} `json:"freshness"`
	}
	if code != 0 || json.Unmarshal([]byte(o), &st) != nil || st.Freshness.Stale == "" {
		t.Errorf("status when stale: exit %d, %s%s; want freshness.stale set", code, o, errs)
	}
}
