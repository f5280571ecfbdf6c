package federation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/replicate"
	"github.com/patchmesh/patchmesh/store"
)

// Cut-through relaying. A relay that has verified a hub record and is
// fetching its blob lists the record as pending in its own feed at once
// (FeedResponse.Pending), before the blob is in and the record applied. A
// downstream that asks for pending records (pending_after) verifies them
// and starts fetching their blobs from the relay, which streams the bytes
// as they arrive (replicate.Replicator.Stream) and cuts the stream if its
// own digest check fails. The downstream applies the record only once the
// relay's feed carries it as an event, as before; by then its own copy of
// the blob is in, or nearly. Nothing pending is visible to machines: a
// pending record is not in the catalog, and its blob is served while it
// arrives only to sync tokens of the record's tier.

// maxPending bounds how many pending records a feed page carries and a
// downstream starts fetching from one page.
const maxPending = 32

// ErrNotArriving means this node is not fetching the blob for the tier.
var ErrNotArriving = errors.New("blob is not arriving for this tier")

// Arrivals is what the API needs of a sync loop to relay blobs still
// arriving: the pending records to list in a tier's feed, and the bytes of
// their blobs.
type Arrivals interface {
	// Pending returns the verified hub records this node is fetching blobs
	// for on local tier, past hub sequence after, oldest first.
	Pending(tier string, after int64) []Envelope
	// OpenArriving opens the blob of a pending record of tier from byte
	// off on while it arrives; see replicate.Replicator.Stream. It fails
	// with ErrNotArriving when no pending record of tier names d, and
	// with blob.ErrNotFound when one does but its bytes cannot be
	// streamed (the transfer has ended: the blob store has the blob, if
	// it verified).
	OpenArriving(ctx context.Context, tier string, d blob.Digest, off int64) (io.ReadCloser, int64, error)
}

// Streamer is a Fetcher that can pass on a blob it is still receiving;
// *replicate.Replicator is one.
type Streamer interface {
	Stream(ctx context.Context, d blob.Digest, off int64) (io.ReadCloser, int64, bool)
}

var _ Arrivals = (*Puller)(nil)

// pendingRecord is a verified hub record whose blob this node is fetching.
type pendingRecord struct {
	env    Envelope
	hubSeq int64
	want   replicate.Want
}

// pendingSet holds the pending records of every link, by local tier.
type pendingSet struct {
	mu         sync.Mutex
	byTier     map[string][]pendingRecord
	prefetched map[string]int64 // newest hub seq a downstream prefetch started for
}

func (p *Puller) addPending(tier string, recs []pendingRecord) {
	if len(recs) == 0 {
		return
	}
	ps := &p.pending
	ps.mu.Lock()
	if ps.byTier == nil {
		ps.byTier = map[string][]pendingRecord{}
	}
	have := ps.byTier[tier]
	for _, r := range recs {
		if !slices.ContainsFunc(have, func(h pendingRecord) bool { return h.hubSeq == r.hubSeq }) {
			have = append(have, r)
		}
	}
	slices.SortFunc(have, func(a, b pendingRecord) int { return int(a.hubSeq - b.hubSeq) })
	ps.byTier[tier] = have
	ps.mu.Unlock()
	if p.cfg.Notify != nil {
		p.cfg.Notify()
	}
}

// dropPending forgets the pending records of tier that drop says.
func (p *Puller) dropPending(tier string, drop func(pendingRecord) bool) {
	ps := &p.pending
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if len(ps.byTier[tier]) > 0 {
		ps.byTier[tier] = slices.DeleteFunc(ps.byTier[tier], drop)
	}
}

// Pending implements Arrivals.
func (p *Puller) Pending(tier string, after int64) []Envelope {
	ps := &p.pending
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out []Envelope
	for _, r := range ps.byTier[tier] {
		if r.hubSeq > after && len(out) < maxPending {
			out = append(out, r.env)
		}
	}
	return out
}

