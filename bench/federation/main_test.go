// Package federation_test measures federations of real patchmesh processes
// on loopback: how long a patch takes to become servable on every node of
// a cascade, what a sync round that finds nothing new costs on the wire as
// the hub's catalog grows, and how many bytes the hub sends per new blob.
// bench/RESULTS.md records the figures and the commands behind them.
//
// Everything here is a benchmark, run only with -bench; the tests check the
// arithmetic and the wire counting the benchmarks rely on. internal/meshtest
// owns the processes, the e2e tests own what a mesh must do.
package federation_test

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

func TestMain(m *testing.M) { os.Exit(meshtest.Main(m)) }

// Every patch of these benchmarks is for one kernel and lands on the first
// tier, which is also the one every link syncs.
const (
	kernel = "5.15.0-107.117-generic"
	arch   = "x86_64"
	tier   = "edge"
)

// productionSync gives a node the long poll a deployed node runs with
// (sync.wait's default, 30s) instead of meshtest's 2s test profile, so that
// a change reaches a downstream because its waiting request is woken, not
// because a short poll happened to end. Retry timings stay meshtest's: they
// only matter after a failure, which voids a measurement anyway.
// The heartbeat timings are the defaults too (heartbeat_every 5s,
// stale_after 2m), which stale_after must exceed the wait for anyway.
func productionSync(c *node.Config) {
	d := node.DefaultsWithEnv(func(string) string { return "" }).Sync
	c.Sync.Wait, c.Sync.HeartbeatEvery, c.Sync.StaleAfter = d.Wait, d.HeartbeatEvery, d.StaleAfter
}

// startHub starts a mesh's hub, signing heartbeats at the default pace.
func startHub(m *meshtest.Mesh) *meshtest.Node {
	return m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, Configure: productionSync})
}

// startDownstream starts a relay or edge with one link, for tier, to up.
func startDownstream(b testing.TB, m *meshtest.Mesh, name, role string, up *meshtest.Node) *meshtest.Node {
	b.Helper()
	tok := up.SyncToken(b, tier, name)
	return m.Start(meshtest.Spec{
		Name: name, Role: role, Configure: productionSync,
		Links: []meshtest.Link{{Tier: tier, Upstreams: []meshtest.Upstream{{URL: up.URL, Token: tok}}}},
	})
}

// patchBytes is a patch file of size random bytes whose first eight bytes
// a benchmark overwrites with a counter (stamp), so that every upload is a
// new blob without paying for fresh randomness each time.
func patchBytes(b testing.TB, size int) []byte {
	b.Helper()
	content := make([]byte, size)
	if _, err := rand.Read(content); err != nil {
		b.Fatal(err)
	}
	return content
}

// stamp makes content a new blob, number n of its run.
func stamp(content []byte, n int) { binary.BigEndian.PutUint64(content, uint64(n)) }

// percentile is the nearest-rank percentile p (0 < p ≤ 100) of samples:
// with 20 samples p99 is the largest, which is what 20 samples can say.
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

// reportLatency reports p50, p99 and max of samples in unit (the
// duration of one unit, e.g. time.Millisecond named "ms") and logs them,
// so that they show in the benchmark's output with the count behind them.
func reportLatency(b *testing.B, what string, samples []time.Duration, unit time.Duration, name string) {
	b.Helper()
	in := func(d time.Duration) float64 { return float64(d) / float64(unit) }
	p50, p99, top := percentile(samples, 50), percentile(samples, 99), percentile(samples, 100)
	b.ReportMetric(in(p50), "p50-"+name)
	b.ReportMetric(in(p99), "p99-"+name)
	b.ReportMetric(in(top), "max-"+name)
	b.Logf("%s over %d samples: p50 %s, p99 %s, max %s", what, len(samples), fmtIn(p50, unit, name), fmtIn(p99, unit, name), fmtIn(top, unit, name))
}

func fmtIn(d, unit time.Duration, name string) string {
	return fmt.Sprintf("%.3f %s", float64(d)/float64(unit), name)
}
