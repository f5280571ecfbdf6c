package topology

import (
	"slices"
	"strings"
	"time"
)

// View is the mesh as this node sees it, in the shape GET /v1/topology
// answers: every member and, for each member that pulls from an upstream,
// the link from that upstream to it. It is a snapshot; nothing in it is
// shared with the Topology.
type View struct {
	// Self is this node's name.
	Self string `json:"self"`
	// Pools are this node's gossip pools, in the order of its config;
	// Nodes merges what all of them know.
	Pools []string `json:"pools"`
	// Nodes is every known member, dead and left ones included for
	// Config.Retain, sorted by name.
	Nodes []ViewNode `json:"nodes"`
	// Links go from upstream to downstream, one per member and distinct
	// upstream URL it advertises, sorted by downstream name, then URL.
	Links []ViewLink `json:"links"`
}

// ViewNode is one member: its meta, its health and where it gossips.
type ViewNode struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	DC       string `json:"dc"`
	URL      string `json:"url"`                // Meta.API
	PeerURL  string `json:"peer_url,omitempty"` // Meta.Peer
	Upstream string `json:"upstream"`           // API URL of the first link's upstream in use; "" on the hub
	// Upstreams is every link's upstream in use, by local tier.
	Upstreams map[string]string `json:"upstreams"`
	State     string            `json:"state"` // Alive, Dead, Left
	Version   string            `json:"version"`
	Since     time.Time         `json:"since"` // when State last changed, as this node saw it
	// Head, Synced and Lag are the member's sync progress as of
	// ProgressAsOf, by the member's clock, where this node knows it (see
	// View.SetProgress); ProgressAsOf is absent, and they are 0, where it
	// does not.
	Head         int64     `json:"head"`
	Synced       int64     `json:"synced"`
	Lag          int64     `json:"lag"`
	ProgressAsOf time.Time `json:"progress_as_of,omitzero"`
	Tiers        []string  `json:"tiers"`
	Addr         string    `json:"addr"` // gossip host:port, in the first of Pools
	// Pools are the pools of this node that know the member; a member
	// of none of them is not listed at all.
	Pools []string `json:"pools"`
}

// ViewLink is a downstream pulling from its upstream.
type ViewLink struct {
	// From is the upstream's name, "" when no known member advertises the
	// URL the downstream pulls from (a node outside gossip, or one this
	// node has forgotten).
	From string `json:"from"`
	// To is the downstream's name.
	To string `json:"to"`
	// FromURL is the upstream URL as the downstream advertises it, so that
	// an unknown upstream can still be named.
	FromURL string `json:"from_url"`
	// LagEvents is the downstream's Lag: hub records it has not applied
	// yet, where this node knows its progress.
	LagEvents int64 `json:"lag_events"`
	// Healthy says both ends are alive.
	Healthy bool `json:"healthy"`
}

// View returns the mesh as this node sees it now.
func (t *Topology) View() View {
	v := ViewOf(t.name, t.Members())
	v.Pools = t.PoolNames()
	return v
}

// ViewOf builds the View of members ms as seen by the node named self. It
// is separate from Topology so that a view can be built, and tested,
// without running gossip.
func ViewOf(self string, ms []Member) View {
	ms = slices.Clone(ms)
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })

	// Downstreams name their upstream by API URL, as federation dials it.
	// Several members may advertise one URL (a node back under a new name);
	// the one ByAPI would pick is the upstream.
	byURL := make(map[string]Member, len(ms))
	for _, m := range ms {
		u := strings.TrimSuffix(m.API, "/")
		if u == "" {
			continue
		}
		if best, ok := byURL[u]; !ok || betterUpstream(m, best) {
			byURL[u] = m
		}
	}

	v := View{Self: self, Pools: []string{}, Nodes: make([]ViewNode, 0, len(ms)), Links: []ViewLink{}}
	for _, m := range ms {
		v.Nodes = append(v.Nodes, ViewNode{
			Name: m.Name, Role: m.Role, DC: m.DC, URL: m.API, PeerURL: m.Peer, Upstream: m.Upstream,
			Upstreams: m.UpstreamsByTier(),
			State:     m.State, Version: m.Version, Since: m.Since,
			Tiers: nonNil(slices.Clone(m.Tiers)), Addr: m.Addr, Pools: nonNil(slices.Clone(m.Pools)),
		})
		for _, u := range upstreamURLs(m.Meta) {
			l := ViewLink{To: m.Name, FromURL: u}
			if up, ok := byURL[strings.TrimSuffix(u, "/")]; ok {
				l.From = up.Name
				l.Healthy = up.State == Alive && m.State == Alive
			}
			v.Links = append(v.Links, l)
		}
	}
	return v
}

// Progress is a member's sync position as of a time, as the node serving a
// view knows it: its own, its downstreams' from their feed requests, deeper
// ones from fleet reports.
type Progress struct {
	Head, Synced, Lag int64
	AsOf              time.Time
}

// SetProgress fills each node's progress, and each link's lag, from known,
// which says what this node knows of a member by name.
func (v *View) SetProgress(known func(name string) (Progress, bool)) {
	lag := make(map[string]int64, len(v.Nodes))
	for i := range v.Nodes {
		n := &v.Nodes[i]
		p, ok := known(n.Name)
		if !ok {
			continue
		}
		n.Head, n.Synced, n.Lag, n.ProgressAsOf = p.Head, p.Synced, p.Lag, p.AsOf
		lag[n.Name] = p.Lag
	}
	for i := range v.Links {
		v.Links[i].LagEvents = lag[v.Links[i].To]
	}
}

// upstreamURLs is every distinct upstream m advertises, sorted.
func upstreamURLs(m Meta) []string {
	var out []string
	if m.Upstream != "" {
		out = append(out, m.Upstream)
	}
	for _, u := range m.Upstreams {
		if u != "" && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out
}

// betterUpstream says whether m should stand for its URL rather than best:
// the healthier, then the more recently changed, as in ByAPI.
func betterUpstream(m, best Member) bool {
	if r, b := healthRank(m.State), healthRank(best.State); r != b {
		return r < b
	}
	return m.Since.After(best.Since)
}

// nonNil keeps "tiers": [] rather than null on the wire.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
