package topology

import (
	"context"
	"errors"
	"fmt"

	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
)

// Health states of a Member.
const (
	Alive = "alive"
	Dead  = "dead" // failed without saying goodbye
	Left  = "left" // left gracefully (Leave)
)

// States lists the health states, best first.
var States = []string{Alive, Dead, Left}

var (
	// ErrNotJoined is returned (wrapped, next to a working Topology) by Start
	// when none of Config.Join answered. The Topology keeps trying in the
	// background, so a node started before its peers still joins them.
	ErrNotJoined = errors.New("topology: no join address answered")
	// ErrClosed is returned by Leave after Close or Leave.
	ErrClosed = errors.New("topology: closed")
	// ErrNameConflict is returned by Start when a member of the mesh it
	// joined already has this node's name at another address. Names must
	// be unique: memberlist keeps one record per name, so two nodes with
	// one name would each ignore the other's news.
	ErrNameConflict = errors.New("topology: node name already in use")
)

// Defaults for the Config fields that are not memberlist's.
const (
	DefaultRetain    = 24 * time.Hour
	DefaultJoinRetry = 5 * time.Second
	// DefaultLeaveTimeout bounds Leave when it is given no timeout.
	DefaultLeaveTimeout = 5 * time.Second
)

// leaveAfterIntent bounds the wait for memberlist's leave broadcast once
// every live member has the leave intent: the broadcast goes out with the
// next gossip, every GossipInterval (100 to 500 ms in the stock profiles),
// and a second leaves a busy node room.
const leaveAfterIntent = time.Second

// LANProbeInterval is the probe interval of the lan profile; see
// Config.Profile.
const LANProbeInterval = 500 * time.Millisecond

// Config configures a node's membership: its name, the gossip pools it
// belongs to, and what it tells and hears of the members. A node in one
// pool sets the pool's fields here directly; a node in several lists them
// in Pools instead. Timing fields left zero keep the memberlist profile's
// value.
type Config struct {
	// Name is the node's unique name in the mesh (memberlist node name),
	// the same in every pool.
	Name string

	// The node's one pool, named DefaultPool, when Pools is empty; see
	// Pool for each field.
	BindAddr                                                      string
	BindPort                                                      int
	AdvertiseAddr                                                 string
	AdvertisePort                                                 int
	Join                                                          []string
	Profile                                                       string
	ProbeInterval, ProbeTimeout, GossipInterval, PushPullInterval time.Duration
	SuspicionMult                                                 int
	Compression                                                   string
	Keys                                                          [][]byte

	// Pools, if set, are the node's gossip pools, and the pool fields
	// above must be left empty. Each is its own memberlist cluster; the
	// node's members are those of all its pools, merged (Members).
	// Names must be unique and not empty.
	Pools []Pool

	// Meta returns the local node's metadata, the same in every pool. It
	// is called whenever memberlist asks for it (start, UpdateMeta); an
	// empty Name is filled in with Config.Name. Nil advertises the name
	// only.
	Meta func() Meta
	// OnChange is called when a member joins, leaves, dies, comes back or
	// updates its meta in any pool, with the member as all pools together
	// see it (Members). Calls come in order from one goroutine of this
	// package, so OnChange may call Members; it should not block for
	// long, as later changes wait for it.
	OnChange func(Member)
	// Log receives memberlist's own log, at debug (DEBUG, INFO) or warn
	// (WARN, ERR), this package's, and the security events of refused
	// gossip (see EventKeyFail), each with the pool's name. Nil discards.
	Log *slog.Logger

	// Retain is how long dead and left members stay in Members; zero means
	// DefaultRetain.
	Retain time.Duration
	// JoinRetry is how often Start's background join is retried while this
	// node knows no other member of a pool; zero means DefaultJoinRetry.
	JoinRetry time.Duration
}

// pools is the node's pools: Pools, or the one pool of the flat fields.
func (c Config) pools() ([]Pool, error) {
	one := Pool{Name: DefaultPool, BindAddr: c.BindAddr, BindPort: c.BindPort,
		AdvertiseAddr: c.AdvertiseAddr, AdvertisePort: c.AdvertisePort, Join: c.Join, Profile: c.Profile,
		ProbeInterval: c.ProbeInterval, ProbeTimeout: c.ProbeTimeout, GossipInterval: c.GossipInterval,
		PushPullInterval: c.PushPullInterval, SuspicionMult: c.SuspicionMult, Compression: c.Compression, Keys: c.Keys}
	if len(c.Pools) == 0 {
		return []Pool{one}, nil
	}
	if one.Name = ""; !reflect.ValueOf(one).IsZero() {
		return nil, errors.New("topology: config: with Pools, set each pool's fields there, not in Config")
	}
	seen := map[string]bool{}
	for _, p := range c.Pools {
		if p.Name == "" {
			return nil, errors.New("topology: config: a pool without a name")
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("topology: config: pool %q twice", p.Name)
		}
		seen[p.Name] = true
	}
	return c.Pools, nil
}

