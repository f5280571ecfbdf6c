package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSmallMeshRunsEveryMeasurement runs the simulator as the benchmarks
// do, on seven nodes (a hub, two relays, four edges) with the local gossip
// profile, and checks that each measurement saw what it reports: the patch
// on every node, the hub sending it once per direct child, the killed edge
// seen dead by every other node, the killed relay's edges served through
// their second upstream. It bounds itself with the simulator's own
// timeouts.
func TestSmallMeshRunsEveryMeasurement(t *testing.T) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Fatalf("meshsim wants a tmpfs at /dev/shm: %v", err)
	}
	const size = 64 << 10
	c := config{
		shapeCounts: "1,2,4",
		dir:         t.TempDir(),
		// An address block of this run's own, away from meshtest's
		// 127.0.0.x, so that runs side by side do not collide.
		net:        fmt.Sprintf("127.%d", 100+rand.IntN(150)),
		httpPort:   8080,
		gossipPort: 7946,
		profile:    "local",
		parallel:   4,
		within:     45 * time.Second,
		timeout:    3 * time.Minute,
		settle:     time.Second,
		idle:       2 * time.Second,
		patches:    1,
		patchSize:  size,
		poll:       10 * time.Millisecond,
		measure:    map[string]bool{},
	}
	for _, m := range allMeasures {
		c.measure[m] = true
	}
	var out strings.Builder
	r, err := run(context.Background(), c, io.MultiWriter(&out, testWriter{t}))
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(r.Arrivals) != 6 {
		t.Errorf("propagation: want 6 arrivals (every node but the hub), got %d", len(r.Arrivals))
	}
	// Two direct children: the blob twice, plus feed and heartbeat bytes.
	if len(r.HubEgress) != 1 || r.HubEgress[0] < 2*size || r.HubEgress[0] > 3*size {
		t.Errorf("hub egress: want between 2 and 3 times %d bytes for one patch, got %v", size, r.HubEgress)
	}
	if len(r.SeenDead) != 6 || r.NotSeen != 0 {
		t.Errorf("kill: want the dead edge seen by all 6 others, got %d seen, %d not", len(r.SeenDead), r.NotSeen)
	}
	if r.Subtree != 2 || len(r.Failover) != 2 {
		t.Errorf("failover: want the killed relay's 2 edges served, got subtree %d, %d arrivals", r.Subtree, len(r.Failover))
	}
	if len(r.IdleGossip) != 7 || slices.Min(r.IdleGossip) <= 0 {
		t.Errorf("idle gossip: want a positive rate for each of 7 nodes, got %v", r.IdleGossip)
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil || len(entries) != 0 {
		t.Errorf("cleanup: want %s empty after the run, got %v (%v)", c.dir, entries, err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestTreeShapeSpreadsLevelsAndGivesSecondUpstreams(t *testing.T) {
	s, err := treeShape([]int{1, 10, 100, 889})
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 1000 {
		t.Fatalf("want 1000 nodes, got %d", len(s))
	}
	if got := len(s.children(0)); got != 10 {
		t.Errorf("hub: want 10 children, got %d", got)
	}
	roles := map[string]int{}
	for i, sp := range s {
		roles[sp.Role]++
		if i == 0 {
			continue
		}
		p := s[sp.Upstreams[0]]
		if p.Level != sp.Level-1 {
			t.Errorf("%s (level %d): parent %s is at level %d", sp.Name, sp.Level, p.Name, p.Level)
		}
		if sp.Level >= 2 {
			if len(sp.Upstreams) != 2 {
				t.Errorf("%s: want a second upstream, got %v", sp.Name, sp.Upstreams)
				continue
			}
			second := s[sp.Upstreams[1]]
			if second.Level != p.Level || second.Upstreams[0] != p.Upstreams[0] || second.Name == p.Name {
				t.Errorf("%s: second upstream %s is not a sibling of its parent %s", sp.Name, second.Name, p.Name)
			}
			if sp.DC != p.DC {
				t.Errorf("%s: data centre %s differs from its parent's %s", sp.Name, sp.DC, p.DC)
			}
		}
	}
	if want := map[string]int{"hub": 1, "relay": 110, "edge": 889}; !maps.Equal(roles, want) {
		t.Errorf("roles: want %v, got %v", want, roles)
	}
	// A relay of level 2 has 8 or 9 edges.
	if k := len(s.children(11)); k < 8 || k > 9 {
		t.Errorf("%s: want 8 or 9 edges, got %d", s[11].Name, k)
	}
	if k := len(s.subtree(1)); k != 99 {
		t.Errorf("%s: want 10 relays and 89 edges below, got %d", s[1].Name, k)
	}
}

func TestShapeInputsAreChecked(t *testing.T) {
	for _, counts := range [][]int{{1}, {2, 3}, {1, 0}} {
		if _, err := treeShape(counts); err == nil {
			t.Errorf("treeShape(%v): want an error", counts)
		}
	}
	good := "hub hub dc0\nr1 relay dc1 hub\ne1 edge dc1 r1 # comment\n\n"
	s, err := fileShape(strings.NewReader(good))
	if err != nil {
		t.Fatalf("fileShape: %v", err)
	}
	if len(s) != 3 || s[2].Level != 2 || s[2].Upstreams[0] != 1 {
		t.Errorf("fileShape: got %+v", s)
	}
	for _, bad := range []string{
		"",                                   // no node
		"r1 relay dc1\n",                     // first is not the hub
		"hub hub dc0 x\n",                    // hub with upstreams
		"hub hub dc0\ne1 edge dc1 r1\n",      // upstream not listed before
		"hub hub dc0\nhub edge dc1 hub\n",    // a name twice
		"hub hub dc0\ne1 edge dc1\n",         // downstream without upstream
		"hub hub dc0\ne1 spoke dc1 hub\n",    // unknown role
		"hub hub dc0\ne1 edge dc1 hub x y\n", // too many fields
	} {
		if _, err := fileShape(strings.NewReader(bad)); err == nil {
			t.Errorf("fileShape(%q): want an error", bad)
		}
	}
}

// Keep the flags' context use honest: run must end when its context does.
func TestRunStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := config{shapeCounts: "1,1", dir: t.TempDir(), net: "127.99", httpPort: 8080, gossipPort: 7946, profile: "local",
		parallel: 1, within: 10 * time.Second, timeout: time.Minute, measure: map[string]bool{}}
	if _, err := run(ctx, c, io.Discard); err == nil {
		t.Fatal("run with a cancelled context: want an error")
	}
}

// The same run with a pool per region: a hub, two regions of two relays
// and four edges. Each measurement still sees what it reports, and the
// killed edge is seen dead by exactly the members of its region's pool.
func TestRegionPoolsRunEveryMeasurement(t *testing.T) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Fatalf("meshsim wants a tmpfs at /dev/shm: %v", err)
	}
	const size = 64 << 10
	c := config{
		shapeCounts: "1,2,4,8", pools: "region",
		dir: t.TempDir(), net: fmt.Sprintf("127.%d", 100+rand.IntN(150)), httpPort: 8080, gossipPort: 7946,
		profile: "local", parallel: 4, within: 45 * time.Second, timeout: 3 * time.Minute,
		settle: time.Second, idle: 2 * time.Second, patches: 1, patchSize: size, poll: 10 * time.Millisecond,
		measure: map[string]bool{},
	}
	for _, m := range allMeasures {
		c.measure[m] = true
	}
	var out strings.Builder
	r, err := run(context.Background(), c, io.MultiWriter(&out, testWriter{t}))
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.Contains(out.String(), "3 gossip pools (backbone of 3, largest 7)") {
		t.Errorf("want the run to say it has 3 pools, a backbone of 3 and regions of 7")
	}
	if len(r.Arrivals) != 14 {
		t.Errorf("propagation: want 14 arrivals (every node but the hub), got %d", len(r.Arrivals))
	}
	if len(r.HubEgress) != 1 || r.HubEgress[0] < 2*size || r.HubEgress[0] > 3*size {
		t.Errorf("hub egress: want between 2 and 3 times %d bytes for one patch, got %v", size, r.HubEgress)
	}
	// The region's level-1 relay, its two level-2 relays and three other
	// edges; nobody outside the region gossips with the edge.
	if len(r.SeenDead) != 6 || r.NotSeen != 0 {
		t.Errorf("kill: want the dead edge seen by the 6 others of its region, got %d seen, %d not", len(r.SeenDead), r.NotSeen)
	}
	// The first level-1 relay, with two relays and four edges below.
	if r.Subtree != 6 || len(r.Failover) != 6 {
		t.Errorf("failover: want the killed relay's 6 downstreams served, got subtree %d, %d arrivals", r.Subtree, len(r.Failover))
	}
}

