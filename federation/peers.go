package federation

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/replicate"
)

// Peer fetch: the nodes of one data centre that pull a tier from the same
// upstream learn of a new blob at the same moment, from the same feed. If
// each fetched it upstream, the hub would send every blob once per node.
// Instead they agree, without talking, on a designated fetcher (the Peers
// hook decides, from gossip: the lowest name among them); it fetches from
// the upstream at once, and the others wait for a peer to have the blob and
// fetch it from there, inside the data centre. So the hub sends each blob
// about once per data centre and upstream link. A waiting node asks the
// designated peer with a wait (peerAsk): the peer answers the moment its
// copy is committed, so the node learns of it at once without polling.
//
// Waiting is bounded: after PeerWait without any peer delivering, or as soon
// as the hook says this node is now the designated one (the designated peer
// died, by gossip), a node goes upstream itself. A peer's bytes are checked
// against the digest like any other; a peer that lies is logged and passed
// over for the next source, the upstream last.

// DefaultPeerWait is PullConfig.PeerWait's default. It should cover the
// designated fetcher's transfer of one blob from upstream; past it, nodes
// fetch upstream themselves, which costs hub egress but never progress.
const DefaultPeerWait = 10 * time.Second

// MaxPeerBlobWait caps how long a node holds a peer's request for a blob
// it does not have yet (?wait= on GET and HEAD /v1/peer/blobs/{digest}):
// each waiting request holds a connection and a goroutine.
const MaxPeerBlobWait = 5 * time.Second

const (
	// peerAsk is how long a waiting node asks the designated peer to hold
	// its answer for a blob it does not have yet (?wait= on the peer
	// endpoint): one long request instead of a HEAD every peerPoll, and
	// short enough that the Peers hook is asked again, and a new
	// designated fetcher followed, about once a second.
	peerAsk = time.Second
	// peerPoll is the least time between two rounds of asks: a peer that
	// answers at once (a node that ignores the wait, or holds too many
	// waiters) makes the wait a poll at this pace, never a hot loop.
	peerPoll = 100 * time.Millisecond
	// peerProbeTimeout bounds one ask to a peer past its wait: a peer in
	// the same data centre that takes longer is as good as gone.
	peerProbeTimeout = 2 * time.Second
	// peerMissesPerPoll bounds how many blobs no peer has are asked about
	// per poll, so that waiting on a large batch does not flood the
	// peers; the next poll goes on from there.
	peerMissesPerPoll = 4
)

// Peers tells a link who its same-DC peers are for a tier pulled from
// upstream (a base URL): whether this node is the designated fetcher, and
// the peers to fetch from, the designated one first. It is called on every
// poll, so that a change in gossip (the designated peer dying) takes effect
// while a node waits. The peers' sources name their peer listeners
// (mutual TLS, no token) and replicate.PeerPath.
type Peers func(tier, upstream string) (designated bool, peers []replicate.Source)

// PeerFetcher is the Fetcher a Peers hook needs: one that can try several
// sources per blob, ask a source whether it has a blob, and say which blobs
// are not stored here yet. *replicate.Replicator is one.
type PeerFetcher interface {
	Fetcher
	FetchFrom(ctx context.Context, sources []replicate.Source, want []replicate.Want) (replicate.Result, error)
	Has(ctx context.Context, src replicate.Source, d blob.Digest, wait time.Duration) (bool, error)
	Missing(ctx context.Context, want []replicate.Want) ([]replicate.Want, error)
}

// fetch makes wants present for one round of l, from up or, when the Peers
// hook says so, from same-DC peers first.
func (p *Puller) fetch(ctx context.Context, l *linkState, up Upstream, wants []replicate.Want) (replicate.Result, error) {
	upSrc := replicate.Source{BaseURL: up.URL, Token: up.Token}
	if p.cfg.Peers == nil {
		return p.cfg.Fetcher.Fetch(ctx, upSrc, wants)
	}
	if designated, peers := p.cfg.Peers(l.cfg.Tier, up.URL); designated || len(peers) == 0 {
		return p.cfg.Fetcher.Fetch(ctx, upSrc, wants)
	}
	pf := p.cfg.Fetcher.(PeerFetcher) // NewPuller checked
	missing, err := pf.Missing(ctx, wants)
	if err != nil {
		return replicate.Result{}, err
	}
	w := &peerWait{p: p, pf: pf, l: l, up: upSrc, pending: missing}
	w.total.Present = len(wants) - len(missing)
	w.run(ctx)
	switch {
	case len(w.pending) == 0:
	case ctx.Err() != nil:
		w.errs = append(w.errs, ctx.Err())
	default:
		if w.waited {
			attrs := []slog.Attr{slog.String("tier", l.cfg.Tier), slog.String("upstream", up.URL),
				slog.Int("blobs", len(w.pending)), slog.String("why", w.why)}
			if w.lastErr != nil {
				attrs = append(attrs, slog.String("last_peer_error", w.lastErr.Error()))
			}
			p.cfg.Log.LogAttrs(ctx, slog.LevelInfo, "blobs not at a same-DC peer in time, fetching them upstream", attrs...)
		}
		w.fetch(ctx, []replicate.Source{upSrc}, w.pending)
	}
	p.peerMismatches(ctx, l, up, w.total.Mismatches)
	return w.total, errors.Join(w.errs...)
}

