package topology

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// Every node gets its own loopback address, so tests never collide on ports
// with each other or with other packages' tests.
var lastIP atomic.Int32

func loopback(t *testing.T) string {
	n := lastIP.Add(1)
	if n > 250*250 {
		t.Fatal("out of loopback addresses for this test binary")
	}
	return fmt.Sprintf("127.77.%d.%d", n/250, n%250+1)
}

// testLog discards unless TOPOLOGY_TEST_LOG is set: memberlist logs from
// goroutines that may outlive a test, where t.Log would panic.
func testLog() *slog.Logger {
	if os.Getenv("TOPOLOGY_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fast is the local profile sped up so failures are detected in about a
// second.
func fast(t *testing.T, name string, keys [][]byte, join ...string) Config {
	return Config{
		Name:             name,
		BindAddr:         loopback(t),
		Profile:          "local",
		Join:             join,
		ProbeInterval:    100 * time.Millisecond,
		ProbeTimeout:     50 * time.Millisecond,
		GossipInterval:   20 * time.Millisecond,
		PushPullInterval: 500 * time.Millisecond,
		SuspicionMult:    4,
		JoinRetry:        200 * time.Millisecond,
		Keys:             keys,
		Log:              testLog(),
	}
}

// deadBound is the longest memberlist should take to declare a crashed
// member dead: one probe round to notice, the longest suspicion timeout
// (the local profile's SuspicionMaxTimeoutMult is 6), and slack for gossip
// and a slow machine under -race.
func deadBound(cfg Config, members int) time.Duration {
	detect := time.Duration(members)*cfg.ProbeInterval + cfg.ProbeTimeout
	suspicion := 6 * time.Duration(cfg.SuspicionMult) * cfg.ProbeInterval
	return detect + suspicion + 3*time.Second
}

func key(t *testing.T) []byte {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// recorder keeps every OnChange call.
type recorder struct {
	mu   sync.Mutex
	seen []Member
}

func (r *recorder) on(m Member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, m)
}

// states returns the successive states reported for name.
func (r *recorder) states(name string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.seen {
		if m.Name == name && (len(out) == 0 || out[len(out)-1] != m.State) {
			out = append(out, m.State)
		}
	}
	return out
}

func (r *recorder) any(f func(Member) bool) (Member, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.seen {
		if f(m) {
			return m, true
		}
	}
	return Member{}, false
}

func start(t *testing.T, cfg Config) *Topology {
	t.Helper()
	top, err := Start(context.Background(), cfg)
	if err != nil {
		if top != nil {
			top.Close()
		}
		t.Fatalf("start %s: %v", cfg.Name, err)
	}
	t.Cleanup(func() { top.Close() })
	return top
}

// waitFor polls cond every 10ms until it holds or the timeout passes; on
// timeout it fails with cond's last description of what it saw.
func waitFor(t *testing.T, timeout time.Duration, want string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: want %s; got %s", timeout, want, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func summary(ms []Member) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, fmt.Sprintf("%s=%s(v%s)", m.Name, m.State, m.Version))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// seesAlive reports whether top sees exactly names, all alive.
func seesAlive(top *Topology, names ...string) (bool, string) {
	ms := top.Members()
	if len(ms) != len(names) {
		return false, summary(ms)
	}
	for i, m := range ms {
		if m.Name != names[i] || m.State != Alive {
			return false, summary(ms)
		}
	}
	return true, ""
}

func TestThreeNodesShareMetaAndUpdates(t *testing.T) {
	k := [][]byte{key(t)}
	var head, metaCalls atomic.Int64
	meta := func(name, role string) func() Meta {
		return func() Meta {
			if name == "a" {
				metaCalls.Add(1)
			}
			m := Meta{Role: role, DC: "dc1", API: "http://" + name + ".test:8080", Tiers: []string{"stable", "beta"}, Version: "test"}
			if name == "a" {
				m.Version = strconv.FormatInt(head.Load(), 10)
			}
			return m
		}
	}
	var recB recorder
	ca := fast(t, "a", k)
	ca.Meta = meta("a", "hub")
	a := start(t, ca)
	cb := fast(t, "b", k, a.LocalAddr())
	cb.Meta, cb.OnChange = meta("b", "relay"), recB.on
	b := start(t, cb)
	cc := fast(t, "c", k, b.LocalAddr())
	cc.Meta = meta("c", "edge")
	c := start(t, cc)

	for _, top := range []*Topology{a, b, c} {
		waitFor(t, 5*time.Second, "a, b, c alive", func() (bool, string) { return seesAlive(top, "a", "b", "c") })
	}
	ms := c.Members()
	if ms[0].Role != "hub" || ms[0].DC != "dc1" || ms[0].API != "http://a.test:8080" ||
		!slices.Equal(ms[0].Tiers, []string{"stable", "beta"}) || ms[0].Addr != a.LocalAddr() || ms[0].Self {
		t.Errorf("c's view of a: got %+v", ms[0])
	}
	if !ms[2].Self || ms[1].Self {
		t.Errorf("Self: want only c on c, got %+v", ms)
	}
	if m, ok := a.ByAPI("http://b.test:8080/"); !ok || m.Name != "b" || m.Role != "relay" {
		t.Errorf("ByAPI(b's URL): want b, got %+v %v", m, ok)
	}
	if _, ok := a.ByAPI("http://nobody.test"); ok {
		t.Error("ByAPI(unknown URL): found a member")
	}
	if m, ok := b.Member("c"); !ok || m.Role != "edge" {
		t.Errorf("Member(c): got %+v %v", m, ok)
	}

	// A burst of updates: only the last value matters, and it must arrive;
	// memberlist is asked for the meta at most once per updateGap.
	callsBefore, burstStart := metaCalls.Load(), time.Now()
	for i := int64(1); i <= 42; i++ {
		head.Store(i)
		a.UpdateMeta()
	}
	for _, top := range []*Topology{b, c} {
		waitFor(t, 5*time.Second, "a's head 42", func() (bool, string) {
			m, _ := top.Member("a")
			return m.Version == "42", summary(top.Members())
		})
	}
	calls, most := metaCalls.Load()-callsBefore, 1+int64(time.Since(burstStart)/updateGap)
	if calls < 1 || calls > most {
		t.Errorf("meta broadcasts for a burst of 42 updates: want between 1 and %d, got %d", most, calls)
	}
	waitFor(t, time.Second, "b's OnChange to report a's join and its new head", func() (bool, string) {
		_, joined := recB.any(func(m Member) bool { return m.Name == "a" && m.State == Alive })
		_, updated := recB.any(func(m Member) bool { return m.Name == "a" && m.Version == "42" })
		return joined && updated, fmt.Sprintf("joined=%v updated=%v", joined, updated)
	})
}

// TestCrashIsDeadAndLeaveIsLeft guards the states read from memberlist's
// public events alone: a crash is Dead, a Leave is Left (through the leave
// intent), and a member that comes back is Alive again.
func TestCrashIsDeadAndLeaveIsLeft(t *testing.T) {
	k := [][]byte{key(t)}
	var rec recorder
	ca := fast(t, "a", k)
	ca.OnChange = rec.on
	a := start(t, ca)
	b := start(t, fast(t, "b", k, a.LocalAddr()))
	cc := fast(t, "c", k, a.LocalAddr())
	c := start(t, cc)
	d := start(t, fast(t, "d", k, a.LocalAddr()))
	waitFor(t, 5*time.Second, "a, b, c, d alive", func() (bool, string) { return seesAlive(a, "a", "b", "c", "d") })

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	bound := deadBound(cc, 4)
	waitFor(t, bound, "a to see c dead", func() (bool, string) {
		m, _ := a.Member("c")
		return m.State == Dead, summary(a.Members())
	})
	// OnChange is asynchronous: wait for it to catch up with Members.
	waitFor(t, time.Second, "a's OnChange to report c alive, then dead", func() (bool, string) {
		got := rec.states("c")
		return slices.Equal(got, []string{Alive, Dead}), fmt.Sprint(got)
	})

	bAddr := b.LocalAddr()
	if err := b.Leave(2 * time.Second); err != nil {
		t.Fatalf("leave: %v", err)
	}
	waitFor(t, bound, "a to see b left", func() (bool, string) {
		m, _ := a.Member("b")
		return m.State == Left, summary(a.Members())
	})
	if got := rec.states("b"); slices.Contains(got, Dead) {
		t.Errorf("b left gracefully but a saw it dead: %v", got)
	}
	if err := b.Leave(time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("second Leave: want ErrClosed, got %v", err)
	}
	// Dead and left members stay listed for operators.
	st := a.Stats().Members
	if st[Alive] != 2 || st[Dead] != 1 || st[Left] != 1 {
		t.Errorf("a's members by state: want 2 alive, 1 dead, 1 left; got %v (%s)", st, summary(a.Members()))
	}
	if ok, got := seesAlive(d, "a", "d"); ok {
		t.Errorf("d forgot b and c: %s", got)
	}
	waitFor(t, bound, "d to see b left too", func() (bool, string) {
		m, _ := d.Member("b")
		return m.State == Left, summary(d.Members())
	})

	// A member that left and starts again under its name is Alive, and a
	// later crash of it is Dead, not Left: the old intent is forgotten.
	// Same address: memberlist refuses a known name at a new one.
	cb2 := fast(t, "b", k, a.LocalAddr())
	host, port, _ := net.SplitHostPort(bAddr)
	cb2.BindAddr = host
	cb2.BindPort, _ = strconv.Atoi(port)
	b2 := start(t, cb2)
	waitFor(t, 5*time.Second, "a to see b back", func() (bool, string) {
		m, _ := a.Member("b")
		return m.State == Alive, summary(a.Members())
	})
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, deadBound(cb2, 3), "a to see b, back and crashed, dead", func() (bool, string) {
		m, _ := a.Member("b")
		return m.State == Dead, summary(a.Members())
	})
}

func TestWrongKeyCannotJoin(t *testing.T) {
	k := [][]byte{key(t)}
	var recA, recB recorder
	var logA lockedLog
	ca := fast(t, "a", k)
	ca.OnChange = recA.on
	ca.Log = slog.New(slog.NewJSONHandler(&logA, nil))
	a := start(t, ca)
	cb := fast(t, "b", k, a.LocalAddr())
	cb.OnChange = recB.on
	b := start(t, cb)
	waitFor(t, 5*time.Second, "a, b alive", func() (bool, string) { return seesAlive(a, "a", "b") })

	x, err := Start(context.Background(), fast(t, "x", [][]byte{key(t)}, a.LocalAddr(), b.LocalAddr()))
	if !errors.Is(err, ErrNotJoined) || x == nil {
		t.Fatalf("start with another key: want a Topology and ErrNotJoined, got %v, %v", x, err)
	}
	defer x.Close()
	// Let x retry joining and a and b push-pull a few times.
	time.Sleep(1500 * time.Millisecond)
	for name, rec := range map[string]*recorder{"a": &recA, "b": &recB} {
		if m, ok := rec.any(func(m Member) bool { return m.Name == "x" }); ok {
			t.Errorf("%s saw the node with the wrong key: %+v", name, m)
		}
	}
	if ok, got := seesAlive(a, "a", "b"); !ok {
		t.Errorf("a: want a and b only, got %s", got)
	}
	if ok, got := seesAlive(x, "x"); !ok {
		t.Errorf("x: want itself only, got %s", got)
	}
	// Every refusal is counted; the security event names the source once
	// per channel and minute, however often x retries.
	if got := a.Stats().Rejected[EventKeyFail]; got < 1 {
		t.Errorf("a counted %d gossip_key_fail refusals, want at least 1", got)
	}
	// x dials from the loopback's default source address, not its bind
	// address, so only the channel is certain.
	const event = `"msg":"security event","component":"topology","event":"gossip_key_fail","addr":"127.`
	logged := logA.String()
	if n := strings.Count(logged, event); n < 1 || n > 2 {
		t.Errorf("a logged gossip_key_fail %d times, want once or twice (tcp, udp):\n%s", n, logged)
	}
	if !strings.Contains(logged, `"channel":"tcp"`) {
		t.Errorf("a's gossip_key_fail does not say x's join came over tcp:\n%s", logged)
	}
	if strings.Contains(logged, string(k[0])) {
		t.Error("a's log holds the gossip key")
	}
}

// badMetaNode runs a raw memberlist node, holding the mesh key, whose meta
// is meta: what a key holder running its own client could announce.
func badMetaNode(t *testing.T, name string, keys [][]byte, meta []byte, join string) *memberlist.Memberlist {
	t.Helper()
	ml := stockNode(t, name, keys, meta, io.Discard)
	ml.Join([]string{join}) // refused, which is what is tested
	return ml
}

// stockNode runs memberlist as it comes, with its own encryption and
// transport: the wire a node of an earlier patchmesh speaks, which sealed
// gossip in memberlist.
func stockNode(t *testing.T, name string, keys [][]byte, meta []byte, logTo io.Writer) *memberlist.Memberlist {
	t.Helper()
	mc := memberlist.DefaultLocalConfig()
	mc.Name = name
	mc.BindAddr = loopback(t)
	mc.BindPort = 0
	mc.ProbeInterval = 100 * time.Millisecond
	mc.ProbeTimeout = 50 * time.Millisecond
	mc.GossipInterval = 20 * time.Millisecond
	mc.PushPullInterval = 300 * time.Millisecond
	// Probes over packets only: a TCP fallback would keep members alive
	// whose packets it cannot open.
	mc.DisableTcpPings = true
	mc.Delegate = rawMeta(meta)
	mc.Logger = log.New(logTo, "", 0)
	kr, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	mc.Keyring = kr
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Shutdown() })
	return ml
}

