package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/topology"
)

// fixedView stands in for gossip, which the topology tests run for real.
type fixedView topology.View

func (f fixedView) View() topology.View { return topology.View(f) }

var topoNow = time.Date(2026, 11, 23, 12, 30, 0, 0, time.UTC)

func viewNode(name, role, dc, up, state string, head, lag int64) topology.ViewNode {
	return topology.ViewNode{Name: name, Role: role, DC: dc, URL: "https://" + name + ".example", Upstream: up, State: state,
		Since: time.Date(2026, 11, 23, 12, 3, 4, 0, time.UTC), Head: head, Lag: lag, ProgressAsOf: topoNow, Tiers: []string{}}
}

// meshView is a hub, two regions and their edges: one edge dead since
// 12:03:04 today, one region left.
func meshView() topology.View {
	link := func(from, to string, lag int64, healthy bool) topology.ViewLink {
		return topology.ViewLink{From: from, To: to, FromURL: "https://" + from + ".example", LagEvents: lag, Healthy: healthy}
	}
	return topology.View{
		Self: "hub-1",
		Nodes: []topology.ViewNode{
			viewNode("edge-a1", "edge", "dc-a", "https://region-a.example", topology.Alive, 40, 0),
			viewNode("edge-a2", "edge", "dc-a", "https://region-a.example", topology.Dead, 30, 7),
			viewNode("edge-b1", "edge", "dc-b", "https://region-b.example", topology.Alive, 12, 3),
			viewNode("hub-1", "hub", "dc-a", "", topology.Alive, 120, 0),
			viewNode("region-a", "relay", "dc-a", "https://hub-1.example", topology.Alive, 80, 0),
			viewNode("region-b", "relay", "dc-b", "https://hub-1.example", topology.Left, 70, 3),
		},
		Links: []topology.ViewLink{
			link("region-a", "edge-a1", 0, true),
			link("region-a", "edge-a2", 7, false),
			link("region-b", "edge-b1", 3, false),
			link("hub-1", "region-a", 0, true),
			link("hub-1", "region-b", 3, false),
		},
	}
}

// meshDrawing is meshView drawn.
const meshDrawing = `NODE             ROLE   DC    STATE                  SYNC
hub-1            hub    dc-a  alive                  head 120
├── region-a     relay  dc-a  alive                  lag 0
│   ├── edge-a1  edge   dc-a  alive                  lag 0
│   └── edge-a2  edge   dc-a  dead (since 12:03:04)  -
└── region-b     relay  dc-b  left (since 12:03:04)  -
    └── edge-b1  edge   dc-b  alive                  lag 3
`

func TestRenderTopologyDrawsTheTreeFromTheHub(t *testing.T) {
	var b bytes.Buffer
	if err := renderTopology(&b, meshView(), topoNow); err != nil {
		t.Fatal(err)
	}
	if b.String() != meshDrawing {
		t.Errorf("rendered:\n%s\nwant:\n%s", b.String(), meshDrawing)
	}
}

