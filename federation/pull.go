package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/replicate"
	"github.com/patchmesh/patchmesh/store"
)

// Security event codes the sync loop logs. A record or blob that fails
// verification means someone between the hub and here is lying, or a
// disk is; an upstream that refuses the sync token means the token was
// revoked or the upstream is not the one configured.
//
// EventRecordRejected also covers what an upstream says beside the
// records that the signed data gives the lie to: a heartbeat that does not
// verify, a skip without its signed reason, a head that promises records
// the page does not hold. EventStale is logged when a link turns stale
// (heartbeat.go), once per change of reason, not every round.
const (
	EventRecordRejected = "sync_record_fail"
	EventUpstreamAuth   = "sync_upstream_auth_fail"
	EventStale          = "sync_stale"
)

// Upstream is one candidate a link may pull from.
type Upstream struct {
	// URL is the upstream node's base URL, e.g. https://hub.example:8443.
	URL string
	// Token is a sync token the upstream issued for the tier to pull.
	Token string
	// AllowHTTP permits a plain http:// URL. Without it such a URL is
	// refused: the sync token and every blob would cross the network in
	// clear, for anyone on the path to read or change.
	AllowHTTP bool
}

// Link pulls one hub tier into one local tier.
type Link struct {
	// Tier is the local tier the link feeds. One link per local tier.
	Tier string
	// HubTier is the hub tier whose signed records the link accepts; a
	// record of any other tier is refused, so a relay cannot move a patch
	// onto a tier the hub did not put it on. Default: Tier.
	HubTier string
	// Upstreams are the candidates in order of preference; the link
	// moves to the next after FailoverAfter consecutive failed rounds.
	Upstreams []Upstream
	Filter    Filter
}

// Store is what the sync loop needs of the store.
type Store interface {
	store.Syncer
	MeshKeyStore
	Tiers(ctx context.Context) ([]catalog.Tier, error)
	AddTier(ctx context.Context, name string) (catalog.Tier, error)
}

// Fetcher copies blobs from an upstream; *replicate.Replicator is one.
type Fetcher interface {
	Fetch(ctx context.Context, src replicate.Source, want []replicate.Want) (replicate.Result, error)
}