// The transport seals gossip in memberlist's own format: a node whose
// memberlist encrypts talks to one whose transport does, over packets
// (probes, gossip) and streams (joins, push-pulls) both ways, so a mesh
// can be upgraded a node at a time. Memberlist refuses what it cannot
// open, so a wrong byte in either direction keeps them apart or, for
// packets, gets them declared dead.
func TestStockMemberlistTalksToTheTransport(t *testing.T) {
	k := [][]byte{key(t)}
	a := start(t, fast(t, "a", k))
	var stockLog lockedLog
	stock := stockNode(t, "stock", k, []byte(`{"n":"stock","r":"relay"}`), &stockLog)
	// The stock node joins a (its stream to a), and b joins the stock node
	// (b's stream to it).
	if _, err := stock.Join([]string{a.LocalAddr()}); err != nil {
		t.Fatalf("stock node joins a: %v", err)
	}
	b := start(t, fast(t, "b", k, stock.LocalNode().Address()))
	waitFor(t, 5*time.Second, "a and b see a, b, stock alive", func() (bool, string) {
		for _, top := range []*Topology{a, b} {
			if ok, got := seesAlive(top, "a", "b", "stock"); !ok {
				return false, got
			}
		}
		return true, ""
	})
	// Probes and gossip over packets, for a few push-pull intervals.
	time.Sleep(2 * time.Second)
	for _, top := range []*Topology{a, b} {
		if ok, got := seesAlive(top, "a", "b", "stock"); !ok {
			t.Errorf("after 2 s: want a, b, stock alive, got %s", got)
		}
		if got := top.Stats().Rejected[EventKeyFail]; got != 0 {
			t.Errorf("%d gossip refused as not sealed with the key", got)
		}
	}
	metas := map[string]string{}
	for _, m := range stock.Members() {
		if m.State != memberlist.StateAlive {
			t.Errorf("the stock node sees %s %v", m.Name, m.State)
		}
		metas[m.Name] = string(m.Meta)
	}
	for _, name := range []string{"a", "b"} {
		if m, err := DecodeMeta([]byte(metas[name])); err != nil || m.Name != name {
			t.Errorf("the stock node has %s's meta %q (%v)", name, metas[name], err)
		}
	}
	// Memberlist only logs what it cannot open or read.
	for _, line := range strings.Split(stockLog.String(), "\n") {
		if strings.Contains(line, "[ERR]") || strings.Contains(line, "[WARN]") {
			t.Errorf("the stock node: %s", line)
		}
	}
}

