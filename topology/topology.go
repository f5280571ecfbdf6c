package topology

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
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

// LANProbeInterval is the probe interval of the lan profile; see
// Config.Profile.
const LANProbeInterval = 500 * time.Millisecond

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
	// that differs from the bind address (NAT, 0.0.0.0). Optional; the port
	// is only used with the address and defaults to the bound port.
	AdvertiseAddr string
	AdvertisePort int
	// Join lists host:port of any members. Empty starts a new cluster.
	Join []string
	// Profile names memberlist's tuning: "local" (tests, demo), "lan" (the
	// default) or "wan". lan is memberlist's DefaultLANConfig with the
	// probe interval halved to 500ms: with memberlist's 1s, a killed node
	// took up to about 10 s to be declared dead on every member of a
	// 13-node mesh, with 500ms about 4 s at p99 (bench/RESULTS.md), for
	// about a third more gossip traffic.
	Profile string

	// Overrides of the profile. ProbeInterval is how often each member
	// probes another; ProbeTimeout how long it waits for the ack;
	// GossipInterval how often it gossips; PushPullInterval how often it
	// syncs full state with one member; SuspicionMult scales how long a
	// suspect has to refute before it is declared dead.
	ProbeInterval, ProbeTimeout, GossipInterval, PushPullInterval time.Duration
	SuspicionMult                                                 int
	// Compression is "on" or "off" for memberlist's LZW compression of
	// outgoing packets; empty keeps the profile's: off for local and lan,
	// on for wan. Gossip packets are a few hundred bytes, and memberlist
	// builds a new LZW writer for each one: 12% of the CPU of a 100-node
	// start (bench/RESULTS.md, issue 15), to save bytes on a network where
	// they are cheap; on a WAN the bytes may be worth the CPU. Either way a member decompresses what it receives, so members
	// with different settings interoperate.
	Compression string

	// Keys is the gossip keyring: each 16, 24 or 32 bytes. Keys[0] is the
	// primary (encrypts), all decrypt. At least one key is required.
	Keys [][]byte

	// Meta returns the local node's metadata. It is called whenever
	// memberlist asks for it (start, UpdateMeta); an empty Name is filled in
	// with Config.Name. Nil advertises the name only.
	Meta func() Meta
	// OnChange is called when a member joins, leaves, dies, comes back or
	// updates its meta. Calls come in order from one goroutine
	// of this package, so OnChange may call Members; it should not block for
	// long, as later changes wait for it.
	OnChange func(Member)
	// Log receives memberlist's own log, at debug (DEBUG, INFO) or warn
	// (WARN, ERR), this package's, and the security events of refused
	// gossip (see EventKeyFail). Nil discards.
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
	State string    // Alive, Dead, Left
	Since time.Time // when State last changed, as this node saw it
	Self  bool
}

// Stats counts gossip traffic on the wire (UDP and TCP, encrypted),
// members by state and refused gossip by security event code.
type Stats struct {
	SentBytes, ReceivedBytes int64
	Members                  map[string]int   // by state
	Rejected                 map[string]int64 // by EventKeyFail, EventMetaFail, EventNameFail
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
	rejects   *rejectLog

	// mu guards the member table. It is never held while calling into
	// memberlist: memberlist calls the event callbacks, which take mu, with
	// its own lock held.
	mu       sync.Mutex
	members  map[string]*entry
	lastMeta []byte // last local meta that encoded, for NodeMeta

	notes   *notifier
	updates chan struct{}

	// conflictMu guards the name conflicts memberlist reported.
	conflictMu sync.Mutex
	// selfConflict is the address of another member using this node's
	// name, "" while there is none.
	selfConflict string

	stopMu  sync.Mutex
	stopped bool
	done    chan struct{}
	wg      sync.WaitGroup
}

