package api_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/nodetest"
)

// fakeNodes stands in for gossip, which the topology tests cover: it lists
// fixed nodes per tier and records the tiers it was asked about. What it
// lists is what any member holding the gossip key could claim.
type fakeNodes struct {
	mu     sync.Mutex
	byTier map[string][]api.NodeInfo
	asked  []string
}

func (f *fakeNodes) Nodes(tier string) []api.NodeInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, tier)
	return slices.Clone(f.byTier[tier])
}

// listedNode is one node of GET /v1/client/nodes or /v1/client/roster.
type listedNode = federation.RosterNode

type nodesAnswer struct {
	Nodes []listedNode `json:"nodes"`
}

func newNodeKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// hubEnv is an env whose store seals as a hub's does, with a node key of
// its own; it returns the env and the hub's verifier.
func hubEnv(t *testing.T, self ed25519.PrivateKey, tune ...func(*api.Config)) (*env, *federation.Verifier) {
	t.Helper()
	hub := newNodeKey(t)
	tune = append([]func(*api.Config){func(c *api.Config) { c.NodeKey = self }}, tune...)
	e := newEnvWith(t, nodetest.Options{Sealer: federation.Sealer{Key: hub}}, tune...)
	return e, federation.NewVerifier(pubOf(hub))
}

// admit admits a node through the admin API.
func (e *env) admit(name string, key ed25519.PrivateKey, url string, tiers ...string) {
	e.t.Helper()
	body := map[string]any{"name": name, "key": federation.FormatPublicKey(pubOf(key)), "urls": []string{url}}
	if len(tiers) > 0 {
		body["tiers"] = tiers
	}
	e.want(e.request(http.MethodPost, "/v1/admin/nodes", e.admin, body), http.StatusCreated, nil)
}

func names(ns []listedNode) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Name
	}
	return out
}

func TestClientNodesListsOnlyAliveNodesAdmittedWithTheirKey(t *testing.T) {
	self, east, west, south := newNodeKey(t), newNodeKey(t), newNodeKey(t), newNodeKey(t)
	f := &fakeNodes{}
	e, v := hubEnv(t, self, func(c *api.Config) { c.Nodes = f })
	e.admit("node-a", self, "https://hub.example")
	e.admit("edge-east", east, "https://east.example", "beta")
	e.admit("edge-west", west, "https://west.example", "beta")
	e.admit("edge-south", south, "https://south.example", "beta")
	e.admit("edge-other", newNodeKey(t), "https://other.example", "edge")
	rogueKey := federation.KeyID(pubOf(newNodeKey(t)))
	f.byTier = map[string][]api.NodeInfo{"beta": {
		{Name: "edge-east", DC: "east", Role: "edge", API: "https://east.example", KeyID: federation.KeyID(pubOf(east))},
		// Holds the gossip key but was never admitted.
		{Name: "rogue", DC: "east", Role: "edge", API: "https://rogue.example", KeyID: rogueKey},
		// Claims an admitted name under its own key.
		{Name: "edge-west", DC: "west", Role: "edge", API: "https://rogue.example", KeyID: rogueKey},
		// The real south, advertising a URL the hub did not admit: the
		// machine is sent to the admitted one.
		{Name: "edge-south", DC: "south", Role: "edge", API: "https://elsewhere.example", KeyID: federation.KeyID(pubOf(south))},
		// Admitted on another tier only.
		{Name: "edge-other", API: "https://other.example", KeyID: rogueKey},
		{Name: "edge-east", DC: "dup", API: "https://east.example", KeyID: federation.KeyID(pubOf(east))},
	}}
	mt := e.machine("beta", "0123456789abcdef0123")
	var got nodesAnswer
	e.want(e.request(http.MethodGet, "/v1/client/nodes", mt, nil), http.StatusOK, &got)
	if want := []string{"edge-east", "edge-south", "node-a"}; !slices.Equal(names(got.Nodes), want) {
		t.Fatalf("nodes = %v, want %v", names(got.Nodes), want)
	}
	wantURL := map[string]string{"edge-east": "https://east.example", "edge-south": "https://south.example", "node-a": "https://hub.example"}
	keys := map[string]ed25519.PrivateKey{"edge-east": east, "edge-south": south, "node-a": self}
	for _, n := range got.Nodes {
		if n.URL != wantURL[n.Name] {
			t.Errorf("%s: url %q, want the admitted %q", n.Name, n.URL, wantURL[n.Name])
		}
		// What a machine checks: the listing matches the hub's signed
		// admission, for its tier, with the node's real key.
		pub, r, err := n.Verify(v)
		if err != nil || r.Tier != "beta" || !pub.Equal(pubOf(keys[n.Name])) {
			t.Errorf("%s: listing does not verify for tier beta against the hub key: %+v, %v", n.Name, r, err)
		}
	}
	events := 0
	for _, l := range e.logs.lines(t) {
		if l["event"] == "node_identity_fail" {
			events++
			if l["node"] != "edge-west" || l["claimed_key_id"] != rogueKey || l["admitted_key_id"] != federation.KeyID(pubOf(west)) {
				t.Errorf("node_identity_fail: %v", l)
			}
		}
	}
	if events != 1 {
		t.Errorf("want one node_identity_fail security event for edge-west, got %d", events)
	}
	// Asked again at once, the same impostor is not logged again.
	e.want(e.request(http.MethodGet, "/v1/client/nodes", mt, nil), http.StatusOK, &got)
	again := 0
	for _, l := range e.logs.lines(t) {
		if l["event"] == "node_identity_fail" {
			again++
		}
	}
	if again != 1 {
		t.Errorf("a second list within a minute: want still one node_identity_fail, got %d", again)
	}
}

