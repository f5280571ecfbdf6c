package topology

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Health states of a Member.
const (
	Alive   = "alive"
	Suspect = "suspect" // missed probes; dead unless it refutes in time
	Dead    = "dead"    // failed without saying goodbye
	Left    = "left"    // left gracefully (Leave)
)

var (
	// ErrNotJoined is returned (wrapped, next to a working Topology) by Start
	// when none of Config.Join answered. The Topology keeps trying in the
	// background, so a node started before its peers still joins them.
	ErrNotJoined = errors.New("topology: no join address answered")
	// ErrClosed is returned by Leave after Close or Leave.
	ErrClosed = errors.New("topology: closed")
)

// Defaults for the Config fields that are not memberlist's.
const (
	DefaultRetain    = 24 * time.Hour
	DefaultJoinRetry = 5 * time.Second
)

// Config configures a node's membership. Timing fields left zero keep the
// memberlist profile's value.
type Config struct {
	// Name is the node's unique name in the mesh (memberlist node name).
	Name string
	// BindAddr is the address gossip listens on; empty means 0.0.0.0.
	BindAddr string
	// BindPort is the UDP and TCP port; 0 picks a free one (see LocalAddr).
	BindPort int
	// AdvertiseAddr and AdvertisePort are what others are told to dial, when
	// that differs from the bind address (NAT, 0.0.0.0). Optional.
	AdvertiseAddr string
	AdvertisePort int
	// Join lists host:port of any members. Empty starts a new cluster.
	Join []string
	// Profile names memberlist's tuning: "local" (tests, demo), "lan" (the
	// default) or "wan".
	Profile string

	// Overrides of the profile. ProbeInterval is how often each member
	// probes another; ProbeTimeout how long it waits for the ack;
	// GossipInterval how often it gossips; PushPullInterval how often it
	// syncs full state with one member; SuspicionMult scales how long a
	// suspect has to refute before it is declared dead.
	ProbeInterval, ProbeTimeout, GossipInterval, PushPullInterval time.Duration
	SuspicionMult                                                 int

	// Keys is the gossip keyring: each 16, 24 or 32 bytes. Keys[0] is the
	// primary (encrypts), all decrypt. At least one key is required.
	Keys [][]byte

	// Meta returns the local node's metadata. It is called whenever
	// memberlist asks for it (start, UpdateMeta); an empty Name is filled in
	// with Config.Name. Nil advertises the name only.
	Meta func() Meta
	// OnChange is called when a member joins, becomes suspect, leaves, dies,
	// comes back or updates its meta. Calls come in order from one goroutine
	// of this package, so OnChange may call Members; it should not block for
	// long, as later changes wait for it.
	OnChange func(Member)
	// Log receives memberlist's own log, at debug (DEBUG, INFO) or warn
	// (WARN, ERR), and this package's. Nil discards.
	Log *slog.Logger

	// Retain is how long dead and left members stay in Members; zero means
	// DefaultRetain.
	Retain time.Duration
	// JoinRetry is how often Start's background join is retried while this
	// node knows no other member; zero means DefaultJoinRetry.
	JoinRetry time.Duration
}

// Member is one node as this node sees it.
type Member struct {
	Meta
	Addr  string    // gossip host:port
	State string    // Alive, Suspect, Dead, Left
	Since time.Time // when State last changed, as this node saw it
	Self  bool
}

// Stats counts gossip traffic on the wire (UDP and TCP, encrypted) and
// members by state.
type Stats struct {
	SentBytes, ReceivedBytes int64
	Members                  map[string]int // by state
}

// Topology is this node's membership in the mesh.
type Topology struct {
	name      string
	ml        *memberlist.Memberlist
	keyring   *memberlist.Keyring
	transport *countingTransport
	log       *slog.Logger
	meta      func() Meta
	retain    time.Duration
	joinRetry time.Duration
	poll      time.Duration
	started   time.Time

	// stateReadable says memberlist's private node state can be read (see
	// nodeStateLayout). Set once, in the self NotifyJoin during Create.
	stateReadable atomic.Bool
	layoutChecked bool // guarded by mu

	// mu guards the member table. It is never held while calling into
	// memberlist: memberlist calls the event callbacks, which take mu, with
	// its own lock held.
	mu       sync.Mutex
	members  map[string]*entry
	gen      uint64 // bumped by every event, see refresh
	lastMeta []byte // last local meta that encoded, for NodeMeta

	refreshMu sync.Mutex // one refresh at a time, so snapshots apply in order
	notes     *notifier
	updates   chan struct{}

	stopMu  sync.Mutex
	stopped bool
	done    chan struct{}
	wg      sync.WaitGroup
}

