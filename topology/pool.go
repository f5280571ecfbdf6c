package topology

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPool names the one pool of a Config without Pools.
const DefaultPool = "default"

// Pool is one gossip pool a node belongs to: a memberlist cluster of its
// own, with its own address, members, keys and timing. A node gossips only
// with the members of its pools; a node in two pools (a regional relay in
// its region's and the backbone) is where they meet. Timing fields left
// zero keep the profile's value.
type Pool struct {
	// Name tells the pools of a node apart (metrics, logs, the view). It
	// need not match between nodes, but a mesh reads best when it does.
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
	// Join lists host:port of any members of this pool. Empty starts a new
	// cluster.
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
	// they are cheap; on a WAN the bytes may be worth the CPU. Either way a
	// member decompresses what it receives, so members with different
	// settings interoperate.
	Compression string

	// Keys is the pool's gossip keyring: each 16, 24 or 32 bytes. Keys[0]
	// is the primary (encrypts), all decrypt. At least one key is
	// required. Pools should not share keys: a pool's key is what keeps
	// another pool's members out of it.
	Keys [][]byte
}

// ErrNoPool is returned by the key methods for a pool name the node does
// not belong to.
var ErrNoPool = errors.New("topology: no such pool")

// pool is one running memberlist of the Topology. Its member table is
// guarded by the Topology's mu.
type pool struct {
	t         *Topology
	name      string
	join      []string
	ml        *memberlist.Memberlist
	keyring   *memberlist.Keyring
	transport *countingTransport
	rejects   *rejectLog
	log       *slog.Logger
	// addr is this node's gossip host:port in the pool, fixed at start:
	// read without memberlist's lock, which its event callbacks hold.
	addr string

	members map[string]*entry // guarded by t.mu

	// reconnectEvery is how often reconnectLoop may try a dead member:
	// the pool's push-pull interval.
	reconnectEvery time.Duration
	// reconnected and reconnectFailed count reconnectLoop's joins.
	reconnected, reconnectFailed atomic.Int64

	// metaOK remembers the meta each member last passed CheckMeta with.
	metaOK metaMemo

	// conflictMu guards the name conflicts memberlist reported.
	conflictMu sync.Mutex
	// selfConflict is the address of another member of this pool using
	// this node's name, "" while there is none.
	selfConflict string
}

type entry struct {
	Member
	// leaving says the member announced it is leaving (leaveIntent): when
	// memberlist then reports it gone, it left rather than died.
	leaving bool
	// heard is when this pool last brought news of the member, to pick
	// the freshest meta among pools.
	heard time.Time
}

// memberlistConfig validates the pool p of the node named name and maps it
// onto memberlist's profile.
func memberlistConfig(name string, p Pool) (*memberlist.Config, error) {
	if name == "" {
		return nil, errors.New("topology: config: empty node name")
	}
	if len(p.Keys) == 0 {
		return nil, ErrNoKeys
	}
	for i, k := range p.Keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("topology: config: gossip key %d: %w", i+1, err)
		}
	}
	var mc *memberlist.Config
	switch p.Profile {
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
		return nil, fmt.Errorf("topology: config: unknown profile %q (want local, lan or wan)", p.Profile)
	}
	mc.Name = name
	mc.BindAddr = orDefault(p.BindAddr, "0.0.0.0")
	mc.BindPort = p.BindPort
	mc.AdvertiseAddr = p.AdvertiseAddr
	mc.AdvertisePort = p.AdvertisePort
	mc.ProbeInterval = orDefault(p.ProbeInterval, mc.ProbeInterval)
	mc.ProbeTimeout = orDefault(p.ProbeTimeout, mc.ProbeTimeout)
	mc.GossipInterval = orDefault(p.GossipInterval, mc.GossipInterval)
	mc.PushPullInterval = orDefault(p.PushPullInterval, mc.PushPullInterval)
	mc.SuspicionMult = orDefault(p.SuspicionMult, mc.SuspicionMult)
	switch p.Compression {
	case "":
	case "on":
		mc.EnableCompression = true
	case "off":
		mc.EnableCompression = false
	default:
		return nil, fmt.Errorf("topology: config: compression must be on or off, got %q", p.Compression)
	}
	if mc.ProbeTimeout > mc.ProbeInterval {
		return nil, fmt.Errorf("topology: config: probe timeout %s longer than probe interval %s", mc.ProbeTimeout, mc.ProbeInterval)
	}
	// The transport seals every packet (seal.go): memberlist, which has no
	// keyring, leaves room for that in what it packs into one.
	mc.UDPBufferSize -= encOverhead
	return mc, nil
}

