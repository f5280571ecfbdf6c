package federation

import (
	"context"
	"sync"
	"time"

	"github.com/patchmesh/patchmesh/store"
)

// linkState is one link's live state: which upstream it uses, how far it
// is, what happened last. The loop goroutine writes it; Status and
// Trigger read it from API requests.
type linkState struct {
	cfg  Link
	kick chan struct{} // a trigger; buffered, so a trigger is never lost

	mu        sync.Mutex
	current   int         // index into cfg.Upstreams
	failures  int         // consecutive failed rounds on current
	demoted   []time.Time // per candidate: skipped until then after repeated failures
	st        LinkStatus
	behind    time.Time // since when the link has been behind; zero when caught up
	started   uint64    // rounds started
	completed uint64    // rounds ended
	roundDone chan struct{}

	// Freshness, from the hub's heartbeats (heartbeat.go).
	staleAfter time.Duration
	hb         Record    // the newest verified heartbeat; zero Time if none
	hbEnv      Envelope  // its envelope, forwarded to this node's downstreams
	born       time.Time // when the loop started: no heartbeat since is stale too
	progress   time.Time // when HubSeq last advanced
	claimed    time.Time // since when a heartbeat announces more than HubSeq; zero if none does
	staleSaid  string    // the stale reason last logged; "" when fresh

	// emptyPromises counts rounds in a row that got no record while the
	// upstream's head promised more. Only the loop goroutine uses it.
	emptyPromises int
}

func newLinkState(l Link) *linkState {
	ups := make([]string, len(l.Upstreams))
	for i, u := range l.Upstreams {
		ups[i] = u.URL
	}
	return &linkState{
		staleAfter: DefaultStaleAfter,
		cfg:        l,
		demoted:    make([]time.Time, len(l.Upstreams)),
		kick:       make(chan struct{}, 1),
		roundDone:  make(chan struct{}),
		st: LinkStatus{
			Tier: l.Tier, HubTier: l.HubTier, Upstream: ups[0], Upstreams: ups, State: LinkStarting,
		},
	}
}

func (l *linkState) upstream() Upstream {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cfg.Upstreams[l.current]
}

// Health says what gossip knows of the node serving url: known is false
// for a URL no member advertises, alive is false for a dead or departed
// one. Mesh.Health is the one a node uses.
type Health func(url string) (known, alive bool)

// choose picks the upstream for the next round: the first candidate, in
// the configured order, that is neither demoted for repeated failures nor
// known to gossip as down. So a link returns to its preferred upstream as
// soon as that is healthy again and its demotion has run out. With every
// candidate ruled out it keeps the one whose demotion ends first, so that
// it always has somewhere to try. It reports whether the choice changed.
func (l *linkState) choose(now time.Time, health Health) (Upstream, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pick := -1
	for i, u := range l.cfg.Upstreams {
		if now.Before(l.demoted[i]) {
			continue
		}
		if health != nil {
			if known, alive := health(u.URL); known && !alive {
				continue
			}
		}
		pick = i
		break
	}
	if pick < 0 {
		pick = l.current
		for i := range l.cfg.Upstreams {
			if l.demoted[i].Before(l.demoted[pick]) {
				pick = i
			}
		}
	}
	changed := pick != l.current
	if changed {
		l.current = pick
		l.failures = 0
		l.st.Upstream = l.cfg.Upstreams[pick].URL
	}
	return l.cfg.Upstreams[pick], changed
}

// noteFailure counts a failed round; after limit in a row it demotes the
// current upstream for demoteFor, so that choose moves on, and reports
// that it did.
func (l *linkState) noteFailure(limit int, now time.Time, demoteFor time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures++
	if l.failures < limit || len(l.cfg.Upstreams) < 2 {
		return false
	}
	l.failures = 0
	l.demoted[l.current] = now.Add(demoteFor)
	return true
}

// uses says whether url is one of the link's candidates.
func (l *linkState) uses(url string) bool {
	for _, u := range l.cfg.Upstreams {
		if u.URL == url {
			return true
		}
	}
	return false
}

func (l *linkState) startRound() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.started++
	return l.started
}

// endRound records a round's outcome and wakes Trigger waiters. A round
// that succeeded on a stale link still counts towards failover.
func (l *linkState) endRound(gen uint64, err error, stale bool, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.Rounds++
	if err != nil {
		l.st.RoundsFailed++
		l.st.State = LinkFailing
		l.st.LastError = err.Error()
		l.st.LastErrorAt = now
	} else {
		if !stale {
			l.failures = 0
		}
		l.st.LastSuccess = now
		l.st.State = LinkSynced
		if l.st.LagEvents > 0 {
			l.st.State = LinkSyncing
		}
	}
	l.completed = gen
	close(l.roundDone)
	l.roundDone = make(chan struct{})
}

