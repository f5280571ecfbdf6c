package topology

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fastPool is fast's timing as one named pool.
func fastPool(t *testing.T, name string, keys [][]byte, join ...string) Pool {
	c := fast(t, "", keys, join...)
	return Pool{Name: name, BindAddr: c.BindAddr, Profile: c.Profile, Join: join,
		ProbeInterval: c.ProbeInterval, ProbeTimeout: c.ProbeTimeout, GossipInterval: c.GossipInterval,
		PushPullInterval: c.PushPullInterval, SuspicionMult: c.SuspicionMult, Keys: keys}
}

// pooled is a Config of the node name in pools.
func pooled(name string, rec *recorder, pools ...Pool) Config {
	c := Config{Name: name, Pools: pools, JoinRetry: 200 * time.Millisecond, Log: testLog(),
		Meta: func() Meta { return Meta{Role: "relay", API: "http://" + name + ".test"} }}
	if rec != nil {
		c.OnChange = rec.on
	}
	return c
}

// addrOf is top's gossip address in pool.
func addrOf(t *testing.T, top *Topology, pool string) string {
	t.Helper()
	for _, p := range top.Stats().Pools {
		if p.Name == pool {
			return p.Addr
		}
	}
	t.Fatalf("no pool %s in %v", pool, top.PoolNames())
	return ""
}

// twoPools starts a backbone (hub, relay) and a region (relay, edges),
// the relay in both, each pool with its own key, and waits until each
// node sees its pools' members.
func twoPools(t *testing.T, edges ...string) (hub, relay *Topology, region []*Topology, recs map[string]*recorder) {
	t.Helper()
	backbone, regional := [][]byte{key(t)}, [][]byte{key(t)}
	recs = map[string]*recorder{}
	rec := func(name string) *recorder { recs[name] = &recorder{}; return recs[name] }
	hub = start(t, pooled("hub", rec("hub"), fastPool(t, "backbone", backbone)))
	relay = start(t, pooled("relay", rec("relay"),
		fastPool(t, "backbone", backbone, addrOf(t, hub, "backbone")),
		fastPool(t, "region-eu", regional)))
	for _, e := range edges {
		region = append(region, start(t, pooled(e, rec(e), fastPool(t, "region-eu", regional, addrOf(t, relay, "region-eu")))))
	}
	all := append([]string{"hub", "relay"}, edges...)
	slices.Sort(all)
	regionNames := append([]string{"relay"}, edges...)
	slices.Sort(regionNames)
	waitFor(t, 5*time.Second, "relay to see every member", func() (bool, string) { return seesAlive(relay, all...) })
	waitFor(t, 5*time.Second, "hub to see the backbone", func() (bool, string) { return seesAlive(hub, "hub", "relay") })
	for _, e := range region {
		waitFor(t, 5*time.Second, "an edge to see the region", func() (bool, string) { return seesAlive(e, regionNames...) })
	}
	return hub, relay, region, recs
}

func TestNodeInTwoPoolsSeesBothAndOthersOnlyTheirs(t *testing.T) {
	hub, relay, region, recs := twoPools(t, "edge-1")
	edge := region[0]

	wantPools := map[string][]string{"hub": {"backbone"}, "relay": {"backbone", "region-eu"}, "edge-1": {"region-eu"}}
	for _, m := range relay.Members() {
		if !reflect.DeepEqual(m.Pools, wantPools[m.Name]) {
			t.Errorf("relay's view of %s: pools %v, want %v", m.Name, m.Pools, wantPools[m.Name])
		}
	}
	// The hub and the edge share no pool: neither gossips with, or hears
	// of, the other, although the relay knows both.
	for _, c := range []struct {
		who      string
		top      *Topology
		stranger string
	}{{"hub", hub, "edge-1"}, {"edge-1", edge, "hub"}} {
		if m, ok := c.top.Member(c.stranger); ok {
			t.Errorf("%s knows %s, a member of none of its pools: %+v", c.who, c.stranger, m)
		}
		if m, ok := recs[c.who].any(func(m Member) bool { return m.Name == c.stranger }); ok {
			t.Errorf("%s heard of %s: %+v", c.who, c.stranger, m)
		}
	}
	if m, _ := edge.Member("relay"); !reflect.DeepEqual(m.Pools, []string{"region-eu"}) {
		t.Errorf("edge's view of the relay: pools %v, want its own pool only", m.Pools)
	}

	s := relay.Stats()
	if len(s.Pools) != 2 || s.Pools[0].Members[Alive] != 2 || s.Pools[1].Members[Alive] != 2 || s.Members[Alive] != 3 {
		t.Errorf("relay stats: want 2 alive in each pool and 3 merged, got %+v merged %v", s.Pools, s.Members)
	}
	if s.SentBytes != s.Pools[0].SentBytes+s.Pools[1].SentBytes || s.Pools[0].SentBytes == 0 || s.Pools[1].SentBytes == 0 {
		t.Errorf("relay's bytes sent: total %d, by pool %d + %d", s.SentBytes, s.Pools[0].SentBytes, s.Pools[1].SentBytes)
	}
	if v := relay.View(); !reflect.DeepEqual(v.Pools, []string{"backbone", "region-eu"}) || len(v.Nodes) != 3 {
		t.Errorf("relay's view: pools %v, %d nodes; want both pools and 3 nodes", v.Pools, len(v.Nodes))
	}
}

