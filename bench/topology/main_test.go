// Package topology_test measures the gossip of meshes of real patchmesh
// processes on loopback (issue 4): how fast every node declares a killed
// one dead, how fast the edges of a killed region serve a patch published
// after the kill, what gossip costs on the wire per node, and what the hub
// sends per new blob when the nodes of a data centre share it.
// bench/RESULTS.md records the figures and the commands behind them.
//
// Everything here is a benchmark, run only with -bench; each runs its own
// trials (b.N is ignored beyond the first op) and reports percentiles
// over them. The tests check the arithmetic the reports rely on.
// internal/meshtest owns the processes, the e2e tests what a mesh must do.
package topology_test

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

func TestMain(m *testing.M) { os.Exit(meshtest.Main(m)) }

var (
	trials   = flag.Int("trials", 20, "kills measured by BenchmarkFailureDetection")
	failures = flag.Int("failover-trials", 6, "region kills measured by BenchmarkFailover")
	profile  = flag.String("profile", "lan", "gossip profile of the measured meshes (local, lan, wan)")
	blobs    = flag.Int("blobs", 5, "8 MiB uploads measured by BenchmarkHubEgressPerDC")
	idle     = flag.Duration("idle", 30*time.Second, "how long BenchmarkGossipBandwidth watches an idle mesh")
	poll     = flag.Duration("poll", 50*time.Millisecond, "how often each node's view is read while waiting")
	within   = flag.Duration("within", 2*time.Minute, "bound on any one wait; a trial past it fails the benchmark")
	// Overrides of the profile, to measure a tuning against the default.
	probeInterval = flag.Duration("probe-interval", 0, "gossip.probe_interval override (0 keeps the profile's)")
	suspicionMult = flag.Int("suspicion-mult", 0, "gossip.suspicion_mult override (0 keeps the profile's)")
	// meshtest retries a failed sync round after 100 ms, up to 1 s, so a
	// link gives up on a dead upstream (three failed rounds) well before
	// gossip declares it dead; deployed nodes back off from 500 ms.
	deployedRetry = flag.Bool("deployed-retry", false, "sync.retry_min and retry_max at their defaults instead of meshtest's")
)

// tune applies the timing flags to a node's config.
func tune(c *node.Config) {
	c.Gossip.ProbeInterval = *probeInterval
	c.Gossip.SuspicionMult = *suspicionMult
	if *deployedRetry {
		d := node.DefaultsWithEnv(func(string) string { return "" })
		c.Sync.RetryMin, c.Sync.RetryMax = d.Sync.RetryMin, d.Sync.RetryMax
	}
}

const (
	kernel = "5.15.0-107.117-generic"
	arch   = "x86_64"
	tier   = "edge"
)

// mesh13 is the measured shape: a hub, three regions linked to it, three
// edges under each region, 13 nodes. Every edge lists its own region
// first and the next one second, so that a region's death moves its edges.
type mesh13 struct {
	m       *meshtest.Mesh
	hub     *meshtest.Node
	regions []*meshtest.Node
	edges   [][]*meshtest.Node // by region
}