// Member is one node as this node sees it, across its pools.
type Member struct {
	Meta
	Addr  string    // gossip host:port, in the first pool (of Pools) that knows it
	State string    // Alive, Dead, Left
	Since time.Time // when State last changed, as this node saw it
	Self  bool
	// Pools names this node's pools that know the member, in the order
	// of the node's config.
	Pools []string
}

// Stats counts gossip traffic on the wire (UDP and TCP, encrypted),
// members by state and refused gossip by security event code, for all
// pools together and for each.
type Stats struct {
	SentBytes, ReceivedBytes int64
	Members                  map[string]int   // by state, merged across pools
	Rejected                 map[string]int64 // by EventKeyFail, EventMetaFail, EventNameFail
	// Reconnected and ReconnectFailed count the joins of dead members and
	// of join addresses no live member is at that reached someone and
	// that did not.
	Reconnected, ReconnectFailed int64
	Pools                        []PoolStats // in the order of the config
}

// PoolStats is Stats for one pool; Members counts the pool's own view.
type PoolStats struct {
	Name                         string
	Addr                         string // this node's gossip host:port in the pool
	SentBytes, ReceivedBytes     int64
	Members                      map[string]int
	Rejected                     map[string]int64
	Reconnected, ReconnectFailed int64
}

// Topology is this node's membership in the mesh: one memberlist per pool
// it belongs to, and the members of all of them merged.
type Topology struct {
	name      string
	log       *slog.Logger
	meta      func() Meta
	retain    time.Duration
	joinRetry time.Duration
	// pools are appended under mu while Start runs, and fixed after.
	pools []*pool
	// multi says the config named its pools (Config.Pools): logs then
	// say which pool a line is about.
	multi bool

	// mu guards every pool's member table and lastMeta. It is never held
	// while calling into memberlist: memberlist calls the event
	// callbacks, which take mu, with its own lock held.
	mu       sync.Mutex
	lastMeta []byte // last local meta that encoded, for NodeMeta

	notes   *notifier
	updates chan struct{}

	stopMu  sync.Mutex
	stopped bool
	done    chan struct{}
	wg      sync.WaitGroup
}

