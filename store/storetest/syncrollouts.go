package storetest

import (
	"bytes"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Rollout plans are sealed on the hub in the feed of their tier, one
// record per change, and every downstream keeps the latest state it
// applied, with the hub's record.

func testRollout(id, tier string) catalog.Rollout {
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	return catalog.Rollout{
		ID: id, Tier: tier, Version: "1.2", State: catalog.RolloutActive,
		Waves:   []catalog.Wave{{DC: "dc-canary"}, {DC: "eu-*", AfterSeconds: 3600, Percent: 10}},
		Gate:    catalog.Gate{MaxFailedPercent: 5, MinReporting: 1, SoakSeconds: 600},
		Opened:  []time.Time{},
		Created: at, Updated: at,
	}
}

func rolloutEv(id string) sealed {
	return sealed{Type: catalog.EventRolloutChanged, Rollout: &catalog.Rollout{ID: id}}
}

func rolloutOf(t *testing.T, s store.Store, id string) store.SignedRollout {
	t.Helper()
	sr, err := s.Rollout(t.Context(), id)
	if err != nil {
		t.Fatalf("Rollout(%s): %v", id, err)
	}
	return sr
}

func testSealRollouts(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	a := addPatch(t, hub, kernelA, x86, "1.2")
	r := testRollout("00000000000000a1", "edge")
	if err := hub.CreateRollout(ctx, r); err != nil {
		t.Fatalf("CreateRollout: %v", err)
	}
	feed := wantFeed(t, hub, "edge", ev(catalog.EventPatchAdded, a), rolloutEv(r.ID))
	if got := unseal(t, feed[1]); got.Rollout == nil || got.Rollout.Version != "1.2" || len(got.Rollout.Waves) != 2 {
		t.Errorf("sealed rollout: want %+v, got %+v", r, got.Rollout)
	}
	if sr := rolloutOf(t, hub, r.ID); !bytes.Equal(sr.Record, feed[1].Record) || sr.Rollout.State != catalog.RolloutActive {
		t.Errorf("Rollout: want the sealed record kept with the active state, got %+v", sr)
	}

	// Refusals change nothing: a second live plan of the tier, a missing
	// tier, a plan that breaks the rules, a stale or unknown update.
	h := head(t, hub)
	wantErr(t, "CreateRollout of a second live plan", hub.CreateRollout(ctx, testRollout("00000000000000a2", "edge")), catalog.ErrConflict)
	wantErr(t, "CreateRollout of a taken ID", hub.CreateRollout(ctx, testRollout(r.ID, "stable")), catalog.ErrConflict)
	wantErr(t, "CreateRollout on a missing tier", hub.CreateRollout(ctx, testRollout("00000000000000a3", "no-such")), catalog.ErrNotFound)
	bad := testRollout("00000000000000a4", "stable")
	bad.Waves = nil
	wantInvalid(t, "CreateRollout without waves", hub.CreateRollout(ctx, bad))
	next := r
	next.Opened = []time.Time{r.Created}
	next.Updated = r.Created.Add(time.Second)
	wantErr(t, "UpdateRollout from a stale state", hub.UpdateRollout(ctx, next, r.Created.Add(-time.Second)), catalog.ErrConflict)
	wantErr(t, "UpdateRollout of an unknown rollout", hub.UpdateRollout(ctx, testRollout("00000000000000a5", "edge"), r.Updated), catalog.ErrNotFound)
	wantNoEvent(t, hub, h, "refused rollout changes")

	// Each change is one more record; the latest state is what is kept.
	if err := hub.UpdateRollout(ctx, next, r.Updated); err != nil {
		t.Fatalf("UpdateRollout: %v", err)
	}
	halted := next
	halted.State, halted.Reason, halted.Updated = catalog.RolloutHalted, "gate failed", next.Updated.Add(time.Second)
	if err := hub.UpdateRollout(ctx, halted, next.Updated); err != nil {
		t.Fatalf("UpdateRollout to halted: %v", err)
	}
	feed = wantFeed(t, hub, "edge", ev(catalog.EventPatchAdded, a), rolloutEv(r.ID), rolloutEv(r.ID), rolloutEv(r.ID))
	sr := rolloutOf(t, hub, r.ID)
	if sr.Rollout.State != catalog.RolloutHalted || sr.Rollout.Reason != "gate failed" || len(sr.Rollout.Opened) != 1 ||
		!sr.Rollout.Opened[0].Equal(r.Created) || !bytes.Equal(sr.Record, feed[3].Record) {
		t.Errorf("Rollout after two updates: want halted at one open wave with the last record, got %+v", sr.Rollout)
	}
	// A halted plan is still live: no second one.
	wantErr(t, "CreateRollout beside a halted plan", hub.CreateRollout(ctx, testRollout("00000000000000a6", "edge")), catalog.ErrConflict)
	list, err := hub.ListRollouts(ctx, "edge")
	if err != nil || len(list) != 1 || list[0].Rollout.ID != r.ID {
		t.Errorf("ListRollouts(edge): want %s, got %+v, %v", r.ID, list, err)
	}
	if list, err := hub.ListRollouts(ctx, "stable"); err != nil || len(list) != 0 {
		t.Errorf("ListRollouts(stable): want none, got %+v, %v", list, err)
	}
	// Once it ends, the tier takes a new plan.
	done := halted
	done.State, done.Updated = catalog.RolloutAborted, halted.Updated.Add(time.Second)
	if err := hub.UpdateRollout(ctx, done, halted.Updated); err != nil {
		t.Fatalf("UpdateRollout to aborted: %v", err)
	}
	if err := hub.CreateRollout(ctx, testRollout("00000000000000a7", "edge")); err != nil {
		t.Fatalf("CreateRollout after the abort: %v", err)
	}
	if list, err := hub.ListRollouts(ctx, ""); err != nil || len(list) != 2 {
		t.Errorf("ListRollouts(all): want 2, got %+v, %v", list, err)
	}
}

func testApplySyncedRollouts(t *testing.T, open OpenSync) {
	hub := open(t, &testSealer{}, nil)
	down := open(t, nil, nil)
	ctx := t.Context()
	r := testRollout("00000000000000b1", "edge")
	if err := hub.CreateRollout(ctx, r); err != nil {
		t.Fatalf("CreateRollout: %v", err)
	}
	cur := syncRound(t, hub, down, "edge", cursorOf(t, down, "stable"))
	sr := rolloutOf(t, down, r.ID)
	// Kept on the local tier its link feeds, with the hub's bytes.
	if sr.Rollout.Tier != "stable" || sr.Rollout.State != catalog.RolloutActive || len(sr.Record) == 0 || len(sr.Sig) == 0 {
		t.Errorf("synced rollout: want active on stable with the record, got %+v", sr)
	}
	next := r
	next.Opened = []time.Time{r.Created}
	next.Updated = r.Created.Add(time.Second)
	if err := hub.UpdateRollout(ctx, next, r.Updated); err != nil {
		t.Fatal(err)
	}
	syncRound(t, hub, down, "edge", cur)
	sr = rolloutOf(t, down, r.ID)
	feed := feedAll(t, hub, "edge")
	if len(sr.Rollout.Opened) != 1 || !bytes.Equal(sr.Record, feed.Entries[len(feed.Entries)-1].Record) {
		t.Errorf("synced update: want one open wave and the newest record, got %+v", sr.Rollout)
	}
	// The downstream serves the records on, as its own downstreams need.
	if got := feedAll(t, down, "stable"); len(got.Entries) != 2 || !bytes.Equal(got.Entries[1].Record, sr.Record) {
		t.Errorf("Feed(stable) downstream: want the two hub records, got %d entries", len(got.Entries))
	}
	if list, err := down.ListRollouts(ctx, "stable"); err != nil || len(list) != 1 {
		t.Errorf("ListRollouts(stable) downstream: want 1, got %+v, %v", list, err)
	}
	// A second local tier fed from the same hub tier holds it too, and
	// the first keeps it: each tier's machines are held back.
	syncRound(t, hub, down, "edge", cursorOf(t, down, "beta"))
	for _, tier := range []string{"stable", "beta"} {
		list, err := down.ListRollouts(ctx, tier)
		if err != nil || len(list) != 1 || list[0].Rollout.Tier != tier || len(list[0].Rollout.Opened) != 1 {
			t.Errorf("ListRollouts(%s) with two links from one hub tier: want the rollout there, got %+v, %v", tier, list, err)
		}
	}
}

func testApplySyncedRolloutRefusals(t *testing.T, open OpenSync) {
	ctx := t.Context()
	down := open(t, nil, nil)
	sealer := &testSealer{}
	for _, tc := range []struct {
		name string
		edit func(ev *store.SyncedEvent)
	}{
		{"no rollout", func(ev *store.SyncedEvent) { ev.Rollout = nil }},
		{"no waves", func(ev *store.SyncedEvent) { ev.Rollout.Waves = nil }},
		{"an unknown state", func(ev *store.SyncedEvent) { ev.Rollout.State = "paused" }},
		{"a bad ID", func(ev *store.SyncedEvent) { ev.Rollout.ID = "x" }},
		{"a node as well", func(ev *store.SyncedEvent) {
			n := testNode("edge-a1", "edge")
			ev.Node = &n
		}},
		{"a patch event carrying a rollout", func(ev *store.SyncedEvent) { ev.Type = catalog.EventPatchWithdrawn }},
	} {
		r := testRollout("00000000000000c1", "edge")
		e := sealedEvent(t, sealer, store.SealRequest{Tier: "edge", TierSeq: 1, Type: catalog.EventRolloutChanged, Rollout: &r})
		rr := *e.Rollout
		e.Rollout = &rr
		tc.edit(&e)
		h := head(t, down)
		err := down.ApplySynced(ctx, store.Cursor{Tier: "edge"},
			store.Cursor{Tier: "edge", HubTier: "edge", HubSeq: 1, Upstream: upstreamURL, UpstreamSeq: 1},
			[]store.SyncedEvent{e})
		wantInvalid(t, "ApplySynced of a rollout event with "+tc.name, err)
		wantNoEvent(t, down, h, "ApplySynced of a rollout event with "+tc.name)
	}
	if list, err := down.ListRollouts(ctx, ""); err != nil || len(list) != 0 {
		t.Errorf("ListRollouts after refusals: want none, got %+v, %v", list, err)
	}
}
