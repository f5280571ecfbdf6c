package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/replicate"
	"github.com/patchmesh/patchmesh/topology"
)

// Gossip profiles.
var gossipProfiles = []string{"local", "lan", "wan"}

func (c Config) validateGossip() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	g := c.Gossip
	if !slices.Contains(gossipProfiles, g.Profile) {
		bad("gossip.profile", "must be local, lan or wan, got %q", g.Profile)
	}
	// With pools, the section's keys, timing and compression are what
	// pools leave empty take; its own pool is off.
	errs = append(errs, validatePoolFields("gossip", gossipPoolOf(g), g.On(), len(g.Pools) == 0)...)
	if len(g.Pools) == 0 {
		if g.Bind == "" && len(g.Join) > 0 {
			bad("gossip.join", "needs gossip.bind: a node joins the mesh only with gossip on")
		}
		return errs
	}
	for field, set := range map[string]bool{"gossip.bind": g.Bind != "", "gossip.advertise": g.Advertise != "", "gossip.join": len(g.Join) > 0} {
		if set {
			bad(field, "must be empty with gossip.pools: set it on each pool")
		}
	}
	names, binds := map[string]bool{}, map[string]string{}
	for i, p := range g.Pools {
		field := fmt.Sprintf("gossip.pools[%d]", i)
		if !poolName.MatchString(p.Name) {
			bad(field+".name", "want letters, digits, '.', '_' or '-', starting with a letter or digit, got %q", p.Name)
		} else if names[p.Name] {
			bad(field+".name", "pool %q is listed twice", p.Name)
		}
		names[p.Name] = true
		if p.Profile != "" && !slices.Contains(gossipProfiles, p.Profile) {
			bad(field+".profile", "must be local, lan or wan (empty: gossip.profile), got %q", p.Profile)
		}
		if p.Bind == "" {
			bad(field+".bind", "required: the host:port this pool gossips on")
		} else if hp, err := splitHostPort(p.Bind); err == nil && hp.port != 0 {
			if other, ok := binds[p.Bind]; ok {
				bad(field+".bind", "%s is already pool %s's: each pool needs its own port", p.Bind, other)
			}
			binds[p.Bind] = p.Name
		}
		pf := gossipPool{bind: p.Bind, advertise: p.Advertise, join: p.Join, compression: p.Compression, keys: p.Keys,
			keyringFile: p.KeyringFile, timing: []time.Duration{p.ProbeInterval, p.ProbeTimeout, p.GossipInterval, p.PushPullInterval},
			suspicionMult: p.SuspicionMult}
		// A pool without keys of its own takes the section's, checked
		// there.
		inherits := len(p.Keys) == 0 && p.KeyringFile == "" && (len(g.Keys) > 0 || g.KeyringFile != "")
		errs = append(errs, validatePoolFields(field, pf, true, !inherits)...)
	}
	return errs
}

// poolName is what a gossip pool may be called: it lands in metric labels
// and log lines.
var poolName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// gossipPool is the part of the gossip section, or of one of its pools,
// that validatePoolFields checks.
type gossipPool struct {
	bind, advertise, compression, keyringFile string
	join, keys                                []string
	timing                                    []time.Duration // probe, probe timeout, gossip, push-pull
	suspicionMult                             int
}

func gossipPoolOf(g GossipConfig) gossipPool {
	return gossipPool{bind: g.Bind, advertise: g.Advertise, join: g.Join, compression: g.Compression, keys: g.Keys,
		keyringFile: g.KeyringFile, timing: []time.Duration{g.ProbeInterval, g.ProbeTimeout, g.GossipInterval, g.PushPullInterval},
		suspicionMult: g.SuspicionMult}
}