// Start creates a memberlist for each pool and joins the members in its
// join list, pool by pool. If none of a pool's join addresses answers, it
// returns the running Topology together with an error wrapping
// ErrNotJoined, and keeps retrying in the background; callers that can
// live alone for a while log it and go on, others Close. ctx bounds only
// the first join attempts.
func Start(ctx context.Context, cfg Config) (*Topology, error) {
	pools, err := cfg.pools()
	if err != nil {
		return nil, err
	}
	for _, p := range pools {
		if _, err := memberlistConfig(cfg.Name, p); err != nil {
			return nil, fmt.Errorf("%w (pool %s)", err, p.Name)
		}
	}
	logger := cfg.Log
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Topology{
		name:      cfg.Name,
		log:       logger.With("component", "topology"),
		meta:      cfg.Meta,
		retain:    orDefault(cfg.Retain, DefaultRetain),
		joinRetry: orDefault(cfg.JoinRetry, DefaultJoinRetry),
		multi:     len(cfg.Pools) > 0,
		updates:   make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	if t.meta == nil {
		t.meta = func() Meta { return Meta{} }
	}
	// Fail now rather than advertise nothing: memberlist would panic on
	// oversized meta, and NodeMeta has no way to return an error.
	if t.lastMeta, err = t.localMeta().Encode(); err != nil {
		return nil, err
	}
	if err := CheckMeta(t.name, t.lastMeta); err != nil {
		return nil, err // the other members would refuse it
	}
	t.notes = newNotifier(cfg.OnChange) // Create announces this node already
	for _, pc := range pools {
		if _, err := t.startPool(pc); err != nil {
			for _, p := range t.pools {
				p.ml.Shutdown()
			}
			t.notes.stop()
			return nil, err
		}
	}
	t.wg.Add(1 + len(t.pools))
	go t.updateLoop()
	for _, p := range t.pools {
		go p.reconnectLoop()
	}
	var notJoined []error
	for _, p := range t.pools {
		if len(p.join) == 0 {
			continue
		}
		err := p.firstJoin(ctx)
		switch {
		case errors.Is(err, ErrNotJoined):
			notJoined = append(notJoined, err)
		case err != nil:
			t.Close()
			return nil, err
		}
	}
	if len(notJoined) > 0 {
		return t, errors.Join(notJoined...)
	}
	return t, nil
}

// orDefault returns v unless it is the zero value, else def.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Members returns every member this node knows in any of its pools,
// including dead and left ones for Config.Retain, sorted by name.
func (t *Topology) Members() []Member {
	t.prune()
	t.mu.Lock()
	defer t.mu.Unlock()
	names := map[string]bool{}
	for _, p := range t.pools {
		for name := range p.members {
			names[name] = true
		}
	}
	out := make([]Member, 0, len(names))
	for name := range names {
		m, _ := t.merged(name)
		out = append(out, detach(m))
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Member returns the member named name (its memberlist node name).
func (t *Topology) Member(name string) (Member, bool) {
	t.prune()
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.merged(name)
	return detach(m), ok
}

// merged is the member named name as all pools together see it. A member
// is Alive if any pool that knows it says so: pools fail independently (a
// region's pool may lose a relay that the backbone still hears), and a
// node reachable in one pool is reachable. It is Dead or Left only when
// every pool that knows it has given up on it: Left if any heard it leave,
// since a node that leaves says so in each pool and the news may miss one.
// Its meta and address come from the freshest news among the pools that
// agree with that state. Its meta shares the pool's entry (entries are
// replaced, never changed): detach it before handing it out. Call with
// t.mu held.
func (t *Topology) merged(name string) (Member, bool) {
	var found []*entry
	var pools []string
	for _, p := range t.pools {
		if e, ok := p.members[name]; ok {
			found = append(found, e)
			pools = append(pools, p.name)
		}
	}
	if len(found) == 0 {
		return Member{}, false
	}
	state := Dead
	for _, e := range found {
		if healthRank(e.State) < healthRank(state) {
			state = e.State
		}
	}
	var best *entry
	var since time.Time
	for _, e := range found {
		if state == Alive && e.State != Alive {
			continue
		}
		if best == nil || e.heard.After(best.heard) {
			best = e
		}
		// Alive since the first pool heard it alive; gone since the last
		// pool gave up on it.
		if since.IsZero() || (state == Alive && e.Since.Before(since)) || (state != Alive && e.Since.After(since)) {
			since = e.Since
		}
	}
	m := best.Member
	m.State, m.Since, m.Pools = state, since, pools
	m.Addr = found[0].Addr
	return m, true
}

// ByAPI returns the member whose Meta.API is url, ignoring a trailing slash.
// If several are (a node that came back under a new name at the same URL),
// the healthiest wins, then the most recent change.
func (t *Topology) ByAPI(url string) (Member, bool) {
	url = strings.TrimSuffix(url, "/")
	if url == "" {
		return Member{}, false
	}
	return t.find(func(m *Member) bool { return strings.TrimSuffix(m.API, "/") == url })
}

// ByPeer returns the member, this node excluded, whose Meta.Peer is
// peerURL, ignoring trailing slashes; if several are, as ByAPI.
func (t *Topology) ByPeer(peerURL string) (Member, bool) {
	peerURL = strings.TrimRight(peerURL, "/")
	if peerURL == "" {
		return Member{}, false
	}
	return t.find(func(m *Member) bool { return !m.Self && strings.TrimRight(m.Peer, "/") == peerURL })
}

// find is the healthiest, then most recently changed, member for which
// match holds. It looks at each pool's entries in place and merges only
// those that match: the sync loops look members up by URL every second,
// and a copy of every member for each lookup was the largest cost of an
// idle 300-node simulation (bench/RESULTS.md, "Gossip pools per region").
func (t *Topology) find(match func(*Member) bool) (Member, bool) {
	t.prune()
	t.mu.Lock()
	defer t.mu.Unlock()
	var best Member
	found := false
	for _, p := range t.pools {
		for name, e := range p.members {
			if !match(&e.Member) {
				continue
			}
			m, _ := t.merged(name)
			if !match(&m) {
				continue // another pool has fresher meta that no longer matches
			}
			if !found || healthRank(m.State) < healthRank(best.State) ||
				(healthRank(m.State) == healthRank(best.State) && m.Since.After(best.Since)) {
				best, found = m, true
			}
		}
	}
	return detach(best), found
}

func healthRank(state string) int {
	switch state {
	case Alive:
		return 0
	case Left:
		return 1
	}
	return 2
}

// UpdateMeta re-broadcasts the local meta (Config.Meta is called again) to
// every pool. It never blocks; bursts coalesce into at most one broadcast
// per updateGap.
func (t *Topology) UpdateMeta() {
	select {
	case t.updates <- struct{}{}:
	default: // one is already pending and will read the newest meta
	}
}

// updateGap spaces meta broadcasts: each one is a gossip message to every
// member, and sync progress can change many times a second.
const updateGap = 50 * time.Millisecond

func (t *Topology) updateLoop() {
	defer t.wg.Done()
	for {
		select {
		case <-t.done:
			return
		case <-t.updates:
		}
		// The timeout only bounds how long Close may wait for this; the
		// broadcast stays queued either way. Pools in parallel: each
		// waits for its own broadcast to go out.
		var wg sync.WaitGroup
		for _, p := range t.pools {
			wg.Go(func() {
				if err := p.ml.UpdateNode(time.Second); err != nil {
					p.log.Debug("gossip_meta_update_pending", "error", err.Error())
				}
			})
		}
		wg.Wait()
		select {
		case <-t.done:
			return
		case <-time.After(updateGap):
		}
	}
}

// LocalAddr returns the gossip host:port others reach this node at, in its
// first pool (Stats has every pool's).
func (t *Topology) LocalAddr() string { return t.pools[0].addr }

// PoolNames lists the node's pools, in the order of its config.
func (t *Topology) PoolNames() []string {
	out := make([]string, len(t.pools))
	for i, p := range t.pools {
		out[i] = p.name
	}
	return out
}

// Stats returns gossip traffic so far and the members by state, in all and
// per pool.
func (t *Topology) Stats() Stats {
	t.prune()
	s := Stats{
		Members:  map[string]int{Alive: 0, Dead: 0, Left: 0},
		Rejected: map[string]int64{EventKeyFail: 0, EventMetaFail: 0, EventNameFail: 0},
	}
	for _, p := range t.pools {
		ps := PoolStats{Name: p.name, Addr: p.addr,
			SentBytes: p.transport.sent.Load(), ReceivedBytes: p.transport.received.Load(),
			Members: map[string]int{Alive: 0, Dead: 0, Left: 0}, Rejected: p.rejects.counts(),
			Reconnected: p.reconnected.Load(), ReconnectFailed: p.reconnectFailed.Load()}
		s.SentBytes += ps.SentBytes
		s.ReceivedBytes += ps.ReceivedBytes
		s.Reconnected += ps.Reconnected
		s.ReconnectFailed += ps.ReconnectFailed
		for code, k := range ps.Rejected {
			s.Rejected[code] += k
		}
		s.Pools = append(s.Pools, ps)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	names := map[string]bool{}
	for i, p := range t.pools {
		for name, e := range p.members {
			s.Pools[i].Members[e.State]++
			names[name] = true
		}
	}
	for name := range names {
		m, _ := t.merged(name)
		s.Members[m.State]++
	}
	return s
}

// Leave tells every pool this node is going away, waits up to timeout for
// that to reach the other members, and shuts down: others see it Left
// rather than Dead. A timeout of zero or less means DefaultLeaveTimeout.
// Close after Leave does nothing.
func (t *Topology) Leave(timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultLeaveTimeout
	}
	deadline := time.Now().Add(timeout)
	t.stopMu.Lock()
	if t.stopped {
		t.stopMu.Unlock()
		return ErrClosed
	}
	// Intent first, in at most half the time: a member that has it records
	// whatever memberlist reports next about this node (the leave, or a
	// failure if the leave gossip never reaches it) as Left. The pools in
	// parallel, each in the whole time: they share no members' work.
	errs := make([]error, len(t.pools))
	var wg sync.WaitGroup
	for i, p := range t.pools {
		wg.Go(func() {
			told := p.announceLeave(time.Now().Add(timeout / 2))
			wait := max(time.Until(deadline), time.Millisecond) // zero: for ever
			if told {
				// Every live member has the intent already, and records
				// this node's going as Left whatever memberlist says of it
				// next. Memberlist's leave broadcast goes out with its
				// next gossip, if anyone is left to gossip to: members
				// leaving together each hear the other's leave first and
				// gossip to nobody, and would wait out the timeout.
				wait = min(wait, leaveAfterIntent)
			}
			// Under stopMu: memberlist panics on a Leave after Shutdown.
			err := p.ml.Leave(wait)
			switch {
			case err != nil && told:
				p.log.Debug("gossip_leave_broadcast_unsent", "error", err.Error())
			case err != nil:
				errs[i] = fmt.Errorf("pool %s: %w", p.name, err)
			}
		})
	}
	wg.Wait()
	t.stopped = true
	t.stopMu.Unlock()

	err := errors.Join(errs...)
	if serr := t.shutdown(); err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("topology: leave: %w", err)
	}
	return nil
}

// Close shuts down without leaving: others see this node fail (Dead), as
// after a crash.
func (t *Topology) Close() error {
	t.stopMu.Lock()
	if t.stopped {
		t.stopMu.Unlock()
		return nil
	}
	t.stopped = true
	t.stopMu.Unlock()
	return t.shutdown()
}

func (t *Topology) shutdown() error {
	close(t.done)
	var errs []error
	for _, p := range t.pools {
		if err := p.ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("pool %s: %w", p.name, err))
		}
	}
	t.wg.Wait()
	t.notes.stop()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("topology: shutdown: %w", err)
	}
	return nil
}