// poolsView is the mesh of e2e's TestTopologyPoolsMergeAndTheRegionFailsOver
// as the node self sees it: the hub and relay-top in the backbone pool;
// relay-top, relay-other (which pulls from the hub) and the edge (which
// pulls from relay-top) in region-eu. Each node's view holds the members
// of self's pools, each named with self's pools that know it.
func poolsView(self string) topology.View {
	const backbone, region = "backbone", "region-eu"
	inPools := func(n topology.ViewNode, pools ...string) topology.ViewNode {
		n.Since, n.Pools = time.Time{}, pools
		return n
	}
	link := func(from, to string) topology.ViewLink {
		return topology.ViewLink{From: from, To: to, FromURL: "https://" + from + ".example", Healthy: true}
	}
	hub := viewNode("hub", "hub", "dc-hub", "", topology.Alive, 12, 0)
	top := viewNode("relay-top", "relay", "dc-eu", "https://hub.example", topology.Alive, 12, 0)
	other := viewNode("relay-other", "relay", "dc-eu-2", "https://hub.example", topology.Alive, 12, 0)
	edge := viewNode("edge", "edge", "dc-eu-3", "https://relay-top.example", topology.Alive, 10, 2)
	v := topology.View{Self: self}
	switch self {
	case "hub":
		v.Pools = []string{backbone}
		v.Nodes = []topology.ViewNode{inPools(hub, backbone), inPools(top, backbone)}
		v.Links = []topology.ViewLink{link("hub", "relay-top")}
	case "relay-top":
		v.Pools = []string{backbone, region}
		v.Nodes = []topology.ViewNode{inPools(edge, region), inPools(hub, backbone),
			inPools(other, region), inPools(top, backbone, region)}
		v.Links = []topology.ViewLink{link("relay-top", "edge"), link("hub", "relay-other"), link("hub", "relay-top")}
	case "edge":
		// The hub gossips in the backbone only: the relays' upstream is
		// no member of the edge's view.
		v.Pools = []string{region}
		v.Nodes = []topology.ViewNode{inPools(edge, region), inPools(other, region), inPools(top, region)}
		unknown := link("hub", "relay-other")
		unknown.From, unknown.Healthy = "", false
		v.Links = []topology.ViewLink{link("relay-top", "edge"), unknown, {To: "relay-top", FromURL: unknown.FromURL}}
	}
	return v
}