type entry struct {
	Member
	// leaving says the member announced it is leaving (leaveIntent): when
	// memberlist then reports it gone, it left rather than died.
	leaving bool
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
		retain:    orDefault(cfg.Retain, DefaultRetain),
		joinRetry: orDefault(cfg.JoinRetry, DefaultJoinRetry),
		rejects:   newRejectLog(logger),
		members:   make(map[string]*entry),
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
	if t.keyring, err = memberlist.NewKeyring(cfg.Keys, cfg.Keys[0]); err != nil {
		return nil, fmt.Errorf("topology: keyring: %w", err)
	}
	mlLog := log.New(logBridge{l: logger.With("component", "memberlist")}, "", 0)
	if t.transport, err = newCountingTransport(mc.BindAddr, mc.BindPort, mlLog, t.keyring, t.rejects); err != nil {
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
	mc.Alive = metaCheck{t}
	mc.Merge = metaCheck{t}
	mc.Conflict = conflictWatch{t}
	mc.Logger = mlLog
	t.notes = newNotifier(cfg.OnChange) // Create announces this node already
	if t.ml, err = memberlist.Create(mc); err != nil {
		t.transport.Shutdown()
		t.notes.stop()
		return nil, fmt.Errorf("topology: start memberlist: %w", err)
	}
	t.wg.Add(1)
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
		mc.EnableCompression = false
	case "", "lan":
		mc = memberlist.DefaultLANConfig()
		mc.ProbeInterval = LANProbeInterval
		mc.EnableCompression = false
	case "wan":
		mc = memberlist.DefaultWANConfig()
		mc.EnableCompression = true
	default:
		return nil, fmt.Errorf("topology: config: unknown profile %q (want local, lan or wan)", cfg.Profile)
	}
	mc.Name = cfg.Name
	mc.BindAddr = orDefault(cfg.BindAddr, "0.0.0.0")
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	mc.ProbeInterval = orDefault(cfg.ProbeInterval, mc.ProbeInterval)
	mc.ProbeTimeout = orDefault(cfg.ProbeTimeout, mc.ProbeTimeout)
	mc.GossipInterval = orDefault(cfg.GossipInterval, mc.GossipInterval)
	mc.PushPullInterval = orDefault(cfg.PushPullInterval, mc.PushPullInterval)
	mc.SuspicionMult = orDefault(cfg.SuspicionMult, mc.SuspicionMult)
	switch cfg.Compression {
	case "":
	case "on":
		mc.EnableCompression = true
	case "off":
		mc.EnableCompression = false
	default:
		return nil, fmt.Errorf("topology: config: compression must be on or off, got %q", cfg.Compression)
	}
	if mc.ProbeTimeout > mc.ProbeInterval {
		return nil, fmt.Errorf("topology: config: probe timeout %s longer than probe interval %s", mc.ProbeTimeout, mc.ProbeInterval)
	}
	// Refuse plaintext both ways, whatever a future profile defaults to.
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	return mc, nil
}

// orDefault returns v unless it is the zero value, else def.
func orDefault[T comparable](v, def T) T {
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
		res <- result{n, joinErr(n, err)}
	}()
	select {
	case r := <-res:
		if r.n > 0 {
			if other := t.nameConflict(); other != "" {
				// The push-pull of the join brought the other member's
				// record: refuse rather than run half-seen. Shut down
				// without leaving: a leave in this name would mark the
				// other node as gone.
				t.Close()
				return nameConflictErr(t.name, other)
			}
			t.log.Info("gossip_joined", "contacted", r.n)
			return nil
		}
		t.log.Warn("gossip_join_failed_retrying", "join", addrs, "every", t.joinRetry.String(), "error", r.err.Error())
		t.wg.Add(1)
		go t.joinLoop(addrs)
		return fmt.Errorf("%w: %v: %w", ErrNotJoined, addrs, r.err)
	case <-ctx.Done():
		t.Close()
		<-res
		return fmt.Errorf("topology: join %v: %w", addrs, ctx.Err())
	}
}

// joinErr is memberlist's Join error, never nil when nobody answered
// (memberlist returns nil if the addresses resolved to nothing).
func joinErr(contacted int, err error) error {
	if contacted == 0 && err == nil {
		return errors.New("no address to contact")
	}
	return err
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
			t.log.Info("gossip_joined_by_peer")
			return
		}
		n, err := t.ml.Join(addrs)
		err = joinErr(n, err)
		if n > 0 {
			if other := t.nameConflict(); other != "" {
				// Already logged loudly by conflictWatch; the node runs on
				// without hearing the member that shares its name.
				t.log.Error("gossip_join_refused", "error", nameConflictErr(t.name, other).Error(), "attempt", attempt)
				return
			}
			t.log.Info("gossip_joined", "contacted", n, "attempt", attempt)
			return
		}
		t.log.Debug("gossip_join_retry_failed", "attempt", attempt, "error", err.Error())
	}
}