// PullConfig is what NewPuller builds the sync loop from.
type PullConfig struct {
	Store   Store
	Fetcher Fetcher
	// Client carries feed requests: the sync transport with its proxy,
	// CA bundle and TLS floor.
	Client *http.Client
	// Keys returns the hub keys to trust now; it is called every round so
	// that a key pinned through the admin API takes effect at once.
	Keys  func(ctx context.Context) ([]ed25519.PublicKey, error)
	Links []Link
	// Wait is how long a caught-up link's feed request waits upstream for
	// new events (the long poll). Default 30s, at most MaxFeedWait.
	Wait time.Duration
	// Limit is the most events a round takes. Default DefaultFeedLimit.
	Limit int
	// RetryMin and RetryMax bound the exponential backoff (with jitter)
	// after a failed round. Defaults 500ms and 1m.
	RetryMin, RetryMax time.Duration
	// FailoverAfter is how many consecutive failed rounds move a link to
	// its next upstream. Default 3.
	FailoverAfter int
	// DemoteFor is how long an upstream that failed FailoverAfter rounds
	// in a row is passed over before the link tries it again. Default 30s.
	DemoteFor time.Duration
	// Health, if set, is gossip's view of the upstreams: a link skips a
	// candidate gossip knows to be down, and returns to its preferred one
	// once gossip sees it alive again.
	Health Health
	// Peers, if set, lets the nodes of a data centre fetch each blob from
	// the hub side about once between them (see peers.go); it needs a
	// Fetcher that is a PeerFetcher. Nil: every blob from the upstream.
	Peers Peers
	// PeerWait is how long a node that is not its data centre's designated
	// fetcher waits for a peer to have a blob before it goes upstream
	// itself. Default DefaultPeerWait.
	PeerWait time.Duration
	// StaleAfter bounds how old a link's newest hub heartbeat may grow,
	// and how long a record a heartbeat announced may stay missing, before
	// the link reports itself stale and tries other upstreams. Default
	// DefaultStaleAfter.
	StaleAfter time.Duration
	// Notify, if set, is called when a link starts fetching blobs for
	// records it has verified but not applied yet, so that this node's
	// feed wakes its long polls and lists them as pending (relay.go).
	Notify func()
	// Node and Progress, if both set, name this node and give its sync
	// figures on every feed request (ProgressQuery), so that the upstream
	// knows where its downstreams are without gossip carrying it.
	Node     string
	Progress func() NodeProgress
	Log      *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Puller runs the sync loop of every link of a downstream node.
type Puller struct {
	cfg   PullConfig
	links []*linkState
	// meshKey says this node holds the mesh key, so rounds stop asking.
	meshKey atomic.Bool
	// pending is what this node relays while it arrives (relay.go).
	pending pendingSet
}

// NewPuller checks cfg and returns a Puller ready to Run.
func NewPuller(cfg PullConfig) (*Puller, error) {
	switch {
	case cfg.Store == nil || cfg.Fetcher == nil || cfg.Client == nil || cfg.Keys == nil:
		return nil, errors.New("federation: PullConfig needs Store, Fetcher, Client and Keys")
	case len(cfg.Links) == 0:
		return nil, errors.New("federation: no links to pull")
	}
	if cfg.Node != "" {
		if err := catalog.ValidNodeName("node", cfg.Node); err != nil {
			return nil, fmt.Errorf("federation: PullConfig.Node: %w", err)
		}
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 30 * time.Second
	}
	cfg.Wait = min(cfg.Wait, MaxFeedWait)
	if cfg.Limit <= 0 {
		cfg.Limit = DefaultFeedLimit
	}
	cfg.Limit = min(cfg.Limit, MaxFeedLimit)
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 500 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(time.Minute, cfg.RetryMin)
	}
	if cfg.FailoverAfter <= 0 {
		cfg.FailoverAfter = 3
	}
	if cfg.DemoteFor <= 0 {
		cfg.DemoteFor = 30 * time.Second
	}
	if cfg.PeerWait <= 0 {
		cfg.PeerWait = DefaultPeerWait
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if _, ok := cfg.Fetcher.(PeerFetcher); cfg.Peers != nil && !ok {
		return nil, errors.New("federation: PullConfig.Peers needs a Fetcher that is a PeerFetcher")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Puller{cfg: cfg}
	seen := map[string]bool{}
	for _, l := range cfg.Links {
		if l.HubTier == "" {
			l.HubTier = l.Tier
		}
		if err := catalog.ValidName("tier", l.Tier); err != nil {
			return nil, fmt.Errorf("federation: link: %w", err)
		}
		if err := catalog.ValidName("hub_tier", l.HubTier); err != nil {
			return nil, fmt.Errorf("federation: link %s: %w", l.Tier, err)
		}
		if seen[l.Tier] {
			return nil, fmt.Errorf("federation: two links feed tier %s; a tier has one source", l.Tier)
		}
		seen[l.Tier] = true
		if len(l.Upstreams) == 0 {
			return nil, fmt.Errorf("federation: link %s has no upstream", l.Tier)
		}
		for _, u := range l.Upstreams {
			pu, err := parseBaseURL(u.URL)
			if err != nil {
				return nil, fmt.Errorf("federation: link %s: %w", l.Tier, err)
			}
			if pu.Scheme == "http" && !u.AllowHTTP {
				return nil, fmt.Errorf("federation: link %s: upstream %s is plain http, which sends the sync token and blobs in clear; use https or allow http for it explicitly", l.Tier, u.URL)
			}
			if u.Token == "" {
				return nil, fmt.Errorf("federation: link %s: upstream %s has no sync token", l.Tier, u.URL)
			}
		}
		if err := l.Filter.Validate(); err != nil {
			return nil, fmt.Errorf("federation: link %s: %w", l.Tier, err)
		}
		ls := newLinkState(l)
		ls.staleAfter = cfg.StaleAfter
		p.links = append(p.links, ls)
	}
	return p, nil
}

func parseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return nil, fmt.Errorf("upstream URL %q: want http(s)://host[:port][/path] without credentials or query", s)
	}
	return u, nil
}

