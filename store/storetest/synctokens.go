package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Enrollment (auth) tokens replicate from the hub in the signed feed of
// their tier, so that a machine can register at any node serving it.

func addToken(t *testing.T, s store.Store, tok catalog.Token) {
	t.Helper()
	if err := s.AddToken(t.Context(), tok); err != nil {
		t.Fatalf("AddToken(%s %s on %s): %v", tok.Kind, tok.ID, tok.Tier, err)
	}
}

func revokeToken(t *testing.T, s store.Store, kind catalog.TokenKind, id string, at time.Time) {
	t.Helper()
	if err := s.RevokeToken(t.Context(), kind, id, at); err != nil {
		t.Fatalf("RevokeToken(%s %s): %v", kind, id, err)
	}
}

func tokenOf(t *testing.T, s store.Store, id string) catalog.Token {
	t.Helper()
	tok, err := s.Token(t.Context(), id)
	if err != nil {
		t.Fatalf("Token(%s): %v", id, err)
	}
	return tok
}

// wantToken checks a stored token field by field, its hash included, which
// the JSON wantSame compares by leaves out.
func wantToken(t *testing.T, what string, got, want catalog.Token) {
	t.Helper()
	wantSame(t, what, got, want)
	if !bytes.Equal(got.Hash, want.Hash) {
		t.Errorf("%s: want hash %x, got %x", what, want.Hash, got.Hash)
	}
}

// wantTokenEvent checks a logged token event's header, and that its Data
// is the token without its hash.
func wantTokenEvent(t *testing.T, e catalog.Event, typ catalog.EventType, tier, id string) {
	t.Helper()
	if e.Type != typ || e.Tier != tier || e.Digest != "" {
		t.Errorf("event %d: want (%s, tier %q, no digest), got (%s, tier %q, %q)", e.Seq, typ, tier, e.Type, e.Tier, e.Digest)
	}
	var fields map[string]any
	if err := json.Unmarshal(e.Data, &fields); err != nil {
		t.Errorf("event %d: Data is not a JSON object: %v (%s)", e.Seq, err, e.Data)
		return
	}
	if _, ok := fields["hash"]; ok {
		t.Errorf("event %d: Data carries the token's hash: %s", e.Seq, e.Data)
	}
	if fields["id"] != id || fields["kind"] != string(catalog.TokenAuth) || fields["tier"] != tier {
		t.Errorf("event %d: Data want auth token %s on %s, got %s", e.Seq, id, tier, e.Data)
	}
}

