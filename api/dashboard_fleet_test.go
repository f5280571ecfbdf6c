package api_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// pushReport posts a downstream's fleet report to the env's node, as a
// relay or edge does up its sync link.
func (e *env) pushReport(syncToken string, seq int64, entries ...federation.ReportEntry) {
	e.t.Helper()
	body := federation.ReportPush{V: 1, Node: entries[0].Node, Tier: "edge", Seq: seq, Entries: entries}
	e.want(e.request(http.MethodPost, "/v1/sync/report", "Bearer "+syncToken, body), http.StatusNoContent, nil)
}

// checkIn registers a machine on the edge tier and checks it in with state.
func (e *env) checkIn(rawID string, state catalog.MachineState) {
	e.t.Helper()
	mt := e.machine("edge", rawID)
	e.want(e.request(http.MethodPost, "/v1/client/checkin", mt, map[string]any{"state": state, "kernel": testKernel,
		"arch": testArch, "patch_version": "107.1", "client_version": "0.2.0"}), http.StatusOK, nil)
}

func (e *env) dashView(authz string) (api.DashboardView, map[string]json.RawMessage) {
	e.t.Helper()
	r := e.request(http.MethodGet, "/v1/dashboard/snapshot", authz, nil)
	var v api.DashboardView
	e.want(r, http.StatusOK, &v)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil {
		e.t.Fatal(err)
	}
	return v, raw
}

// fleetCell sums a summary's machines of one tier, data centre and state.
func fleetCell(f *api.FleetSummary, tier, dc string, state catalog.MachineState) int64 {
	var n int64
	for _, t := range f.Totals {
		if t.Tier == tier && t.DC == dc && t.State == state {
			n += t.Machines
		}
	}
	return n
}

// The view carries the body of GET /v1/admin/reports/summary: this node's
// own machines and its downstreams' reports, each node with its as-of
// time, and no longer calls the fleet unavailable.
func TestDashboardViewCarriesTheFleetSummary(t *testing.T) {
	e := newEnv(t)
	e.checkIn("fleet-machine-000001", catalog.StateApplied)
	e.checkIn("fleet-machine-000002", catalog.StateApplied)
	e.checkIn("fleet-machine-000003", catalog.StateApplyFailed)
	sync, _ := e.token("sync", "edge", "edge-x")
	asOf := e.clock.Now().Add(-30 * time.Second).UTC()
	e.pushReport(sync, 1, federation.ReportEntry{Node: "edge-x", DC: "dc-x", AsOf: asOf, Counts: []federation.ReportCount{
		{Kernel: testKernel, PatchVersion: "107.1", State: catalog.StateApplied, Machines: 40},
		{Kernel: testKernel, PatchVersion: "", State: catalog.StateUnapplied, Machines: 2},
		{Kernel: "6.1.0-18-amd64", PatchVersion: "3.1", State: catalog.StateApplied, Machines: 7},
	}})

	v, _ := e.dashView(e.admin)
	if v.Fleet == nil || v.FleetError != "" {
		t.Fatalf("fleet = %+v, error %q; want the summary", v.Fleet, v.FleetError)
	}
	var want struct {
		Machines int64
		Totals   []api.FleetTotal
	}
	e.want(e.request(http.MethodGet, "/v1/admin/reports/summary", e.admin, nil), http.StatusOK, &want)
	// The view sums the endpoint's totals over kernels and patch
	// versions: one row per tier, data centre and state.
	if v.Fleet.Machines != 52 || want.Machines != 52 || len(want.Totals) != 5 || len(v.Fleet.Totals) != 4 {
		t.Errorf("view: %d machines in %d totals; the summary endpoint: %d in %d; want 52 in 4 and 52 in 5",
			v.Fleet.Machines, len(v.Fleet.Totals), want.Machines, len(want.Totals))
	}
	for _, tot := range v.Fleet.Totals {
		if tot.Kernel != "" || tot.PatchVersion != "" {
			t.Errorf("view total %+v names a kernel or version; want them summed away", tot)
		}
	}
	for _, c := range []struct {
		dc    string
		state catalog.MachineState
		want  int64
	}{
		{"", catalog.StateApplied, 2},
		{"", catalog.StateApplyFailed, 1},
		{"dc-x", catalog.StateApplied, 47},
		{"dc-x", catalog.StateUnapplied, 2},
		{"dc-x", catalog.StateApplyFailed, 0},
	} {
		if got := fleetCell(v.Fleet, "edge", c.dc, c.state); got != c.want {
			t.Errorf("edge tier, dc %q, %s: %d machines, want %d", c.dc, c.state, got, c.want)
		}
	}
	nodes := map[string]api.FleetNode{}
	for _, n := range v.Fleet.Nodes {
		nodes[n.Node] = n
	}
	if n, ok := nodes["edge-x"]; !ok || !n.AsOf.Equal(asOf) || n.DC != "dc-x" || n.Received.IsZero() {
		t.Errorf("edge-x in nodes = %+v (present %v), want dc-x as of %v, with the time received", n, ok, asOf)
	}
	if n, ok := nodes["node-a"]; !ok || !n.AsOf.Equal(e.clock.Now()) {
		t.Errorf("node-a in nodes = %+v (present %v), want its own figures as of now %v", n, ok, e.clock.Now())
	}
	for _, u := range v.Unavailable {
		if u == "fleet" {
			t.Errorf("unavailable = %v; the fleet panel is offered", v.Unavailable)
		}
	}
}

