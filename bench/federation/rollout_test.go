package federation_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// BenchmarkWaveOpening times how long a rollout wave the hub opens takes
// to reach the machines of its data centre: each op uploads a new version,
// plans "dc-hub:0s,dc-r0:2s,dc-r1:1h" (no reports needed: min 0) and
// waits until dc-r0's edges hold the plan, then counts from the hub's
// signed opening time of wave 2 (dc-r0) until each dc-r0 edge offers the
// new version to a machine of its own (GET /v1/client/patch), polled every
// pollEvery. The mesh is a hub, 2 relays and 2 edges under each (7
// processes), a relay and its edges in one data centre; the hub's runner
// ticks every 100ms, which the figure includes. dc-r1's edges must keep
// offering the previous version throughout. The rollout is aborted after
// each sample, which withdraws the version.
func BenchmarkWaveOpening(b *testing.B) {
	m := meshtest.New(b)
	// Plain node-to-node traffic, as bench/RESULTS.md measured it (mutual
	// TLS is meshtest's default; nodetls_test.go measures its cost).
	m.MTLS = false
	hub := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, DC: "dc-hub", Configure: func(c *node.Config) {
		productionSync(c)
		c.Rollouts.Tick = 100 * time.Millisecond
	}})
	var edges [2][]*meshtest.Node
	var machines [2][]string
	for r := range 2 {
		dc := fmt.Sprintf("dc-r%d", r)
		relay := startDownstreamIn(b, m, fmt.Sprintf("region-%d", r), node.RoleRelay, dc, hub)
		for e := range 2 {
			n := startDownstreamIn(b, m, fmt.Sprintf("edge-%d%d", r, e), node.RoleEdge, dc, relay)
			edges[r] = append(edges[r], n)
			machines[r] = append(machines[r], meshtest.Bearer(n.Register(b, n.AuthToken(b, tier, "bench"), fmt.Sprintf("machine-%s-0000000001", n.Name), kernel, arch)))
		}
	}
	// The hub knows a data centre once a report from it arrived.
	meshtest.WaitFor(b, *converge, "the hub's fleet naming dc-r0 and dc-r1", func() error {
		var sum struct{ Totals []struct{ DC string } }
		if err := hub.Call(context.Background(), http.MethodGet, "/v1/admin/reports/summary", hub.Admin(b), nil, &sum); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, t := range sum.Totals {
			seen[t.DC] = true
		}
		if !seen["dc-r0"] || !seen["dc-r1"] {
			return fmt.Errorf("summary names %v", seen)
		}
		return nil
	})
	b.Log("mesh: hub, 2 relays, 4 edges (7 processes); wave 2 (dc-r0) reaching dc-r0's 2 edges")
	content := patchBytes(b, 4<<10)
	version := 0
	samples := make([]time.Duration, 0, b.N)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		version++
		stamp(content, version)
		v := fmt.Sprintf("107.%d", version)
		hub.Upload(b, content, meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: v})
		var ro catalog.Rollout
		hub.AdminCall(b, http.MethodPost, "/v1/admin/rollouts", map[string]any{"tier": tier, "version": v,
			"waves": "dc-hub:0s,dc-r0:2s,dc-r1:1h", "min_reporting": 0, "soak_seconds": 0}, &ro)
		for _, n := range append(append([]*meshtest.Node{}, edges[0]...), edges[1]...) {
			meshtest.WaitFor(b, *converge, n.Name+" holding the plan", func() error {
				var got catalog.Rollout
				return n.Call(ctx, http.MethodGet, "/v1/admin/rollouts/"+ro.ID, n.Admin(b), nil, &got)
			})
		}
		b.StartTimer()
		start := time.Now()
		reached, err := untilEvery(edges[0], machines[0], start, func(p catalog.Patch, found bool) bool {
			return found && p.Version == v
		})
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		var opened catalog.Rollout
		hub.AdminCall(b, http.MethodGet, "/v1/admin/rollouts/"+ro.ID, nil, &opened)
		if len(opened.Opened) < 2 {
			b.Fatalf("wave 2 not open at the hub: %+v", opened)
		}
		// untilEvery counts from its start; the figure counts from the
		// hub's opening, on the same machine's clock. The plan reaches
		// the edges well within the wave's 2s delay, so polling starts
		// before the opening.
		if !start.Before(opened.Opened[1]) {
			b.Fatalf("polling started %v after the wave opened: the sample would be late", start.Sub(opened.Opened[1]))
		}
		samples = append(samples, start.Add(reached).Sub(opened.Opened[1]))
		for i, n := range edges[1] {
			if p, found, err := clientPatch(ctx, n, machines[1][i]); err != nil || (found && p.Version == v) {
				b.Fatalf("%s (dc-r1, wave not open): offered %+v %v %v", n.Name, p, found, err)
			}
		}
		hub.AdminCall(b, http.MethodPost, "/v1/admin/rollouts/"+ro.ID+"/abort", nil, nil)
	}
	reportLatency(b, "wave open at the hub to offered at every dc-r0 edge", samples, time.Millisecond, "ms")
}

// startDownstreamIn is startDownstream in data centre dc.
func startDownstreamIn(b testing.TB, m *meshtest.Mesh, name, role, dc string, up *meshtest.Node) *meshtest.Node {
	b.Helper()
	tok := up.SyncToken(b, tier, name)
	return m.Start(meshtest.Spec{
		Name: name, Role: role, DC: dc, Configure: productionSync,
		Links: []meshtest.Link{{Tier: tier, Upstreams: []meshtest.Upstream{{URL: up.URL, Token: tok}}}},
	})
}