// validatePoolFields checks one pool's fields under prefix (gossip or
// gossip.pools[i]). Off (no gossip) only compression is checked, as it
// always was; needKey says the fields must hold a key themselves.
func validatePoolFields(prefix string, p gossipPool, on, needKey bool) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, field, fmt.Sprintf(format, args...)))
	}
	if p.compression != "" && p.compression != "on" && p.compression != "off" {
		bad("compression", "must be on or off (empty: the profile's), got %q", p.compression)
	}
	if !on {
		return errs
	}
	if p.bind != "" {
		if _, err := splitHostPort(p.bind); err != nil {
			bad("bind", "%v", err)
		}
	}
	if p.advertise != "" {
		if _, err := splitHostPort(p.advertise); err != nil {
			bad("advertise", "%v", err)
		}
	}
	for i, j := range p.join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			bad(fmt.Sprintf("join[%d]", i), "must be host:port, got %q", j)
		}
	}
	// Key material is checked without echoing it.
	if needKey && len(p.keys) == 0 && p.keyringFile == "" {
		bad("keys", "gossip is always encrypted: set keys or keyring_file (make a key with patchmesh gossip-key)")
	}
	for i, k := range p.keys {
		if _, err := topology.ParseKeys(k); err != nil {
			bad(fmt.Sprintf("keys[%d]", i), "not a base64 key of 16, 24 or 32 bytes")
		}
	}
	for i, name := range []string{"probe_interval", "probe_timeout", "gossip_interval", "push_pull_interval"} {
		if p.timing[i] < 0 {
			bad(name, "must not be negative, got %v", p.timing[i])
		}
	}
	if p.suspicionMult < 0 {
		bad("suspicion_mult", "must not be negative, got %d", p.suspicionMult)
	}
	return errs
}

type hostPort struct {
	host string
	port int
}

func splitHostPort(s string) (hostPort, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return hostPort{}, fmt.Errorf("must be host:port such as 10.0.0.5:7946, got %q", s)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return hostPort{}, fmt.Errorf("bad port in %q", s)
	}
	return hostPort{h, n}, nil
}

// readKeys reads a keyring: the file's keys first, then the listed ones.
// field names the option in errors (gossip, gossip.pools[1]).
func readKeys(field, file string, listed []string) ([][]byte, error) {
	var keys [][]byte
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s.keyring_file: %w", field, err)
		}
		k, err := topology.ParseKeys(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s.keyring_file %s: %w", field, file, err)
		}
		keys = append(keys, k...)
	}
	for _, s := range listed {
		k, err := topology.ParseKeys(s)
		if err != nil {
			return nil, fmt.Errorf("%s.keys: %w", field, err)
		}
		keys = append(keys, k...)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no key in keys or keyring_file", field)
	}
	return keys, nil
}

// gossipPools is the node's gossip pools as topology takes them: the
// pools listed, each with the gossip section's values where it leaves its
// own empty, or nil for a node in one pool.
func (c Config) gossipPools() ([]topology.Pool, error) {
	g := c.Gossip
	var out []topology.Pool
	for i, pc := range g.Pools {
		field := fmt.Sprintf("gossip.pools[%d]", i)
		keyFile, listed := pc.KeyringFile, pc.Keys
		if keyFile == "" && len(listed) == 0 {
			keyFile, listed = g.KeyringFile, g.Keys
		}
		keys, err := readKeys(field, keyFile, listed)
		if err != nil {
			return nil, err
		}
		bind, _ := splitHostPort(pc.Bind)
		p := topology.Pool{
			Name: pc.Name, BindAddr: bind.host, BindPort: bind.port, Join: pc.Join,
			Profile:          orDefault(pc.Profile, g.Profile),
			ProbeInterval:    orDefault(pc.ProbeInterval, g.ProbeInterval),
			ProbeTimeout:     orDefault(pc.ProbeTimeout, g.ProbeTimeout),
			GossipInterval:   orDefault(pc.GossipInterval, g.GossipInterval),
			PushPullInterval: orDefault(pc.PushPullInterval, g.PushPullInterval),
			SuspicionMult:    orDefault(pc.SuspicionMult, g.SuspicionMult),
			Compression:      orDefault(pc.Compression, g.Compression),
			Keys:             keys,
		}
		if pc.Advertise != "" {
			adv, _ := splitHostPort(pc.Advertise)
			p.AdvertiseAddr, p.AdvertisePort = adv.host, adv.port
		}
		out = append(out, p)
	}
	return out, nil
}

