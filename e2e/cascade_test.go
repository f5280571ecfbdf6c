package e2e_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// converge is how long a change may take to reach every node of a test
// mesh. Links long-poll, so it normally takes well under a second; the
// bound only stops a broken mesh from hanging the test.
const converge = 60 * time.Second

// A patch uploaded at the hub reaches every edge of a three-level cascade
// byte for byte, and its promotion and withdrawal follow it down.
func TestCascadeThreeLevels(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	h := hub(m)
	tiers := []string{"edge", "beta"}

	var edges []*meshtest.Node
	for _, region := range []string{"a", "b"} {
		r := pull(t, m, "region-"+region, node.RoleRelay, h, tiers...)
		for i := 1; i <= 2; i++ {
			edges = append(edges, pull(t, m, fmt.Sprintf("edge-%s%d", region, i), node.RoleEdge, r, tiers...))
		}
	}
	machines := make([]string, len(edges))
	for i, e := range edges {
		machines[i] = e.Register(t, e.AuthToken(t, "edge", "fleet"), fmt.Sprintf("machine-%s-0000000001", e.Name), kernel, arch)
	}

	content := randomBytes(t, 512<<10)
	p := h.Upload(t, content, meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.1"})
	if p.Digest != meshtest.Digest(content) || !slices.Equal(p.Tiers, []string{"edge"}) {
		t.Fatalf("upload at hub: want %s on [edge], got %+v", meshtest.Digest(content), p)
	}

	onEvery(t, edges, func(e *meshtest.Node) error {
		return wantListed(t, e, p.Digest, []string{"edge"})
	}, "the patch listed on tier edge")

	// Every edge serves the same bytes, to a machine of its own.
	for i, e := range edges {
		got, err := e.FetchBlob(context.Background(), p.Digest, meshtest.Bearer(machines[i]))
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != 200 || got.Digest != p.Digest || got.Size != int64(len(content)) {
			t.Errorf("%s: blob for its machine: want 200 with %d bytes hashing to %s, got %+v", e.Name, len(content), p.Digest, got)
		}
		cp, ok := e.ClientPatch(t, machines[i], kernel, arch)
		if !ok || cp.Digest != p.Digest {
			t.Errorf("%s: client patch: want %s, got %+v (found %v)", e.Name, p.Digest, cp, ok)
		}
	}

	h.Promote(t, p.Digest, "beta")
	onEvery(t, edges, func(e *meshtest.Node) error {
		return wantListed(t, e, p.Digest, []string{"edge", "beta"})
	}, "the patch listed on tiers edge and beta")

	h.Withdraw(t, p.Digest)
	onEvery(t, edges, func(e *meshtest.Node) error {
		live, err := e.TryPatches(t, nil)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(live, func(q catalog.Patch) bool { return q.Digest == p.Digest }) {
			return fmt.Errorf("still offered: %+v", live)
		}
		all, err := e.TryPatches(t, url.Values{"withdrawn": {"true"}})
		if err != nil {
			return err
		}
		i := slices.IndexFunc(all, func(q catalog.Patch) bool { return q.Digest == p.Digest })
		if i < 0 || !all[i].Withdrawn {
			return fmt.Errorf("want it kept as withdrawn, got %+v", all)
		}
		return nil
	}, "the patch withdrawn")
	for i, e := range edges {
		if cp, ok := e.ClientPatch(t, machines[i], kernel, arch); ok {
			t.Errorf("%s: client patch after withdrawal: want 404, got %+v", e.Name, cp)
		}
	}
}

// onEvery waits, for every node at once, until check passes on it.
func onEvery(t *testing.T, nodes []*meshtest.Node, check func(*meshtest.Node) error, what string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for _, n := range nodes {
		n.Admin(t) // log in here: a goroutine must not fail the test
	}
	for i, n := range nodes {
		wg.Go(func() {
			deadline := time.Now().Add(converge)
			for {
				errs[i] = check(n)
				if errs[i] == nil || time.Now().After(deadline) {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: want %s within %v; last: %v", nodes[i].Name, what, converge, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// wantListed checks that node n offers the patch digest on exactly tiers.
func wantListed(t *testing.T, n *meshtest.Node, digest string, tiers []string) error {
	ps, err := n.TryPatches(t, nil)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if p.Digest == digest {
			if !slices.Equal(p.Tiers, tiers) || p.Withdrawn {
				return fmt.Errorf("listed on %v (withdrawn %v), want %v", p.Tiers, p.Withdrawn, tiers)
			}
			return nil
		}
	}
	return fmt.Errorf("not listed among %d patches", len(ps))
}
