package storetest

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// A machine revoked at the hub is refused at every node: the hub seals
// the revocation on every tier, as the machine's ID tells it nothing of
// where the machine registers, and every node applies it by ID.

var allTiers = []string{"edge", "beta", "candidate", "stable"}

func machineEv(typ catalog.EventType, id string) sealed {
	return sealed{Type: typ, Machine: &catalog.MachineRevocation{ID: id}}
}

// wantMachineRecords checks that every tier's feed ends with the given
// machine events, in order, and returns the revocations they carry, by
// tier.
func wantMachineRecords(t *testing.T, s store.Store, want ...sealed) map[string][]catalog.MachineRevocation {
	t.Helper()
	got := map[string][]catalog.MachineRevocation{}
	for _, tier := range allTiers {
		entries := feedAll(t, s, tier).Entries
		if len(entries) < len(want) {
			t.Fatalf("Feed(%s): want at least %d entries, got %d", tier, len(want), len(entries))
		}
		for i, e := range entries[len(entries)-len(want):] {
			r := unseal(t, e)
			if r.Tier != tier || r.Type != want[i].Type || r.subject() != want[i].subject() {
				t.Errorf("Feed(%s) machine entry %d: want %s of %s, got %s of %s on %q", tier, i, want[i].Type, want[i].subject(), r.Type, r.subject(), r.Tier)
				continue
			}
			got[tier] = append(got[tier], *r.Machine)
		}
	}
	return got
}

func revocationOf(t *testing.T, s store.Store, id string) catalog.MachineRevocation {
	t.Helper()
	rev, err := s.MachineRevocation(t.Context(), id)
	if err != nil {
		t.Fatalf("MachineRevocation(%s): %v", id[:8], err)
	}
	return rev
}

// wantRefused checks that registering m is refused as revoked and stores
// no token.
func wantRefused(t *testing.T, s store.Store, what string, m catalog.Machine, tokID string) {
	t.Helper()
	err := s.RegisterMachine(t.Context(), m, machineToken(tokID, m.ID, m.Tier))
	if !errors.Is(err, catalog.ErrRevoked) {
		t.Errorf("%s: RegisterMachine want ErrRevoked, got %v", what, err)
	}
	if _, err := s.Token(t.Context(), tokID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("%s: the refused registration's token: want ErrNotFound, got %v", what, err)
	}
}

func testSealMachineRevocations(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	seen := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	m, bystander := machine("hub-revoked", "edge", seen), machine("hub-bystander", "edge", seen)
	first := register(t, hub, m, "a100000000000001")
	kept := register(t, hub, bystander, "a100000000000002")

	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	got, err := hub.RevokeMachine(ctx, m.ID, at)
	if err != nil {
		t.Fatalf("RevokeMachine at the hub: %v", err)
	}
	want := catalog.MachineRevocation{ID: m.ID, Revoked: at}
	if !got.Mesh || got.Revocation != want || !slices.Equal(got.Tiers, allTiers) || got.Machine == nil || !got.Machine.Revoked.Equal(at) {
		t.Errorf("RevokeMachine at the hub: want mesh-wide %+v on %v with the machine revoked, got %+v", want, allTiers, got)
	}
	wantRevoked(t, hub, "the hub's machine after its revocation", first.ID, true)
	wantRevoked(t, hub, "a bystander", kept.ID, false)
	for tier, revs := range wantMachineRecords(t, hub, machineEv(catalog.EventMachineRevoked, m.ID)) {
		if revs[0] != want {
			t.Errorf("Feed(%s): want the sealed revocation %+v, got %+v", tier, want, revs[0])
		}
	}

	// An ID the hub never saw: the machine registered at an edge.
	unseen := machine("registered-elsewhere", "stable", seen)
	got, err = hub.RevokeMachine(ctx, unseen.ID, at)
	if err != nil || !got.Mesh || got.Machine != nil || got.Revocation.ID != unseen.ID || len(got.Tiers) != len(allTiers) {
		t.Fatalf("RevokeMachine at the hub of an ID it never saw: want it recorded and sealed, no machine; got %+v, %v", got, err)
	}
	wantMachineRecords(t, hub, machineEv(catalog.EventMachineRevoked, m.ID), machineEv(catalog.EventMachineRevoked, unseen.ID))
	wantRefused(t, hub, "an ID revoked at the hub before it registered there", unseen, "a100000000000003")
	if _, err := hub.Machine(ctx, unseen.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("a refused registration: want no machine stored, got %v", err)
	}

	// Again: the first time stays, and it is sealed again on every tier
	// (one added since included).
	if _, err := hub.AddTier(ctx, "canary"); err != nil {
		t.Fatal(err)
	}
	got, err = hub.RevokeMachine(ctx, m.ID, at.Add(time.Hour))
	if err != nil || got.Revocation != want || !slices.Contains(got.Tiers, "canary") {
		t.Errorf("RevokeMachine again: want %+v kept, sealed on canary too, got %+v, %v", want, got, err)
	}

	// Deleting at the hub forgets the machine and lifts the revocation.
	del, err := hub.DeleteMachine(ctx, m.ID)
	if err != nil || !del.Forgotten || del.Lifted == nil || del.Lifted.Revoked != at || del.Lifted.Lifted.IsZero() || !slices.Contains(del.Tiers, "canary") {
		t.Fatalf("DeleteMachine at the hub: want the machine forgotten and its revocation at %v lifted on every tier, got %+v, %v", at, del, err)
	}
	revs := wantMachineRecords(t, hub, machineEv(catalog.EventMachineRevoked, m.ID), machineEv(catalog.EventMachineDeleted, m.ID))
	if d := revs["edge"][1]; d.Revoked != at || d.Lifted.IsZero() {
		t.Errorf("sealed machine.deleted: want the revocation at %v lifted, got %+v", at, d)
	}
	if rev := revocationOf(t, hub, m.ID); rev.Lifted.IsZero() {
		t.Errorf("MachineRevocation after DeleteMachine: want lifted, got %+v", rev)
	}
	register(t, hub, m, "a100000000000004")
	// The ID never registered: deleting lifts the revocation alone.
	if del, err := hub.DeleteMachine(ctx, unseen.ID); err != nil || del.Forgotten || del.Lifted == nil {
		t.Errorf("DeleteMachine at the hub of a revoked ID never registered: want the revocation lifted only, got %+v, %v", del, err)
	}
	register(t, hub, unseen, "a100000000000005")
	if _, err := hub.DeleteMachine(ctx, machineID("nobody")); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("DeleteMachine of an ID neither registered nor revoked: want ErrNotFound, got %v", err)
	}

	// Revoked again after the lift, at a clock that has not moved: the
	// new revocation is strictly later than the one lifted, so a node
	// can tell it from a late copy of the old one.
	got, err = hub.RevokeMachine(ctx, m.ID, at)
	if err != nil || !got.Revocation.Revoked.After(at) || !got.Revocation.Lifted.IsZero() {
		t.Errorf("RevokeMachine after a lift: want a standing revocation later than %v, got %+v, %v", at, got, err)
	}
}

