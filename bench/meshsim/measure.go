package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/pprof/profile"

	"github.com/patchmesh/patchmesh/topology"
)

// results are the figures of one run, printed as they come and kept for
// the smoke test.
type results struct {
	w io.Writer

	StartTook, Converged time.Duration
	// Propagation: every arrival of every patch, from the upload's answer.
	Arrivals  []time.Duration
	HubEgress []int64 // bytes the hub sent on the wire per patch
	// Kill: when each live node saw the killed one dead, from the kill.
	SeenDead   []time.Duration
	NotSeen    int
	Failover   []time.Duration // the killed relay's subtree, from the kill
	Subtree    int
	IdleGossip []float64 // gossip bytes sent per node per second, idle
	// FailoverRest: the failover's patch on every other node but the
	// hub, from the kill.
	FailoverRest []time.Duration
}

func (r *results) printf(format string, args ...any) {
	fmt.Fprintf(r.w, format+"\n", args...)
}

func gomaxprocs() int { return runtime.GOMAXPROCS(0) }

// percentile is the nearest-rank percentile p (0-100] of samples.
func percentile[T int64 | float64 | time.Duration](samples []T, p float64) T {
	if len(samples) == 0 {
		return 0
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	k := int(math.Ceil(p / 100 * float64(len(sorted))))
	k = min(max(k, 1), len(sorted))
	return sorted[k-1]
}

func durations(d []time.Duration) string {
	return fmt.Sprintf("p50 %v, p99 %v, max %v (%d samples)", percentile(d, 50).Round(time.Millisecond),
		percentile(d, 99).Round(time.Millisecond), percentile(d, 100).Round(time.Millisecond), len(d))
}

// waitConverged waits until every node counts every node alive. On a
// machine too loaded for that to happen at once (suspicions raised and
// refuted all the time) it says how far it got after cfg.within and lets
// the run go on: the measurements still mean something, and say it.
func (m *mesh) waitConverged(ctx context.Context, r *results) (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(m.cfg.within)
	for {
		nodes := m.alive()
		short := 0
		states := map[string]int{}
		for _, sn := range nodes {
			st := sn.n.GossipStats().Members
			for k, v := range st {
				states[k] += v
			}
			if st[topology.Alive] != len(m.sharesPool(sn.i)) {
				short++
			}
		}
		if short == 0 {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			r.printf("WARNING: %d of %d nodes do not see all the members of their pools alive after %v (members by state, summed over the views: %v); going on",
				short, len(nodes), m.cfg.within, states)
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// measureMemory reports the process's memory and goroutines per node.
func (m *mesh) measureMemory(r *results, before memory) error {
	after, err := readMemory()
	if err != nil {
		return err
	}
	n := int64(m.owned())
	r.printf("memory: RSS %.1f MiB for %d nodes = %.2f MiB per node (%.1f MiB before any started); Go heap in use %.2f MiB per node, Go Sys %.2f MiB per node",
		mib(after.RSS), n, mib(after.RSS-before.RSS)/float64(n), mib(before.RSS), mib(after.HeapInuse)/float64(n), mib(after.Sys)/float64(n))
	g, err := goroutinesByNode()
	if err != nil {
		return err
	}
	byRole := map[string][]int64{}
	for _, sn := range m.nodes {
		if !m.owns(sn.i) {
			continue
		}
		byRole[sn.spec.Role] = append(byRole[sn.spec.Role], g[sn.spec.Name])
	}
	for _, role := range []string{"hub", "relay", "edge"} {
		if gs := byRole[role]; len(gs) > 0 {
			r.printf("goroutines per %s: p50 %d, max %d (%d nodes)", role, percentile(gs, 50), percentile(gs, 100), len(gs))
		}
	}
	r.printf("goroutines: %d in all, %d without a node's label (the simulator's, the runtime's, shared pools)", after.Goroutines, g[""])
	r.printf("open files: %d = %.1f per node (%d before any started)", after.FDs, float64(after.FDs-before.FDs)/float64(n), before.FDs)
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// measureIdle watches the idle mesh: gossip bytes per node, the hub's
// HTTP bytes on the wire (the long polls of its direct children and the
// heartbeats that end them) and CPU by node from a profile.
func (m *mesh) measureIdle(ctx context.Context, r *results) error {
	nodes := m.alive()
	hub := m.nodes[0]
	sent0 := make([]int64, len(nodes))
	for i, sn := range nodes {
		sent0[i] = sn.n.GossipStats().SentBytes
	}
	hubOut0, hubIn0 := hub.wire.sent.Load(), hub.wire.received.Load()
	// One node of each role: their own request and query counts.
	sampled := map[string]*simNode{}
	for _, sn := range nodes {
		if sampled[sn.spec.Role] == nil {
			sampled[sn.spec.Role] = sn
		}
	}
	counts0 := map[string]counts{}
	for role, sn := range sampled {
		c, err := sn.readCounts(ctx)
		if err != nil {
			return err
		}
		counts0[role] = c
	}
	var cpu bytes.Buffer
	if err := pprof.StartCPUProfile(&cpu); err != nil {
		return err
	}
	start := time.Now()
	select {
	case <-time.After(m.cfg.idle):
	case <-ctx.Done():
		pprof.StopCPUProfile()
		return ctx.Err()
	}
	pprof.StopCPUProfile()
	secs := time.Since(start).Seconds()
	for i, sn := range nodes {
		r.IdleGossip = append(r.IdleGossip, float64(sn.n.GossipStats().SentBytes-sent0[i])/secs)
	}
	var sum float64
	for _, v := range r.IdleGossip {
		sum += v
	}
	g := r.IdleGossip
	r.printf("idle gossip sent per node over %.0fs: mean %.0f B/s, p50 %.0f, p99 %.0f, max %.0f B/s", secs,
		sum/float64(len(g)), percentile(g, 50), percentile(g, 99), percentile(g, 100))
	r.printf("idle hub HTTP on the wire: sent %.0f B/s, received %.0f B/s (%d direct children long-polling)",
		float64(hub.wire.sent.Load()-hubOut0)/secs, float64(hub.wire.received.Load()-hubIn0)/secs, len(m.shape.children(0)))
	for _, role := range []string{"hub", "relay", "edge"} {
		sn := sampled[role]
		if sn == nil {
			continue
		}
		c, err := sn.readCounts(ctx)
		if err != nil {
			return err
		}
		// Less the scrape itself, counted as a request.
		r.printf("idle %s %s: %.2f requests/s served, %.2f store queries/s (%d downstreams)", role, sn.spec.Name,
			(c.Requests-counts0[role].Requests-1)/secs, (c.Queries-counts0[role].Queries)/secs, len(m.shape.children(sn.i)))
	}

	if m.cfg.idleProfile != "" {
		if err := os.WriteFile(m.cfg.idleProfile, cpu.Bytes(), 0o600); err != nil {
			return err
		}
	}
	p, err := profile.Parse(&cpu)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	vi := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			vi = i
		}
	}
	if vi < 0 {
		return errors.New("cpu profile: no cpu samples type")
	}
	byNode := byLabel(p, "node", vi)
	var total int64
	for _, v := range byNode {
		total += v
	}
	perRole := map[string][]float64{}
	for _, sn := range nodes {
		perRole[sn.spec.Role] = append(perRole[sn.spec.Role], float64(byNode[sn.spec.Name])/1e6/secs)
	}
	r.printf("idle CPU: %.0f ms/s in all (of %d cores' %d ms/s), %.0f ms/s outside any node", float64(total)/1e6/secs, gomaxprocs(), 1000*gomaxprocs(), float64(byNode[""])/1e6/secs)
	for _, role := range []string{"hub", "relay", "edge"} {
		if v := perRole[role]; len(v) > 0 {
			var s float64
			for _, x := range v {
				s += x
			}
			r.printf("idle CPU per %s: mean %.2f ms/s, max %.2f ms/s (%d nodes)", role, s/float64(len(v)), percentile(v, 100), len(v))
		}
	}
	return nil
}

// version numbers the uploads of one run.
var version int

// upload puts a new random patch of cfg.patchSize bytes at the hub and
// returns its digest.
func (m *mesh) upload(ctx context.Context) (string, error) {
	content, digest, err := m.newPatch()
	if err != nil {
		return "", err
	}
	return digest, m.put(ctx, content, digest)
}

// newPatch makes a random patch of cfg.patchSize bytes: with -parts the
// failover's digest is told to every part before the upload, so that
// they watch for it from the kill on.
func (m *mesh) newPatch() (content []byte, digest string, err error) {
	content = make([]byte, m.cfg.patchSize)
	if _, err := rand.Read(content); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(content)
	return content, "sha256:" + hex.EncodeToString(sum[:]), nil
}

// put uploads content, whose digest is digest, at the hub as the next
// version.
func (m *mesh) put(ctx context.Context, content []byte, digest string) error {
	version++
	q := url.Values{
		"digest": {digest}, "kernel": {"5.15.0-107.117-generic"}, "arch": {"x86_64"},
		"version": {fmt.Sprintf("107.%d", version)}, "size": {strconv.Itoa(len(content))},
	}
	uctx, cancel := context.WithTimeout(ctx, m.cfg.within)
	defer cancel()
	if err := m.nodes[0].call(uctx, http.MethodPost, "/v1/admin/patches?"+q.Encode(), content, nil); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	return nil
}

// arrivals waits until every node of nodes holds the blob digest and
// returns when each did, from start, in the order of nodes. A node counts
// from the moment its blob file exists: the sync round that fetched it
// commits the catalog rows right after.
func (m *mesh) arrivals(ctx context.Context, nodes []*simNode, digest string, start time.Time) ([]time.Duration, error) {
	at := make([]time.Duration, len(nodes))
	pending := make([]int, len(nodes))
	for i := range nodes {
		pending[i] = i
	}
	deadline := start.Add(m.cfg.within)
	for {
		now := time.Now()
		pending = slices.DeleteFunc(pending, func(i int) bool {
			if _, err := os.Stat(nodes[i].blobPath(digest)); err == nil {
				at[i] = now.Sub(start)
				return true
			}
			return false
		})
		if len(pending) == 0 {
			return at, nil
		}
		if now.After(deadline) {
			names := []string{}
			for _, i := range pending[:min(len(pending), 5)] {
				names = append(names, nodes[i].spec.Name)
			}
			return at, fmt.Errorf("%d of %d nodes lack %s after %v, e.g. %v", len(pending), len(nodes), digest, m.cfg.within, names)
		}
		select {
		case <-ctx.Done():
			return at, ctx.Err()
		case <-time.After(m.cfg.poll):
		}
	}
}

// measurePropagation uploads cfg.patches patches one after the other and
// times each one's arrival at every node, counting the hub's bytes on the
// wire from before the upload until the last arrival.
func (m *mesh) measurePropagation(ctx context.Context, r *results) error {
	hub := m.nodes[0]
	others := m.alive()[1:]
	if m.cfg.parts > 1 {
		others = m.nodes[1:] // every part's: their blob files are on the shared tmpfs
	}
	children := len(m.shape.children(0))
	if m.cfg.propagationProfile != "" {
		f, err := os.Create(m.cfg.propagationProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	gossipSent := func() int64 {
		var t int64
		for _, sn := range m.alive() {
			t += sn.n.GossipStats().SentBytes
		}
		return t
	}
	var cpuArriving, cpuAll time.Duration
	for k := range m.cfg.patches {
		g0 := gossipSent()
		cpu0 := processCPU()
		out0, in0 := hub.wire.sent.Load(), hub.wire.received.Load()
		digest, err := m.upload(ctx)
		if err != nil {
			return err
		}
		start := time.Now()
		at, err := m.arrivals(ctx, others, digest, start)
		if err != nil {
			return fmt.Errorf("patch %d: %w", k+1, err)
		}
		cpuArriving += processCPU() - cpu0
		// The upload came in on the same listener: count what the hub
		// received apart.
		egress := hub.wire.sent.Load() - out0
		r.Arrivals = append(r.Arrivals, at...)
		r.HubEgress = append(r.HubEgress, egress)
		r.printf("patch %d (%d KiB): on all %d nodes after %v (p50 %v); hub sent %.2f MiB = %.2f × the blob (%d direct children), received %.2f MiB",
			k+1, m.cfg.patchSize>>10, len(others), percentile(at, 100).Round(time.Millisecond), percentile(at, 50).Round(time.Millisecond),
			mib(egress), float64(egress)/float64(m.cfg.patchSize), children, mib(hub.wire.received.Load()-in0))
		// Let the mesh's gossip of new heads die down before the next,
		// and count it: every node's head moved, and each tells all.
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
		cpuAll += processCPU() - cpu0
		secs := time.Since(start).Seconds()
		r.printf("patch %d: gossip sent %.1f KiB per node from the upload until 2s after the last arrival (%.0fs)",
			k+1, float64(gossipSent()-g0)/1024/float64(len(m.alive())), secs)
	}
	r.printf("propagation of a %d KiB patch over %d uploads: %s", m.cfg.patchSize>>10, m.cfg.patches, durations(r.Arrivals))
	// What a patch costs: this process's CPU (its nodes and the
	// simulator), from the upload to the last arrival and to 2 s after.
	r.printf("this process's CPU per patch: %.2f s from the upload to the last arrival, %.2f s to 2s after (%d nodes here)",
		cpuArriving.Seconds()/float64(m.cfg.patches), cpuAll.Seconds()/float64(m.cfg.patches), len(m.alive()))
	// By level: where in the cascade the slow arrivals are.
	byLevel := map[int][]time.Duration{}
	for i, at := range r.Arrivals {
		lv := others[i%len(others)].spec.Level
		byLevel[lv] = append(byLevel[lv], at)
	}
	for lv := 1; len(byLevel[lv]) > 0; lv++ {
		r.printf("  level %d: %s", lv, durations(byLevel[lv]))
	}
	return nil
}

// deadWatch records, per observer, when it first saw the member named
// victim dead.
type deadWatch struct {
	victim string
	start  time.Time
	mu     sync.Mutex
	seen   map[int]time.Duration
}

func (d *deadWatch) hear(observer int, mem topology.Member) {
	if mem.Name != d.victim || mem.State != topology.Dead {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.seen[observer]; !ok {
		d.seen[observer] = time.Since(d.start)
	}
}

// killAndWatch crashes victim and waits until every other live node that
// gossips with it (shares one of its pools) saw it dead; it returns how
// long each took, and how many did not see it.
func (m *mesh) killAndWatch(ctx context.Context, victim *simNode) ([]time.Duration, int, error) {
	d := &deadWatch{victim: victim.spec.Name, start: time.Now(), seen: map[int]time.Duration{}}
	fn := d.hear
	m.watch.Store(&fn)
	defer m.watch.Store(nil)
	if err := m.crash(victim, m.cfg.within); err != nil {
		return nil, 0, err
	}
	var observers []*simNode
	for _, sn := range m.alive() {
		if slices.Contains(m.sharesPool(victim.i), sn.i) {
			observers = append(observers, sn)
		}
	}
	deadline := d.start.Add(m.cfg.within)
	for {
		d.mu.Lock()
		k := len(d.seen)
		d.mu.Unlock()
		if k >= len(observers) || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []time.Duration
	for _, sn := range observers {
		if t, ok := d.seen[sn.i]; ok {
			out = append(out, t)
		}
	}
	return out, len(observers) - len(out), nil
}

// measureKill crashes an edge (the last node) and times every live
// node's learning that it is dead.
func (m *mesh) measureKill(ctx context.Context, r *results) error {
	victim := m.nodes[len(m.nodes)-1]
	seen, missing, err := m.killAndWatch(ctx, victim)
	if err != nil {
		return err
	}
	r.SeenDead, r.NotSeen = seen, missing
	r.printf("killed %s (%s): seen dead by %d nodes (those that share a gossip pool with it), %s; %d did not within %v", victim.spec.Name, victim.spec.Role,
		len(seen), durations(seen), missing, m.cfg.within)
	return nil
}

// measureFailover crashes the first relay that has downstreams with a
// second upstream, uploads a patch at once, and times the patch's arrival
// in the relay's subtree, and in the rest of the mesh, from the crash.
// With -parts, measureFailoverParts does it over every part.
func (m *mesh) measureFailover(ctx context.Context, r *results) error {
	victim := m.failoverVictim()
	if victim == nil {
		r.printf("failover: no relay with downstreams that have a second upstream in this shape; skipped")
		return nil
	}
	if m.cfg.parts > 1 {
		return m.measureFailoverParts(ctx, r, victim)
	}
	subtree := m.liveBelow(victim)
	start := time.Now()
	if err := m.crash(victim, m.cfg.within); err != nil {
		return err
	}
	digest, err := m.upload(ctx)
	if err != nil {
		return err
	}
	uploaded := time.Since(start)
	sub, rest, err := m.failoverArrivals(ctx, victim, digest, start)
	if err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	m.reportFailover(r, victim, uploaded, subtree, sub, rest)
	return nil
}

// failoverVictim is the first relay that has downstreams with a second
// upstream, nil if none. Every part picks the same: the only node a part
// may have killed before is the last one, which has no downstreams.
func (m *mesh) failoverVictim() *simNode {
	for _, sn := range m.nodes[1:] {
		if sn.dead.Load() || sn.spec.Role != "relay" {
			continue
		}
		kids := m.shape.children(sn.i)
		if len(kids) > 0 && len(m.shape[kids[0]].Upstreams) > 1 {
			return sn
		}
	}
	return nil
}

// liveBelow counts the live nodes of this process in victim's subtree.
func (m *mesh) liveBelow(victim *simNode) int {
	k := 0
	for _, i := range m.shape.subtree(victim.i) {
		if sn := m.nodes[i]; sn.n != nil && !sn.dead.Load() {
			k++
		}
	}
	return k
}

// failoverArrivals times digest's arrival, from start, on every live node
// of this process but the hub, split into victim's subtree and the rest.
func (m *mesh) failoverArrivals(ctx context.Context, victim *simNode, digest string, start time.Time) (sub, rest []time.Duration, err error) {
	var nodes []*simNode
	for _, sn := range m.alive() {
		if sn.i != 0 {
			nodes = append(nodes, sn)
		}
	}
	at, err := m.arrivals(ctx, nodes, digest, start)
	if err != nil {
		return nil, nil, err
	}
	below := m.shape.subtree(victim.i)
	for i, sn := range nodes {
		if slices.Contains(below, sn.i) {
			sub = append(sub, at[i])
		} else {
			rest = append(rest, at[i])
		}
	}
	return sub, rest, nil
}

// reportFailover keeps and prints the failover's figures: subtree is how
// many live downstreams the killed relay had, sub and rest the arrivals.
func (m *mesh) reportFailover(r *results, victim *simNode, uploaded time.Duration, subtree int, sub, rest []time.Duration) {
	r.Failover, r.Subtree, r.FailoverRest = sub, subtree, rest
	r.printf("killed relay %s, uploaded a patch %v later: its %d downstreams had it after %s (from the kill)",
		victim.spec.Name, uploaded.Round(time.Millisecond), subtree, durations(sub))
	r.printf("the rest of the mesh (%d nodes) had it after %s (from the kill)", len(rest), durations(rest))
}
