package store

import (
	"context"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// Sealer signs the events a hub originates. A Store given a Sealer calls it
// inside the transaction of every patch change, once per tier the change
// concerns, and of every change to an enrollment (auth) token, with that
// tier's next hub sequence number, and keeps the record and signature with
// the event. Store does not know the record format; the federation package
// does. It takes one request struct so that a new kind of event adds a
// field, not a parameter every implementation must follow.
type Sealer interface {
	Seal(e SealRequest) (record, sig []byte, err error)
}

// SealRequest is one event for a Sealer to sign.
type SealRequest struct {
	// Tier is the hub tier the event belongs to, TierSeq its number in
	// that tier's sequence.
	Tier    string
	TierSeq int64
	Type    catalog.EventType
	// Patch is the patch after the change, for patch events; zero
	// otherwise.
	Patch catalog.Patch
	// Token is the token after the change (ID, Name, Hash, Created,
	// Expires, and Revoked for a revocation), for token events; nil
	// otherwise.
	Token *catalog.Token
	// Node is the node after the change (Name, Key, URLs, Admitted, and
	// Removed for a removal), for node events; nil otherwise.
	Node *catalog.Node
	// Rollout is the rollout after the change, for rollout events; nil
	// otherwise.
	Rollout *catalog.Rollout
	// Machine is the machine revocation after the change, for machine
	// events (Lifted set on a machine.deleted); nil otherwise.
	Machine *catalog.MachineRevocation
	// At is when the hub made the change.
	At time.Time
}

// FeedEntry is one signed event as a node serves it to its downstreams.
type FeedEntry struct {
	// Seq is the serving node's own change-log sequence number, the
	// downstream's cursor into this node's feed.
	Seq int64
	// HubSeq is the hub's per-tier sequence number the record carries.
	HubSeq int64
	// Record and Sig are the hub's signed bytes, passed on unchanged.
	Record []byte
	Sig    []byte
	// Skip says this node cannot serve the patch of an added or promoted
	// event on this tier (it is withdrawn, removed, or this node filtered
	// it out), so a downstream should record the event without fetching.
	Skip bool
	// BecauseRecord and BecauseSig are, for a skipped entry, the signed
	// record that explains the skip: the first withdrawal or removal of
	// the same patch on the same tier after it, if this node's log holds
	// one. Nil otherwise (a patch this node filtered out has none).
	BecauseRecord []byte
	BecauseSig    []byte
}

// FeedPage is a page of one tier's feed.
type FeedPage struct {
	Entries []FeedEntry
	// Head is the Seq of the tier's newest signed event here, 0 if none.
	Head int64
	// HubHead is the HubSeq of that event, 0 if none.
	HubHead int64
}

// FeedPosition says where a feed page starts: after a Seq of the serving
// node's log, or, when a downstream switches to this node from another
// upstream whose Seq numbers mean nothing here, after a hub sequence
// number, which is the same on every node because the hub signed it.
type FeedPosition struct {
	AfterSeq    int64
	AfterHubSeq int64
	// ByHub selects AfterHubSeq.
	ByHub bool
}

// SignedQuery picks signed events out of one tier of a node's own log, for
// SignedEvents.
type SignedQuery struct {
	// Tier is the local tier the events are logged under.
	Tier string
	// Digest is the patch the events concern; "" for token events, which
	// concern no patch.
	Digest string
	// Types are the event types wanted; at least one.
	Types []catalog.EventType
	// Limit caps the result; 0 or less means 1, at most 1000.
	Limit int
}

// Cursor is how far a local tier has synced from its upstream.
type Cursor struct {
	// Tier is the local tier the link feeds.
	Tier string
	// HubTier is the hub tier whose records the link applies.
	HubTier string
	// HubSeq is the TierSeq of the last record applied.
	HubSeq int64
	// Upstream names the upstream the cursor counts in (its URL).
	Upstream string
	// UpstreamSeq is the upstream's Seq of the last entry applied.
	UpstreamSeq int64
	// Updated is when the cursor last moved.
	Updated time.Time
}

// SyncedEvent is one verified record to apply on a downstream.
type SyncedEvent struct {
	Record []byte
	Sig    []byte
	HubSeq int64
	Type   catalog.EventType
	// Patch holds the signed facts of the patch (no Tiers, not Withdrawn).
	Patch catalog.Patch
	// Token holds the signed facts of the token of a token event (ID,
	// Name, Hash, Created, Expires, and Revoked for a revocation); nil for
	// other events. The store puts it on the local tier, whatever its Tier.
	Token *catalog.Token
	// Node holds the signed facts of the node of a node event (Name, Key,
	// KeyID, URLs, Admitted, and Removed for a removal); nil for other
	// events. The store puts its admission on the local tier.
	Node *catalog.Node
	// Rollout holds the signed rollout of a rollout event; nil for other
	// events. The store keeps it on the local tier, whatever its Tier.
	Rollout *catalog.Rollout
	// Machine holds the signed machine revocation of a machine event
	// (Lifted set on a machine.deleted); nil for other events. It
	// concerns every tier: the store keeps one word per machine ID.
	Machine *catalog.MachineRevocation
	// Apply is false for an event that is logged, to keep the tier's hub
	// sequence contiguous for this node's own downstreams, but does not
	// change the catalog: the upstream skipped it or a filter excluded it.
	// Withdrawals, removals, token, node and machine events are always applied.
	Apply bool
	// BecauseRecord and BecauseSig are, for an add or promotion the
	// upstream skipped, the hub's signed reason the sync loop verified
	// (see FeedEntry). The store keeps them with the event and serves
	// them onward, so that this node's downstreams can check the skip
	// before the reason itself has reached this node's log.
	BecauseRecord []byte
	BecauseSig    []byte
}

// TrustedKey is a hub public key pinned through the admin API.
type TrustedKey struct {
	// ID is the key's ID as records name it.
	ID string
	// Key is the public key in its text form, "ed25519:<base64url>".
	Key   string
	Added time.Time
}

// Syncer is the part of Store that federation uses.
type Syncer interface {
	// Feed returns up to limit signed events of tier from pos on, in Seq
	// order, with the tier's head.
	Feed(ctx context.Context, tier string, pos FeedPosition, limit int) (FeedPage, error)
	// SignedEvents returns the signed events of q.Tier about q.Digest of
	// one of q.Types, newest first, with the hub's record and signature as
	// logged: a machine is handed them to verify what a node offers it.
	SignedEvents(ctx context.Context, q SignedQuery) ([]FeedEntry, error)
	// Cursor returns the local tier's cursor; the zero Cursor (with Tier
	// set) when the tier never synced.
	Cursor(ctx context.Context, tier string) (Cursor, error)
	// ApplySynced applies events to the local tier and moves its cursor
	// from prev to next, all in one transaction. Each event is appended to
	// this node's change log with its record, under the local tier, so that
	// this node's downstreams receive it. ErrConflict, and nothing changes,
	// if the stored cursor is no longer prev (another writer moved it) or
	// the events' hub sequence does not continue from prev.HubSeq.
	ApplySynced(ctx context.Context, prev, next Cursor, events []SyncedEvent) error

	// TrustedKeys lists the hub keys pinned through the admin API.
	TrustedKeys(ctx context.Context) ([]TrustedKey, error)
	// AddTrustedKey pins a key. ErrConflict if its ID is pinned.
	AddTrustedKey(ctx context.Context, k TrustedKey) error
	// RemoveTrustedKey unpins a key. ErrNotFound if it is not pinned.
	RemoveTrustedKey(ctx context.Context, id string) error
}
