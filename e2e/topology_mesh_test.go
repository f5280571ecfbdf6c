package e2e_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// Gossip timings of the tests, from memberlist's local profile, which
// they run with: each member probes one other every second, and a silent
// member is suspect for 3 s (SuspicionMult 3 × 1 s) with enough peers
// confirming, up to 6 × that with none. Add a probe round and the spread
// of the news, and every member has declared a killed one dead well
// within detectWithin.
const (
	gossipProfile = "local"
	detectWithin  = 6*3*time.Second + 2*time.Second + 5*time.Second
	// demoted is how long a link avoids an upstream after three failed
	// rounds (federation): the wait before an edge moves back.
	demoted = 30 * time.Second
)

// region is a relay of the hub with the edges that prefer it.
type region struct {
	relay *meshtest.Node
	edges []*meshtest.Node
}

// regionsMesh starts a gossiping hub, one relay per name in regions
// (datacentre dc-NAME) and perRegion edges under each. Every edge lists
// its own region first and the others after it, so that it fails over
// between regions and comes back to its own.
func regionsMesh(t *testing.T, m *meshtest.Mesh, perRegion int, regions ...string) (*meshtest.Node, []*region) {
	t.Helper()
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, DC: "dc-hub"})
	var rs []*region
	for _, name := range regions {
		spec := pullSpec(t, "region-"+name, node.RoleRelay, h.URL, h, "edge")
		spec.DC = "dc-" + name
		rs = append(rs, &region{relay: m.Start(spec)})
	}
	for i, r := range rs {
		for j := 1; j <= perRegion; j++ {
			name := fmt.Sprintf("edge-%s%d", regions[i], j)
			link := meshtest.Link{Tier: "edge"}
			for k := range rs {
				up := rs[(i+k)%len(rs)].relay
				link.Upstreams = append(link.Upstreams, meshtest.Upstream{URL: up.URL, Token: up.SyncToken(t, "edge", name)})
			}
			r.edges = append(r.edges, m.Start(meshtest.Spec{
				Name: name, Role: node.RoleEdge, DC: "dc-" + regions[i], Links: []meshtest.Link{link},
			}))
		}
	}
	return h, rs
}

// meshNodes lists the hub, every relay and every edge.
func meshNodes(h *meshtest.Node, rs []*region) []*meshtest.Node {
	out := []*meshtest.Node{h}
	for _, r := range rs {
		out = append(out, r.relay)
	}
	for _, r := range rs {
		out = append(out, r.edges...)
	}
	return out
}

// without is nodes minus drop.
func without(nodes []*meshtest.Node, drop ...*meshtest.Node) []*meshtest.Node {
	var out []*meshtest.Node
	for _, n := range nodes {
		keep := true
		for _, d := range drop {
			keep = keep && n != d
		}
		if keep {
			out = append(out, n)
		}
	}
	return out
}

// viewEvery waits, for every node at once, until its gossip view passes
// check, for at most within.
func viewEvery(t *testing.T, nodes []*meshtest.Node, within time.Duration, what string, check func(meshtest.Gossip) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Go(func() {
			deadline := time.Now().Add(within)
			for {
				g, err := n.GossipView(context.Background())
				if err == nil {
					err = check(g)
				}
				errs[i] = err
				if err == nil || time.Now().After(deadline) {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: want %s within %v; last: %v", nodes[i].Name, what, within, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// allAlive wants exactly k members, all alive.
func allAlive(k int) func(meshtest.Gossip) error {
	return func(g meshtest.Gossip) error {
		if g.Members["alive"] != k || g.Total() != k {
			return fmt.Errorf("members %v, want %d alive and nothing else", g.Members, k)
		}
		return nil
	}
}