func TestPoolsFollowTheRegions(t *testing.T) {
	s, err := treeShape([]int{1, 10, 100, 889})
	if err != nil {
		t.Fatal(err)
	}
	pools, err := poolsFor(s, "auto")
	if err != nil || pools == nil {
		t.Fatalf("1,000 nodes in 4 levels, auto: want pools, got %v, %v", pools, err)
	}
	sizes := map[string]int{}
	for i, ps := range pools {
		for _, p := range ps {
			sizes[p]++
		}
		want := 1
		if s[i].Level <= 1 {
			want = 1 + s[i].Level // the hub in the backbone; level 1 in it and its region
		}
		if len(ps) != want {
			t.Errorf("%s (level %d): pools %v", s[i].Name, s[i].Level, ps)
		}
	}
	if len(sizes) != 11 || sizes[backbonePool] != 11 {
		t.Errorf("want a backbone of 11 and 10 regions, got %v", sizes)
	}
	for p, k := range sizes {
		if p != backbonePool && (k < 99 || k > 101) {
			t.Errorf("region %s has %d members, want about 100", p, k)
		}
	}
	for _, shape := range [][]int{{1, 9, 90}, {1, 2, 4, 8}} {
		s, _ := treeShape(shape)
		if ps, err := poolsFor(s, "auto"); err != nil || ps != nil {
			t.Errorf("%v, auto: want one pool, got %v, %v", shape, ps, err)
		}
	}
	if _, err := poolsFor(s, "many"); err == nil {
		t.Error("-pools many: want an error")
	}
}

