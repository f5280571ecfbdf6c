package e2e_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// Cut-through relaying (federation/relay.go): a relay passes a blob on to
// its downstreams while it still arrives, holds the end back until its own
// digest check passes, cuts the stream when it fails, and never shows the
// blob to a machine before it is committed and its record applied.

// gate stands between a relay and its upstream, on loopback: every blob
// body passes its first open bytes, then waits until release; corrupt, when
// set, flips the byte at that offset of every blob body.
type gate struct {
	URL     string
	open    int64
	release chan struct{}
	once    sync.Once
	corrupt atomic.Int64 // offset + 1; 0: none
	passed  atomic.Int64 // blob body bytes passed on, all bodies
}

func newGate(t *testing.T, m *meshtest.Mesh, upstream *meshtest.Node, open int64) *gate {
	t.Helper()
	target, rt := m.ProxyTarget(t, upstream)
	g := &gate{open: open, release: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = rt
	rp.FlushInterval = -1
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.HasPrefix(resp.Request.URL.Path, "/v1/blobs/") && resp.Request.Method == http.MethodGet {
			resp.Body = &gatedBody{r: resp.Body, g: g}
		}
		return nil
	}
	// Released before the server closes, or its held bodies would keep
	// the close waiting.
	g.URL = m.ServeProxy(t, rp)
	t.Cleanup(g.Release)
	return g
}

// Release lets every held body go on.
func (g *gate) Release() { g.once.Do(func() { close(g.release) }) }

type gatedBody struct {
	r   io.ReadCloser
	g   *gate
	off int64
}

func (b *gatedBody) Read(p []byte) (int, error) {
	if b.off >= b.g.open {
		<-b.g.release
	} else {
		p = p[:min(int64(len(p)), b.g.open-b.off)]
	}
	k, err := b.r.Read(p)
	if c := b.g.corrupt.Load() - 1; c >= b.off && c < b.off+int64(k) {
		p[c-b.off] ^= 0xff
	}
	b.off += int64(k)
	b.g.passed.Add(int64(k))
	return k, err
}

func (b *gatedBody) Close() error { return b.r.Close() }

// cutThroughMesh is a hub, a relay pulling tier edge through a gate, and
// an edge pulling from the relay.
type cutThroughMesh struct {
	hub, relay, edge *meshtest.Node
	gate             *gate
	relaySync        string // a sync token of the relay's, for tier edge: the test as a downstream
	relayMachine     string // a machine token of the relay's
	hubKey           ed25519.PublicKey
}

func newCutThroughMesh(t *testing.T, open int64) *cutThroughMesh {
	t.Helper()
	m := meshtest.New(t)
	c := &cutThroughMesh{hub: hub(m)}
	c.gate = newGate(t, m, c.hub, open)
	c.relay = m.Start(pullSpec(t, "relay", node.RoleRelay, c.gate.URL, c.hub, "edge"))
	c.edge = pull(t, m, "edge", node.RoleEdge, c.relay, "edge")
	c.relaySync = c.relay.SyncToken(t, "edge", "test-downstream")
	c.relayMachine = c.relay.Register(t, c.relay.AuthToken(t, "edge", "fleet"), "machine-relay-0000000001", kernel, arch)
	pub, err := federation.ParsePublicKey(m.HubPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	c.hubKey = pub
	return c
}

// awaitHeld waits until the relay's transfer has received the gate's open
// bytes, and so is under way and cannot finish.
func (c *cutThroughMesh) awaitHeld(t *testing.T) {
	t.Helper()
	meshtest.WaitFor(t, 60*time.Second, "the relay's transfer to reach the gate", func() error {
		if got := c.gate.passed.Load(); got < c.gate.open {
			return fmt.Errorf("%d of %d bytes passed", got, c.gate.open)
		}
		return nil
	})
}

// pending asks the relay's feed, as a downstream, for its pending records.
func (c *cutThroughMesh) pending(t *testing.T) []federation.Record {
	t.Helper()
	var page federation.FeedResponse
	if err := c.relay.Call(context.Background(), http.MethodGet, "/v1/sync/feed?pending_after=0", meshtest.Bearer(c.relaySync), nil, &page); err != nil {
		t.Fatal(err)
	}
	var out []federation.Record
	for _, env := range page.Pending {
		r, err := federation.NewVerifier(c.hubKey).Open(env)
		if err != nil {
			t.Fatalf("pending record does not verify against the hub key: %v", err)
		}
		out = append(out, r)
	}
	return out
}

// stream opens the relay's blob as a downstream (its sync token).
func (c *cutThroughMesh) stream(t *testing.T, digest string) *http.Response {
	t.Helper()
	base, client := c.relay.AsDownstream()
	req, err := http.NewRequest(http.MethodGet, base+"/v1/blobs/"+digest, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", meshtest.Bearer(c.relaySync))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.ContentLength <= 0 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("relay blob for a downstream while it arrives: want 200, a length and no-store, got %s, %d, %q",
			resp.Status, resp.ContentLength, resp.Header.Get("Cache-Control"))
	}
	return resp
}