type rawMeta []byte

func (r rawMeta) NodeMeta(int) []byte               { return r }
func (rawMeta) NotifyMsg([]byte)                    {}
func (rawMeta) GetBroadcasts(int, int) [][]byte     { return nil }
func (rawMeta) LocalState(bool) []byte              { return nil }
func (rawMeta) MergeRemoteState(buf []byte, _ bool) {}

func TestMembersWithBadMetaAreRefused(t *testing.T) {
	k := [][]byte{key(t)}
	var logA lockedLog
	var recA recorder
	ca := fast(t, "a", k)
	ca.Log = slog.New(slog.NewJSONHandler(&logA, nil))
	ca.OnChange = recA.on
	a := start(t, ca)
	b := start(t, fast(t, "b", k, a.LocalAddr()))
	waitFor(t, 5*time.Second, "a, b alive", func() (bool, string) { return seesAlive(a, "a", "b") })

	for _, tc := range []struct{ name, meta string }{
		{"garbled", `{"n":`},
		{"impostor", `{"n":"b","r":"relay"}`},
		{"ftp", `{"n":"ftp","api":"ftp://x.test/"}`},
		{"creds", `{"n":"creds","api":"https://u:p@x.test/"}`},
	} {
		badMetaNode(t, tc.name, k, []byte(tc.meta), a.LocalAddr())
	}
	waitFor(t, 5*time.Second, "a to log gossip_meta_fail for all four", func() (bool, string) {
		got := logA.String()
		for _, name := range []string{"garbled", "impostor", "ftp", "creds"} {
			if !strings.Contains(got, `"event":"gossip_meta_fail","member":"`+name+`"`) {
				return false, got
			}
		}
		return true, got
	})
	for _, top := range []*Topology{a, b} {
		if ok, got := seesAlive(top, "a", "b"); !ok {
			t.Errorf("want a and b only, got %s", got)
		}
	}
	if m, ok := recA.any(func(m Member) bool { return m.Name != "a" && m.Name != "b" }); ok {
		t.Errorf("a reported a refused member: %+v", m)
	}
	if got := a.Stats().Rejected[EventMetaFail]; got < 4 {
		t.Errorf("a counted %d gossip_meta_fail refusals, want at least 4", got)
	}
}

