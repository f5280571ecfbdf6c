package rollout

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

// clock is a test clock the Manager reads.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// recorder keeps the webhook events the Manager emits: it stands in for
// webhook.Dispatcher, whose delivery is tested in its own package.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) Emit(_ context.Context, event string, payload any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := payload.(WaveEvent)
	r.events = append(r.events, event+" "+ev.DC)
	return nil
}

type fixture struct {
	st    *sqlstore.Store
	m     *Manager
	clk   *clock
	hooks *recorder
	seq   int64
}

// newFixture opens a real SQLite hub store (sealing with a real hub key)
// with a patch of version 107.2 on tier edge, and a Manager at data
// centre dc-hub that also knows dc-eu-1 and dc-us-1.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	st, err := sqlstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "s.db"), sqlstore.Options{Sealer: federation.Sealer{Key: priv}, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, v := range []string{"107.1", "107.2"} {
		sum := sha256.Sum256([]byte(v))
		if _, err := st.AddPatch(t.Context(), catalog.Patch{Digest: "sha256:" + hex.EncodeToString(sum[:]),
			Kernel: "5.15.0-107.117-generic", Arch: "x86_64", Version: v, Size: 10}); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{st: st, clk: clk, hooks: &recorder{}}
	f.m = New(Config{Store: st, Node: "hub", DC: "dc-hub", Now: clk.now, Emit: f.hooks,
		KnownDCs: func(context.Context) ([]string, error) { return []string{"dc-eu-1", "dc-us-1"}, nil }})
	return f
}

// report replaces what the fleet says of dc: machines reporting version,
// failed of them apply-failed.
func (f *fixture) report(t *testing.T, dc, version string, machines, failed int64) {
	t.Helper()
	f.seq++
	var counts []store.FleetCount
	if machines-failed > 0 {
		counts = append(counts, store.FleetCount{Kernel: "5.15.0-107.117-generic", PatchVersion: version, State: catalog.StateApplied, Machines: machines - failed})
	}
	if failed > 0 {
		counts = append(counts, store.FleetCount{Kernel: "5.15.0-107.117-generic", PatchVersion: version, State: catalog.StateApplyFailed, Machines: failed})
	}
	err := f.st.PutFleetReport(t.Context(), store.FleetPush{Tier: "edge", TokenID: tokenFor(dc), Node: "edge-" + dc, Seq: f.seq,
		Entries: []store.FleetEntry{{Node: "edge-" + dc, DC: dc, AsOf: f.clk.now(), Counts: counts}}})
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) tick(t *testing.T) catalog.Rollout {
	t.Helper()
	if err := f.m.Tick(t.Context()); err != nil {
		t.Fatalf("Tick: %v", err)
	}
	rs, err := f.st.ListRollouts(t.Context(), "edge")
	if err != nil || len(rs) == 0 {
		t.Fatalf("ListRollouts: %v %v", rs, err)
	}
	return rs[0].Rollout
}