// machineSeesNothing checks that the relay neither offers the patch to a
// machine nor serves it its blob.
func (c *cutThroughMesh) machineSeesNothing(t *testing.T, digest string) {
	t.Helper()
	if p, ok := c.relay.ClientPatch(t, c.relayMachine, kernel, arch); ok {
		t.Errorf("relay offers a patch to a machine before its blob is in: %+v", p)
	}
	got, err := c.relay.FetchBlob(context.Background(), digest, meshtest.Bearer(c.relayMachine))
	if err != nil || got.Status != http.StatusNotFound {
		t.Errorf("machine GET of a blob still arriving: want 404, got %+v, %v", got, err)
	}
}

// offers waits until n offers digest to a machine of its own, and checks
// that the blob it serves is content.
func offers(t *testing.T, n *meshtest.Node, machine, digest string, size int) {
	t.Helper()
	meshtest.WaitFor(t, 2*time.Minute, n.Name+" to offer the patch", func() error {
		p, ok := n.ClientPatch(t, machine, kernel, arch)
		if !ok || p.Digest != digest {
			return fmt.Errorf("offers %+v (found %v)", p, ok)
		}
		return nil
	})
	got, err := n.FetchBlob(context.Background(), digest, meshtest.Bearer(machine))
	if err != nil || got.Status != http.StatusOK || got.Digest != digest || got.Size != int64(size) {
		t.Errorf("%s: blob for a machine: want 200 with %d bytes hashing to %s, got %+v (%v)", n.Name, size, digest, got, err)
	}
}

