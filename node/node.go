package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/replicate"
	"github.com/patchmesh/patchmesh/rollout"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
	"github.com/patchmesh/patchmesh/topology"
	"github.com/patchmesh/patchmesh/webhook"
)

// Version is reported by /debug/info; cmd/patchmesh sets it from the
// build before starting a node.
var Version = "dev"

// MachineKeySecret names the store secret that keys the machine-ID HMAC.
// It lives in the store so that nodes sharing one database agree on it.
const MachineKeySecret = "machine-id-hmac"

// MaintainEvery is how often a running node purges expired root keys.
const MaintainEvery = time.Hour

// Node is one running patchmesh server.
type Node struct {
	cfg     Config
	log     *slog.Logger
	console io.Writer
	store   *sqlstore.Store
	blobs   blob.Store
	auth    *auth.Authenticator
	handler http.Handler
	ln      net.Listener
	scheme  string
	// tlsConfig is nil for plain HTTP.
	tlsConfig *tls.Config
	srv       *http.Server
	// changes wakes long-polling feed requests when the log grows.
	changes store.Changes
	// storeRecheck is storeRecheck(cfg).
	storeRecheck time.Duration
	// hubKey signs what a hub publishes; nil on relays and edges.
	hubKey ed25519.PrivateKey
	// nodeKey is the node's identity: the hub admits it, it signs hellos
	// and machine credentials.
	nodeKey ed25519.PrivateKey
	// puller runs the sync links of a relay or edge; nil on the hub.
	puller *federation.Puller
	// replicator fetches the puller's blobs; nil on the hub. The peer
	// endpoint wakes peers waiting for a blob when it commits one.
	replicator *replicate.Replicator
	// beacon signs the hub's heartbeats; nil elsewhere.
	beacon *federation.Beacon
	// reporter pushes fleet reports up the links; nil on the hub.
	reporter *federation.Reporter
	// now is the node's clock.
	now func() time.Time
	// gossip is the node's mesh membership; nil with gossip off.
	gossip *gossip
	// hooks delivers events to the webhooks.
	hooks *webhook.Dispatcher
	// rollouts runs the hub's rollout plans; nil elsewhere.
	rollouts *rollout.Manager
	// peerLn and peerSrv are the peer listener (mutual TLS between
	// nodes); nil without server.peer_listen.
	peerLn  net.Listener
	peerSrv *http.Server
	// peerCert is the node's certificate over its node key.
	peerCert tls.Certificate
	// pins says which node keys hold a live admission here.
	pins *peerPins
	// conns are the peer listener's connections, cut on a removal.
	conns *peerConns
	// peerClients are the node's clients to other nodes, whose idle
	// connections a removal drops.
	peerClients []*http.Client
	// resolver finds members' peer listeners from their API URLs.
	resolver *peerResolver
	// progress is the sync progress of other nodes this node knows, from
	// its downstreams' feed requests and fleet reports; lastHead is the
	// last log head ownProgress read, at store generation headGen and
	// time headAt (Unix nanoseconds; 0 before the first read).
	progress *federation.Progress
	lastHead atomic.Int64
	headGen  atomic.Uint64
	headAt   atomic.Int64
	// lock holds the data directory for this process.
	lock *dataDirLock
	// memberWatch hears every member change; nil but in harnesses.
	memberWatch func(topology.Member)
	// announce holds console messages kept until the node has started,
	// so that a node that fails to start prints nothing.
	announce []string

	closeOnce sync.Once
	closeErr  error
}

// Option adjusts how New builds a node beyond what Config says.
type Option func(*options)

type options struct {
	console io.Writer
	now     func() time.Time
	// wrapListener, if set, wraps the bound listener (WithListener).
	wrapListener func(net.Listener) net.Listener
	// memberWatch, if set, hears every member change (WithMemberWatch).
	memberWatch func(topology.Member)
}

// WithConsole sends the messages meant for the person who started the
// node — the one-time bootstrap password and the listening address — to w
// instead of standard error. They never go to the log.
func WithConsole(w io.Writer) Option { return func(o *options) { o.console = w } }