func TestRenderTopologyShowsGossipPools(t *testing.T) {
	oneDefault := meshView()
	oneDefault.Pools = []string{topology.DefaultPool}
	for i := range oneDefault.Nodes {
		oneDefault.Nodes[i].Pools = []string{topology.DefaultPool}
	}
	// The hub in a second pool, an operators' one, which also knows
	// relay-top and a monitoring node.
	twoKnow := poolsView("hub")
	twoKnow.Pools = append(twoKnow.Pools, "ops")
	twoKnow.Nodes[1].Pools = append(twoKnow.Nodes[1].Pools, "ops")
	mon := viewNode("monitor", "relay", "dc-hub", "https://hub.example", topology.Alive, 12, 0)
	mon.Since, mon.Pools = time.Time{}, []string{"ops"}
	twoKnow.Nodes = append(twoKnow.Nodes, mon)
	twoKnow.Links = append(twoKnow.Links, topology.ViewLink{From: "hub", To: "monitor", FromURL: "https://hub.example", Healthy: true})

	for _, tc := range []struct {
		name string
		v    topology.View
		want string
	}{
		{"one default pool draws as without pools", oneDefault, meshDrawing},
		{"the hub sees the backbone only, and says so", poolsView("hub"),
			`hub gossips in pool backbone: members of other pools are not in this view (ask a node of that pool).

NODE           ROLE   DC      STATE  SYNC     POOLS
hub            hub    dc-hub  alive  head 12  backbone
└── relay-top  relay  dc-eu   alive  lag 0    backbone
`},
		{"a relay in both pools sees both", poolsView("relay-top"),
			`relay-top gossips in pools backbone, region-eu: members of other pools are not in this view (ask a node of that pool).

NODE             ROLE   DC       STATE  SYNC     POOLS
hub              hub    dc-hub   alive  head 12  backbone
├── relay-other  relay  dc-eu-2  alive  lag 0    region-eu
└── relay-top    relay  dc-eu    alive  lag 0    backbone,region-eu
    └── edge     edge   dc-eu-3  alive  lag 2    region-eu
`},
		{"an edge sees its region, whose upstream is in another pool", poolsView("edge"),
			`edge gossips in pool region-eu: members of other pools are not in this view (ask a node of that pool).

Not reachable from a node without upstream:
NODE         ROLE   DC       STATE  SYNC   POOLS      WHY
relay-other  relay  dc-eu-2  alive  lag 0  region-eu  upstream https://hub.example is in none of this node's pools
relay-top    relay  dc-eu    alive  lag 0  region-eu  upstream https://hub.example is in none of this node's pools
└── edge     edge   dc-eu-3  alive  lag 2  region-eu  below relay-top
`},
		{"a member two pools know lists both", twoKnow,
			`hub gossips in pools backbone, ops: members of other pools are not in this view (ask a node of that pool).

NODE           ROLE   DC      STATE  SYNC     POOLS
hub            hub    dc-hub  alive  head 12  backbone
├── monitor    relay  dc-hub  alive  lag 0    ops
└── relay-top  relay  dc-eu   alive  lag 0    backbone,ops
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := renderTopology(&b, tc.v, topoNow); err != nil {
				t.Fatal(err)
			}
			if b.String() != tc.want {
				t.Errorf("rendered:\n%s\nwant:\n%s", b.String(), tc.want)
			}
		})
	}
}

func TestRenderTopologyListsWhatNoRootReaches(t *testing.T) {
	v := meshView()
	// edge-x pulls from a node gossip does not know; c1 and c2 pull from
	// each other, with c3 below c2.
	v.Nodes = append(v.Nodes,
		viewNode("edge-x", "edge", "dc-c", "https://gone.example", topology.Alive, 5, 9),
		viewNode("c1", "relay", "dc-c", "https://c2.example", topology.Alive, 1, 1),
		viewNode("c2", "relay", "dc-c", "https://c1.example", topology.Alive, 1, 1),
		viewNode("c3", "edge", "dc-c", "https://c2.example", topology.Left, 1, 1),
		viewNode("x-child", "edge", "dc-c", "https://edge-x.example", topology.Alive, 1, 2),
	)
	v.Links = append(v.Links,
		topology.ViewLink{To: "edge-x", FromURL: "https://gone.example", LagEvents: 9},
		topology.ViewLink{From: "c2", To: "c1", FromURL: "https://c2.example", LagEvents: 1},
		topology.ViewLink{From: "c1", To: "c2", FromURL: "https://c1.example", LagEvents: 1},
		topology.ViewLink{From: "c2", To: "c3", FromURL: "https://c2.example", LagEvents: 1},
		topology.ViewLink{From: "edge-x", To: "x-child", FromURL: "https://edge-x.example", LagEvents: 2},
	)
	var b bytes.Buffer
	// The day after: times are shown in full; the progress is fresh.
	for i := range v.Nodes {
		v.Nodes[i].ProgressAsOf = topoNow.Add(24 * time.Hour)
	}
	if err := renderTopology(&b, v, topoNow.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	main, lost, ok := strings.Cut(out, "Not reachable from a node without upstream:\n")
	if !ok {
		t.Fatalf("no section for unreachable nodes:\n%s", out)
	}
	if !strings.Contains(main, "dead (since 2026-11-23T12:03:04Z)") {
		t.Errorf("a dead node's time on another day should be in full:\n%s", main)
	}
	for _, name := range []string{"edge-x", "c1", "c2", "c3", "x-child"} {
		if strings.Contains(main, name) {
			t.Errorf("%s is drawn under the hub, but no root reaches it:\n%s", name, main)
		}
	}
	wantLost := `NODE         ROLE   DC    STATE                              SYNC   WHY
edge-x       edge   dc-c  alive                              lag 9  upstream https://gone.example is no known member
└── x-child  edge   dc-c  alive                              lag 2  below edge-x
c1           relay  dc-c  alive                              lag 1  in an upstream cycle
└── c2       relay  dc-c  alive                              lag 1  below c1
    └── c3   edge   dc-c  left (since 2026-11-23T12:03:04Z)  -      below c2
`
	if lost != wantLost {
		t.Errorf("unreachable nodes:\n%s\nwant:\n%s", lost, wantLost)
	}
}

func TestAdminTopology(t *testing.T) {
	n := newTestNode(t, func(c *api.Config) { c.Topology = fixedView(meshView()) })
	n.login()
	r := n.mustAdmin("topology")
	for _, want := range []string{"hub-1", "├── region-a", "│   └── edge-a2", "dead (since ", "└── region-b", "head 120"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("admin topology lacks %q:\n%s", want, r.stdout)
		}
	}
	r = n.mustAdmin("topology", "--output", "json")
	var got topology.View
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || !reflect.DeepEqual(got, meshView()) {
		t.Errorf("admin topology --output json = %s (%v), want the node's view", r.stdout, err)
	}
	if r := n.admin("", "topology", "extra"); r.code != exitUsage {
		t.Errorf("admin topology with an argument: exit %d, want %d", r.code, exitUsage)
	}

	// Without gossip the node shows itself alone.
	lone := newTestNode(t)
	lone.login()
	if r := lone.mustAdmin("topology"); !strings.Contains(r.stdout, "alive") || strings.Count(strings.TrimSpace(r.stdout), "\n") != 1 {
		t.Errorf("admin topology without gossip:\n%s\nwant a header and this node, alive", r.stdout)
	}
}

// The drawing of views real gossip builds: a hub in the backbone, a relay
// in the backbone and region-eu, an edge in region-eu, each pool with its
// own key, on loopback. The relay draws all three with its pools; the edge
// draws its region apart, the hub being in none of its pools.
func TestRenderTopologyOfRealGossipPools(t *testing.T) {
	keyOf := func() [][]byte {
		k, err := topology.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		return [][]byte{k}
	}
	backbone, region := keyOf(), keyOf()
	start := func(name, role, upstream string, pools ...topology.Pool) *topology.Topology {
		meta := topology.Meta{Role: role, DC: "dc-" + name, API: "https://" + name + ".example", Upstream: upstream, Tiers: []string{"edge"}}
		top, err := topology.Start(t.Context(), topology.Config{Name: name, Pools: pools, JoinRetry: 200 * time.Millisecond,
			Meta: func() topology.Meta { return meta }})
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() { top.Close() })
		return top
	}
	pool := func(name string, keys [][]byte, join ...string) topology.Pool {
		return topology.Pool{Name: name, BindAddr: "127.0.0.1", Profile: "local", Keys: keys, Join: join}
	}
	addr := func(top *topology.Topology, pool string) string {
		for _, p := range top.Stats().Pools {
			if p.Name == pool {
				return p.Addr
			}
		}
		t.Fatalf("no pool %s in %v", pool, top.PoolNames())
		return ""
	}
	hub := start("hub", "hub", "", pool("backbone", backbone))
	relay := start("relay", "relay", "https://hub.example",
		pool("backbone", backbone, addr(hub, "backbone")), pool("region-eu", region))
	edge := start("edge", "edge", "https://relay.example", pool("region-eu", region, addr(relay, "region-eu")))

	for _, tc := range []struct {
		top  *topology.Topology
		size int
		want string
	}{
		{hub, 2, `hub gossips in pool backbone: members of other pools are not in this view (ask a node of that pool).

NODE       ROLE   DC        STATE  SYNC    POOLS
hub        hub    dc-hub    alive  head ?  backbone
└── relay  relay  dc-relay  alive  lag ?   backbone
`},
		{relay, 3, `relay gossips in pools backbone, region-eu: members of other pools are not in this view (ask a node of that pool).

NODE          ROLE   DC        STATE  SYNC    POOLS
hub           hub    dc-hub    alive  head ?  backbone
└── relay     relay  dc-relay  alive  lag ?   backbone,region-eu
    └── edge  edge   dc-edge   alive  lag ?   region-eu
`},
		{edge, 2, `edge gossips in pool region-eu: members of other pools are not in this view (ask a node of that pool).

Not reachable from a node without upstream:
NODE      ROLE   DC        STATE  SYNC   POOLS      WHY
relay     relay  dc-relay  alive  lag ?  region-eu  upstream https://hub.example is in none of this node's pools
└── edge  edge   dc-edge   alive  lag ?  region-eu  below relay
`},
	} {
		// Bounded: gossip on loopback converges in well under a second.
		var v topology.View
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if v = tc.top.View(); len(v.Nodes) == tc.size {
				break
			}
		}
		var b bytes.Buffer
		if err := renderTopology(&b, v, topoNow); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("%s's view %+v drawn:\n%s\nwant:\n%s", v.Self, v, b.String(), tc.want)
		}
	}
}

// The pools are drawn in the text only: --output json stays the node's view.
func TestAdminTopologyDrawsPoolsAndKeepsJSONRaw(t *testing.T) {
	n := newTestNode(t, func(c *api.Config) { c.Topology = fixedView(poolsView("relay-top")) })
	n.login()
	r := n.mustAdmin("topology")
	for _, want := range []string{"relay-top gossips in pools backbone, region-eu", "POOLS", "backbone,region-eu"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("admin topology lacks %q:\n%s", want, r.stdout)
		}
	}
	r = n.mustAdmin("topology", "--output", "json")
	var got topology.View
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || !reflect.DeepEqual(got, poolsView("relay-top")) {
		t.Errorf("admin topology --output json = %s (%v), want the node's view", r.stdout, err)
	}
}

func TestGossipKeyPrintsNewKeys(t *testing.T) {
	gossipKey := func(args ...string) result {
		var stdout, stderr bytes.Buffer
		code := runGossipKey(args, &stdout, &stderr)
		return result{code, stdout.String(), stderr.String()}
	}
	first, second := gossipKey(), gossipKey()
	for _, r := range []result{first, second} {
		if r.code != exitOK {
			t.Fatalf("gossip-key: exit %d, stderr %q; want 0", r.code, r.stderr)
		}
		k, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(r.stdout, "\n"))
		if err != nil || len(k) != 32 {
			t.Errorf("gossip-key printed %q: %d bytes, %v; want 32 bytes of standard base64", r.stdout, len(k), err)
		}
		if _, err := topology.ParseKeys(r.stdout); err != nil {
			t.Errorf("gossip-key printed %q, which the keyring does not take: %v", r.stdout, err)
		}
	}
	if first.stdout == second.stdout {
		t.Errorf("two gossip-key runs printed the same key %q", first.stdout)
	}
	if r := gossipKey("extra"); r.code != exitUsage {
		t.Errorf("gossip-key with an argument: exit %d, want %d", r.code, exitUsage)
	}
	if r := gossipKey("--help"); r.code != exitOK || !strings.Contains(r.stdout, "gossip.keys") {
		t.Errorf("gossip-key --help: exit %d, %q; want the usage", r.code, r.stdout)
	}
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"gossip-key"}, &stdout, &stderr); code != exitOK || len(stdout.String()) != 45 {
		t.Errorf("patchmesh gossip-key: exit %d, %q; want a 44-character key and a newline", code, stdout.String())
	}
}

// A node's progress shows its age once it is older than a few seconds, and
// a "?" where the asked node does not know it (progress travels up the
// sync links, so a node knows only its own and its subtree's).
func TestTopologyProgressShowsAgeAndUnknown(t *testing.T) {
	tree := &topologyTree{now: topoNow}
	for _, tc := range []struct {
		n    topology.ViewNode
		want string
	}{
		{viewNode("hub-1", "hub", "dc-a", "", topology.Alive, 120, 0), "head 120"},
		{viewNode("edge-1", "edge", "dc-a", "https://hub-1.example", topology.Alive, 40, 2), "lag 2"},
		{func() topology.ViewNode {
			n := viewNode("edge-2", "edge", "dc-a", "https://hub-1.example", topology.Alive, 40, 1)
			n.ProgressAsOf = topoNow.Add(-70*time.Second - 300*time.Millisecond)
			return n
		}(), "lag 1 (1m10s ago)"},
		{func() topology.ViewNode {
			n := viewNode("edge-3", "edge", "dc-a", "https://hub-1.example", topology.Alive, 0, 0)
			n.ProgressAsOf = time.Time{}
			return n
		}(), "lag ?"},
		{viewNode("edge-4", "edge", "dc-a", "https://hub-1.example", topology.Dead, 40, 0), "-"},
	} {
		if got := tree.progress(tc.n); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.n.Name, got, tc.want)
		}
	}
}