type entry struct {
	Member
	gen uint64 // t.gen when an event last set this entry
}

// Start creates the memberlist and joins the members in cfg.Join. If none of
// them answers, it returns the running Topology together with an error
// wrapping ErrNotJoined, and keeps retrying in the background; callers that
// can live alone for a while log it and go on, others Close. ctx bounds only
// the first join attempt.
func Start(ctx context.Context, cfg Config) (*Topology, error) {
	mc, err := memberlistConfig(cfg)
	if err != nil {
		return nil, err
	}
	logger := cfg.Log
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "topology")
	t := &Topology{
		name:      cfg.Name,
		log:       logger,
		meta:      cfg.Meta,
		retain:    cmp(cfg.Retain, DefaultRetain),
		joinRetry: cmp(cfg.JoinRetry, DefaultJoinRetry),
		poll:      max(mc.ProbeInterval/2, 10*time.Millisecond),
		started:   time.Now(),
		members:   make(map[string]*entry),
		notes:     newNotifier(cfg.OnChange),
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
	if t.keyring, err = memberlist.NewKeyring(cfg.Keys, cfg.Keys[0]); err != nil {
		return nil, fmt.Errorf("topology: keyring: %w", err)
	}
	mlLog := log.New(logBridge{logger.With("component", "memberlist")}, "", 0)
	if t.transport, err = newCountingTransport(mc.BindAddr, mc.BindPort, mlLog); err != nil {
		return nil, err
	}
	mc.BindPort = t.transport.port()
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = mc.BindPort
	}
	mc.Transport = t.transport
	mc.Keyring = t.keyring
	mc.Delegate = delegate{t}
	mc.Events = events{t}
	mc.Logger = mlLog
	if t.ml, err = memberlist.Create(mc); err != nil {
		t.transport.Shutdown()
		t.notes.stop()
		return nil, fmt.Errorf("topology: start memberlist: %w", err)
	}
	t.wg.Add(2)
	go t.pollLoop()
	go t.updateLoop()
	if len(cfg.Join) == 0 {
		return t, nil
	}
	if err := t.firstJoin(ctx, cfg.Join); err != nil {
		if errors.Is(err, ErrNotJoined) {
			return t, err
		}
		return nil, err
	}
	return t, nil
}

// memberlistConfig validates cfg and maps it onto memberlist's profile.
func memberlistConfig(cfg Config) (*memberlist.Config, error) {
	if cfg.Name == "" {
		return nil, errors.New("topology: config: empty node name")
	}
	if len(cfg.Keys) == 0 {
		return nil, ErrNoKeys
	}
	for i, k := range cfg.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("topology: config: gossip key %d: %w", i+1, err)
		}
	}
	var mc *memberlist.Config
	switch cfg.Profile {
	case "local":
		mc = memberlist.DefaultLocalConfig()
	case "", "lan":
		mc = memberlist.DefaultLANConfig()
	case "wan":
		mc = memberlist.DefaultWANConfig()
	default:
		return nil, fmt.Errorf("topology: config: unknown profile %q (want local, lan or wan)", cfg.Profile)
	}
	mc.Name = cfg.Name
	mc.BindAddr = cmp(cfg.BindAddr, "0.0.0.0")
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	mc.ProbeInterval = cmp(cfg.ProbeInterval, mc.ProbeInterval)
	mc.ProbeTimeout = cmp(cfg.ProbeTimeout, mc.ProbeTimeout)
	mc.GossipInterval = cmp(cfg.GossipInterval, mc.GossipInterval)
	mc.PushPullInterval = cmp(cfg.PushPullInterval, mc.PushPullInterval)
	mc.SuspicionMult = cmp(cfg.SuspicionMult, mc.SuspicionMult)
	if mc.ProbeTimeout > mc.ProbeInterval {
		return nil, fmt.Errorf("topology: config: probe timeout %s longer than probe interval %s", mc.ProbeTimeout, mc.ProbeInterval)
	}
	// Refuse plaintext both ways, whatever a future profile defaults to.
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	return mc, nil
}

