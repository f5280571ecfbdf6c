// Command meshsim runs a whole patchmesh mesh — a hub, relays and edges,
// up to thousands of nodes — in one process on one machine, and measures
// it (issue 15). Every node is the real node package as `patchmesh serve`
// wires it: its own HTTP listener on its own loopback address (127.x.y.z),
// real gossip, real sync loops, an embedded SQLite store and an fs blob
// directory under a tmpfs (/dev/shm by default).
//
// It owns the simulation: the shape (a tree of levels, or a file), the
// nodes' configs, starting and crashing them, the measurements and the
// cleanup. It does not judge what the nodes do beyond timing it; the e2e
// tests do that.
//
// Usage:
//
//	go run ./bench/meshsim -shape 1,10,100,889
//
// From 300 nodes in three levels or more, each level-1 subtree gossips in
// a pool of its own and the hub with the level-1 relays in a backbone pool
// (-pools region; -pools one keeps a single pool).
//
// bench/RESULTS.md ("A 1,000-node mesh on one machine") has the figures
// and the commands behind them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/patchmesh/patchmesh/node"
)

// config is what one simulation does.
type config struct {
	shapeCounts string
	shapeFile   string
	dir         string
	// net is the first two octets of the nodes' addresses, e.g. 127.77:
	// node i listens on 127.77.(i/250).(i%250+2).
	net        string
	httpPort   int
	gossipPort int
	profile    string
	// compression is gossip.compression: on, off or "" (the profile's).
	compression string
	// probeInterval and probeTimeout are gossip.probe_interval and
	// gossip.probe_timeout of every pool; zero keeps the profile's.
	probeInterval, probeTimeout time.Duration
	// pools is how gossip is split: "one" pool for the whole mesh,
	// "region" (a pool per level-1 subtree, and a backbone pool of the
	// hub and the level-1 relays) or "auto": region for shapes of three
	// levels or more from 300 nodes, one otherwise.
	pools     string
	parallel  int
	within    time.Duration
	timeout   time.Duration
	settle    time.Duration
	idle      time.Duration
	patches   int
	patchSize int
	poll      time.Duration
	measure   map[string]bool
	logFile   string
	// startProfile, if set, is where a CPU profile of the start goes;
	// idleProfile, of the idle spell.
	startProfile, idleProfile, propagationProfile string
	// parts and part split the mesh over several processes (parts.go);
	// state is their shared directory.
	parts, part int
	state       string
	// configure, if set, adjusts every node's config last (tests).
	configure func(*node.Config)
}

// host is node i's loopback address.
func (c config) host(i int) (string, error) {
	if i/250 > 255 {
		return "", fmt.Errorf("node %d: more nodes than addresses under %s", i, c.net)
	}
	return fmt.Sprintf("%s.%d.%d", c.net, i/250, i%250+2), nil
}

// cleanupGrace bounds each wait of the cleanup after a run cut short (a
// node's end, the other parts' stops): the run ends within its -timeout
// and about this much more.
const cleanupGrace = 10 * time.Second

// procsPerPart is the GOMAXPROCS of each of parts processes on a machine
// of cpus: its share of the cores, at least one. Five parts of two Ps each
// on two cores made the kernel slice ten threads over two cores beneath
// Go's scheduler: a patch on 1,000 nodes cost part 0 0.61–0.71 × the CPU
// with one P each, and was on all of them sooner (bench/RESULTS.md, "Store
// turns and shared feed reads"). GOMAXPROCS in the environment overrides.
func procsPerPart(cpus, parts int) int {
	return max(1, cpus/max(1, parts))
}

// measurements, in the order run runs them.
var allMeasures = []string{"memory", "idle", "propagation", "kill", "failover"}