// trigger kicks the loop and returns the round whose end a waiter needs:
// the next one to start.
func (l *linkState) trigger() uint64 {
	l.mu.Lock()
	target := l.started + 1
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default: // a trigger is already pending; it covers this one
	}
	return target
}

func (l *linkState) awaitRound(ctx context.Context, target uint64) error {
	for {
		l.mu.Lock()
		done, ch := l.completed >= target, l.roundDone
		l.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// observeHeads records what the upstream has, and how far behind that
// leaves this node.
func (l *linkState) observeHeads(head, hubHead, applied int64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.UpstreamHead, l.st.HubHead = head, hubHead
	l.setLag(hubHead-applied, now)
}

func (l *linkState) setLag(lag int64, now time.Time) {
	l.st.LagEvents = max(lag, 0)
	if l.st.LagEvents == 0 {
		l.behind = time.Time{}
	} else if l.behind.IsZero() {
		l.behind = now
	}
}

func (l *linkState) applied(c store.Cursor, n int, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.HubSeq > l.st.HubSeq {
		l.progress = now
	}
	if c.HubSeq >= l.hb.TierSeq {
		l.claimed = time.Time{}
	}
	l.st.Cursor, l.st.HubSeq = c.UpstreamSeq, c.HubSeq
	l.st.RecordsApplied += int64(n)
	l.setLag(l.st.HubHead-c.HubSeq, now)
}

// at records the cursor a round starts from.
func (l *linkState) at(c store.Cursor) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.Cursor, l.st.HubSeq = c.UpstreamSeq, c.HubSeq
}

func (l *linkState) replicated(n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.BytesReplicated += n
}

func (l *linkState) rejected() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.RecordsRejected++
}

func (l *linkState) status(now time.Time) LinkStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.st
	s.Upstreams = append([]string(nil), s.Upstreams...)
	if !l.behind.IsZero() {
		s.LagSeconds = now.Sub(l.behind).Seconds()
	}
	if !l.hb.Time.IsZero() {
		s.HeartbeatTime = l.hb.Time
		s.HeartbeatAge = max(now.Sub(l.hb.Time), 0).Seconds()
		s.HeartbeatHubHead = l.hb.TierSeq
	}
	s.StaleReason = l.staleness(now)
	s.Stale = s.StaleReason != ""
	if s.Stale && (s.State == LinkSynced || s.State == LinkSyncing) {
		s.State = LinkStale
	}
	return s
}

// begin starts the clock a link without any heartbeat is measured by.
func (l *linkState) begin(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.born, l.progress = now, now
}

// heard keeps r, a verified heartbeat newer than the one held.
func (l *linkState) heard(r Record, e Envelope, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.hb, l.hbEnv = r, e
	if r.TierSeq > l.st.HubSeq && l.claimed.IsZero() {
		l.claimed = now
	}
}

// heldHeartbeat returns the newest verified heartbeat, zero if none.
func (l *linkState) heldHeartbeat() Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hb
}

// heartbeat returns the newest heartbeat held, for this node's
// downstreams.
func (l *linkState) heartbeat() (Envelope, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hbEnv, !l.hb.Time.IsZero()
}

// staleness says why the link is stale at now, "" if it is not: no
// heartbeat since the loop started, a newest heartbeat older than the
// bound, or a record the heartbeats announce that has not come, with no
// progress either, for longer than the bound. Progress restarts the last
// clock: a relay can hold back one record only by holding back all that
// follow (the sequence has no gaps), so a link still applying records is
// slow, not withheld from. Callers hold l.mu.
func (l *linkState) staleness(now time.Time) string {
	switch {
	case l.born.IsZero():
		return ""
	case l.hb.Time.IsZero():
		if now.Sub(l.born) > l.staleAfter {
			return StaleNoHeartbeat
		}
	case now.Sub(l.hb.Time) > l.staleAfter:
		return StaleHeartbeat
	case l.hb.TierSeq > l.st.HubSeq && !l.claimed.IsZero():
		since := l.claimed
		if l.progress.After(since) {
			since = l.progress
		}
		if now.Sub(since) > l.staleAfter {
			return StaleWithheld
		}
	}
	return ""
}

// staleChange returns the stale reason at now and whether it differs from
// the one last logged, which it then becomes: the loop logs transitions,
// not every round.
func (l *linkState) staleChange(now time.Time) (reason string, changed bool, st LinkStatus) {
	l.mu.Lock()
	defer l.mu.Unlock()
	reason = l.staleness(now)
	changed = reason != l.staleSaid
	l.staleSaid = reason
	st = l.st
	if !l.hb.Time.IsZero() {
		st.HeartbeatAge = max(now.Sub(l.hb.Time), 0).Seconds()
		st.HeartbeatHubHead = l.hb.TierSeq
	}
	return reason, changed, st
}