func (t *Topology) localMeta() Meta {
	m := t.meta()
	if m.Name == "" {
		m.Name = t.name
	}
	return m
}

// prune forgets members dead or left for longer than Retain, pool by pool.
func (t *Topology) prune() {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.pools {
		for name, e := range p.members {
			if (e.State == Dead || e.State == Left) && now.Sub(e.Since) > t.retain {
				delete(p.members, name)
			}
		}
	}
}

// detach copies m's slices and maps, so that the caller may keep or change
// it.
func detach(m Member) Member {
	m.Tiers = slices.Clone(m.Tiers)
	m.Upstreams = maps.Clone(m.Upstreams)
	m.Pools = slices.Clone(m.Pools)
	return m
}

// notifier calls OnChange from one goroutine, in order, so that OnChange
// never runs under memberlist's lock (where calling Members would deadlock)
// and never delays gossip.
type notifier struct {
	fn      func(Member)
	mu      sync.Mutex
	queue   []Member
	wake    chan struct{}
	done    chan struct{}
	stopped chan struct{}
	once    sync.Once
}

func newNotifier(fn func(Member)) *notifier {
	n := &notifier{fn: fn, wake: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	if fn == nil {
		close(n.stopped)
		return n
	}
	go n.run()
	return n
}

func (n *notifier) push(m Member) {
	if n.fn == nil {
		return
	}
	n.mu.Lock()
	n.queue = append(n.queue, m)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *notifier) run() {
	defer close(n.stopped)
	for {
		select {
		case <-n.done:
			return
		case <-n.wake:
		}
		n.mu.Lock()
		batch := n.queue
		n.queue = nil
		n.mu.Unlock()
		for _, m := range batch {
			n.fn(m)
		}
	}
}

// stop ends delivery; changes not yet delivered are dropped.
func (n *notifier) stop() {
	n.once.Do(func() { close(n.done) })
	<-n.stopped
}

// logBridge turns memberlist's "[LEVEL] memberlist: message" lines into
// slog records. Nothing is decided on their text (refusals are seen
// through the delegates and the transport), and one false warning is
// dropped.
type logBridge struct{ l *slog.Logger }

// publicWithoutEncryption is memberlist's warning at start on a public
// address when it has no keyring of its own.
const publicWithoutEncryption = "Binding to public address without encryption!"

func (b logBridge) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	if tag, rest, ok := strings.Cut(line, " "); ok && strings.HasPrefix(tag, "[") {
		if tag == "[WARN]" || tag == "[ERR]" || tag == "[ERROR]" {
			level = slog.LevelWarn
		}
		line = rest
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	if line == publicWithoutEncryption {
		return len(p), nil // it does not know that the transport encrypts
	}
	b.l.Log(context.Background(), level, "memberlist", "text", line)
	return len(p), nil
}
