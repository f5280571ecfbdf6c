package e2e_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// A mesh in two gossip pools, as docs/scale.md lays a large one out: the
// hub and the region's top relay in the backbone pool, the top relay, a
// second relay and an edge in the region's pool, each pool with its own
// key. Each node's view holds its own pools' members only, the top relay's
// merges both and names each member's pools; patches flow through the top
// relay; when it is killed, its pools see it dead and the edge fails over
// to the region's other relay, which its region's gossip knows alive.
func TestTopologyPoolsMergeAndTheRegionFailsOver(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	m.Gossip = gossipProfile
	const backbone, region = "backbone", "region-eu"
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, DC: "dc-hub", Pools: []string{backbone}})
	topSpec := pullSpec(t, "relay-top", node.RoleRelay, h.URL, h, "edge")
	topSpec.DC, topSpec.Pools = "dc-eu", []string{backbone, region}
	top := m.Start(topSpec)
	// The region's second relay pulls from the hub too, but gossips only
	// in the region: links work without gossip.
	otherSpec := pullSpec(t, "relay-other", node.RoleRelay, h.URL, h, "edge")
	otherSpec.DC, otherSpec.Pools = "dc-eu-2", []string{region}
	other := m.Start(otherSpec)
	edge := m.Start(meshtest.Spec{Name: "edge", Role: node.RoleEdge, DC: "dc-eu-3", Pools: []string{region},
		Links: []meshtest.Link{{Tier: "edge", Upstreams: []meshtest.Upstream{
			{URL: top.URL, Token: top.SyncToken(t, "edge", "edge")},
			{URL: other.URL, Token: other.SyncToken(t, "edge", "edge")},
		}}}})

	// Each view: exactly its pools' members, alive, each named with the
	// pools of the viewer that know it.
	views := []struct {
		n       *meshtest.Node
		pools   []string
		members map[string][]string
	}{
		{h, []string{backbone}, map[string][]string{"hub": {backbone}, "relay-top": {backbone}}},
		{top, []string{backbone, region}, map[string][]string{"hub": {backbone}, "relay-top": {backbone, region},
			"relay-other": {region}, "edge": {region}}},
		{other, []string{region}, map[string][]string{"relay-top": {region}, "relay-other": {region}, "edge": {region}}},
		{edge, []string{region}, map[string][]string{"relay-top": {region}, "relay-other": {region}, "edge": {region}}},
	}
	for _, want := range views {
		viewEvery(t, []*meshtest.Node{want.n}, converge, "its pools' members alive", func(v meshtest.Topology) error {
			if !slices.Equal(v.Pools, want.pools) {
				return fmt.Errorf("view's pools %v, want %v", v.Pools, want.pools)
			}
			if len(v.Nodes) != len(want.members) {
				return fmt.Errorf("view of %d members %+v, want %d", len(v.Nodes), v.Nodes, len(want.members))
			}
			for name, pools := range want.members {
				mb, ok := v.Member(name)
				if !ok || mb.State != "alive" || !slices.Equal(mb.Pools, pools) {
					return fmt.Errorf("%s: %+v (known %v), want alive in pools %v", name, mb, ok, pools)
				}
			}
			return nil
		})
	}

	p := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "3.1"})
	onEvery(t, []*meshtest.Node{top, other, edge}, func(n *meshtest.Node) error {
		return wantListed(t, n, p.Digest, []string{"edge"})
	}, "the patch, through both pools")
	if l := edge.Link(t, "edge"); l.Upstream != top.LinkURL() {
		t.Fatalf("edge before the kill: upstream %s, want the top relay %s", l.Upstream, top.LinkURL())
	}

	top.Kill(t)
	// The hub hears of it in the backbone, the region in its pool.
	viewEvery(t, []*meshtest.Node{h}, detectWithin, "the top relay dead", deadIn(top, []*meshtest.Node{h}))
	viewEvery(t, []*meshtest.Node{other, edge}, detectWithin, "the top relay dead", deadIn(top, []*meshtest.Node{other, edge}))

	q := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "3.2"})
	onEvery(t, []*meshtest.Node{edge}, func(n *meshtest.Node) error {
		if l := n.Link(t, "edge"); l.Upstream != other.LinkURL() {
			return fmt.Errorf("link upstream %s, want the region's other relay %s", l.Upstream, other.LinkURL())
		}
		return wantListed(t, n, q.Digest, []string{"edge"})
	}, "the patch published after the kill, through the region's other relay")
}