func TestCutThroughRelaysBlobBeforeItIsIn(t *testing.T) {
	t.Parallel()
	const size, open = 8 << 20, 4 << 20
	c := newCutThroughMesh(t, open)
	edgeMachine := c.edge.Register(t, c.edge.AuthToken(t, "edge", "fleet"), "machine-edge-0000000001", kernel, arch)
	content := randomBytes(t, size)
	p := c.hub.Upload(t, content, meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.1"})
	c.awaitHeld(t)

	recs := c.pending(t)
	if len(recs) != 1 || recs[0].Patch.Digest != p.Digest {
		t.Fatalf("relay's feed while the blob arrives: want the patch's record pending, got %+v", recs)
	}
	resp := c.stream(t, p.Digest)
	first := make([]byte, open)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("read the bytes the relay holds so far: %v", err)
	}
	if string(first) != string(content[:open]) {
		t.Fatal("the relay streamed other bytes than the patch's")
	}
	// All this while the relay cannot have the blob: the gate holds it.
	if _, err := os.Stat(c.relay.BlobFile(p.Digest)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("relay holds the blob although half of it is still held back: %v", err)
	}
	c.machineSeesNothing(t, p.Digest)

	// A downstream whose stream broke resumes it with a Range request.
	const from = open - 1000
	base, client := c.relay.AsDownstream()
	req, err := http.NewRequest(http.MethodGet, base+"/v1/blobs/"+p.Digest, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", meshtest.Bearer(c.relaySync))
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", from))
	req.Header.Set("If-Range", `"`+p.Digest+`"`)
	resumed, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Body.Close()
	wantRange := fmt.Sprintf("bytes %d-%d/%d", from, size-1, size)
	if resumed.StatusCode != http.StatusPartialContent || resumed.Header.Get("Content-Range") != wantRange {
		t.Fatalf("resume of an arriving blob: want 206 with %q, got %s with %q", wantRange, resumed.Status, resumed.Header.Get("Content-Range"))
	}

	c.gate.Release()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != string(content[open:]) {
		t.Fatalf("rest of the stream: want %d bytes of the patch and a clean end, got %d (%v)", size-open, len(rest), err)
	}
	tail, err := io.ReadAll(resumed.Body)
	if err != nil || string(tail) != string(content[from:]) {
		t.Fatalf("resumed stream: want the %d bytes from %d and a clean end, got %d (%v)", size-from, from, len(tail), err)
	}
	offers(t, c.relay, c.relayMachine, p.Digest, size)
	offers(t, c.edge, edgeMachine, p.Digest, size)
}

func TestCutThroughRelayDigestFailureCutsDownstream(t *testing.T) {
	t.Parallel()
	const size, open = 8 << 20, 4 << 20
	c := newCutThroughMesh(t, open)
	edgeMachine := c.edge.Register(t, c.edge.AuthToken(t, "edge", "fleet"), "machine-edge-0000000001", kernel, arch)
	c.gate.corrupt.Store(size - 10 + 1) // a byte the gate still holds
	content := randomBytes(t, size)
	p := c.hub.Upload(t, content, meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.1"})
	c.awaitHeld(t)
	resp := c.stream(t, p.Digest)
	if _, err := io.ReadFull(resp.Body, make([]byte, open)); err != nil {
		t.Fatalf("read the bytes the relay holds so far: %v", err)
	}

	c.gate.Release()
	got, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("the relay's digest check failed, yet its stream ended cleanly after %d more bytes", len(got))
	}
	if int64(open+len(got)) >= size {
		t.Errorf("the cut stream passed on all %d bytes, the corrupt one included", size)
	}
	meshtest.WaitFor(t, 30*time.Second, "the relay's digest mismatch security event", func() error {
		for _, e := range c.relay.LogEvents("sync_record_fail") {
			if e["reason"] == "digest_mismatch" {
				return nil
			}
		}
		return errors.New("not logged")
	})
	if _, err := os.Stat(c.edge.BlobFile(p.Digest)); !errors.Is(err, os.ErrNotExist) {
		// The edge fetched the same corrupt stream; it must have dropped it.
		t.Errorf("edge committed a blob whose relayed stream was cut: %v", err)
	}
	c.machineSeesNothing(t, p.Digest)

	// Once the path is clean again the rounds retry and every hop ends
	// with the hub's bytes.
	c.gate.corrupt.Store(0)
	offers(t, c.relay, c.relayMachine, p.Digest, size)
	offers(t, c.edge, edgeMachine, p.Digest, size)
}

func TestCutThroughResumesAfterKills(t *testing.T) {
	t.Parallel()
	const size, open = 8 << 20, 4 << 20
	c := newCutThroughMesh(t, open)
	edgeMachine := c.edge.Register(t, c.edge.AuthToken(t, "edge", "fleet"), "machine-edge-0000000001", kernel, arch)
	content := randomBytes(t, size)
	p := c.hub.Upload(t, content, meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.1"})
	c.awaitHeld(t)

	// The edge streams the relay's arriving blob into its staging area;
	// kill -9 it mid-stream, then the relay mid-transfer.
	staged := func(n *meshtest.Node) (int64, error) {
		entries, err := os.ReadDir(filepath.Join(n.Config.BlobPath(), "tmp"))
		if err != nil {
			return 0, err
		}
		var most int64
		for _, e := range entries {
			if fi, err := e.Info(); err == nil {
				most = max(most, fi.Size())
			}
		}
		return most, nil
	}
	meshtest.WaitFor(t, 60*time.Second, "the edge to stage the relay's arriving bytes", func() error {
		n, err := staged(c.edge)
		if err != nil || n < open {
			return fmt.Errorf("edge staged %d of %d bytes (%v)", n, open, err)
		}
		return nil
	})
	c.edge.Kill(t)
	c.edge.Start(t)
	c.relay.Kill(t)
	c.relay.Start(t)
	c.gate.Release()

	offers(t, c.relay, c.relayMachine, p.Digest, size)
	offers(t, c.edge, edgeMachine, p.Digest, size)
	for _, n := range []*meshtest.Node{c.relay, c.edge} {
		if got, err := staged(n); err != nil || got != 0 {
			t.Errorf("%s: staged bytes left after the transfer: %d (%v)", n.Name, got, err)
		}
	}
}