// cmp returns v unless it is the zero value, else def.
func cmp[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func (t *Topology) firstJoin(ctx context.Context, addrs []string) error {
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	go func() {
		n, err := t.ml.Join(addrs)
		res <- result{n, err}
	}()
	select {
	case r := <-res:
		if r.n > 0 {
			t.log.Info("joined the mesh", "contacted", r.n)
			return nil
		}
		t.log.Warn("no join address answered; retrying in the background", "join", addrs, "every", t.joinRetry, "err", r.err)
		t.wg.Add(1)
		go t.joinLoop(addrs)
		return fmt.Errorf("%w: %v: %w", ErrNotJoined, addrs, r.err)
	case <-ctx.Done():
		t.Close()
		<-res
		return fmt.Errorf("topology: join %v: %w", addrs, ctx.Err())
	}
}

// joinLoop retries joining until this node knows another member, whoever
// joined whom.
func (t *Topology) joinLoop(addrs []string) {
	defer t.wg.Done()
	tick := time.NewTicker(t.joinRetry)
	defer tick.Stop()
	for attempt := 2; ; attempt++ {
		select {
		case <-t.done:
			return
		case <-tick.C:
		}
		if t.ml.NumMembers() > 1 {
			t.log.Info("in the mesh; stopping join retries")
			return
		}
		n, err := t.ml.Join(addrs)
		if n > 0 {
			t.log.Info("joined the mesh", "contacted", n, "attempt", attempt)
			return
		}
		t.log.Debug("join failed; will retry", "attempt", attempt, "err", err)
	}
}

// Members returns every member this node knows, including dead and left
// ones for Config.Retain, sorted by name.
func (t *Topology) Members() []Member {
	t.refresh()
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Member, 0, len(t.members))
	for _, e := range t.members {
		out = append(out, e.copy())
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Member returns the member named name (its memberlist node name).
func (t *Topology) Member(name string) (Member, bool) {
	t.refresh()
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.members[name]
	if !ok {
		return Member{}, false
	}
	return e.copy(), true
}

// ByAPI returns the member whose Meta.API is url, ignoring a trailing slash.
// If several are (a node that came back under a new name at the same URL),
// the healthiest wins, then the most recent change.
func (t *Topology) ByAPI(url string) (Member, bool) {
	url = strings.TrimSuffix(url, "/")
	var best Member
	found := false
	for _, m := range t.Members() {
		if url == "" || strings.TrimSuffix(m.API, "/") != url {
			continue
		}
		if !found || healthRank(m.State) < healthRank(best.State) ||
			(healthRank(m.State) == healthRank(best.State) && m.Since.After(best.Since)) {
			best, found = m, true
		}
	}
	return best, found
}

func healthRank(state string) int {
	switch state {
	case Alive:
		return 0
	case Suspect:
		return 1
	case Left:
		return 2
	}
	return 3
}

// UpdateMeta re-broadcasts the local meta (Config.Meta is called again). It
// never blocks; bursts coalesce into at most one broadcast per updateGap.
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
		// broadcast stays queued either way.
		if err := t.ml.UpdateNode(time.Second); err != nil {
			t.log.Debug("meta update not yet broadcast", "err", err)
		}
		select {
		case <-t.done:
			return
		case <-time.After(updateGap):
		}
	}
}

// LocalAddr returns the gossip host:port others reach this node at.
func (t *Topology) LocalAddr() string { return t.ml.LocalNode().Address() }

// Stats returns gossip traffic so far and the members by state.
func (t *Topology) Stats() Stats {
	t.refresh()
	s := Stats{
		SentBytes:     t.transport.sent.Load(),
		ReceivedBytes: t.transport.received.Load(),
		Members:       map[string]int{Alive: 0, Suspect: 0, Dead: 0, Left: 0},
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.members {
		s.Members[e.State]++
	}
	return s
}

// Leave tells the mesh this node is going away, waits up to timeout for
// that to be gossiped, and shuts down: others see it Left rather than Dead.
// Close after Leave does nothing.
func (t *Topology) Leave(timeout time.Duration) error {
	t.stopMu.Lock()
	if t.stopped {
		t.stopMu.Unlock()
		return ErrClosed
	}
	// Under stopMu: memberlist panics on a Leave after Shutdown.
	err := t.ml.Leave(timeout)
	t.stopped = true
	t.stopMu.Unlock()

	if serr := t.shutdown(); err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("topology: leave: %w", err)
	}
	return nil
}

