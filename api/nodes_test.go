package api_test

import (
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/patchmesh/patchmesh/api"
)

// fakeNodes stands in for gossip, which the topology tests cover: it lists
// fixed nodes per tier and records the tiers it was asked about.
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

type nodesAnswer struct {
	Nodes []api.NodeInfo `json:"nodes"`
}

func TestClientNodesWithoutGossipListsThisNodeOnly(t *testing.T) {
	e := newEnv(t)
	mt := e.machine("beta", "0123456789abcdef0123")
	var got nodesAnswer
	e.want(e.request(http.MethodGet, "/v1/client/nodes", mt, nil), http.StatusOK, &got)
	want := []api.NodeInfo{{Name: "node-a", Role: "hub", API: e.srv.URL}}
	if !slices.Equal(got.Nodes, want) {
		t.Errorf("nodes = %+v, want only this node as the machine reached it %+v", got.Nodes, want)
	}
}

func TestClientNodesListsTheTiersHealthyNodesAndThisOne(t *testing.T) {
	east := api.NodeInfo{Name: "edge-east", DC: "east", Role: "edge", API: "https://east.example"}
	west := api.NodeInfo{Name: "edge-west", DC: "west", Role: "edge", API: "https://west.example"}
	self := api.NodeInfo{Name: "node-a", DC: "north", Role: "hub", API: "https://hub.example"}
	for _, tc := range []struct {
		name   string
		listed []api.NodeInfo
		url    string // Info.URL
		want   []api.NodeInfo
	}{
		{"gossip lists this node", []api.NodeInfo{east, self, west}, "https://ignored.example", []api.NodeInfo{east, self, west}},
		{"gossip has not heard of this node yet", []api.NodeInfo{east, west}, "https://hub.example",
			[]api.NodeInfo{east, west, {Name: "node-a", Role: "hub", API: "https://hub.example"}}},
		{"duplicates and nodes without a URL are dropped", []api.NodeInfo{east, {Name: "mute", DC: "x"}, east, self}, "", []api.NodeInfo{east, self}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeNodes{byTier: map[string][]api.NodeInfo{"beta": tc.listed, "edge": {{Name: "other-tier", API: "https://other.example"}}}}
			e := newEnv(t, func(c *api.Config) {
				c.Nodes = f
				c.Info.URL = tc.url
			})
			mt := e.machine("beta", "0123456789abcdef0123")
			var got nodesAnswer
			e.want(e.request(http.MethodGet, "/v1/client/nodes", mt, nil), http.StatusOK, &got)
			if !slices.Equal(got.Nodes, tc.want) {
				t.Errorf("nodes = %+v, want %+v", got.Nodes, tc.want)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if !slices.Equal(f.asked, []string{"beta"}) {
				t.Errorf("the lister was asked about tiers %v, want only the machine token's tier beta", f.asked)
			}
		})
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