func TestClientNodesWithoutGossipListsThisNodeOnceAdmitted(t *testing.T) {
	self := newNodeKey(t)
	e, _ := hubEnv(t, self)
	mt := e.machine("beta", "0123456789abcdef0123")
	var got nodesAnswer
	e.want(e.request(http.MethodGet, "/v1/client/nodes", mt, nil), http.StatusOK, &got)
	if len(got.Nodes) != 0 {
		t.Errorf("before any admission: nodes = %+v, want none", got.Nodes)
	}
	// Admitted under another key (say, before the node's key was remade):
	// still not listed.
	e.admit("node-a", newNodeKey(t), "https://hub.example")
	e.want(e.request(http.MethodGet, "/v1/client/nodes", mt, nil), http.StatusOK, &got)
	if len(got.Nodes) != 0 {
		t.Errorf("admitted under another key: nodes = %+v, want none", got.Nodes)
	}
	e.want(e.request(http.MethodDelete, "/v1/admin/nodes/node-a", e.admin, nil), http.StatusNoContent, nil)
	e.admit("node-a", self, "https://hub.example")
	e.want(e.request(http.MethodGet, "/v1/client/nodes", mt, nil), http.StatusOK, &got)
	if !slices.Equal(names(got.Nodes), []string{"node-a"}) || got.Nodes[0].KeyID != federation.KeyID(pubOf(self)) {
		t.Errorf("admitted with its key: nodes = %+v, want node-a", got.Nodes)
	}
}

func TestClientNodesNeedsAMachineToken(t *testing.T) {
	f := &fakeNodes{}
	e := newEnv(t, func(c *api.Config) { c.Nodes = f })
	at, _ := e.token("auth", "beta", "fleet")
	st, _ := e.token("sync", "beta", "dc-east")
	for _, tc := range []struct {
		name, authz string
		status      int
		code        string
	}{
		{"no credentials", "", http.StatusUnauthorized, "unauthorized"},
		{"auth token", "Bearer " + at, http.StatusForbidden, "forbidden"},
		{"sync token", "Bearer " + st, http.StatusForbidden, "forbidden"},
		{"admin macaroon", e.admin, http.StatusUnauthorized, "unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.request(http.MethodGet, "/v1/client/nodes", tc.authz, nil)
			if r.StatusCode != tc.status || r.errCode() != tc.code {
				t.Errorf("GET /v1/client/nodes: %d %s, want %d %s", r.StatusCode, r.body, tc.status, tc.code)
			}
		})
	}
	if len(f.asked) != 0 {
		t.Errorf("the lister was asked %v for refused requests, want never", f.asked)
	}
}