// OpenArriving implements Arrivals.
func (p *Puller) OpenArriving(ctx context.Context, tier string, d blob.Digest, off int64) (io.ReadCloser, int64, error) {
	p.pending.mu.Lock()
	found := slices.ContainsFunc(p.pending.byTier[tier], func(r pendingRecord) bool { return r.want.Digest == d })
	p.pending.mu.Unlock()
	if !found {
		return nil, 0, ErrNotArriving
	}
	if st, ok := p.cfg.Fetcher.(Streamer); ok {
		if rc, size, ok := st.Stream(ctx, d, off); ok {
			return rc, size, nil
		}
	}
	return nil, 0, fmt.Errorf("%s is not streaming: %w", d, blob.ErrNotFound)
}

// pendingAfter is the hub sequence past which l asks its upstream for
// pending records: what it applied, or started fetching already.
func (p *Puller) pendingAfter(l *linkState, cur store.Cursor) int64 {
	p.pending.mu.Lock()
	defer p.pending.mu.Unlock()
	return max(cur.HubSeq, p.pending.prefetched[l.cfg.Tier])
}

// prefetch verifies the pending records of an upstream's page and starts
// fetching the blobs of those past this node's cursor in the background,
// from the upstream, which streams them as they arrive there. The records
// become pending here too, so that this node's own downstreams can start
// in turn. The round that later applies the records finds the blobs
// present, or joins the transfers under way. Errors only cost the head
// start: the round fetches as it always has.
func (p *Puller) prefetch(ctx context.Context, l *linkState, up Upstream, v *Verifier, cur store.Cursor, pending []Envelope) {
	after := p.pendingAfter(l, cur)
	var recs []pendingRecord
	newest := after
	for _, env := range pending[:min(len(pending), maxPending)] {
		r, err := v.Open(env)
		if err == nil && r.Tier != l.cfg.HubTier {
			err = fmt.Errorf("%w: pending record of hub tier %s on a link for hub tier %s", ErrWrongTier, r.Tier, l.cfg.HubTier)
		}
		if err != nil {
			l.rejected()
			p.securityEvent(ctx, l, up, "pending_"+reason(err), slog.String("error", err.Error()))
			continue
		}
		if r.TierSeq <= after || (r.Type != catalog.EventPatchAdded && r.Type != catalog.EventPatchPromoted) ||
			r.Patch.Size <= 0 || !l.cfg.Filter.Match(r.Patch) {
			continue
		}
		recs = append(recs, pendingRecord{env: env, hubSeq: r.TierSeq,
			want: replicate.Want{Digest: blob.Digest(r.Patch.Digest), Size: r.Patch.Size}})
		newest = max(newest, r.TierSeq)
	}
	if len(recs) == 0 {
		return
	}
	p.pending.mu.Lock()
	if p.pending.prefetched == nil {
		p.pending.prefetched = map[string]int64{}
	}
	p.pending.prefetched[l.cfg.Tier] = newest
	p.pending.mu.Unlock()
	p.addPending(l.cfg.Tier, recs)
	wants := make([]replicate.Want, len(recs))
	for i, r := range recs {
		wants[i] = r.want
	}
	go func() {
		res, err := p.fetch(ctx, l, up, wants)
		l.replicated(res.Bytes)
		if err == nil {
			return
		}
		if errors.Is(err, blob.ErrDigestMismatch) {
			l.rejected()
			p.securityEvent(ctx, l, up, "digest_mismatch")
		}
		p.dropPending(l.cfg.Tier, func(r pendingRecord) bool {
			return slices.ContainsFunc(recs, func(m pendingRecord) bool { return m.hubSeq == r.hubSeq })
		})
		if ctx.Err() == nil {
			p.cfg.Log.Info("early fetch of pending blobs failed; the round fetches them when it applies the records",
				slog.String("tier", l.cfg.Tier), slog.String("upstream", up.URL), slog.String("error", err.Error()))
		}
	}()
}
