package api

import (
	"reflect"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/topology"
)

// meshView is a hub, two relays and an edge pulling from upstream at
// the given lag.
func meshView(upstream string, lag int64) topology.View {
	return topology.View{
		Self: "hub",
		Nodes: []topology.ViewNode{
			{Name: "edge-1", URL: "http://edge-1", Upstream: upstream, Lag: lag, State: topology.Alive,
				ProgressAsOf: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)},
			{Name: "hub", URL: "http://hub", State: topology.Alive},
			{Name: "relay-a", URL: "http://relay-a", Upstream: "http://hub", State: topology.Alive},
			{Name: "relay-b", URL: "http://relay-b", Upstream: "http://hub", State: topology.Alive},
		},
		Links: []topology.ViewLink{
			{From: "relay-a", To: "edge-1", FromURL: upstream, LagEvents: lag},
			{From: "hub", To: "relay-a", FromURL: "http://hub"},
			{From: "hub", To: "relay-b", FromURL: "http://hub"},
		},
	}
}

func TestDashboardSeesFailoversAndHowLongALinkIsBehind(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	type step struct {
		at       time.Duration
		upstream string
		lag      int64
		// wantMoves are the moves' nodes and targets, newest first;
		// wantLag is edge-1's lag in seconds (-1: none known).
		wantMoves []string
		wantLag   float64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"caught up and staying put", []step{
			{0, "http://relay-a", 0, nil, 0},
			{time.Second, "http://relay-a", 0, nil, 0},
		}},
		{"behind for a while, then caught up", []step{
			{0, "http://relay-a", 0, nil, 0},
			{time.Second, "http://relay-a", 3, nil, 0},
			{5 * time.Second, "http://relay-a", 7, nil, 4},
			{6 * time.Second, "http://relay-a", 0, nil, 0},
		}},
		{"a failover and the move back", []step{
			{0, "http://relay-a", 0, nil, 0},
			{time.Second, "http://relay-b", 0, []string{"edge-1 relay-b"}, 0},
			{40 * time.Second, "http://relay-a", 0, []string{"edge-1 relay-a", "edge-1 relay-b"}, 0},
		}},
		{"a move is forgotten after an hour", []step{
			{0, "http://relay-a", 0, nil, 0},
			{time.Second, "http://relay-b", 0, []string{"edge-1 relay-b"}, 0},
			{time.Second + movesFor, "http://relay-b", 0, nil, 0},
		}},
		{"an upstream nobody advertises", []step{
			{0, "http://relay-a", 0, nil, 0},
			{time.Second, "http://gone", 0, []string{"edge-1 "}, 0},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d dashState
			for i, st := range tc.steps {
				now := t0.Add(st.at)
				v := meshView(st.upstream, st.lag)
				d.observe(v, now)
				var got []string
				for _, m := range d.moves {
					got = append(got, m.Node+" "+m.ToNode)
				}
				if !reflect.DeepEqual(got, st.wantMoves) {
					t.Errorf("step %d: moves %v, want %v", i, got, st.wantMoves)
				}
				if lag := d.linkLag(v, 0, now)["edge-1"]; lag != st.wantLag {
					t.Errorf("step %d: edge-1 lag %v s, want %v s", i, lag, st.wantLag)
				}
			}
		})
	}
}

func TestDashboardTakesItsOwnLinksLagFromTheSyncLoop(t *testing.T) {
	var d dashState
	v := meshView("http://relay-a", 5)
	v.Self = "edge-1"
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	d.observe(v, now)
	if lag := d.linkLag(v, 12.5, now.Add(time.Second))["edge-1"]; lag != 12.5 {
		t.Errorf("own link's lag %v s, want the sync loop's 12.5 s", lag)
	}
}

// A downstream whose progress this node does not know (not in its subtree)
// has no lag in seconds, and its earlier word stands until news comes.
func TestDashboardLagOfAnUnknownDownstreamIsNone(t *testing.T) {
	var d dashState
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	d.observe(meshView("http://relay-a", 3), t0)
	unknown := meshView("http://relay-a", 0)
	unknown.Nodes[0].ProgressAsOf = time.Time{}
	d.observe(unknown, t0.Add(2*time.Second))
	if lag, ok := d.linkLag(unknown, 0, t0.Add(2*time.Second))["edge-1"]; ok {
		t.Errorf("edge-1's progress unknown: lag %v s, want none", lag)
	}
	known := meshView("http://relay-a", 3)
	d.observe(known, t0.Add(5*time.Second))
	if lag := d.linkLag(known, 0, t0.Add(5*time.Second))["edge-1"]; lag != 5 {
		t.Errorf("edge-1 behind again: %v s, want 5 s since it was first seen behind", lag)
	}
}

// The watch looks at a change at once after a quiet spell, at most every
// watchBusy while changes keep coming, and every watchAnyway regardless.
func TestDashboardWatchLooksAtChangesButNotAtEveryOne(t *testing.T) {
	for _, c := range []struct {
		changed bool
		since   time.Duration
		want    bool
	}{
		{true, time.Hour, true},
		{true, watchBusy, true},
		{true, watchBusy - time.Second, false},
		{false, watchAnyway - time.Second, false},
		{false, watchAnyway, true},
	} {
		if got := lookAgain(c.changed, c.since); got != c.want {
			t.Errorf("lookAgain(changed %v, %v since the last look) = %v, want %v", c.changed, c.since, got, c.want)
		}
	}
}