// Two parts of one mesh (here two runs in one test process, as two
// meshsim processes would be): each starts its regions, they meet over
// loopback, and part 0 sees the patch arrive on every node of both, and
// the failover's patch too.
func TestPartsRunOneMesh(t *testing.T) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Fatalf("meshsim wants a tmpfs at /dev/shm: %v", err)
	}
	const size = 64 << 10
	base := config{
		shapeCounts: "1,2,4,8", pools: "region", parts: 2, state: filepath.Join(t.TempDir(), "mesh"),
		net: fmt.Sprintf("127.%d", 100+rand.IntN(150)), httpPort: 8080, gossipPort: 7946,
		profile: "local", parallel: 4, within: 45 * time.Second, timeout: 3 * time.Minute,
		settle: time.Second, idle: time.Second, patches: 1, patchSize: size, poll: 10 * time.Millisecond,
		measure: map[string]bool{"propagation": true, "kill": true, "failover": true},
	}
	r0, r1 := runTwoParts(t, base)
	if r0 == nil || len(r0.Arrivals) != 14 {
		t.Fatalf("part 0: want the patch timed on all 14 other nodes of both parts, got %+v", r0)
	}
	if len(r0.HubEgress) != 1 || r0.HubEgress[0] < 2*size || r0.HubEgress[0] > 3*size {
		t.Errorf("hub egress: want between 2 and 3 times %d bytes, got %v", size, r0.HubEgress)
	}
	// The last node is an edge of the second region, which part 1 runs
	// with its whole pool: 1 relay, 2 below it and 4 edges, 6 besides it.
	if len(r0.SeenDead) != 0 {
		t.Errorf("kill with parts: part 0 does not run the victim, yet timed %v", r0.SeenDead)
	}
	if r1 == nil || len(r1.SeenDead) != 6 || r1.NotSeen != 0 {
		t.Errorf("kill with parts: want part 1 to time the victim seen dead by the 6 others of its pool, got %+v", r1)
	}
	// The failover's victim is the first level-1 relay, in part 0 with
	// its 2 relays and 4 edges; the rest is the second region less the
	// killed edge, all in part 1. Part 0 reports both parts' arrivals.
	if r0.Subtree != 6 || len(r0.Failover) != 6 || len(r0.FailoverRest) != 6 {
		t.Errorf("failover with parts: want part 0 to report the killed relay's 6 downstreams and the 6 other nodes, got subtree %d, %d and %d arrivals",
			r0.Subtree, len(r0.Failover), len(r0.FailoverRest))
	}
	if r1 != nil && (len(r1.Failover) != 0 || len(r1.FailoverRest) != 0) {
		t.Errorf("failover with parts: part 1 reported figures of its own: %v, %v", r1.Failover, r1.FailoverRest)
	}
	if _, err := os.Stat(base.state); !os.IsNotExist(err) {
		t.Errorf("cleanup: want %s gone after both parts, got %v", base.state, err)
	}
}