func startMesh13(b *testing.B) *mesh13 {
	b.Helper()
	m := meshtest.New(b)
	// Plain node-to-node traffic, as bench/RESULTS.md measured it (mutual
	// TLS is meshtest's default; nodetls_test.go measures its cost).
	m.MTLS = false
	m.Gossip = *profile
	x := &mesh13{m: m}
	x.hub = m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, DC: "dc-hub", Configure: tune})
	for r := range 3 {
		name := fmt.Sprintf("region-%d", r)
		x.regions = append(x.regions, m.Start(meshtest.Spec{
			Name: name, Role: node.RoleRelay, DC: fmt.Sprintf("dc-%d", r), Configure: tune,
			Links: []meshtest.Link{{Tier: tier, Upstreams: []meshtest.Upstream{{URL: x.hub.URL, Token: x.hub.SyncToken(b, tier, name)}}}},
		}))
	}
	x.edges = make([][]*meshtest.Node, 3)
	for r := range 3 {
		for e := range 3 {
			name := fmt.Sprintf("edge-%d%d", r, e)
			link := meshtest.Link{Tier: tier}
			for _, up := range []*meshtest.Node{x.regions[r], x.regions[(r+1)%3]} {
				link.Upstreams = append(link.Upstreams, meshtest.Upstream{URL: up.URL, Token: up.SyncToken(b, tier, name)})
			}
			x.edges[r] = append(x.edges[r], m.Start(meshtest.Spec{
				Name: name, Role: node.RoleEdge, DC: fmt.Sprintf("dc-%d", r), Links: []meshtest.Link{link}, Configure: tune,
			}))
		}
	}
	x.waitViews(b, x.all(), "all 13 alive", allAlive(x.all()))
	return x
}

func (x *mesh13) all() []*meshtest.Node {
	out := append([]*meshtest.Node{x.hub}, x.regions...)
	for _, es := range x.edges {
		out = append(out, es...)
	}
	return out
}

func allAlive(nodes []*meshtest.Node) func(meshtest.Topology) bool {
	return func(v meshtest.Topology) bool {
		if len(v.Nodes) != len(nodes) {
			return false
		}
		for _, n := range nodes {
			if v.State(n.Name) != "alive" {
				return false
			}
		}
		return true
	}
}

// waitViews waits until every node's view of the mesh (GET /v1/topology)
// passes ok, each node read every *poll, and returns how long each took
// from the call.
func (x *mesh13) waitViews(b *testing.B, nodes []*meshtest.Node, what string, ok func(meshtest.Topology) bool) []time.Duration {
	b.Helper()
	for _, n := range nodes {
		n.Admin(b) // log in here: a goroutine must not fail the benchmark
	}
	start := time.Now()
	took := make([]time.Duration, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			deadline := start.Add(*within)
			for {
				v, err := n.Topology(context.Background())
				if err == nil && ok(v) {
					took[i] = time.Since(start)
					return
				}
				if time.Now().After(deadline) {
					errs[i] = fmt.Errorf("%s: not %s within %v (last %+v, %v)", n.Name, what, *within, v.Nodes, err)
					return
				}
				time.Sleep(*poll)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	return took
}

// percentile is the nearest-rank percentile p (0-100] of samples.
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	k := int(math.Ceil(p / 100 * float64(len(sorted))))
	k = min(max(k, 1), len(sorted))
	return sorted[k-1]
}

// report reports p50, p99 and max of samples in seconds and logs them
// with the count behind them.
func report(b *testing.B, what string, samples []time.Duration, name string) {
	b.Helper()
	p50, p99, top := percentile(samples, 50), percentile(samples, 99), percentile(samples, 100)
	b.ReportMetric(p50.Seconds(), name+"-p50-s")
	b.ReportMetric(p99.Seconds(), name+"-p99-s")
	b.ReportMetric(top.Seconds(), name+"-max-s")
	b.Logf("%s over %d trials: p50 %v, p99 %v, max %v", what, len(samples), p50.Round(time.Millisecond), p99.Round(time.Millisecond), top.Round(time.Millisecond))
}

func randomBytes(b *testing.B, n int) []byte {
	b.Helper()
	p := make([]byte, n)
	if _, err := rand.Read(p); err != nil {
		b.Fatal(err)
	}
	return p
}

func TestPercentileIsNearestRank(t *testing.T) {
	s := []time.Duration{5, 1, 4, 2, 3}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 3}, {99, 5}, {100, 5}, {1, 1}, {20, 1}, {21, 2}} {
		if got := percentile(s, c.p); got != c.want {
			t.Errorf("percentile(%v, %v): want %v, got %v", s, c.p, c.want, got)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile of nothing: want 0, got %v", got)
	}
}