func testSealTokens(t *testing.T, open OpenSync) {
	ctx := t.Context()
	ch := &store.Changes{}
	hub := open(t, &testSealer{}, ch)
	a := addPatch(t, hub, kernelA, x86, "1.1")
	e1 := token("e000000000000001", catalog.TokenAuth, "edge")
	e1.Expires = e1.Created.Add(90 * 24 * time.Hour)
	w := ch.Wait()
	addToken(t, hub, e1)
	select {
	case <-w:
	default:
		t.Error("Changes: a waiter was not woken by adding an auth token")
	}

	// Sync and machine tokens are this node's own and log nothing.
	h := head(t, hub)
	s1 := token("5000000000000001", catalog.TokenSync, "edge")
	addToken(t, hub, s1)
	m := machine("m1", "edge", time.Now())
	if err := hub.RegisterMachine(ctx, m, machineToken("3000000000000001", m.ID, "edge")); err != nil {
		t.Fatal(err)
	}
	revokeToken(t, hub, catalog.TokenSync, s1.ID, time.Now())
	wantNoEvent(t, hub, h, "adding and revoking sync and machine tokens")

	promote(t, hub, a, "beta")
	b1 := token("b000000000000001", catalog.TokenAuth, "beta")
	addToken(t, hub, b1)
	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	revokeToken(t, hub, catalog.TokenAuth, e1.ID, at)

	// Revoking again, an unknown token or one of another kind changes
	// nothing, as before tokens replicated, and logs nothing.
	h = head(t, hub)
	if err := hub.RevokeToken(ctx, catalog.TokenAuth, e1.ID, at.Add(time.Hour)); err != nil {
		t.Errorf("RevokeToken of a revoked auth token: want nil, got %v", err)
	}
	wantErr(t, "RevokeToken of an unknown auth token",
		hub.RevokeToken(ctx, catalog.TokenAuth, "ffffffffffffffff", at), catalog.ErrNotFound)
	wantErr(t, "RevokeToken of an auth token as a sync token",
		hub.RevokeToken(ctx, catalog.TokenSync, b1.ID, at), catalog.ErrNotFound)
	wantNoEvent(t, hub, h, "revoking a revoked, an unknown or a wrong-kind token")
	if got := tokenOf(t, hub, e1.ID); !got.Revoked.Equal(at) {
		t.Errorf("auth token revoked twice: want Revoked %v kept, got %v", at, got.Revoked)
	}

	// Token events share their tier's sequence with its patch events.
	edge := wantFeed(t, hub, "edge",
		ev(catalog.EventPatchAdded, a), tokenEv(catalog.EventTokenAdded, e1), tokenEv(catalog.EventTokenRevoked, e1))
	wantFeed(t, hub, "beta", ev(catalog.EventPatchPromoted, a), tokenEv(catalog.EventTokenAdded, b1))
	for _, e := range edge {
		if e.Skip {
			t.Errorf("Feed(edge) entry %d: skipped; only patch events may be", e.Seq)
		}
	}

	// The sealer is given the whole token, hash included, and the
	// change's time; the log's data never holds the hash.
	want := &sealedToken{ID: e1.ID, Name: e1.Name, Hash: e1.Hash, Created: e1.Created, Expires: e1.Expires}
	added := unseal(t, edge[1])
	wantSame(t, "sealed token.added", added.Token, want)
	if !bytes.Equal(added.Token.Hash, e1.Hash) {
		t.Errorf("sealed token.added: want hash %x, got %x", e1.Hash, added.Token.Hash)
	}
	if !added.Patch.Created.IsZero() || added.Patch.Digest != "" {
		t.Errorf("sealed token.added: want no patch, got %+v", added.Patch)
	}
	want.Revoked = at
	wantSame(t, "sealed token.revoked", unseal(t, edge[2]).Token, want)
	log := eventsAfter(t, hub, edge[1].Seq-1)
	wantTokenEvent(t, log[0], catalog.EventTokenAdded, "edge", e1.ID)
	if !added.Time.Equal(log[0].Created) {
		t.Errorf("sealed token.added: want the change's time %v, got %v", log[0].Created, added.Time)
	}
	for _, e := range log {
		if e.Seq == edge[2].Seq {
			wantTokenEvent(t, e, catalog.EventTokenRevoked, "edge", e1.ID)
		}
	}

	// A live auth token still holds its tier on the hub.
	wantErr(t, "RemoveTier(beta) with a live auth token", hub.RemoveTier(ctx, "beta"), catalog.ErrConflict)
}

func testSealTokenFailure(t *testing.T, open OpenSync) {
	ctx := t.Context()
	sealer := &testSealer{}
	hub := open(t, sealer, nil)
	e1 := token("e000000000000001", catalog.TokenAuth, "edge")
	addToken(t, hub, e1)
	h := head(t, hub)

	sealer.setFail(errors.New("signing key unreadable"))
	e2 := token("e000000000000002", catalog.TokenAuth, "edge")
	if err := hub.AddToken(ctx, e2); err == nil {
		t.Error("AddToken(auth) with a failing sealer: want an error, got nil")
	}
	if err := hub.RevokeToken(ctx, catalog.TokenAuth, e1.ID, time.Now()); err == nil {
		t.Error("RevokeToken(auth) with a failing sealer: want an error, got nil")
	}
	wantNoEvent(t, hub, h, "token changes whose seal failed")
	if _, err := hub.Token(ctx, e2.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("Token after a failed sealed AddToken: want ErrNotFound, got %v", err)
	}
	if got := tokenOf(t, hub, e1.ID); !got.Revoked.IsZero() {
		t.Errorf("Token after a failed sealed RevokeToken: want live, got revoked %v", got.Revoked)
	}
	// A sync token is not sealed, so a failing sealer does not stop it.
	addToken(t, hub, token("5000000000000001", catalog.TokenSync, "edge"))

	sealer.setFail(nil)
	revokeToken(t, hub, catalog.TokenAuth, e1.ID, time.Now())
	wantFeed(t, hub, "edge", tokenEv(catalog.EventTokenAdded, e1), tokenEv(catalog.EventTokenRevoked, e1))
}