func main() {
	var c config
	var measures string
	flag.StringVar(&c.shapeCounts, "shape", "1,9,90", "node count per level: the hub, then each level below (the last are edges)")
	flag.StringVar(&c.shapeFile, "shape-file", "", "read the shape from this file instead (one node a line: name role dc [upstream,…])")
	flag.StringVar(&c.dir, "dir", "/dev/shm", "where the nodes' data directories go (a tmpfs)")
	flag.StringVar(&c.net, "net", "127.77", "first two octets of the nodes' loopback addresses")
	flag.IntVar(&c.httpPort, "http-port", 8080, "every node's HTTP port (on its own address)")
	flag.IntVar(&c.gossipPort, "gossip-port", 7946, "every node's gossip port (on its own address)")
	flag.StringVar(&c.profile, "profile", "lan", "gossip profile: local, lan or wan")
	flag.StringVar(&c.compression, "compression", "", "gossip packet compression: on, off, or empty for the profile's")
	flag.DurationVar(&c.probeInterval, "probeinterval", 0, "gossip probe interval of every pool (0: the profile's)")
	flag.DurationVar(&c.probeTimeout, "probetimeout", 0, "gossip probe timeout of every pool (0: the profile's)")
	flag.StringVar(&c.pools, "pools", "auto", "gossip pools: one (the whole mesh), region (one per level-1 subtree, plus a backbone of the hub and level-1 relays) or auto (region from 300 nodes in 3 levels or more)")
	flag.IntVar(&c.parts, "parts", 1, "processes the mesh is split over (by region); run one meshsim per part with the same flags and -state")
	flag.IntVar(&c.part, "part", 0, "which part this process runs, 0 to parts-1; part 0 has the hub and measures propagation")
	flag.StringVar(&c.state, "state", "", "with -parts: the directory every part shares (keys, data, barriers), on a tmpfs")
	flag.IntVar(&c.parallel, "parallel", 8, "nodes started at once")
	flag.DurationVar(&c.within, "within", 2*time.Minute, "bound on any one wait, and on each request to a node")
	flag.DurationVar(&c.timeout, "timeout", 30*time.Minute, "bound on the whole run; a run cut short says which step it cut and cleans up within about 10s more")
	flag.DurationVar(&c.settle, "settle", 10*time.Second, "quiet time after start before measuring")
	flag.DurationVar(&c.idle, "idle", 30*time.Second, "how long the idle mesh is watched (gossip bytes, CPU)")
	flag.IntVar(&c.patches, "patches", 3, "patches uploaded for the propagation figures")
	flag.IntVar(&c.patchSize, "patch-size", 1<<20, "bytes of each patch")
	flag.DurationVar(&c.poll, "poll", 10*time.Millisecond, "how often blob directories are checked for arrivals")
	flag.StringVar(&measures, "measure", strings.Join(allMeasures, ","), "what to measure: "+strings.Join(allMeasures, ","))
	flag.StringVar(&c.logFile, "log", "", "append the nodes' warnings and errors (JSON) to this file; default: discard")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the start to this file (labelled by node)")
	flag.StringVar(&c.propagationProfile, "propagationprofile", "", "write the CPU profile of this part over the propagation uploads (-measure propagation) to this file (labelled by node)")
	flag.StringVar(&c.idleProfile, "idleprofile", "", "write the CPU profile of the idle spell (-measure idle) to this file (labelled by node)")
	flag.Parse()
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(procsPerPart(runtime.NumCPU(), c.parts))
	}
	c.startProfile = *cpuProfile
	c.measure = map[string]bool{}
	for m := range strings.SplitSeq(measures, ",") {
		c.measure[strings.TrimSpace(m)] = true
	}
	raiseFileLimit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, c, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "meshsim:", err)
		os.Exit(1)
	}
}

