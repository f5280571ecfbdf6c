package auth

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"gopkg.in/macaroon.v2"
)

// TestRevokedSessionsAreRefusedAndNewLoginsWork: after an operator ends
// an admin's sessions, every macaroon minted for that admin until then is
// refused at its next use (an old one without an issue time included),
// another admin's are not, and a login afterwards gets one that works.
func TestRevokedSessionsAreRefusedAndNewLoginsWork(t *testing.T) {
	alice, bob := testHashes(t)
	f := newFixture(t, Config{Admins: []Admin{{Name: "alice", PasswordHash: alice}, {Name: "bob", PasswordHash: bob}}})
	ctx := t.Context()
	login := func(user, pw string) string {
		t.Helper()
		m, _, err := f.a.Login(ctx, user, pw)
		if err != nil {
			t.Fatalf("Login(%s): %v", user, err)
		}
		return "Macaroon " + m
	}
	a1, b1 := login("alice", alicePassword), login("bob", bobPassword)
	// A macaroon of before issue times, signed with the node's key.
	k, err := f.store.MintingRootKey(ctx, f.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	old, err := mintMacaroon(k.Key, k.ID, "alice", f.clock.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{a1, "Macaroon " + old} {
		if _, err := f.a.Admin(ctx, h); err != nil {
			t.Fatalf("before the revocation: want accepted, got %v", err)
		}
	}

	f.clock.Advance(time.Second)
	if err := f.store.RevokeAdminSessions(ctx, "alice", f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string]string{"alice's login": a1, "alice's macaroon without an issue time": "Macaroon " + old} {
		if _, err := f.a.Admin(ctx, h); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s after her sessions were revoked: want ErrUnauthenticated, got %v", name, err)
		}
	}
	if _, err := f.a.Admin(ctx, b1); err != nil {
		t.Errorf("bob's login after alice's sessions were revoked: want accepted, got %v", err)
	}
	var revoked int
	for _, e := range f.logs.events(t) {
		if e["event"] == EventMacaroonFail && e["reason"] == reasonRevoked && e["user"] == "alice" {
			revoked++
		}
	}
	if revoked != 2 {
		t.Errorf("want 2 %s events with reason %s for alice, got %d", EventMacaroonFail, reasonRevoked, revoked)
	}

	f.clock.Advance(time.Second)
	if user, err := f.a.Admin(ctx, login("alice", alicePassword)); err != nil || user != "alice" {
		t.Errorf("alice's login after the revocation: want accepted, got %q, %v", user, err)
	}
}

// TestIssueTimeAppendedByAHolderIsRefused: a holder can append caveats; one
// appending a later issue time to an old macaroon must not escape a
// revocation, so an issue time anywhere but first is refused.
func TestIssueTimeAppendedByAHolderIsRefused(t *testing.T) {
	alice, _ := testHashes(t)
	f := newFixture(t, Config{Admins: []Admin{{Name: "alice", PasswordHash: alice}}})
	ctx := t.Context()
	if _, _, err := f.a.Login(ctx, "alice", alicePassword); err != nil {
		t.Fatal(err)
	}
	k, err := f.store.MintingRootKey(ctx, f.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	old, err := mintMacaroon(k.Key, k.ID, "alice", f.clock.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(old)
	var m macaroon.Macaroon
	if err := m.UnmarshalBinary(raw); err != nil {
		t.Fatal(err)
	}
	if err := m.AddFirstPartyCaveat([]byte(caveatIssued + f.clock.Now().Add(time.Hour).Format(time.RFC3339Nano))); err != nil {
		t.Fatal(err)
	}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.a.Admin(ctx, "Macaroon "+base64.RawURLEncoding.EncodeToString(b)); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("a macaroon with an appended issue time: want ErrUnauthenticated, got %v", err)
	}
}