func TestMetaUpdatesReachEveryPool(t *testing.T) {
	backbone, regional := [][]byte{key(t)}, [][]byte{key(t)}
	hub := start(t, pooled("hub", nil, fastPool(t, "backbone", backbone)))
	var head atomic.Int64
	rc := pooled("relay", nil,
		fastPool(t, "backbone", backbone, addrOf(t, hub, "backbone")),
		fastPool(t, "region-eu", regional))
	rc.Meta = func() Meta { return Meta{Role: "relay", Version: strconv.FormatInt(head.Load(), 10)} }
	relay := start(t, rc)
	edge := start(t, pooled("edge", nil, fastPool(t, "region-eu", regional, addrOf(t, relay, "region-eu"))))
	waitFor(t, 5*time.Second, "relay sees both", func() (bool, string) { return seesAlive(relay, "edge", "hub", "relay") })

	head.Store(7)
	relay.UpdateMeta()
	for name, top := range map[string]*Topology{"hub": hub, "edge": edge} {
		waitFor(t, 5*time.Second, name+" to hear the relay's head 7", func() (bool, string) {
			m, _ := top.Member("relay")
			return m.Version == "7", summary(top.Members())
		})
	}
}

func TestKillInARegionIsSeenByTheRegionAndTheRelay(t *testing.T) {
	hub, relay, region, recs := twoPools(t, "edge-1", "edge-2")
	edge1, edge2 := region[0], region[1]
	edge1.Close()
	// Three members in the region: the bound for a pool of three.
	bound := deadBound(fast(t, "", nil), 3)
	for name, top := range map[string]*Topology{"relay": relay, "edge-2": edge2} {
		waitFor(t, bound, name+" to see edge-1 dead", func() (bool, string) {
			m, _ := top.Member("edge-1")
			return m.State == Dead, summary(top.Members())
		})
	}
	if m, ok := recs["relay"].any(func(m Member) bool { return m.Name == "edge-1" && m.State == Dead }); !ok {
		t.Errorf("relay's OnChange never reported edge-1 dead (got %v)", recs["relay"].states("edge-1"))
	} else if !slices.Equal(m.Pools, []string{"region-eu"}) {
		t.Errorf("edge-1's death reported with pools %v", m.Pools)
	}
	if _, ok := hub.Member("edge-1"); ok {
		t.Error("the hub, outside the region, learnt of edge-1")
	}
	// The relay stays alive for everyone.
	if ok, got := seesAlive(hub, "hub", "relay"); !ok {
		t.Errorf("hub: %s", got)
	}
}

func TestRelayLeavingIsLeftInBothPools(t *testing.T) {
	hub, relay, region, _ := twoPools(t, "edge-1")
	if err := relay.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	for name, top := range map[string]*Topology{"hub": hub, "edge-1": region[0]} {
		waitFor(t, 5*time.Second, name+" to see the relay left", func() (bool, string) {
			m, _ := top.Member("relay")
			return m.State == Left, summary(top.Members())
		})
	}
}