// run builds the mesh, measures what c asks and tears it down. Every step
// watches ctx, cut to c.timeout, and an error names the step it ended.
func run(ctx context.Context, c config, out io.Writer) (_ *results, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	step := "setup"
	var m *mesh
	var logFile *os.File
	defer func() {
		err = stepError(ctx, step, c.timeout, err)
		if m != nil {
			// Cut short, the other parts are too, or hung: do not wait long.
			grace := c.within
			if ctx.Err() != nil {
				grace = min(grace, cleanupGrace)
			}
			if err := m.stop(grace); err != nil {
				fmt.Fprintln(os.Stderr, "meshsim: stop:", err)
			}
		}
		if logFile != nil {
			logFile.Close() // after the nodes, which log to it
		}
	}()
	var s shape
	if c.shapeFile != "" {
		f, ferr := os.Open(c.shapeFile)
		if ferr != nil {
			return nil, ferr
		}
		s, err = fileShape(f)
		f.Close()
	} else {
		var counts []int
		if counts, err = parseCounts(c.shapeCounts); err == nil {
			s, err = treeShape(counts)
		}
	}
	if err != nil {
		return nil, err
	}
	logOut := io.Discard
	if c.logFile != "" {
		if logFile, err = os.OpenFile(c.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err != nil {
			return nil, err
		}
		logOut = logFile
	}
	log := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: slog.LevelWarn}))

	step = "mesh setup"
	if m, err = newMesh(ctx, c, s, log); err != nil {
		return nil, err
	}
	r := &results{w: out}
	r.printf("meshsim: %d nodes (%s), gossip profile %s (compression %q, probe interval %v, timeout %v; 0: the profile's), %s, data under %s, GOMAXPROCS %d",
		len(s), describe(s), c.profile, c.compression, c.probeInterval, c.probeTimeout, m.describePools(), m.dir, gomaxprocs())
	if c.parts > 1 {
		r.printf("part %d of %d: %d nodes in this process", c.part, c.parts, m.owned())
		step = "shared state"
		if err := m.shareState(ctx); err != nil {
			return r, err
		}
	}
	before, err := readMemory()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if c.startProfile != "" {
		f, err := os.Create(c.startProfile)
		if err != nil {
			return r, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return r, err
		}
	}
	step = "start"
	err = m.startAll(ctx)
	if c.startProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return r, err
	}
	r.StartTook = time.Since(start)
	r.printf("started %d nodes in %v", m.owned(), r.StartTook.Round(time.Millisecond))
	step = "convergence"
	conv, err := m.waitConverged(ctx, r)
	if err != nil {
		return r, err
	}
	r.Converged = conv
	if m.pools == nil {
		r.printf("every node sees %d alive members %v after the last start", len(s), conv.Round(time.Millisecond))
	} else {
		r.printf("every node sees every member of its pools alive %v after the last start", conv.Round(time.Millisecond))
	}
	step = "wait for every part to be ready"
	if err := m.barrier(ctx, "ready", c.timeout); err != nil {
		return r, err
	}
	step = "settle"
	select {
	case <-time.After(c.settle):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	if c.parts > 1 {
		// Only part 0 uploads; the others measure their own nodes, then
		// keep them running until part 0 is done. The kill is measured
		// by the part that runs the victim (the last node): with pools
		// per region every node that shares a pool with it runs there
		// too. The failover is measured by every part, each timing its
		// own nodes, and reported by part 0 (measureFailoverParts).
		victim := len(m.nodes) - 1
		kill := c.measure["kill"] && m.owns(victim)
		if c.part > 0 {
			c.measure = map[string]bool{"memory": c.measure["memory"], "idle": c.measure["idle"], "failover": c.measure["failover"]}
		}
		c.measure["kill"] = kill
		// Bounded by the run's own context: a part cut short, or whose
		// partners are, stops its nodes at once.
		defer m.barrier(ctx, "done", c.timeout)
	}
	m.cfg.measure = c.measure
	if c.measure["memory"] {
		step = "memory measurement"
		if err := m.measureMemory(r, before); err != nil {
			return r, err
		}
	}
	if c.measure["idle"] {
		step = "idle measurement"
		if err := m.measureIdle(ctx, r); err != nil {
			return r, err
		}
	}
	if c.measure["propagation"] {
		step = "propagation measurement"
		if err := m.measurePropagation(ctx, r); err != nil {
			return r, err
		}
	}
	// The kill comes after every part's quiet measurements and part 0's
	// uploads, whichever part makes it.
	step = "wait for every part to be measured"
	if err := m.barrier(ctx, "measured", c.timeout); err != nil {
		return r, err
	}
	if c.measure["kill"] {
		step = "kill measurement"
		if err := m.measureKill(ctx, r); err != nil {
			return r, err
		}
	}
	if c.measure["failover"] {
		step = "failover measurement"
		if err := m.measureFailover(ctx, r); err != nil {
			return r, err
		}
	}
	step = "store pool report"
	if err := m.reportPools(ctx, r); err != nil {
		return r, err
	}
	return r, nil
}

// stepError names the step of a run that err ended, and says whether the
// run's -timeout (or a signal) cut it short rather than the step failing.
func stepError(ctx context.Context, step string, timeout time.Duration, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%s cut short by -timeout %v: %w", step, timeout, err)
	case ctx.Err() != nil:
		return fmt.Errorf("%s cut short: %w", step, err)
	}
	return fmt.Errorf("%s: %w", step, err)
}

// describe names the shape by its level counts.
func describe(s shape) string {
	var counts []int
	for _, sp := range s {
		for len(counts) <= sp.Level {
			counts = append(counts, 0)
		}
		counts[sp.Level]++
	}
	parts := make([]string, len(counts))
	for i, k := range counts {
		parts[i] = fmt.Sprint(k)
	}
	return strings.Join(parts, " → ")
}

// raiseFileLimit lifts the open-file limit as far as the process may: a
// node holds about 15 files (sockets, SQLite files per connection), so a
// thousand nodes pass the 20,000 this machine gives by default. Go already
// raises the soft limit to the hard one; as root the hard one can rise too.
func raiseFileLimit() {
	want := uint64(1 << 17)
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Max >= want {
		return
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err != nil {
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: l.Max, Max: l.Max})
	}
}
