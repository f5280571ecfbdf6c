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
}

func newLinkState(l Link) *linkState {
	ups := make([]string, len(l.Upstreams))
	for i, u := range l.Upstreams {
		ups[i] = u.URL
	}
	return &linkState{
		cfg:       l,
		demoted:   make([]time.Time, len(l.Upstreams)),
		kick:      make(chan struct{}, 1),
		roundDone: make(chan struct{}),
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
// for a URL no member advertises, alive is false for a suspect, dead or
// departed one.
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

// endRound records a round's outcome and wakes Trigger waiters.
func (l *linkState) endRound(gen uint64, err error, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.Rounds++
	if err != nil {
		l.st.RoundsFailed++
		l.st.State = LinkFailing
		l.st.LastError = err.Error()
		l.st.LastErrorAt = now
	} else {
		l.failures = 0
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
	return s
}
