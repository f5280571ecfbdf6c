package api

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/topology"
)

// Rollouts panel bounds.
const (
	// dashboardRollouts caps the rollouts the view carries: every live
	// one first, then the most recently finished.
	dashboardRollouts = 20
	// rolloutRecent is how long a completed or aborted rollout stays in
	// the view after its last change.
	rolloutRecent = 24 * time.Hour
)

// Wave states in the view.
const (
	waveOpen    = "open"
	waveWaiting = "waiting"
)

// DashboardRollout is a rollout as this node holds its hub-signed state
// (GET /v1/admin/rollouts), and where each of its waves stands.
type DashboardRollout struct {
	catalog.Rollout
	// WaveStatus follows Waves, in order.
	WaveStatus []DashboardWave `json:"wave_status"`
}

// DashboardWave is one wave's standing: open since OpenedAt, or waiting;
// OpensAt is the earliest the next wave of an active rollout opens by its
// delay (the gate may hold it longer). DCs are the data centres the wave's
// glob matches, among those this node knows of, with how far the
// rollout's version has reached their machines of the rollout's tier.
type DashboardWave struct {
	State    string           `json:"state"`
	OpenedAt time.Time        `json:"opened_at,omitzero"`
	OpensAt  time.Time        `json:"opens_at,omitzero"`
	DCs      []DashboardReach `json:"dcs"`
}

// DashboardReach counts one data centre's machines of a rollout's tier,
// from the fleet reports: Applied on the rollout's version, Failed on it
// (apply-failed or check-failed), OnVersion reporting it in any state,
// and Machines reporting at all.
type DashboardReach struct {
	DC        string `json:"dc"`
	Applied   int64  `json:"applied"`
	Failed    int64  `json:"failed"`
	OnVersion int64  `json:"on_version"`
	Machines  int64  `json:"machines"`
}

// dashboardRollouts lists the live and recent rollouts with their waves'
// standing; totals are the fleet's, by kernel and version (nil when the
// reports could not be read: the reach is then empty, and the view's
// fleet_error says why).
func (s *server) dashboardRollouts(ctx context.Context, view topology.View, totals []FleetTotal) []DashboardRollout {
	out := []DashboardRollout{}
	srs, err := s.store.ListRollouts(ctx, "")
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "dashboard: list rollouts", slog.String("error", err.Error()))
		return out
	}
	now := s.now()
	var live, done []catalog.Rollout
	for _, sr := range srs {
		switch r := sr.Rollout; {
		case r.Live():
			live = append(live, r)
		case now.Sub(r.Updated) < rolloutRecent:
			done = append(done, r)
		}
	}
	slices.SortStableFunc(done, func(a, b catalog.Rollout) int { return b.Updated.Compare(a.Updated) })
	for _, r := range append(live, done...) {
		if len(out) == dashboardRollouts {
			break
		}
		out = append(out, rolloutStatus(r, view, totals))
	}
	return out
}

// rolloutStatus works out r's waves' standing and reach.
func rolloutStatus(r catalog.Rollout, view topology.View, totals []FleetTotal) DashboardRollout {
	dcs := map[string]bool{}
	for _, n := range view.Nodes {
		if n.DC != "" && n.State != topology.Left {
			dcs[n.DC] = true
		}
	}
	reach := map[string]*DashboardReach{}
	for _, t := range totals {
		if t.Tier != r.Tier {
			continue
		}
		dcs[t.DC] = true
		c := reach[t.DC]
		if c == nil {
			c = &DashboardReach{DC: t.DC}
			reach[t.DC] = c
		}
		c.Machines += t.Machines
		if t.PatchVersion != r.Version {
			continue
		}
		c.OnVersion += t.Machines
		switch t.State {
		case catalog.StateApplied:
			c.Applied += t.Machines
		case catalog.StateApplyFailed, catalog.StateCheckFailed:
			c.Failed += t.Machines
		}
	}
	names := make([]string, 0, len(dcs))
	for dc := range dcs {
		names = append(names, dc)
	}
	slices.Sort(names)

	d := DashboardRollout{Rollout: r, WaveStatus: make([]DashboardWave, len(r.Waves))}
	for i, w := range r.Waves {
		ws := &d.WaveStatus[i]
		ws.State, ws.DCs = waveWaiting, []DashboardReach{}
		switch {
		case i < len(r.Opened):
			ws.State, ws.OpenedAt = waveOpen, r.Opened[i]
		case i == len(r.Opened) && r.State == catalog.RolloutActive && i == 0:
			ws.OpensAt = r.Created.Add(w.After())
		case i == len(r.Opened) && r.State == catalog.RolloutActive:
			ws.OpensAt = r.Opened[i-1].Add(w.After())
		}
		for _, dc := range names {
			if !w.Matches(dc) {
				continue
			}
			if c := reach[dc]; c != nil {
				ws.DCs = append(ws.DCs, *c)
			} else {
				ws.DCs = append(ws.DCs, DashboardReach{DC: dc})
			}
		}
	}
	return d
}
