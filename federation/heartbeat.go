package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Heartbeats. A relay can delay records but not forge them; what it could
// still do unseen is stop: answer every feed request with "nothing new",
// or forward everything but one record and stop there. The hub therefore
// signs, per tier and every few seconds, a small statement — this tier's
// newest hub sequence is N, at time T — that is never logged (it takes no
// sequence number) and travels down on every feed answer. Each node keeps
// the newest one it verified per link and forwards it, unchanged, to its
// own downstreams. A downstream whose newest heartbeat is too old (the
// path from the hub froze), or who has been told of record N for too long
// without receiving it (withheld), reports itself stale and looks for
// another upstream.

// TypeHeartbeat is the Record type of a hub heartbeat. It is not a catalog
// event: no change log holds one.
const TypeHeartbeat catalog.EventType = "tier.heartbeat"

// Heartbeat defaults and bounds.
const (
	// DefaultHeartbeatEvery is how often the hub signs a tier's heartbeat.
	DefaultHeartbeatEvery = 5 * time.Second
	// DefaultStaleAfter is how old the newest heartbeat may grow, and how
	// long a record it announces may stay missing, before a link reports
	// itself stale. A heartbeat reaches a node at depth d within about
	// heartbeat_every + d × sync.wait (each hop forwards it on its next
	// answer, and a quiet long poll answers after sync.wait): 2m covers
	// three levels with the 30s default wait.
	DefaultStaleAfter = 2 * time.Minute
	// HeartbeatSkew is how far in the future a heartbeat's time may be,
	// for clocks that disagree a little. A heartbeat further ahead is
	// refused: it would keep a frozen path looking fresh for longer.
	HeartbeatSkew = 10 * time.Second
)

// More sentinel errors of heartbeat and skip verification.
var (
	// ErrFutureHeartbeat means a heartbeat is dated further ahead than
	// HeartbeatSkew.
	ErrFutureHeartbeat = errors.New("heartbeat from the future")
	// ErrUnexplainedSkip means a feed entry says skip without the signed
	// record that explains it.
	ErrUnexplainedSkip = errors.New("skip without a signed reason")
)

// validateHeartbeat checks a heartbeat record: a tier, a hub sequence that
// may be 0 (a tier with no record yet), a time, and nothing else.
func (r Record) validateHeartbeat() error {
	if r.TierSeq < 0 {
		return invalid("tier_seq", "must be at least 0, got %d", r.TierSeq)
	}
	if r.Time.IsZero() {
		return invalid("time", "must be set")
	}
	if r.Token != nil || !patchIsZero(r.Patch) {
		return invalid("type", "a heartbeat carries no patch and no token")
	}
	return nil
}

// heartbeatWire is how a heartbeat is encoded: a Record without the empty
// patch, which would more than double every feed answer's heartbeat. Open
// reads it as a Record (an absent field is a zero one), and since nodes
// verify the hub's exact bytes, no other encoding has to agree with it.
type heartbeatWire struct {
	V       int               `json:"v"`
	Key     string            `json:"key"`
	Tier    string            `json:"tier"`
	TierSeq int64             `json:"tier_seq"`
	Type    catalog.EventType `json:"type"`
	Time    time.Time         `json:"time"`
}