// WithClock pins the node's clock, for tests.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// New validates cfg, binds the listener (so that Addr is known as soon as
// New returns), opens the store and blob driver, builds the API and
// bootstraps the first admin if there is none. Call Run to serve, or Close to
// release everything without serving.
func New(ctx context.Context, cfg Config, log *slog.Logger, opts ...Option) (*Node, error) {
	o := options{console: os.Stderr, now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node: invalid config:\n%w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, log: log, console: o.console, now: o.now, memberWatch: o.memberWatch, storeRecheck: storeRecheck(cfg),
		progress: federation.NewProgress(o.now)}
	ok := false
	defer func() {
		if !ok {
			n.Close()
		}
	}()

	// The data directory first: a second node on it must be told so,
	// not that the port (which it likely shares too) is taken.
	lock, err := lockDataDir(cfg.Node.DataDir)
	if err != nil {
		return nil, err
	}
	n.lock = lock

	// Bind next: a taken port fails fast, before any database work, and
	// the bootstrap message can name the node's URL.
	if err := n.bind(); err != nil {
		return nil, err
	}
	if o.wrapListener != nil {
		n.ln = o.wrapListener(n.ln)
	}
	if n.cfg.Node.Name == "" {
		host, _ := os.Hostname()
		_, port, _ := net.SplitHostPort(n.Addr())
		n.cfg.Node.Name = DefaultName(host, port)
		cfg.Node.Name = n.cfg.Node.Name
	}

	// A registry per node, so that several nodes can run in one process
	// (tests); it also carries the Go runtime and process metrics, and the
	// heap the last GC found live (go_gc_heap_live_bytes): what the node
	// holds, where go_memstats_heap_inuse_bytes also counts garbage not
	// collected yet, which an idle node keeps for up to 2 minutes.
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := api.NewMetrics(reg)

	if err := n.loadNodeKey(); err != nil {
		return nil, err
	}
	if cfg.Node.Role == RoleHub {
		if err := n.loadHubKey(); err != nil {
			return nil, err
		}
	}
	if err := n.openStore(ctx, metrics, o.now); err != nil {
		return nil, err
	}
	// The store's connection pool: waits for a connection (all in use)
	// are the first sign of a store that cannot keep up with the node's
	// requests (issue 15: relays' reads outwaiting their clients).
	reg.MustRegister(collectors.NewDBStatsCollector(n.store.DB(), "patchmesh"))
	if err := n.openBlobs(ctx); err != nil {
		return nil, err
	}
	if err := n.bindPeer(ctx); err != nil {
		return nil, err
	}
	n.resolver = &peerResolver{}
	if n.hubKey != nil {
		n.beacon = federation.NewBeacon(n.hubKey, n.store, cfg.Sync.HeartbeatEvery, o.now, log)
		n.beacon.WakeOn(&n.changes)
	}
	if cfg.Node.Role != RoleHub {
		if err := n.newPuller(o.now); err != nil {
			return nil, err
		}
		reg.MustRegister(federation.NewCollector(n.puller))
		if err := n.newReporter(o.now); err != nil {
			return nil, err
		}
		reg.MustRegister(n.reporter)
	}
	if cfg.Gossip.On() {
		if err := n.startGossip(ctx); err != nil {
			return nil, err
		}
		reg.MustRegister(topology.NewCollector(n.gossip.topo))
	}

	var hookPoll time.Duration // the dispatcher's default, for a store others may write
	if ownsEmbeddedStore(cfg) {
		hookPoll = soleWriterHookPoll
	}
	n.hooks, err = webhook.New(webhook.Config{
		Store: n.store, Node: cfg.Node.Name, AllowHTTP: cfg.Webhooks.AllowHTTP,
		Timeout: cfg.Webhooks.Timeout, RetryMin: cfg.Webhooks.RetryMin, RetryMax: cfg.Webhooks.RetryMax, Keep: cfg.Webhooks.Keep,
		Poll: hookPoll, Changes: &n.changes, SoleWriter: ownsEmbeddedStore(cfg), UserAgent: "patchmesh/" + Version, Log: log, Registerer: reg, Now: o.now,
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}

	n.rollouts = n.newRollouts()
	reg.MustRegister(rollout.NewCollector(n.store))

	ac := cfg.authConfig()
	ac.Now = o.now
	// The store invalidates cached token records at every write.
	ac.Changes = &n.changes
	ac.TokenCacheMaxAge = cacheMaxAge(cfg)
	n.auth = auth.New(n.store, ac, log)

	key, err := n.store.Secret(ctx, MachineKeySecret, func() ([]byte, error) {
		b := make([]byte, 32)
		_, err := rand.Read(b)
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("node: machine key: %w", err)
	}
	if err := n.publishMeshKey(ctx, key, o.now()); err != nil {
		return nil, err
	}

	// Closed by http.Server.Shutdown (RegisterOnShutdown below), so that
	// long polls end as the drain begins.
	stopping := make(chan struct{})
	// The dashboard asks other nodes which blobs they hold as the sync
	// loop and peer fetch reach them: the same CA bundle and proxy.
	peerClient, err := n.nodeClient()
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	peerClient.Timeout = api.DashboardPeerTimeout
	proxies, err := api.ParseTrustedProxies(cfg.Server.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("node: server.trusted_proxies: %w", err)
	}
	adminNets, err := api.ParseTrustedProxies(cfg.Server.AdminNetworks)
	if err != nil {
		return nil, fmt.Errorf("node: server.admin_networks: %w", err)
	}
	metricsToken, err := cfg.metricsToken()
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	handler, err := api.New(api.Config{
		TrustedProxies: proxies,
		AdminNetworks:  adminNets,
		MetricsToken:   metricsToken,

		SuccessLogPerSecond: cfg.Log.SuccessesPerSecond,
		OfferIndexMaxAge:    cacheMaxAge(cfg),
		Store:               n.store,
		Blobs:               n.blobs,
		BlobRedirect:        n.blobRedirect(),
		Auth:                n.auth,
		Log:                 log,
		Metrics:             metrics,
		Gatherer:            reg,
		MachineKey:          key,
		Limits: api.Limits{
			MaxBodyBytes:   cfg.Limits.MaxBodyBytes,
			MaxUploadBytes: cfg.Limits.MaxUploadBytes,
			MaxReportBytes: cfg.Reports.MaxBytes,
		},
		Governor: api.GovernorConfig{
			MaxInFlight:  cfg.Governor.MaxInFlight,
			MaxQueue:     apiQueue(cfg.Governor.MaxQueue),
			QueueTimeout: cfg.Governor.QueueTimeout,

			AdminMaxInFlight: cfg.Governor.AdminMaxInFlight,
			AdminMaxQueue:    apiQueue(cfg.Governor.AdminMaxQueue),
		},
		Info: api.Info{Version: Version, Role: cfg.Node.Role, Node: cfg.Node.Name, URL: n.apiURL(), DC: cfg.Node.Datacenter,
			PeerURL: n.peerURL()},
		Nodes:        n.nodeLister(),
		Peer:         n.peerConfig(),
		JoinTokens:   n.joinTokens(),
		Topology:     n.topologyViewer(),
		Now:          o.now,
		Sync:         n.syncControl(),
		HubKey:       n.hubPublicKey(),
		Heartbeats:   n.heartbeats(),
		Arrivals:     n.arrivals(),
		Progress:     n.progress,
		ConfigKeys:   cfg.Sync.Trust,
		Changes:      &n.changes,
		Endorsements: n.endorsements(),
		Stopping:     stopping,
		NodeKey:      n.nodeKey,
		Webhooks:     n.hooks,
		Dashboard:    api.DashboardConfig{PublicRead: cfg.Dashboard.PublicRead, PeerClient: peerClient},
		Rollouts:     n.rollouts,
	})
	if err != nil {
		return nil, fmt.Errorf("node: api: %w", err)
	}
	n.handler = handler

	idle := newIdleConns(cfg.Server.MaxIdleConns)
	n.srv = &http.Server{
		Handler:           n.handler,
		TLSConfig:         n.tlsConfig,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout,
		IdleTimeout:       cfg.Server.IdleTimeout,
		ConnState:         idle.track,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	n.srv.RegisterOnShutdown(func() { close(stopping) })
	n.newPeerServer()
	if n.hubKey != nil {
		if err := n.admitSelf(ctx); err != nil {
			return nil, err
		}
	}
	// Last, so that a node that fails to start prints no password.
	if err := n.bootstrap(ctx); err != nil {
		return nil, err
	}
	for _, m := range n.announce {
		fmt.Fprint(n.console, m)
	}
	ok = true
	return n, nil
}

func (n *Node) openStore(ctx context.Context, metrics *api.Metrics, now func() time.Time) error {
	opts := sqlstore.Options{Observe: metrics.ObserveStore, Now: now, Changes: &n.changes}
	if n.hubKey != nil {
		opts.Sealer = federation.Sealer{Key: n.hubKey}
	}
	var err error
	switch n.cfg.Store.Driver {
	case DriverSQLite:
		path := n.cfg.StorePath()
		n.store, err = sqlstore.OpenSQLiteWith(ctx, path, sqlstore.SQLiteOptions{MmapSize: n.cfg.Store.SQLiteMmapSize}, opts)
		if err != nil {
			return fmt.Errorf("node: open sqlite store %s: %w", path, err)
		}
		n.log.Info("store_open", "driver", DriverSQLite, "path", path)
	case DriverPostgres:
		s := n.cfg.Store
		n.store, err = sqlstore.OpenPostgres(ctx, s.DSN, sqlstore.PostgresOptions{
			MaxConns:        s.MaxConns,
			MinConns:        s.MinConns,
			MaxConnLifetime: s.ConnMaxLifetime,
			MaxConnIdleTime: s.ConnMaxIdleTime,
		}, opts)
		if err != nil {
			// The driver's error may quote the DSN; say which server
			// failed through the redacted form only.
			return fmt.Errorf("node: open postgres store %s: %w", n.cfg.RedactedDSN(), scrub(err, s.DSN))
		}
		n.log.Info("store_open", "driver", DriverPostgres, "dsn", n.cfg.RedactedDSN(), "max_conns", s.MaxConns)
	}
	return nil
}

// scrub removes a secret-bearing string from an error message, keeping the
// error's chain for errors.Is.
func scrub(err error, secret string) error {
	if secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &scrubbedError{msg: strings.ReplaceAll(err.Error(), secret, redactDSN(secret)), err: err}
}

type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

func (n *Node) openBlobs(ctx context.Context) error {
	var pool *pgxpool.Pool
	if n.cfg.Blobs.Driver == DriverPostgres {
		pool = n.store.Pool()
	}
	s, err := openBlobStore(ctx, n.cfg, pool, n.log)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.blobs = s
	return nil
}

// bootstrap creates the first admin on a fresh node. Its password goes to
// the console once, never to the log: logs are shipped and kept.
func (n *Node) bootstrap(ctx context.Context) error {
	user, password, created, err := n.auth.Bootstrap(ctx)
	if err != nil {
		return fmt.Errorf("node: bootstrap admin: %w", err)
	}
	if !created {
		return nil
	}
	// auth logs the admin_bootstrap security event; this line tells an
	// operator reading the log where the password went.
	n.log.Warn("bootstrap_password_printed", "user", user, "to", "console",
		"note", "no admin was configured or stored; the password of the one created was printed to the console once")
	fmt.Fprint(n.console, bootstrapBox(n.URL(), user, password))
	return nil
}

// bootstrapBox frames the one-time credentials so that they stand out in a
// terminal full of log lines.
func bootstrapBox(url, user, password string) string {
	lines := []string{
		"patchmesh created the first administrator.",
		"",
		"  user:     " + user,
		"  password: " + password,
		"",
		"It is shown only this once; only its hash is stored.",
		"Log in with:",
		"  patchmesh admin --server " + url + " login --user " + user + " --password-stdin",
		"Then add admins to the config (patchmesh admin hash-password).",
	}
	width := 0
	for _, l := range lines {
		width = max(width, len(l))
	}
	var b strings.Builder
	bar := "+" + strings.Repeat("-", width+2) + "+\n"
	b.WriteString(bar)
	for _, l := range lines {
		fmt.Fprintf(&b, "| %-*s |\n", width, l)
	}
	b.WriteString(bar)
	return b.String()
}

func (n *Node) bind() error {
	s := n.cfg.Server
	n.scheme = "http"
	if s.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.TLSCert, s.TLSKey)
		if err != nil {
			return fmt.Errorf("node: load TLS certificate: %w", err)
		}
		n.tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		n.scheme = "https"
	}
	ln, err := net.Listen("tcp", s.Listen)
	if err != nil {
		return fmt.Errorf("node: listen on %s: %w", s.Listen, err)
	}
	n.ln = ln
	return nil
}

// Addr is the address the node listens on, with the real port when the
// config asked for port 0.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// URL is the node's base URL, e.g. http://127.0.0.1:8080.
func (n *Node) URL() string { return n.scheme + "://" + n.Addr() }

// Handler is the node's HTTP API, for tests that drive it without a socket.
func (n *Node) Handler() http.Handler { return n.handler }

// Run serves until ctx ends, then stops taking connections, waits up to
// server.shutdown_timeout for requests in flight, and closes the store.
// It returns nil after a clean drain. Run may be called once.
func (n *Node) Run(ctx context.Context) error {
	defer n.Close()
	n.log.Info("node_listening", "addr", n.Addr(), "url", n.URL(),
		"node", n.cfg.Node.Name, "role", n.cfg.Node.Role, "version", Version)
	fmt.Fprintf(n.console, "patchmesh listening on %s\n", n.URL())

	maintainCtx, stopMaintain := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { n.maintain(maintainCtx) })
	wg.Go(func() { n.cleanFleet(maintainCtx, n.now) })
	if n.reporter != nil {
		wg.Go(func() { n.reporter.Run(maintainCtx) })
	}
	if n.puller != nil {
		// Stopped with maintenance, before the store closes, so that a
		// round in progress ends its transaction first.
		wg.Go(func() { n.puller.Run(maintainCtx) })
	}
	if n.gossip != nil {
		wg.Go(func() { n.gossip.watch(maintainCtx) })
	}
	if n.beacon != nil {
		wg.Go(func() { n.beacon.Run(maintainCtx) })
	}
	if n.rollouts != nil {
		wg.Go(func() { n.rollouts.Run(maintainCtx) })
	}
	// Stopped with maintenance too: an attempt in flight is cut off and
	// stays in the outbox for the next start.
	wg.Go(func() { n.hooks.Run(maintainCtx) })
	wg.Go(func() { n.watchHealth(maintainCtx) })
	wg.Go(func() { n.watchPins(maintainCtx) })
	defer func() {
		stopMaintain()
		wg.Wait()
	}()

	serveErr := make(chan error, 2)
	go func() {
		var err error
		if n.srv.TLSConfig != nil {
			err = n.srv.ServeTLS(n.ln, "", "")
		} else {
			err = n.srv.Serve(n.ln)
		}
		serveErr <- err
	}()
	if n.peerSrv != nil {
		n.log.Info("peer_listening", "addr", n.peerLn.Addr().String(), "url", n.peerURL(), "key_id", n.nodeKeyID())
		go func() { serveErr <- n.peerSrv.ServeTLS(n.peerLn, "", "") }()
	}

	select {
	case err := <-serveErr:
		// Serve only returns early on a listener failure.
		return fmt.Errorf("node: serve: %w", err)
	case <-ctx.Done():
	}

	if n.gossip != nil {
		// Leave first, so that the mesh sees a departure rather than a
		// failure and moves downstreams and machines away at once.
		if err := n.gossip.topo.Leave(5 * time.Second); err != nil {
			n.log.Warn("gossip_leave_failed", "error", err.Error())
		}
	}
	n.log.Info("node_draining", "timeout", n.cfg.Server.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.Server.ShutdownTimeout)
	defer cancel()
	servers := []*http.Server{n.srv}
	if n.peerSrv != nil {
		servers = append(servers, n.peerSrv)
	}
	var err error
	var dwg sync.WaitGroup
	var emu sync.Mutex
	for _, srv := range servers {
		dwg.Go(func() {
			if serr := srv.Shutdown(sctx); serr != nil {
				// Requests still running after the timeout are cut
				// off: a stop must not hang on a stuck client.
				n.log.Warn("node_drain_timeout", "error", serr.Error())
				srv.Close()
				emu.Lock()
				err = errors.Join(err, serr)
				emu.Unlock()
			}
		})
	}
	dwg.Wait()
	for range servers {
		if serr := <-serveErr; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
	}
	stopMaintain()
	wg.Wait()
	if cerr := n.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return fmt.Errorf("node: shutdown: %w", err)
	}
	n.log.Info("node_stopped")
	return nil
}