// Members returns every member this node knows, including dead and left
// ones for Config.Retain, sorted by name.
func (t *Topology) Members() []Member {
	t.prune()
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
	t.prune()
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
	case Left:
		return 1
	}
	return 2
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
			t.log.Debug("gossip_meta_update_pending", "error", err.Error())
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
	t.prune()
	s := Stats{
		SentBytes:     t.transport.sent.Load(),
		ReceivedBytes: t.transport.received.Load(),
		Members:       map[string]int{Alive: 0, Dead: 0, Left: 0},
		Rejected:      t.rejects.counts(),
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.members {
		s.Members[e.State]++
	}
	return s
}

// Leave tells the mesh this node is going away, waits up to timeout for
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
	// failure if the leave gossip never reaches it) as Left.
	t.announceLeave(time.Now().Add(timeout / 2))
	// Under stopMu: memberlist panics on a Leave after Shutdown. A zero
	// timeout would make it wait for ever.
	err := t.ml.Leave(max(time.Until(deadline), time.Millisecond))
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

// leaveFanout bounds the leave intents in flight at once.
const leaveFanout = 8

// Messages patchmesh sends over memberlist's user channel (Delegate
// NotifyMsg), tagged by their first byte.
const msgLeaveIntent byte = 1

// announceLeave sends every live member, over TCP, this node's intent to
// leave. Memberlist's own leave message cannot tell a departure from a
// failure to its receivers (both arrive as NotifyLeave, and the state that
// says which is private), so the intent travels first, as Serf does it.
// Memberlist gossips its leave a few times, piggybacked on whatever packets
// go out next, and in a small cluster those can all go to a member that is
// itself failing; the intent reaches everyone directly. It gives up at
// deadline; stragglers end at memberlist's TCP timeout.
func (t *Topology) announceLeave(deadline time.Time) {
	msg := append([]byte{msgLeaveIntent}, t.name...)
	var peers []*memberlist.Node
	for _, n := range t.ml.Members() { // alive members only
		if n.Name != t.name {
			peers = append(peers, n)
		}
	}
	// A few workers rather than a goroutine per member: a simulated mesh
	// of a thousand nodes in one process may leave all at once.
	work := make(chan *memberlist.Node)
	var wg sync.WaitGroup
	for range min(leaveFanout, len(peers)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				if time.Now().After(deadline) {
					continue
				}
				if err := t.ml.SendReliable(p, msg); err != nil {
					t.log.Debug("gossip_leave_intent_failed", "member", p.Name, "addr", p.Address(), "error", err.Error())
				}
			}
		}()
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
feed:
	for _, p := range peers {
		select {
		case work <- p:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	// Workers skip what is left once the deadline passes; a send under way
	// ends at memberlist's TCP timeout, or at Shutdown, without Leave
	// waiting for it.
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-ctx.Done():
		t.log.Warn("gossip_leave_incomplete", "members", len(peers))
	}
}

// heardLeaveIntent marks name as leaving. The intent only changes how its
// coming departure is named, so a member that sends it falsely can do no
// more than any key holder, who can announce another member dead.
func (t *Topology) heardLeaveIntent(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.members[name]; ok && e.State == Alive {
		e.leaving = true
	}
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

// memberlist events, as observe reads them.
const (
	evJoin = iota
	evUpdate
	evLeave
)

// observe records what a memberlist event says about n: a join is Alive,
// an update keeps it Alive with new meta, a leave is Left if the member
// announced it (heardLeaveIntent) and Dead otherwise.
func (t *Topology) observe(n *memberlist.Node, ev int) {
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		// metaCheck refuses such members; this is a node of our own
		// misbehaving, or one admitted before a check existed.
		t.log.Warn("gossip_meta_undecodable", "member", n.Name, "error", err.Error())
	}
	if meta.Name == "" {
		meta.Name = n.Name
	}
	m := Member{Meta: meta, Addr: n.Address(), Self: n.Name == t.name, State: Alive, Since: time.Now()}
	t.mu.Lock()
	old, known := t.members[n.Name]
	leaving := known && old.leaving
	switch ev {
	case evJoin:
		leaving = false
	case evLeave:
		m.State = Dead
		if leaving {
			m.State = Left
		}
	}
	if known && old.State == m.State {
		m.Since = old.Since
	}
	t.members[n.Name] = &entry{Member: m, leaving: leaving}
	t.mu.Unlock()
	t.notes.push(m)
}

// prune forgets members dead or left for longer than Retain.
func (t *Topology) prune() {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, e := range t.members {
		if (e.State == Dead || e.State == Left) && now.Sub(e.Since) > t.retain {
			delete(t.members, name)
		}
	}
}

