package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Revocation: machines, the machines of an enrollment token, admin
// sessions.

func register(t *testing.T, s store.Store, m catalog.Machine, tokID string) catalog.Token {
	t.Helper()
	tok := machineToken(tokID, m.ID, m.Tier)
	if err := s.RegisterMachine(t.Context(), m, tok); err != nil {
		t.Fatalf("RegisterMachine(%s with %s): %v", m.ID[:8], tokID, err)
	}
	return tok
}

func wantRevoked(t *testing.T, s store.Store, what, tokID string, revoked bool) {
	t.Helper()
	tok, err := s.Token(t.Context(), tokID)
	if err != nil {
		t.Fatalf("Token(%s): %v", tokID, err)
	}
	if got := !tok.Revoked.IsZero(); got != revoked {
		t.Errorf("%s: token %s revoked = %v, want %v", what, tokID, got, revoked)
	}
}

func testRevokeMachine(t *testing.T, s store.Store) {
	ctx := t.Context()
	seen := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	m := machine("revoked-1", "edge", seen)
	other := machine("bystander", "edge", seen)
	first := register(t, s, m, "c000000000000001")
	bystander := register(t, s, other, "c000000000000002")

	at := seen.Add(time.Hour)
	got, err := s.RevokeMachine(ctx, m.ID, at)
	if err != nil {
		t.Fatalf("RevokeMachine: %v", err)
	}
	if got.Machine == nil || !got.Machine.Revoked.Equal(at) || got.Mesh || len(got.Tiers) != 0 {
		t.Errorf("RevokeMachine off the hub: want the machine revoked at %v, here only, got %+v", at, got)
	}
	wantRevoked(t, s, "after RevokeMachine", first.ID, true)
	wantRevoked(t, s, "a bystander after RevokeMachine", bystander.ID, false)
	if stored, err := s.Machine(ctx, m.ID); err != nil || !stored.Revoked.Equal(at) {
		t.Errorf("Machine after RevokeMachine: want listed, revoked at %v; got %+v, %v", at, stored, err)
	}

	// Revoked, it may not register again: no new token is stored.
	err = s.RegisterMachine(ctx, m, machineToken("c000000000000003", m.ID, "edge"))
	if !errors.Is(err, catalog.ErrRevoked) {
		t.Errorf("RegisterMachine of a revoked machine: want ErrRevoked, got %v", err)
	}
	if _, err := s.Token(ctx, "c000000000000003"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("token of a refused registration: want ErrNotFound, got %v", err)
	}
	// Revoking again keeps the first time.
	if again, err := s.RevokeMachine(ctx, m.ID, at.Add(time.Hour)); err != nil || again.Machine == nil || !again.Machine.Revoked.Equal(at) {
		t.Errorf("RevokeMachine again: want revoked at %v kept, got %+v, %v", at, again, err)
	}
	if _, err := s.RevokeMachine(ctx, machineID("nobody"), at); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("RevokeMachine of an unknown machine: want ErrNotFound, got %v", err)
	}

	// Deleted, it is forgotten with its tokens, and may register again.
	if got, err := s.DeleteMachine(ctx, m.ID); err != nil || !got.Forgotten || got.Lifted != nil {
		t.Fatalf("DeleteMachine off the hub: want it forgotten, no revocation lifted, got %+v, %v", got, err)
	}
	if _, err := s.Machine(ctx, m.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("Machine after DeleteMachine: want ErrNotFound, got %v", err)
	}
	if _, err := s.Token(ctx, first.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("machine token after DeleteMachine: want ErrNotFound, got %v", err)
	}
	if _, err := s.DeleteMachine(ctx, m.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("DeleteMachine twice: want ErrNotFound, got %v", err)
	}
	register(t, s, m, "c000000000000004")
	wantRevoked(t, s, "a bystander after DeleteMachine", bystander.ID, false)
}

