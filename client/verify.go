package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// ErrOfferRefused means a node offered a patch the machine will not
// download: not signed by a pinned hub key, for another tier, kernel or
// arch, not a record that makes a patch available, or older than what the
// machine applied without the hub's withdrawal of that. Each reason below
// wraps it.
var ErrOfferRefused = errors.New("offer refused")

// Reasons an offer is refused.
var (
	ErrOfferUnsigned  = fmt.Errorf("%w: it carries no hub-signed record", ErrOfferRefused)
	ErrOfferUntrusted = fmt.Errorf("%w: its record does not verify against the pinned hub keys", ErrOfferRefused)
	ErrOfferOtherTier = fmt.Errorf("%w: its record is for another hub tier", ErrOfferRefused)
	ErrOfferMismatch  = fmt.Errorf("%w: its record does not offer a patch for this machine", ErrOfferRefused)
	ErrRollback       = fmt.Errorf("%w: it is older than the patch applied, and the hub's withdrawal of that one is not with it", ErrOfferRefused)
)

// Applied is what a machine last applied for one kernel and arch, from the
// signed record it verified: a later offer older than this is a rollback.
type Applied struct {
	Kernel  string `json:"kernel"`
	Arch    string `json:"arch"`
	Version string `json:"version"`
	Digest  string `json:"digest"`
	// TierSeq is the hub's sequence number, on the machine's hub tier, of
	// the record that offered the patch.
	TierSeq int64     `json:"tier_seq"`
	At      time.Time `json:"at"`
}

// appliedKey is the key of State.Applied: what was applied is per kernel,
// since a live patch is for the kernel running.
func appliedKey(kernel, arch string) string { return kernel + " " + arch }

// OfferCheck is what an offer must match.
type OfferCheck struct {
	// HubTier is the machine's hub tier, verified at registration.
	HubTier string
	// Kernel and Arch are the machine's.
	Kernel, Arch string
	// Applied is what the machine applied for this kernel, nil if nothing.
	Applied *Applied
	// Withdrawn are the patches whose signed withdrawal or removal the
	// machine has seen on its tier, by digest, with the withdrawal's hub
	// sequence number: an offer of one by an earlier record is a replay.
	Withdrawn map[string]int64
}

// VerifyOffer checks an offer against the pins and returns the signed
// record that makes the patch available: the machine downloads by its
// digest and size, never by the node's unsigned fields. Keys endorsed in
// the offer are added to pins first (Pins.Endorse). Every refusal wraps
// ErrOfferRefused and one of its reasons.
func VerifyOffer(pins *Pins, o federation.Offer, c OfferCheck) (federation.Record, error) {
	if o.Signed == nil || len(o.Signed.Record) == 0 {
		return federation.Record{}, ErrOfferUnsigned
	}
	pins.Endorse(o.Endorsements)
	rec, err := pins.Open(*o.Signed)
	if err != nil {
		return federation.Record{}, fmt.Errorf("%w: %w", ErrOfferUntrusted, err)
	}
	switch {
	case rec.Type != catalog.EventPatchAdded && rec.Type != catalog.EventPatchPromoted:
		return federation.Record{}, fmt.Errorf("%w: a %s record makes no patch available", ErrOfferMismatch, rec.Type)
	case rec.Tier != c.HubTier:
		return federation.Record{}, fmt.Errorf("%w: tier %q, the machine's is %q", ErrOfferOtherTier, rec.Tier, c.HubTier)
	case rec.Patch.Kernel != c.Kernel || rec.Patch.Arch != c.Arch:
		return federation.Record{}, fmt.Errorf("%w: it is for %s %s, the machine runs %s %s",
			ErrOfferMismatch, rec.Patch.Kernel, rec.Patch.Arch, c.Kernel, c.Arch)
	}
	if seq, ok := c.Withdrawn[rec.Patch.Digest]; ok && rec.TierSeq < seq {
		return federation.Record{}, fmt.Errorf("%w: the hub withdrew %s (hub seq %d) after this record (hub seq %d)",
			ErrRollback, rec.Patch.Digest, seq, rec.TierSeq)
	}
	if err := checkRollback(pins, o, c, rec); err != nil {
		return federation.Record{}, err
	}
	return rec, nil
}

// checkRollback refuses an offer of another patch than the one applied
// whose version is not higher, unless the offer carries the hub's signed
// withdrawal (or removal) of the applied patch on the machine's tier,
// made after the record the machine applied it by. Without that rule a
// node could hand a machine an old, vulnerable patch that the hub once
// signed.
func checkRollback(pins *Pins, o federation.Offer, c OfferCheck, rec federation.Record) error {
	a := c.Applied
	if a == nil || a.Digest == rec.Patch.Digest || catalog.ValidVersion(a.Version) != nil ||
		catalog.VersionKey(rec.Patch.Version) > catalog.VersionKey(a.Version) {
		return nil
	}
	if o.Withdrawal == nil {
		return fmt.Errorf("%w: offered %s, applied %s", ErrRollback, rec.Patch.Version, a.Version)
	}
	w, err := pins.Open(*o.Withdrawal)
	if err != nil {
		return fmt.Errorf("%w: the withdrawal does not verify: %w", ErrRollback, err)
	}
	switch {
	case w.Type != catalog.EventPatchWithdrawn && w.Type != catalog.EventPatchRemoved:
		return fmt.Errorf("%w: the record given is a %s, not a withdrawal", ErrRollback, w.Type)
	case w.Tier != c.HubTier || w.Patch.Digest != a.Digest:
		return fmt.Errorf("%w: the withdrawal is of %s on tier %q", ErrRollback, w.Patch.Digest, w.Tier)
	case w.TierSeq <= a.TierSeq:
		return fmt.Errorf("%w: the withdrawal (hub seq %d) predates the record applied (hub seq %d)", ErrRollback, w.TierSeq, a.TierSeq)
	}
	return nil
}