func testSealMachineRevocationFailure(t *testing.T, open OpenSync) {
	ctx := t.Context()
	sealer := &testSealer{}
	hub := open(t, sealer, nil)
	m := machine("seal-fails", "edge", time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
	tok := register(t, hub, m, "a200000000000001")
	h := head(t, hub)
	sealer.setFail(errors.New("hsm unplugged"))
	if _, err := hub.RevokeMachine(ctx, m.ID, time.Now()); err == nil {
		t.Fatal("RevokeMachine with a failing sealer: want an error")
	}
	wantNoEvent(t, hub, h, "a failed machine revocation")
	wantRevoked(t, hub, "a machine whose revocation failed to seal", tok.ID, false)
	if _, err := hub.MachineRevocation(ctx, m.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("MachineRevocation after a failed seal: want ErrNotFound, got %v", err)
	}
}

func testApplySyncedMachines(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	down := open(t, nil, nil)
	// The downstream serves two tiers, fed from two hub tiers: it receives
	// every machine record twice, in any interleaving.
	stable := syncRound(t, hub, down, "edge", cursorOf(t, down, "stable"))
	cand := syncRound(t, hub, down, "beta", cursorOf(t, down, "candidate"))

	seen := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	m, bystander := machine("edge-registered", "stable", seen), machine("edge-bystander", "stable", seen)
	first := register(t, down, m, "a300000000000001")
	kept := register(t, down, bystander, "a300000000000002")
	never := machine("never-here", "stable", seen)

	// The hub revokes a machine it never saw, and one that never came here.
	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, id := range []string{m.ID, never.ID} {
		if _, err := hub.RevokeMachine(ctx, id, at); err != nil {
			t.Fatalf("RevokeMachine at the hub: %v", err)
		}
	}
	stable = syncRound(t, hub, down, "edge", stable)
	if got, err := down.Machine(ctx, m.ID); err != nil || !got.Revoked.Equal(at) {
		t.Errorf("downstream machine after the hub's revocation: want revoked at %v, got %+v, %v", at, got, err)
	}
	wantRevoked(t, down, "downstream machine token after the hub's revocation", first.ID, true)
	wantRevoked(t, down, "a downstream bystander", kept.ID, false)
	if rev := revocationOf(t, down, never.ID); rev.Revoked != at || !rev.Lifted.IsZero() {
		t.Errorf("MachineRevocation downstream of an ID never here: want revoked at %v, got %+v", at, rev)
	}
	wantRefused(t, down, "a machine revoked at the hub, registering again", m, "a300000000000003")
	wantRefused(t, down, "a machine revoked at the hub, registering here first", never, "a300000000000004")

	// Relayed unchanged: the downstream's feed carries the hub's bytes.
	hubEdge, downStable := feedAll(t, hub, "edge").Entries, feedAll(t, down, "stable").Entries
	if len(hubEdge) != len(downStable) {
		t.Fatalf("downstream feed: want %d entries, as the hub's, got %d", len(hubEdge), len(downStable))
	}
	for i := range hubEdge {
		if !bytes.Equal(hubEdge[i].Record, downStable[i].Record) || !bytes.Equal(hubEdge[i].Sig, downStable[i].Sig) {
			t.Errorf("downstream feed entry %d: want the hub's record and signature unchanged", i)
		}
	}

	// The same records through the other tier change nothing, but are
	// logged, to keep that tier's sequence whole for its downstreams.
	h := head(t, down)
	cand = syncRound(t, hub, down, "beta", cand)
	if got := head(t, down); got != h+2 {
		t.Errorf("re-applied machine records: want 2 events logged, head %d → %d", h, got)
	}
	if got, err := down.Machine(ctx, m.ID); err != nil || !got.Revoked.Equal(at) {
		t.Errorf("machine after the revocation applied twice: want revoked at %v kept, got %+v, %v", at, got, err)
	}

	// The hub deletes it: the revocation is lifted and the machine
	// forgotten here, so it may register again.
	if _, err := hub.DeleteMachine(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	stable = syncRound(t, hub, down, "edge", stable)
	if _, err := down.Machine(ctx, m.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("downstream machine after the hub's deletion: want forgotten, got %v", err)
	}
	if _, err := down.Token(ctx, first.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("downstream machine token after the hub's deletion: want deleted, got %v", err)
	}
	if rev := revocationOf(t, down, m.ID); rev.Lifted.IsZero() {
		t.Errorf("MachineRevocation downstream after the hub's deletion: want lifted, got %+v", rev)
	}
	again := register(t, down, m, "a300000000000005")

	// Revoked again at the hub; the edge link brings it first, then the
	// beta link the old deletion, late: the late copy lifts nothing.
	if _, err := hub.RevokeMachine(ctx, m.ID, at); err != nil {
		t.Fatal(err)
	}
	syncRound(t, hub, down, "edge", stable)
	wantRevoked(t, down, "a machine revoked again at the hub", again.ID, true)
	syncRound(t, hub, down, "beta", cand)
	rev := revocationOf(t, down, m.ID)
	if !rev.Revoked.After(at) || !rev.Lifted.IsZero() {
		t.Errorf("MachineRevocation after a late deletion: want the new revocation standing, got %+v", rev)
	}
	if got, err := down.Machine(ctx, m.ID); err != nil || got.Revoked.IsZero() {
		t.Errorf("machine after a late deletion: want it kept, revoked, got %+v, %v", got, err)
	}
}

func testApplySyncedMachineRefusals(t *testing.T, open OpenSync) {
	ctx := t.Context()
	down := open(t, nil, nil)
	sealer := &testSealer{}
	id := machineID("refused")
	for _, tc := range []struct {
		name string
		edit func(ev *store.SyncedEvent)
	}{
		{"no machine", func(ev *store.SyncedEvent) { ev.Machine = nil }},
		{"a bad ID", func(ev *store.SyncedEvent) { ev.Machine.ID = "not-a-machine" }},
		{"no revocation time", func(ev *store.SyncedEvent) { ev.Machine.Revoked = time.Time{} }},
		{"a deletion without its time", func(ev *store.SyncedEvent) { ev.Type = catalog.EventMachineDeleted }},
		{"a revocation already lifted", func(ev *store.SyncedEvent) { ev.Machine.Lifted = time.Now() }},
		{"a token as well", func(ev *store.SyncedEvent) {
			tk := token("e000000000000001", catalog.TokenAuth, "edge")
			ev.Token = &tk
		}},
		{"a patch event carrying a machine", func(ev *store.SyncedEvent) {
			ev.Type, ev.Patch.Digest = catalog.EventPatchWithdrawn, "sha256:"+id
		}},
	} {
		rev := catalog.MachineRevocation{ID: id, Revoked: time.Now()}
		e := sealedEvent(t, sealer, store.SealRequest{Tier: "edge", TierSeq: 1, Type: catalog.EventMachineRevoked, Machine: &rev})
		tc.edit(&e)
		h := head(t, down)
		err := down.ApplySynced(ctx, store.Cursor{Tier: "edge"},
			store.Cursor{Tier: "edge", HubTier: "edge", HubSeq: 1, Upstream: upstreamURL, UpstreamSeq: 1},
			[]store.SyncedEvent{e})
		wantInvalid(t, "ApplySynced of a machine event with "+tc.name, err)
		wantNoEvent(t, down, h, "ApplySynced of a machine event with "+tc.name)
		if _, err := down.MachineRevocation(ctx, id); !errors.Is(err, catalog.ErrNotFound) {
			t.Errorf("ApplySynced of a machine event with %s: want nothing recorded, got %v", tc.name, err)
		}
	}
	if c := cursorOf(t, down, "edge"); c.HubSeq != 0 {
		t.Errorf("cursor after refused machine events: want unmoved, got %+v", c)
	}
}
