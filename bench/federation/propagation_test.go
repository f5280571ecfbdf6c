package federation_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// pollEvery is how often each node is asked whether it serves the new
// patch: it bounds how late a figure can be by one interval plus a request.
// Each poll is a check-in the 2 cores also have to serve: 13 nodes polled
// every 5 ms are 2,600 requests a second, which a 100 MiB run can measure
// less often for a figure as exact.
var pollEvery = flag.Duration("poll-every", 5*time.Millisecond, "how often the benchmark asks each node whether it serves the new patch")

// propagationSizes are the patch sizes BenchmarkPropagation measures. The
// 100 MiB one writes 1.3 GB (13 copies) per upload, so -bench can pick one
// with a sub-benchmark name, e.g. 'Propagation/1MiB'.
var propagationSizes = []int{1 << 20, 100 << 20}

// converge bounds one upload's propagation (and one removal's); past it the
// mesh is broken, not slow, and the benchmark fails.
var converge = flag.Duration("converge", 5*time.Minute, "how long one change may take to reach every node before a benchmark fails")

// keepLogsIn, if set, is where a propagation benchmark copies its nodes'
// directories (configs and logs) when it ends, for the per-hop timeline:
// each round that applies records logs "sync round applied" with the time
// of its feed, verify, fetch and apply steps.
var keepLogsIn = flag.String("keep-logs", "", "copy the nodes' directories (logs) here when a propagation benchmark ends")

// keepLogs copies m's directory to -keep-logs when the benchmark ends.
func keepLogs(b *testing.B, m *meshtest.Mesh) {
	if *keepLogsIn == "" {
		return
	}
	b.Cleanup(func() {
		if err := os.CopyFS(filepath.Join(*keepLogsIn, b.Name()), os.DirFS(m.Dir())); err != nil {
			b.Logf("keep logs: %v", err)
		}
	})
}

// BenchmarkPropagation times an upload at the hub of a 1 + 3 + 9 cascade
// until the patch is servable at every node: each op is one upload, its
// time counted from the upload call returning until the last of the 13
// nodes offers the patch to a machine of its own (GET /v1/client/patch).
// Every node is polled at once every pollEvery; the links long-poll as in
// production, and nothing triggers a round. Run it with -benchtime 20x for
// p50/p99 over 20 uploads.
//
// Each patch is removed at the hub after its sample, and the removal waited
// for everywhere, so every upload meets the same quiet mesh with a single
// patch in it and the disks hold one copy of one patch per node.
func BenchmarkPropagation(b *testing.B) {
	m := meshtest.New(b)
	// Plain node-to-node traffic, as bench/RESULTS.md measured it (mutual
	// TLS is meshtest's default; nodetls_test.go measures its cost).
	m.MTLS = false
	keepLogs(b, m)
	hub := startHub(m)
	nodes := []*meshtest.Node{hub}
	var relays, edges []int // indexes into nodes
	for r := range 3 {
		region := startDownstream(b, m, fmt.Sprintf("region-%d", r), node.RoleRelay, hub)
		relays = append(relays, len(nodes))
		nodes = append(nodes, region)
		for e := range 3 {
			edges = append(edges, len(nodes))
			nodes = append(nodes, startDownstream(b, m, fmt.Sprintf("edge-%d%d", r, e), node.RoleEdge, region))
		}
	}
	propagate(b, hub, nodes, map[string][]int{"relays": relays, "edges": edges})
}

// BenchmarkSingleHop is BenchmarkPropagation with one hop: a hub and
// one relay, the yardstick for what a cascade adds (issue 12 wants an edge
// of the cascade within 1.5x a single hop plus 1 s for 100 MiB).
func BenchmarkSingleHop(b *testing.B) {
	m := meshtest.New(b)
	// Plain node-to-node traffic, as bench/RESULTS.md measured it (mutual
	// TLS is meshtest's default; nodetls_test.go measures its cost).
	m.MTLS = false
	keepLogs(b, m)
	hub := startHub(m)
	relay := startDownstream(b, m, "region-0", node.RoleRelay, hub)
	propagate(b, hub, []*meshtest.Node{hub, relay}, nil)
}

