package api

import (
	"slices"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/topology"
)

// rolloutStatus: each wave open or waiting, when the next opens, and the
// reach per matching data centre counted from the rollout's tier and
// version alone.
func TestRolloutStatus(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	waves := []catalog.Wave{{DC: "dc-canary", AfterSeconds: 60}, {DC: "dc-eu-*", AfterSeconds: 3600, Percent: 10}, {DC: "dc-us-1"}}
	view := topology.View{Nodes: []topology.ViewNode{{Name: "us", DC: "dc-us-1"}, {Name: "gone", DC: "dc-eu-9", State: topology.Left}}}
	totals := []FleetTotal{
		{Tier: "edge", DC: "dc-eu-1", PatchVersion: "107.2", State: catalog.StateApplied, Machines: 3},
		{Tier: "edge", DC: "dc-eu-1", PatchVersion: "107.2", State: catalog.StateCheckFailed, Machines: 1},
		{Tier: "edge", DC: "dc-eu-1", PatchVersion: "107.2", State: catalog.StateUnapplied, Machines: 2},
		{Tier: "edge", DC: "dc-eu-1", PatchVersion: "107.1", State: catalog.StateApplied, Machines: 4},
		{Tier: "edge", DC: "dc-eu-2", PatchVersion: "", State: catalog.StateUnknown, Machines: 5},
		{Tier: "stable", DC: "dc-eu-1", PatchVersion: "107.2", State: catalog.StateApplied, Machines: 100},
	}
	tests := []struct {
		name    string
		state   catalog.RolloutState
		opened  []time.Time
		states  []string
		opensAt []time.Time
	}{
		{"created", catalog.RolloutActive, nil, []string{"waiting", "waiting", "waiting"}, []time.Time{t0.Add(time.Minute), {}, {}}},
		{"canary open", catalog.RolloutActive, []time.Time{t0.Add(time.Minute)}, []string{"open", "waiting", "waiting"},
			[]time.Time{{}, t0.Add(61 * time.Minute), {}}},
		{"halted", catalog.RolloutHalted, []time.Time{t0.Add(time.Minute)}, []string{"open", "waiting", "waiting"}, []time.Time{{}, {}, {}}},
		{"completed", catalog.RolloutCompleted, []time.Time{t0, t0, t0}, []string{"open", "open", "open"}, []time.Time{{}, {}, {}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := catalog.Rollout{ID: "0123456789abcdef", Tier: "edge", Version: "107.2", Waves: waves, State: tc.state, Opened: tc.opened, Created: t0}
			d := rolloutStatus(r, view, totals)
			if len(d.WaveStatus) != 3 {
				t.Fatalf("wave_status %+v, want 3", d.WaveStatus)
			}
			for i, w := range d.WaveStatus {
				if w.State != tc.states[i] || !w.OpensAt.Equal(tc.opensAt[i]) {
					t.Errorf("wave %d: %s opens at %v, want %s opens at %v", i+1, w.State, w.OpensAt, tc.states[i], tc.opensAt[i])
				}
				if (w.State == waveOpen) != !w.OpenedAt.IsZero() {
					t.Errorf("wave %d: %s opened at %v", i+1, w.State, w.OpenedAt)
				}
			}
			want := [][]DashboardReach{
				{},
				{{DC: "dc-eu-1", Applied: 3, Failed: 1, OnVersion: 6, Machines: 10}, {DC: "dc-eu-2", Machines: 5}},
				{{DC: "dc-us-1"}},
			}
			for i, w := range d.WaveStatus {
				if !slices.Equal(w.DCs, want[i]) {
					t.Errorf("wave %d reach %+v, want %+v", i+1, w.DCs, want[i])
				}
			}
		})
	}
}