// sweeper is a blob driver that leaves abandoned uploads behind after a
// crash and can clear them (the postgres driver).
type sweeper interface {
	Sweep(ctx context.Context) (int, error)
}

// maintain runs the periodic housekeeping — purging expired macaroon root
// keys, sweeping abandoned blob uploads — once at start and then every
// MaintainEvery.
func (n *Node) maintain(ctx context.Context) {
	t := time.NewTicker(MaintainEvery)
	defer t.Stop()
	for {
		if err := n.auth.Maintain(ctx); err != nil && ctx.Err() == nil {
			n.log.Error("maintain_failed", "task", "purge_root_keys", "error", err.Error())
		}
		if s, ok := n.blobs.(sweeper); ok {
			if k, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				n.log.Error("maintain_failed", "task", "sweep_uploads", "error", err.Error())
			} else if k > 0 {
				n.log.Info("blob_uploads_swept", "count", k)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close releases the listener, the blob driver and the store. Run calls it;
// call it directly only for a node that was never run. It is safe to call
// more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.gossip != nil {
			if err := n.gossip.topo.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close gossip: %w", err))
			}
		}
		for _, ln := range []net.Listener{n.ln, n.peerLn} {
			if ln != nil {
				if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
					errs = append(errs, fmt.Errorf("close listener: %w", err))
				}
			}
		}
		if c, ok := n.blobs.(io.Closer); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close blobs: %w", err))
			}
		}
		if n.store != nil {
			if err := n.store.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close store: %w", err))
			}
		}
		// Last, once nothing writes to the directory any more.
		if err := n.lock.release(); err != nil {
			errs = append(errs, fmt.Errorf("release data directory: %w", err))
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// topologyViewer is the gossip membership for GET /v1/topology; a nil
// interface with gossip off, never a nil *Topology in a non-nil one.
func (n *Node) topologyViewer() api.TopologyViewer {
	if n.gossip == nil {
		return nil
	}
	return n.gossip
}

// apiQueue translates the config's queue length for the api package, where
// 0 means its default and a negative value means no queue.
func apiQueue(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// soleWriterCacheMaxAge bounds the token cache and the offer index of a
// node that is its database's only writer.
const soleWriterCacheMaxAge = time.Hour

// soleWriterHookPoll is how often the webhook dispatcher of a node that
// owns its embedded store looks at the store unwoken: a safety net, since
// every change wakes it. The dispatcher's 2 s default was three queries
// every 2 s on every idle node, most of an idle edge's store reads
// (bench/RESULTS.md, "Idle store reads without webhook polling").
const soleWriterHookPoll = time.Minute

// soleWriterRecheck is how often a node that hears every write to its
// store rereads it unwoken for its pins and its gossip meta (see
// storeRecheck).
const soleWriterRecheck = time.Minute

// storeRecheck bounds how long the pins (watchPins) and the advertised
// meta (gossip.watch) go without a store read when no write was heard:
// metaRecheck where other nodes may write the store unheard (a SQLite
// file outside the data directory), soleWriterRecheck where every write
// is heard, as this node's own (its embedded store) or through the store
// generation it polls (PostgreSQL, see cacheMaxAge). There the reread is
// a safety net: every 10 s it was two of the few store reads an idle node
// made, each one a statement to prepare, on every node of a mesh.
func storeRecheck(cfg Config) time.Duration {
	if cfg.Store.Driver == DriverPostgres || ownsEmbeddedStore(cfg) {
		return soleWriterRecheck
	}
	return metaRecheck
}

// cacheMaxAge is how long the token cache and the offer index may serve
// an entry without a write on this node. An embedded SQLite database in
// the data directory is this node's alone (the directory's lock keeps a
// second node out), so every write to it invalidates the caches at once
// and the bound only drops what is no longer asked for. A PostgreSQL
// database may be shared, but every node bumps its store generation in
// each transaction and polls it (sqlstore.DefaultGenerationPoll, 200 ms),
// so another node's writes invalidate the caches within a poll: the
// sole writer's bound holds there too. A SQLite file elsewhere may be
// written by other nodes, which this node does not hear of: the
// packages' defaults (1s) then bound how late their writes are seen. 0
// means those defaults.
func cacheMaxAge(cfg Config) time.Duration {
	if cfg.Store.CacheMaxAge > 0 {
		return cfg.Store.CacheMaxAge // the operator's word
	}
	if cfg.Store.Driver == DriverPostgres {
		return soleWriterCacheMaxAge
	}
	if !ownsEmbeddedStore(cfg) {
		return 0
	}
	return soleWriterCacheMaxAge
}

// ownsEmbeddedStore says whether the node's store is a SQLite database in
// its data directory, which no other node writes: every change to it is
// this node's own, and wakes what waits for one.
func ownsEmbeddedStore(cfg Config) bool {
	if cfg.Store.Driver != DriverSQLite {
		return false
	}
	rel, err := filepath.Rel(cfg.Node.DataDir, cfg.StorePath())
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}