// Close shuts down without leaving: others see this node fail (Suspect,
// then Dead), as after a crash.
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
	err := t.ml.Shutdown()
	t.wg.Wait()
	t.notes.stop()
	if err != nil {
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

// observe records what a memberlist event says about n. Memberlist holds its
// node lock while calling, so n and its state may be read here and not after.
func (t *Topology) observe(n *memberlist.Node, leaving bool) {
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		t.log.Warn("undecodable meta from member", "member", n.Name, "err", err)
	}
	if meta.Name == "" {
		meta.Name = n.Name
	}
	self := n.Name == t.name
	m := Member{Meta: meta, Addr: n.Address(), Self: self}
	now := time.Now()
	t.mu.Lock()
	if self && !t.layoutChecked {
		t.layoutChecked = true
		if layoutLooksRight(n, t.started) {
			t.stateReadable.Store(true)
		} else {
			t.log.Warn("cannot read memberlist's node states; members will show alive or dead only")
		}
	}
	switch {
	case t.stateReadable.Load():
		m.State = stateName(nodeStateOf(n).State)
	case leaving:
		m.State = Dead
	default:
		m.State = Alive
	}
	t.gen++
	m.Since = now
	if old, ok := t.members[n.Name]; ok && old.State == m.State {
		m.Since = old.Since
	}
	t.members[n.Name] = &entry{Member: m, gen: t.gen}
	t.mu.Unlock()
	t.notes.push(m)
}

// refresh reads Alive/Suspect from memberlist, since suspicion is not an
// event, and prunes members gone for longer than Retain.
func (t *Topology) refresh() {
	t.refreshMu.Lock()
	defer t.refreshMu.Unlock()
	t.mu.Lock()
	gen := t.gen
	t.mu.Unlock()

	live := t.liveStates()
	now := time.Now()
	var changed []Member
	t.mu.Lock()
	for name, state := range live {
		e, ok := t.members[name]
		// Only Alive and Suspect move here; joins, deaths and leaves come
		// from events, and an event newer than the snapshot wins over it.
		if !ok || e.gen > gen || e.State == state || (e.State != Alive && e.State != Suspect) {
			continue
		}
		e.State, e.Since = state, now
		changed = append(changed, e.copy())
	}
	for name, e := range t.members {
		if (e.State == Dead || e.State == Left) && now.Sub(e.Since) > t.retain {
			delete(t.members, name)
		}
	}
	t.mu.Unlock()
	for _, m := range changed {
		t.notes.push(m)
	}
}

// liveStates returns the state of each member memberlist considers alive
// or suspect, or nil if states cannot be read.
func (t *Topology) liveStates() map[string]string {
	if !t.stateReadable.Load() {
		return nil
	}
	nodes := t.ml.Members()
	states := make(map[string]string, len(nodes))
	for _, n := range nodes {
		states[n.Name] = stateName(nodeStateOf(n).State)
	}
	// Members released memberlist's lock before the reads above, which
	// there is no public way to avoid. Taking the lock again at once orders
	// them before memberlist's next write, so the unsynchronised window is
	// a few reads long instead of lasting until our next call.
	t.ml.NumMembers()
	return states
}

func (t *Topology) pollLoop() {
	defer t.wg.Done()
	tick := time.NewTicker(t.poll)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
			t.refresh()
		}
	}
}

func (e *entry) copy() Member {
	m := e.Member
	m.Tiers = slices.Clone(m.Tiers)
	return m
}

// delegate gives memberlist the local meta; patchmesh sends no user
// messages over gossip.
type delegate struct{ t *Topology }

func (d delegate) NodeMeta(limit int) []byte {
	t := d.t
	b, err := t.localMeta().Encode()
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil || len(b) > limit {
		// Keep advertising the last good meta: stale beats truncated.
		t.log.Error("local meta not advertised", "err", err, "limit", limit)
		return slices.Clone(t.lastMeta)
	}
	t.lastMeta = b
	return b
}

func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

type events struct{ t *Topology }

func (e events) NotifyJoin(n *memberlist.Node)   { e.t.observe(n, false) }
func (e events) NotifyLeave(n *memberlist.Node)  { e.t.observe(n, true) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.t.observe(n, false) }

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
// slog records.
type logBridge struct{ l *slog.Logger }

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
	b.l.Log(context.Background(), level, line)
	return len(p), nil
}
