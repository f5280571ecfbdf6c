package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
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
	if g.Compression != "" && g.Compression != "on" && g.Compression != "off" {
		bad("gossip.compression", "must be on or off (empty: the profile's), got %q", g.Compression)
	}
	if g.Bind == "" {
		if len(g.Join) > 0 {
			bad("gossip.join", "needs gossip.bind: a node joins the mesh only with gossip on")
		}
		return errs
	}
	if _, err := splitHostPort(g.Bind); err != nil {
		bad("gossip.bind", "%v", err)
	}
	if g.Advertise != "" {
		if _, err := splitHostPort(g.Advertise); err != nil {
			bad("gossip.advertise", "%v", err)
		}
	}
	for i, j := range g.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			bad(fmt.Sprintf("gossip.join[%d]", i), "must be host:port, got %q", j)
		}
	}
	// Key material is checked without echoing it.
	if len(g.Keys) == 0 && g.KeyringFile == "" {
		bad("gossip.keys", "gossip is always encrypted: set keys or keyring_file (make a key with patchmesh gossip-key)")
	}
	for i, k := range g.Keys {
		if _, err := topology.ParseKeys(k); err != nil {
			bad(fmt.Sprintf("gossip.keys[%d]", i), "not a base64 key of 16, 24 or 32 bytes")
		}
	}
	for name, d := range map[string]time.Duration{
		"gossip.probe_interval": g.ProbeInterval, "gossip.probe_timeout": g.ProbeTimeout,
		"gossip.gossip_interval": g.GossipInterval, "gossip.push_pull_interval": g.PushPullInterval,
	} {
		if d < 0 {
			bad(name, "must not be negative, got %v", d)
		}
	}
	if g.SuspicionMult < 0 {
		bad("gossip.suspicion_mult", "must not be negative, got %d", g.SuspicionMult)
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

// gossipKeys reads the keyring: the file's keys first, then the config's.
func (c Config) gossipKeys() ([][]byte, error) {
	var keys [][]byte
	if c.Gossip.KeyringFile != "" {
		b, err := os.ReadFile(c.Gossip.KeyringFile)
		if err != nil {
			return nil, fmt.Errorf("gossip.keyring_file: %w", err)
		}
		k, err := topology.ParseKeys(string(b))
		if err != nil {
			return nil, fmt.Errorf("gossip.keyring_file %s: %w", c.Gossip.KeyringFile, err)
		}
		keys = append(keys, k...)
	}
	for _, s := range c.Gossip.Keys {
		k, err := topology.ParseKeys(s)
		if err != nil {
			return nil, fmt.Errorf("gossip.keys: %w", err)
		}
		keys = append(keys, k...)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("gossip: no key in keys or keyring_file")
	}
	return keys, nil
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

	mu     sync.Mutex
	tiers  []string // the store's tiers, for a hub's meta
	head   int64
	synced int64
	lag    int64
	// ups is what upstreamsMoved saw last.
	ups map[string]string
	// changed says the figures moved since meta was last rebroadcast.
	changed bool
	// changes counts the member changes heard, so that the watchers of
	// the view (dashboard, webhooks) skip the seconds when none came.
	changes atomic.Uint64
}

// Changes counts the member changes this node has heard (api.ChangeCounter).
func (g *gossip) Changes() uint64 { return g.changes.Load() }

// View is the node's view of the mesh (api.TopologyViewer).
func (g *gossip) View() topology.View { return g.topo.View() }

// startGossip joins the mesh. Called from New, after the puller exists.
func (n *Node) startGossip(ctx context.Context) error {
	keys, err := n.cfg.gossipKeys()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	bind, _ := splitHostPort(n.cfg.Gossip.Bind)
	g := &gossip{n: n}
	if n.puller != nil {
		g.mesh = federation.NewMesh(membership{g}, n.cfg.Node.Name, n.cfg.Node.Datacenter, g.poke)
	}
	if err := g.refresh(ctx); err != nil {
		return fmt.Errorf("node: gossip: %w", err)
	}
	tc := topology.Config{
		Name:             n.cfg.Node.Name,
		BindAddr:         bind.host,
		BindPort:         bind.port,
		Join:             n.cfg.Gossip.Join,
		Profile:          n.cfg.Gossip.Profile,
		ProbeInterval:    n.cfg.Gossip.ProbeInterval,
		ProbeTimeout:     n.cfg.Gossip.ProbeTimeout,
		GossipInterval:   n.cfg.Gossip.GossipInterval,
		PushPullInterval: n.cfg.Gossip.PushPullInterval,
		SuspicionMult:    n.cfg.Gossip.SuspicionMult,
		Compression:      n.cfg.Gossip.Compression,
		Keys:             keys,
		Meta:             g.meta,
		OnChange:         g.onChange,
		Log:              n.log,
	}
	if n.cfg.Gossip.Advertise != "" {
		adv, _ := splitHostPort(n.cfg.Gossip.Advertise)
		tc.AdvertiseAddr, tc.AdvertisePort = adv.host, adv.port
	}
	g.topo, err = topology.Start(ctx, tc)
	n.resolver.topo.Store(g.topo)
	switch {
	case errors.Is(err, topology.ErrNotJoined):
		// No member answered yet: the node serves on its own and gossip
		// keeps trying to join in the background.
		n.log.Warn("gossip_not_joined", "join", n.cfg.Gossip.Join, "error", err.Error())
	case err != nil:
		if g.topo != nil {
			g.topo.Close()
		}
		return fmt.Errorf("node: gossip: %w", err)
	}
	n.gossip = g
	n.log.Info("gossip_started", "addr", g.topo.LocalAddr(), "profile", n.cfg.Gossip.Profile,
		"join", n.cfg.Gossip.Join, "keys", len(keys))
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
	m.Head, m.Synced, m.Lag = g.head, g.synced, g.lag
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

// refresh reads the figures meta advertises from the store and the
// puller, and reports whether any moved.
func (g *gossip) refresh(ctx context.Context) error {
	if err := g.refreshStore(ctx); err != nil {
		return err
	}
	g.refreshSync()
	return nil
}

// refreshStore reads the head and the tiers from the store.
func (g *gossip) refreshStore(ctx context.Context) error {
	h, err := g.n.store.Head(ctx)
	if err != nil {
		return fmt.Errorf("read head: %w", err)
	}
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
	g.changed = g.changed || h != g.head || !slices.Equal(names, g.tiers)
	g.head, g.tiers = h, names
	return nil
}

// refreshSync reads the synced and lag figures from the puller's memory.
func (g *gossip) refreshSync() {
	var synced, lag int64
	if g.n.puller != nil {
		for _, s := range g.n.puller.Status() {
			synced += s.HubSeq
			lag += s.LagEvents
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.changed = g.changed || synced != g.synced || lag != g.lag
	g.synced, g.lag = synced, lag
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
		Head: m.Head, Alive: m.State == topology.Alive, Self: m.Self}
}

// Bounds of watch's work. The store is read again only when it was
// written (its change generation moved) and at least every metaRecheck;
// the members' peer listeners are looked up again only when gossip reported
// a member change and at least every metaRecheck (answers and misses
// expire: see peerResolver). Before, both ran every second on every node:
// two store reads a second per node, and a walk of every member, n² a
// second across the mesh.
const (
	// metaRecheck bounds how long a change no notification reported (a
	// member whose peer lookup failed, a store read that failed) can go
	// unseen.
	metaRecheck = 10 * time.Second
	// metaGap spaces the refreshes a burst of commits (a sync round
	// commits batch by batch) would wake; it matches topology's own
	// spacing of meta broadcasts.
	metaGap = 50 * time.Millisecond
)

// watch keeps the advertised head, synced and lag figures current and
// rebroadcasts them when they move, until ctx ends. It wakes on the
// node's change notification (a commit that grew the log, which is also
// how the puller reports progress) and once a second for the puller's
// lag, which moves with upstream heartbeats; that second costs no store
// read unless the store was written.
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
		if k := g.n.changes.Generation(); first || k != gen || now.Sub(storeAt) >= metaRecheck {
			gen, storeAt = k, now
			if err := g.refreshStore(ctx); err != nil && ctx.Err() == nil {
				g.n.log.Warn("gossip_meta_refresh_failed", "error", err.Error())
			}
		}
		g.refreshSync()
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