// startPool creates the memberlist of pool cfg and adds it to t.pools; it
// joins nobody yet.
func (t *Topology) startPool(cfg Pool) (*pool, error) {
	mc, err := memberlistConfig(t.name, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w (pool %s)", err, cfg.Name)
	}
	logger := t.log
	if t.multi {
		// Only with several pools: one pool's log reads as it always did.
		logger = logger.With("pool", cfg.Name)
	}
	p := &pool{t: t, name: cfg.Name, join: cfg.Join, log: logger, reconnectEvery: mc.PushPullInterval,
		rejects: newRejectLog(logger), members: make(map[string]*entry)}
	if p.keyring, err = memberlist.NewKeyring(cfg.Keys, cfg.Keys[0]); err != nil {
		return nil, fmt.Errorf("topology: pool %s: keyring: %w", cfg.Name, err)
	}
	mlLog := log.New(logBridge{l: logger.With("component", "memberlist")}, "", 0)
	if p.transport, err = newCountingTransport(mc.BindAddr, mc.BindPort, mlLog, p.keyring, p.rejects); err != nil {
		return nil, fmt.Errorf("topology: pool %s: %w", cfg.Name, err)
	}
	mc.BindPort = p.transport.port()
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = mc.BindPort
	}
	// The keyring is the transport's, not memberlist's: the transport
	// seals and opens all gossip.
	mc.Transport = p.transport
	mc.Delegate = delegate{p}
	mc.Events = events{p}
	mc.Alive = metaCheck{p}
	mc.Merge = metaCheck{p}
	mc.Conflict = conflictWatch{p}
	mc.Logger = mlLog
	// Listed before Create, which already reports this node to the
	// pool's events, which merge over the listed pools.
	t.mu.Lock()
	t.pools = append(t.pools, p)
	t.mu.Unlock()
	if p.ml, err = memberlist.Create(mc); err != nil {
		t.mu.Lock()
		t.pools = t.pools[:len(t.pools)-1]
		t.mu.Unlock()
		p.transport.Shutdown()
		return nil, fmt.Errorf("topology: pool %s: start memberlist: %w", cfg.Name, err)
	}
	p.addr = p.ml.LocalNode().Address()
	return p, nil
}