// orDefault is v unless it is the zero value, else def.
func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// gossip is the node's membership: its own meta, kept current without
// touching the store from memberlist's goroutines, and the wiring of the
// members to federation's sync policy (mesh), which decides what their
// changes mean.
type gossip struct {
	n    *Node
	topo *topology.Topology
	// mesh is nil on the hub, which has no links.
	mesh *federation.Mesh

	mu    sync.Mutex
	tiers []string // the store's tiers, for a hub's meta
	// ups is what upstreamsMoved saw last.
	ups map[string]string
	// changed says a figure of meta moved (tiers served) since meta was
	// last rebroadcast.
	changed bool
	// changes counts the member changes heard, so that the watchers of
	// the view (dashboard, webhooks) skip the seconds when none came.
	changes atomic.Uint64
}

// Changes counts the member changes this node has heard, and the moves of
// the sync progress it knows (api.ChangeCounter).
func (g *gossip) Changes() uint64 { return g.changes.Load() + g.n.progress.Changes() }

// View is the node's view of the mesh (api.TopologyViewer), with the sync
// progress this node knows: its own, and what its downstreams sent.
func (g *gossip) View() topology.View {
	v := g.topo.View()
	own := g.n.ownProgress()
	v.SetProgress(func(name string) (topology.Progress, bool) {
		p, ok := own, name == v.Self
		if !ok {
			p, ok = g.n.progress.Get(name)
		}
		return topology.Progress{Head: p.Head, Synced: p.Synced, Lag: p.Lag, AsOf: p.AsOf}, ok
	})
	return v
}

// startGossip joins the mesh: the one pool of the gossip section, or each
// of gossip.pools.
func (n *Node) startGossip(ctx context.Context) error {
	g := &gossip{n: n}
	if n.puller != nil {
		g.mesh = federation.NewMesh(membership{g}, n.cfg.Node.Name, n.cfg.Node.Datacenter, g.poke)
	}
	if err := g.refresh(ctx); err != nil {
		return fmt.Errorf("node: gossip: %w", err)
	}
	// The meta gossip starts with carries these figures.
	g.changed = false
	tc := topology.Config{
		Name:     n.cfg.Node.Name,
		Meta:     g.meta,
		OnChange: g.onChange,
		Log:      n.log,
	}
	pools, err := n.cfg.gossipPools()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if len(pools) > 0 {
		tc.Pools = pools
	} else {
		keys, err := readKeys("gossip", n.cfg.Gossip.KeyringFile, n.cfg.Gossip.Keys)
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
		bind, _ := splitHostPort(n.cfg.Gossip.Bind)
		tc.BindAddr, tc.BindPort, tc.Join, tc.Keys = bind.host, bind.port, n.cfg.Gossip.Join, keys
		tc.Profile, tc.Compression = n.cfg.Gossip.Profile, n.cfg.Gossip.Compression
		tc.ProbeInterval, tc.ProbeTimeout = n.cfg.Gossip.ProbeInterval, n.cfg.Gossip.ProbeTimeout
		tc.GossipInterval, tc.PushPullInterval = n.cfg.Gossip.GossipInterval, n.cfg.Gossip.PushPullInterval
		tc.SuspicionMult = n.cfg.Gossip.SuspicionMult
		if n.cfg.Gossip.Advertise != "" {
			adv, _ := splitHostPort(n.cfg.Gossip.Advertise)
			tc.AdvertiseAddr, tc.AdvertisePort = adv.host, adv.port
		}
	}
	g.topo, err = topology.Start(ctx, tc)
	n.resolver.topo.Store(g.topo)
	switch {
	case errors.Is(err, topology.ErrNotJoined):
		// No member of some pool answered yet: the node serves on its own
		// and gossip keeps trying to join in the background.
		n.log.Warn("gossip_not_joined", "error", err.Error())
	case err != nil:
		if g.topo != nil {
			g.topo.Close()
		}
		return fmt.Errorf("node: gossip: %w", err)
	}
	n.gossip = g
	for _, p := range g.topo.Stats().Pools {
		n.log.Info("gossip_started", "pool", p.Name, "addr", p.Addr)
	}
	return nil
}

