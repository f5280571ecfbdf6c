package e2e_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// An edge whose region goes down keeps retrying with backoff, says so in
// its status, and catches up by itself once the region is back.
func TestUpstreamDownThenBack(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	h := hub(m)
	region := pull(t, m, "region", node.RoleRelay, h, "edge")
	e := pull(t, m, "edge-1", node.RoleEdge, region, "edge")

	first := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.1"})
	meshtest.WaitFor(t, converge, "the first patch at the edge", func() error {
		return wantListed(t, e, first.Digest, []string{"edge"})
	})

	region.Stop(t)
	second := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.2"})

	var failing federation.LinkStatus
	meshtest.WaitFor(t, converge, "the edge's link failing", func() error {
		failing = e.Link(t, "edge")
		if failing.State != federation.LinkFailing || failing.LastError == "" || failing.LastErrorAt.IsZero() {
			return fmt.Errorf("link %+v", failing)
		}
		return nil
	})
	// Retrying, not spinning: over a few seconds the link fails again,
	// but only a backoff's worth of times. Without backoff a refused
	// connection would fail thousands of times.
	before := roundsFailed(e)
	const watch = 3 * time.Second
	time.Sleep(watch)
	failed := roundsFailed(e) - before
	if l := e.Link(t, "edge"); l.State != federation.LinkFailing || !l.LastErrorAt.After(failing.LastErrorAt) {
		t.Fatalf("upstream still down: want the link failing with newer errors than %v, got %+v", failing.LastErrorAt, l)
	}
	if maxRounds := int(watch / e.Config.Sync.RetryMin); failed < 2 || failed > maxRounds {
		t.Fatalf("upstream down for %v: want between 2 and %d failed rounds (backoff from %v), got %d",
			watch, maxRounds, e.Config.Sync.RetryMin, failed)
	}
	if err := wantListed(t, e, second.Digest, []string{"edge"}); err == nil {
		t.Fatal("the edge lists the second patch while its only upstream is down")
	}

	// Back: no trigger, no restart of the edge.
	region.Start(t)
	meshtest.WaitFor(t, converge, "the edge to catch up by itself", func() error {
		if err := wantListed(t, e, second.Digest, []string{"edge"}); err != nil {
			return err
		}
		if l := e.Link(t, "edge"); l.State != federation.LinkSynced {
			return fmt.Errorf("link %+v", l)
		}
		return nil
	})
}

// roundsFailed counts the failed sync rounds in n's log.
func roundsFailed(n *meshtest.Node) int {
	return strings.Count(n.Log(), `"msg":"sync round failed"`)
}