func testTokenEventsUnsealed(t *testing.T, open OpenSync) {
	s := open(t, nil, nil)
	e1 := token("e000000000000001", catalog.TokenAuth, "candidate")
	addToken(t, s, e1)
	revokeToken(t, s, catalog.TokenAuth, e1.ID, time.Now())
	// Added already revoked: both facts are logged, so no node that
	// follows the log ever holds it live.
	e2 := token("e000000000000002", catalog.TokenAuth, "candidate")
	e2.Revoked = e2.Created.Add(time.Minute)
	addToken(t, s, e2)
	es := eventsAfter(t, s, 0)
	if len(es) != 4 {
		t.Fatalf("log after adding and revoking auth tokens on a node without a sealer: want 4 events, got %+v", es)
	}
	wantTokenEvent(t, es[0], catalog.EventTokenAdded, "candidate", e1.ID)
	wantTokenEvent(t, es[1], catalog.EventTokenRevoked, "candidate", e1.ID)
	wantTokenEvent(t, es[2], catalog.EventTokenAdded, "candidate", e2.ID)
	wantTokenEvent(t, es[3], catalog.EventTokenRevoked, "candidate", e2.ID)
	if page := feedAll(t, s, "candidate"); len(page.Entries) != 0 {
		t.Errorf("Feed of a node without a sealer: unsigned token events must stay out, got %d entries", len(page.Entries))
	}
}

func testApplySyncedTokens(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	down := open(t, nil, nil)
	a := addPatch(t, hub, kernelA, x86, "1.1")
	e1 := token("e000000000000001", catalog.TokenAuth, "edge")
	e1.Expires = time.Now().Add(90 * 24 * time.Hour).UTC().Truncate(time.Microsecond)
	addToken(t, hub, e1)
	e2 := token("e000000000000002", catalog.TokenAuth, "edge")
	addToken(t, hub, e2)
	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	revokeToken(t, hub, catalog.TokenAuth, e2.ID, at)
	b1 := token("b000000000000001", catalog.TokenAuth, "beta")
	addToken(t, hub, b1)

	// The hub's edge feeds the downstream's stable.
	cur := syncRound(t, hub, down, "edge", cursorOf(t, down, "stable"))
	if cur.HubSeq != 4 {
		t.Errorf("cursor after a patch and three token events: want hub seq 4, got %d", cur.HubSeq)
	}
	want := e1
	want.Tier = "stable"
	got := tokenOf(t, down, e1.ID)
	wantToken(t, "synced auth token (on the local tier, hash kept)", got, want)
	if !got.Live(time.Now()) {
		t.Errorf("synced auth token: want live, got %+v", got)
	}
	want = e2
	want.Tier, want.Revoked = "stable", at
	wantToken(t, "synced auth token revoked on the hub", tokenOf(t, down, e2.ID), want)
	// Tier isolation: a token of a tier the downstream does not pull
	// never reaches it.
	if _, err := down.Token(ctx, b1.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("Token of the hub's beta token on a downstream of edge: want ErrNotFound, got %v", err)
	}

	// Logged under the local tier with the hub's bytes, in its feed.
	log := eventsAfter(t, down, 0)
	if len(log) != 4 {
		t.Fatalf("downstream log: want 4 events, got %+v", log)
	}
	wantPatchEvent(t, log[0], catalog.EventPatchAdded, "stable", func() catalog.Patch { p := a; p.Tiers = []string{"stable"}; return p }())
	wantTokenEvent(t, log[1], catalog.EventTokenAdded, "stable", e1.ID)
	wantTokenEvent(t, log[2], catalog.EventTokenAdded, "stable", e2.ID)
	wantTokenEvent(t, log[3], catalog.EventTokenRevoked, "stable", e2.ID)
	hubEntries := feedAll(t, hub, "edge").Entries
	for i, e := range feedAll(t, down, "stable").Entries {
		if !bytes.Equal(e.Record, hubEntries[i].Record) || !bytes.Equal(e.Sig, hubEntries[i].Sig) || e.Skip {
			t.Errorf("downstream feed entry %d: want the hub's record and sig, not skipped", i)
		}
	}

	// A synced token holds its local tier as a local one does.
	wantErr(t, "RemoveTier(stable) holding a live synced token", down.RemoveTier(ctx, "stable"), catalog.ErrConflict)

	// A later revocation reaches the downstream, and through it a relay.
	at2 := at.Add(time.Hour)
	revokeToken(t, hub, catalog.TokenAuth, e1.ID, at2)
	cur = syncRound(t, hub, down, "edge", cur)
	if got := tokenOf(t, down, e1.ID); !got.Revoked.Equal(at2) {
		t.Errorf("synced auth token after the hub revoked it: want Revoked %v, got %v", at2, got.Revoked)
	}
	relay := open(t, nil, nil)
	syncRound(t, down, relay, "stable", cursorOf(t, relay, "beta"))
	want = e1
	want.Tier, want.Revoked = "beta", at2
	wantToken(t, "relay's token", tokenOf(t, relay, e1.ID), want)
}

