package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/node"
	"github.com/patchmesh/patchmesh/topology"
)

// Credentials of the administrator every simulated node is configured
// with, so that the simulator logs in without bootstrap passwords.
const (
	adminUser     = "meshsim"
	adminPassword = "meshsim-admin-password"
	// bcryptCost is the cheapest auth accepts: a login only has to work.
	bcryptCost = 4
	tier       = "edge"
)

// mesh is the running simulation: one process, many nodes.
type mesh struct {
	cfg   config
	shape shape
	dir   string
	log   *slog.Logger

	hubKeyPath string
	hubPub     string
	gossipKey  string
	adminHash  string

	nodes []*simNode
	// pools are each node's gossip pools, nil for one pool of all;
	// poolKeys each pool's key, poolMembers its nodes by index.
	pools       [][]string
	poolKeys    map[string]string
	poolMembers map[string][]int
	// watch, if set, hears every member change every node reports, with
	// the index of the node that saw it.
	watch atomic.Pointer[func(observer int, m topology.Member)]
}

// simNode is one node of the mesh.
type simNode struct {
	i      int
	spec   spec
	host   string
	url    string
	gossip string
	// poolAddr is the node's gossip host:port in each of its pools.
	poolAddr map[string]string
	dataDir  string
	wire     wire
	// timeout bounds each request the simulator makes of the node, over
	// HTTP or in process (cfg.within): a starved node answers late or not
	// at all, and the run must still end within its -timeout.
	timeout time.Duration

	n      *node.Node
	cancel context.CancelFunc
	done   chan error // Run's result
	dead   atomic.Bool

	mu       sync.Mutex
	macaroon string
}

// httpClient carries the simulator's own requests (logins, tokens,
// uploads), never the nodes' traffic. Each request is bounded by its
// context: the run's, cut to the node's timeout (simNode.call).
var httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}}