// SignHeartbeat signs the heartbeat of tier: its newest hub sequence is
// head, at time at. The record is about 130 bytes; its envelope, as a
// feed answer carries it, about 300.
func SignHeartbeat(priv ed25519.PrivateKey, tier string, head int64, at time.Time) (Envelope, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return Envelope{}, fmt.Errorf("sign heartbeat: private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	r := Record{V: FormatVersion, Key: KeyID(priv.Public().(ed25519.PublicKey)), Tier: tier, TierSeq: head, Type: TypeHeartbeat, Time: at.UTC()}
	if err := r.validate(); err != nil {
		return Envelope{}, fmt.Errorf("sign heartbeat: %w", err)
	}
	b, err := json.Marshal(heartbeatWire{V: r.V, Key: r.Key, Tier: r.Tier, TierSeq: r.TierSeq, Type: r.Type, Time: r.Time})
	if err != nil {
		return Envelope{}, fmt.Errorf("sign heartbeat: encode: %w", err)
	}
	return Envelope{Record: b, Sig: ed25519.Sign(priv, b)}, nil
}

// VerifyHeartbeat checks e as a heartbeat for a link of hubTier, at time
// now, against held, the newest heartbeat the link holds (zero if none).
// It returns the heartbeat and whether it is newer than held; one that is
// not newer (a relay forwarding what it had, or an upstream further
// behind after a failover) is no error, just nothing new.
//
// The error wraps ErrUnknownKey, ErrBadSignature or ErrMalformedRecord for
// an envelope that is not a hub heartbeat, ErrWrongTier for one of another
// hub tier, ErrFutureHeartbeat for one dated beyond HeartbeatSkew, and
// ErrReplay for one newer than held but announcing a lower sequence: the
// hub's head never goes back.
func (v *Verifier) VerifyHeartbeat(e Envelope, hubTier string, held Record, now time.Time) (Record, bool, error) {
	r, err := v.open(e)
	if err != nil {
		return Record{}, false, err
	}
	switch {
	case r.Type != TypeHeartbeat:
		return Record{}, false, fmt.Errorf("%w: a %s record where a heartbeat belongs", ErrMalformedRecord, r.Type)
	case r.Tier != hubTier:
		return Record{}, false, fmt.Errorf("%w: heartbeat of hub tier %s on a link for %s", ErrWrongTier, r.Tier, hubTier)
	case r.Time.After(now.Add(HeartbeatSkew)):
		return Record{}, false, fmt.Errorf("%w: dated %s, now is %s", ErrFutureHeartbeat,
			r.Time.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if held.Time.IsZero() {
		return r, true, nil
	}
	if !r.Time.After(held.Time) {
		return r, false, nil
	}
	if r.TierSeq < held.TierSeq {
		return Record{}, false, fmt.Errorf("%w: heartbeat of %s announces hub seq %d, an older one announced %d",
			ErrReplay, r.Time.Format(time.RFC3339), r.TierSeq, held.TierSeq)
	}
	return r, true, nil
}

// VerifySkip checks that because, a hub envelope, explains why a feed
// entry carrying skipped may be recorded without its patch: a withdrawal
// or removal of the same patch on the same hub tier, later in the tier's
// sequence. The error wraps ErrUnexplainedSkip, and also the verification
// error if because does not verify.
func (v *Verifier) VerifySkip(skipped Record, because Envelope) error {
	b, err := v.Open(because)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnexplainedSkip, err)
	}
	switch {
	case b.Tier != skipped.Tier:
		return fmt.Errorf("%w: reason is of hub tier %s, the record of %s", ErrUnexplainedSkip, b.Tier, skipped.Tier)
	case b.Type != catalog.EventPatchWithdrawn && b.Type != catalog.EventPatchRemoved:
		return fmt.Errorf("%w: reason is a %s record", ErrUnexplainedSkip, b.Type)
	case b.Patch.Digest != skipped.Patch.Digest:
		return fmt.Errorf("%w: reason concerns %s, the record %s", ErrUnexplainedSkip, b.Patch.Digest, skipped.Patch.Digest)
	case b.TierSeq <= skipped.TierSeq:
		return fmt.Errorf("%w: reason is hub seq %d, not after the record's %d", ErrUnexplainedSkip, b.TierSeq, skipped.TierSeq)
	}
	return nil
}

// Heartbeats offers the newest verified heartbeat of each local tier: a
// hub's own (Beacon), or, on a relay or edge, the newest the tier's link
// received (Puller). The feed serves it; machines will be offered it too.
type Heartbeats interface {
	// Latest returns the newest heartbeat for the local tier, and false if
	// there is none (a tier no link feeds, or a link that has not finished
	// a round since the node started: heartbeats are kept in memory only).
	Latest(tier string) (Envelope, bool)
}

// BeaconStore is what the hub's Beacon reads: the tiers, and each tier's
// newest hub sequence (the feed's HubHead).
type BeaconStore interface {
	Tiers(ctx context.Context) ([]catalog.Tier, error)
	Feed(ctx context.Context, tier string, pos store.FeedPosition, limit int) (store.FeedPage, error)
}

// Beacon signs the hub's heartbeats: every Every, one per tier, with the
// tier's newest hub sequence. Run it on the hub; serve Latest.
type Beacon struct {
	key   ed25519.PrivateKey
	store BeaconStore
	every time.Duration
	now   func() time.Time
	log   *slog.Logger
	// changes, when set, wakes Run at each catalog change, so that a new
	// tier has a heartbeat, and a new record is announced, at once rather
	// than up to Every later: machines count an answer without a
	// heartbeat as stale.
	changes *store.Changes

	mu     sync.Mutex
	latest map[string]Envelope
}

var _ Heartbeats = (*Beacon)(nil)

// NewBeacon returns a Beacon signing with key; every ≤ 0 means
// DefaultHeartbeatEvery, nil now means time.Now.
func NewBeacon(key ed25519.PrivateKey, st BeaconStore, every time.Duration, now func() time.Time, log *slog.Logger) *Beacon {
	if every <= 0 {
		every = DefaultHeartbeatEvery
	}
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Beacon{key: key, store: st, every: every, now: now, log: log, latest: map[string]Envelope{}}
}

// WakeOn makes Run sign again after each change c announces, besides
// every Every. Call it before Run.
func (b *Beacon) WakeOn(c *store.Changes) { b.changes = c }

// minBeatGap bounds how often changes make Run sign: a burst of uploads
// costs at most one round of per-tier head reads per gap.
const minBeatGap = 50 * time.Millisecond

// Latest returns the tier's newest heartbeat.
func (b *Beacon) Latest(tier string) (Envelope, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.latest[tier]
	return e, ok
}

// Run signs at once, then every Every, until ctx ends. A store that fails
// leaves the last heartbeats in place, to age: downstreams then see the
// hub as stale, which it is.
func (b *Beacon) Run(ctx context.Context) {
	t := time.NewTicker(b.every)
	defer t.Stop()
	for {
		// Taken before the beat reads, so that a change committed while
		// it reads wakes the next one.
		var changed <-chan struct{}
		if b.changes != nil {
			changed = b.changes.Wait()
		}
		if err := b.Beat(ctx); err != nil && ctx.Err() == nil {
			b.log.Warn("hub heartbeat not signed", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
			select {
			case <-ctx.Done():
				return
			case <-time.After(minBeatGap):
			}
		}
	}
}

// Beat signs one heartbeat per tier now.
func (b *Beacon) Beat(ctx context.Context) error {
	tiers, err := b.store.Tiers(ctx)
	if err != nil {
		return fmt.Errorf("heartbeat: list tiers: %w", err)
	}
	fresh := make(map[string]Envelope, len(tiers))
	for _, t := range tiers {
		// A position past every entry reads no entry, only the head.
		page, err := b.store.Feed(ctx, t.Name, store.FeedPosition{AfterSeq: math.MaxInt64}, 1)
		if err != nil {
			return fmt.Errorf("heartbeat: head of %s: %w", t.Name, err)
		}
		e, err := SignHeartbeat(b.key, t.Name, page.HubHead, b.now())
		if err != nil {
			return fmt.Errorf("heartbeat of %s: %w", t.Name, err)
		}
		fresh[t.Name] = e
	}
	b.mu.Lock()
	b.latest = fresh
	b.mu.Unlock()
	return nil
}