func TestCreateRefusesBadPlansAndChangesNothing(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	head, _ := f.st.Head(ctx)
	for _, tc := range []struct {
		name string
		plan Plan
		want error // nil: an InvalidError
	}{
		{"a malformed spec", Plan{Tier: "edge", Version: "107.2", Waves: "dc-hub"}, nil},
		{"an unknown data centre", Plan{Tier: "edge", Version: "107.2", Waves: "dc-hub:0s,dc-mars-*:1h"}, nil},
		{"a bad version", Plan{Tier: "edge", Version: "v2", Waves: "dc-hub:0s"}, nil},
		{"a bad gate", Plan{Tier: "edge", Version: "107.2", Waves: "dc-hub:0s", Gate: &catalog.Gate{MaxFailedPercent: 0}}, nil},
		{"no patch of the version", Plan{Tier: "edge", Version: "107.9", Waves: "dc-hub:0s"}, catalog.ErrNotFound},
		{"no patch on the tier", Plan{Tier: "stable", Version: "107.2", Waves: "dc-hub:0s"}, catalog.ErrNotFound},
	} {
		_, err := f.m.Create(ctx, tc.plan)
		var ie *catalog.InvalidError
		if (tc.want == nil && !errors.As(err, &ie)) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: want %v, got %v", tc.name, tc.want, err)
		}
	}
	if h, _ := f.st.Head(ctx); h != head {
		t.Errorf("refused plans logged %d events", h-head)
	}
	if _, err := f.m.Create(ctx, Plan{Tier: "edge", Version: "107.2", Waves: "dc-hub:0s"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Create(ctx, Plan{Tier: "edge", Version: "107.1", Waves: "dc-hub:0s"}); !errors.Is(err, catalog.ErrConflict) {
		t.Errorf("a second live rollout of the tier: want ErrConflict, got %v", err)
	}
}

// The runner opens waves in order as their delays pass and the gate
// holds for the soak, halts at a failed gate with the reason, goes on
// after a resume and completes; webhooks follow each opening and halt.
func TestRunnerOpensWavesHaltsResumesCompletes(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	g := catalog.Gate{MaxFailedPercent: 10, MinReporting: 2, SoakSeconds: 600}
	r, err := f.m.Create(ctx, Plan{Tier: "edge", Version: "107.2", Waves: "dc-hub:0s,dc-eu-*:1h,dc-us-*:1h", Gate: &g})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Opened) != 1 || r.State != catalog.RolloutActive {
		t.Fatalf("created: want the 0s wave open, got %+v", r)
	}
	f.clk.add(2 * time.Hour)
	if r = f.tick(t); len(r.Opened) != 1 {
		t.Fatalf("nobody reporting: want 1 wave open, got %d", len(r.Opened))
	}
	f.report(t, "dc-hub", "107.2", 1, 0)
	f.report(t, "dc-us-1", "107.2", 50, 50) // not in an open wave: not counted
	if r = f.tick(t); len(r.Opened) != 1 || r.State != catalog.RolloutActive {
		t.Fatalf("1 of min 2 reporting: want waiting at 1 wave, got %d %s", len(r.Opened), r.State)
	}
	f.report(t, "dc-hub", "107.2", 20, 1)
	f.tick(t) // the gate starts to hold now
	f.clk.add(5 * time.Minute)
	if r = f.tick(t); len(r.Opened) != 1 {
		t.Fatalf("within the soak: want 1 wave open, got %d", len(r.Opened))
	}
	f.clk.add(6 * time.Minute)
	if r = f.tick(t); len(r.Opened) != 2 {
		t.Fatalf("after the soak: want the eu wave open, got %d (%s %q)", len(r.Opened), r.State, r.Reason)
	}
	// eu fails: halt, with why.
	f.report(t, "dc-eu-1", "107.2", 10, 5)
	if r = f.tick(t); r.State != catalog.RolloutHalted || !strings.Contains(r.Reason, "6 of 30 machines") {
		t.Fatalf("want halted naming 6 of 30 failed, got %s %q", r.State, r.Reason)
	}
	f.clk.add(3 * time.Hour)
	if r = f.tick(t); r.State != catalog.RolloutHalted || len(r.Opened) != 2 {
		t.Fatalf("halted: want it to stay at 2 waves, got %s %d", r.State, len(r.Opened))
	}
	if _, err := f.m.Halt(ctx, r.ID, ""); !errors.Is(err, catalog.ErrConflict) {
		t.Errorf("halting a halted rollout: want ErrConflict, got %v", err)
	}
	f.report(t, "dc-us-1", "107.2", 10, 0)
	if r, err = f.m.Resume(ctx, r.ID); err != nil || r.AckFailed != 6 {
		t.Fatalf("Resume: want the 6 failures accepted, got %+v, %v", r, err)
	}
	f.tick(t)
	f.clk.add(11 * time.Minute)
	if r = f.tick(t); len(r.Opened) != 3 {
		t.Fatalf("resumed: want the us wave open, got %d (%s %q)", len(r.Opened), r.State, r.Reason)
	}
	f.clk.add(11 * time.Minute)
	if r = f.tick(t); r.State != catalog.RolloutCompleted {
		t.Fatalf("want completed, got %s %q", r.State, r.Reason)
	}
	want := []string{"rollout.wave_opened dc-hub", "rollout.wave_opened dc-eu-*", "rollout.halted dc-eu-*", "rollout.wave_opened dc-us-*"}
	if got := f.hooks.events; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("webhooks: want %v, got %v", want, got)
	}
	// Every state the runner went through is a sealed record of the tier.
	page, err := f.st.Feed(ctx, "edge", store.FeedPosition{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range page.Entries {
		if strings.Contains(string(e.Record), `"rollout.changed"`) {
			n++
		}
	}
	// created, 3 openings, halted, resumed, completed
	if n != 7 {
		t.Errorf("want 7 rollout.changed records in the edge feed, got %d", n)
	}
}

func TestAbortWithdrawsTheVersion(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	r, err := f.m.Create(ctx, Plan{Tier: "edge", Version: "107.2", Waves: "dc-hub:0s,dc-eu-1:1h"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err = f.m.Abort(ctx, r.ID); err != nil || r.State != catalog.RolloutAborted {
		t.Fatalf("Abort: %+v, %v", r, err)
	}
	ps, err := f.st.Patches(ctx, store.PatchFilter{Version: "107.2", IncludeWithdrawn: true})
	if err != nil || len(ps) != 1 || !ps[0].Withdrawn {
		t.Fatalf("after the abort: want 107.2 withdrawn, got %+v, %v", ps, err)
	}
	if _, err := f.m.Resume(ctx, r.ID); !errors.Is(err, catalog.ErrConflict) {
		t.Errorf("resuming an aborted rollout: want ErrConflict, got %v", err)
	}
	if _, err := f.m.Abort(ctx, "0123456789abcdef"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("aborting an unknown rollout: want ErrNotFound, got %v", err)
	}
}

// tokenFor names the sync link a data centre's reports come up.
func tokenFor(dc string) string {
	sum := sha256.Sum256([]byte(dc))
	return hex.EncodeToString(sum[:8])
}

func TestCollectorCountsByState(t *testing.T) {
	f := newFixture(t)
	if _, err := f.m.Create(t.Context(), Plan{Tier: "edge", Version: "107.2", Waves: "dc-hub:0s,dc-eu-1:1h"}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP patchmesh_rollouts Rollouts this node holds, by state (active, halted, completed, aborted).
# TYPE patchmesh_rollouts gauge
patchmesh_rollouts{state="aborted"} 0
patchmesh_rollouts{state="active"} 1
patchmesh_rollouts{state="completed"} 0
patchmesh_rollouts{state="halted"} 0
# HELP patchmesh_rollout_waves_open Waves open, summed over this node's live (active or halted) rollouts, by state.
# TYPE patchmesh_rollout_waves_open gauge
patchmesh_rollout_waves_open{state="active"} 1
patchmesh_rollout_waves_open{state="halted"} 0
`
	if err := testutil.CollectAndCompare(NewCollector(f.st), strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