func testRevokeEnrollment(t *testing.T, s store.Store) {
	ctx := t.Context()
	seen := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	a := token("d00000000000000a", catalog.TokenAuth, "edge")
	b := token("d00000000000000b", catalog.TokenAuth, "edge")
	addToken(t, s, a)
	addToken(t, s, b)
	enrolled := func(label, by string) catalog.Machine {
		m := machine(label, "edge", seen)
		m.EnrolledBy = by
		return m
	}
	m1, m2, m3 := enrolled("by-a-1", a.ID), enrolled("by-a-2", a.ID), enrolled("by-b", b.ID)
	t1 := register(t, s, m1, "d000000000000001")
	// m1 registers again by credential (no enrollment token): it is
	// still the machine a enrolled.
	m1again := m1
	m1again.EnrolledBy = ""
	t1 = register(t, s, m1again, "d000000000000011")
	t2 := register(t, s, m2, "d000000000000002")
	t3 := register(t, s, m3, "d000000000000003")
	if got, err := s.Machine(ctx, m1.ID); err != nil || got.EnrolledBy != a.ID {
		t.Errorf("machine registered by token then by credential: want enrolled by %s, got %+v, %v", a.ID, got, err)
	}
	head := func() int64 {
		h, err := s.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}

	// Without machines: the token only.
	at := seen.Add(time.Hour)
	before := head()
	ids, err := s.RevokeEnrollment(ctx, a.ID, at, false)
	if err != nil || len(ids) != 0 {
		t.Fatalf("RevokeEnrollment without machines: want none revoked, got %v, %v", ids, err)
	}
	wantRevoked(t, s, "machine of a token revoked without its machines", t1.ID, false)
	if got := tokenOf(t, s, a.ID); !got.Revoked.Equal(at) || got.RevokeMachines {
		t.Errorf("token revoked without machines: got %+v", got)
	}
	if h := head(); h != before+1 {
		t.Errorf("RevokeEnrollment: want one event logged, head %d → %d", before, h)
	}

	// With machines, later: its machines go, the first time stays.
	before = head()
	ids, err = s.RevokeEnrollment(ctx, a.ID, at.Add(time.Hour), true)
	if err != nil {
		t.Fatalf("RevokeEnrollment with machines: %v", err)
	}
	slices.Sort(ids)
	want := []string{m1.ID, m2.ID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("RevokeEnrollment with machines: want %v, got %v", want, ids)
	}
	wantRevoked(t, s, "machine enrolled with a", t1.ID, true)
	wantRevoked(t, s, "machine enrolled with a", t2.ID, true)
	wantRevoked(t, s, "machine enrolled with b", t3.ID, false)
	if got := tokenOf(t, s, a.ID); !got.Revoked.Equal(at) || !got.RevokeMachines {
		t.Errorf("token revoked with machines: want revoked at %v with machines, got %+v", at, got)
	}
	es := eventsAfter(t, s, before)
	if len(es) != 1 || es[0].Type != catalog.EventTokenRevoked {
		t.Fatalf("RevokeEnrollment with machines: want one token.revoked event, got %+v", es)
	}
	wantTokenEvent(t, es[0], catalog.EventTokenRevoked, "edge", a.ID)
	if m, err := s.Machine(ctx, m2.ID); err != nil || !m.Revoked.Equal(at) {
		t.Errorf("machine of the token: want revoked at the token's time %v, got %+v, %v", at, m, err)
	}

	// Nothing more to do: nothing logged.
	before = head()
	if ids, err := s.RevokeEnrollment(ctx, a.ID, at, true); err != nil || len(ids) != 0 {
		t.Errorf("RevokeEnrollment again: want nothing, got %v, %v", ids, err)
	}
	if h := head(); h != before {
		t.Errorf("RevokeEnrollment again: want nothing logged, head %d → %d", before, h)
	}
	if _, err := s.RevokeEnrollment(ctx, t3.ID, at, true); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("RevokeEnrollment of a machine token: want ErrNotFound, got %v", err)
	}

	// A machine of a, registering after a took its machines (by the
	// credential a node issued it, which names a), is one of them. One of
	// b, revoked without its machines, or of a token never held here, is
	// not.
	late := enrolled("by-a-late", a.ID)
	err = s.RegisterMachine(ctx, late, machineToken("d000000000000021", late.ID, "edge"))
	if !errors.Is(err, catalog.ErrRevoked) {
		t.Errorf("RegisterMachine enrolled by a token revoked with its machines: want ErrRevoked, got %v", err)
	}
	if _, err := s.Token(ctx, "d000000000000021"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("token of a refused registration: want ErrNotFound, got %v", err)
	}
	if _, err := s.RevokeEnrollment(ctx, b.ID, at, false); err != nil {
		t.Fatal(err)
	}
	register(t, s, enrolled("by-b-late", b.ID), "d000000000000022")
	register(t, s, enrolled("by-elsewhere", "d0000000000000ff"), "d000000000000023")
}

func testRevokeAdminSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	nb := func() time.Time {
		got, err := s.AdminSessionsNotBefore(ctx, "alice")
		if err != nil {
			t.Fatalf("AdminSessionsNotBefore: %v", err)
		}
		return got
	}
	if got := nb(); !got.IsZero() {
		t.Errorf("AdminSessionsNotBefore before any revocation: want zero, got %v", got)
	}
	t1 := time.Date(2026, 3, 1, 12, 0, 0, 123000, time.UTC)
	for _, at := range []time.Time{t1, t1.Add(-time.Hour)} {
		if err := s.RevokeAdminSessions(ctx, "alice", at); err != nil {
			t.Fatalf("RevokeAdminSessions(%v): %v", at, err)
		}
	}
	if got := nb(); !got.Equal(t1) {
		t.Errorf("after revocations at %v then earlier: want %v kept, got %v", t1, t1, got)
	}
	if err := s.RevokeAdminSessions(ctx, "alice", t1.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := nb(); !got.Equal(t1.Add(time.Minute)) {
		t.Errorf("after a later revocation: want %v, got %v", t1.Add(time.Minute), got)
	}
	if got, err := s.AdminSessionsNotBefore(ctx, "bob"); err != nil || !got.IsZero() {
		t.Errorf("another admin: want zero, got %v, %v", got, err)
	}
	if err := s.RevokeAdminSessions(ctx, "Not A Name", t1); err == nil {
		t.Errorf("RevokeAdminSessions of an invalid name: want an error")
	}
}

func testPurgeKeepsRevoked(t *testing.T, s store.Store) {
	ctx := t.Context()
	old := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	revoked, silent := machine("purge-revoked", "edge", old), machine("purge-silent", "edge", old)
	register(t, s, revoked, "e100000000000001")
	register(t, s, silent, "e100000000000002")
	if _, err := s.RevokeMachine(ctx, revoked.ID, old.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.PurgeFleet(ctx, old.Add(time.Hour)); err != nil {
		t.Fatalf("PurgeFleet: %v", err)
	}
	if _, err := s.Machine(ctx, silent.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("a silent machine past retention: want purged, got %v", err)
	}
	if m, err := s.Machine(ctx, revoked.ID); err != nil || m.Revoked.IsZero() {
		t.Errorf("a revoked machine past retention: want kept, revoked, got %+v, %v", m, err)
	}
}

func testApplySyncedRevokeMachines(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	down := open(t, nil, nil)
	e1 := token("f000000000000001", catalog.TokenAuth, "edge")
	e2 := token("f000000000000002", catalog.TokenAuth, "edge")
	addToken(t, hub, e1)
	addToken(t, hub, e2)
	cur := syncRound(t, hub, down, "edge", cursorOf(t, down, "stable"))

	// Machines register at the downstream with the synced tokens.
	seen := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	m1, m2 := machine("synced-by-e1", "stable", seen), machine("synced-by-e2", "stable", seen)
	m1.EnrolledBy, m2.EnrolledBy = e1.ID, e2.ID
	t1, t2 := register(t, down, m1, "f100000000000001"), register(t, down, m2, "f100000000000002")

	// The hub revokes e1 with its machines, e2 without.
	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	if _, err := hub.RevokeEnrollment(ctx, e1.ID, at, true); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.RevokeEnrollment(ctx, e2.ID, at, false); err != nil {
		t.Fatal(err)
	}
	cur = syncRound(t, hub, down, "edge", cur)
	if got := tokenOf(t, down, e1.ID); !got.Revoked.Equal(at) || !got.RevokeMachines {
		t.Errorf("synced revocation with machines: want revoked at %v with machines, got %+v", at, got)
	}
	wantRevoked(t, down, "downstream machine of the token revoked with machines", t1.ID, true)
	wantRevoked(t, down, "downstream machine of the token revoked without", t2.ID, false)
	if m, err := down.Machine(ctx, m1.ID); err != nil || !m.Revoked.Equal(at) {
		t.Errorf("downstream machine of e1: want revoked at %v, got %+v, %v", at, m, err)
	}

	// Later the hub takes e2's machines too.
	if _, err := hub.RevokeEnrollment(ctx, e2.ID, at, true); err != nil {
		t.Fatal(err)
	}
	syncRound(t, hub, down, "edge", cur)
	wantRevoked(t, down, "downstream machine of e2 after its machines were taken", t2.ID, true)
}