func TestStartRefuses(t *testing.T) {
	good := fast(t, "n", [][]byte{key(t)})
	tests := []struct {
		name   string
		change func(*Config)
		want   error
	}{
		{"no key", func(c *Config) { c.Keys = nil }, ErrNoKeys},
		{"key of 20 bytes", func(c *Config) { c.Keys = [][]byte{make([]byte, 20)} }, nil},
		{"no name", func(c *Config) { c.Name = "" }, nil},
		{"unknown profile", func(c *Config) { c.Profile = "moon" }, nil},
		{"unknown compression", func(c *Config) { c.Compression = "lzw" }, nil},
		{"meta over the limit", func(c *Config) {
			c.Meta = func() Meta { return Meta{Tiers: manyTiers(100)} }
		}, ErrMetaTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.change(&cfg)
			top, err := Start(context.Background(), cfg)
			if err == nil {
				top.Close()
				t.Fatal("Start succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("want %v, got %v", tc.want, err)
			}
		})
	}
}

func TestCompressionFollowsProfileUnlessSet(t *testing.T) {
	k := [][]byte{key(t)}
	tests := []struct {
		profile, compression string
		want                 bool
	}{
		{"local", "", false}, {"lan", "", false}, {"", "", false}, {"wan", "", true},
		{"lan", "on", true}, {"wan", "off", false}, {"local", "on", true},
	}
	for _, tc := range tests {
		mc, err := memberlistConfig("n", Pool{Keys: k, Profile: tc.profile, Compression: tc.compression})
		if err != nil {
			t.Fatalf("profile %q compression %q: %v", tc.profile, tc.compression, err)
		}
		if mc.EnableCompression != tc.want {
			t.Errorf("profile %q compression %q: EnableCompression %v, want %v",
				tc.profile, tc.compression, mc.EnableCompression, tc.want)
		}
	}
}

