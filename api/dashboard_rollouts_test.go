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

// The view carries every live rollout as this node holds it, each wave
// with its standing (open since, or waiting and when its delay ends) and
// how far the version has reached the machines of its data centres; a
// halted rollout's reason; and no longer calls rollouts unavailable.
// Rollouts are admin data: an anonymous reader gets none.
func TestDashboardViewCarriesTheRollouts(t *testing.T) {
	var m *rollout.Manager
	e, _ := newHub(t, false, func(c *api.Config) {
		c.Info.DC = "dc-a"
		c.Dashboard.PublicRead = true
		m = rollout.New(rollout.Config{Store: c.Store, Node: "node-a", DC: "dc-a", Now: c.Now,
			KnownDCs: func(context.Context) ([]string, error) { return []string{"dc-canary"}, nil }})
		c.Rollouts = m
	})
	p := e.upload([]byte("patch two"), "107.2")
	tier := p.Tiers[0]
	if v, _ := e.dashView(e.admin); len(v.Rollouts) != 0 || len(v.Unavailable) != 0 {
		t.Fatalf("no rollout yet: rollouts %+v, unavailable %v; want none of either", v.Rollouts, v.Unavailable)
	}

	var ro catalog.Rollout
	e.want(e.request(http.MethodPost, "/v1/admin/rollouts", e.admin, map[string]any{"tier": tier, "version": "107.2",
		"waves": "dc-canary:0s,dc-a:1h:50%,dc-*:5h", "min_reporting": 0, "soak_seconds": 0, "max_failed_percent": 20}), http.StatusCreated, &ro)
	if err := m.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Machines of dc-a, where this node is: one on the version (it took
	// it by hand, say), one on none.
	for _, c := range []struct {
		id, version string
		state       catalog.MachineState
	}{{"rollout-machine-0001", "107.2", catalog.StateApplied}, {"rollout-machine-0002", "", catalog.StateUnapplied}} {
		mt := e.machine(tier, c.id)
		e.want(e.request(http.MethodPost, "/v1/client/checkin", mt, map[string]any{"state": c.state, "kernel": testKernel,
			"arch": testArch, "patch_version": c.version, "client_version": "0.2.0"}), http.StatusOK, nil)
	}
	e.clock.Advance(3 * time.Second) // past the fleet's and the view's caching

	v, _ := e.dashView(e.admin)
	if len(v.Unavailable) != 0 {
		t.Errorf("unavailable = %v, want none", v.Unavailable)
	}
	if len(v.Rollouts) != 1 {
		t.Fatalf("rollouts = %+v, want the one created", v.Rollouts)
	}
	got := v.Rollouts[0]
	if got.ID != ro.ID || got.Version != "107.2" || got.Tier != tier || got.State != catalog.RolloutActive ||
		got.Gate.MaxFailedPercent != 20 || got.Gate.MinReporting != 0 || len(got.Waves) != 3 || got.Waves[1].Percent != 50 {
		t.Errorf("rollout = %+v, want %s active on %s with its gate and three waves", got.Rollout, ro.ID, tier)
	}
	if len(got.WaveStatus) != 3 {
		t.Fatalf("wave_status = %+v, want one per wave", got.WaveStatus)
	}
	w0, w1 := got.WaveStatus[0], got.WaveStatus[1]
	if w0.State != "open" || w0.OpenedAt.IsZero() || !w0.OpensAt.IsZero() {
		t.Errorf("wave 1 = %+v, want open, with when", w0)
	}
	if w1.State != "waiting" || !w1.OpensAt.Equal(w0.OpenedAt.Add(time.Hour)) || !w1.OpenedAt.IsZero() {
		t.Errorf("wave 2 = %+v, want waiting until an hour after wave 1 opened (%v)", w1, w0.OpenedAt)
	}
	if len(w0.DCs) != 0 {
		t.Errorf("wave 1 reach = %+v, want none: no node nor report of dc-canary", w0.DCs)
	}
	if len(w1.DCs) != 1 || w1.DCs[0] != (api.DashboardReach{DC: "dc-a", Applied: 1, OnVersion: 1, Machines: 2}) {
		t.Errorf("wave 2 reach = %+v, want dc-a with 1 of 2 machines applied on 107.2", w1.DCs)
	}

	// An hour on the second wave opens.
	e.clock.Advance(61 * time.Minute)
	if err := m.Tick(t.Context()); err != nil {
		t.Fatal(err)
	}
	v, _ = e.dashView(e.admin)
	if len(v.Rollouts) != 1 || v.Rollouts[0].WaveStatus[1].State != "open" || v.Rollouts[0].WaveStatus[1].OpenedAt.IsZero() {
		t.Fatalf("an hour on: rollouts = %+v, want wave 2 open", v.Rollouts)
	}

	// A halt's reason reaches the view; a halted rollout's waves wait
	// for no delay.
	e.want(e.request(http.MethodPost, "/v1/admin/rollouts/"+ro.ID+"/halt", e.admin, map[string]string{"reason": "pager went off"}), http.StatusOK, nil)
	e.clock.Advance(time.Second)
	v, raw := e.dashView(e.admin)
	if len(v.Rollouts) != 1 || v.Rollouts[0].State != catalog.RolloutHalted || v.Rollouts[0].Reason == "" {
		t.Errorf("halted: rollouts = %+v, want halted with its reason", v.Rollouts)
	}
	if _, ok := raw["rollouts"]; !ok {
		t.Errorf("admin view without rollouts")
	}

	v, raw = e.dashView("")
	if _, ok := raw["rollouts"]; ok || v.User != "" || len(v.Unavailable) != 0 {
		t.Errorf("anonymous view: user %q, rollouts %s, unavailable %v; want no rollouts, nothing unavailable", v.User, raw["rollouts"], v.Unavailable)
	}
}
