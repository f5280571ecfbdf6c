package federation_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

// quietCatalogs are the catalog sizes BenchmarkQuietRound measures, in
// order: the hub's store is filled up to each in turn. -quiet-max skips
// the larger ones (seeding 100,000 patches takes minutes).
var (
	quietCatalogs = []int{100, 100_000}
	quietMax      = flag.Int("quiet-max", 100_000, "largest catalog BenchmarkQuietRound seeds")
)

// BenchmarkQuietRound measures the sync round a caught-up downstream makes
// when nothing is new: GET /v1/sync/feed?after=<head>&wait=0s against a hub
// whose catalog holds 100, then 100,000 patches, all on the synced tier.
// Each op is one request on a kept-alive connection; wire-B/op is the whole
// answer as read off the socket, status line and headers included, and
// req-B/op the request as written. Run it with -benchtime 2000x.
//
// Seeding 100,000 patches through the admin API would take most of an
// hour, so the hub's SQLite store is filled directly while the hub is
// stopped, signed with the hub's own key as the running hub would sign
// them. No blob is stored: a quiet round never reads one.
func BenchmarkQuietRound(b *testing.B) {
	m := meshtest.New(b)
	// Plain node-to-node traffic, as bench/RESULTS.md measured it (mutual
	// TLS is meshtest's default; nodetls_test.go measures its cost).
	m.MTLS = false
	hub := m.Add(meshtest.Spec{Name: "hub", Role: node.RoleHub})
	have := 0
	for _, size := range quietCatalogs {
		if size > *quietMax {
			break
		}
		start := time.Now()
		seedCatalog(b, hub, have, size)
		seeded := fmt.Sprintf("seeded patches %d to %d into the hub's SQLite store in %v (one synced transaction per patch)",
			have+1, size, time.Since(start).Round(time.Millisecond))
		have = size

		hub.Start(b)
		token := meshtest.Bearer(hub.SyncToken(b, tier, fmt.Sprintf("quiet-%d", size)))
		b.Run(fmt.Sprintf("catalog=%d", size), func(b *testing.B) {
			b.Log(seeded) // here, not in the parent: a parent's log is shown only if it fails
			quietRounds(b, hub, token, int64(size))
		})
		hub.Stop(b)
	}
}

// quietRounds makes b.N quiet feed requests and reports their latency and
// size on the wire.
func quietRounds(b *testing.B, hub *meshtest.Node, token string, wantHead int64) {
	var wire wireCounter
	client := &http.Client{Transport: wire.transport(), Timeout: 30 * time.Second}
	path := fmt.Sprintf("%s/v1/sync/feed?after=%d&wait=0s", hub.URL, wantHead)

	samples := make([]time.Duration, 0, b.N)
	var answerBytes, requestBytes int64
	var last []byte
	b.ResetTimer()
	for range b.N {
		read, written := wire.read.Load(), wire.written.Load()
		start := time.Now()
		body, err := get(client, path, token)
		samples = append(samples, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		answerBytes += wire.read.Load() - read
		requestBytes += wire.written.Load() - written
		last = body
	}
	b.StopTimer()

	var page federation.FeedResponse
	if err := json.Unmarshal(last, &page); err != nil {
		b.Fatalf("decode feed answer %q: %v", last, err)
	}
	if page.Head != wantHead || len(page.Events) != 0 {
		b.Fatalf("want a quiet page at head %d, got head %d with %d events: %s", wantHead, page.Head, len(page.Events), last)
	}
	b.ReportMetric(float64(answerBytes)/float64(b.N), "wire-B/op")
	b.ReportMetric(float64(requestBytes)/float64(b.N), "req-B/op")
	if page.Heartbeat != nil {
		// What the hub's heartbeat adds to the body: the page encoded
		// with it, less the page encoded without.
		with, _ := json.Marshal(page)
		page.Heartbeat = nil
		without, _ := json.Marshal(page)
		b.ReportMetric(float64(len(with)-len(without)), "heartbeat-B/op")
	}
	reportLatency(b, fmt.Sprintf("quiet round at head %d", wantHead), samples, time.Microsecond, "us")
	b.Logf("answer %.0f bytes on the wire, body %d bytes: %s", float64(answerBytes)/float64(b.N), len(last), last)
}

// get sends one GET and returns the 200 answer's body, read to the end so
// that the connection is reused and its bytes are all counted.
func get(c *http.Client, url, cred string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", cred)
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: read answer: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: want 200, got %d: %s", url, resp.StatusCode, body)
	}
	return body, nil
}

// wireCounter counts the bytes its transport's connections read and write,
// which is what an answer costs on the network before TCP/IP framing.
type wireCounter struct {
	read, written atomic.Int64
}

// transport is a fresh HTTP transport whose connections wireCounter
// counts. It keeps Go's defaults otherwise, as the sync loop's client does,
// so the request carries the same headers a downstream's would.
func (w *wireCounter) transport() *http.Transport {
	var d net.Dialer
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &countedConn{Conn: c, w: w}, nil
		},
		MaxIdleConnsPerHost: 1,
	}
}

type countedConn struct {
	net.Conn
	w *wireCounter
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.read.Add(int64(n))
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.w.written.Add(int64(n))
	return n, err
}

// seedCatalog adds patches from+1 to to to the stopped hub's store, as the
// hub itself would: through the store, with the hub's key as sealer, so
// every patch is a signed event on the first tier. Patch i is version
// 1.<i mod 100> of kernel 5.15.0-<i/100>.1-generic, with a digest no
// upload can collide with.
func seedCatalog(b *testing.B, hub *meshtest.Node, from, to int) {
	b.Helper()
	ctx := context.Background()
	key, _, err := federation.LoadOrCreateKey(hub.Config.HubKeyPath())
	if err != nil {
		b.Fatalf("hub key: %v", err)
	}
	s, err := sqlstore.OpenSQLite(ctx, hub.Config.StorePath(), sqlstore.Options{Sealer: federation.Sealer{Key: key}})
	if err != nil {
		b.Fatalf("open the hub's store: %v", err)
	}
	defer s.Close()
	for i := from + 1; i <= to; i++ {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(i))
		sum := sha256.Sum256(n[:])
		p := catalog.Patch{
			Digest: "sha256:" + hex.EncodeToString(sum[:]),
			Kernel: fmt.Sprintf("5.15.0-%d.1-generic", i/100), Arch: arch,
			Version: fmt.Sprintf("1.%d", i%100), Size: 1 << 20,
		}
		if _, err := s.AddPatch(ctx, p); err != nil {
			b.Fatalf("seed patch %d of %d: %v", i, to, err)
		}
	}
}
