package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// hubKey is a hub signing key for the verification tests.
type hubKey struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
}

func newHubKey(t *testing.T) hubKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return hubKey{priv, pub}
}

func (k hubKey) text() string { return federation.FormatPublicKey(k.pub) }

// sign makes the hub record of a patch event.
func (k hubKey) sign(t *testing.T, typ catalog.EventType, tier string, seq int64, p catalog.Patch) *federation.Envelope {
	t.Helper()
	env, err := federation.Sign(k.priv, federation.Record{Tier: tier, TierSeq: seq, Type: typ, Patch: p, Time: time.Now()})
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return &env
}

func (k hubKey) endorse(t *testing.T, next hubKey) federation.Envelope {
	t.Helper()
	env, err := federation.Endorse(k.priv, next.pub, time.Now())
	if err != nil {
		t.Fatalf("endorse: %v", err)
	}
	return env
}

func testPatch(version string) catalog.Patch {
	return catalog.Patch{Digest: digestOf([]byte("patch " + version)), Kernel: testKernel, Arch: testArch, Version: version, Size: 4096}
}

func TestVerifyOffer(t *testing.T) {
	hub, other, rotated, newer := newHubKey(t), newHubKey(t), newHubKey(t), newHubKey(t)
	v1, v2 := testPatch("107.1"), testPatch("107.2")
	appliedV2 := &Applied{Kernel: testKernel, Arch: testArch, Version: "107.2", Digest: v2.Digest, TierSeq: 5}
	otherKernel := v1
	otherKernel.Kernel = "6.8.0-45.45-generic"
	tampered := *hub.sign(t, catalog.EventPatchAdded, "beta", 3, v1)
	tampered.Record = append([]byte{}, tampered.Record...)
	tampered.Record[len(tampered.Record)-3] ^= 1
	garbage := federation.Envelope{Record: []byte(`{"key":"` + federation.KeyID(hub.pub) + `"}`), Sig: make([]byte, ed25519.SignatureSize)}

	for _, tc := range []struct {
		name    string
		offer   federation.Offer
		applied *Applied
		// withdrawn are the withdrawals the machine saw before.
		withdrawn map[string]int64
		wantErr   error // nil: accepted
		// wantPatch is the signed patch VerifyOffer must return.
		wantPatch catalog.Patch
		// wantPins are extra keys the pins must hold afterwards.
		wantPins []string
	}{
		{name: "signed by the pinned key, for the tier", offer: federation.Offer{Signed: hub.sign(t, catalog.EventPatchAdded, "beta", 3, v1)}, wantPatch: v1},
		{name: "a promotion offers too", offer: federation.Offer{Signed: hub.sign(t, catalog.EventPatchPromoted, "beta", 4, v2)}, wantPatch: v2},
		{name: "unsigned", offer: federation.Offer{Patch: v1}, wantErr: ErrOfferUnsigned},
		{name: "signed by an unknown key", offer: federation.Offer{Signed: other.sign(t, catalog.EventPatchAdded, "beta", 3, v1)}, wantErr: federation.ErrUnknownKey},
		{name: "bytes changed after signing", offer: federation.Offer{Signed: &tampered}, wantErr: ErrOfferUntrusted},
		{name: "malformed record", offer: federation.Offer{Signed: &garbage}, wantErr: ErrOfferUntrusted},
		{name: "for another tier", offer: federation.Offer{Signed: hub.sign(t, catalog.EventPatchAdded, "stable", 3, v1)}, wantErr: ErrOfferOtherTier},
		{name: "a withdrawal is no offer", offer: federation.Offer{Signed: hub.sign(t, catalog.EventPatchWithdrawn, "beta", 3, v1)}, wantErr: ErrOfferMismatch},
		{name: "for another kernel", offer: federation.Offer{Signed: hub.sign(t, catalog.EventPatchAdded, "beta", 3, otherKernel)}, wantErr: ErrOfferMismatch},
		{name: "the node's unsigned fields are ignored", offer: federation.Offer{Patch: v2, Signed: hub.sign(t, catalog.EventPatchAdded, "beta", 3, v1)}, wantPatch: v1},
		{name: "the applied patch again", applied: appliedV2, offer: federation.Offer{Signed: hub.sign(t, catalog.EventPatchPromoted, "beta", 5, v2)}, wantPatch: v2},
		{name: "rollback refused", applied: appliedV2, offer: federation.Offer{Signed: hub.sign(t, catalog.EventPatchAdded, "beta", 3, v1)}, wantErr: ErrRollback},
		{name: "rollback refused even with a newer record of the old patch", applied: appliedV2,
			offer: federation.Offer{Signed: hub.sign(t, catalog.EventPatchPromoted, "beta", 9, v1)}, wantErr: ErrRollback},
		{name: "rollback with the signed withdrawal accepted", applied: appliedV2, offer: federation.Offer{
			Signed: hub.sign(t, catalog.EventPatchAdded, "beta", 3, v1), Withdrawal: hub.sign(t, catalog.EventPatchWithdrawn, "beta", 6, v2)}, wantPatch: v1},
		{name: "rollback with the signed removal accepted", applied: appliedV2, offer: federation.Offer{
			Signed: hub.sign(t, catalog.EventPatchAdded, "beta", 3, v1), Withdrawal: hub.sign(t, catalog.EventPatchRemoved, "beta", 6, v2)}, wantPatch: v1},
		{name: "rollback with a withdrawal of another patch refused", applied: appliedV2, offer: federation.Offer{
			Signed: hub.sign(t, catalog.EventPatchAdded, "beta", 3, v1), Withdrawal: hub.sign(t, catalog.EventPatchWithdrawn, "beta", 6, v1)}, wantErr: ErrRollback},
		{name: "rollback with a withdrawal on another tier refused", applied: appliedV2, offer: federation.Offer{
			Signed: hub.sign(t, catalog.EventPatchAdded, "beta", 3, v1), Withdrawal: hub.sign(t, catalog.EventPatchWithdrawn, "stable", 6, v2)}, wantErr: ErrRollback},
		{name: "rollback with a withdrawal older than the applied record refused", applied: appliedV2, offer: federation.Offer{
			Signed: hub.sign(t, catalog.EventPatchAdded, "beta", 3, v1), Withdrawal: hub.sign(t, catalog.EventPatchWithdrawn, "beta", 4, v2)}, wantErr: ErrRollback},
		{name: "rollback with an unsigned withdrawal refused", applied: appliedV2, offer: federation.Offer{
			Signed: hub.sign(t, catalog.EventPatchAdded, "beta", 3, v1), Withdrawal: other.sign(t, catalog.EventPatchWithdrawn, "beta", 6, v2)}, wantErr: ErrRollback},
		{name: "rollback with a promotion passed off as withdrawal refused", applied: appliedV2, offer: federation.Offer{
			Signed: hub.sign(t, catalog.EventPatchAdded, "beta", 3, v1), Withdrawal: hub.sign(t, catalog.EventPatchPromoted, "beta", 6, v2)}, wantErr: ErrRollback},
		{name: "a patch the hub withdrew, offered again by its old record, refused", withdrawn: map[string]int64{v2.Digest: 6},
			offer: federation.Offer{Signed: hub.sign(t, catalog.EventPatchPromoted, "beta", 4, v2)}, wantErr: ErrRollback},
		{name: "a withdrawn patch published again after its withdrawal accepted", withdrawn: map[string]int64{v2.Digest: 6},
			offer: federation.Offer{Signed: hub.sign(t, catalog.EventPatchAdded, "beta", 8, v2)}, wantPatch: v2},
		{name: "endorsed key rotation accepted", offer: federation.Offer{
			Signed: rotated.sign(t, catalog.EventPatchAdded, "beta", 3, v1), Endorsements: []federation.Envelope{hub.endorse(t, rotated)}},
			wantPatch: v1, wantPins: []string{rotated.text()}},
		{name: "a chain of endorsements followed", offer: federation.Offer{
			Signed:       newer.sign(t, catalog.EventPatchAdded, "beta", 3, v1),
			Endorsements: []federation.Envelope{rotated.endorse(t, newer), hub.endorse(t, rotated)}},
			wantPatch: v1, wantPins: []string{rotated.text(), newer.text()}},
		{name: "unendorsed new key refused", offer: federation.Offer{Signed: rotated.sign(t, catalog.EventPatchAdded, "beta", 3, v1)}, wantErr: ErrOfferUntrusted},
		{name: "new key endorsed by an unpinned key refused", offer: federation.Offer{
			Signed: rotated.sign(t, catalog.EventPatchAdded, "beta", 3, v1), Endorsements: []federation.Envelope{other.endorse(t, rotated)}},
			wantErr: federation.ErrUnknownKey},
		{name: "a node endorsing its own key refused", offer: federation.Offer{
			Signed: other.sign(t, catalog.EventPatchAdded, "beta", 3, v1), Endorsements: []federation.Envelope{other.endorse(t, other)}},
			wantErr: ErrOfferUntrusted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pins, err := NewPins([]string{hub.text()})
			if err != nil {
				t.Fatal(err)
			}
			rec, err := VerifyOffer(pins, tc.offer, OfferCheck{HubTier: "beta", Kernel: testKernel, Arch: testArch, Applied: tc.applied, Withdrawn: tc.withdrawn})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !errors.Is(err, ErrOfferRefused) {
					t.Fatalf("VerifyOffer = %v, want a refusal wrapping %v", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("VerifyOffer = %v, want it accepted", err)
			} else if rec.Patch.Digest != tc.wantPatch.Digest || rec.Patch.Size != tc.wantPatch.Size || rec.Patch.Version != tc.wantPatch.Version {
				t.Errorf("VerifyOffer patch = %+v, want the signed %+v", rec.Patch, tc.wantPatch)
			}
			want := append([]string{hub.text()}, tc.wantPins...)
			if got := pins.Keys(); !slices.Equal(got, want) {
				t.Errorf("pins after = %v, want %v", got, want)
			}
		})
	}
}

func TestNewPinsRefusesNoneAndMalformed(t *testing.T) {
	if _, err := NewPins(nil); !errors.Is(err, ErrNoPins) {
		t.Errorf("NewPins(nil) = %v, want ErrNoPins", err)
	}
	if _, err := NewPins([]string{"ed25519:short"}); err == nil {
		t.Error("NewPins accepted a malformed key")
	}
}
