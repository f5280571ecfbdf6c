package api_test

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/topology"
)

func TestTopologyWithoutGossipShowsThisNodeAlone(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.Info.URL = "https://hub.example" })
	r := e.request(http.MethodGet, "/v1/topology", e.admin, nil)
	var got topology.View
	e.want(r, http.StatusOK, &got)
	want := topology.View{
		Self:  "node-a",
		Pools: []string{},
		Nodes: []topology.ViewNode{{Name: "node-a", Role: "hub", URL: "https://hub.example", State: topology.Alive, Version: "1.2.3",
			Since: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC), Tiers: []string{}, Pools: []string{}}},
		Links: []topology.ViewLink{},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GET /v1/topology without gossip:\n got %+v\nwant %+v", got, want)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store: health changes by the second", cc)
	}
}

func TestTopologyServesTheGossipView(t *testing.T) {
	key, err := topology.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	top, err := topology.Start(t.Context(), topology.Config{
		Name: "hub-1", BindAddr: "127.0.0.1", Profile: "local", Keys: [][]byte{key},
		Meta: func() topology.Meta {
			return topology.Meta{Role: "hub", DC: "dc-a", API: "https://hub.example", Tiers: []string{"stable"}, Version: "1.2.3"}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { top.Close() })
	e := newEnv(t, func(c *api.Config) { c.Topology = top })

	var got topology.View
	e.want(e.request(http.MethodGet, "/v1/topology", e.admin, nil), http.StatusOK, &got)
	if len(got.Nodes) != 1 {
		t.Fatalf("GET /v1/topology = %+v, want the one gossip member", got)
	}
	n := got.Nodes[0]
	if got.Self != "hub-1" || n.Name != "hub-1" || n.DC != "dc-a" || n.State != topology.Alive ||
		!reflect.DeepEqual(n.Tiers, []string{"stable"}) || n.Addr != top.LocalAddr() {
		t.Errorf("GET /v1/topology = %+v, want gossip's hub-1 (dc-a, alive, tier stable, addr %s)", got, top.LocalAddr())
	}
}

func TestTopologyNeedsTheAdmin(t *testing.T) {
	e := newEnv(t)
	at, _ := e.token("auth", "beta", "fleet")
	st, _ := e.token("sync", "beta", "dc-east")
	mt := e.machine("beta", "0123456789abcdef0123")
	// Like every admin endpoint: only a macaroon is an admin credential, so
	// any token is no credential at all here.
	for _, tc := range []struct{ name, authz string }{
		{"no credentials", ""},
		{"auth token", "Bearer " + at},
		{"sync token", "Bearer " + st},
		{"machine token", mt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.request(http.MethodGet, "/v1/topology", tc.authz, nil)
			if r.StatusCode != http.StatusUnauthorized || r.errCode() != "unauthorized" {
				t.Errorf("GET /v1/topology: %d %s, want 401 unauthorized", r.StatusCode, r.body)
			}
			if got := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Macaroon ") {
				t.Errorf("GET /v1/topology: WWW-Authenticate %q, want the Macaroon scheme", got)
			}
		})
	}
	if r := e.request(http.MethodPost, "/v1/topology", e.admin, nil); r.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /v1/topology: %d, want 405", r.StatusCode)
	}
}
