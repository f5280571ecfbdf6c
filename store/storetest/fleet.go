package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// RunFleet is the contract of the fleet part of a store: the mesh key, report
// pushes and the listings over a node's subtree.
func RunFleet(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"MeshKeyKeepsTheLatestIssued", testMeshKey},
		{"FleetReportReplacesAndRefusesReplays", testFleetReport},
		{"FleetMachinesOneRowPerMachinePaged", testFleetMachines},
		{"FleetSummaryAddsRowsAndCountsOnce", testFleetSummary},
		{"PurgeFleetDropsOldCheckInsAndReports", testPurgeFleet},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

func meshKey(secret byte, issued time.Time) store.MeshKey {
	b := make([]byte, 32)
	for i := range b {
		b[i] = secret
	}
	return store.MeshKey{ID: fmt.Sprintf("%016x", secret), Secret: b, Record: []byte(`{"k":1}`), Sig: []byte("sig"), Issued: issued}
}

func testMeshKey(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.MeshKey(ctx); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("MeshKey on a new store: want ErrNotFound, got %v", err)
	}
	at := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	if err := s.PutMeshKey(ctx, meshKey(1, at)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMeshKey(ctx, meshKey(2, at.Add(-time.Hour))); !errors.Is(err, catalog.ErrConflict) {
		t.Fatalf("PutMeshKey of an older statement: want ErrConflict, got %v", err)
	}
	got, err := s.MeshKey(ctx)
	if err != nil || got.ID != meshKey(1, at).ID || !got.Issued.Equal(at) {
		t.Fatalf("MeshKey after a refused older one: want key 1 issued %v, got %+v, %v", at, got, err)
	}
	if err := s.PutMeshKey(ctx, meshKey(3, at.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	if got, err := s.MeshKey(ctx); err != nil || got.Secret[0] != 3 || string(got.Record) != `{"k":1}` {
		t.Fatalf("MeshKey after a newer one: want key 3, got %+v, %v", got, err)
	}
	if err := s.PutMeshKey(ctx, store.MeshKey{ID: "x", Secret: []byte("short"), Issued: at}); err == nil {
		t.Fatal("PutMeshKey of a short secret: want an error, got nil")
	}
}

func fleetMachine(label string, node string, state catalog.MachineState, seen time.Time) store.FleetMachine {
	return store.FleetMachine{ID: machineID(label), Node: node, DC: "dc-" + node, Kernel: kernelA, Arch: x86,
		State: state, PatchVersion: "107.1", LastSeen: seen}
}

func entry(node string, asOf time.Time, rows bool, ms ...store.FleetMachine) store.FleetEntry {
	e := store.FleetEntry{Node: node, DC: "dc-" + node, AsOf: asOf, HasMachines: rows, Machines: ms}
	counts := map[catalog.MachineState]int64{}
	for _, m := range ms {
		counts[m.State]++
	}
	for st, n := range counts {
		e.Counts = append(e.Counts, store.FleetCount{Kernel: kernelA, PatchVersion: "107.1", State: st, Machines: n})
	}
	slices.SortFunc(e.Counts, func(a, b store.FleetCount) int { return cmpString(string(a.State), string(b.State)) })
	return e
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func testFleetReport(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	first := store.FleetPush{Tier: "edge", TokenID: "a000000000000001", Node: "relay-a", Seq: 10, Entries: []store.FleetEntry{
		entry("relay-a", at, true, fleetMachine("m1", "relay-a", catalog.StateApplied, at)),
		entry("edge-a1", at, true, fleetMachine("m2", "edge-a1", catalog.StateApplied, at), fleetMachine("m3", "edge-a1", catalog.StateApplyFailed, at)),
	}}
	if err := s.PutFleetReport(ctx, first); err != nil {
		t.Fatal(err)
	}
	replay := first
	replay.Entries = []store.FleetEntry{entry("relay-a", at.Add(time.Hour), true)}
	for _, seq := range []int64{10, 9} {
		replay.Seq = seq
		if err := s.PutFleetReport(ctx, replay); !errors.Is(err, catalog.ErrConflict) {
			t.Fatalf("PutFleetReport with seq %d after 10: want ErrConflict, got %v", seq, err)
		}
	}
	es, err := s.FleetEntries(ctx, "edge", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Node != "edge-a1" || len(es[0].Machines) != 2 || es[1].Node != "relay-a" || !es[1].AsOf.Equal(at) {
		t.Fatalf("FleetEntries after a refused replay: want edge-a1 (2 machines) and relay-a as of %v, got %+v", at, es)
	}
	if es[0].Via != first.TokenID || len(es[0].Counts) != 2 || es[0].Counts[0].Machines != 1 {
		t.Errorf("FleetEntries edge-a1: want via %s and two counts of 1, got %+v", first.TokenID, es[0])
	}
	if other, err := s.FleetEntries(ctx, "beta", false); err != nil || len(other) != 0 {
		t.Errorf("FleetEntries of another tier: want none, got %+v, %v", other, err)
	}

	// The next push of the link replaces all it said; the same node
	// reported through another link counts with its newest figures.
	next := first
	next.Seq = 11
	next.Entries = []store.FleetEntry{entry("relay-a", at.Add(time.Minute), false)}
	if err := s.PutFleetReport(ctx, next); err != nil {
		t.Fatal(err)
	}
	moved := store.FleetPush{Tier: "edge", TokenID: "a000000000000002", Node: "relay-b", Seq: 1, Entries: []store.FleetEntry{
		entry("edge-a1", at.Add(2*time.Minute), true, fleetMachine("m2", "edge-a1", catalog.StateApplied, at.Add(2*time.Minute))),
	}}
	if err := s.PutFleetReport(ctx, moved); err != nil {
		t.Fatal(err)
	}
	es, err = s.FleetEntries(ctx, "", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Node != "edge-a1" || es[0].Via != moved.TokenID || len(es[0].Machines) != 1 ||
		es[1].Node != "relay-a" || es[1].HasMachines || len(es[1].Machines) != 0 {
		t.Fatalf("FleetEntries after a replacing push and a move: want edge-a1 via %s with 1 machine, relay-a without rows; got %+v", moved.TokenID, es)
	}
}

func testFleetMachines(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	// Two machines of this node's own; m1 also reported, older, from
	// below (it moved up here), m9 only below.
	for i, label := range []string{"m1", "m2"} {
		m := machine(label, "edge", at)
		if err := s.RegisterMachine(ctx, m, machineToken(fmt.Sprintf("c00000000000000%d", i), m.ID, "edge")); err != nil {
			t.Fatal(err)
		}
	}
	push := store.FleetPush{Tier: "edge", TokenID: "a000000000000001", Node: "edge-x", Seq: 1, Entries: []store.FleetEntry{
		entry("edge-x", at, true, fleetMachine("m1", "edge-x", catalog.StateApplied, at.Add(-time.Hour)),
			fleetMachine("m9", "edge-x", catalog.StateApplyFailed, at)),
	}}
	if err := s.PutFleetReport(ctx, push); err != nil {
		t.Fatal(err)
	}
	all, err := s.FleetMachines(ctx, "self", "dc-self", store.FleetFilter{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{machineID("m1"), machineID("m2"), machineID("m9")}
	slices.Sort(want)
	var got []string
	for _, m := range all {
		got = append(got, m.ID)
		if m.ID == machineID("m1") && (m.Node != "self" || m.DC != "dc-self") {
			t.Errorf("m1: want this node's newer check-in (node self, dc-self), got %+v", m)
		}
		if m.ID == machineID("m9") && (m.Node != "edge-x" || m.State != catalog.StateApplyFailed) {
			t.Errorf("m9: want edge-x's row, got %+v", m)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("FleetMachines: want one row per machine %v, got %v", want, got)
	}
	// Pages of one, following After, give the same rows.
	var paged []string
	after := ""
	for range 10 {
		page, err := s.FleetMachines(ctx, "self", "dc-self", store.FleetFilter{After: after, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page[0].ID)
		after = page[0].ID
	}
	if !slices.Equal(paged, want) {
		t.Errorf("FleetMachines in pages of one: want %v, got %v", want, paged)
	}
	failed, err := s.FleetMachines(ctx, "self", "dc-self", store.FleetFilter{State: catalog.StateApplyFailed, DC: "dc-edge-x"})
	if err != nil || len(failed) != 1 || failed[0].ID != machineID("m9") {
		t.Errorf("FleetMachines filtered on state and dc: want m9, got %+v, %v", failed, err)
	}
}

func testFleetSummary(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	m := machine("m1", "edge", at)
	if err := s.RegisterMachine(ctx, m, machineToken("c000000000000001", m.ID, "edge")); err != nil {
		t.Fatal(err)
	}
	// With rows: m1 (moved, counted once) and m2. Without rows: a node
	// whose 3 machines are known only as a count, reported by two links
	// (the newer counts).
	counted := store.FleetEntry{Node: "edge-c", DC: "dc-c", AsOf: at, Counts: []store.FleetCount{{Kernel: kernelA, PatchVersion: "107.1", State: catalog.StateApplied, Machines: 3}}}
	older := counted
	older.AsOf = at.Add(-time.Hour)
	older.Counts = []store.FleetCount{{Kernel: kernelA, PatchVersion: "107.1", State: catalog.StateApplied, Machines: 7}}
	for i, p := range []store.FleetPush{
		{Tier: "edge", TokenID: "a000000000000001", Node: "edge-x", Seq: 1, Entries: []store.FleetEntry{
			entry("edge-x", at, true, fleetMachine("m1", "edge-x", catalog.StateApplied, at.Add(-time.Minute)),
				fleetMachine("m2", "edge-x", catalog.StateApplied, at)), counted}},
		{Tier: "edge", TokenID: "a000000000000002", Node: "edge-y", Seq: 1, Entries: []store.FleetEntry{older}},
	} {
		if err := s.PutFleetReport(ctx, p); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
	}
	ts, err := s.FleetSummary(ctx, "self", "dc-self", store.FleetFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	var total int64
	for _, x := range ts {
		got[x.DC+"/"+string(x.State)] += x.Machines
		total += x.Machines
	}
	want := map[string]int64{"dc-self/unknown": 1, "dc-edge-x/applied": 1, "dc-c/applied": 3}
	if total != 5 || len(got) != len(want) {
		t.Fatalf("FleetSummary: want %v (5 machines), got %v from %+v", want, got, ts)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("FleetSummary %s: want %d, got %d", k, n, got[k])
		}
	}
	only, err := s.FleetSummary(ctx, "self", "dc-self", store.FleetFilter{DC: "dc-c"})
	if err != nil || len(only) != 1 || only[0].Machines != 3 {
		t.Errorf("FleetSummary of dc-c: want 3 machines, got %+v, %v", only, err)
	}
}

func testPurgeFleet(t *testing.T, s store.Store) {
	ctx := t.Context()
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	old, fresh := machine("old", "edge", at.Add(-48*time.Hour)), machine("new", "edge", at)
	for i, m := range []catalog.Machine{old, fresh} {
		if err := s.RegisterMachine(ctx, m, machineToken(fmt.Sprintf("c00000000000000%d", i), m.ID, "edge")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutFleetReport(ctx, store.FleetPush{Tier: "edge", TokenID: "a000000000000001", Node: "edge-x", Seq: 1, Entries: []store.FleetEntry{
		entry("edge-x", at.Add(-48*time.Hour), true, fleetMachine("m9", "edge-x", catalog.StateApplied, at.Add(-48*time.Hour))),
		entry("edge-y", at, true, fleetMachine("m8", "edge-y", catalog.StateApplied, at)),
	}}); err != nil {
		t.Fatal(err)
	}
	machines, entries, err := s.PurgeFleet(ctx, at.Add(-24*time.Hour))
	if err != nil || machines != 1 || entries != 1 {
		t.Fatalf("PurgeFleet: want 1 machine and 1 entry, got %d, %d, %v", machines, entries, err)
	}
	if _, err := s.Machine(ctx, old.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("purged machine: want ErrNotFound, got %v", err)
	}
	if _, err := s.Token(ctx, "c000000000000000"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("purged machine's token: want ErrNotFound, got %v", err)
	}
	ms, err := s.FleetMachines(ctx, "self", "dc", store.FleetFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	want := []string{machineID("new"), machineID("m8")}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("FleetMachines after purge: want %v, got %v", want, ids)
	}
}