// sealedEvent makes the synced event a sync loop would hand the store for
// a record sealed from req.
func sealedEvent(t *testing.T, sealer store.Sealer, req store.SealRequest) store.SyncedEvent {
	t.Helper()
	if req.At.IsZero() {
		req.At = time.Now()
	}
	rec, sig, err := sealer.Seal(req)
	if err != nil {
		t.Fatal(err)
	}
	return toSynced(t, []store.FeedEntry{{Record: rec, Sig: sig, HubSeq: req.TierSeq}}, true)[0]
}

func testApplySyncedTokensIdempotent(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	down := open(t, nil, nil)
	e1 := token("e000000000000001", catalog.TokenAuth, "edge")
	addToken(t, hub, e1)
	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	revokeToken(t, hub, catalog.TokenAuth, e1.ID, at)

	// Two local tiers fed from the same hub tier: the second link finds
	// the token there, changes nothing, and still logs every event.
	syncRound(t, hub, down, "edge", cursorOf(t, down, "stable"))
	syncRound(t, hub, down, "edge", cursorOf(t, down, "beta"))
	want := e1
	want.Tier, want.Revoked = "stable", at
	wantToken(t, "token synced through two links", tokenOf(t, down, e1.ID), want)
	if list, err := down.Tokens(ctx, store.TokenFilter{Kind: catalog.TokenAuth}); err != nil || len(list) != 1 {
		t.Errorf("Tokens(auth) after two links synced one token: want 1, got %d (err %v)", len(list), err)
	}
	if n := len(feedAll(t, down, "beta").Entries); n != 2 {
		t.Errorf("Feed(beta) of the second link: want both events logged, got %d", n)
	}

	// What a token event meets here decides what it does.
	s1 := token("5000000000000001", catalog.TokenSync, "edge")
	addToken(t, down, s1)
	sealer := &testSealer{}
	tok := func(id string, revoked time.Time) *catalog.Token {
		tk := token(id, catalog.TokenAuth, "edge")
		tk.Revoked = revoked
		return &tk
	}
	events := []store.SyncedEvent{
		// A revocation of a token never seen here: logged, nothing made.
		sealedEvent(t, sealer, store.SealRequest{Tier: "edge", TierSeq: 1, Type: catalog.EventTokenRevoked,
			Token: tok("c000000000000001", at)}),
		// An added auth token whose ID a local sync token has: the sync
		// token stays as it is.
		sealedEvent(t, sealer, store.SealRequest{Tier: "edge", TierSeq: 2, Type: catalog.EventTokenAdded,
			Token: tok(s1.ID, time.Time{})}),
		// The hub's revocation of that ID is not the sync token's.
		sealedEvent(t, sealer, store.SealRequest{Tier: "edge", TierSeq: 3, Type: catalog.EventTokenRevoked,
			Token: tok(s1.ID, at)}),
		// A second revocation keeps the first time.
		sealedEvent(t, sealer, store.SealRequest{Tier: "edge", TierSeq: 4, Type: catalog.EventTokenRevoked,
			Token: tok(e1.ID, at.Add(time.Hour))}),
	}
	h := head(t, down)
	next := store.Cursor{Tier: "candidate", HubTier: "edge", HubSeq: 4, Upstream: upstreamURL, UpstreamSeq: 4}
	if err := down.ApplySynced(ctx, store.Cursor{Tier: "candidate"}, next, events); err != nil {
		t.Fatalf("ApplySynced of token events that find nothing to change: %v", err)
	}
	if n := len(eventsAfter(t, down, h)); n != 4 {
		t.Errorf("log after four token events: want 4 events, got %d", n)
	}
	if _, err := down.Token(ctx, "c000000000000001"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("Token after revoking an unknown token: want ErrNotFound, got %v", err)
	}
	wantToken(t, "local sync token sharing an ID with a hub token", tokenOf(t, down, s1.ID), s1)
	wantToken(t, "token revoked twice", tokenOf(t, down, e1.ID), want)
}

