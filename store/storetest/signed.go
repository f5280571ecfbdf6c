package storetest

import (
	"bytes"
	"slices"
	"testing"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// signedEvents runs SignedEvents and reads each entry back, checking that
// its signature is the one made with its record.
func signedEvents(t *testing.T, s store.Store, q store.SignedQuery) ([]store.FeedEntry, []sealed) {
	t.Helper()
	got, err := s.SignedEvents(t.Context(), q)
	if err != nil {
		t.Fatalf("SignedEvents(%+v): %v", q, err)
	}
	if got == nil {
		t.Fatalf("SignedEvents(%+v): want an empty list, never nil", q)
	}
	recs := make([]sealed, len(got))
	for i, e := range got {
		recs[i] = unseal(t, e)
	}
	return got, recs
}

// wantSigned checks the types, in order, and the subject of a
// SignedEvents answer.
func wantSigned(t *testing.T, what string, recs []sealed, tier, subject string, types ...catalog.EventType) {
	t.Helper()
	var got []catalog.EventType
	for _, r := range recs {
		got = append(got, r.Type)
		if r.Tier != tier || r.subject() != subject {
			t.Errorf("%s: want records of %s on %s, got one of %s on %s", what, subject, tier, r.subject(), r.Tier)
		}
	}
	if !slices.Equal(got, types) {
		t.Errorf("%s: want %v, newest first; got %v", what, types, got)
	}
}

func testSignedEvents(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	p := addPatch(t, hub, kernelA, x86, "1.1")
	q := addPatch(t, hub, kernelA, x86, "1.2")
	promote(t, hub, p, "beta")
	tok := token("e000000000000002", catalog.TokenAuth, "edge")
	addToken(t, hub, tok)
	withdraw(t, hub, p)
	removePatch(t, hub, q)

	offer := []catalog.EventType{catalog.EventPatchAdded, catalog.EventPatchPromoted}
	gone := []catalog.EventType{catalog.EventPatchWithdrawn, catalog.EventPatchRemoved}

	_, recs := signedEvents(t, hub, store.SignedQuery{Tier: "edge", Digest: p.Digest, Types: offer})
	wantSigned(t, "the record that put p on edge", recs, "edge", p.Digest, catalog.EventPatchAdded)
	_, recs = signedEvents(t, hub, store.SignedQuery{Tier: "beta", Digest: p.Digest, Types: offer})
	wantSigned(t, "the record that put p on beta", recs, "beta", p.Digest, catalog.EventPatchPromoted)
	_, recs = signedEvents(t, hub, store.SignedQuery{Tier: "beta", Digest: p.Digest, Types: gone})
	wantSigned(t, "p's withdrawal on beta", recs, "beta", p.Digest, catalog.EventPatchWithdrawn)
	_, recs = signedEvents(t, hub, store.SignedQuery{Tier: "edge", Digest: q.Digest, Types: gone})
	wantSigned(t, "q's removal on edge, after its row is gone", recs, "edge", q.Digest, catalog.EventPatchRemoved)
	_, recs = signedEvents(t, hub, store.SignedQuery{Tier: "edge", Digest: p.Digest, Limit: 5,
		Types: []catalog.EventType{catalog.EventPatchAdded, catalog.EventPatchWithdrawn}})
	wantSigned(t, "p's events on edge", recs, "edge", p.Digest, catalog.EventPatchWithdrawn, catalog.EventPatchAdded)
	_, recs = signedEvents(t, hub, store.SignedQuery{Tier: "edge", Digest: p.Digest, Limit: 1,
		Types: []catalog.EventType{catalog.EventPatchAdded, catalog.EventPatchWithdrawn}})
	wantSigned(t, "p's newest event on edge, limit 1", recs, "edge", p.Digest, catalog.EventPatchWithdrawn)
	_, recs = signedEvents(t, hub, store.SignedQuery{Tier: "edge", Types: []catalog.EventType{catalog.EventTokenAdded}, Limit: 10})
	wantSigned(t, "edge's token records", recs, "edge", "token "+tok.ID, catalog.EventTokenAdded)
	_, recs = signedEvents(t, hub, store.SignedQuery{Tier: "stable", Digest: p.Digest, Types: offer})
	wantSigned(t, "p on a tier it never reached", recs, "stable", p.Digest)
	_, recs = signedEvents(t, hub, store.SignedQuery{Tier: "edge", Digest: digestOf("unknown"), Types: offer})
	wantSigned(t, "an unknown patch", recs, "edge", digestOf("unknown"))
	_, err := hub.SignedEvents(ctx, store.SignedQuery{Tier: "edge", Digest: p.Digest})
	wantInvalid(t, "SignedEvents with no type", err)

	// A downstream keeps the hub's bytes under its local tier, and hands
	// them out as they are.
	down := open(t, nil, nil)
	syncRound(t, hub, down, "beta", cursorOf(t, down, "stable"))
	hubEntries, _ := signedEvents(t, hub, store.SignedQuery{Tier: "beta", Digest: p.Digest, Types: offer})
	entries, recs := signedEvents(t, down, store.SignedQuery{Tier: "stable", Digest: p.Digest, Types: offer})
	wantSigned(t, "the downstream's record of p on its stable", recs, "beta", p.Digest, catalog.EventPatchPromoted)
	if len(entries) == 1 && (!bytes.Equal(entries[0].Record, hubEntries[0].Record) || !bytes.Equal(entries[0].Sig, hubEntries[0].Sig)) {
		t.Errorf("downstream's record of p: want the hub's exact bytes and signature")
	}
	_, recs = signedEvents(t, down, store.SignedQuery{Tier: "beta", Digest: p.Digest, Types: offer})
	wantSigned(t, "the downstream's beta, which no link feeds", recs, "beta", p.Digest)

	// Unsigned events are never handed out: a node without a sealer logs
	// its own changes unsigned.
	plain := open(t, nil, nil)
	r := addPatch(t, plain, kernelA, x86, "1.1")
	_, recs = signedEvents(t, plain, store.SignedQuery{Tier: "edge", Digest: r.Digest, Types: offer})
	wantSigned(t, "an unsigned patch.added", recs, "edge", r.Digest)
}