// apiURL is the URL this node tells others to use.
func (n *Node) apiURL() string {
	if n.cfg.Node.AdvertiseURL != "" {
		return n.cfg.Node.AdvertiseURL
	}
	return n.URL()
}

// meta is called by memberlist whenever it needs the local metadata; it
// only reads cached values.
func (g *gossip) meta() topology.Meta {
	n := g.n
	m := topology.Meta{
		Name: n.cfg.Node.Name, Role: n.cfg.Node.Role, DC: n.cfg.Node.Datacenter,
		API: n.apiURL(), Peer: n.peerURL(), Version: Version, Key: n.nodeKeyID(),
	}
	g.mu.Lock()
	m.Tiers = g.served()
	g.mu.Unlock()
	if n.puller != nil {
		// Meta names upstreams by API URL, as members are known, also
		// where a link reaches its upstream's peer listener.
		first, byTier := n.puller.Advertised()
		m.Upstream = g.apiOf(first)
		for tier, u := range byTier {
			byTier[tier] = g.apiOf(u)
		}
		m.Upstreams = byTier
	}
	return m
}

// apiOf is the API URL of a member known by its peer URL, or url itself.
func (g *gossip) apiOf(url string) string {
	if api := g.n.resolver.API(url); api != "" {
		return api
	}
	return url
}