func testApplySyncedTokenRefusals(t *testing.T, open OpenSync) {
	ctx := t.Context()
	down := open(t, nil, nil)
	sealer := &testSealer{}
	good := token("e000000000000001", catalog.TokenAuth, "edge")
	a := newPatch(kernelA, x86, "1.1")
	for _, tc := range []struct {
		name string
		edit func(ev *store.SyncedEvent)
	}{
		{"no token", func(ev *store.SyncedEvent) { ev.Token = nil }},
		{"a short hash", func(ev *store.SyncedEvent) { ev.Token.Hash = []byte("short") }},
		{"an invalid name", func(ev *store.SyncedEvent) { ev.Token.Name = "Not A Name" }},
		{"no ID", func(ev *store.SyncedEvent) { ev.Token.ID = "" }},
		{"no creation time", func(ev *store.SyncedEvent) { ev.Token.Created = time.Time{} }},
		{"a revocation without its time", func(ev *store.SyncedEvent) {
			ev.Type = catalog.EventTokenRevoked
			ev.Token.Revoked = time.Time{}
		}},
		{"a patch event with a token", func(ev *store.SyncedEvent) {
			ev.Type, ev.Patch = catalog.EventPatchAdded, a
		}},
	} {
		tk := good
		e := sealedEvent(t, sealer, store.SealRequest{Tier: "edge", TierSeq: 1, Type: catalog.EventTokenAdded, Token: &tk})
		tc.edit(&e)
		h := head(t, down)
		err := down.ApplySynced(ctx, store.Cursor{Tier: "edge"},
			store.Cursor{Tier: "edge", HubTier: "edge", HubSeq: 1, Upstream: upstreamURL, UpstreamSeq: 1},
			[]store.SyncedEvent{e})
		wantInvalid(t, "ApplySynced of a token event with "+tc.name, err)
		wantNoEvent(t, down, h, "ApplySynced of a token event with "+tc.name)
		if c := cursorOf(t, down, "edge"); c.HubSeq != 0 {
			t.Errorf("ApplySynced of a token event with %s: cursor moved to %d", tc.name, c.HubSeq)
		}
	}
	if _, err := down.Token(ctx, good.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("Token after refused token events: want ErrNotFound, got %v", err)
	}
}
