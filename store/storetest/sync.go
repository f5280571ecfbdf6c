package storetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// OpenSync opens a new, empty store (as Run's open does) that seals its
// patch events with sealer and notifies changes; either may be nil, and a
// nil sealer makes a store that seals nothing, as on every node but the hub.
type OpenSync func(t *testing.T, sealer store.Sealer, changes *store.Changes) store.Store

// RunSync runs the contract of the federation side of a store: sealing,
// the feed, cursors, ApplySynced (of patch and token events), change
// notification and trusted keys.
func RunSync(t *testing.T, open OpenSync) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open OpenSync)
	}{
		{"SealGivesEachTierAContiguousSequence", testSealPerTier},
		{"SealUnderConcurrentChangesStaysContiguous", testSealConcurrent},
		{"SealFailureRollsTheChangeBack", testSealFailure},
		{"FeedPagesBySeqAndByHubSeq", testFeedPaging},
		{"FeedSkipsWhatTheTierNoLongerOffers", testFeedSkip},
		{"ApplySyncedAppliesLogsAndMovesTheCursor", testApplySynced},
		{"ApplySyncedUnappliedEventsAreLoggedOnly", testApplySyncedUnapplied},
		{"ApplySyncedRefusalsChangeNothing", testApplySyncedRefusals},
		{"SealTokensInTheirTiersSequence", testSealTokens},
		{"SealTokenFailureRollsTheChangeBack", testSealTokenFailure},
		{"TokenEventsLoggedUnsealedOffTheHub", testTokenEventsUnsealed},
		{"ApplySyncedTokensAddAndRevoke", testApplySyncedTokens},
		{"ApplySyncedTokensIdempotent", testApplySyncedTokensIdempotent},
		{"ApplySyncedTokenRefusalsChangeNothing", testApplySyncedTokenRefusals},
		{"NodeAdmissionsSealedPerTier", testSealNodes},
		{"NodeAdmissionExtendedToNewTiers", testExtendNode},
		{"NodeAdmissionUpdatedInPlace", testUpdateNode},
		{"NodeAdmissionsUnsealedOffTheHub", testNodesUnsealed},
		{"ApplySyncedNodesAdmitAndRemove", testApplySyncedNodes},
		{"ApplySyncedNodeRefusalsChangeNothing", testApplySyncedNodeRefusals},
		{"RolloutsSealedInTheirTiersSequence", testSealRollouts},
		{"ApplySyncedRolloutsKeepTheLatestState", testApplySyncedRollouts},
		{"ApplySyncedRolloutRefusalsChangeNothing", testApplySyncedRolloutRefusals},
		{"ChangesNotifiedAfterCommitOnly", testChangesNotify},
		{"TrustedKeysAddListRemove", testTrustedKeys},
		{"SignedEventsFindATiersRecordsOfOnePatch", testSignedEvents},
		{"ApplySyncedRevocationTakesTheTokensMachines", testApplySyncedRevokeMachines},
		{"MachineRevocationsSealedOnEveryTier", testSealMachineRevocations},
		{"MachineRevocationSealFailureRollsTheChangeBack", testSealMachineRevocationFailure},
		{"ApplySyncedMachineRevocationsRefuseEverywhere", testApplySyncedMachines},
		{"ApplySyncedMachineRevocationRefusalsChangeNothing", testApplySyncedMachineRefusals},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// sealed is what the test sealer signs: its request, as JSON. A real
// sealer's format is the federation package's; the store must not care.
type sealed struct {
	Tier    string                     `json:"tier"`
	TierSeq int64                      `json:"tier_seq"`
	Type    catalog.EventType          `json:"type"`
	Patch   catalog.Patch              `json:"patch"`
	Token   *sealedToken               `json:"token,omitempty"`
	Node    *catalog.Node              `json:"node,omitempty"`
	Rollout *catalog.Rollout           `json:"rollout,omitempty"`
	Machine *catalog.MachineRevocation `json:"machine,omitempty"`
	Time    time.Time                  `json:"time"`
}

// sealedToken is a token as the test sealer signs it: with its hash, which
// catalog.Token's JSON leaves out and a downstream needs.
type sealedToken struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Hash    []byte    `json:"hash"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Revoked time.Time `json:"revoked"`
	// RevokeMachines is the revocation's word that the token's machines
	// go with it, as federation.TokenRecord signs it.
	RevokeMachines bool `json:"revoke_machines,omitempty"`
}

// catalogNode is what a sync loop hands the store for a sealed node: the
// signed facts, admitted on the record's tier.
func (r sealed) catalogNode() *catalog.Node {
	if r.Node == nil {
		return nil
	}
	n := *r.Node
	n.Tiers = []string{r.Tier}
	return &n
}

// catalogToken is what a sync loop hands the store for a sealed token:
// the signed facts, as an auth token of the record's tier.
func (r sealed) catalogToken() *catalog.Token {
	if r.Token == nil {
		return nil
	}
	return &catalog.Token{
		ID: r.Token.ID, Kind: catalog.TokenAuth, Tier: r.Tier, Name: r.Token.Name, Hash: r.Token.Hash,
		Created: r.Token.Created, Expires: r.Token.Expires, Revoked: r.Token.Revoked, RevokeMachines: r.Token.RevokeMachines,
	}
}

// testSealer seals deterministically: the record is JSON of its arguments
// and the signature the record's SHA-256, so a test can read what it was
// asked to seal back from the feed. Setting fail makes every Seal fail.
type testSealer struct {
	mu   sync.Mutex
	fail error
}

func (s *testSealer) Seal(e store.SealRequest) ([]byte, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return nil, nil, s.fail
	}
	// State is not signed, as federation.Sign does not sign it.
	p := e.Patch
	p.Tiers = nil
	p.Withdrawn = false
	r := sealed{Tier: e.Tier, TierSeq: e.TierSeq, Type: e.Type, Patch: p, Time: e.At}
	if t := e.Token; t != nil {
		r.Token = &sealedToken{ID: t.ID, Name: t.Name, Hash: t.Hash, Created: t.Created, Expires: t.Expires, Revoked: t.Revoked,
			RevokeMachines: t.RevokeMachines}
	}
	if n := e.Node; n != nil {
		c := *n
		c.Tiers = nil
		r.Node = &c
	}
	r.Rollout = e.Rollout
	r.Machine = e.Machine
	rec, err := json.Marshal(r)
	if err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256(rec)
	return rec, sum[:], nil
}

func (s *testSealer) setFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = err
}

// unseal reads a feed entry's record back and checks that its signature
// and HubSeq belong to it.
func unseal(t *testing.T, e store.FeedEntry) sealed {
	t.Helper()
	var r sealed
	if err := json.Unmarshal(e.Record, &r); err != nil {
		t.Fatalf("feed entry %d: record is not what the sealer made: %v (%q)", e.Seq, err, e.Record)
	}
	if sum := sha256.Sum256(e.Record); !bytes.Equal(e.Sig, sum[:]) {
		t.Errorf("feed entry %d: signature is not the one made with the record", e.Seq)
	}
	if e.HubSeq != r.TierSeq {
		t.Errorf("feed entry %d: HubSeq %d, but the record says %d", e.Seq, e.HubSeq, r.TierSeq)
	}
	return r
}

// feedAll reads a tier's whole feed (bounded: the suite makes few events).
func feedAll(t *testing.T, s store.Store, tier string) store.FeedPage {
	t.Helper()
	page, err := s.Feed(t.Context(), tier, store.FeedPosition{}, 1000)
	if err != nil {
		t.Fatalf("Feed(%s): %v", tier, err)
	}
	return page
}

// wantFeed checks a tier's whole feed: the events' types and digests in
// order, tier sequence 1, 2, 3… within the tier, Seq rising, and the head.
func wantFeed(t *testing.T, s store.Store, tier string, want ...sealed) []store.FeedEntry {
	t.Helper()
	page := feedAll(t, s, tier)
	if len(page.Entries) != len(want) {
		t.Fatalf("Feed(%s): want %d entries, got %d", tier, len(want), len(page.Entries))
	}
	for i, e := range page.Entries {
		r := unseal(t, e)
		if r.Tier != tier || r.TierSeq != int64(i+1) || r.Type != want[i].Type || r.subject() != want[i].subject() {
			t.Errorf("Feed(%s) entry %d: want %s of %s, tier seq %d; got %s of %s on %q, tier seq %d",
				tier, i, want[i].Type, want[i].subject(), i+1, r.Type, r.subject(), r.Tier, r.TierSeq)
		}
		if i > 0 && e.Seq <= page.Entries[i-1].Seq {
			t.Errorf("Feed(%s): Seq %d after %d, want rising", tier, e.Seq, page.Entries[i-1].Seq)
		}
	}
	var wantHead, wantHubHead int64
	if n := len(page.Entries); n > 0 {
		wantHead, wantHubHead = page.Entries[n-1].Seq, page.Entries[n-1].HubSeq
	}
	if page.Head != wantHead || page.HubHead != wantHubHead {
		t.Errorf("Feed(%s) head: want %d (hub %d), got %d (hub %d)", tier, wantHead, wantHubHead, page.Head, page.HubHead)
	}
	return page.Entries
}

func ev(typ catalog.EventType, p catalog.Patch) sealed { return sealed{Type: typ, Patch: p} }

// tokenEv is a wanted token event, for wantFeed.
func tokenEv(typ catalog.EventType, tok catalog.Token) sealed {
	return sealed{Type: typ, Token: &sealedToken{ID: tok.ID}}
}

// subject names what a sealed event is about: its token or its patch.
func (r sealed) subject() string {
	if r.Token != nil {
		return "token " + r.Token.ID
	}
	if r.Node != nil {
		return "node " + r.Node.Name
	}
	if r.Rollout != nil {
		return "rollout " + r.Rollout.ID
	}
	if r.Machine != nil {
		return "machine " + r.Machine.ID
	}
	return r.Patch.Digest
}

func promote(t *testing.T, s store.Store, p catalog.Patch, tier string) catalog.Patch {
	t.Helper()
	p, err := s.Promote(t.Context(), p.Digest, tier)
	if err != nil {
		t.Fatalf("Promote(%s, %s): %v", p.Digest, tier, err)
	}
	return p
}

func withdraw(t *testing.T, s store.Store, p catalog.Patch) catalog.Patch {
	t.Helper()
	p, err := s.Withdraw(t.Context(), p.Digest)
	if err != nil {
		t.Fatalf("Withdraw(%s): %v", p.Digest, err)
	}
	return p
}

func removePatch(t *testing.T, s store.Store, p catalog.Patch) {
	t.Helper()
	if err := s.RemovePatch(t.Context(), p.Digest); err != nil {
		t.Fatalf("RemovePatch(%s): %v", p.Digest, err)
	}
}

// Sealing.

func testSealPerTier(t *testing.T, open OpenSync) {
	hub := open(t, &testSealer{}, nil)
	a := addPatch(t, hub, kernelA, x86, "1.1")
	b := addPatch(t, hub, kernelA, x86, "1.2")
	promote(t, hub, a, "beta")
	promote(t, hub, b, "stable")
	if n, err := hub.PromoteAll(t.Context(), "edge", "candidate"); err != nil || n != 2 {
		t.Fatalf("PromoteAll(edge, candidate): want 2, got %d (err %v)", n, err)
	}
	// Tier events are not sealed, and take no tier sequence number.
	if _, err := hub.AddTier(t.Context(), "canary"); err != nil {
		t.Fatal(err)
	}
	h := head(t, hub)
	withdraw(t, hub, a)
	es := eventsAfter(t, hub, h)
	if len(es) != 3 || es[0].Tier != "edge" || es[1].Tier != "beta" || es[2].Tier != "candidate" {
		t.Fatalf("Withdraw of a patch on edge, beta and candidate: want 3 events in tier order, got %+v", es)
	}
	removePatch(t, hub, b)

	wantFeed(t, hub, "edge",
		ev(catalog.EventPatchAdded, a), ev(catalog.EventPatchAdded, b),
		ev(catalog.EventPatchWithdrawn, a), ev(catalog.EventPatchRemoved, b))
	wantFeed(t, hub, "beta", ev(catalog.EventPatchPromoted, a), ev(catalog.EventPatchWithdrawn, a))
	// PromoteAll goes in (kernel, arch, version) order: a before b.
	wantFeed(t, hub, "candidate",
		ev(catalog.EventPatchPromoted, a), ev(catalog.EventPatchPromoted, b),
		ev(catalog.EventPatchWithdrawn, a), ev(catalog.EventPatchRemoved, b))
	wantFeed(t, hub, "stable", ev(catalog.EventPatchPromoted, b), ev(catalog.EventPatchRemoved, b))
	wantFeed(t, hub, "canary")

	// The sealer is given the patch after the change and the change's time.
	e := feedAll(t, hub, "beta").Entries[1]
	r := unseal(t, e)
	log := eventsAfter(t, hub, e.Seq-1)[0]
	if !r.Patch.Created.Equal(a.Created) || r.Patch.Version != a.Version || !r.Time.Equal(log.Created) {
		t.Errorf("sealed withdrawal: want patch %s created %v at %v, got %s created %v at %v",
			a.Version, a.Created, log.Created, r.Patch.Version, r.Patch.Created, r.Time)
	}
}

func testSealConcurrent(t *testing.T, open OpenSync) {
	hub := open(t, &testSealer{}, nil)
	const writers, each = 8, 4
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := hub.AddPatch(t.Context(), newPatch(kernelA, x86, fmt.Sprintf("%d.%d", w+1, i))); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent AddPatch: %v", err)
	}
	entries := feedAll(t, hub, "edge").Entries
	if len(entries) != writers*each {
		t.Fatalf("Feed(edge): want %d entries, got %d", writers*each, len(entries))
	}
	for i, e := range entries {
		if r := unseal(t, e); r.TierSeq != int64(i+1) {
			t.Fatalf("Feed(edge) entry %d (seq %d): want tier seq %d in log order, got %d", i, e.Seq, i+1, r.TierSeq)
		}
	}
}

func testSealFailure(t *testing.T, open OpenSync) {
	ctx := t.Context()
	sealer := &testSealer{}
	ch := &store.Changes{}
	hub := open(t, sealer, ch)
	a := addPatch(t, hub, kernelA, x86, "1.1")
	h := head(t, hub)

	sealer.setFail(errors.New("signing key unreadable"))
	wait := ch.Wait()
	b := newPatch(kernelA, x86, "1.2")
	if _, err := hub.AddPatch(ctx, b); err == nil {
		t.Error("AddPatch with a failing sealer: want an error, got nil")
	}
	if _, err := hub.Promote(ctx, a.Digest, "beta"); err == nil {
		t.Error("Promote with a failing sealer: want an error, got nil")
	}
	if _, err := hub.Withdraw(ctx, a.Digest); err == nil {
		t.Error("Withdraw with a failing sealer: want an error, got nil")
	}
	wantNoEvent(t, hub, h, "changes whose seal failed")
	if _, err := hub.Patch(ctx, b.Digest); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("Patch after a failed sealed AddPatch: want ErrNotFound, got %v", err)
	}
	got, err := hub.Patch(ctx, a.Digest)
	if err != nil || got.Withdrawn || !slices.Equal(got.Tiers, []string{"edge"}) {
		t.Errorf("patch after failed sealed changes: want live on [edge], got %+v (err %v)", got, err)
	}
	select {
	case <-wait:
		t.Error("Changes: notified although every change failed")
	default:
	}

	// Once sealing works again the tier sequence goes on with no gap.
	sealer.setFail(nil)
	b = addPatch(t, hub, kernelA, x86, "1.2")
	wantFeed(t, hub, "edge", ev(catalog.EventPatchAdded, a), ev(catalog.EventPatchAdded, b))
}

// Feed.

func testFeedPaging(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	if page := feedAll(t, hub, "edge"); len(page.Entries) != 0 || page.Head != 0 || page.HubHead != 0 {
		t.Errorf("Feed of an empty log: want no entries, head 0/0; got %d entries, head %d/%d",
			len(page.Entries), page.Head, page.HubHead)
	}
	// Five events on edge, interleaved with beta's so that edge's Seqs
	// have holes.
	var edge []catalog.Patch
	for i := range 5 {
		p := addPatch(t, hub, kernelA, x86, fmt.Sprintf("1.%d", i))
		promote(t, hub, p, "beta")
		edge = append(edge, p)
	}
	all := wantFeed(t, hub, "edge",
		ev(catalog.EventPatchAdded, edge[0]), ev(catalog.EventPatchAdded, edge[1]), ev(catalog.EventPatchAdded, edge[2]),
		ev(catalog.EventPatchAdded, edge[3]), ev(catalog.EventPatchAdded, edge[4]))
	seqs := func(es []store.FeedEntry) []int64 {
		var out []int64
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		pos   store.FeedPosition
		limit int
		want  []store.FeedEntry
	}{
		{"from the start, default limit", store.FeedPosition{}, 0, all},
		{"first page", store.FeedPosition{}, 2, all[:2]},
		{"after a seq", store.FeedPosition{AfterSeq: all[1].Seq}, 2, all[2:4]},
		{"after a seq in a hole", store.FeedPosition{AfterSeq: all[1].Seq + 1}, 10, all[2:]},
		{"after the head", store.FeedPosition{AfterSeq: all[4].Seq}, 10, nil},
		{"by hub from the start", store.FeedPosition{ByHub: true}, 10, all},
		{"by hub after 2", store.FeedPosition{ByHub: true, AfterHubSeq: 2}, 2, all[2:4]},
		{"by hub after 4", store.FeedPosition{ByHub: true, AfterHubSeq: 4}, 10, all[4:]},
		{"by hub after the head", store.FeedPosition{ByHub: true, AfterHubSeq: 5}, 10, nil},
		{"by hub ignores AfterSeq", store.FeedPosition{ByHub: true, AfterSeq: all[4].Seq, AfterHubSeq: 3}, 10, all[3:]},
	} {
		page, err := hub.Feed(ctx, "edge", tc.pos, tc.limit)
		if err != nil {
			t.Errorf("Feed(edge, %s): %v", tc.name, err)
			continue
		}
		if got, want := seqs(page.Entries), seqs(tc.want); !slices.Equal(got, want) {
			t.Errorf("Feed(edge, %s): want seqs %v, got %v", tc.name, want, got)
		}
		if page.Head != all[4].Seq || page.HubHead != 5 {
			t.Errorf("Feed(edge, %s): want head %d (hub 5) whatever the page, got %d (hub %d)",
				tc.name, all[4].Seq, page.Head, page.HubHead)
		}
		if page.Entries == nil {
			t.Errorf("Feed(edge, %s): want an empty list, not nil", tc.name)
		}
	}
	// Each tier's feed holds its own events only.
	for _, e := range feedAll(t, hub, "beta").Entries {
		if r := unseal(t, e); r.Tier != "beta" || r.Type != catalog.EventPatchPromoted {
			t.Errorf("Feed(beta): entry %d is a %s on %q", e.Seq, r.Type, r.Tier)
		}
	}
	if page := feedAll(t, hub, "nosuch"); len(page.Entries) != 0 || page.Head != 0 {
		t.Errorf("Feed of an unknown tier: want empty, got %d entries, head %d", len(page.Entries), page.Head)
	}
}

func testFeedSkip(t *testing.T, open OpenSync) {
	hub := open(t, &testSealer{}, nil)
	a := addPatch(t, hub, kernelA, x86, "1.1")
	promote(t, hub, a, "beta")
	b := addPatch(t, hub, kernelA, x86, "1.2")
	addPatch(t, hub, kernelA, x86, "1.3")
	skips := func(tier string) []bool {
		var out []bool
		for _, e := range feedAll(t, hub, tier).Entries {
			out = append(out, e.Skip)
		}
		return out
	}
	if got := skips("edge"); !slices.Equal(got, []bool{false, false, false}) {
		t.Errorf("Feed(edge) skips with every patch live: want none, got %v", got)
	}
	withdraw(t, hub, a)
	removePatch(t, hub, b)
	// edge: a added, b added, c added, a withdrawn, b removed. Only c's
	// patch is still offered; withdrawals and removals are never skipped.
	if got, want := skips("edge"), []bool{true, true, false, false, false}; !slices.Equal(got, want) {
		t.Errorf("Feed(edge) skips after withdrawing a and removing b: want %v, got %v", want, got)
	}
	if got, want := skips("beta"), []bool{true, false}; !slices.Equal(got, want) {
		t.Errorf("Feed(beta) skips after withdrawing a: want %v, got %v", want, got)
	}

	// Each skipped entry carries the signed record that explains it: the
	// withdrawal or removal of its patch on its tier; no other entry does.
	for _, tier := range []string{"edge", "beta"} {
		entries := feedAll(t, hub, tier).Entries
		for _, e := range entries {
			if !e.Skip {
				if e.BecauseRecord != nil || e.BecauseSig != nil {
					t.Errorf("Feed(%s) entry %d: not skipped, yet carries a reason", tier, e.Seq)
				}
				continue
			}
			skipped := unseal(t, e)
			var why *store.FeedEntry
			for i := range entries {
				if bytes.Equal(entries[i].Record, e.BecauseRecord) && bytes.Equal(entries[i].Sig, e.BecauseSig) {
					why = &entries[i]
				}
			}
			if why == nil {
				t.Errorf("Feed(%s) entry %d (%s of %s): want the record that explains the skip, got %q", tier, e.Seq, skipped.Type, skipped.Patch.Digest, e.BecauseRecord)
				continue
			}
			r := unseal(t, *why)
			if r.Patch.Digest != skipped.Patch.Digest || why.HubSeq <= e.HubSeq ||
				(r.Type != catalog.EventPatchWithdrawn && r.Type != catalog.EventPatchRemoved) {
				t.Errorf("Feed(%s) entry %d: reason is a %s of %s at hub seq %d, want a later withdrawal or removal of %s",
					tier, e.Seq, r.Type, r.Patch.Digest, why.HubSeq, skipped.Patch.Digest)
			}
		}
	}
}

// ApplySynced.

const upstreamURL = "http://127.0.0.1:7070"

// toSynced turns feed entries into the events a sync loop would apply.
func toSynced(t *testing.T, entries []store.FeedEntry, apply bool) []store.SyncedEvent {
	t.Helper()
	var out []store.SyncedEvent
	for _, e := range entries {
		r := unseal(t, e)
		out = append(out, store.SyncedEvent{
			Record: e.Record, Sig: e.Sig, HubSeq: e.HubSeq, Type: r.Type, Patch: r.Patch,
			Token: r.catalogToken(), Node: r.catalogNode(), Rollout: r.Rollout, Machine: r.Machine, Apply: apply,
		})
	}
	return out
}

// syncRound applies the hub tier's feed after cur to the downstream's
// local tier, as one sync round does, and returns the new cursor.
func syncRound(t *testing.T, hub, down store.Store, hubTier string, cur store.Cursor) store.Cursor {
	t.Helper()
	page, err := hub.Feed(t.Context(), hubTier, store.FeedPosition{AfterSeq: cur.UpstreamSeq}, 100)
	if err != nil {
		t.Fatalf("Feed(%s): %v", hubTier, err)
	}
	next := cur
	next.HubTier, next.Upstream = hubTier, upstreamURL
	if n := len(page.Entries); n > 0 {
		next.HubSeq, next.UpstreamSeq = page.Entries[n-1].HubSeq, page.Entries[n-1].Seq
	}
	if err := down.ApplySynced(t.Context(), cur, next, toSynced(t, page.Entries, true)); err != nil {
		t.Fatalf("ApplySynced(%s, hub seq %d → %d): %v", cur.Tier, cur.HubSeq, next.HubSeq, err)
	}
	got, err := down.Cursor(t.Context(), cur.Tier)
	if err != nil {
		t.Fatalf("Cursor(%s): %v", cur.Tier, err)
	}
	if !got.Updated.After(time.Time{}) {
		t.Errorf("Cursor(%s) after ApplySynced: Updated is zero", cur.Tier)
	}
	got.Updated = time.Time{}
	next.Updated = time.Time{}
	if got != next {
		t.Errorf("Cursor(%s) after ApplySynced:\nwant %+v\ngot  %+v", cur.Tier, next, got)
	}
	return got
}

func cursorOf(t *testing.T, s store.Store, tier string) store.Cursor {
	t.Helper()
	c, err := s.Cursor(t.Context(), tier)
	if err != nil {
		t.Fatalf("Cursor(%s): %v", tier, err)
	}
	return c
}

func testApplySynced(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	down := open(t, nil, nil)
	// The hub's edge feeds the downstream's stable, whose tier has another
	// name on purpose: the link maps tiers.
	created := time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC)
	in := newPatch(kernelA, x86, "1.1")
	in.Created = created
	p, err := hub.AddPatch(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	q := addPatch(t, hub, kernelB, arm, "2.1")

	cur := cursorOf(t, down, "stable")
	if cur != (store.Cursor{Tier: "stable"}) {
		t.Fatalf("Cursor of a tier that never synced: want the zero cursor for stable, got %+v", cur)
	}
	cur = syncRound(t, hub, down, "edge", cur)

	got, err := down.Patch(ctx, p.Digest)
	if err != nil {
		t.Fatalf("Patch on the downstream after sync: %v", err)
	}
	want := p
	want.Tiers = []string{"stable"}
	wantSame(t, "synced patch (facts, Created kept, on the local tier)", got, want)
	// The downstream serves the hub's exact bytes under its own seqs.
	hubEntries := feedAll(t, hub, "edge").Entries
	downEntries := feedAll(t, down, "stable").Entries
	if len(downEntries) != 2 {
		t.Fatalf("downstream Feed(stable): want 2 entries, got %d", len(downEntries))
	}
	log := eventsAfter(t, down, 0)
	for i, e := range downEntries {
		if !bytes.Equal(e.Record, hubEntries[i].Record) || !bytes.Equal(e.Sig, hubEntries[i].Sig) || e.HubSeq != int64(i+1) || e.Skip {
			t.Errorf("downstream feed entry %d: want the hub's record and sig, hub seq %d, not skipped; got hub seq %d, skip %v",
				i, i+1, e.HubSeq, e.Skip)
		}
		if e.Seq != log[i].Seq || log[i].Tier != "stable" || log[i].Type != catalog.EventPatchAdded {
			t.Errorf("downstream log event %d: want a patch.added on stable at the feed's seq %d, got %+v", i, e.Seq, log[i])
		}
	}
	wantPatchEvent(t, log[0], catalog.EventPatchAdded, "stable", want)

	// A round with nothing new moves nothing and logs nothing.
	h := head(t, down)
	cur = syncRound(t, hub, down, "edge", cur)
	wantNoEvent(t, down, h, "a sync round with nothing new")

	// A withdrawal and a removal propagate.
	withdraw(t, hub, p)
	removePatch(t, hub, q)
	cur = syncRound(t, hub, down, "edge", cur)
	if cur.HubSeq != 4 {
		t.Errorf("cursor after withdrawal and removal: want hub seq 4, got %d", cur.HubSeq)
	}
	got, err = down.Patch(ctx, p.Digest)
	if err != nil || !got.Withdrawn {
		t.Errorf("synced patch after the hub withdrew it: want withdrawn, got %+v (err %v)", got, err)
	}
	if _, err := down.Newest(ctx, "stable", kernelA, x86); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("Newest on the downstream after withdrawal: want ErrNotFound, got %v", err)
	}
	if _, err := down.Patch(ctx, q.Digest); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("synced patch after the hub removed it: want ErrNotFound, got %v", err)
	}
	skips := []bool{}
	for _, e := range feedAll(t, down, "stable").Entries {
		skips = append(skips, e.Skip)
	}
	if want := []bool{true, true, false, false}; !slices.Equal(skips, want) {
		t.Errorf("downstream Feed(stable) skips: want %v, got %v", want, skips)
	}

	// A relay of the downstream applies the downstream's feed the same way
	// and ends with the hub's bytes too.
	relay := open(t, nil, nil)
	rcur := syncRound(t, down, relay, "stable", cursorOf(t, relay, "beta"))
	if rcur.HubSeq != 4 {
		t.Errorf("relay cursor: want hub seq 4, got %d", rcur.HubSeq)
	}
	hubEntries = feedAll(t, hub, "edge").Entries
	relayEntries := feedAll(t, relay, "beta").Entries
	if len(relayEntries) != len(hubEntries) {
		t.Fatalf("relay Feed(beta): want %d entries, got %d", len(hubEntries), len(relayEntries))
	}
	for i, e := range relayEntries {
		if !bytes.Equal(e.Record, hubEntries[i].Record) {
			t.Errorf("relay feed entry %d: want the hub's record bytes", i)
		}
	}
	// The relay replayed the whole history: p arrived and was withdrawn,
	// q arrived and was removed.
	if got, err := relay.Patch(ctx, p.Digest); err != nil || !got.Withdrawn || !slices.Equal(got.Tiers, []string{"beta"}) {
		t.Errorf("relay's patch: want withdrawn on [beta], got %+v (err %v)", got, err)
	}
	if _, err := relay.Patch(ctx, q.Digest); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("relay's removed patch: want ErrNotFound, got %v", err)
	}
}

func testApplySyncedUnapplied(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	down := open(t, nil, nil)
	p := addPatch(t, hub, kernelA, x86, "1.1")
	entries := feedAll(t, hub, "edge").Entries
	next := store.Cursor{Tier: "edge", HubTier: "edge", HubSeq: 1, Upstream: upstreamURL, UpstreamSeq: entries[0].Seq}
	if err := down.ApplySynced(ctx, store.Cursor{Tier: "edge"}, next, toSynced(t, entries, false)); err != nil {
		t.Fatalf("ApplySynced of an unapplied event: %v", err)
	}
	if _, err := down.Patch(ctx, p.Digest); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("Patch after an unapplied add: want ErrNotFound, got %v", err)
	}
	es := eventsAfter(t, down, 0)
	if len(es) != 1 {
		t.Fatalf("downstream log after an unapplied add: want 1 event, got %d", len(es))
	}
	// With no local patch, the log carries the signed facts.
	facts := p
	facts.Tiers = []string{}
	wantPatchEvent(t, es[0], catalog.EventPatchAdded, "edge", facts)
	feed := feedAll(t, down, "edge").Entries
	if len(feed) != 1 || !feed[0].Skip || !bytes.Equal(feed[0].Record, entries[0].Record) {
		t.Errorf("downstream feed after an unapplied add: want the hub's record, skipped; got %+v", feed)
	}
	if feed[0].BecauseRecord != nil {
		t.Errorf("downstream feed: a skip applied without a reason serves one: %q", feed[0].BecauseRecord)
	}

	// A skip applied with its reason (the hub's later withdrawal, still in
	// a page to come) serves that reason onward until the withdrawal
	// itself is in the log, and the log's copy after.
	relay, hub2 := open(t, nil, nil), open(t, &testSealer{}, nil)
	withdraw(t, hub2, addPatch(t, hub2, kernelA, x86, "1.1"))
	hub2Entries := feedAll(t, hub2, "edge").Entries
	withdrawal := hub2Entries[1]
	skipped := toSynced(t, hub2Entries[:1], false)
	skipped[0].BecauseRecord, skipped[0].BecauseSig = withdrawal.Record, withdrawal.Sig
	rnext := store.Cursor{Tier: "edge", HubTier: "edge", HubSeq: 1, Upstream: upstreamURL, UpstreamSeq: hub2Entries[0].Seq}
	if err := relay.ApplySynced(ctx, store.Cursor{Tier: "edge"}, rnext, skipped); err != nil {
		t.Fatalf("ApplySynced of a skip with its reason: %v", err)
	}
	rfeed := feedAll(t, relay, "edge").Entries
	if len(rfeed) != 1 || !rfeed[0].Skip || !bytes.Equal(rfeed[0].BecauseRecord, withdrawal.Record) || !bytes.Equal(rfeed[0].BecauseSig, withdrawal.Sig) {
		t.Fatalf("relay feed after a skip with its reason: want the reason served, got %+v", rfeed)
	}
	rnext2 := store.Cursor{Tier: "edge", HubTier: "edge", HubSeq: 2, Upstream: upstreamURL, UpstreamSeq: withdrawal.Seq}
	if err := relay.ApplySynced(ctx, rnext, rnext2, toSynced(t, []store.FeedEntry{withdrawal}, true)); err != nil {
		t.Fatalf("ApplySynced of the withdrawal: %v", err)
	}
	if rfeed = feedAll(t, relay, "edge").Entries; len(rfeed) != 2 || !bytes.Equal(rfeed[0].BecauseRecord, withdrawal.Record) {
		t.Fatalf("relay feed after the withdrawal arrived: want it as the reason, got %+v", rfeed)
	}

	// A withdrawal is applied even when marked not to be: a patch the hub
	// took back must not stay offered.
	local := newPatch(kernelB, x86, "9.1")
	if _, err := down.AddPatch(ctx, local); err != nil {
		t.Fatal(err)
	}
	hubLocal := addPatch(t, hub, kernelB, x86, "9.1")
	withdraw(t, hub, hubLocal)
	entries = feedAll(t, hub, "edge").Entries[1:]
	prev := next
	next.HubSeq, next.UpstreamSeq = 3, entries[1].Seq
	evs := toSynced(t, entries, false)
	if err := down.ApplySynced(ctx, prev, next, evs); err != nil {
		t.Fatalf("ApplySynced of an unapplied withdrawal: %v", err)
	}
	if got, err := down.Patch(ctx, local.Digest); err != nil || !got.Withdrawn {
		t.Errorf("local patch after a synced withdrawal marked unapplied: want withdrawn, got %+v (err %v)", got, err)
	}
}

func testApplySyncedRefusals(t *testing.T, open OpenSync) {
	ctx := t.Context()
	hub := open(t, &testSealer{}, nil)
	down := open(t, nil, nil)
	a := addPatch(t, hub, kernelA, x86, "1.1")
	b := addPatch(t, hub, kernelA, x86, "1.2")
	addPatch(t, hub, kernelA, x86, "1.3")
	entries := feedAll(t, hub, "edge").Entries
	evs := toSynced(t, entries, true)
	zero := store.Cursor{Tier: "edge"}
	cur := store.Cursor{Tier: "edge", HubTier: "edge", HubSeq: 1, Upstream: upstreamURL, UpstreamSeq: entries[0].Seq}
	if err := down.ApplySynced(ctx, zero, cur, evs[:1]); err != nil {
		t.Fatal(err)
	}
	// A local patch that takes c's (kernel, arch, version) under another
	// digest makes c's event fail after b's was applied.
	clash := newPatch(kernelA, x86, "1.3")
	clash.Digest = digestOf("a local build")
	if _, err := down.AddPatch(ctx, clash); err != nil {
		t.Fatal(err)
	}
	h := head(t, down)
	next := cur
	next.HubSeq, next.UpstreamSeq = 3, entries[2].Seq
	for _, tc := range []struct {
		name       string
		prev, next store.Cursor
		events     []store.SyncedEvent
		want       error
	}{
		{"stale prev (a second writer)", zero, next, evs[1:], catalog.ErrConflict},
		{"prev from another upstream", func() store.Cursor { c := cur; c.Upstream = "http://127.0.0.2:7070"; return c }(),
			next, evs[1:], catalog.ErrConflict},
		{"a gap in the hub sequence", cur, next, []store.SyncedEvent{evs[2]}, catalog.ErrConflict},
		{"a replayed event", cur, next, evs[0:2], catalog.ErrConflict},
		{"an unknown local tier", store.Cursor{Tier: "nosuch"}, store.Cursor{Tier: "nosuch", HubTier: "edge", HubSeq: 1},
			evs[:1], catalog.ErrNotFound},
		{"a version clash midway", cur, next, evs[1:], catalog.ErrConflict},
	} {
		err := down.ApplySynced(ctx, tc.prev, tc.next, tc.events)
		wantErr(t, "ApplySynced with "+tc.name, err, tc.want)
		wantNoEvent(t, down, h, "ApplySynced with "+tc.name)
		got := cursorOf(t, down, "edge")
		got.Updated = time.Time{}
		if got != cur {
			t.Errorf("cursor after ApplySynced with %s: want %+v kept, got %+v", tc.name, cur, got)
		}
		if _, err := down.Patch(ctx, b.Digest); !errors.Is(err, catalog.ErrNotFound) {
			t.Errorf("ApplySynced with %s: want b not stored, got %v", tc.name, err)
		}
	}
	if _, err := down.Patch(ctx, a.Digest); err != nil {
		t.Errorf("patch of the first, applied round: want kept, got %v", err)
	}
	// A next cursor that does not end where the events do is refused.
	bad := next
	bad.HubSeq = 7
	wantInvalid(t, "ApplySynced with next past the events", down.ApplySynced(ctx, cur, bad, evs[1:]))
}

// Changes.

func testChangesNotify(t *testing.T, open OpenSync) {
	ctx := t.Context()
	ch := &store.Changes{}
	s := open(t, &testSealer{}, ch)
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	w := ch.Wait()
	p := addPatch(t, s, kernelA, x86, "1.1")
	// Notify runs before AddPatch returns, so no waiting is needed.
	if !closed(w) {
		t.Error("Changes: a waiter taken before AddPatch was not woken by it")
	}
	w = ch.Wait()
	if _, err := s.AddPatch(ctx, newPatch(kernelA, x86, "1.1")); !errors.Is(err, catalog.ErrConflict) {
		t.Fatalf("duplicate AddPatch: want ErrConflict, got %v", err)
	}
	if _, err := s.Promote(ctx, p.Digest, "nosuch"); err == nil {
		t.Fatal("Promote to an unknown tier: want an error")
	}
	if closed(w) {
		t.Error("Changes: woken by changes that failed and rolled back")
	}
	withdraw(t, s, p)
	if !closed(w) {
		t.Error("Changes: a waiter was not woken by Withdraw")
	}

	down := open(t, nil, ch)
	w = ch.Wait()
	syncRound(t, s, down, "edge", cursorOf(t, down, "edge"))
	if !closed(w) {
		t.Error("Changes: a waiter was not woken by ApplySynced")
	}
	w = ch.Wait()
	err := down.ApplySynced(ctx, store.Cursor{Tier: "edge"}, store.Cursor{Tier: "edge"}, nil)
	wantErr(t, "ApplySynced from a stale cursor", err, catalog.ErrConflict)
	if closed(w) {
		t.Error("Changes: woken by an ApplySynced that was refused")
	}
}

// Trusted keys.

func testTrustedKeys(t *testing.T, open OpenSync) {
	ctx := t.Context()
	s := open(t, nil, nil)
	list, err := s.TrustedKeys(ctx)
	if err != nil || list == nil || len(list) != 0 {
		t.Fatalf("TrustedKeys on a new store: want an empty list, got %v (err %v)", list, err)
	}
	at := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	k1 := store.TrustedKey{ID: "0123456789abcdef", Key: "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Added: at}
	k2 := store.TrustedKey{ID: "fedcba9876543210", Key: "ed25519:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", Added: at.Add(time.Hour)}
	for _, k := range []store.TrustedKey{k2, k1} {
		if err := s.AddTrustedKey(ctx, k); err != nil {
			t.Fatalf("AddTrustedKey(%s): %v", k.ID, err)
		}
	}
	dup := k1
	dup.Key = k2.Key
	wantErr(t, "AddTrustedKey with a pinned ID", s.AddTrustedKey(ctx, dup), catalog.ErrConflict)
	for _, bad := range []store.TrustedKey{
		{ID: "0123456789ABCDEF", Key: k1.Key},
		{ID: "0123456789abcde", Key: k1.Key},
		{ID: "", Key: k1.Key},
		{ID: "1111111111111111", Key: "rsa:AAAA"},
		{ID: "1111111111111111", Key: "ed25519:"},
	} {
		wantInvalid(t, fmt.Sprintf("AddTrustedKey(%q, %q)", bad.ID, bad.Key), s.AddTrustedKey(ctx, bad))
	}
	list, err = s.TrustedKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantSame(t, "TrustedKeys, oldest first", list, []store.TrustedKey{k1, k2})

	if err := s.RemoveTrustedKey(ctx, k1.ID); err != nil {
		t.Fatalf("RemoveTrustedKey: %v", err)
	}
	wantErr(t, "RemoveTrustedKey again", s.RemoveTrustedKey(ctx, k1.ID), catalog.ErrNotFound)
	list, err = s.TrustedKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantSame(t, "TrustedKeys after removal", list, []store.TrustedKey{k2})
	// A zero Added means now.
	k3 := store.TrustedKey{ID: "1111111111111111", Key: k1.Key}
	if err := s.AddTrustedKey(ctx, k3); err != nil {
		t.Fatal(err)
	}
	list, _ = s.TrustedKeys(ctx)
	if len(list) != 2 || list[1].ID != k3.ID || list[1].Added.IsZero() {
		t.Errorf("TrustedKeys after adding a key with no time: want it last with Added set, got %+v", list)
	}
}
