package e2e_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/patchmesh/patchmesh/internal/meshtest"
)

// Sync progress is not gossiped; it travels up the links. After a patch,
// a relay's view shows its edges where they stand (their feed requests),
// and the hub's shows the relay (its feed requests) and the edges (the
// relay's fleet reports), each at the head the node itself gives.
func TestProgressTravelsUpTheLinks(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	m.Gossip = gossipProfile
	h, rs := regionsMesh(t, m, 2, "a")
	relay, edges := rs[0].relay, rs[0].edges
	all := meshNodes(h, rs)
	viewEvery(t, all, converge, "every node alive", allAlive(all))

	p := h.Upload(t, randomBytes(t, 16<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "3.1"})
	onEvery(t, edges, func(e *meshtest.Node) error { return wantListed(t, e, p.Digest, []string{"edge"}) },
		"the patch at every edge")

	// What each node says of itself, once it has the patch.
	own := map[string]meshtest.Member{}
	for _, n := range all {
		v, err := n.Topology(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		self, ok := v.Member(n.Name)
		if !ok || self.ProgressAsOf.IsZero() || self.Head == 0 {
			t.Fatalf("%s: its own view has no progress of its own: %+v", n.Name, self)
		}
		own[n.Name] = self
	}
	sameAs := func(below ...*meshtest.Node) func(meshtest.Topology) error {
		return func(v meshtest.Topology) error {
			for _, n := range below {
				got, ok := v.Member(n.Name)
				switch {
				case !ok:
					return fmt.Errorf("%s not in the view", n.Name)
				case got.ProgressAsOf.IsZero():
					return fmt.Errorf("%s: no progress known", n.Name)
				case got.Head < own[n.Name].Head || got.Synced < own[n.Name].Synced || got.Lag != 0:
					return fmt.Errorf("%s: head %d, synced %d, lag %d; it says head %d, synced %d, lag 0",
						n.Name, got.Head, got.Synced, got.Lag, own[n.Name].Head, own[n.Name].Synced)
				}
			}
			return nil
		}
	}
	viewEvery(t, []*meshtest.Node{relay}, converge, "the edges' progress at their relay", sameAs(edges...))
	viewEvery(t, []*meshtest.Node{h}, converge, "the relay's and the edges' progress at the hub", sameAs(append([]*meshtest.Node{relay}, edges...)...))

	// An edge knows nothing of its siblings' progress: nothing comes down
	// the links, and gossip carries none.
	v, err := edges[0].Topology(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sib, ok := v.Member(edges[1].Name); !ok || !sib.ProgressAsOf.IsZero() || sib.Head != 0 {
		t.Errorf("%s's view of its sibling %s: %+v, want it listed without progress", edges[0].Name, edges[1].Name, sib)
	}
}
