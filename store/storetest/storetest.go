// Package storetest is the contract suite every store.Store backend passes.
//
// A backend's tests call Run with a function that opens a fresh, empty
// store (migrated, default tiers only). The suite owns the meaning of the
// store interface as tests; it does not know any backend, and it measures
// nothing (speed belongs in benchmarks).
package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
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

// Run runs the contract suite. open must return a new, empty store for the
// test it is given and arrange for it to be closed when the test ends.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"TiersStartInDefaultOrder", testDefaultTiers},
		{"AddTierAppendsAndLogs", testAddTier},
		{"AddTierRejectsDuplicateAndInvalid", testAddTierRejects},
		{"RemoveTierDropsAvailabilityAndLogs", testRemoveTier},
		{"RemoveTierRefusesWhileInUse", testRemoveTierInUse},
		{"AddPatchLandsOnFirstTierAndLogs", testAddPatch},
		{"AddPatchRejectsDuplicates", testAddPatchDuplicates},
		{"AddPatchRejectsInvalidInput", testAddPatchInvalid},
		{"PatchUnknownIsNotFound", testPatchUnknown},
		{"PatchesFilterOrderAndLimit", testPatches},
		{"PatchesPageByKeyset", testPatchesPage},
		{"PatchesByDigestPrefix", testPatchesDigestPrefix},
		{"MachinesPageByKeyset", testMachinesPage},
		{"TokensPageByKeyset", testTokensPage},
		{"NewestPicksHighestLiveVersionOnTier", testNewest},
		{"PromoteAddsTierOnceAndLogsOnce", testPromote},
		{"PromoteFailuresChangeNothing", testPromoteFailures},
		{"PromoteAllPromotesLivePatchesWithOneEventEach", testPromoteAll},
		{"WithdrawHidesPatchAndLogs", testWithdraw},
		{"RemovePatchDeletesAndLogs", testRemovePatch},
		{"EventsPageAfterSeq", testEventsPaging},
		{"ConcurrentChangesGetGaplessSeqs", testConcurrentSeqs},
		{"TokensAddGetListRevoke", testTokens},
		{"TokenTimesAreUTCMicroseconds", testTokenTimes},
		{"RegisterMachineRevokesEarlierMachineToken", testRegisterMachine},
		{"RegisterMachineOnUnknownTierStoresNothing", testRegisterMachineUnknownTier},
		{"CheckInUpdatesReport", testCheckIn},
		{"MachinesFilterAndOrder", testMachines},
		{"RootKeysMintPickAndPurge", testRootKeys},
		{"AdminUsers", testAdminUsers},
		{"SecretConcurrentFirstUseAgrees", testSecret},
		{"AuditRowsOnlyForCommittedAdminChanges", testAuditInChangeTx},
		{"WebhooksKeptWithSecrets", testWebhooks},
		{"OutboxInOrderPerHookAndDurableRecord", testOutbox},
		{"RevokeMachineRefusesItUntilDeleted", testRevokeMachine},
		{"RevokeEnrollmentTakesItsMachines", testRevokeEnrollment},
		{"RevokeAdminSessionsOnlyMovesForward", testRevokeAdminSessions},
		{"PurgeFleetKeepsRevokedMachines", testPurgeKeepsRevoked},
		{"Ping", func(t *testing.T, s store.Store) {
			if err := s.Ping(t.Context()); err != nil {
				t.Fatalf("Ping: want nil, got %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}

// Test values.

const (
	kernelA = "5.15.0-107.117-generic"
	kernelB = "6.8.0-45.45-generic"
	x86     = "x86_64"
	arm     = "aarch64"
)

// digestOf gives a stable, valid digest for a label.
func digestOf(label string) string {
	h := sha256.Sum256([]byte(label))
	return "sha256:" + hex.EncodeToString(h[:])
}

func newPatch(kernel, arch, version string) catalog.Patch {
	return catalog.Patch{
		Digest:      digestOf(kernel + "/" + arch + "/" + version),
		Kernel:      kernel,
		Arch:        arch,
		Version:     version,
		Size:        4096,
		CVEs:        []string{"CVE-2024-1086", "CVE-2023-4623"},
		Description: "fixes " + version,
	}
}

func addPatch(t *testing.T, s store.Store, kernel, arch, version string) catalog.Patch {
	t.Helper()
	p, err := s.AddPatch(t.Context(), newPatch(kernel, arch, version))
	if err != nil {
		t.Fatalf("AddPatch %s %s %s: %v", kernel, arch, version, err)
	}
	return p
}

func head(t *testing.T, s store.Store) int64 {
	t.Helper()
	h, err := s.Head(t.Context())
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return h
}

// eventsAfter returns every event after seq (bounded: the suite makes few).
func eventsAfter(t *testing.T, s store.Store, seq int64) []catalog.Event {
	t.Helper()
	es, err := s.Events(t.Context(), seq, 10000)
	if err != nil {
		t.Fatalf("Events(%d): %v", seq, err)
	}
	return es
}

// wantNoEvent fails if the log moved past seq.
func wantNoEvent(t *testing.T, s store.Store, seq int64, after string) {
	t.Helper()
	if h := head(t, s); h != seq {
		t.Errorf("after %s: head want %d (no event appended), got %d", after, seq, h)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: want error wrapping %v, got %v", what, want, err)
	}
}

// wantInvalid checks that err carries a *catalog.InvalidError.
func wantInvalid(t *testing.T, what string, err error) {
	t.Helper()
	var ie *catalog.InvalidError
	if !errors.As(err, &ie) {
		t.Errorf("%s: want a *catalog.InvalidError, got %v", what, err)
	}
}

// js renders a value as JSON so that records (times included) compare by
// what they say rather than by their in-memory form.
func js(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("<unencodable %T: %v>", v, err)
	}
	return string(b)
}

func wantSame(t *testing.T, what string, got, want any) {
	t.Helper()
	if g, w := js(got), js(want); g != w {
		t.Errorf("%s:\nwant %s\ngot  %s", what, w, g)
	}
}

// wantPatchEvent checks one event's header and that its Data is want.
func wantPatchEvent(t *testing.T, e catalog.Event, typ catalog.EventType, tier string, want catalog.Patch) {
	t.Helper()
	if e.Type != typ || e.Tier != tier || e.Digest != want.Digest {
		t.Errorf("event %d: want (%s, tier %q, %s), got (%s, tier %q, %s)",
			e.Seq, typ, tier, want.Digest, e.Type, e.Tier, e.Digest)
	}
	var got catalog.Patch
	if err := json.Unmarshal(e.Data, &got); err != nil {
		t.Errorf("event %d: Data is not a Patch: %v (%s)", e.Seq, err, e.Data)
		return
	}
	wantSame(t, fmt.Sprintf("event %d Data", e.Seq), got, want)
	if e.Created.IsZero() {
		t.Errorf("event %d: Created is zero", e.Seq)
	}
}

func tierNames(ts []catalog.Tier) []string {
	var names []string
	for _, t := range ts {
		names = append(names, t.Name)
	}
	return names
}

func wantTiers(t *testing.T, s store.Store, want ...string) {
	t.Helper()
	ts, err := s.Tiers(t.Context())
	if err != nil {
		t.Fatalf("Tiers: %v", err)
	}
	if got := tierNames(ts); !slices.Equal(got, want) {
		t.Errorf("Tiers: want %v, got %v", want, got)
	}
	for i := 1; i < len(ts); i++ {
		if ts[i].Position <= ts[i-1].Position {
			t.Errorf("Tiers: positions must rise, got %s=%d after %s=%d",
				ts[i].Name, ts[i].Position, ts[i-1].Name, ts[i-1].Position)
		}
	}
}

func token(id string, kind catalog.TokenKind, tier string) catalog.Token {
	h := sha256.Sum256([]byte("secret-" + id))
	return catalog.Token{
		ID:      id,
		Kind:    kind,
		Tier:    tier,
		Name:    "label-" + id,
		Hash:    h[:],
		Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

// machineID is what a hashed machine ID looks like: 64 hex digits.
func machineID(label string) string {
	h := sha256.Sum256([]byte("machine-" + label))
	return hex.EncodeToString(h[:])
}

func machineToken(id, machine, tier string) catalog.Token {
	tok := token(id, catalog.TokenMachine, tier)
	tok.Name = machine
	tok.MachineID = machine
	return tok
}

func machine(label, tier string, seen time.Time) catalog.Machine {
	return catalog.Machine{
		ID:            machineID(label),
		Tier:          tier,
		Kernel:        kernelA,
		Arch:          x86,
		State:         catalog.StateUnknown,
		ClientVersion: "1.0.0",
		Registered:    seen,
		LastSeen:      seen,
	}
}

// Tiers.

func testDefaultTiers(t *testing.T, s store.Store) {
	wantTiers(t, s, catalog.DefaultTiers...)
	tiers, err := s.Tiers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The default tiers are dated when the database was made, not 1970.
	for _, tier := range tiers {
		if age := time.Since(tier.Created); age < 0 || age > time.Hour {
			t.Errorf("default tier %s created %v: want the store's creation time", tier.Name, tier.Created)
		}
	}
	if h := head(t, s); h != 0 {
		t.Errorf("Head of a new store: want 0, got %d", h)
	}
}

func testAddTier(t *testing.T, s store.Store) {
	ctx := t.Context()
	tier, err := s.AddTier(ctx, "canary")
	if err != nil {
		t.Fatalf("AddTier: %v", err)
	}
	if tier.Name != "canary" || tier.Created.IsZero() {
		t.Errorf("AddTier: want canary with Created set, got %+v", tier)
	}
	wantTiers(t, s, "edge", "beta", "candidate", "stable", "canary")
	es := eventsAfter(t, s, 0)
	if len(es) != 1 || es[0].Seq != 1 || es[0].Type != catalog.EventTierAdded || es[0].Tier != "canary" {
		t.Fatalf("events: want one tier.added canary at seq 1, got %+v", es)
	}
	var got catalog.Tier
	if err := json.Unmarshal(es[0].Data, &got); err != nil {
		t.Fatalf("tier.added Data is not a Tier: %v", err)
	}
	wantSame(t, "tier.added Data", got, tier)
}

func testAddTierRejects(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, err := s.AddTier(ctx, "beta")
	wantErr(t, "AddTier(beta) when it exists", err, catalog.ErrConflict)
	for _, bad := range []string{"", "Beta", "-x", "a b", string(make([]byte, 65))} {
		_, err := s.AddTier(ctx, bad)
		wantInvalid(t, fmt.Sprintf("AddTier(%q)", bad), err)
	}
	wantTiers(t, s, catalog.DefaultTiers...)
	wantNoEvent(t, s, 0, "rejected AddTier")
}

func testRemoveTier(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := addPatch(t, s, kernelA, x86, "1.1")
	if _, err := s.Promote(ctx, p.Digest, "beta"); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	// A revoked and an expired token do not hold the tier.
	dead := token("dead00000000000a", catalog.TokenAuth, "beta")
	if err := s.AddToken(ctx, dead); err != nil {
		t.Fatalf("AddToken: %v", err)
	}
	if err := s.RevokeToken(ctx, catalog.TokenAuth, dead.ID, time.Now()); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	expired := token("dead00000000000b", catalog.TokenSync, "beta")
	expired.Expires = time.Now().Add(-time.Hour)
	if err := s.AddToken(ctx, expired); err != nil {
		t.Fatalf("AddToken: %v", err)
	}
	h := head(t, s)
	if err := s.RemoveTier(ctx, "beta"); err != nil {
		t.Fatalf("RemoveTier(beta): %v", err)
	}
	wantTiers(t, s, "edge", "candidate", "stable")
	got, err := s.Patch(ctx, p.Digest)
	if err != nil {
		t.Fatalf("Patch: %v", err)
	}
	if !slices.Equal(got.Tiers, []string{"edge"}) {
		t.Errorf("patch tiers after removing beta: want [edge], got %v", got.Tiers)
	}
	es := eventsAfter(t, s, h)
	if len(es) != 1 || es[0].Type != catalog.EventTierRemoved || es[0].Tier != "beta" || es[0].Seq != h+1 {
		t.Fatalf("events: want one tier.removed beta at seq %d, got %+v", h+1, es)
	}
	// The tier can come back, at the end.
	if _, err := s.AddTier(ctx, "beta"); err != nil {
		t.Fatalf("AddTier(beta) after removal: %v", err)
	}
	wantTiers(t, s, "edge", "candidate", "stable", "beta")

	h = head(t, s)
	err = s.RemoveTier(ctx, "nosuch")
	wantErr(t, "RemoveTier(nosuch)", err, catalog.ErrNotFound)
	wantNoEvent(t, s, h, "RemoveTier of an unknown tier")
}

func testRemoveTierInUse(t *testing.T, s store.Store) {
	ctx := t.Context()
	live := token("0000000000000001", catalog.TokenSync, "beta")
	if err := s.AddToken(ctx, live); err != nil {
		t.Fatalf("AddToken: %v", err)
	}
	m := machine("m1", "candidate", time.Now())
	if err := s.RegisterMachine(ctx, m, machineToken("0000000000000002", m.ID, "candidate")); err != nil {
		t.Fatalf("RegisterMachine: %v", err)
	}
	for _, name := range []string{"beta", "candidate"} {
		err := s.RemoveTier(ctx, name)
		wantErr(t, "RemoveTier("+name+") while in use", err, catalog.ErrConflict)
	}
	wantTiers(t, s, catalog.DefaultTiers...)
	wantNoEvent(t, s, 0, "refused RemoveTier")
	if _, err := s.Token(ctx, live.ID); err != nil {
		t.Errorf("live token after refused RemoveTier: want it kept, got %v", err)
	}
	// Once the token is revoked the tier can go.
	if err := s.RevokeToken(ctx, catalog.TokenSync, live.ID, time.Now()); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	if err := s.RemoveTier(ctx, "beta"); err != nil {
		t.Errorf("RemoveTier(beta) after revoking its token: want nil, got %v", err)
	}
}

// Patches.

func testAddPatch(t *testing.T, s store.Store) {
	ctx := t.Context()
	in := newPatch(kernelA, x86, "107.1")
	p, err := s.AddPatch(ctx, in)
	if err != nil {
		t.Fatalf("AddPatch: %v", err)
	}
	if !slices.Equal(p.Tiers, []string{"edge"}) || p.Withdrawn || p.Created.IsZero() {
		t.Errorf("AddPatch: want on [edge], live, Created set; got tiers %v withdrawn %v created %v",
			p.Tiers, p.Withdrawn, p.Created)
	}
	if p.Digest != in.Digest || p.Kernel != in.Kernel || p.Arch != in.Arch || p.Version != in.Version ||
		p.Size != in.Size || !slices.Equal(p.CVEs, in.CVEs) || p.Description != in.Description {
		t.Errorf("AddPatch: want the input's fields back\nwant %s\ngot  %s", js(in), js(p))
	}
	if p.Created.Location() != time.UTC || p.Created.Nanosecond()%1000 != 0 {
		t.Errorf("AddPatch: Created must be UTC at microseconds, got %v", p.Created)
	}
	got, err := s.Patch(ctx, in.Digest)
	if err != nil {
		t.Fatalf("Patch: %v", err)
	}
	wantSame(t, "Patch after AddPatch", got, p)

	es := eventsAfter(t, s, 0)
	if len(es) != 1 || es[0].Seq != 1 {
		t.Fatalf("events: want one at seq 1, got %+v", es)
	}
	wantPatchEvent(t, es[0], catalog.EventPatchAdded, "edge", p)

	// A patch without CVEs reads back with an empty list, not null.
	bare := newPatch(kernelA, x86, "107.2")
	bare.CVEs = nil
	if _, err := s.AddPatch(ctx, bare); err != nil {
		t.Fatalf("AddPatch without CVEs: %v", err)
	}
	got, err = s.Patch(ctx, bare.Digest)
	if err != nil || got.CVEs == nil || len(got.CVEs) != 0 {
		t.Errorf("Patch without CVEs: want CVEs [], got %#v (err %v)", got.CVEs, err)
	}
}

func testAddPatchDuplicates(t *testing.T, s store.Store) {
	ctx := t.Context()
	orig := addPatch(t, s, kernelA, x86, "107.1")
	sameDigest := newPatch(kernelA, x86, "107.2")
	sameDigest.Digest = orig.Digest
	sameVersion := newPatch(kernelA, x86, "107.1")
	sameVersion.Digest = digestOf("another file")
	for _, tc := range []struct {
		name string
		p    catalog.Patch
	}{
		{"same digest", sameDigest},
		{"same kernel, arch and version", sameVersion},
	} {
		_, err := s.AddPatch(ctx, tc.p)
		wantErr(t, "AddPatch with "+tc.name, err, catalog.ErrConflict)
	}
	wantNoEvent(t, s, 1, "duplicate AddPatch")
	ps, err := s.Patches(ctx, store.PatchFilter{IncludeWithdrawn: true})
	if err != nil {
		t.Fatalf("Patches: %v", err)
	}
	if len(ps) != 1 {
		t.Fatalf("Patches after duplicates: want 1, got %d", len(ps))
	}
	wantSame(t, "the original patch", ps[0], orig)
	// The same version on another arch or kernel is a different patch.
	addPatch(t, s, kernelA, arm, "107.1")
	addPatch(t, s, kernelB, x86, "107.1")
}

func testAddPatchInvalid(t *testing.T, s store.Store) {
	mod := func(f func(p *catalog.Patch)) catalog.Patch {
		p := newPatch(kernelA, x86, "1.1")
		f(&p)
		return p
	}
	for _, tc := range []struct {
		name string
		p    catalog.Patch
	}{
		{"bad digest", mod(func(p *catalog.Patch) { p.Digest = "sha256:XYZ" })},
		{"bad kernel", mod(func(p *catalog.Patch) { p.Kernel = "linux" })},
		{"bad arch", mod(func(p *catalog.Patch) { p.Arch = "i386" })},
		{"bad version", mod(func(p *catalog.Patch) { p.Version = "1.x" })},
		{"zero size", mod(func(p *catalog.Patch) { p.Size = 0 })},
		{"bad CVE", mod(func(p *catalog.Patch) { p.CVEs = []string{"CVE-1"} })},
	} {
		_, err := s.AddPatch(t.Context(), tc.p)
		wantInvalid(t, "AddPatch with "+tc.name, err)
	}
	wantNoEvent(t, s, 0, "invalid AddPatch")
	ps, err := s.Patches(t.Context(), store.PatchFilter{IncludeWithdrawn: true})
	if err != nil || len(ps) != 0 {
		t.Errorf("Patches after invalid adds: want none, got %d (err %v)", len(ps), err)
	}
}

func testPatchUnknown(t *testing.T, s store.Store) {
	_, err := s.Patch(t.Context(), digestOf("nothing"))
	wantErr(t, "Patch(unknown)", err, catalog.ErrNotFound)
}

func testPatches(t *testing.T, s store.Store) {
	ctx := t.Context()
	a9 := addPatch(t, s, kernelA, x86, "9.1")
	a107 := addPatch(t, s, kernelA, x86, "107.1")
	a10710 := addPatch(t, s, kernelA, x86, "107.10")
	arm1 := addPatch(t, s, kernelA, arm, "50.1")
	b1 := addPatch(t, s, kernelB, x86, "3.2")
	if _, err := s.Promote(ctx, a107.Digest, "beta"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Withdraw(ctx, b1.Digest); err != nil {
		t.Fatal(err)
	}
	digests := func(ps []catalog.Patch) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Digest)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    store.PatchFilter
		want []catalog.Patch
	}{
		{"all live, newest first", store.PatchFilter{}, []catalog.Patch{a10710, a107, arm1, a9}},
		{"withdrawn included", store.PatchFilter{IncludeWithdrawn: true}, []catalog.Patch{a10710, a107, arm1, a9, b1}},
		{"kernel and arch", store.PatchFilter{Kernel: kernelA, Arch: x86}, []catalog.Patch{a10710, a107, a9}},
		{"arch", store.PatchFilter{Arch: arm}, []catalog.Patch{arm1}},
		{"tier", store.PatchFilter{Tier: "beta"}, []catalog.Patch{a107}},
		{"version", store.PatchFilter{Version: "107.1"}, []catalog.Patch{a107}},
		{"withdrawn hidden", store.PatchFilter{Kernel: kernelB}, nil},
		{"limit", store.PatchFilter{Limit: 2}, []catalog.Patch{a10710, a107}},
		{"unknown tier", store.PatchFilter{Tier: "nosuch"}, nil},
	} {
		ps, err := s.Patches(ctx, tc.f)
		if err != nil {
			t.Errorf("Patches(%s): %v", tc.name, err)
			continue
		}
		if got, want := digests(ps), digests(tc.want); !slices.Equal(got, want) {
			t.Errorf("Patches(%s):\nwant %v\ngot  %v", tc.name, want, got)
		}
	}
	ps, err := s.Patches(ctx, store.PatchFilter{Version: "107.1"})
	if err != nil || len(ps) != 1 {
		t.Fatalf("Patches(version 107.1): want 1, got %d (err %v)", len(ps), err)
	}
	if !slices.Equal(ps[0].Tiers, []string{"edge", "beta"}) || !slices.Equal(ps[0].CVEs, a107.CVEs) {
		t.Errorf("listed patch: want tiers [edge beta] and CVEs %v, got tiers %v, CVEs %v", a107.CVEs, ps[0].Tiers, ps[0].CVEs)
	}
}

func testNewest(t *testing.T, s store.Store) {
	ctx := t.Context()
	v9 := addPatch(t, s, kernelA, x86, "9.1")
	v107 := addPatch(t, s, kernelA, x86, "107.1")
	v10710 := addPatch(t, s, kernelA, x86, "107.10")
	// Higher versions elsewhere must not leak in.
	addPatch(t, s, kernelA, arm, "500.1")
	addPatch(t, s, kernelB, x86, "600.1")
	for _, p := range []catalog.Patch{v9, v107} {
		if _, err := s.Promote(ctx, p.Digest, "beta"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Promote(ctx, v9.Digest, "stable"); err != nil {
		t.Fatal(err)
	}

	check := func(when, tier, kernel, arch, want string) {
		t.Helper()
		p, err := s.Newest(ctx, tier, kernel, arch)
		if want == "" {
			wantErr(t, fmt.Sprintf("%s: Newest(%s, %s, %s)", when, tier, kernel, arch), err, catalog.ErrNotFound)
			return
		}
		if err != nil {
			t.Errorf("%s: Newest(%s, %s, %s): want %s, got error %v", when, tier, kernel, arch, want, err)
			return
		}
		if p.Version != want {
			t.Errorf("%s: Newest(%s, %s, %s): want version %s, got %s", when, tier, kernel, arch, want, p.Version)
		}
	}
	for _, tc := range []struct {
		tier, kernel, arch, want string
	}{
		{"edge", kernelA, x86, "107.10"}, // numeric, not text, order: 9.1 < 107.1 < 107.10
		{"beta", kernelA, x86, "107.1"},  // 107.10 is not on beta
		{"stable", kernelA, x86, "9.1"},
		{"candidate", kernelA, x86, ""},
		{"edge", kernelA, arm, "500.1"},
		{"edge", kernelB, x86, "600.1"},
		{"edge", kernelB, arm, ""},
		{"edge", "5.15.0-1.1-generic", x86, ""},
		{"nosuch", kernelA, x86, ""},
	} {
		check("before withdrawal", tc.tier, tc.kernel, tc.arch, tc.want)
	}
	got, err := s.Newest(ctx, "edge", kernelA, x86)
	if err != nil {
		t.Fatal(err)
	}
	wantSame(t, "Newest record", got, v10710)

	if _, err := s.Withdraw(ctx, v10710.Digest); err != nil {
		t.Fatal(err)
	}
	check("after withdrawing 107.10", "edge", kernelA, x86, "107.1")
	if err := s.RemovePatch(ctx, v107.Digest); err != nil {
		t.Fatal(err)
	}
	check("after removing 107.1", "edge", kernelA, x86, "9.1")
	check("after removing 107.1", "beta", kernelA, x86, "9.1")
}

func testPromote(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := addPatch(t, s, kernelA, x86, "1.1")
	got, err := s.Promote(ctx, p.Digest, "stable")
	if err != nil {
		t.Fatalf("Promote(stable): %v", err)
	}
	if !slices.Equal(got.Tiers, []string{"edge", "stable"}) {
		t.Errorf("Promote(stable): want tiers [edge stable], got %v", got.Tiers)
	}
	got, err = s.Promote(ctx, p.Digest, "beta")
	if err != nil {
		t.Fatalf("Promote(beta): %v", err)
	}
	// Tiers come in tier order, not promotion order.
	if !slices.Equal(got.Tiers, []string{"edge", "beta", "stable"}) {
		t.Errorf("Promote(beta): want tiers [edge beta stable], got %v", got.Tiers)
	}
	read, err := s.Patch(ctx, p.Digest)
	if err != nil {
		t.Fatal(err)
	}
	wantSame(t, "Patch after Promote", read, got)

	es := eventsAfter(t, s, 1)
	if len(es) != 2 {
		t.Fatalf("events after two promotions: want 2, got %d", len(es))
	}
	afterStable := p
	afterStable.Tiers = []string{"edge", "stable"}
	wantPatchEvent(t, es[0], catalog.EventPatchPromoted, "stable", afterStable)
	wantPatchEvent(t, es[1], catalog.EventPatchPromoted, "beta", got)

	h := head(t, s)
	again, err := s.Promote(ctx, p.Digest, "beta")
	if err != nil {
		t.Fatalf("Promote(beta) again: want nil, got %v", err)
	}
	wantSame(t, "Promote again", again, got)
	again, err = s.Promote(ctx, p.Digest, "edge")
	if err != nil {
		t.Fatalf("Promote(edge) where it landed: want nil, got %v", err)
	}
	wantSame(t, "Promote to its first tier", again, got)
	wantNoEvent(t, s, h, "promotions that change nothing")
}

func testPromoteFailures(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := addPatch(t, s, kernelA, x86, "1.1")
	w := addPatch(t, s, kernelA, x86, "1.2")
	if _, err := s.Withdraw(ctx, w.Digest); err != nil {
		t.Fatal(err)
	}
	h := head(t, s)
	for _, tc := range []struct {
		name, digest, tier string
		want               error
	}{
		{"unknown patch", digestOf("nothing"), "beta", catalog.ErrNotFound},
		{"unknown tier", p.Digest, "nosuch", catalog.ErrNotFound},
		{"withdrawn patch", w.Digest, "beta", catalog.ErrConflict},
	} {
		_, err := s.Promote(ctx, tc.digest, tc.tier)
		wantErr(t, "Promote of "+tc.name, err, tc.want)
	}
	_, err := s.Promote(ctx, "not-a-digest", "beta")
	wantInvalid(t, "Promote with a malformed digest", err)
	wantNoEvent(t, s, h, "failed promotions")
	for _, d := range []string{p.Digest, w.Digest} {
		got, err := s.Patch(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.Tiers, []string{"edge"}) {
			t.Errorf("patch %s after failed promotions: want tiers [edge], got %v", d, got.Tiers)
		}
	}
}

func testPromoteAll(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := addPatch(t, s, kernelA, x86, "1.1")
	b := addPatch(t, s, kernelA, x86, "1.2")
	c := addPatch(t, s, kernelB, arm, "2.1")
	d := addPatch(t, s, kernelB, x86, "3.1")
	if _, err := s.Promote(ctx, a.Digest, "beta"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Withdraw(ctx, d.Digest); err != nil {
		t.Fatal(err)
	}
	h := head(t, s)
	n, err := s.PromoteAll(ctx, "edge", "beta")
	if err != nil {
		t.Fatalf("PromoteAll(edge, beta): %v", err)
	}
	if n != 2 {
		t.Errorf("PromoteAll(edge, beta): want 2 promoted (b, c), got %d", n)
	}
	es := eventsAfter(t, s, h)
	if len(es) != 2 {
		t.Fatalf("events after PromoteAll: want 2, got %d: %+v", len(es), es)
	}
	var promoted []string
	for i, e := range es {
		if e.Seq != h+int64(i)+1 {
			t.Errorf("event %d: want seq %d, got %d", i, h+int64(i)+1, e.Seq)
		}
		want, err := s.Patch(ctx, e.Digest)
		if err != nil {
			t.Fatal(err)
		}
		wantPatchEvent(t, e, catalog.EventPatchPromoted, "beta", want)
		promoted = append(promoted, e.Digest)
	}
	slices.Sort(promoted)
	wantDigests := []string{b.Digest, c.Digest}
	slices.Sort(wantDigests)
	if !slices.Equal(promoted, wantDigests) {
		t.Errorf("PromoteAll events: want digests %v, got %v", wantDigests, promoted)
	}
	got, err := s.Patch(ctx, d.Digest)
	if err != nil || !slices.Equal(got.Tiers, []string{"edge"}) {
		t.Errorf("withdrawn patch after PromoteAll: want tiers [edge], got %v (err %v)", got.Tiers, err)
	}

	h = head(t, s)
	n, err = s.PromoteAll(ctx, "edge", "beta")
	if err != nil || n != 0 {
		t.Errorf("PromoteAll again: want 0, nil; got %d, %v", n, err)
	}
	n, err = s.PromoteAll(ctx, "edge", "nosuch")
	wantErr(t, "PromoteAll to an unknown tier", err, catalog.ErrNotFound)
	if n != 0 {
		t.Errorf("PromoteAll to an unknown tier: want 0, got %d", n)
	}
	_, err = s.PromoteAll(ctx, "nosuch", "beta")
	wantErr(t, "PromoteAll from an unknown tier", err, catalog.ErrNotFound)
	wantNoEvent(t, s, h, "PromoteAll that changes nothing")
}

func testWithdraw(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := addPatch(t, s, kernelA, x86, "1.1")
	h := head(t, s)
	w, err := s.Withdraw(ctx, p.Digest)
	if err != nil {
		t.Fatalf("Withdraw: %v", err)
	}
	want := p
	want.Withdrawn = true
	wantSame(t, "Withdraw result", w, want)
	got, err := s.Patch(ctx, p.Digest)
	if err != nil {
		t.Fatalf("Patch of a withdrawn patch: want it kept, got %v", err)
	}
	wantSame(t, "Patch after Withdraw", got, want)
	es := eventsAfter(t, s, h)
	if len(es) != 1 {
		t.Fatalf("events after Withdraw: want 1, got %d", len(es))
	}
	// The patch is on edge only, so one event, on edge.
	wantPatchEvent(t, es[0], catalog.EventPatchWithdrawn, "edge", want)
	if _, err := s.Newest(ctx, "edge", kernelA, x86); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("Newest after Withdraw: want ErrNotFound, got %v", err)
	}

	h = head(t, s)
	again, err := s.Withdraw(ctx, p.Digest)
	if err != nil {
		t.Fatalf("Withdraw again: %v", err)
	}
	wantSame(t, "Withdraw again", again, want)
	wantNoEvent(t, s, h, "withdrawing a withdrawn patch")
	_, err = s.Withdraw(ctx, digestOf("nothing"))
	wantErr(t, "Withdraw(unknown)", err, catalog.ErrNotFound)
	wantNoEvent(t, s, h, "Withdraw(unknown)")
	// A patch on two tiers: one event per tier, in tier order.
	two := addPatch(t, s, kernelA, x86, "1.2")
	if _, err := s.Promote(ctx, two.Digest, "stable"); err != nil {
		t.Fatal(err)
	}
	h = head(t, s)
	w, err = s.Withdraw(ctx, two.Digest)
	if err != nil {
		t.Fatalf("Withdraw of a patch on two tiers: %v", err)
	}
	es = eventsAfter(t, s, h)
	if len(es) != 2 {
		t.Fatalf("events after withdrawing a patch on two tiers: want 2, got %d", len(es))
	}
	wantPatchEvent(t, es[0], catalog.EventPatchWithdrawn, "edge", w)
	wantPatchEvent(t, es[1], catalog.EventPatchWithdrawn, "stable", w)

	// A patch on no tier (its only tier removed) still logs one event.
	none := addPatch(t, s, kernelB, x86, "2.1")
	if _, err := s.Promote(ctx, none.Digest, "beta"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveTier(ctx, "beta"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveTier(ctx, "edge"); err != nil {
		t.Fatal(err)
	}
	h = head(t, s)
	w, err = s.Withdraw(ctx, none.Digest)
	if err != nil {
		t.Fatalf("Withdraw of a patch on no tier: %v", err)
	}
	if len(w.Tiers) != 0 {
		t.Fatalf("patch after removing its tiers: want on none, got %v", w.Tiers)
	}
	es = eventsAfter(t, s, h)
	if len(es) != 1 {
		t.Fatalf("events after withdrawing a patch on no tier: want 1, got %d", len(es))
	}
	wantPatchEvent(t, es[0], catalog.EventPatchWithdrawn, "", w)
}

func testRemovePatch(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := addPatch(t, s, kernelA, x86, "1.1")
	p, err := s.Promote(ctx, p.Digest, "beta")
	if err != nil {
		t.Fatal(err)
	}
	h := head(t, s)
	if err := s.RemovePatch(ctx, p.Digest); err != nil {
		t.Fatalf("RemovePatch: %v", err)
	}
	_, err = s.Patch(ctx, p.Digest)
	wantErr(t, "Patch after RemovePatch", err, catalog.ErrNotFound)
	// One event per tier the patch was on, in tier order, so each tier's
	// feed tells its own downstreams.
	es := eventsAfter(t, s, h)
	if len(es) != 2 {
		t.Fatalf("events after RemovePatch of a patch on two tiers: want 2, got %d", len(es))
	}
	wantPatchEvent(t, es[0], catalog.EventPatchRemoved, "edge", p)
	wantPatchEvent(t, es[1], catalog.EventPatchRemoved, "beta", p)

	err = s.RemovePatch(ctx, p.Digest)
	wantErr(t, "RemovePatch again", err, catalog.ErrNotFound)
	wantNoEvent(t, s, h+2, "RemovePatch of a removed patch")
	// Its (kernel, arch, version) is free again.
	addPatch(t, s, kernelA, x86, "1.1")
}

// Change log.

func testEventsPaging(t *testing.T, s store.Store) {
	ctx := t.Context()
	es, err := s.Events(ctx, 0, 0)
	if err != nil || len(es) != 0 {
		t.Fatalf("Events on an empty log: want none, got %d (err %v)", len(es), err)
	}
	for i := range 5 {
		addPatch(t, s, kernelA, x86, fmt.Sprintf("1.%d", i))
	}
	seqs := func(es []catalog.Event) []int64 {
		var out []int64
		for _, e := range es {
			out = append(out, e.Seq)
		}
		return out
	}
	for _, tc := range []struct {
		after int64
		limit int
		want  []int64
	}{
		{0, 0, []int64{1, 2, 3, 4, 5}},
		{0, 2, []int64{1, 2}},
		{2, 2, []int64{3, 4}},
		{4, 10, []int64{5}},
		{5, 10, nil},
		{-1, 1, []int64{1}},
	} {
		es, err := s.Events(ctx, tc.after, tc.limit)
		if err != nil {
			t.Errorf("Events(%d, %d): %v", tc.after, tc.limit, err)
			continue
		}
		if got := seqs(es); !slices.Equal(got, tc.want) {
			t.Errorf("Events(%d, %d): want seqs %v, got %v", tc.after, tc.limit, tc.want, got)
		}
	}
	if h := head(t, s); h != 5 {
		t.Errorf("Head: want 5, got %d", h)
	}
}

func testConcurrentSeqs(t *testing.T, s store.Store) {
	const writers, each = 16, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				p := newPatch(kernelA, x86, fmt.Sprintf("%d.%d", w+1, i))
				if _, err := s.AddPatch(t.Context(), p); err != nil {
					errs <- fmt.Errorf("writer %d patch %d: %w", w, i, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent AddPatch: %v", err)
	}
	es := eventsAfter(t, s, 0)
	const n = writers * each
	if len(es) != n {
		t.Fatalf("events: want %d, got %d", n, len(es))
	}
	seen := map[string]bool{}
	for i, e := range es {
		if e.Seq != int64(i+1) {
			t.Fatalf("event %d: want seq %d (no gap, no duplicate), got %d", i, i+1, e.Seq)
		}
		if e.Type != catalog.EventPatchAdded || seen[e.Digest] {
			t.Errorf("event %d: want a patch.added for a new digest, got %s %s", e.Seq, e.Type, e.Digest)
		}
		seen[e.Digest] = true
	}
	if h := head(t, s); h != n {
		t.Errorf("Head: want %d, got %d", n, h)
	}
}

// Tokens and machines.

func testTokens(t *testing.T, s store.Store) {
	ctx := t.Context()
	a1 := token("a000000000000001", catalog.TokenAuth, "edge")
	a2 := token("a000000000000002", catalog.TokenAuth, "beta")
	a2.Created = a1.Created.Add(time.Hour)
	a2.Expires = a2.Created.Add(24 * time.Hour)
	s1 := token("5000000000000001", catalog.TokenSync, "stable")
	for _, tok := range []catalog.Token{a1, a2, s1} {
		if err := s.AddToken(ctx, tok); err != nil {
			t.Fatalf("AddToken(%s): %v", tok.ID, err)
		}
	}
	got, err := s.Token(ctx, a2.ID)
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	wantSame(t, "Token", got, a2)
	if string(got.Hash) != string(a2.Hash) {
		t.Errorf("Token hash: want %x, got %x", a2.Hash, got.Hash)
	}

	list, err := s.Tokens(ctx, store.TokenFilter{Kind: catalog.TokenAuth})
	if err != nil {
		t.Fatalf("Tokens: %v", err)
	}
	wantSame(t, "Tokens(auth), newest first", list, []catalog.Token{a2, a1})
	list, err = s.Tokens(ctx, store.TokenFilter{Kind: catalog.TokenMachine})
	if err != nil || len(list) != 0 {
		t.Errorf("Tokens(machine): want none, got %d (err %v)", len(list), err)
	}

	dup := token(a1.ID, catalog.TokenSync, "edge")
	wantErr(t, "AddToken with a taken ID", s.AddToken(ctx, dup), catalog.ErrConflict)
	wantErr(t, "AddToken on an unknown tier", s.AddToken(ctx, token("a000000000000009", catalog.TokenAuth, "nosuch")), catalog.ErrNotFound)
	bad := token("a00000000000000a", catalog.TokenAuth, "edge")
	bad.Hash = []byte("short")
	wantInvalid(t, "AddToken with a short hash", s.AddToken(ctx, bad))
	bad = token("a00000000000000b", "root", "edge")
	wantInvalid(t, "AddToken of an unknown kind", s.AddToken(ctx, bad))
	for _, id := range []string{"a000000000000009", "a00000000000000a", "a00000000000000b"} {
		_, err := s.Token(ctx, id)
		wantErr(t, "Token of a rejected token", err, catalog.ErrNotFound)
	}

	at := time.Date(2026, 3, 4, 5, 6, 7, 8000, time.UTC)
	wantErr(t, "RevokeToken with the wrong kind", s.RevokeToken(ctx, catalog.TokenSync, a1.ID, at), catalog.ErrNotFound)
	if err := s.RevokeToken(ctx, catalog.TokenAuth, a1.ID, at); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}
	got, err = s.Token(ctx, a1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Revoked.Equal(at) || got.Live(at) {
		t.Errorf("revoked token: want Revoked %v and not live, got Revoked %v", at, got.Revoked)
	}
	// A second revocation keeps the first time.
	if err := s.RevokeToken(ctx, catalog.TokenAuth, a1.ID, at.Add(time.Hour)); err != nil {
		t.Errorf("RevokeToken again: want nil, got %v", err)
	}
	if got, _ := s.Token(ctx, a1.ID); !got.Revoked.Equal(at) {
		t.Errorf("revoked twice: want Revoked %v kept, got %v", at, got.Revoked)
	}
	wantErr(t, "RevokeToken(unknown)", s.RevokeToken(ctx, catalog.TokenAuth, "ffffffffffffffff", at), catalog.ErrNotFound)
	_, err = s.Token(ctx, "ffffffffffffffff")
	wantErr(t, "Token(unknown)", err, catalog.ErrNotFound)
}

func testTokenTimes(t *testing.T, s store.Store) {
	loc := time.FixedZone("UTC+5", 5*3600)
	tok := token("7000000000000001", catalog.TokenAuth, "edge")
	tok.Created = time.Date(2026, 5, 6, 7, 8, 9, 123456789, loc)
	tok.Expires = tok.Created.Add(time.Hour)
	if err := s.AddToken(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	got, err := s.Token(t.Context(), tok.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := tok.Created.UTC().Truncate(time.Microsecond)
	if !got.Created.Equal(want) || !got.Expires.Equal(want.Add(time.Hour)) ||
		got.Created.Location() != time.UTC || got.Expires.Location() != time.UTC {
		t.Errorf("token times: want Created %v Expires %v (UTC, microseconds), got %v and %v",
			want, want.Add(time.Hour), got.Created, got.Expires)
	}
	if !got.Revoked.IsZero() {
		t.Errorf("token Revoked: want zero, got %v", got.Revoked)
	}
}

func testRegisterMachine(t *testing.T, s store.Store) {
	ctx := t.Context()
	seen := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	m := machine("m1", "edge", seen)
	first := machineToken("b000000000000001", m.ID, "edge")
	if err := s.RegisterMachine(ctx, m, first); err != nil {
		t.Fatalf("RegisterMachine: %v", err)
	}
	got, err := s.Machine(ctx, m.ID)
	if err != nil {
		t.Fatalf("Machine: %v", err)
	}
	wantSame(t, "Machine", got, m)

	// Re-registering moves the machine and replaces its token.
	m2 := m
	m2.Tier = "beta"
	m2.Registered = seen.Add(time.Hour)
	m2.LastSeen = seen.Add(time.Hour)
	second := machineToken("b000000000000002", m.ID, "beta")
	if err := s.RegisterMachine(ctx, m2, second); err != nil {
		t.Fatalf("RegisterMachine again: %v", err)
	}
	old, err := s.Token(ctx, first.ID)
	if err != nil {
		t.Fatal(err)
	}
	if old.Revoked.IsZero() {
		t.Errorf("first machine token after re-registration: want revoked, got live")
	}
	cur, err := s.Token(ctx, second.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !cur.Revoked.IsZero() || cur.MachineID != m.ID || cur.Kind != catalog.TokenMachine {
		t.Errorf("new machine token: want live, machine %s, kind machine; got %+v", m.ID, cur)
	}
	got, err = s.Machine(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantSame(t, "Machine after re-registration", got, m2)
	if ms, _ := s.Machines(ctx, store.MachineFilter{}); len(ms) != 1 {
		t.Errorf("Machines after re-registration: want 1, got %d", len(ms))
	}

	// Another machine's registration leaves this one's token alone.
	other := machine("m2", "edge", seen)
	if err := s.RegisterMachine(ctx, other, machineToken("b000000000000003", other.ID, "edge")); err != nil {
		t.Fatal(err)
	}
	if cur, _ := s.Token(ctx, second.ID); !cur.Revoked.IsZero() {
		t.Errorf("machine token after another machine registered: want live, got revoked")
	}
	// A token for another machine is refused.
	wrong := machineToken("b000000000000004", other.ID, "edge")
	wantInvalid(t, "RegisterMachine with another machine's token", s.RegisterMachine(ctx, machine("m3", "edge", seen), wrong))
	// A taken token ID is a conflict and changes nothing.
	m3 := machine("m3", "edge", seen)
	wantErr(t, "RegisterMachine with a taken token ID",
		s.RegisterMachine(ctx, m3, machineToken(second.ID, m3.ID, "edge")), catalog.ErrConflict)
	_, err = s.Machine(ctx, m3.ID)
	wantErr(t, "Machine after a refused registration", err, catalog.ErrNotFound)
	_, err = s.Machine(ctx, machineID("nothing"))
	wantErr(t, "Machine(unknown)", err, catalog.ErrNotFound)
}

func testRegisterMachineUnknownTier(t *testing.T, s store.Store) {
	ctx := t.Context()
	m := machine("m1", "nosuch", time.Now())
	tok := machineToken("c000000000000001", m.ID, "nosuch")
	wantErr(t, "RegisterMachine on an unknown tier", s.RegisterMachine(ctx, m, tok), catalog.ErrNotFound)
	_, err := s.Machine(ctx, m.ID)
	wantErr(t, "Machine after the refused registration", err, catalog.ErrNotFound)
	_, err = s.Token(ctx, tok.ID)
	wantErr(t, "Token after the refused registration", err, catalog.ErrNotFound)
}

func testCheckIn(t *testing.T, s store.Store) {
	ctx := t.Context()
	seen := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	m := machine("m1", "edge", seen)
	if err := s.RegisterMachine(ctx, m, machineToken("d000000000000001", m.ID, "edge")); err != nil {
		t.Fatal(err)
	}
	report := m
	report.Tier = "stable" // not the machine's to change
	report.Registered = seen.Add(time.Minute)
	report.Kernel = kernelB
	report.State = catalog.StateApplied
	report.PatchVersion = "45.2"
	report.ClientVersion = "1.1.0"
	report.UptimeSeconds = 3600
	report.LastSeen = seen.Add(time.Hour)
	if err := s.CheckIn(ctx, report); err != nil {
		t.Fatalf("CheckIn: %v", err)
	}
	got, err := s.Machine(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := report
	want.Tier = m.Tier
	want.Registered = m.Registered
	wantSame(t, "Machine after CheckIn", got, want)

	unknown := machine("nobody", "edge", seen)
	wantErr(t, "CheckIn of an unregistered machine", s.CheckIn(ctx, unknown), catalog.ErrNotFound)
	bad := report
	bad.State = "exploded"
	wantInvalid(t, "CheckIn with an unknown state", s.CheckIn(ctx, bad))
	got, _ = s.Machine(ctx, m.ID)
	wantSame(t, "Machine after a refused CheckIn", got, want)
}

func testMachines(t *testing.T, s store.Store) {
	ctx := t.Context()
	base := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	var ms []catalog.Machine
	for i, tc := range []struct {
		tier   string
		kernel string
		state  catalog.MachineState
	}{
		{"edge", kernelA, catalog.StateApplied},
		{"edge", kernelB, catalog.StateUnapplied},
		{"beta", kernelA, catalog.StateApplied},
		{"beta", kernelB, catalog.StateApplied},
	} {
		m := machine(fmt.Sprint("m", i), tc.tier, base.Add(time.Duration(i)*time.Minute))
		m.Kernel, m.State = tc.kernel, tc.state
		if err := s.RegisterMachine(ctx, m, machineToken(fmt.Sprintf("e00000000000000%d", i), m.ID, tc.tier)); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	for _, tc := range []struct {
		name string
		f    store.MachineFilter
		want []int
	}{
		{"all, most recently seen first", store.MachineFilter{}, []int{3, 2, 1, 0}},
		{"tier", store.MachineFilter{Tier: "edge"}, []int{1, 0}},
		{"kernel", store.MachineFilter{Kernel: kernelA}, []int{2, 0}},
		{"state", store.MachineFilter{State: catalog.StateApplied}, []int{3, 2, 0}},
		{"tier, kernel and state", store.MachineFilter{Tier: "beta", Kernel: kernelB, State: catalog.StateApplied}, []int{3}},
		{"limit", store.MachineFilter{Limit: 1}, []int{3}},
		{"none", store.MachineFilter{Tier: "stable"}, nil},
	} {
		got, err := s.Machines(ctx, tc.f)
		if err != nil {
			t.Errorf("Machines(%s): %v", tc.name, err)
			continue
		}
		want := []catalog.Machine{}
		for _, i := range tc.want {
			want = append(want, ms[i])
		}
		wantSame(t, "Machines("+tc.name+")", got, want)
	}
}

// Root keys, admins, secrets.

func testRootKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	key := func(id string, created time.Time) store.RootKey {
		return store.RootKey{
			ID: id, Key: []byte("0123456789abcdef0123456789abcdef"),
			Created: created, MintUntil: created.Add(24 * time.Hour), Expires: created.Add(264 * time.Hour),
		}
	}
	_, err := s.MintingRootKey(ctx, now)
	wantErr(t, "MintingRootKey with no keys", err, catalog.ErrNotFound)

	expired := key("k-expired", now.Add(-300*time.Hour)) // past Expires
	verifying := key("k-verify", now.Add(-48*time.Hour)) // past MintUntil, before Expires
	older := key("k-older", now.Add(-2*time.Hour))       // mints
	newest := key("k-newest", now.Add(-1*time.Hour))     // mints, the newest that does
	// The most recently created key, but its minting window has closed.
	stopped := key("k-stopped", now.Add(-30*time.Minute))
	stopped.MintUntil = now.Add(-time.Minute)
	for _, k := range []store.RootKey{expired, older, newest, verifying, stopped} {
		if err := s.AddRootKey(ctx, k); err != nil {
			t.Fatalf("AddRootKey(%s): %v", k.ID, err)
		}
	}
	wantErr(t, "AddRootKey with a taken ID", s.AddRootKey(ctx, key("k-older", now)), catalog.ErrConflict)

	got, err := s.MintingRootKey(ctx, now)
	if err != nil {
		t.Fatalf("MintingRootKey: %v", err)
	}
	wantSame(t, "MintingRootKey", got, newest)
	got, err = s.RootKey(ctx, verifying.ID)
	if err != nil {
		t.Fatal(err)
	}
	wantSame(t, "RootKey", got, verifying)
	if string(got.Key) != string(verifying.Key) {
		t.Errorf("RootKey key bytes: want %x, got %x", verifying.Key, got.Key)
	}

	n, err := s.PurgeRootKeys(ctx, now)
	if err != nil || n != 1 {
		t.Errorf("PurgeRootKeys: want 1 purged, got %d (err %v)", n, err)
	}
	_, err = s.RootKey(ctx, expired.ID)
	wantErr(t, "RootKey of a purged key", err, catalog.ErrNotFound)
	if _, err := s.RootKey(ctx, verifying.ID); err != nil {
		t.Errorf("RootKey of a key still verifying: want kept, got %v", err)
	}
	// Purging at a key's exact Expires removes it.
	n, err = s.PurgeRootKeys(ctx, verifying.Expires)
	if err != nil || n != 1 {
		t.Errorf("PurgeRootKeys at Expires: want 1 purged, got %d (err %v)", n, err)
	}
	_, err = s.MintingRootKey(ctx, now.Add(48*time.Hour))
	wantErr(t, "MintingRootKey once every key stopped minting", err, catalog.ErrNotFound)
}

func testAdminUsers(t *testing.T, s store.Store) {
	ctx := t.Context()
	list, err := s.AdminUsers(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("AdminUsers on a new store: want none, got %d (err %v)", len(list), err)
	}
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	admin := store.AdminUser{Name: "admin", Hash: []byte("$2a$10$abcdefghijklmnopqrstuv"), Created: created}
	ops := store.AdminUser{Name: "ops", Hash: []byte("$2a$10$zyxwvutsrqponmlkjihgfe"), Created: created}
	for _, u := range []store.AdminUser{ops, admin} {
		if err := s.AddAdminUser(ctx, u); err != nil {
			t.Fatalf("AddAdminUser(%s): %v", u.Name, err)
		}
	}
	dup := admin
	dup.Hash = []byte("other")
	wantErr(t, "AddAdminUser with a taken name", s.AddAdminUser(ctx, dup), catalog.ErrConflict)
	got, err := s.AdminUser(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != admin.Name || string(got.Hash) != string(admin.Hash) || !got.Created.Equal(created) {
		t.Errorf("AdminUser: want %s %s %v, got %s %s %v", admin.Name, admin.Hash, created, got.Name, got.Hash, got.Created)
	}
	list, err = s.AdminUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range list {
		names = append(names, u.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"admin", "ops"}) {
		t.Errorf("AdminUsers: want [admin ops], got %v", names)
	}
	_, err = s.AdminUser(ctx, "nobody")
	wantErr(t, "AdminUser(unknown)", err, catalog.ErrNotFound)
}

func testSecret(t *testing.T, s store.Store) {
	const callers = 8
	var wg sync.WaitGroup
	got := make([][]byte, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() {
			got[i], errs[i] = s.Secret(context.WithoutCancel(t.Context()), "machine-id-key", func() ([]byte, error) {
				b := make([]byte, 32)
				_, err := rand.Read(b)
				return b, err
			})
		})
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("Secret caller %d: %v", i, errs[i])
		}
		if len(got[i]) != 32 || string(got[i]) != string(got[0]) {
			t.Errorf("Secret caller %d: want the value caller 0 got (%x), got %x", i, got[0], got[i])
		}
	}
	// Once stored, the generator is not consulted.
	v, err := s.Secret(t.Context(), "machine-id-key", func() ([]byte, error) {
		return nil, errors.New("generator must not run for a stored secret")
	})
	if err != nil || string(v) != string(got[0]) {
		t.Errorf("Secret after first use: want %x, got %x (err %v)", got[0], v, err)
	}
	other, err := s.Secret(t.Context(), "other", func() ([]byte, error) { return []byte("another"), nil })
	if err != nil || string(other) != "another" {
		t.Errorf("Secret(other): want %q, got %q (err %v)", "another", other, err)
	}
}
