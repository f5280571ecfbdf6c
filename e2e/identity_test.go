package e2e_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// removalWithin bounds how long a node's removal at the hub takes to
// reach an edge's node list: one sync round, woken by the hub's commit.
const removalWithin = 10 * time.Second

// listedNames is the names a machine is given, sorted by the node.
func listedNames(ns []meshtest.ListedNode) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Name
	}
	slices.Sort(out)
	return out
}

// registerWithCredential registers a machine at n and returns its machine
// token and the machine credential n issued.
func registerAt(ctx context.Context, n *meshtest.Node, cred string, body map[string]string) (machineToken, credential, id string, err error) {
	var out struct {
		MachineToken string `json:"machine_token"`
		Credential   string `json:"credential"`
		Machine      struct {
			ID string `json:"id"`
		} `json:"machine"`
	}
	err = n.Call(ctx, http.MethodPost, "/v1/client/register", cred, body, &out)
	return out.MachineToken, out.Credential, out.Machine.ID, err
}

// nodesOnlyTier is a tier no machine of the tests uses.
const nodesOnlyTier = "relays"

// serveNodesOnly keeps ns off the lists machines are given, yet nodes other
// nodes talk to: in a plain mesh, not admitted (an admission they hold is
// removed); over mutual TLS, where node traffic needs an admission,
// admitted only on nodesOnlyTier.
func serveNodesOnly(t *testing.T, m *meshtest.Mesh, h *meshtest.Node, ns ...*meshtest.Node) {
	t.Helper()
	type named struct {
		Name string `json:"name"`
	}
	var list struct {
		Nodes []named `json:"nodes"`
	}
	h.AdminCall(t, http.MethodGet, "/v1/admin/nodes", nil, &list)
	if m.MTLS {
		var tiers struct {
			Tiers []named `json:"tiers"`
		}
		h.AdminCall(t, http.MethodGet, "/v1/admin/tiers", nil, &tiers)
		if !slices.Contains(tiers.Tiers, named{nodesOnlyTier}) {
			h.AdminCall(t, http.MethodPost, "/v1/admin/tiers", map[string]any{"name": nodesOnlyTier}, nil)
		}
	}
	for _, n := range ns {
		for _, l := range list.Nodes {
			if l.Name == n.Name {
				h.AdminCall(t, http.MethodDelete, "/v1/admin/nodes/"+n.Name, nil, nil)
			}
		}
		if m.MTLS {
			h.AdminCall(t, http.MethodPost, "/v1/admin/nodes", map[string]any{
				"name": n.Name, "key": n.NodeKey(t), "urls": []string{n.URL}, "tiers": []string{nodesOnlyTier}}, nil)
		}
	}
}