// Run pulls every link until ctx ends. Local tiers a link feeds are
// created if missing, so a fresh downstream needs only its config.
func (p *Puller) Run(ctx context.Context) error {
	// A store that fails at start (a database restarting) must not leave
	// the node without sync for good: retry until it answers.
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = p.cfg.RetryMin, p.cfg.RetryMax, 0
	for {
		err := p.ensureTiers(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.cfg.Log.Error("sync cannot start yet", slog.String("error", err.Error()))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(bo.NextBackOff()):
		}
	}
	var wg sync.WaitGroup
	for _, l := range p.links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.runLink(ctx, l)
		}()
	}
	wg.Wait()
	return nil
}

func (p *Puller) ensureTiers(ctx context.Context) error {
	ts, err := p.cfg.Store.Tiers(ctx)
	if err != nil {
		return fmt.Errorf("federation: list tiers: %w", err)
	}
	have := map[string]bool{}
	for _, t := range ts {
		have[t.Name] = true
	}
	for _, l := range p.links {
		if have[l.cfg.Tier] {
			continue
		}
		if _, err := p.cfg.Store.AddTier(ctx, l.cfg.Tier); err != nil && !errors.Is(err, catalog.ErrConflict) {
			return fmt.Errorf("federation: create tier %s for its link: %w", l.cfg.Tier, err)
		}
		p.cfg.Log.Info("created the tier a sync link feeds", slog.String("tier", l.cfg.Tier))
	}
	return nil
}

// Status returns every link's state.
func (p *Puller) Status() []LinkStatus {
	out := make([]LinkStatus, len(p.links))
	for i, l := range p.links {
		out[i] = l.status(p.cfg.Now())
	}
	return out
}

// Trigger starts a round on every link at once; with wait, it returns
// when a round that started after the call has ended on every link.
func (p *Puller) Trigger(ctx context.Context, wait bool) ([]LinkStatus, error) {
	targets := make([]uint64, len(p.links))
	for i, l := range p.links {
		targets[i] = l.trigger()
	}
	if wait {
		for i, l := range p.links {
			if err := l.awaitRound(ctx, targets[i]); err != nil {
				return p.Status(), err
			}
		}
	}
	return p.Status(), nil
}

var _ Control = (*Puller)(nil)

// Poke starts a round at once on every link that counts url among its
// upstreams: gossip saw that node's head advance, or its health change.
// A round already waiting on a long poll gives way to the new one, which
// also reconsiders which upstream to use.
func (p *Puller) Poke(url string) {
	for _, l := range p.links {
		if l.uses(url) {
			l.trigger()
		}
	}
}

// Latest returns the newest hub heartbeat the link feeding the local tier
// received, for this node's own downstreams: a Puller is the Heartbeats
// of a relay or edge. Held in memory only: after a restart a link has
// none until its first round.
func (p *Puller) Latest(tier string) (Envelope, bool) {
	for _, l := range p.links {
		if l.cfg.Tier == tier {
			return l.heartbeat()
		}
	}
	return Envelope{}, false
}

var _ Heartbeats = (*Puller)(nil)

// Upstreams returns the upstream each link uses now, by local tier.
func (p *Puller) Upstreams() map[string]string {
	out := make(map[string]string, len(p.links))
	for _, l := range p.links {
		out[l.cfg.Tier] = l.upstream().URL
	}
	return out
}

// runLink is one link's loop: a round, then at once the next one, which
// long-polls the upstream when caught up; after a failure, a backoff pause
// that a trigger cuts short.
func (p *Puller) runLink(ctx context.Context, l *linkState) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = p.cfg.RetryMin
	bo.MaxInterval = p.cfg.RetryMax
	bo.MaxElapsedTime = 0 // a link never gives up
	bo.RandomizationFactor = 0.5
	bo.Reset()
	l.begin(p.cfg.Now())
	wait := time.Duration(0) // the first round answers at once, so status fills in
	for ctx.Err() == nil {
		select {
		case <-l.kick:
			wait = 0 // triggered between rounds: no long poll this time
		default:
		}
		gen := l.startRound()
		caughtUp, err := p.round(ctx, l, wait)
		if ctx.Err() != nil {
			l.endRound(gen, nil, false, p.cfg.Now())
			return
		}
		if errors.Is(err, errTriggered) {
			// Not a failure: the round gave way to the triggered one.
			l.endRound(gen, nil, false, p.cfg.Now())
			wait = 0
			continue
		}
		stale := p.checkStale(ctx, l)
		l.endRound(gen, err, stale, p.cfg.Now())
		if err == nil && !stale {
			bo.Reset()
			wait = 0
			if caughtUp {
				wait = p.cfg.Wait
			}
			continue
		}
		wait = 0
		if err != nil {
			p.cfg.Log.Warn("sync round failed", slog.String("tier", l.cfg.Tier),
				slog.String("upstream", l.upstream().URL), slog.String("error", err.Error()))
		}
		// A stale upstream counts as a failing one: back off, and after
		// FailoverAfter such rounds try the next candidate.
		if l.noteFailure(p.cfg.FailoverAfter, p.cfg.Now(), p.cfg.DemoteFor) {
			p.cfg.Log.Warn("sync upstream demoted after repeated failures", slog.String("tier", l.cfg.Tier),
				slog.String("upstream", l.upstream().URL), slog.Duration("for", p.cfg.DemoteFor))
			continue // straight to the next candidate, no pause
		}
		pause := time.NewTimer(bo.NextBackOff())
		select {
		case <-ctx.Done():
		case <-pause.C:
		case <-l.kick:
		}
		pause.Stop()
	}
}

