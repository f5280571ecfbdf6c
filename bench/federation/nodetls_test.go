package federation_test

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// tlsCostSizes: the patch that propagates and the blob that is
// downloaded, per op.
const (
	tlsPropagateSize = 16 << 20
	tlsDownloadSize  = 64 << 20
)

// pair is a hub and an edge linked to it, and what a client needs to
// download from the hub as the edge does.
type pair struct {
	hub, edge *meshtest.Node
	// client and base download from the hub the way the edge's link
	// does: over main-listener TLS, or the peer listener's mutual TLS.
	client *http.Client
	base   string
	token  string
}

// plainTLSPair is a hub serving its main listener over TLS (no peer
// listener) and an edge whose link reaches it there, verifying the hub's
// certificate against sync.ca_file, with the sync token its only
// credential: node-to-node traffic as it was before peer listeners.
func plainTLSPair(b *testing.B) pair {
	m := meshtest.New(b)
	// Each side is set up by hand here, not by meshtest's mutual TLS mode.
	m.MTLS = false
	hub := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, TLS: true, Configure: productionSync})
	ca := filepath.Join(hub.Dir, "cert.pem")
	tok := hub.SyncToken(b, tier, "tls-edge")
	edge := m.Start(meshtest.Spec{Name: "tls-edge", Role: node.RoleEdge,
		Links:     []meshtest.Link{{Tier: tier, Upstreams: []meshtest.Upstream{{URL: hub.URL, Token: tok}}}},
		Configure: func(c *node.Config) { productionSync(c); c.Sync.CAFile = ca }})
	pem, err := os.ReadFile(ca)
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}}
	return pair{hub: hub, edge: edge, client: c, base: hub.URL, token: tok}
}

// mutualTLSPair is a hub with a peer listener and an edge admitted there,
// whose link reaches the peer listener: TLS 1.3 with both node
// certificates checked against the admissions, plus the sync token.
func mutualTLSPair(b *testing.B) pair {
	m := meshtest.New(b)
	// Each side is set up by hand here, not by meshtest's mutual TLS mode.
	m.MTLS = false
	hub := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub, Peer: true, Configure: productionSync})
	hubKey := hub.NodeKey(b)
	tok := hub.SyncToken(b, tier, "mtls-edge")
	edge := m.Add(meshtest.Spec{Name: "mtls-edge", Role: node.RoleEdge, Peer: true,
		Links:     []meshtest.Link{{Tier: tier, Upstreams: []meshtest.Upstream{{URL: hub.PeerURL, Token: tok}}}},
		Configure: func(c *node.Config) { productionSync(c); c.Sync.PeerKeys = []string{hubKey} }})
	key, _, err := federation.LoadOrCreateNodeKey(filepath.Join(edge.DataDir, "node.key"))
	if err != nil {
		b.Fatal(err)
	}
	hub.AdminCall(b, http.MethodPost, "/v1/admin/nodes", map[string]any{"name": edge.Name,
		"key": federation.FormatPublicKey(key.Public().(ed25519.PublicKey)), "urls": []string{edge.URL}}, nil)
	edge.Start(b)
	cert, err := federation.NodeCertificate(key, edge.Name, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	hk, err := federation.ParsePublicKey(hubKey)
	if err != nil {
		b.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: federation.PeerClientTLS(cert, nil, federation.KeyID(hk)), DisableKeepAlives: true}}
	return pair{hub: hub, edge: edge, client: c, base: hub.PeerURL, token: tok}
}

// BenchmarkNodeTLSCost compares node-to-node traffic over the peer
// listener's mutual TLS with plain TLS on the main listener, in one run:
// two meshes of a hub and an edge each, fed the same uploads at the same
// time. propagation: each op uploads a 16 MiB patch at both hubs and times,
// per mesh, from the upload returning until the edge lists it (a long
// poll woken by the commit, then the blob fetched over the link).
// download: each op downloads a 64 MiB blob from each hub as its edge
// would (sync token; the mTLS one also with the edge's certificate), on a
// new connection, so that the handshake is counted. Ratios are mTLS over
// plain TLS; below 1 would be mTLS faster.
func BenchmarkNodeTLSCost(b *testing.B) {
	plain, mutual := plainTLSPair(b), mutualTLSPair(b)
	pairs := []pair{plain, mutual}
	version := 0
	b.Run(fmt.Sprintf("propagation/%dMiB", tlsPropagateSize>>20), func(b *testing.B) {
		content := patchBytes(b, tlsPropagateSize)
		took := make([][]time.Duration, 2)
		for range b.N {
			version++
			stamp(content, version)
			var wg sync.WaitGroup
			for i, p := range pairs {
				wg.Go(func() {
					up := p.hub.Upload(b, content, meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: fmt.Sprintf("107.%d", version)})
					start := time.Now()
					meshtest.WaitFor(b, *converge, p.edge.Name+" listing "+up.Digest, func() error { return listed(b, p.edge, up.Digest) })
					took[i] = append(took[i], time.Since(start))
				})
			}
			wg.Wait()
		}
		tlsP50, mtlsP50 := percentile(took[0], 50), percentile(took[1], 50)
		b.ReportMetric(float64(tlsP50.Milliseconds()), "tls-p50-ms")
		b.ReportMetric(float64(mtlsP50.Milliseconds()), "mtls-p50-ms")
		b.ReportMetric(float64(mtlsP50)/float64(tlsP50), "mtls/tls")
	})
	b.Run(fmt.Sprintf("download/%dMiB", tlsDownloadSize>>20), func(b *testing.B) {
		content := patchBytes(b, tlsDownloadSize)
		version++
		stamp(content, version)
		var digest string
		for _, p := range pairs {
			digest = p.hub.Upload(b, content, meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: fmt.Sprintf("107.%d", version)}).Digest
		}
		var spent [2]time.Duration
		b.ResetTimer()
		for range b.N {
			// Alternate, so that the machine's noise falls on both alike.
			for i, p := range pairs {
				start := time.Now()
				download(b, p, digest)
				spent[i] += time.Since(start)
			}
		}
		mb := float64(tlsDownloadSize) / 1e6 * float64(b.N)
		b.ReportMetric(mb/spent[0].Seconds(), "tls-MB/s")
		b.ReportMetric(mb/spent[1].Seconds(), "mtls-MB/s")
		b.ReportMetric(float64(spent[1])/float64(spent[0]), "mtls/tls-time")
	})
}

// download fetches digest from p's hub as its edge would, and checks the
// size.
func download(b *testing.B, p pair, digest string) {
	b.Helper()
	req, err := http.NewRequest(http.MethodGet, p.base+"/v1/blobs/"+digest, nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := p.client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || n != tlsDownloadSize {
		b.Fatalf("download from %s: status %d, %d bytes, %v", p.hub.Name, resp.StatusCode, n, err)
	}
}
