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

// viewEvery waits, for every node at once, until its view of the mesh
// (GET /v1/topology) passes check, for at most within; it reads each
// node's view every 50 ms.
func viewEvery(t *testing.T, nodes []*meshtest.Node, within time.Duration, what string, check func(meshtest.Topology) error) {
	t.Helper()
	for _, n := range nodes {
		n.Admin(t) // log in here: a goroutine must not fail the test
	}
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Go(func() {
			deadline := time.Now().Add(within)
			for {
				v, err := n.Topology(context.Background())
				if err == nil {
					err = check(v)
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

// allAlive wants the view to hold exactly nodes, every one alive.
func allAlive(nodes []*meshtest.Node) func(meshtest.Topology) error {
	return func(v meshtest.Topology) error {
		if len(v.Nodes) != len(nodes) {
			return fmt.Errorf("view of %d members %+v, want %d", len(v.Nodes), v.Nodes, len(nodes))
		}
		for _, n := range nodes {
			if st := v.State(n.Name); st != "alive" {
				return fmt.Errorf("%s is %q, want alive", n.Name, st)
			}
		}
		return nil
	}
}

// deadIn wants the view to give dead as dead and others as alive.
func deadIn(dead *meshtest.Node, others []*meshtest.Node) func(meshtest.Topology) error {
	return func(v meshtest.Topology) error {
		if st := v.State(dead.Name); st != "dead" {
			return fmt.Errorf("%s is %q, want dead", dead.Name, st)
		}
		for _, n := range others {
			if st := v.State(n.Name); st != "alive" {
				return fmt.Errorf("%s is %q, want alive", n.Name, st)
			}
		}
		return nil
	}
}

// A hub restarted as production runs it, with no gossip join list (it
// started the pool), is found again by the relay that lists it, though
// the relay holds it left: memberlist alone never contacts a member that
// left. The edge under the relay hears of it through the relay.
func TestTopologyRestartedHubIsFoundAgain(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	m.Gossip = gossipProfile
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, FixedJoin: true})
	r := m.Start(pullSpec(t, "region", node.RoleRelay, h.URL, h, "edge"))
	e := m.Start(pullSpec(t, "edge", node.RoleEdge, r.URL, r, "edge"))
	all := []*meshtest.Node{h, r, e}
	viewEvery(t, all, converge, "every member alive", allAlive(all))

	h.Stop(t) // SIGTERM: the hub leaves
	viewEvery(t, all[1:], detectWithin, "the hub left", func(v meshtest.Topology) error {
		if st := v.State(h.Name); st != "left" {
			return fmt.Errorf("%s is %q, want left", h.Name, st)
		}
		return nil
	})
	h.Start(t)
	if len(h.Config.Gossip.Join) != 0 {
		t.Fatalf("the restarted hub joins %v, want nobody", h.Config.Gossip.Join)
	}
	started := time.Now()
	viewEvery(t, all, converge, "every member alive after the hub's restart", allAlive(all))
	t.Logf("every member saw every other alive %v after the hub started again", time.Since(started).Round(100*time.Millisecond))
}
