package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/rollout"
)

// A node offers a version under a live rollout only once a wave open in
// the signed state matches its own data centre; before that it offers the
// previous patch, or nothing when there is none. Bad plans change nothing.
func TestOfferHoldsAVersionUntilThisDataCentresWaveOpens(t *testing.T) {
	var m *rollout.Manager
	e, _ := newHub(t, false, func(c *api.Config) {
		c.Info.DC = "dc-a"
		m = rollout.New(rollout.Config{Store: c.Store, Node: "node-a", DC: "dc-a", Now: c.Now,
			KnownDCs: func(context.Context) ([]string, error) { return []string{"dc-canary"}, nil }})
		c.Rollouts = m
	})
	old := e.upload([]byte("patch one"), "107.1")
	e.upload([]byte("patch two"), "107.2")
	mt := e.machine(old.Tiers[0], "machine-rollout-0001")
	offered := func(why string, want string) {
		t.Helper()
		var p catalog.Patch
		r := e.request(http.MethodGet, "/v1/client/patch?kernel="+testKernel+"&arch="+testArch, mt, nil)
		if want == "" {
			if r.StatusCode != http.StatusNotFound {
				t.Fatalf("%s: want 404, got %d %s", why, r.StatusCode, r.body)
			}
			return
		}
		e.want(r, http.StatusOK, &p)
		if p.Version != want {
			t.Fatalf("%s: want %s offered, got %s", why, want, p.Version)
		}
	}
	offered("no rollout", "107.2")

	before := e.snapshot()
	for _, bad := range []struct {
		body   map[string]any
		status int
	}{
		{map[string]any{"tier": old.Tiers[0], "version": "107.2", "waves": "dc-nowhere:0s"}, http.StatusBadRequest},
		{map[string]any{"tier": old.Tiers[0], "version": "107.2", "waves": "dc-canary:0s:150%"}, http.StatusBadRequest},
		{map[string]any{"tier": old.Tiers[0], "version": "107.2", "waves": "dc-canary:0s", "max_failed_percent": 0}, http.StatusBadRequest},
		{map[string]any{"tier": old.Tiers[0], "version": "108.1", "waves": "dc-canary:0s"}, http.StatusNotFound},
	} {
		if r := e.request(http.MethodPost, "/v1/admin/rollouts", e.admin, bad.body); r.StatusCode != bad.status {
			t.Errorf("create %v: want %d, got %d %s", bad.body, bad.status, r.StatusCode, r.body)
		}
	}
	e.unchanged("refused rollout plans", before)

	var ro catalog.Rollout
	e.want(e.request(http.MethodPost, "/v1/admin/rollouts", e.admin, map[string]any{"tier": old.Tiers[0], "version": "107.2",
		"waves": "dc-canary:0s,dc-a:1h", "min_reporting": 0, "soak_seconds": 0}), http.StatusCreated, &ro)
	offered("dc-a's wave shut", "107.1")
	e.want(e.request(http.MethodPost, "/v1/admin/patches/"+old.Digest+"/withdraw", e.admin, nil), http.StatusOK, nil)
	offered("dc-a's wave shut, the previous patch withdrawn", "")

	// An hour on, the hub's runner opens dc-a's wave.
	if err := m.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	offered("before the delay", "")
	e.clock.Advance(61 * time.Minute)
	if err := m.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	var got catalog.Rollout
	e.want(e.request(http.MethodGet, "/v1/admin/rollouts/"+ro.ID, e.admin, nil), http.StatusOK, &got)
	if len(got.Opened) != 2 {
		t.Fatalf("after the delay: want 2 waves open, got %+v", got)
	}
	offered("dc-a's wave open", "107.2")
}