// The merge rule, on member tables as the pools' events leave them.
func TestMergedStatePrefersAliveThenLeft(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	type view struct {
		state      string
		since, hrd int
		api        string
	}
	tests := []struct {
		name      string
		a, b      *view // the member in pool a and pool b; nil: unknown there
		state     string
		since     int
		api       string
		wantPools []string
	}{
		{"alive in one pool only", &view{Alive, 1, 1, "a"}, nil, Alive, 1, "a", []string{"a"}},
		{"dead in one, alive in the other", &view{Dead, 5, 5, "a"}, &view{Alive, 2, 3, "b"}, Alive, 2, "b", []string{"a", "b"}},
		{"alive in both: freshest meta, first alive", &view{Alive, 2, 9, "a"}, &view{Alive, 1, 4, "b"}, Alive, 1, "a", []string{"a", "b"}},
		{"dead in both: since the last", &view{Dead, 5, 5, "a"}, &view{Dead, 7, 7, "b"}, Dead, 7, "b", []string{"a", "b"}},
		{"left in one, dead in the other", &view{Left, 5, 5, "a"}, &view{Dead, 6, 6, "b"}, Left, 6, "b", []string{"a", "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			top := &Topology{}
			for _, pn := range []string{"a", "b"} {
				v := map[string]*view{"a": tc.a, "b": tc.b}[pn]
				p := &pool{t: top, name: pn, members: map[string]*entry{}}
				if v != nil {
					p.members["x"] = &entry{Member: Member{Meta: Meta{Name: "x", API: v.api}, Addr: pn + ":7946", State: v.state, Since: at(v.since)}, heard: at(v.hrd)}
				}
				top.pools = append(top.pools, p)
			}
			m, ok := top.merged("x")
			if !ok {
				t.Fatal("x not found")
			}
			if m.State != tc.state || !m.Since.Equal(at(tc.since)) || m.API != tc.api || !slices.Equal(m.Pools, tc.wantPools) {
				t.Errorf("got %s since %v, api %q, pools %v; want %s since %v, api %q, pools %v",
					m.State, m.Since, m.API, m.Pools, tc.state, at(tc.since), tc.api, tc.wantPools)
			}
			if want := tc.wantPools[0] + ":7946"; m.Addr != want {
				t.Errorf("addr %s, want the first pool's %s", m.Addr, want)
			}
		})
	}
}

func TestPoolConfigIsChecked(t *testing.T) {
	k := [][]byte{key(t)}
	p := func(name string) Pool { return Pool{Name: name, BindAddr: "127.0.0.1", Keys: k, Profile: "local"} }
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"flat fields beside pools", Config{Name: "n", BindAddr: "127.0.0.1", Pools: []Pool{p("a")}}, "not in Config"},
		{"pool without a name", Config{Name: "n", Pools: []Pool{p("")}}, "without a name"},
		{"pool twice", Config{Name: "n", Pools: []Pool{p("a"), p("a")}}, `pool "a" twice`},
		{"pool without keys", Config{Name: "n", Pools: []Pool{p("a"), {Name: "b"}}}, ErrNoKeys.Error()},
		{"bad profile in a pool", Config{Name: "n", Pools: []Pool{p("a"), {Name: "b", Keys: k, Profile: "moon"}}}, "unknown profile"},
	} {
		top, err := Start(context.Background(), tc.cfg)
		if top != nil {
			top.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want an error with %q, got %v", tc.name, tc.want, err)
		}
	}
}

func TestKeysChangeOnlyTheNamedPools(t *testing.T) {
	_, relay, _, _ := twoPools(t)
	fresh := key(t)
	if err := relay.InstallKey(fresh, "region-eu", "nowhere"); !errors.Is(err, ErrNoPool) {
		t.Errorf("a key for an unknown pool: want ErrNoPool, got %v", err)
	}
	if got := len(relay.pools[1].keyring.GetKeys()); got != 1 {
		t.Errorf("a refused install changed the region's keyring: %d keys", got)
	}
	if err := relay.InstallKey(fresh, "region-eu"); err != nil {
		t.Fatal(err)
	}
	if b, r := len(relay.pools[0].keyring.GetKeys()), len(relay.pools[1].keyring.GetKeys()); b != 1 || r != 2 {
		t.Errorf("after installing in region-eu: backbone %d keys, region %d; want 1 and 2", b, r)
	}
	if err := relay.InstallKey(fresh); err != nil {
		t.Fatal(err)
	}
	if b := len(relay.pools[0].keyring.GetKeys()); b != 2 {
		t.Errorf("after installing in every pool: backbone %d keys, want 2", b)
	}
}