// firstJoin joins the pool's join list once. If nobody answers it starts
// joinLoop and returns an error wrapping ErrNotJoined; on ctx's end it
// shuts the whole Topology down.
func (p *pool) firstJoin(ctx context.Context) error {
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	go func() {
		n, err := p.ml.Join(p.join)
		res <- result{n, joinErr(n, err)}
	}()
	select {
	case r := <-res:
		if r.n > 0 {
			if other := p.nameConflict(); other != "" {
				// The push-pull of the join brought the other member's
				// record: refuse rather than run half-seen. Start shuts
				// down without leaving: a leave in this name would mark
				// the other node as gone.
				return nameConflictErr(p.t.name, other)
			}
			p.log.Info("gossip_joined", "contacted", r.n)
			return nil
		}
		p.log.Warn("gossip_join_failed_retrying", "join", p.join, "every", p.t.joinRetry.String(), "error", r.err.Error())
		p.t.wg.Add(1)
		go p.joinLoop()
		return fmt.Errorf("%w: pool %s: %v: %w", ErrNotJoined, p.name, p.join, r.err)
	case <-ctx.Done():
		p.t.Close()
		<-res
		return fmt.Errorf("topology: pool %s: join %v: %w", p.name, p.join, ctx.Err())
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

// joinLoop retries joining until this node knows another member of the
// pool, whoever joined whom.
func (p *pool) joinLoop() {
	t := p.t
	defer t.wg.Done()
	tick := time.NewTicker(t.joinRetry)
	defer tick.Stop()
	for attempt := 2; ; attempt++ {
		select {
		case <-t.done:
			return
		case <-tick.C:
		}
		if p.ml.NumMembers() > 1 {
			p.log.Info("gossip_joined_by_peer")
			return
		}
		n, err := p.ml.Join(p.join)
		err = joinErr(n, err)
		if n > 0 {
			if other := p.nameConflict(); other != "" {
				// Already logged loudly by conflictWatch; the node runs on
				// without hearing the member that shares its name.
				p.log.Error("gossip_join_refused", "error", nameConflictErr(t.name, other).Error(), "attempt", attempt)
				return
			}
			p.log.Info("gossip_joined", "contacted", n, "attempt", attempt)
			return
		}
		p.log.Debug("gossip_join_retry_failed", "attempt", attempt, "error", err.Error())
	}
}

// reconnectLoop heals what memberlist alone leaves split. Memberlist
// gossips to a dead member only for its GossipToTheDeadTime (15 s to 60 s
// by profile) and pushes its state only to live ones, so two sides of a
// partition that outlasts that never hear of each other again; nor does
// anyone hear of a member that comes back at its address without a join
// list (a hub, restarted: it started the pool) once it is held dead or
// left. So every push-pull interval this pool joins:
//   - as Serf does, one member it holds dead (not left), with probability
//     dead/alive: a node cut off from its whole pool tries at every tick,
//     and in a pool of many that lost one, about one member tries per tick
//     in all. Dead members are tried for as long as they are retained
//     (Config.Retain);
//   - while it holds a member dead or left, or is alone, every address
//     of its join list at which no live member is, as Consul's retry_join
//     does: a relay that lists the hub finds the hub restarted, however it
//     went away. Only then: a join address that never matches a member's
//     (NAT, a name that resolves elsewhere) would otherwise be joined,
//     a push/pull of the whole pool, every tick by every node that lists it.
func (p *pool) reconnectLoop() {
	t := p.t
	defer t.wg.Done()
	tick := time.NewTicker(p.reconnectEvery)
	defer tick.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-tick.C:
		}
		name, addrs := p.reconnectTargets()
		if len(addrs) == 0 {
			continue
		}
		select {
		case <-t.done: // do not hold Close up with a join
			return
		default:
		}
		attrs := []any{"addrs", addrs}
		if name != "" {
			attrs = append(attrs, "member", name)
		}
		before := p.ml.NumMembers()
		n, err := p.ml.Join(addrs)
		if err = joinErr(n, err); n == 0 {
			p.reconnectFailed.Add(1)
			p.log.Debug("gossip_reconnect_failed", append(attrs, "error", err.Error())...)
			continue
		}
		p.reconnected.Add(1)
		// The join's push/pull has merged what it learnt by now: say so
		// loudly only when it brought members back.
		after := p.ml.NumMembers()
		level := slog.LevelDebug
		if after > before {
			level = slog.LevelInfo
		}
		p.log.Log(context.Background(), level, "gossip_reconnected",
			append(attrs, "contacted", n, "members_before", before, "members_after", after)...)
	}
}

// reconnectTargets picks what reconnectLoop joins this tick, if anything:
// a dead member's name and address, and the join addresses no live member
// is at.
func (p *pool) reconnectTargets() (name string, addrs []string) {
	t := p.t
	t.prune() // members past Retain are not tried
	var dead []*entry
	alive, left := 0, 0
	t.mu.Lock()
	for _, e := range p.members {
		switch e.State {
		case Alive:
			alive++ // this node too
		case Dead:
			dead = append(dead, e)
		case Left:
			left++
		}
	}
	var live map[string]bool // by address, this node's too
	if len(p.join) > 0 && (len(dead) > 0 || left > 0 || alive <= 1) {
		live = make(map[string]bool, alive)
		for _, e := range p.members {
			if e.State == Alive {
				live[e.Addr] = true
			}
		}
	}
	t.mu.Unlock()
	if len(dead) > 0 && rand.Float64() < float64(len(dead))/float64(max(alive, 1)) {
		e := dead[rand.IntN(len(dead))]
		name, addrs = e.Name, []string{e.Addr}
	}
	if live == nil {
		return name, addrs
	}
	for _, j := range p.join {
		if !liveAt(j, live) && !slices.Contains(addrs, j) {
			addrs = append(addrs, j)
		}
	}
	return name, addrs
}