// peerWait is one round's wait for peers to have its blobs.
type peerWait struct {
	p       *Puller
	pf      PeerFetcher
	l       *linkState
	up      replicate.Source
	pending []replicate.Want

	total   replicate.Result
	errs    []error
	waited  bool   // at least one poll found a blob missing at every peer
	why     string // why the wait ended with blobs pending
	lastErr error  // the last peer's failure to answer, for the log
}

// run asks the peers until every pending blob came from one, the wait
// runs out without a peer delivering, or this node becomes the designated
// fetcher. It leaves what is still pending in w.pending.
func (w *peerWait) run(ctx context.Context) {
	deadline := time.Now().Add(w.p.cfg.PeerWait)
	pace := time.NewTimer(0)
	defer pace.Stop()
	for len(w.pending) > 0 {
		designated, peers := w.p.cfg.Peers(w.l.cfg.Tier, w.up.BaseURL)
		if designated || len(peers) == 0 {
			w.why = "this node is now the designated fetcher"
			return
		}
		pace.Reset(peerPoll)
		if w.poll(ctx, peers, deadline) {
			// A peer delivered: the designated fetcher is alive and
			// working, so the wait starts over for the rest.
			deadline = time.Now().Add(w.p.cfg.PeerWait)
		}
		if len(w.pending) == 0 {
			return
		}
		w.waited = true
		select {
		case <-ctx.Done():
			return
		case <-pace.C:
		}
		if !time.Now().Before(deadline) {
			w.why = "no peer had them within the peer wait"
			return
		}
	}
}

// poll asks the peers, in order, about the pending blobs, and fetches those
// one of them has. Until one is found, the first ask at the designated
// peer (peers[0]) waits for it up to peerAsk, but not past deadline; the
// rest of the asks answer at once, so that a poll takes about one peerAsk
// at most and what it found is fetched without waiting on the others. After
// peerMissesPerPoll blobs no peer has, it asks about no more this time and
// puts those it did not ask about first for the next poll. It reports
// whether any blob came from a peer.
func (w *peerWait) poll(ctx context.Context, peers []replicate.Source, deadline time.Time) bool {
	until := time.Now().Add(min(peerAsk, time.Until(deadline)))
	found := make([][]replicate.Want, len(peers))
	var unasked, missed []replicate.Want
	anyFound := false
	for _, want := range w.pending {
		if len(missed) >= peerMissesPerPoll || ctx.Err() != nil {
			unasked = append(unasked, want)
			continue
		}
		var wait time.Duration
		if !anyFound {
			wait = max(time.Until(until), 0).Truncate(time.Millisecond)
		}
		if at := w.findPeer(ctx, peers, want.Digest, wait); at >= 0 {
			found[at] = append(found[at], want)
			anyFound = true
		} else {
			missed = append(missed, want)
		}
	}
	w.pending = append(unasked, missed...)
	delivered := false
	for at, ws := range found {
		if len(ws) == 0 {
			continue
		}
		// The peer that has them first, then the other peers, then the
		// upstream: a peer that fails now must not fail the round.
		srcs := append([]replicate.Source{peers[at]}, peers[:at]...)
		srcs = append(srcs, peers[at+1:]...)
		before := w.total.Fetched + w.total.Present
		w.fetch(ctx, append(srcs, w.up), ws)
		delivered = delivered || w.total.Fetched+w.total.Present > before
	}
	return delivered
}

// findPeer returns the index of the first peer that has d, or -1. The
// first peer, the designated fetcher, is asked to hold its answer up to
// wait for d to arrive there; the others answer at once: they have d
// only if they already fetched it from the designated one or upstream.
func (w *peerWait) findPeer(ctx context.Context, peers []replicate.Source, d blob.Digest, wait time.Duration) int {
	for i, src := range peers {
		var ask time.Duration
		if i == 0 {
			ask = wait
		}
		pctx, cancel := context.WithTimeout(ctx, ask+peerProbeTimeout)
		has, err := w.pf.Has(pctx, src, d, ask)
		cancel()
		if err != nil {
			w.lastErr = err
		}
		if has {
			return i
		}
	}
	return -1
}

// fetch fetches ws from the first of srcs that serves each, adding to the
// round's totals.
func (w *peerWait) fetch(ctx context.Context, srcs []replicate.Source, ws []replicate.Want) {
	res, err := w.pf.FetchFrom(ctx, srcs, ws)
	w.total.Fetched += res.Fetched
	w.total.Present += res.Present
	w.total.Bytes += res.Bytes
	w.total.Mismatches = append(w.total.Mismatches, res.Mismatches...)
	if err != nil {
		w.errs = append(w.errs, err)
	}
}

// peerMismatches logs a security event for each blob a peer sent bytes of
// that did not hash to its digest. The upstream's own mismatches are the
// round's to log, as without peers.
func (p *Puller) peerMismatches(ctx context.Context, l *linkState, up Upstream, ms []replicate.Mismatch) {
	for _, m := range ms {
		if strings.TrimSuffix(m.Source, "/") == strings.TrimSuffix(up.URL, "/") {
			continue
		}
		l.rejected()
		auth.SecurityEvent(ctx, p.cfg.Log, EventRecordRejected, slog.String("tier", l.cfg.Tier),
			slog.String("hub_tier", l.cfg.HubTier), slog.String("peer", m.Source),
			slog.String("digest", string(m.Digest)), slog.String("reason", "digest_mismatch"))
	}
}