// A failover whose victim runs in part 1: part 1 kills it, part 0 uploads
// once it reads the kill, and reports the arrivals part 1 timed in the
// victim's subtree with those it timed on its own nodes. The first relay,
// a, is no victim: its edges have no second upstream. So b is, and its
// relays fail over to a, in part 0.
func TestPartsFailoverKilledInAnotherPart(t *testing.T) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Fatalf("meshsim wants a tmpfs at /dev/shm: %v", err)
	}
	dir := t.TempDir()
	shapeFile := filepath.Join(dir, "shape")
	const shape = `hub hub dc-hub
a relay dc-a hub
b relay dc-b hub
a1 edge dc-a a
a2 edge dc-a a
b1 relay dc-b b,a
b2 relay dc-b b,a
e1 edge dc-b b1,b2
e2 edge dc-b b2,b1
`
	if err := os.WriteFile(shapeFile, []byte(shape), 0o600); err != nil {
		t.Fatal(err)
	}
	base := config{
		shapeFile: shapeFile, pools: "region", parts: 2, state: filepath.Join(dir, "mesh"),
		net: fmt.Sprintf("127.%d", 100+rand.IntN(150)), httpPort: 8080, gossipPort: 7946,
		profile: "local", parallel: 4, within: 45 * time.Second, timeout: 3 * time.Minute,
		settle: time.Second, idle: time.Second, patches: 1, patchSize: 64 << 10, poll: 10 * time.Millisecond,
		measure: map[string]bool{"kill": true, "failover": true},
	}
	r0, r1 := runTwoParts(t, base)
	if r0 == nil || r1 == nil {
		t.Fatalf("want results from both parts, got %+v and %+v", r0, r1)
	}
	// e2, killed first, is gone from b's subtree: b1, b2 and e1 are left.
	if len(r1.SeenDead) != 4 {
		t.Errorf("kill: want part 1 to time e2 seen dead by b, b1, b2 and e1, got %v", r1.SeenDead)
	}
	if r0.Subtree != 3 || len(r0.Failover) != 3 || len(r0.FailoverRest) != 3 {
		t.Errorf("failover: want part 0 to report b's 3 live downstreams (part 1's) and a, a1, a2 (its own), got subtree %d, %d and %d arrivals",
			r0.Subtree, len(r0.Failover), len(r0.FailoverRest))
	}
	if _, err := os.Stat(base.state); !os.IsNotExist(err) {
		t.Errorf("cleanup: want %s gone after both parts, got %v", base.state, err)
	}
}