// checkStale works out whether l is stale now, logs a change (security
// event EventStale on turning stale, a notice on turning fresh again), and
// reports whether it is.
func (p *Puller) checkStale(ctx context.Context, l *linkState) bool {
	reason, changed, st := l.staleChange(p.cfg.Now())
	if !changed {
		return reason != ""
	}
	up := l.upstream()
	if reason == "" {
		p.cfg.Log.Info("sync link fresh again", slog.String("tier", l.cfg.Tier), slog.String("upstream", up.URL))
		return false
	}
	auth.SecurityEvent(ctx, p.cfg.Log, EventStale, slog.String("tier", l.cfg.Tier), slog.String("hub_tier", l.cfg.HubTier),
		slog.String("upstream", up.URL), slog.String("reason", reason),
		slog.Float64("heartbeat_age_seconds", st.HeartbeatAge), slog.Int64("heartbeat_hub_head", st.HeartbeatHubHead),
		slog.Int64("hub_seq", st.HubSeq), slog.Duration("stale_after", p.cfg.StaleAfter))
	return true
}

// errBehind: the upstream has fewer hub records of the tier than this node
// applied — restored from an old backup, or a different hub.
var errBehind = errors.New("upstream is behind this node")

// round runs one sync round: read a feed page, verify every record, fetch
// the blobs, then apply the records and the new cursor in one store
// transaction. caughtUp says nothing more was pending upstream.
func (p *Puller) round(ctx context.Context, l *linkState, wait time.Duration) (caughtUp bool, err error) {
	up, changed := l.choose(p.cfg.Now(), p.cfg.Health)
	if changed {
		p.cfg.Log.Warn("sync link switches upstream", slog.String("tier", l.cfg.Tier), slog.String("upstream", up.URL))
	}
	cur, err := p.cfg.Store.Cursor(ctx, l.cfg.Tier)
	if err != nil {
		return false, fmt.Errorf("read cursor: %w", err)
	}
	if cur.HubTier != "" && cur.HubTier != l.cfg.HubTier {
		return false, fmt.Errorf("tier %s synced hub tier %s so far, the config now says %s; a tier cannot change its source",
			l.cfg.Tier, cur.HubTier, l.cfg.HubTier)
	}
	l.at(cur)
	pos := store.FeedPosition{AfterSeq: cur.UpstreamSeq}
	if cur.Upstream != up.URL && cur.HubSeq > 0 {
		// Seq numbers are per node: on a new upstream, resume after the
		// last hub record applied, which every node numbers the same.
		pos = store.FeedPosition{ByHub: true, AfterHubSeq: cur.HubSeq}
	}
	tm := roundTimes{start: time.Now()}
	pendingAfter := p.pendingAfter(l, cur)
	page, err := p.feed(ctx, l, up, pos, wait, pendingAfter)
	if err != nil {
		return false, err
	}
	tm.page = time.Now()
	if !pos.ByHub && cur.HubSeq > 0 && (page.Head < cur.UpstreamSeq || p.renumbered(ctx, page, cur.HubSeq)) {
		// The same upstream numbers its log differently now: restored
		// from a backup or rebuilt from empty. Its seq numbers mean
		// nothing to the cursor any more; the hub's still do.
		p.cfg.Log.Warn("sync upstream renumbered its log; resuming by hub sequence",
			slog.String("tier", l.cfg.Tier), slog.String("upstream", up.URL),
			slog.Int64("cursor", cur.UpstreamSeq), slog.Int64("upstream_head", page.Head))
		pos = store.FeedPosition{ByHub: true, AfterHubSeq: cur.HubSeq}
		if page, err = p.feed(ctx, l, up, pos, 0, pendingAfter); err != nil {
			return false, err
		}
	}
	l.observeHeads(page.Head, page.HubHead, cur.HubSeq, p.cfg.Now())
	if page.HubHead < cur.HubSeq {
		return false, fmt.Errorf("%w: its newest %s record is %d, this node applied %d", errBehind, l.cfg.HubTier, page.HubHead, cur.HubSeq)
	}

	keys, err := p.cfg.Keys(ctx)
	if err != nil {
		return false, fmt.Errorf("read pinned hub keys: %w", err)
	}
	if len(keys) == 0 {
		return false, errors.New("no hub key is pinned: set federation.trust or run patchmesh admin trust add")
	}
	v := NewVerifier(keys...)
	if hb := page.Heartbeat; hb != nil {
		r, newer, err := v.VerifyHeartbeat(*hb, l.cfg.HubTier, l.heldHeartbeat(), p.cfg.Now())
		if err != nil {
			l.rejected()
			p.securityEvent(ctx, l, up, "heartbeat_"+reason(err), slog.String("error", err.Error()))
			return false, fmt.Errorf("heartbeat refused: %w", err)
		}
		if newer {
			l.heard(r, *hb, p.cfg.Now())
		}
	}
	p.ensureMeshKey(ctx, l, up, v)
	p.prefetch(ctx, l, up, v, cur, page.Pending)
	events := make([]store.SyncedEvent, 0, len(page.Events))
	var wants []replicate.Want
	var arriving []pendingRecord
	last, lastSeq := cur.HubSeq, pos.AfterSeq
	opened, refusal, err := openEvents(v, l.cfg.HubTier, page.Events, pos.ByHub, pos.AfterSeq, cur.HubSeq)
	if err != nil {
		return false, err
	}
	var refused error
	if refusal != nil {
		l.rejected()
		p.securityEvent(ctx, l, up, reason(refusal.err), slog.Int64("upstream_seq", refusal.seq))
		// The records verified before this one are still applied
		// below; the round then fails and retries from here.
		refused = refusal
	}
	for _, oe := range opened {
		fe, r := oe.FeedEvent, oe.rec
		apply, explained := true, false
		if r.Type == catalog.EventPatchAdded || r.Type == catalog.EventPatchPromoted {
			// A patch the link's own filter excludes needs no blob,
			// whatever the upstream says. One it takes is recorded
			// without its blob only if the hub's own later withdrawal or
			// removal says so; an unexplained skip (forged, or a patch
			// the upstream filtered out) is missing data: fetch anyway,
			// and if the upstream cannot serve it the round fails.
			apply = l.cfg.Filter.Match(r.Patch)
			if apply && fe.Skip {
				serr := error(ErrUnexplainedSkip)
				if fe.Because != nil {
					serr = v.VerifySkip(r, *fe.Because)
				}
				if serr == nil {
					apply, explained = false, true
				} else {
					l.rejected()
					p.securityEvent(ctx, l, up, "unexplained_skip", slog.Int64("upstream_seq", fe.Seq),
						slog.String("digest", r.Patch.Digest), slog.String("error", serr.Error()))
				}
			}
			if apply {
				w := replicate.Want{Digest: blob.Digest(r.Patch.Digest), Size: r.Patch.Size}
				wants = append(wants, w)
				arriving = append(arriving, pendingRecord{env: fe.Envelope, hubSeq: r.TierSeq, want: w})
			}
		}
		ev := store.SyncedEvent{
			Record: fe.Record, Sig: fe.Sig, HubSeq: r.TierSeq, Type: r.Type, Patch: r.Patch, Token: r.CatalogToken(), Node: r.CatalogNode(), Rollout: r.Rollout, Machine: r.CatalogMachine(), Apply: apply,
		}
		if !apply && explained {
			// Kept to serve onward: the reason may lie in a later page.
			ev.BecauseRecord, ev.BecauseSig = fe.Because.Record, fe.Because.Sig
		}
		events = append(events, ev)
		last, lastSeq = r.TierSeq, fe.Seq
	}

	tm.verified = time.Now()
	if len(arriving) > 0 {
		// Listed in this node's feed while the blobs arrive, and until
		// the records are applied or the round fails.
		p.addPending(l.cfg.Tier, arriving)
		defer p.dropPending(l.cfg.Tier, func(r pendingRecord) bool { return r.hubSeq <= arriving[len(arriving)-1].hubSeq })
	}
	if len(wants) > 0 {
		res, err := p.fetch(ctx, l, up, wants)
		l.replicated(res.Bytes)
		if errors.Is(err, blob.ErrDigestMismatch) {
			l.rejected()
			p.securityEvent(ctx, l, up, "digest_mismatch")
		}
		if err != nil {
			return false, fmt.Errorf("fetch blobs: %w", err)
		}
	}

	next := store.Cursor{Tier: l.cfg.Tier, HubTier: l.cfg.HubTier, HubSeq: last, Upstream: up.URL, UpstreamSeq: cur.UpstreamSeq}
	switch {
	case len(events) > 0:
		next.UpstreamSeq = lastSeq
	case pos.ByHub && page.HubHead == cur.HubSeq:
		// Caught up on a new upstream, or on one that renumbered its
		// log: its head is where this node is.
		next.UpstreamSeq = page.Head
	case cur.Upstream != up.URL:
		// The new upstream is not past this node yet; keep the cursor.
		next = cur
	}
	if next.HubTier == "" {
		next.HubTier = l.cfg.HubTier
	}
	tm.fetched = time.Now()
	if len(events) > 0 || !sameCursor(cur, next) {
		prev := cur
		if err := p.cfg.Store.ApplySynced(ctx, prev, next, events); err != nil {
			return false, fmt.Errorf("apply %d records: %w", len(events), err)
		}
	}
	if len(events) > 0 {
		tm.log(ctx, p.cfg.Log, l, len(events), len(wants))
	}
	l.applied(next, len(events), p.cfg.Now())
	p.dropPending(l.cfg.Tier, func(r pendingRecord) bool { return r.hubSeq <= next.HubSeq })
	if refused != nil {
		return false, refused
	}
	// Head and HubHead are unsigned: they may only make the loop ask
	// again, never spin it. A page with nothing for this node while they
	// promise more is asked again at once once (a record may have
	// committed between the upstream's two reads), and refused after that,
	// so that the loop backs off.
	promises := next.UpstreamSeq < page.Head || page.HubHead > last
	if len(events) > 0 || !promises {
		l.emptyPromises = 0
	} else if l.emptyPromises++; l.emptyPromises > 1 {
		p.securityEvent(ctx, l, up, "inflated_head", slog.Int64("upstream_head", page.Head),
			slog.Int64("upstream_hub_head", page.HubHead), slog.Int64("hub_seq", last))
		return false, fmt.Errorf("upstream says head %d (hub %d) but sends nothing past %d (hub %d)",
			page.Head, page.HubHead, next.UpstreamSeq, last)
	}
	return len(events) < p.cfg.Limit && !promises, nil
}

