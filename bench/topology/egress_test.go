package topology_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// servedBytes is the api's counter of blob bytes sent in answers to GET
// /v1/blobs (api/metrics.go); peers' fetches from each other go through
// /v1/peer/blobs on the peer, not the hub.
const servedBytes = "patchmesh_blob_served_bytes_total"

// BenchmarkHubEgressPerDC measures what one new blob costs the hub when
// three data centres of three nodes each all link to it directly, with
// gossip on so that the nodes of a data centre share a blob (peer fetch:
// one fetches upstream, the others from it, sync.peer_wait default). Each
// of -blobs uploads is an 8 MiB patch; the hub's served-bytes growth,
// once all nine list it and the counter has settled, over the blob's size
// is egress/blob: 9 without sharing, 3 with one fetch per data centre.
func BenchmarkHubEgressPerDC(b *testing.B) {
	const size = 8 << 20
	m := meshtest.New(b)
	// Plain node-to-node traffic, as bench/RESULTS.md measured it (mutual
	// TLS is meshtest's default; nodetls_test.go measures its cost).
	m.MTLS = false
	m.Gossip = *profile
	// Peers fetch from each other over their peer listeners' mutual TLS
	// only: every node gets one, and is admitted.
	m.MTLS = true
	hub := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, DC: "dc-hub", Configure: tune})
	var nodes []*meshtest.Node
	for dc := range 3 {
		for k := range 3 {
			name := fmt.Sprintf("dc%d-node%d", dc, k)
			nodes = append(nodes, m.Start(meshtest.Spec{
				Name: name, Role: node.RoleRelay, DC: fmt.Sprintf("dc-%d", dc), Configure: tune,
				Links: []meshtest.Link{{Tier: tier, Upstreams: []meshtest.Upstream{{URL: hub.URL, Token: hub.SyncToken(b, tier, name)}}}},
			}))
		}
	}
	x := &mesh13{m: m, hub: hub}
	all := append([]*meshtest.Node{hub}, nodes...)
	x.waitViews(b, all, "all 10 alive", allAlive(all))

	var ratios []float64
	for i := range *blobs {
		before := metric(b, hub, servedBytes)
		p := hub.Upload(b, randomBytes(b, size), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: fmt.Sprintf("8.%d", i+1)})
		for _, n := range nodes {
			meshtest.WaitFor(b, *within, n.Name+" listing "+p.Digest, func() error {
				ps, err := n.TryPatches(b, nil)
				if err != nil {
					return err
				}
				if !slices.ContainsFunc(ps, func(q catalog.Patch) bool { return q.Digest == p.Digest }) {
					return fmt.Errorf("not listed")
				}
				return nil
			})
		}
		sent := settled(b, hub, servedBytes) - before
		ratios = append(ratios, sent/size)
		b.Logf("blob %d: hub sent %.0f bytes for a %d-byte blob to 9 nodes in 3 DCs: %.2f × the blob", i+1, sent, size, sent/size)
	}
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "egress/blob-median")
	b.ReportMetric(ratios[len(ratios)-1], "egress/blob-max")
}

// metric reads one sample of n's metrics; missing is 0 (a counter not yet
// incremented is not exposed).
func metric(b *testing.B, n *meshtest.Node, name string) float64 {
	b.Helper()
	ms, err := n.Metrics(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return ms[name]
}

// settled reads the counter until it has not moved for a second, so that
// a fetch still streaming when the last node listed the patch counts.
func settled(b *testing.B, n *meshtest.Node, name string) float64 {
	b.Helper()
	last := metric(b, n, name)
	for range 60 { // bounded: at most a minute
		time.Sleep(time.Second)
		v := metric(b, n, name)
		if v == last {
			return v
		}
		last = v
	}
	b.Fatalf("%s: %s still moving after a minute", n.Name, name)
	return 0
}