// runTwoParts runs part 0 and part 1 of base side by side, logs what each
// printed and returns their results.
func runTwoParts(t *testing.T, base config) (r0, r1 *results) {
	t.Helper()
	type result struct {
		r   *results
		err error
		out string
	}
	done := make(chan result, 2)
	for part := range 2 {
		c := base
		c.part = part
		c.measure = maps.Clone(base.measure)
		go func() {
			var out strings.Builder
			r, err := run(context.Background(), c, &out)
			done <- result{r, err, fmt.Sprintf("part %d:\n%s", part, out.String())}
		}()
	}
	for range 2 {
		res := <-done
		t.Log(res.out)
		if res.err != nil {
			t.Errorf("run: %v", res.err)
		}
		if strings.HasPrefix(res.out, "part 0:") {
			r0 = res.r
		} else {
			r1 = res.r
		}
	}
	return r0, r1
}

// A run ends within its -timeout and a short cleanup whatever it waits on
// when the time is up, says which step was cut short and removes its
// nodes' data. One run is in its idle spell; the other is part 0 of two
// whose part 1 never comes, as a starved part would not, so that part 0
// waits for members that never join and, stopping, for part 1's stop.
func TestRunEndsWithinItsTimeout(t *testing.T) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Fatalf("meshsim wants a tmpfs at /dev/shm: %v", err)
	}
	// The bound leaves room for cleanupGrace, the most a cut run waits for
	// the other parts' stops, and the second part 0 gives them after.
	const timeout, bound = 20 * time.Second, cleanupGrace + 10*time.Second
	for _, tc := range []struct {
		name    string
		edit    func(*config)
		wantCut string
	}{
		{"in the idle spell", func(c *config) {
			c.dir = t.TempDir()
			c.idle = time.Hour
			c.measure = map[string]bool{"memory": true, "idle": true, "propagation": true}
		}, "idle measurement cut short by -timeout 20s"},
		{"waiting for a part that never comes", func(c *config) {
			c.parts, c.part, c.state = 2, 0, filepath.Join(t.TempDir(), "mesh")
			c.measure = map[string]bool{"propagation": true}
		}, "convergence cut short by -timeout 20s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config{
				shapeCounts: "1,2", net: fmt.Sprintf("127.%d", 100+rand.IntN(150)), httpPort: 8080, gossipPort: 7946,
				profile: "local", parallel: 2, within: 45 * time.Second, timeout: timeout,
				idle: time.Second, patches: 1, patchSize: 4 << 10, poll: 10 * time.Millisecond,
			}
			tc.edit(&c)
			start := time.Now()
			_, err := run(context.Background(), c, testWriter{t})
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), tc.wantCut) {
				t.Errorf("run: got error %v, want one saying %q", err, tc.wantCut)
			}
			if took > timeout+bound {
				t.Errorf("run took %v, want at most its -timeout %v and %v to clean up", took.Round(time.Millisecond), timeout, bound)
			}
			if c.state != "" {
				if _, err := os.Stat(c.state); !os.IsNotExist(err) {
					t.Errorf("cleanup: want %s gone, got %v", c.state, err)
				}
			} else if entries, err := os.ReadDir(c.dir); err != nil || len(entries) != 0 {
				t.Errorf("cleanup: want %s empty after the run, got %v (%v)", c.dir, entries, err)
			}
		})
	}
}

// Each part gets its share of the cores, and never none.
func TestProcsPerPartSharesTheCores(t *testing.T) {
	for _, tc := range []struct{ cpus, parts, want int }{
		{2, 1, 2}, {2, 2, 1}, {2, 5, 1}, {8, 2, 4}, {16, 5, 3}, {4, 0, 4},
	} {
		if got := procsPerPart(tc.cpus, tc.parts); got != tc.want {
			t.Errorf("procsPerPart(%d, %d) = %d, want %d", tc.cpus, tc.parts, got, tc.want)
		}
	}
}