// Members that compress and members that do not still read each other:
// memberlist decompresses whatever it receives.
func TestMixedCompressionSharesMeta(t *testing.T) {
	k := [][]byte{key(t)}
	on := fast(t, "on", k)
	on.Compression = "on"
	on.Meta = func() Meta { return Meta{Role: "hub", API: "http://on.test", Tiers: manyTiers(8)} }
	a := start(t, on)
	off := fast(t, "off", k, a.LocalAddr())
	off.Compression = "off"
	off.Meta = func() Meta { return Meta{Role: "edge", API: "http://off.test", Tiers: manyTiers(8)} }
	b := start(t, off)
	for _, top := range []*Topology{a, b} {
		waitFor(t, 10*time.Second, "both alive with their metas", func() (bool, string) {
			if ok, got := seesAlive(top, "off", "on"); !ok {
				return false, got
			}
			m1, _ := top.Member("on")
			m2, _ := top.Member("off")
			return m1.API == "http://on.test" && m2.API == "http://off.test" && len(m2.Tiers) == 8, summary(top.Members())
		})
	}
}

func TestKeyRotationKeepsTheClusterTogether(t *testing.T) {
	oldKey, newKey := key(t), key(t)
	recs := map[string]*recorder{}
	node := func(name string, keys [][]byte, join ...string) *Topology {
		cfg := fast(t, name, keys, join...)
		// fast's 50 ms probe timeout and 0.4 s suspicion let a loaded
		// machine (-race, other packages' tests) kill a member with no
		// rotation at all. A 1 s suspicion tolerates such a stall; the wait
		// after the last step (below) is longer than it, so a rotation that
		// really cut a member off still shows as dead.
		cfg.ProbeInterval, cfg.ProbeTimeout = 250*time.Millisecond, 200*time.Millisecond
		cfg.SuspicionMult = 4
		rec := &recorder{}
		recs[name] = rec
		cfg.OnChange = rec.on
		return start(t, cfg)
	}
	a := node("a", [][]byte{oldKey})
	b := node("b", [][]byte{oldKey}, a.LocalAddr())
	// A node configured for the rotation ahead: old primary, new installed.
	c := node("c", [][]byte{oldKey, newKey}, a.LocalAddr())
	all := []*Topology{a, b, c}
	for _, top := range all {
		waitFor(t, 5*time.Second, "a, b, c alive", func() (bool, string) { return seesAlive(top, "a", "b", "c") })
	}
	settle := func() { time.Sleep(500 * time.Millisecond) } // a few probe rounds per phase

	for _, top := range all {
		if err := top.InstallKey(newKey); err != nil {
			t.Fatal(err)
		}
	}
	settle()
	for _, top := range all {
		if err := top.UseKey(newKey); err != nil {
			t.Fatal(err)
		}
	}
	settle()
	if err := a.RemoveKey(newKey); err == nil {
		t.Error("removing the primary key: want an error")
	}
	for _, top := range all {
		if err := top.RemoveKey(oldKey); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2500 * time.Millisecond) // past a suspicion timeout

	// A packet in flight under a key just removed is dropped, and a missed
	// ack can make a member suspect for a moment; none may be declared gone.
	for name, rec := range recs {
		if m, ok := rec.any(func(m Member) bool { return m.State == Dead || m.State == Left }); ok {
			t.Errorf("%s saw %s %s during the rotation", name, m.Name, m.State)
		}
	}
	for _, top := range all {
		if ok, got := seesAlive(top, "a", "b", "c"); !ok {
			t.Errorf("after rotation: want a, b, c alive, got %s", got)
		}
	}

	stale, err := Start(context.Background(), fast(t, "stale", [][]byte{oldKey}, a.LocalAddr()))
	if !errors.Is(err, ErrNotJoined) {
		t.Errorf("a node with only the removed key: want ErrNotJoined, got %v", err)
	}
	if stale != nil {
		stale.Close()
	}
	fresh := node("fresh", [][]byte{newKey}, b.LocalAddr())
	waitFor(t, 5*time.Second, "fresh in the cluster", func() (bool, string) { return seesAlive(fresh, "a", "b", "c", "fresh") })
	if _, ok := recs["a"].any(func(m Member) bool { return m.Name == "stale" }); ok {
		t.Error("a saw the node with the removed key")
	}
}

