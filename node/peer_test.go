package node

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/topology"
)

// blobBytesServed reads the hub's patchmesh_blob_served_bytes_total.
func blobBytesServed(t *testing.T, base string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "patchmesh_blob_served_bytes_total "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatal("no patchmesh_blob_served_bytes_total in /metrics")
	return 0
}

// Three nodes of one data centre, all linked to the hub, get a new blob
// while the hub sends it about once: the designated node fetches it, the
// others take it from that peer.
func TestSameDCNodesFetchFromEachOther(t *testing.T) {
	key, err := topology.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{base64.StdEncoding.EncodeToString(key)}
	hubCfg := testConfig(t)
	hubCfg.Node.Name, hubCfg.Node.Datacenter = "hub", "dc-hub"
	hubCfg.Gossip.Bind, hubCfg.Gossip.Profile, hubCfg.Gossip.Keys = freeGossipAddr(t, "127.0.0.1"), "local", keys
	hub := startNode(t, hubCfg)
	pub := federation.FormatPublicKey(hub.node.hubKey.Public().(ed25519.PublicKey))

	// The three edges know each other's node keys from the start (as a
	// join would pin them), and reach each other over their peer
	// listeners' mutual TLS.
	var dirs, peerKeys []string
	for range 3 {
		dir := t.TempDir()
		key, _, err := federation.LoadOrCreateNodeKey(filepath.Join(dir, "node.key"))
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
		peerKeys = append(peerKeys, federation.FormatPublicKey(key.Public().(ed25519.PublicKey)))
	}
	var nodes []*running
	for i := range 3 {
		secret, tok, err := auth.NewToken(catalog.TokenSync)
		if err != nil {
			t.Fatal(err)
		}
		tok.Tier, tok.Name, tok.Created = "edge", fmt.Sprintf("dc-b-%d", i), time.Now()
		if err := hub.node.store.AddToken(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
		c := testConfig(t)
		c.Node.Name, c.Node.Role, c.Node.Datacenter = fmt.Sprintf("b%d", i), RoleEdge, "dc-b"
		c.Node.DataDir = dirs[i]
		c.Server.PeerListen = "127.0.0.1:0"
		c.Sync.PeerKeys = peerKeys
		c.Sync.Trust = []string{pub}
		c.Sync.Wait = 5 * time.Second
		c.Sync.Links = []LinkConfig{{Tier: "edge", Upstreams: []UpstreamConfig{{URL: hub.url, Token: secret, AllowHTTP: true}}}}
		c.Gossip.Bind, c.Gossip.Profile, c.Gossip.Keys = freeGossipAddr(t, "127.0.0.1"), "local", keys
		c.Gossip.Join = []string{hubCfg.Gossip.Bind}
		nodes = append(nodes, startNode(t, c))
	}
	// Every node must know its same-DC peers before the blob appears, or
	// each would think itself the designated fetcher.
	if !waitFor(func() bool {
		for _, n := range nodes {
			if len(n.node.gossip.Nodes("edge")) != 4 {
				return false
			}
		}
		return true
	}, 15*time.Second) {
		t.Fatal("the four nodes never all saw each other")
	}

	before := blobBytesServed(t, hub.url)
	content := make([]byte, 4<<20)
	rand.Read(content)
	d := blob.FromBytes(content)
	if _, err := blob.Put(t.Context(), hub.node.blobs, d, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.node.store.AddPatch(t.Context(), catalog.Patch{Digest: string(d), Kernel: "5.15.0-107.117-generic",
		Arch: "x86_64", Version: "1.0", Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	if !waitFor(func() bool {
		for _, n := range nodes {
			if p, err := n.node.store.Patch(t.Context(), string(d)); err != nil || len(p.Tiers) == 0 {
				return false
			}
		}
		return true
	}, 30*time.Second) {
		t.Fatal("the patch did not reach all three nodes")
	}
	sent := blobBytesServed(t, hub.url) - before
	if sent > 1.5*float64(len(content)) {
		t.Errorf("hub sent %.0f bytes for a %d-byte blob to one data centre of three nodes: want about one copy", sent, len(content))
		for _, n := range nodes {
			for _, l := range strings.Split(n.log.String(), "\n") {
				if strings.Contains(l, "peer") || strings.Contains(l, "fetch") || strings.Contains(l, "blob") {
					t.Logf("%s: %.1500s", n.node.cfg.Node.Name, l)
				}
			}
		}
	}
	for _, n := range nodes {
		rc, _, err := n.node.blobs.Open(t.Context(), d)
		if err != nil {
			t.Fatalf("%s: %v", n.node.cfg.Node.Name, err)
		}
		rc.Close()
	}
}
