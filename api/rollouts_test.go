package api_test

import (
	"context"
	"encoding/json"
	"fmt"
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

// A refused plan says what is wrong as the rest of the API does: an
// unknown tier is invalid input naming it, a version with no live patch
// on the tier a 404 naming both, and a second live rollout of the tier
// names the one that is live.
func TestRolloutCreateSaysWhatIsMissingOrLive(t *testing.T) {
	e, _ := newHub(t, false, func(c *api.Config) {
		c.Info.DC = "dc-a"
		c.Rollouts = rollout.New(rollout.Config{Store: c.Store, Node: "node-a", DC: "dc-a", Now: c.Now})
	})
	tier := e.upload([]byte("patch one"), "107.1").Tiers[0]
	var live catalog.Rollout
	e.want(e.request(http.MethodPost, "/v1/admin/rollouts", e.admin, map[string]any{"tier": tier, "version": "107.1",
		"waves": "dc-a:1h"}), http.StatusCreated, &live)
	for _, c := range []struct {
		name          string
		tier, version string
		status        int
		code, field   string
		message       string
	}{
		{"unknown tier", "nosuch", "107.1", http.StatusBadRequest, "invalid_input", "tier", `tier: no tier named "nosuch"`},
		{"unknown version", tier, "108.1", http.StatusNotFound, "not_found", "",
			fmt.Sprintf("no live patch of version 108.1 on tier %q", tier)},
		{"a second live rollout", tier, "107.1", http.StatusConflict, "conflict", "",
			fmt.Sprintf("tier %q already has live rollout %s; complete or abort it first", tier, live.ID)},
	} {
		r := e.request(http.MethodPost, "/v1/admin/rollouts", e.admin, map[string]any{"tier": c.tier, "version": c.version, "waves": "dc-a:0h"})
		var b struct {
			Error struct{ Code, Message, Field string }
		}
		json.Unmarshal(r.body, &b)
		if r.StatusCode != c.status || b.Error.Code != c.code || b.Error.Field != c.field || b.Error.Message != c.message {
			t.Errorf("%s: %d %s; want %d %s on field %q: %q", c.name, r.StatusCode, r.body, c.status, c.code, c.field, c.message)
		}
	}
}