// The fleet is totalled at most every 2 s of the node's clock however
// often the view is asked for; a report that arrives shows after that.
func TestDashboardFleetIsTotalledAtMostEveryTwoSeconds(t *testing.T) {
	e := newEnv(t)
	sync, _ := e.token("sync", "edge", "edge-x")
	entry := func(n int64) federation.ReportEntry {
		return federation.ReportEntry{Node: "edge-x", DC: "dc-x", AsOf: e.clock.Now().UTC(),
			Counts: []federation.ReportCount{{Kernel: testKernel, PatchVersion: "107.1", State: catalog.StateApplied, Machines: n}}}
	}
	e.pushReport(sync, 1, entry(3))
	if v, _ := e.dashView(e.admin); v.Fleet == nil || v.Fleet.Machines != 3 {
		t.Fatalf("fleet = %+v, want 3 machines", v.Fleet)
	}
	e.pushReport(sync, 2, entry(5))
	before := e.storeCalls("FleetSummary")
	e.clock.Advance(time.Second) // past the view's 500 ms, not the fleet's 2 s
	if v, _ := e.dashView(e.admin); v.Fleet == nil || v.Fleet.Machines != 3 {
		t.Errorf("1 s later: fleet = %+v, want the 3 machines totalled before", v.Fleet)
	}
	if n := e.storeCalls("FleetSummary") - before; n != 0 {
		t.Errorf("1 s later the view totalled the fleet %d times, want 0", n)
	}
	e.clock.Advance(1500 * time.Millisecond)
	if v, _ := e.dashView(e.admin); v.Fleet == nil || v.Fleet.Machines != 5 {
		t.Errorf("2.5 s later: fleet = %+v, want the 5 machines of the new report", v.Fleet)
	}
}

// Fleet reports are admin data: with public reads on, an anonymous reader
// gets the rest of the view, in the snapshot and the stream, but no fleet;
// an admin still gets it.
func TestDashboardShowsTheFleetToAdminsOnly(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.Dashboard.PublicRead = true })
	e.checkIn("fleet-machine-000001", catalog.StateApplied)
	if v, _ := e.dashView(e.admin); v.Fleet == nil || v.Fleet.Machines != 1 {
		t.Fatalf("admin: fleet = %+v, want 1 machine", v.Fleet)
	}
	v, raw := e.dashView("")
	if _, ok := raw["fleet"]; ok || v.User != "" {
		t.Errorf("anonymous snapshot: user %q, fleet %s; want no fleet", v.User, raw["fleet"])
	}
	r := e.request(http.MethodGet, "/v1/dashboard/events?limit=1", "", nil)
	e.want(r, http.StatusOK, nil)
	sc := bufio.NewScanner(strings.NewReader(string(r.body)))
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		n++
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			t.Fatal(err)
		}
		if _, ok := m["topology"]; !ok {
			t.Errorf("anonymous event without its topology: %s", data)
		}
		if f, ok := m["fleet"]; ok {
			t.Errorf("anonymous event carries the fleet: %s", f)
		}
	}
	if n != 1 {
		t.Errorf("limit=1 streamed %d views, want 1", n)
	}
}
