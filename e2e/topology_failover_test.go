package e2e_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/patchmesh/patchmesh/internal/meshtest"
)

// A region killed with SIGKILL is declared dead by every other node; its
// edges fail over to the other region and keep receiving what the hub
// publishes. Restarted, it rejoins (alive everywhere), catches up, and its
// edges move back to it.
func TestTopologyRegionKilledEdgesFailOverAndReturn(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	m.Gossip = gossipProfile
	h, rs := regionsMesh(t, m, 2, "a", "b")
	all := meshNodes(h, rs)
	viewEvery(t, all, converge, "every member alive", allAlive(all))

	a, b := rs[0], rs[1]
	for _, e := range a.edges {
		if got := e.Link(t, "edge").Upstream; got != a.relay.LinkURL() {
			t.Fatalf("%s: before the kill: want upstream %s (its region), got %s", e.Name, a.relay.LinkURL(), got)
		}
	}
	machines := map[*meshtest.Node]string{}
	for _, e := range a.edges {
		machines[e] = e.Register(t, e.AuthToken(t, "edge", "fleet"), "machine-"+e.Name+"-00000001", kernel, arch)
	}

	a.relay.Kill(t)
	others := without(all, a.relay)
	viewEvery(t, others, detectWithin, "the killed region dead", deadIn(a.relay, others))

	p := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "2.1"})
	onEvery(t, a.edges, func(e *meshtest.Node) error {
		if l := e.Link(t, "edge"); l.Upstream != b.relay.LinkURL() {
			return fmt.Errorf("link upstream %s, want the other region %s", l.Upstream, b.relay.LinkURL())
		}
		if err := wantListed(t, e, p.Digest, []string{"edge"}); err != nil {
			return err
		}
		got, err := e.FetchBlob(context.Background(), p.Digest, meshtest.Bearer(machines[e]))
		if err != nil {
			return err
		}
		if got.Status != 200 || got.Digest != p.Digest {
			return fmt.Errorf("blob for its machine: %+v", got)
		}
		return nil
	}, "the patch published after the kill, through the other region")

	a.relay.Start(t)
	viewEvery(t, all, converge, "the region alive again everywhere", allAlive(all))
	onEvery(t, []*meshtest.Node{a.relay}, func(n *meshtest.Node) error {
		return wantListed(t, n, p.Digest, []string{"edge"})
	}, "the restarted region caught up")
	// Its edges come back once the region is alive and their demotion of
	// it (after the failed rounds that preceded its death) has run out.
	within := demoted + converge
	for _, e := range a.edges {
		meshtest.WaitFor(t, within, e.Name+" back on its own region", func() error {
			if l := e.Link(t, "edge"); l.Upstream != a.relay.LinkURL() {
				return fmt.Errorf("link upstream %s, want %s", l.Upstream, a.relay.LinkURL())
			}
			return nil
		})
	}
	// And it syncs through it: one more patch arrives.
	q := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "2.2"})
	onEvery(t, a.edges, func(e *meshtest.Node) error {
		if l := e.Link(t, "edge"); l.Upstream != a.relay.LinkURL() {
			return fmt.Errorf("link upstream %s, want %s", l.Upstream, a.relay.LinkURL())
		}
		return wantListed(t, e, q.Digest, []string{"edge"})
	}, "a later patch through the region it is back on")
}