func TestJoinRetriesUntilAPeerStarts(t *testing.T) {
	k := [][]byte{key(t)}
	bAddr := loopback(t)
	l, err := net.Listen("tcp", bAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	bPort := l.Addr().(*net.TCPAddr).Port
	l.Close()

	a, err := Start(context.Background(), fast(t, "a", k, fmt.Sprintf("%s:%d", bAddr, bPort)))
	if !errors.Is(err, ErrNotJoined) || a == nil {
		t.Fatalf("start before the peer: want a Topology and ErrNotJoined, got %v, %v", a, err)
	}
	t.Cleanup(func() { a.Close() })
	cb := fast(t, "b", k)
	cb.BindAddr, cb.BindPort = bAddr, bPort
	b := start(t, cb)
	waitFor(t, 5*time.Second, "a and b together", func() (bool, string) { return seesAlive(b, "a", "b") })
}

func TestStartGivesUpWithContext(t *testing.T) {
	// A peer that accepts the join's connection and never answers.
	l, err := net.Listen("tcp", loopback(t)+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	top, err := Start(ctx, fast(t, "a", [][]byte{key(t)}, l.Addr().String()))
	if top != nil {
		top.Close()
		t.Error("Start with a cancelled context returned a Topology")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("want context.Canceled, got %v", err)
	}
}

func TestGossipTrafficIsCountedAndExported(t *testing.T) {
	k := [][]byte{key(t)}
	a := start(t, fast(t, "a", k))
	b := start(t, fast(t, "b", k, a.LocalAddr()))
	waitFor(t, 5*time.Second, "a, b alive", func() (bool, string) { return seesAlive(a, "a", "b") })

	s0 := a.Stats()
	if s0.SentBytes == 0 || s0.ReceivedBytes == 0 {
		t.Errorf("after joining: want bytes both ways, got sent %d received %d", s0.SentBytes, s0.ReceivedBytes)
	}
	waitFor(t, 5*time.Second, "traffic to keep growing", func() (bool, string) {
		s := a.Stats()
		return s.SentBytes > s0.SentBytes && s.ReceivedBytes > s0.ReceivedBytes,
			fmt.Sprintf("sent %d→%d received %d→%d", s0.SentBytes, s.SentBytes, s0.ReceivedBytes, s.ReceivedBytes)
	})
	if got := b.Stats().Members; got[Alive] != 2 || got[Dead] != 0 {
		t.Errorf("b's members by state: want 2 alive, got %v", got)
	}

	got := exported(t, a)
	if got["patchmesh_gossip_members/alive"] != 2 || got["patchmesh_gossip_members/dead"] != 0 {
		t.Errorf("members gauge: got %v", got)
	}
	if got["patchmesh_gossip_sent_bytes_total"] <= 0 || got["patchmesh_gossip_received_bytes_total"] <= 0 {
		t.Errorf("byte counters: got %v", got)
	}
}

// exported gathers top's Collector: each series by its name and label
// values joined with "/", to its value.
func exported(t *testing.T, top *Topology) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(top))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			got[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return got
}

func TestOversizedMetaLaterKeepsTheLastGood(t *testing.T) {
	k := [][]byte{key(t)}
	var big atomic.Bool
	ca := fast(t, "a", k)
	ca.Meta = func() Meta {
		if big.Load() {
			return Meta{Role: "hub", Version: "2", Tiers: manyTiers(100)}
		}
		return Meta{Role: "hub", Version: "1"}
	}
	a := start(t, ca)
	b := start(t, fast(t, "b", k, a.LocalAddr()))
	waitFor(t, 5*time.Second, "a, b alive", func() (bool, string) { return seesAlive(b, "a", "b") })
	big.Store(true)
	a.UpdateMeta()
	time.Sleep(300 * time.Millisecond) // several gossip intervals
	if m, _ := b.Member("a"); m.Version != "1" || m.Role != "hub" {
		t.Errorf("b's view of a after an oversized update: want the last good meta (head 1), got %+v", m.Meta)
	}
}

func TestDeadMembersAreForgottenAfterRetain(t *testing.T) {
	k := [][]byte{key(t)}
	ca := fast(t, "a", k)
	ca.Retain = 500 * time.Millisecond
	a := start(t, ca)
	cb := fast(t, "b", k, a.LocalAddr())
	b := start(t, cb)
	waitFor(t, 5*time.Second, "a, b alive", func() (bool, string) { return seesAlive(a, "a", "b") })
	b.Close()
	waitFor(t, deadBound(cb, 2), "a to see b dead", func() (bool, string) {
		m, _ := a.Member("b")
		return m.State == Dead, summary(a.Members())
	})
	waitFor(t, ca.Retain+2*time.Second, "b forgotten after Retain", func() (bool, string) { return seesAlive(a, "a") })
}

// A member back at its address without a join list, and in nobody's, is
// joined again by the members that hold it dead. Memberlist alone never
// would: it gossips to a dead member only while it has news queued, for
// GossipToTheDeadTime at most, and pushes its state to live members only.
// The same reconnecting heals a partition that outlasted that.
func TestDeadMemberBackWithoutJoinListIsReconnected(t *testing.T) {
	k := [][]byte{key(t)}
	a := start(t, fast(t, "a", k))
	b := start(t, fast(t, "b", k, a.LocalAddr()))
	cc := fast(t, "c", k, a.LocalAddr())
	c := start(t, cc)
	addr := c.LocalAddr()
	waitFor(t, 5*time.Second, "a, b, c alive", func() (bool, string) { return seesAlive(b, "a", "b", "c") })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Topology{a, b} {
		waitFor(t, deadBound(cc, 3), "c dead", func() (bool, string) {
			m, _ := n.Member("c")
			return m.State == Dead, summary(n.Members())
		})
	}
	// Long enough for a's and b's news of c's death to have been gossiped
	// and dropped from their queues (a few 20 ms gossip rounds): nothing
	// then leads memberlist back to c.
	time.Sleep(time.Second)
	c2 := start(t, sameAddr(t, fast(t, "c", k), addr)) // no join list
	for _, n := range []*Topology{a, b, c2} {
		waitFor(t, 5*time.Second, "a, b, c alive again", func() (bool, string) { return seesAlive(n, "a", "b", "c") })
	}
	if s := c2.Stats(); s.Reconnected != 0 {
		t.Errorf("c, back and holding nobody dead, reconnected: %+v", s)
	}

	// The joins are counted and exported.
	joined := 0.0
	for _, n := range []*Topology{a, b} {
		got := exported(t, n)
		if _, ok := got["patchmesh_gossip_pool_reconnects_total/default/failed"]; !ok {
			t.Errorf("no per-pool reconnect series in %v", got)
		}
		joined += got["patchmesh_gossip_reconnects_total/joined"]
	}
	if joined < 1 {
		t.Errorf("reconnects by a and b: want at least 1 joined, got %v", joined)
	}
}

// A hub that left (a restart) and comes back at its address, with no join
// list since it started the pool, is found again by the members that list
// it in theirs, though they hold it left, which is never retried as dead.
func TestLeftMemberBackIsRejoinedThroughTheJoinList(t *testing.T) {
	k := [][]byte{key(t)}
	hub := start(t, fast(t, "a", k))
	addr := hub.LocalAddr()
	b := start(t, fast(t, "b", k, addr))
	c := start(t, fast(t, "c", k, addr))
	waitFor(t, 5*time.Second, "a (the hub), b, c alive", func() (bool, string) { return seesAlive(b, "a", "b", "c") })
	if err := hub.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Topology{b, c} {
		waitFor(t, 5*time.Second, "a (the hub) left", func() (bool, string) {
			m, _ := n.Member("a")
			return m.State == Left, summary(n.Members())
		})
	}
	time.Sleep(time.Second) // as above: the news of the leave gossiped and gone
	hub2 := start(t, sameAddr(t, fast(t, "a", k), addr))
	for _, n := range []*Topology{hub2, b, c} {
		waitFor(t, 5*time.Second, "a (the hub), b, c alive again", func() (bool, string) { return seesAlive(n, "a", "b", "c") })
	}
}

// sameAddr binds cfg where addr (host:port) is.
func sameAddr(t *testing.T, cfg Config, addr string) Config {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg.BindAddr = host
	if cfg.BindPort, err = strconv.Atoi(port); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestMembersLeavingTogetherDoNotWaitOutTheTimeout: the two members of a
// pool leaving at once (both nodes of a data centre stopped together) each
// hear the other's leave first, after which memberlist gossips to nobody
// and its own leave broadcast never goes out. Each had told the other
// directly (the leave intent), so neither fails for it.
func TestMembersLeavingTogetherDoNotWaitOutTheTimeout(t *testing.T) {
	k := [][]byte{key(t)}
	b := start(t, fast(t, "b", k))
	c := start(t, fast(t, "c", k, b.LocalAddr()))
	waitFor(t, 5*time.Second, "b, c alive", func() (bool, string) { return seesAlive(b, "b", "c") })

	const timeout = 4 * time.Second
	var wg sync.WaitGroup
	errs := make([]error, 2)
	took := make([]time.Duration, 2)
	for i, top := range []*Topology{b, c} {
		wg.Go(func() {
			began := time.Now()
			errs[i] = top.Leave(timeout)
			took[i] = time.Since(began)
		})
	}
	wg.Wait()
	t.Logf("b and c left in %v and %v", took[0].Round(time.Millisecond), took[1].Round(time.Millisecond))
	for i, err := range errs {
		if err != nil || took[i] >= timeout {
			t.Errorf("leave %d: %v after %v; want no error, within the %v timeout", i, err, took[i], timeout)
		}
	}
}
