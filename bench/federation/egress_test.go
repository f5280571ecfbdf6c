package federation_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// servedBytesMetric is the api's counter of blob bytes sent in answers to
// GET /v1/blobs (api/metrics.go).
const servedBytesMetric = "patchmesh_blob_served_bytes_total"

// egressBlob is the size of the blob BenchmarkHubEgress uploads per op.
const egressBlob = 32 << 20

// BenchmarkHubEgress measures what one new blob costs the hub with three
// relays linked to it directly: each op uploads a 32 MiB patch, waits until
// every relay lists it, and takes the growth of the hub's served-bytes
// counter. egress/blob is that growth over the blob's size; three children
// that each fetch the blob once make it 3.
func BenchmarkHubEgress(b *testing.B) {
	m := meshtest.New(b)
	// Plain node-to-node traffic, as bench/RESULTS.md measured it (mutual
	// TLS is meshtest's default; nodetls_test.go measures its cost).
	m.MTLS = false
	hub := startHub(m)
	var relays []*meshtest.Node
	for r := range 3 {
		relays = append(relays, startDownstream(b, m, fmt.Sprintf("region-%d", r), node.RoleRelay, hub))
	}
	version := 0
	b.Run(fmt.Sprintf("%dMiB", egressBlob>>20), func(b *testing.B) {
		content := patchBytes(b, egressBlob)
		var sent float64
		b.ResetTimer()
		for range b.N {
			version++
			stamp(content, version)
			before := servedBytes(b, hub)
			p := hub.Upload(b, content, meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: fmt.Sprintf("107.%d", version)})
			for _, r := range relays {
				meshtest.WaitFor(b, *converge, r.Name+" listing "+p.Digest, func() error { return listed(b, r, p.Digest) })
			}
			sent += settledServedBytes(b, hub) - before
		}
		b.StopTimer()
		perBlob := sent / float64(b.N)
		b.ReportMetric(perBlob, "egress-B/blob")
		b.ReportMetric(perBlob/egressBlob, "egress/blob")
		b.Logf("hub sent %.0f blob bytes per %d-byte blob to %d relays: %.3f × the blob", perBlob, egressBlob, len(relays), perBlob/egressBlob)
	})
}

// listed is nil once n lists the patch with digest.
func listed(b testing.TB, n *meshtest.Node, digest string) error {
	ps, err := n.TryPatches(b, nil)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(ps, func(p catalog.Patch) bool { return p.Digest == digest }) {
		return fmt.Errorf("not among its %d patches", len(ps))
	}
	return nil
}

// settledServedBytes reads the hub's counter until two reads 200ms apart
// agree. The api adds a download's bytes after its answer is written, so a
// relay may list the patch a moment before the hub has counted what it
// sent.
func settledServedBytes(b *testing.B, hub *meshtest.Node) float64 {
	b.Helper()
	prev := servedBytes(b, hub)
	for range 50 { // at most 10s
		time.Sleep(200 * time.Millisecond)
		cur := servedBytes(b, hub)
		if cur == prev {
			return cur
		}
		prev = cur
	}
	b.Fatalf("%s on %s still moving after 10s", servedBytesMetric, hub.Name)
	return 0
}

// servedBytes reads the hub's served-bytes counter off /metrics.
func servedBytes(b testing.TB, n *meshtest.Node) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL+"/metrics", nil)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatalf("%s: GET /metrics: %v", n.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: GET /metrics: want 200, got %d", n.Name, resp.StatusCode)
	}
	v, err := metricValue(bufio.NewScanner(resp.Body), servedBytesMetric)
	if err != nil {
		b.Fatalf("%s: %v", n.Name, err)
	}
	return v
}

// metricValue finds an unlabelled sample of name in a Prometheus text
// exposition.
func metricValue(sc *bufio.Scanner, name string) (float64, error) {
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), name+" ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, fmt.Errorf("metric %s: no value", name)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("metric %s: value %q: %w", name, rest, err)
		}
		return v, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read metrics: %w", err)
	}
	return 0, fmt.Errorf("no sample of %s in the exposition", name)
}
