package node

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/topology"
)

func freeGossipAddr(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Two nodes with gossip on find each other and tell each other what they
// are: the hub lists both for machines of a tier both serve, and a leaving
// node is seen to leave.
func TestNodesGossipTheirMeta(t *testing.T) {
	key, err := topology.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{base64.StdEncoding.EncodeToString(key)}
	hubCfg := testConfig(t)
	hubCfg.Node.Name, hubCfg.Node.Datacenter = "hub-1", "dc-a"
	hubCfg.Gossip.Bind, hubCfg.Gossip.Profile, hubCfg.Gossip.Keys = freeGossipAddr(t, "127.0.0.1"), "local", keys
	hub := startNode(t, hubCfg)

	edgeCfg := testConfig(t)
	edgeCfg.Node.Name, edgeCfg.Node.Role, edgeCfg.Node.Datacenter = "edge-1", RoleEdge, "dc-b"
	edgeCfg.Sync.Trust = []string{"ed25519:ei7gEASb__yzkdzFAkJeOQyoLb6dg7H4qpSDVYX_t2o"}
	edgeCfg.Sync.Links = []LinkConfig{{Tier: "stable", Upstreams: []UpstreamConfig{{URL: hub.url, Token: "pms_0123456789abcdef_x", AllowHTTP: true}}}}
	edgeCfg.Gossip.Bind, edgeCfg.Gossip.Profile, edgeCfg.Gossip.Keys = freeGossipAddr(t, "127.0.0.1"), "local", keys
	edgeCfg.Gossip.Join = []string{hubCfg.Gossip.Bind}
	edge := startNode(t, edgeCfg)

	ok := waitFor(func() bool {
		ns := hub.node.gossip.Nodes("stable")
		return len(ns) == 2
	}, 10*time.Second)
	if !ok {
		t.Fatalf("hub: want hub-1 and edge-1 serving stable, got %+v", hub.node.gossip.Nodes("stable"))
	}
	for _, n := range hub.node.gossip.Nodes("stable") {
		if n.Name == "edge-1" && (n.DC != "dc-b" || n.Role != RoleEdge || n.API != edge.url) {
			t.Errorf("edge-1 as the hub sees it: %+v", n)
		}
	}
	// The edge serves only its linked tier; the hub serves every tier.
	if ns := hub.node.gossip.Nodes("edge"); len(ns) != 1 || ns[0].Name != "hub-1" {
		t.Errorf("tier edge: want only the hub, got %+v", ns)
	}
	m, ok := edge.node.gossip.topo.Member("edge-1")
	if !ok || m.Upstream != hub.url || m.UpstreamsByTier()["stable"] != hub.url {
		t.Errorf("edge-1 meta: want upstream %s, for tier stable too, got %+v", hub.url, m)
	}
	if known, alive := edge.node.gossip.mesh.Health(hub.url); !known || !alive {
		t.Errorf("edge's view of its upstream: want known and alive, got %v %v", known, alive)
	}

	if err := edge.stop(); err != nil {
		t.Fatalf("edge stop: %v", err)
	}
	ok = waitFor(func() bool {
		m, ok := hub.node.gossip.topo.Member("edge-1")
		return ok && m.State == topology.Left
	}, 10*time.Second)
	if !ok {
		m, _ := hub.node.gossip.topo.Member("edge-1")
		t.Fatalf("after a clean stop: want edge-1 left, got %+v", m)
	}
	if ns := hub.node.gossip.Nodes("stable"); slices.ContainsFunc(ns, func(n api.NodeInfo) bool { return n.Name == "edge-1" }) {
		t.Errorf("a node that left is still offered to machines: %+v", ns)
	}
}

// A node whose join addresses do not answer yet still starts, and joins
// once a member is there.
func TestNodeStartsBeforeItsGossipPeers(t *testing.T) {
	key, err := topology.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{base64.StdEncoding.EncodeToString(key)}
	laterAddr := freeGossipAddr(t, "127.0.0.1")
	early := testConfig(t)
	early.Node.Name = "early"
	early.Gossip.Bind, early.Gossip.Profile, early.Gossip.Keys = freeGossipAddr(t, "127.0.0.1"), "local", keys
	early.Gossip.Join = []string{laterAddr}
	e := startNode(t, early)

	later := testConfig(t)
	later.Node.Name = "later"
	later.Gossip.Bind, later.Gossip.Profile, later.Gossip.Keys = laterAddr, "local", keys
	startNode(t, later)
	if !waitFor(func() bool {
		m, ok := e.node.gossip.topo.Member("later")
		return ok && m.State == topology.Alive
	}, 20*time.Second) {
		t.Fatal("the early node never joined the later one")
	}
}

// Two nodes on one host with no names configured get distinct default
// names and see each other; a third named like the first is refused at
// start, saying why.
func TestDefaultNamesDifferAndADuplicateIsRefused(t *testing.T) {
	key, err := topology.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{base64.StdEncoding.EncodeToString(key)}
	unnamed := func(join ...string) Config {
		c := testConfig(t)
		c.Node.Name = ""
		c.Gossip.Bind, c.Gossip.Profile, c.Gossip.Keys, c.Gossip.Join = freeGossipAddr(t, "127.0.0.1"), "local", keys, join
		return c
	}
	aCfg := unnamed()
	a := startNode(t, aCfg)
	b := startNode(t, unnamed(aCfg.Gossip.Bind))
	host, _ := os.Hostname()
	_, aPort, _ := net.SplitHostPort(a.node.Addr())
	if got, want := a.node.cfg.Node.Name, DefaultName(host, aPort); got != want {
		t.Errorf("default name: got %q, want %q", got, want)
	}
	if a.node.cfg.Node.Name == b.node.cfg.Node.Name {
		t.Fatalf("two nodes on one host share the default name %q", a.node.cfg.Node.Name)
	}
	if !waitFor(func() bool { return len(a.node.gossip.Nodes("edge")) == 2 }, 10*time.Second) {
		t.Fatalf("want both default-named nodes in gossip, got %+v", a.node.gossip.Nodes("edge"))
	}

	dup := testConfig(t)
	dup.Node.Name = a.node.cfg.Node.Name
	dup.Gossip.Bind, dup.Gossip.Profile, dup.Gossip.Keys, dup.Gossip.Join = freeGossipAddr(t, "127.0.0.1"), "local", keys, []string{aCfg.Gossip.Bind}
	n, err := New(context.Background(), dup, nil, WithConsole(&syncBuffer{}))
	if err == nil {
		n.Close()
	}
	if !errors.Is(err, topology.ErrNameConflict) || !strings.Contains(err.Error(), aCfg.Gossip.Bind) {
		t.Fatalf("a node named like a member: want ErrNameConflict naming %s, got %v", aCfg.Gossip.Bind, err)
	}
}

// Gossip meta carries the tiers a node serves, read again after a write to
// its store, and no sync progress; the node's own head in its view is the
// store's, read when the view is built.
func TestGossipTiersFollowTheStoreAndTheViewItsHead(t *testing.T) {
	key, err := topology.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Node.Name = "hub-1"
	cfg.Gossip.Bind, cfg.Gossip.Profile = freeGossipAddr(t, "127.0.0.1"), "local"
	cfg.Gossip.Keys = []string{base64.StdEncoding.EncodeToString(key)}
	hub := startNode(t, cfg)
	self := func() topology.ViewNode {
		for _, n := range hub.node.gossip.View().Nodes {
			if n.Name == "hub-1" {
				return n
			}
		}
		t.Fatal("hub-1 is not in its own view")
		return topology.ViewNode{}
	}
	for i := range 2 {
		d := blob.FromBytes([]byte{byte(i)})
		if _, err := hub.node.store.AddPatch(t.Context(), catalog.Patch{Digest: string(d), Kernel: "5.15.0-107.117-generic",
			Arch: "x86_64", Version: "1." + strconv.Itoa(i), Size: 1}); err != nil {
			t.Fatal(err)
		}
		want, err := hub.node.store.Head(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if n := self(); n.Head != want || n.ProgressAsOf.IsZero() {
			t.Fatalf("patch %d: the view's own head %d (as of %v), want the store's %d at once", i, n.Head, n.ProgressAsOf, want)
		}
	}
	if _, err := hub.node.store.AddTier(t.Context(), "canary"); err != nil {
		t.Fatal(err)
	}
	// The watch's one-second tick and a margin.
	if !waitFor(func() bool { m, _ := hub.node.gossip.topo.Member("hub-1"); return slices.Contains(m.Tiers, "canary") }, 3*time.Second) {
		m, _ := hub.node.gossip.topo.Member("hub-1")
		t.Fatalf("a new tier: want tiers with canary advertised, got %v", m.Tiers)
	}
}