// liveAt says whether a live member is at the join address j, host:port
// with an IP or a name, given live members' addresses as memberlist gives
// them (ip:port). A name is resolved; one that does not resolve, or an
// address without a port, is no live member.
func liveAt(j string, live map[string]bool) bool {
	host, port, err := net.SplitHostPort(j)
	if err != nil {
		return false
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return live[net.JoinHostPort(ip.Unmap().String(), port)]
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	ips, _ := net.DefaultResolver.LookupHost(ctx, host)
	for _, ip := range ips {
		if live[net.JoinHostPort(ip, port)] {
			return true
		}
	}
	return false
}

// resolveTimeout bounds liveAt's name lookup: a slow resolver delays only
// the reconnect tick, which memberlist's Join would then resolve again.
const resolveTimeout = 2 * time.Second

// leaveFanout bounds the leave intents in flight at once, per pool.
const leaveFanout = 8

// Messages patchmesh sends over memberlist's user channel (Delegate
// NotifyMsg), tagged by their first byte.
const msgLeaveIntent byte = 1

// announceLeave sends every live member of the pool, over TCP, this node's
// intent to leave. Memberlist's own leave message cannot tell a departure
// from a failure to its receivers (both arrive as NotifyLeave, and the
// state that says which is private), so the intent travels first, as Serf
// does it. Memberlist gossips its leave a few times, piggybacked on
// whatever packets go out next, and in a small cluster those can all go to
// a member that is itself failing; the intent reaches everyone directly.
// It gives up at deadline; stragglers end at memberlist's TCP timeout.
// It reports whether every live member got the intent.
func (p *pool) announceLeave(deadline time.Time) (all bool) {
	msg := append([]byte{msgLeaveIntent}, p.t.name...)
	var peers []*memberlist.Node
	for _, n := range p.ml.Members() { // alive members only
		if n.Name != p.t.name {
			peers = append(peers, n)
		}
	}
	// A few workers rather than a goroutine per member: a simulated mesh
	// of a thousand nodes in one process may leave all at once.
	work := make(chan *memberlist.Node)
	var wg sync.WaitGroup
	var told atomic.Int64
	for range min(leaveFanout, len(peers)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				if time.Now().After(deadline) {
					continue
				}
				if err := p.ml.SendReliable(n, msg); err != nil {
					p.log.Debug("gossip_leave_intent_failed", "member", n.Name, "addr", n.Address(), "error", err.Error())
					continue
				}
				told.Add(1)
			}
		}()
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
feed:
	for _, n := range peers {
		select {
		case work <- n:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	// Workers skip what is left once the deadline passes; a send under way
	// ends at memberlist's TCP timeout, or at Shutdown, without Leave
	// waiting for it.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.log.Warn("gossip_leave_incomplete", "members", len(peers))
		return false
	}
	return told.Load() == int64(len(peers))
}

// heardLeaveIntent marks name as leaving this pool. The intent only
// changes how its coming departure is named, so a member that sends it
// falsely can do no more than any key holder, who can announce another
// member dead.
//
// The intent travels over TCP and memberlist's leave over UDP, each
// handled on its own goroutine, so on a busy node the leave can be
// observed first: a member dead for less than lateIntent is then renamed
// left.
func (p *pool) heardLeaveIntent(name string) {
	t := p.t
	t.mu.Lock()
	e, ok := p.members[name]
	switch {
	case ok && e.State == Alive:
		e.leaving = true
		t.mu.Unlock()
	case ok && e.State == Dead && time.Since(e.Since) < lateIntent:
		m := e.Member
		m.State = Left
		// A new entry: entries are shared with merged views and never
		// changed in place once dead.
		p.members[name] = &entry{Member: m, leaving: true, heard: e.heard}
		merged, _ := t.merged(name)
		t.mu.Unlock()
		t.notes.push(merged)
	default:
		t.mu.Unlock()
	}
}

// lateIntent is how long after a member's death its leave intent still
// renames it left: the two race only by a goroutine's scheduling.
const lateIntent = 10 * time.Second

// memberlist events, as observe reads them.
const (
	evJoin = iota
	evUpdate
	evLeave
)

// observe records what a memberlist event of this pool says about n: a
// join is Alive, an update keeps it Alive with new meta, a leave is Left
// if the member announced it (heardLeaveIntent) and Dead otherwise. What
// OnChange hears is the member as all pools together see it.
func (p *pool) observe(n *memberlist.Node, ev int) {
	t := p.t
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		// metaCheck refuses such members; this is a node of our own
		// misbehaving, or one admitted before a check existed.
		p.log.Warn("gossip_meta_undecodable", "member", n.Name, "error", err.Error())
	}
	if meta.Name == "" {
		meta.Name = n.Name
	}
	now := time.Now()
	m := Member{Meta: meta, Addr: n.Address(), Self: n.Name == t.name, State: Alive, Since: now}
	t.mu.Lock()
	old, known := p.members[n.Name]
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
	p.members[n.Name] = &entry{Member: m, leaving: leaving, heard: now}
	// Not detached: this runs under memberlist's lock, and the entries
	// it shares meta with are never changed in place.
	merged, _ := t.merged(n.Name)
	t.mu.Unlock()
	t.notes.push(merged)
}