// upstreamsMoved reports whether the upstreams meta would advertise
// changed since it was last asked: a link that reaches its upstream's
// peer listener is advertised by the upstream's API URL, which gossip
// teaches after the link started.
func (g *gossip) upstreamsMoved() bool {
	if g.n.puller == nil {
		return false
	}
	first, byTier := g.n.puller.Advertised()
	now := make(map[string]string, len(byTier)+1)
	now[""] = g.apiOf(first)
	for tier, u := range byTier {
		now[tier] = g.apiOf(u)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	moved := !maps.Equal(now, g.ups)
	g.ups = now
	return moved
}

// served lists the tiers machines can use this node for: every tier on
// the hub, the linked tiers on a relay or edge. Call with g.mu held.
func (g *gossip) served() []string {
	if g.n.cfg.Node.Role == RoleHub {
		return append([]string(nil), g.tiers...)
	}
	out := make([]string, 0, len(g.n.cfg.Sync.Links))
	for _, l := range g.n.cfg.Sync.Links {
		out = append(out, l.Tier)
	}
	return out
}

// refresh reads the tiers meta advertises from the store.
func (g *gossip) refresh(ctx context.Context) error {
	ts, err := g.n.store.Tiers(ctx)
	if err != nil {
		return fmt.Errorf("read tiers: %w", err)
	}
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Name
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.changed = g.changed || !slices.Equal(names, g.tiers)
	g.tiers = names
	return nil
}

// onChange hands another member's change to the sync policy.
func (g *gossip) onChange(m topology.Member) {
	g.changes.Add(1)
	if w := g.n.memberWatch; w != nil {
		w(m)
	}
	if g.mesh != nil {
		g.mesh.Observe(asFederationMember(m))
	}
}

// poke starts a sync round on the links that use the member at apiURL,
// also where a link names that member's peer listener instead.
func (g *gossip) poke(apiURL string) {
	g.n.puller.Poke(apiURL)
	if p := g.n.resolver.URL(apiURL); p != "" {
		g.n.puller.Poke(p)
	}
}

// membership is the topology as federation's sync policy reads it.
type membership struct{ g *gossip }

func (m membership) Members() []federation.Member {
	if m.g.topo == nil { // gossip still starting
		return nil
	}
	ms := m.g.topo.Members()
	out := make([]federation.Member, len(ms))
	for i, tm := range ms {
		out[i] = asFederationMember(tm)
	}
	return out
}

func asFederationMember(m topology.Member) federation.Member {
	return federation.Member{Name: m.Name, DC: m.DC, API: m.API, Upstreams: m.UpstreamsByTier(), Tiers: m.Tiers,
		Alive: m.State == topology.Alive, Self: m.Self}
}

// Bounds of watch's work. The store is read again only when it was
// written (its change generation moved) and at least every storeRecheck;
// the members' peer listeners are looked up again only when gossip reported
// a member change and at least every metaRecheck (answers and misses
// expire: see peerResolver). Before, both ran every second on every node:
// two store reads a second per node, and a walk of every member, n² a
// second across the mesh.
const (
	// metaRecheck bounds how long a change no notification reported (a
	// member whose peer lookup failed, a write to a store other nodes
	// share unheard) can go unseen.
	metaRecheck = 10 * time.Second
	// metaGap spaces the refreshes a burst of commits (a sync round
	// commits batch by batch) would wake; it matches topology's own
	// spacing of meta broadcasts.
	metaGap = 50 * time.Millisecond
)

// watch keeps the advertised tiers and upstreams current and rebroadcasts
// meta when they move, until ctx ends. It wakes on the node's change
// notification (a commit, which may add a tier) and once a second for the
// puller's upstreams, which move on a failover; that second costs no
// store read unless the store was written.
func (g *gossip) watch(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var gen uint64
	var storeAt time.Time
	for first := true; ; first = false {
		wake := g.n.changes.Wait()
		now := time.Now()
		// Generation is read before the store, so that a write committed
		// during the read is read again next time.
		if k := g.n.changes.Generation(); first || k != gen || now.Sub(storeAt) >= g.n.storeRecheck {
			gen, storeAt = k, now
			if err := g.refresh(ctx); err != nil {
				storeAt = time.Time{} // read again at the next tick
				if ctx.Err() == nil {
					g.n.log.Warn("gossip_meta_refresh_failed", "error", err.Error())
				}
			}
		}
		moved := g.upstreamsMoved()
		g.mu.Lock()
		changed := g.changed || moved
		g.changed = false
		g.mu.Unlock()
		if changed {
			g.topo.UpdateMeta()
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick.C:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(metaGap):
		}
	}
}

// Nodes lists the members machines of tier may use: alive, serving the
// tier, with an API URL. It is the api's NodeLister.
func (g *gossip) Nodes(tier string) []api.NodeInfo {
	var out []api.NodeInfo
	for _, m := range g.topo.Members() {
		if m.State != topology.Alive || m.API == "" || !slices.Contains(m.Tiers, tier) {
			continue
		}
		out = append(out, api.NodeInfo{Name: m.Name, DC: m.DC, Role: m.Role, API: m.API, KeyID: m.Key})
	}
	return out
}

// nodeLister is the gossip as the API sees it; a nil interface with gossip
// off.
func (n *Node) nodeLister() api.NodeLister {
	if n.gossip == nil {
		return nil
	}
	return n.gossip
}

// peers is the sync loop's Peers hook: federation's PeerGroup, reached at
// each member's peer listener over mutual TLS. A member whose peer
// listener is not known takes no part.
func (g *gossip) peers(tier, upstream string) (designated bool, peers []replicate.Source) {
	if g.n.peerLn == nil || g.mesh == nil {
		// This node does not serve peers: it takes no part in the scheme.
		return true, nil
	}
	designated, urls := g.mesh.PeerGroup(tier, g.apiOf(upstream))
	for _, u := range urls {
		peerURL := g.n.resolver.URL(u)
		if peerURL == "" {
			continue
		}
		peers = append(peers, replicate.Source{BaseURL: peerURL, Path: replicate.PeerPath})
	}
	return designated, peers
}