// propagate runs the uploads of BenchmarkPropagation on nodes (the hub
// first). groups names sets of nodes (indexes) whose own figure is
// reported too, the time the last of each had the patch.
func propagate(b *testing.B, hub *meshtest.Node, nodes []*meshtest.Node, groups map[string][]int) {
	machines := make([]string, len(nodes))
	for i, n := range nodes {
		machines[i] = meshtest.Bearer(n.Register(b, n.AuthToken(b, tier, "bench"), fmt.Sprintf("machine-%s-0000000001", n.Name), kernel, arch))
	}
	mesh := fmt.Sprintf("mesh: %d processes, the hub and %d downstream; sync.wait %v", len(nodes), len(nodes)-1, nodes[1].Config.Sync.Wait)

	version := 0 // rises across sub-benchmarks and their runs: each upload is a new version
	for _, size := range propagationSizes {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			b.Log(mesh) // here, not in the parent: a parent's log is shown only if it fails
			content := patchBytes(b, size)
			samples := make([]time.Duration, 0, b.N)
			groupSamples := map[string][]time.Duration{}
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				version++
				stamp(content, version)
				p := hub.Upload(b, content, meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: fmt.Sprintf("107.%d", version)})
				start := time.Now()
				b.StartTimer()
				at, err := untilEach(nodes, machines, start, func(got catalog.Patch, found bool) bool {
					return found && got.Digest == p.Digest
				})
				b.StopTimer()
				if err != nil {
					logLinks(b, nodes)
					b.Fatalf("upload of %d bytes, version %s: %v", size, p.Version, err)
				}
				samples = append(samples, slices.Max(at))
				for name, idx := range groups {
					var last time.Duration
					for _, i := range idx {
						last = max(last, at[i])
					}
					groupSamples[name] = append(groupSamples[name], last)
				}

				hub.AdminCall(b, http.MethodDelete, "/v1/admin/patches/"+p.Digest, nil, nil)
				if _, err := untilEvery(nodes, machines, time.Now(), func(got catalog.Patch, found bool) bool {
					return !found || got.Digest != p.Digest
				}); err != nil {
					logLinks(b, nodes)
					b.Fatalf("removal of version %s: %v", p.Version, err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			reportLatency(b, fmt.Sprintf("%d MiB servable on all %d nodes", size>>20, len(nodes)), samples, time.Millisecond, "ms")
			for _, name := range slices.Sorted(maps.Keys(groupSamples)) {
				g := groupSamples[name]
				b.Logf("%d MiB servable on all %s over %d samples: p50 %s, p99 %s", size>>20, name, len(g),
					fmtIn(percentile(g, 50), time.Millisecond, "ms"), fmtIn(percentile(g, 99), time.Millisecond, "ms"))
			}
		})
	}
}

// untilEvery polls every node at once, as its machine, until done holds
// for the patch the node offers, and returns how long after start the last
// node got there. It gives up after converge.
func untilEvery(nodes []*meshtest.Node, machines []string, start time.Time, done func(p catalog.Patch, found bool) bool) (time.Duration, error) {
	at, err := untilEach(nodes, machines, start, done)
	if err != nil {
		return 0, err
	}
	return slices.Max(at), nil
}

// untilEach is untilEvery with each node's own time, in the order of nodes.
func untilEach(nodes []*meshtest.Node, machines []string, start time.Time, done func(p catalog.Patch, found bool) bool) ([]time.Duration, error) {
	ctx, cancel := context.WithDeadline(context.Background(), start.Add(*converge))
	defer cancel()
	at := make([]time.Duration, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			for {
				p, found, err := clientPatch(ctx, n, machines[i])
				if err == nil && done(p, found) {
					at[i] = time.Since(start)
					return
				}
				select {
				case <-ctx.Done():
					errs[i] = fmt.Errorf("%s: not there after %v (last answer %+v, found %v, error %v)", n.Name, *converge, p, found, err)
					return
				case <-time.After(*pollEvery):
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return at, nil
}

// clientPatch asks n, as a machine, for the newest patch for the
// benchmarks' kernel; found is false when n answers 404 (nothing to offer).
func clientPatch(ctx context.Context, n *meshtest.Node, machine string) (p catalog.Patch, found bool, err error) {
	q := url.Values{"kernel": {kernel}, "arch": {arch}}
	err = n.Call(ctx, http.MethodGet, "/v1/client/patch?"+q.Encode(), machine, nil, &p)
	var se *meshtest.StatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return catalog.Patch{}, false, nil
	}
	return p, err == nil, err
}

// logLinks logs the sync links of every downstream node, which say why a
// change did not arrive better than the tail of a log full of polls does.
func logLinks(b *testing.B, nodes []*meshtest.Node) {
	b.Helper()
	for _, n := range nodes {
		for _, l := range n.SyncStatus(b).Links {
			b.Logf("%s: link %s from %s: %s, cursor %d of %d, hub seq %d of %d, rounds %d (%d failed), last error %q",
				n.Name, l.Tier, l.Upstream, l.State, l.Cursor, l.UpstreamHead, l.HubSeq, l.HubHead, l.Rounds, l.RoundsFailed, l.LastError)
		}
	}
}