func sameCursor(a, b store.Cursor) bool {
	return a.Tier == b.Tier && a.HubTier == b.HubTier && a.HubSeq == b.HubSeq &&
		a.Upstream == b.Upstream && a.UpstreamSeq == b.UpstreamSeq
}

// renumbered says whether a page asked for by seq starts with a record
// that does not continue this link's hub sequence although it verifies:
// the upstream's log was renumbered, so the page is not the one asked
// for. A record that does not verify is left to the round to refuse.
func (p *Puller) renumbered(ctx context.Context, page FeedResponse, last int64) bool {
	if len(page.Events) == 0 {
		return false
	}
	keys, err := p.cfg.Keys(ctx)
	if err != nil || len(keys) == 0 {
		return false
	}
	r, err := NewVerifier(keys...).Open(page.Events[0].Envelope)
	return err == nil && r.TierSeq != last+1
}

// maxFeedBody bounds a feed answer of limit events: a full page of the
// largest records and as many pending ones as a page lists, base64-encoded,
// with room to spare.
func maxFeedBody(limit int) int64 {
	return int64(limit+maxPending)*(MaxRecordSize*4/3+1024) + 4096
}

// feed asks the upstream for a page. A trigger cancels a long poll in
// progress, so that the round starts over at once.
func (p *Puller) feed(ctx context.Context, l *linkState, up Upstream, pos store.FeedPosition, wait time.Duration, pendingAfter int64) (FeedResponse, error) {
	pollCtx, cancel := context.WithTimeout(ctx, wait+30*time.Second)
	defer cancel()
	// While a long poll waits for the upstream's answer, a trigger cuts it
	// short. The watcher stops as soon as the answer's headers are in, so
	// that a late trigger neither breaks the body being read (a failed
	// round) nor is swallowed (a lost trigger): it stays for the next round.
	stopWatch, watchDone := make(chan struct{}), make(chan struct{})
	var kicked atomic.Bool
	if wait > 0 {
		go func() {
			defer close(watchDone)
			select {
			case <-l.kick:
				kicked.Store(true)
				cancel()
			case <-stopWatch:
			case <-pollCtx.Done():
			}
		}()
	} else {
		close(watchDone)
	}
	q := url.Values{}
	if pos.ByHub {
		q.Set("hub_after", strconv.FormatInt(pos.AfterHubSeq, 10))
	} else {
		q.Set("after", strconv.FormatInt(pos.AfterSeq, 10))
	}
	q.Set("limit", strconv.Itoa(p.cfg.Limit))
	q.Set("wait", wait.String())
	q.Set("pending_after", strconv.FormatInt(pendingAfter, 10))
	if p.cfg.Node != "" && p.cfg.Progress != nil {
		ProgressQuery(q, p.cfg.Node, p.cfg.Progress())
	}
	req, err := http.NewRequestWithContext(pollCtx, http.MethodGet, strings.TrimSuffix(up.URL, "/")+"/v1/sync/feed?"+q.Encode(), nil)
	if err != nil {
		return FeedResponse{}, fmt.Errorf("feed request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+up.Token)
	req.Header.Set("Accept", "application/json")
	resp, err := p.cfg.Client.Do(req)
	close(stopWatch)
	<-watchDone
	if kicked.Load() {
		// The trigger won, even if an answer raced it in: the loop starts
		// the triggered round at once, from the same cursor.
		if err == nil {
			resp.Body.Close()
		}
		return FeedResponse{}, errTriggered
	}
	if err != nil {
		return FeedResponse{}, fmt.Errorf("feed from %s: %w", up.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		auth.SecurityEvent(ctx, p.cfg.Log, EventUpstreamAuth, slog.String("tier", l.cfg.Tier),
			slog.String("upstream", up.URL), slog.Int("status", resp.StatusCode))
	}
	if resp.StatusCode != http.StatusOK {
		return FeedResponse{}, fmt.Errorf("feed from %s: %s%s", up.URL, resp.Status, errorBody(resp.Body, up.Token))
	}
	page, err := decodeFeedPage(resp.Body, p.cfg.Limit)
	if err != nil {
		return FeedResponse{}, fmt.Errorf("feed from %s: %w", up.URL, err)
	}
	return page, nil
}

// decodeFeedPage reads a feed answer asked for with limit: at most
// maxFeedBody(limit) bytes and limit events. Nothing in it is trusted yet;
// openEvents verifies the events.
func decodeFeedPage(r io.Reader, limit int) (FeedResponse, error) {
	var page FeedResponse
	if err := json.NewDecoder(io.LimitReader(r, maxFeedBody(limit))).Decode(&page); err != nil {
		return FeedResponse{}, fmt.Errorf("decode: %w", err)
	}
	if len(page.Events) > limit {
		return FeedResponse{}, fmt.Errorf("%d events, asked for at most %d", len(page.Events), limit)
	}
	return page, nil
}

// openedEvent is a feed event whose record verified, with the record.
type openedEvent struct {
	FeedEvent
	rec Record
}

// refusedEvent is the first event of a page that failed verification.
type refusedEvent struct {
	seq int64 // its upstream seq
	err error
}

func (r *refusedEvent) Error() string {
	return fmt.Sprintf("record at upstream seq %d refused: %v", r.seq, r.err)
}

func (r *refusedEvent) Unwrap() error { return r.err }

// openEvents verifies a feed page's events in order, as a round applies
// them: each must open under v, be of hubTier and continue the hub
// sequence after lastHub. It returns the events that verified before the
// first that did not, and that one's refusal (nil when all did): those
// before it may still be applied. Asked by the upstream's own seq numbers
// (not byHub), they must rise past lastSeq; a page that goes backwards is
// an error and nothing of it may be applied.
func openEvents(v *Verifier, hubTier string, events []FeedEvent, byHub bool, lastSeq, lastHub int64) ([]openedEvent, *refusedEvent, error) {
	opened := make([]openedEvent, 0, len(events))
	for _, fe := range events {
		if !byHub && fe.Seq <= lastSeq {
			return nil, nil, fmt.Errorf("upstream feed went backwards: seq %d after %d", fe.Seq, lastSeq)
		}
		r, err := v.Open(fe.Envelope)
		if err == nil && r.Tier != hubTier {
			err = fmt.Errorf("%w: record of hub tier %s on a link for hub tier %s", ErrWrongTier, r.Tier, hubTier)
		}
		if err == nil {
			err = CheckSequence(lastHub, r)
		}
		if err != nil {
			return opened, &refusedEvent{seq: fe.Seq, err: err}, nil
		}
		opened = append(opened, openedEvent{FeedEvent: fe, rec: r})
		lastSeq, lastHub = fe.Seq, r.TierSeq
	}
	return opened, nil, nil
}

// errTriggered ends a long poll that a trigger cut short; the loop starts
// the next round at once.
var errTriggered = errors.New("long poll cut short by a trigger")

// errorBody reads a patchmesh error answer's code and message, bounded,
// with the sync token cut out should the upstream (or a proxy) echo it:
// the text goes to logs and to the sync status.
func errorBody(r io.Reader, token string) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.NewDecoder(io.LimitReader(r, 4096)).Decode(&e) != nil || e.Error.Code == "" {
		return ""
	}
	clean := func(s string) string {
		if token != "" {
			s = strings.ReplaceAll(s, token, "[token]")
		}
		s = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, s)
		if len(s) > 200 {
			s = s[:200] + "…"
		}
		return s
	}
	return fmt.Sprintf(" (%s: %s)", clean(e.Error.Code), clean(e.Error.Message))
}

// reason names why a record was refused, for the security event.
func reason(err error) string {
	switch {
	case errors.Is(err, ErrBadSignature):
		return "bad_signature"
	case errors.Is(err, ErrUnknownKey):
		return "unknown_key"
	case errors.Is(err, ErrMalformedRecord):
		return "malformed"
	case errors.Is(err, ErrReplay):
		return "replay"
	case errors.Is(err, ErrGap):
		return "gap"
	case errors.Is(err, ErrFutureHeartbeat):
		return "future"
	case errors.Is(err, ErrWrongTier):
		return "wrong_tier"
	}
	return "refused"
}

func (p *Puller) securityEvent(ctx context.Context, l *linkState, up Upstream, why string, attrs ...slog.Attr) {
	all := append([]slog.Attr{slog.String("tier", l.cfg.Tier), slog.String("hub_tier", l.cfg.HubTier),
		slog.String("upstream", up.URL), slog.String("reason", why)}, attrs...)
	auth.SecurityEvent(ctx, p.cfg.Log, EventRecordRejected, all...)
}

// roundTimes is when each step of a round that applied records ended, for
// the one log line that says where a hop's time went: the wait for the
// feed page (the long poll, or the request when woken), verifying its
// records, fetching their blobs and committing them with the cursor.
type roundTimes struct {
	start, page, verified, fetched time.Time
}

func (t roundTimes) log(ctx context.Context, log *slog.Logger, l *linkState, events, blobs int) {
	end := time.Now()
	log.LogAttrs(ctx, slog.LevelInfo, "sync round applied", slog.String("tier", l.cfg.Tier),
		slog.Int("events", events), slog.Int("blobs", blobs),
		slog.Duration("feed", t.page.Sub(t.start)), slog.Duration("verify", t.verified.Sub(t.page)),
		slog.Duration("fetch", t.fetched.Sub(t.verified)), slog.Duration("apply", end.Sub(t.fetched)))
}
