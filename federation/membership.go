package federation

import (
	"slices"
	"strings"
	"sync"
)

// Membership is the mesh as gossip sees it, as far as the sync policy needs
// it: who is there, where they serve, what they pull from, whether they are
// alive. topology provides it on a running node (node adapts it); tests
// provide a fixed list. It is read on every poll, so an implementation
// should answer from memory.
type Membership interface {
	// Members returns every member known, this node included, sorted by
	// name; dead and departed ones may be listed.
	Members() []Member
}

// Member is one node of the mesh as the sync policy sees it.
type Member struct {
	Name string
	DC   string // data centre
	API  string // base URL machines and downstreams use
	// Upstreams is the upstream each of its links pulls from now, by
	// local tier (Meta of every link, not only the first).
	Upstreams map[string]string
	Tiers     []string // tiers it serves
	Alive     bool     // false once gossip saw it fail or leave
	Self      bool
}

// Mesh is the sync policy that depends on who else is in the mesh: which
// upstream gossip knows to be down (Health, for the failover choice),
// which members of this node's data centre share a blob's trip from
// upstream and who of them fetches it (PeerGroup), and which membership
// changes start a sync round at once (Observe). It decides from a
// Membership alone, so it is tested without running gossip or nodes.
type Mesh struct {
	members Membership
	name    string
	dc      string
	poke    func(url string)

	mu     sync.Mutex
	health map[string]bool // last liveness seen per member API URL
}

// NewMesh returns the policy of the node named name, in data centre dc,
// over members. poke, if set, is told the API URL of a member whose news
// should start a sync round (the Puller's Poke).
func NewMesh(members Membership, name, dc string, poke func(url string)) *Mesh {
	return &Mesh{members: members, name: name, dc: dc, poke: poke,
		health: map[string]bool{}}
}

// Health is the Puller's Health hook: whether gossip knows a member at url
// and, if so, whether it is alive. Several members may advertise one URL
// (a node back under a new name): an alive one wins.
func (p *Mesh) Health(url string) (known, alive bool) {
	url = trimSlash(url)
	if url == "" {
		return false, false
	}
	for _, m := range p.members.Members() {
		if trimSlash(m.API) != url {
			continue
		}
		known = true
		if m.Alive {
			return true, true
		}
	}
	return known, false
}

// PeerGroup says who shares the trip of a tier's blobs from upstream with
// this node: the alive members of its data centre that serve the tier and
// pull it from the same upstream (by the upstream they advertise for that
// tier). They are members at the same level of the cascade, none waiting
// on another for the blob: a member that pulls from this node, or that
// this node pulls from, advertises another upstream and is never in it, so
// no node waits on a node that waits on it. The designated fetcher is the
// lowest name in the group, this node included; every member computes the
// same one from the same gossip, without talking. peers are the API URLs
// of the others, the designated one first when it is not this node.
func (p *Mesh) PeerGroup(tier, upstream string) (designated bool, peers []string) {
	upstream = trimSlash(upstream)
	ms := p.members.Members()
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	designated = true
	for _, m := range ms {
		if m.Self || m.Name == p.name || !m.Alive || m.DC != p.dc || m.API == "" ||
			!slices.Contains(m.Tiers, tier) || trimSlash(m.Upstreams[tier]) != upstream {
			continue
		}
		if m.Name < p.name && len(peers) == 0 {
			designated = false
		}
		peers = append(peers, m.API)
	}
	return designated, peers
}

// Observe takes a member's change from gossip: a change of liveness starts
// a sync round at once on the links that use that member (the Puller
// ignores URLs none of its links use), cutting short a long poll that may
// hang on a partitioned peer. New records reach a link through its long
// poll; gossip no longer carries heads (progress.go).
func (p *Mesh) Observe(m Member) {
	if m.Self || m.Name == p.name || m.API == "" || p.poke == nil {
		return
	}
	p.mu.Lock()
	last, seen := p.health[m.API]
	moved := !seen || last != m.Alive
	p.health[m.API] = m.Alive
	p.mu.Unlock()
	if moved {
		p.poke(m.API)
	}
}

// Advertised is what this downstream tells the mesh it pulls from: the
// upstream every link uses now, by local tier (Upstreams), and the first
// link's alone for readers that know one upstream per node. Peers compare
// the upstream of the tier in question (PeerGroup), so a node with several
// links is grouped right on each.
func (p *Puller) Advertised() (first string, byTier map[string]string) {
	if len(p.links) == 0 {
		return "", nil
	}
	byTier = p.Upstreams()
	return byTier[p.links[0].cfg.Tier], byTier
}

func trimSlash(u string) string { return strings.TrimSuffix(u, "/") }