// A mesh of a hub, a relay and two edges below it, the hub and edges
// admitted (the relay is not: it serves only nodes), with two processes that
// hold the gossip key but are not admitted: "rogue", under its own name,
// and "ghost", under a name the hub admitted with a key ghost does not
// hold. Machines at the hub and at an edge are never told of either; a
// removal at the hub leaves an edge's list within seconds; a credential
// issued at one edge registers the machine at the other.
func TestIdentityMachinesUseOnlyAdmittedNodes(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := meshtest.New(t)
	m.Gossip = gossipProfile
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub})
	// The edges pull through a relay, so admissions and removals reach
	// them as the relay passes the hub's records on.
	rs := pullSpec(t, "region", node.RoleRelay, h.URL, h, "edge")
	rs.Unadmitted = true
	r := m.Start(rs)
	serveNodesOnly(t, m, h, r)
	a := m.Start(pullSpec(t, "edge-a", node.RoleEdge, r.URL, r, "edge"))
	b := m.Start(pullSpec(t, "edge-b", node.RoleEdge, r.URL, r, "edge"))
	// Never admitted by meshtest either: over mutual TLS they cannot even
	// sync, and machines must still never be sent to them.
	rogueSpec, ghostSpec := pullSpec(t, "rogue", node.RoleEdge, h.URL, h, "edge"), pullSpec(t, "ghost", node.RoleEdge, h.URL, h, "edge")
	rogueSpec.Unadmitted, ghostSpec.Unadmitted = true, true
	rogue, ghost := m.Start(rogueSpec), m.Start(ghostSpec)
	h.Admit(t, h, a, b)
	otherPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h.AdminCall(t, http.MethodPost, "/v1/admin/nodes", map[string]any{
		"name": "ghost", "key": federation.FormatPublicKey(otherPub), "urls": []string{ghost.URL}, "tiers": []string{"edge"}}, nil)
	all := []*meshtest.Node{h, r, a, b, rogue, ghost}
	viewEvery(t, all, converge, "every member alive, the rogue and the ghost included", allAlive(all))

	enroll := h.AuthToken(t, "edge", "fleet")
	const rawID = "e2e-identity-machine-0001"
	reg := map[string]string{"machine_id": rawID, "kernel": kernel, "arch": arch, "client_version": "e2e"}
	tokens := map[string]string{}
	var credential, idAtA string
	for _, n := range []*meshtest.Node{h, a} {
		meshtest.WaitFor(t, converge, "registration at "+n.Name+" with the hub's token", func() error {
			mt, cred, id, err := registerAt(ctx, n, meshtest.Bearer(enroll), reg)
			if err == nil {
				tokens[n.Name] = mt
				if n == a {
					credential, idAtA = cred, id
				}
			}
			return err
		})
	}

	hubKey, err := federation.ParsePublicKey(m.HubPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	verifier := federation.NewVerifier(hubKey)
	want := []string{"edge-a", "edge-b", "hub"}
	for _, n := range []*meshtest.Node{h, a} {
		var got []meshtest.ListedNode
		meshtest.WaitFor(t, converge, n.Name+" to list the admitted nodes", func() error {
			ns, err := n.ClientNodes(ctx, tokens[n.Name])
			if err != nil {
				return err
			}
			got = ns
			if names := listedNames(ns); !slices.Equal(names, want) {
				return fmt.Errorf("listed %v, want %v", names, want)
			}
			return nil
		})
		for _, ln := range got {
			if ln.Name == "rogue" || ln.Name == "ghost" {
				t.Fatalf("%s listed %s", n.Name, ln.Name)
			}
			key := map[string]*meshtest.Node{"hub": h, "edge-a": a, "edge-b": b}[ln.Name].NodeKey(t)
			pub, r, err := ln.Verify(verifier)
			if err != nil || federation.FormatPublicKey(pub) != key || r.Tier != "edge" {
				t.Errorf("%s lists %s with an admission that does not verify for tier edge with its key: %v", n.Name, ln.Name, err)
			}
		}
	}
	// A machine's check before it sends a node anything: the admitted
	// edge proves it holds its key; the ghost, reached at the URL the hub
	// admitted for its name, cannot.
	helloOK := func(n *meshtest.Node, pub ed25519.PublicKey) error {
		nonce, err := federation.NewNonce()
		if err != nil {
			return err
		}
		host, err := federation.HelloHost(n.URL)
		if err != nil {
			return err
		}
		var hello federation.Hello
		if err := n.Call(ctx, http.MethodGet, "/v1/client/hello?nonce="+nonce, "", nil, &hello); err != nil {
			return err
		}
		return federation.VerifyHello(hello, pub, nonce, host)
	}
	aPub, _ := federation.ParsePublicKey(a.NodeKey(t))
	if err := helloOK(a, aPub); err != nil {
		t.Errorf("edge-a's hello: %v", err)
	}
	if err := helloOK(ghost, otherPub); !errors.Is(err, federation.ErrBadHello) {
		t.Errorf("the ghost's hello against the key admitted for its name: want ErrBadHello, got %v", err)
	}

	// The hub saw the ghost claim an admitted name under its own key.
	if ev := h.LogEvents("node_identity_fail"); len(ev) == 0 || ev[0]["node"] != "ghost" {
		t.Errorf("hub: want a node_identity_fail security event for ghost, got %v", ev)
	}

	// The credential edge-a issued registers the machine at edge-b under
	// the same ID, with no enrollment token and no raw machine ID.
	var tokenAtB, idAtB string
	meshtest.WaitFor(t, converge, "registration at edge-b with edge-a's credential", func() error {
		mt, _, id, err := registerAt(ctx, b, meshtest.Bearer(credential),
			map[string]string{"kernel": kernel, "arch": arch, "client_version": "e2e"})
		tokenAtB, idAtB = mt, id
		return err
	})
	if idAtB != idAtA || tokenAtB == "" {
		t.Errorf("edge-b registered machine %q, want edge-a's %q", idAtB, idAtA)
	}
	if ev := b.LogEvents("authn_credential_success"); len(ev) != 1 || ev[0]["issuer"] != "edge-a" {
		t.Errorf("edge-b: want one authn_credential_success from edge-a, got %v", ev)
	}
	// The rogue's credential for the same machine is refused.
	_, rogueKey, _ := ed25519.GenerateKey(rand.Reader)
	forged, err := federation.IssueCredential(rogueKey, federation.MachineStatement{
		Machine: idAtA, Tier: "edge", Issuer: "rogue", Issued: time.Now(), Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, err = registerAt(ctx, b, meshtest.Bearer(forged), map[string]string{"kernel": kernel, "arch": arch, "client_version": "e2e"})
	var se *meshtest.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
		t.Errorf("edge-b with a credential the rogue issued: want 401, got %v", err)
	}

	// Removing edge-b at the hub takes it off edge-a's list within seconds.
	start := time.Now()
	h.AdminCall(t, http.MethodDelete, "/v1/admin/nodes/edge-b", nil, nil)
	meshtest.WaitFor(t, removalWithin, "edge-b to leave edge-a's list", func() error {
		ns, err := a.ClientNodes(ctx, tokens["edge-a"])
		if err != nil {
			return err
		}
		if names := listedNames(ns); !slices.Equal(names, []string{"edge-a", "hub"}) {
			return fmt.Errorf("listed %v", names)
		}
		return nil
	})
	t.Logf("edge-b's removal reached edge-a's node list in %v", time.Since(start).Round(10*time.Millisecond))
}
