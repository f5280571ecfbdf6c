package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// `report machines` follows every page to the end, whatever the page
// size, and prints CSV or JSON; `report summary` totals the same machines.
func TestAdminReportPagesToTheEnd(t *testing.T) {
	var st store.Store
	n := newTestNode(t, func(c *api.Config) { st = c.Store; c.Info.Node, c.Info.DC = "hub-1", "dc-west" })
	seen := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	var want []string
	for i := range 5 {
		id := fmt.Sprintf("%064x", 100+i)
		want = append(want, id)
		m := catalog.Machine{ID: id, Tier: "edge", Kernel: "5.15.0-107.117-generic", Arch: "x86_64", State: catalog.StateApplied,
			PatchVersion: "107.1", ClientVersion: "1.0.0", Registered: seen, LastSeen: seen}
		tok := catalog.Token{ID: fmt.Sprintf("%016x", 0xd00+i), Kind: catalog.TokenMachine, Tier: "edge", Name: id, MachineID: id,
			Hash: make([]byte, 32), Created: seen}
		if err := st.RegisterMachine(t.Context(), m, tok); err != nil {
			t.Fatal(err)
		}
		if err := st.CheckIn(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	n.login()
	old := reportPage
	reportPage = 2
	t.Cleanup(func() { reportPage = old })

	r := n.mustAdmin("report", "machines", "--output", "csv")
	rows, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	if err != nil {
		t.Fatalf("CSV output: %v\n%s", err, r.stdout)
	}
	if len(rows) != 6 || rows[0][0] != "id" {
		t.Fatalf("CSV: want a header and 5 rows, got %d rows:\n%s", len(rows), r.stdout)
	}
	var got []string
	for _, row := range rows[1:] {
		got = append(got, row[0])
		if row[2] != "hub-1" || row[3] != "dc-west" || row[6] != "applied" {
			t.Errorf("CSV row %v: want node hub-1, dc-west, applied", row)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("CSV machines over pages of 2: want %v, got %v", want, got)
	}
	if r := n.admin("", "report", "machines", "--output", "json", "--state", "apply-failed"); r.code != exitOK ||
		!strings.Contains(r.stdout, `"machines": []`) {
		t.Errorf("JSON of no machine: want exit 0 and an empty list, got %d: %s %s", r.code, r.stdout, r.stderr)
	}

	r = n.mustAdmin("report", "summary", "--output", "json", "--tier", "edge")
	var sum struct{ Machines int64 }
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || sum.Machines != 5 {
		t.Errorf("summary: want 5 machines, got %+v (%v): %s", sum, err, r.stdout)
	}
	if r := n.admin("", "report", "summary", "--kernel", "linux"); r.code != exitInvalid {
		t.Errorf("summary with a bad kernel: want exit %d, got %d: %s", exitInvalid, r.code, r.stderr)
	}
	if r := n.admin("", "tiers", "list", "--output", "csv"); r.code != exitUsage {
		t.Errorf("--output csv on tiers list: want usage exit %d, got %d", exitUsage, r.code)
	}
}