// delegate gives memberlist the local meta and hears leave intents, the
// only user message patchmesh sends over gossip.
type delegate struct{ p *pool }

func (d delegate) NodeMeta(limit int) []byte {
	t := d.p.t
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
		d.p.log.Error("gossip_meta_not_advertised", "error", err.Error())
		return slices.Clone(t.lastMeta)
	}
	t.lastMeta = b
	return b
}

func (d delegate) NotifyMsg(b []byte) {
	if len(b) > 1 && b[0] == msgLeaveIntent {
		d.p.heardLeaveIntent(string(b[1:]))
	}
}

func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

type events struct{ p *pool }

func (e events) NotifyJoin(n *memberlist.Node)   { e.p.observe(n, evJoin) }
func (e events) NotifyLeave(n *memberlist.Node)  { e.p.observe(n, evLeave) }
func (e events) NotifyUpdate(n *memberlist.Node) { e.p.observe(n, evUpdate) }

// conflictWatch hears, under memberlist's lock, of an alive message that
// names a known member at another address. memberlist ignores such a
// message; patchmesh makes it a security event, and Start refuses to join
// a mesh where its own name is taken.
type conflictWatch struct{ p *pool }

func (c conflictWatch) NotifyConflict(existing, other *memberlist.Node) {
	p := c.p
	theirs := other.Address()
	p.conflictMu.Lock()
	self := existing.Name == p.t.name
	if self && p.selfConflict == "" {
		p.selfConflict = theirs
	}
	p.conflictMu.Unlock()
	// Once per pair of addresses: memberlist reports one per alive
	// message, that is every gossip round.
	p.rejects.event(EventNameFail, existing.Name+"\x00"+existing.Address()+"\x00"+theirs,
		slog.String("name", existing.Name), slog.String("known_addr", existing.Address()),
		slog.String("other_addr", theirs), slog.Bool("self", self),
		slog.String("reason", fmt.Sprintf("two gossip members are named %q (%s and %s); every node needs its own node.name; the one at %s is ignored", existing.Name, existing.Address(), theirs, theirs)))
}

// nameConflict is the address of another member of the pool using this
// node's name, or "".
func (p *pool) nameConflict() string {
	p.conflictMu.Lock()
	defer p.conflictMu.Unlock()
	return p.selfConflict
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
type metaCheck struct{ p *pool }

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
	if n.Name == c.p.t.name {
		// This node's meta is checked before it is advertised (NodeMeta);
		// another member by this name is a conflict (conflictWatch).
		return nil
	}
	if c.p.metaOK.passed(n.Name, n.Meta) {
		return nil
	}
	err := CheckMeta(n.Name, n.Meta)
	if err != nil {
		c.p.rejects.event(EventMetaFail, n.Name+"\x00"+n.Address(), slog.String("member", n.Name),
			slog.String("addr", n.Address()), slog.String("via", via), slog.String("reason", err.Error()))
		return err
	}
	c.p.metaOK.remember(n.Name, n.Meta)
	return nil
}

// metaMemo remembers, per member name, the last meta that passed
// CheckMeta, so that the same bytes are not decoded and checked again:
// memberlist asks about every copy of an alive message gossip delivers
// (under its own lock) and about every member of each push/pull, and the
// meta is mostly unchanged. CheckMeta depends on the name and the bytes
// only, so a remembered pass is the answer it would give; a refusal is
// never remembered, and is checked and logged each time.
type metaMemo struct {
	mu sync.Mutex
	ok map[string]string
}

// metaMemoMax bounds the memo; past it, it starts over. A pool's members
// are far fewer, so only names made up by a peer fill it.
const metaMemoMax = 4096

func (m *metaMemo) passed(name string, meta []byte) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.ok[name]
	return ok && v == string(meta)
}

func (m *metaMemo) remember(name string, meta []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ok == nil || len(m.ok) >= metaMemoMax {
		m.ok = make(map[string]string)
	}
	m.ok[name] = string(meta)
}