func (e *entry) copy() Member {
	m := e.Member
	m.Tiers = slices.Clone(m.Tiers)
	m.Upstreams = maps.Clone(m.Upstreams)
	return m
}

// delegate gives memberlist the local meta and hears leave intents, the
// only user message patchmesh sends over gossip.
type delegate struct{ t *Topology }

func (d delegate) NodeMeta(limit int) []byte {
	t := d.t
	b, err := t.localMeta().Encode()
	if err == nil {
		err = CheckMeta(t.name, b)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil || len(b) > limit {
		// Keep advertising the last good meta: stale beats truncated.
		if err == nil {
			err = fmt.Errorf("%d bytes over memberlist's limit of %d", len(b), limit)
		}
		t.log.Error("gossip_meta_not_advertised", "error", err.Error())
		return slices.Clone(t.lastMeta)
	}
	t.lastMeta = b
	return b
}

func (d delegate) NotifyMsg(b []byte) {
	if len(b) > 1 && b[0] == msgLeaveIntent {
		d.t.heardLeaveIntent(string(b[1:]))
	}
}

func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

type events struct{ t *Topology }

// conflictWatch hears, under memberlist's lock, of an alive message that
// names a known member at another address. memberlist ignores such a
// message; patchmesh makes it a security event, and Start refuses to join
// a mesh where its own name is taken.
type conflictWatch struct{ t *Topology }

func (c conflictWatch) NotifyConflict(existing, other *memberlist.Node) {
	t := c.t
	theirs := other.Address()
	t.conflictMu.Lock()
	self := existing.Name == t.name
	if self && t.selfConflict == "" {
		t.selfConflict = theirs
	}
	t.conflictMu.Unlock()
	// Once per pair of addresses: memberlist reports one per alive
	// message, that is every gossip round.
	t.rejects.event(EventNameFail, existing.Name+"\x00"+existing.Address()+"\x00"+theirs,
		slog.String("name", existing.Name), slog.String("known_addr", existing.Address()),
		slog.String("other_addr", theirs), slog.Bool("self", self),
		slog.String("reason", fmt.Sprintf("two gossip members are named %q (%s and %s); every node needs its own node.name; the one at %s is ignored", existing.Name, existing.Address(), theirs, theirs)))
}

// nameConflict is the address of another member using this node's name,
// or "".
func (t *Topology) nameConflict() string {
	t.conflictMu.Lock()
	defer t.conflictMu.Unlock()
	return t.selfConflict
}

func nameConflictErr(name, other string) error {
	return fmt.Errorf("%w: the member at %s is already named %q; give every node its own node.name (the default is the host name and the API port)", ErrNameConflict, other, name)
}

// metaCheck refuses, under memberlist's lock, members whose meta this node
// cannot read or that claim another node's name in it: as an
// AliveDelegate for each alive message, and as a MergeDelegate for a
// push/pull (a join), where one bad member refuses the whole exchange.
// Either way memberlist never lists the member, and each refusal is a
// security event.
type metaCheck struct{ t *Topology }

func (c metaCheck) NotifyAlive(n *memberlist.Node) error {
	return c.check(n, "alive")
}

func (c metaCheck) NotifyMerge(peers []*memberlist.Node) error {
	for _, n := range peers {
		if err := c.check(n, "push_pull"); err != nil {
			return err
		}
	}
	return nil
}

func (c metaCheck) check(n *memberlist.Node, via string) error {
	if n.Name == c.t.name {
		// This node's meta is checked before it is advertised (NodeMeta);
		// another member by this name is a conflict (conflictWatch).
		return nil
	}
	err := CheckMeta(n.Name, n.Meta)
	if err != nil {
		c.t.rejects.event(EventMetaFail, n.Name+"\x00"+n.Address(), slog.String("member", n.Name),
			slog.String("addr", n.Address()), slog.String("via", via), slog.String("reason", err.Error()))
	}
	return err
}

func (e events) NotifyJoin(n *memberlist.Node)   { e.t.observe(n, evJoin) }
func (e events) NotifyLeave(n *memberlist.Node)  { e.t.observe(n, evLeave) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.t.observe(n, evUpdate) }

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
// slog records. Nothing is decided on their text: refusals are seen
// through the delegates and the transport.
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
	b.l.Log(context.Background(), level, "memberlist", "text", line)
	return len(p), nil
}