func newMesh(ctx context.Context, cfg config, s shape, log *slog.Logger) (*mesh, error) {
	dir := cfg.state
	var err error
	if cfg.parts > 1 {
		if dir == "" {
			return nil, errors.New("-parts needs -state, the directory the parts share")
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	} else if dir, err = os.MkdirTemp(cfg.dir, "meshsim-"); err != nil {
		return nil, err
	}
	m := &mesh{cfg: cfg, shape: s, dir: dir, log: log}
	m.hubKeyPath = filepath.Join(dir, "hub.key")
	if cfg.parts > 1 && cfg.part > 0 {
		// Part 0 makes it; the state file it writes after says it is there.
		if err := waitFile(ctx, filepath.Join(dir, "state.json"), cfg.within); err != nil {
			return nil, err
		}
	}
	key, _, err := federation.LoadOrCreateKey(m.hubKeyPath)
	if err != nil {
		return nil, err
	}
	m.hubPub = federation.FormatPublicKey(key.Public().(ed25519.PublicKey))
	gk, err := topology.NewKey()
	if err != nil {
		return nil, err
	}
	m.gossipKey = base64.StdEncoding.EncodeToString(gk)
	if m.adminHash, err = auth.HashPassword(adminPassword, bcryptCost); err != nil {
		return nil, err
	}
	for i, sp := range s {
		host, err := cfg.host(i)
		if err != nil {
			return nil, err
		}
		m.nodes = append(m.nodes, &simNode{
			i: i, spec: sp, host: host,
			url:     "http://" + net.JoinHostPort(host, strconv.Itoa(cfg.httpPort)),
			gossip:  net.JoinHostPort(host, strconv.Itoa(cfg.gossipPort)),
			dataDir: filepath.Join(dir, sp.Name),
			timeout: cfg.within,
		})
	}
	pools, err := poolsFor(s, cfg.pools)
	if err != nil {
		return nil, err
	}
	if pools != nil {
		if err := m.setPools(pools); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// startAll starts the hub, then each level's nodes, cfg.parallel at once.
func (m *mesh) startAll(ctx context.Context) error {
	if m.owns(0) {
		if err := m.start(ctx, m.nodes[0]); err != nil {
			return err
		}
	}
	maxLevel := 0
	for _, sp := range m.shape {
		maxLevel = max(maxLevel, sp.Level)
	}
	for level := 1; level <= maxLevel; level++ {
		sem := make(chan struct{}, m.cfg.parallel)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for _, sn := range m.nodes {
			if sn.spec.Level != level || !m.owns(sn.i) {
				continue
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := m.start(ctx, sn); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		m.log.Info("level_started", "level", level)
	}
	return nil
}

// start is the one place a node's config is made and the node started,
// as `patchmesh serve` would from that config: sync tokens issued by its
// upstreams over their admin APIs, gossip joined through the hub, its
// parent and the node started just before it. Its goroutines carry the
// pprof label node=<name>, so that profiles tell the nodes apart.
func (m *mesh) start(ctx context.Context, sn *simNode) error {
	sp := sn.spec
	cfg := node.DefaultsWithEnv(func(string) string { return "" })
	cfg.Node.Name, cfg.Node.Role, cfg.Node.DataDir, cfg.Node.Datacenter = sp.Name, sp.Role, sn.dataDir, sp.DC
	cfg.Node.AdvertiseURL = sn.url
	cfg.Server.Listen = net.JoinHostPort(sn.host, strconv.Itoa(m.cfg.httpPort))
	cfg.Server.ShutdownTimeout = 2 * time.Second
	cfg.Auth.Admins = []auth.Admin{{Name: adminUser, PasswordHash: m.adminHash}}
	cfg.Auth.BcryptCost = bcryptCost
	cfg.Log.Level = "warn"
	if sp.Role == node.RoleHub {
		cfg.Sync.HubKey = m.hubKeyPath
	} else {
		cfg.Sync.Trust = []string{m.hubPub}
		link := node.LinkConfig{Tier: tier}
		for _, u := range sp.Upstreams {
			up := m.nodes[u]
			tok, err := up.syncToken(ctx, sp.Name, m.cfg.within, m.log)
			if err != nil {
				return fmt.Errorf("%s: sync token from %s: %w", sp.Name, up.spec.Name, err)
			}
			// Loopback only: plain http is allowed explicitly.
			link.Upstreams = append(link.Upstreams, node.UpstreamConfig{URL: up.url, Token: tok, AllowHTTP: true})
		}
		cfg.Sync.Links = []node.LinkConfig{link}
	}
	cfg.Gossip.Bind = sn.gossip
	cfg.Gossip.Profile = m.cfg.profile
	cfg.Gossip.Compression = m.cfg.compression
	cfg.Gossip.ProbeInterval, cfg.Gossip.ProbeTimeout = m.cfg.probeInterval, m.cfg.probeTimeout
	cfg.Gossip.Keys = []string{m.gossipKey}
	if sn.i > 0 {
		seeds := []string{m.nodes[0].gossip}
		if len(sp.Upstreams) > 0 && sp.Upstreams[0] != 0 {
			seeds = append(seeds, m.nodes[sp.Upstreams[0]].gossip)
		}
		if sn.i > 1 {
			seeds = append(seeds, m.nodes[sn.i-1].gossip)
		}
		cfg.Gossip.Join = seeds
	}
	if m.pools != nil {
		m.gossipConfig(sn, &cfg)
		cfg.Gossip.Join = nil
	}
	if m.cfg.configure != nil {
		m.cfg.configure(&cfg)
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	sn.cancel = cancel
	sn.done = make(chan error, 1)
	ready := make(chan error, 1)
	i := sn.i
	opts := []node.Option{
		node.WithConsole(io.Discard),
		node.WithListener(func(l net.Listener) net.Listener { return countingListener{Listener: l, w: &sn.wire} }),
		node.WithMemberWatch(func(mem topology.Member) {
			if w := m.watch.Load(); w != nil {
				(*w)(i, mem)
			}
		}),
	}
	go pprof.Do(runCtx, pprof.Labels("node", sp.Name, "role", sp.Role), func(ctx context.Context) {
		n, err := node.New(ctx, cfg, m.log.With("node", sp.Name), opts...)
		if err != nil {
			ready <- err
			sn.done <- err
			return
		}
		sn.n = n
		ready <- nil
		sn.done <- n.Run(ctx)
	})
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("start %s: %w", sp.Name, err)
		}
	case <-time.After(m.cfg.within):
		return fmt.Errorf("start %s: not started within %v", sp.Name, m.cfg.within)
	case <-ctx.Done():
		// Give the node a moment to come up, so that stop finds it and
		// crashes it, rather than leave it running over a removed directory.
		select {
		case <-ready:
		case <-time.After(cleanupGrace):
		}
		return fmt.Errorf("start %s: %w", sp.Name, ctx.Err())
	}
	return nil
}

// crash stops a node as a SIGKILL would and waits for it to be gone, for
// at most within.
func (m *mesh) crash(sn *simNode, within time.Duration) error {
	if sn.n == nil || !sn.dead.CompareAndSwap(false, true) {
		return nil
	}
	sn.n.Crash()
	sn.cancel()
	select {
	case <-sn.done:
		return nil
	case <-time.After(within):
		return fmt.Errorf("crash %s: still running after %v", sn.spec.Name, within)
	}
}

// stop crashes every node (a graceful leave of every node at once would
// have each tell all the others) and removes the mesh's files. Each wait
// (a node's end, with -parts the other parts' stops) lasts at most grace.
func (m *mesh) stop(grace time.Duration) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, 32)
	for _, sn := range m.nodes {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := m.crash(sn, grace); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if m.cfg.parts > 1 {
		// The shared directory goes once every part stopped its nodes,
		// and a moment after, so that each saw the others' marks.
		if err := m.barrier(context.Background(), "stopped", grace); err != nil {
			errs = append(errs, err)
		}
		if m.cfg.part != 0 {
			return errors.Join(errs...)
		}
		time.Sleep(time.Second)
	}
	if err := os.RemoveAll(m.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// owned counts the nodes this process runs.
func (m *mesh) owned() int {
	k := 0
	for i := range m.nodes {
		if m.owns(i) {
			k++
		}
	}
	return k
}

// alive lists the nodes not crashed.
func (m *mesh) alive() []*simNode {
	var out []*simNode
	for _, sn := range m.nodes {
		if !sn.dead.Load() && sn.n != nil {
			out = append(out, sn)
		}
	}
	return out
}

// blobPath is where the fs driver keeps digest ("sha256:…") on the node.
func (sn *simNode) blobPath(digest string) string {
	h := digest[len("sha256:"):]
	return filepath.Join(sn.dataDir, "blobs", "sha256", h[:2], h)
}

// admin logs in once and returns the Authorization value.
func (sn *simNode) admin(ctx context.Context) (string, error) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.macaroon != "" {
		return "Macaroon " + sn.macaroon, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sn.url+"/v1/admin/login", nil)
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(adminUser, adminPassword)
	var out struct {
		Macaroon string `json:"macaroon"`
	}
	if err := do(req, &out); err != nil {
		return "", fmt.Errorf("login: %w", err)
	}
	sn.macaroon = out.Macaroon
	return "Macaroon " + out.Macaroon, nil
}

// call sends an admin request; body []byte is sent raw, anything else as
// JSON.
func (sn *simNode) call(ctx context.Context, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, sn.timeout)
	defer cancel()
	cred, err := sn.admin(ctx)
	if err != nil {
		return err
	}
	var rd io.Reader
	ctype := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/octet-stream"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, sn.url+path, rd)
	if err != nil {
		return err
	}
	if rd != nil {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Authorization", cred)
	return do(req, out)
}

func do(req *http.Request, out any) error {
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: status %d: %s", req.Method, req.URL.Path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// syncToken issues a sync token on this node for a downstream, trying
// for up to three times within, each attempt bounded by within: on a
// starved machine a relay's admin API can take longer than a minute to
// answer (bench/RESULTS.md), and with -parts the node may run in another
// process that has not started it yet (the connection is refused at once,
// and the next try waits half a second).
func (sn *simNode) syncToken(ctx context.Context, name string, within time.Duration, log *slog.Logger) (string, error) {
	var err error
	deadline := time.Now().Add(3 * within)
	for attempt := 0; attempt < 1000 && time.Now().Before(deadline); attempt++ {
		var out struct{ Token string }
		actx, cancel := context.WithTimeout(ctx, within)
		err = sn.call(actx, http.MethodPost, "/v1/admin/sync-tokens", map[string]string{"tier": tier, "name": name}, &out)
		cancel()
		if err == nil {
			return out.Token, nil
		}
		// Each failure is logged: a slow start is otherwise silent.
		log.Warn("sync_token_retry", "node", name, "upstream", sn.spec.Name, "attempt", attempt, "error", err.Error())
		select {
		case <-ctx.Done():
			return "", err
		case <-time.After(500 * time.Millisecond):
		}
	}
	return "", err
}
