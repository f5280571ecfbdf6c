package topology_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/internal/meshtest"
)

// BenchmarkFailover kills a region with SIGKILL, -failover-trials times,
// each region in turn, uploads a patch at the hub right after the kill,
// and times from the kill until every edge of that region serves the
// patch's bytes to a machine of its own (GET /v1/blobs, 200, digest
// checked). The goal is 10 s. Between trials the region is restarted,
// and the next kill waits until all 13 are alive and its edges are back
// on it (which takes up to the 30 s a failing upstream is demoted for).
func BenchmarkFailover(b *testing.B) {
	x := startMesh13(b)
	all := x.all()
	machines := map[*meshtest.Node]string{}
	for _, es := range x.edges {
		for _, e := range es {
			machines[e] = e.Register(b, e.AuthToken(b, tier, "bench"), "machine-"+e.Name+"-00000001", kernel, arch)
		}
	}
	var samples []time.Duration
	for i := range *failures {
		r := i % len(x.regions)
		region, edges := x.regions[r], x.edges[r]
		region.Kill(b)
		killed := time.Now()
		p := x.hub.Upload(b, randomBytes(b, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: fmt.Sprintf("9.%d", i+1)})
		took := serving(b, edges, machines, p.Digest, killed)
		samples = append(samples, took)
		b.Logf("trial %d: %s killed; its %d edges serve the new patch after %v", i+1, region.Name, len(edges), took.Round(time.Millisecond))

		region.Start(b)
		x.waitViews(b, all, "all 13 alive", allAlive(all))
		for _, e := range edges {
			meshtest.WaitFor(b, *within, e.Name+" back on "+region.Name, func() error {
				if l := e.Link(b, tier); l.Upstream != region.URL {
					return fmt.Errorf("upstream %s", l.Upstream)
				}
				return nil
			})
		}
	}
	report(b, "kill of a region to all its edges serving a patch uploaded after it", samples, "failover")
}

// serving waits until every edge serves digest to its machine and returns
// the time from since until the last did.
func serving(b *testing.B, edges []*meshtest.Node, machines map[*meshtest.Node]string, digest string, since time.Time) time.Duration {
	b.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		last time.Duration
		errs []error
	)
	for _, e := range edges {
		wg.Go(func() {
			deadline := since.Add(*within)
			for {
				got, err := e.FetchBlob(context.Background(), digest, meshtest.Bearer(machines[e]))
				if err == nil && got.Status == 200 && got.Digest == digest {
					mu.Lock()
					last = max(last, time.Since(since))
					mu.Unlock()
					return
				}
				if time.Now().After(deadline) {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: not serving %s within %v (last %+v, %v)", e.Name, digest, *within, got, err))
					mu.Unlock()
					return
				}
				time.Sleep(*poll)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		b.Fatal(err)
	}
	return last
}