// Lookups by URL merge only the members that match, and pick the
// healthiest: the same peer URL on a dead old name and a live new one.
func TestLookupsByURLPreferTheLiveMember(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	top := &Topology{retain: time.Hour * 1e4}
	a := &pool{t: top, name: "a", members: map[string]*entry{}}
	b := &pool{t: top, name: "b", members: map[string]*entry{}}
	top.pools = []*pool{a, b}
	add := func(p *pool, name, api, peer, state string, self bool) {
		p.members[name] = &entry{Member: Member{Meta: Meta{Name: name, API: api, Peer: peer}, State: state, Since: t0, Self: self}, heard: t0}
	}
	add(a, "old", "https://r.example", "https://r.example:9443", Dead, false)
	add(b, "new", "https://r.example/", "https://r.example:9443/", Alive, false)
	add(a, "me", "https://me.example", "https://me.example:9443", Alive, true)
	add(b, "other", "https://o.example", "https://o.example:9443", Alive, false)
	if m, ok := top.ByPeer("https://r.example:9443"); !ok || m.Name != "new" {
		t.Errorf("ByPeer: got %q (%v), want the live new", m.Name, ok)
	}
	if m, ok := top.ByAPI("https://r.example/"); !ok || m.Name != "new" {
		t.Errorf("ByAPI: got %q (%v), want the live new", m.Name, ok)
	}
	if m, ok := top.ByPeer("https://me.example:9443"); ok {
		t.Errorf("ByPeer found this node itself: %+v", m)
	}
	if _, ok := top.ByPeer(""); ok {
		t.Error("ByPeer of no URL found a member")
	}
}

// TestLateLeaveIntentRenamesARecentDeath covers a busy node that observes
// memberlist's leave (UDP) before the member's leave intent (TCP): a
// member dead for a moment is then named left, and the change is heard;
// one dead for long, or alive, is not turned left by it.
func TestLateLeaveIntentRenamesARecentDeath(t *testing.T) {
	heard := make(chan Member, 4)
	top := &Topology{notes: newNotifier(func(m Member) { heard <- m })}
	t.Cleanup(top.notes.stop)
	p := &pool{t: top, name: "default", members: map[string]*entry{}}
	top.pools = []*pool{p}
	now := time.Now()
	p.members["recent"] = &entry{Member: Member{Meta: Meta{Name: "recent"}, State: Dead, Since: now.Add(-time.Second)}, heard: now}
	p.members["long"] = &entry{Member: Member{Meta: Meta{Name: "long"}, State: Dead, Since: now.Add(-time.Minute)}, heard: now}
	p.members["alive"] = &entry{Member: Member{Meta: Meta{Name: "alive"}, State: Alive, Since: now}, heard: now}

	for _, n := range []string{"recent", "long", "alive", "unknown"} {
		p.heardLeaveIntent(n)
	}
	if e := p.members["recent"]; e.State != Left || !e.leaving {
		t.Errorf("a member dead for a second, then its intent: want left, got %+v", e.Member)
	}
	if e := p.members["long"]; e.State != Dead {
		t.Errorf("a member dead for a minute, then an intent: want still dead, got %+v", e.Member)
	}
	if e := p.members["alive"]; e.State != Alive || !e.leaving {
		t.Errorf("an alive member's intent: want alive and leaving, got %+v (leaving %v)", e.Member, e.leaving)
	}
	select {
	case m := <-heard:
		if m.Name != "recent" || m.State != Left {
			t.Errorf("heard %+v, want recent left", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the rename was not heard")
	}
}

func TestLiveAtMatchesJoinAddressesToMembers(t *testing.T) {
	live := map[string]bool{"127.0.0.1:7946": true, "[::1]:7946": true, "[::1]:7947": true}
	for _, c := range []struct {
		join string
		want bool
	}{
		{"127.0.0.1:7946", true},
		{"127.0.0.1:7947", false},         // another port
		{"[::ffff:127.0.0.1]:7946", true}, // memberlist gives IPv4 unmapped
		{"[::1]:7947", true},
		{"localhost:7946", true}, // resolved, to either
		{"127.0.0.1", false},     // no port: memberlist's default, always tried
		{"no-such-host.invalid:7946", false},
	} {
		if got := liveAt(c.join, live); got != c.want {
			t.Errorf("liveAt(%q): want %v, got %v", c.join, c.want, got)
		}
	}
}
