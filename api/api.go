// Package api is the HTTP surface every patchmesh node serves, as
// docs/api.md specifies it: the admin API, the client API, blob downloads,
// /debug/info, /debug/status and /metrics, with the middleware around them
// (request IDs, access log, metrics, panic recovery, the governor).
//
// It owns HTTP: routing, decoding and validating requests before anything
// changes, turning errors into the documented status codes and bodies, and
// deciding which credential may reach which resource (a token's tier
// against a patch's tiers). It does not own the credentials themselves
// (package auth checks tokens and macaroons), persistence (store, blob) or
// the rules of a valid value (catalog). Federation's sync endpoints share
// the router; the sync loop and the record format are federation's.
package api

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/rollout"
	"github.com/patchmesh/patchmesh/store"
)

// Limits bound what one request may make a node read.
type Limits struct {
	// MaxBodyBytes caps JSON request bodies. 0 means 1 MiB.
	MaxBodyBytes int64
	// MaxUploadBytes caps patch uploads. 0 means 1 GiB.
	MaxUploadBytes int64
	// MaxReportBytes caps a fleet report push from a downstream. 0 means
	// federation.DefaultMaxReportBytes.
	MaxReportBytes int64
}

// Limit defaults.
const (
	DefaultMaxBodyBytes   = 1 << 20
	DefaultMaxUploadBytes = 1 << 30
)

// Info is what /debug/info says about the node.
type Info struct {
	Version string
	Role    string
	Node    string
	// URL is the node's advertised base URL for machines, as gossip
	// carries it. Empty: GET /v1/client/nodes names this node by the
	// scheme and host of the request.
	URL string
	// DC is the node's data centre (node.datacenter), naming this node's
	// own machines in fleet reports.
	DC string
	// PeerURL is the peer listener's advertised base URL, shown by
	// /debug/info (and the join); members of the mesh learn it from
	// gossip meta. Empty without a peer listener.
	PeerURL string
}

// Config is what New builds the handler from.
type Config struct {
	Store store.Store
	Blobs blob.Store
	// BlobRedirect, when positive and Blobs is a blob.Presigner, answers
	// blob downloads with a redirect to a URL of the object store valid
	// this long, instead of relaying the bytes.
	BlobRedirect time.Duration
	Auth         *auth.Authenticator
	// Log receives the access log, errors and security events. It is
	// wrapped with NewLogHandler if it is not already. Nil discards.
	Log *slog.Logger
	// Metrics is from NewMetrics. Nil means metrics on a private registry.
	Metrics *Metrics
	// Gatherer is what /metrics serves. Nil means the registry given to
	// NewMetrics when that is a Gatherer, else prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer
	// MachineKey is the HMAC key for machine IDs (Store.Secret).
	MachineKey []byte
	Limits     Limits
	Governor   GovernorConfig
	Info       Info
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// Sync is the running sync loop; nil on a node without upstream links
	// (the hub).
	Sync federation.Control
	// HubKey is the hub's public signing key; nil unless this node is the
	// hub.
	HubKey ed25519.PublicKey
	// ConfigKeys are the hub keys pinned in the node's config file,
	// "ed25519:…".
	ConfigKeys []string
	// Heartbeats gives the newest hub heartbeat per tier, served with
	// every feed page: the hub's Beacon, or a relay's Puller. Nil serves
	// none.
	Heartbeats federation.Heartbeats
	// Arrivals, on a node with upstream links, lists the records whose
	// blobs it is still fetching in its feed and streams those blobs to
	// downstream nodes as they arrive (cut-through). Nil: none.
	Arrivals federation.Arrivals
	// Changes wakes long-polling feed requests; nil means feed requests
	// poll the store every 250ms while they wait.
	Changes *store.Changes
	// Stopping is closed when the node begins to stop: long-polling feed
	// requests then answer at once, as at their deadline, so that a stop
	// waits for real work (downloads, uploads) only. Nil never closes.
	Stopping <-chan struct{}
	// Nodes lists the healthy nodes serving a tier, for machines choosing
	// a node; nil means machines are told of this node only.
	Nodes NodeLister
	// Topology is the node's gossip membership, for GET /v1/topology; nil
	// with gossip off, when the answer holds this node alone.
	Topology TopologyViewer
	// Progress, if set, keeps the sync figures downstreams send with
	// their feed requests and fleet reports (federation/progress.go), for
	// the node's view of the mesh. Nil: they are read and dropped.
	Progress *federation.Progress
	// Endorsements are the hub key endorsements (federation.Endorse) this
	// node hands machines with every offer and registration, so that a
	// machine pinning an older hub key can verify records of the new one.
	Endorsements []federation.Envelope
	// Peer, when set, says the node has a peer listener (PeerListener):
	// node-to-node traffic then comes with a certificate identity, a sync
	// token is refused without one, and GET /v1/peer/blobs serves any
	// admitted node. Nil: no peer listener, sync tokens work anywhere and
	// the peer endpoint answers 404.
	Peer *PeerConfig
	// JoinTokens keeps the hub's join tokens (the signed join, on the
	// peer listener); nil on other nodes, where joins answer 404.
	JoinTokens store.JoinTokens
	// NodeKey is this node's identity key (federation.LoadOrCreateNodeKey):
	// it signs hellos and the machine credentials issued at registration.
	// Nil means neither is offered.
	NodeKey ed25519.PrivateKey
	// CredentialTTL is how long a machine credential issued here is
	// valid; 0 means DefaultCredentialTTL.
	CredentialTTL time.Duration
	// Webhooks is the node's webhook dispatcher. Nil: hooks are still
	// managed here, https only, and delivered by whichever dispatcher
	// runs over the store.
	Webhooks Webhooks
	// Dashboard tunes the web dashboard (docs/api.md, "Dashboard").
	Dashboard DashboardConfig
	// Rollouts runs the hub's rollout plans; nil on every other node,
	// which answers rollout changes with not_hub.
	Rollouts *rollout.Manager
	// TrustedProxies are the proxies whose X-Forwarded-For names the
	// client (ParseTrustedProxies). From any other peer the header is
	// ignored and the peer is the client.
	TrustedProxies []netip.Prefix
	// MetricsToken, when not empty, is the bearer token GET /metrics
	// requires (a scraper's "Authorization: Bearer <token>").
	MetricsToken string
	// OfferIndexMaxAge bounds how long the offer index serves an answer
	// without a write on this node; 0 means DefaultOfferIndexMaxAge. A
	// node whose database no other node writes may set it high: this
	// node's writes invalidate the index at once whatever it is.
	OfferIndexMaxAge time.Duration
	// SuccessLogPerSecond caps the access lines logged per second for
	// successful requests on the machine-facing routes (sampledRoutes);
	// the request metrics count every one. 0 logs every request.
	SuccessLogPerSecond int
	// AdminNetworks, when not empty, are the only networks the admin API
	// (its login included) and the dashboard's endpoints answer; others
	// get 403 forbidden and a security event.
	AdminNetworks []netip.Prefix
}

type server struct {
	store   store.Store
	blobs   blob.Store
	auth    *auth.Authenticator
	log     *slog.Logger
	metrics *Metrics
	key     []byte
	limits  Limits
	info    Info
	now     func() time.Time
	started time.Time
	uploads digestLocks
	// redirect is Config.BlobRedirect; probe rate-limits the blob store
	// probe of /debug/status.
	redirect time.Duration
	probe    probeCache

	sync       federation.Control
	hubPub     ed25519.PublicKey
	configKeys []configKey
	changes    *store.Changes
	feeds      *feedPages
	stopping   <-chan struct{}
	heartbeats federation.Heartbeats
	arrivals   federation.Arrivals
	progress   *federation.Progress
	nodes      NodeLister
	topo       TopologyViewer
	peer       *PeerConfig
	joinTokens store.JoinTokens
	join       joins
	// peerWaiters holds a token per peer request waiting for a blob
	// (?wait= on the peer endpoint).
	peerWaiters chan struct{}

	nodeKey       ed25519.PrivateKey
	nodeKeyID     string
	credentialTTL time.Duration
	identityLog   identityLog
	endorse       []federation.Envelope
	webhooks      Webhooks
	rollouts      *rollout.Manager
	// offers answers check-ins from memory; nil without Changes.
	offers *offerIndex
	// successes samples the access lines of successful machine requests.
	successes *auth.Sampler

	// meshKey caches the mesh key once this node holds it (fleet.go).
	meshKey      atomic.Pointer[[]byte]
	metricsToken string
	dashCfg      DashboardConfig
	dash         *dashState
	peerClient   *http.Client
}

// New returns the node's HTTP handler.
func New(cfg Config) (http.Handler, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("api: Config.Store is nil")
	case cfg.Blobs == nil:
		return nil, errors.New("api: Config.Blobs is nil")
	case cfg.Auth == nil:
		return nil, errors.New("api: Config.Auth is nil")
	case len(cfg.MachineKey) < 16:
		return nil, errors.New("api: Config.MachineKey must be at least 16 bytes")
	case cfg.Limits.MaxBodyBytes < 0, cfg.Limits.MaxUploadBytes < 0, cfg.Limits.MaxReportBytes < 0:
		return nil, errors.New("api: Config.Limits must not be negative")
	case cfg.SuccessLogPerSecond < 0, cfg.OfferIndexMaxAge < 0:
		return nil, errors.New("api: Config.SuccessLogPerSecond and OfferIndexMaxAge must not be negative")
	}
	if err := checkHubKey(cfg.HubKey); err != nil {
		return nil, err
	}
	if err := checkNodeKey(cfg.NodeKey); err != nil {
		return nil, err
	}
	if cfg.CredentialTTL < 0 {
		return nil, errors.New("api: Config.CredentialTTL must not be negative")
	}
	if cfg.CredentialTTL == 0 {
		cfg.CredentialTTL = DefaultCredentialTTL
	}
	configKeys, err := parseConfigKeys(cfg.ConfigKeys)
	if err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Limits.MaxBodyBytes == 0 {
		cfg.Limits.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Limits.MaxUploadBytes == 0 {
		cfg.Limits.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if cfg.Limits.MaxReportBytes == 0 {
		cfg.Limits.MaxReportBytes = federation.DefaultMaxReportBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	gatherer := cfg.Gatherer
	if gatherer == nil {
		gatherer = cfg.Metrics.gatherer
	}
	if gatherer == nil {
		gatherer = prometheus.DefaultGatherer
	}
	s := &server{
		store:   cfg.Store,
		blobs:   cfg.Blobs,
		auth:    cfg.Auth,
		log:     slog.New(NewLogHandler(cfg.Log.Handler())),
		metrics: cfg.Metrics,
		key:     cfg.MachineKey,
		limits:  cfg.Limits,
		info:    cfg.Info,
		now:     cfg.Now,

		redirect: cfg.BlobRedirect,

		sync:       cfg.Sync,
		hubPub:     cfg.HubKey,
		heartbeats: cfg.Heartbeats,
		arrivals:   cfg.Arrivals,
		progress:   cfg.Progress,
		configKeys: configKeys,
		changes:    cfg.Changes,
		stopping:   cfg.Stopping,
		nodes:      cfg.Nodes,
		topo:       cfg.Topology,
		peer:       cfg.Peer,
		joinTokens: cfg.JoinTokens,

		peerWaiters: make(chan struct{}, maxPeerWaiters),

		nodeKey:       cfg.NodeKey,
		credentialTTL: cfg.CredentialTTL,
		endorse:       cfg.Endorsements,
		webhooks:      cfg.Webhooks,
		rollouts:      cfg.Rollouts,

		dashCfg:    cfg.Dashboard,
		dash:       &dashState{},
		peerClient: cfg.Dashboard.PeerClient,
	}
	// The index ages its answers by the wall clock, whatever clock a
	// test pins for the API.
	s.offers = newOfferIndex(cfg.Changes, time.Now)
	s.feeds = &feedPages{changes: cfg.Changes, read: cfg.Store.Feed}
	if s.offers != nil && cfg.OfferIndexMaxAge > 0 {
		s.offers.maxAge = cfg.OfferIndexMaxAge
	}
	s.successes = &auth.Sampler{PerSecond: cfg.SuccessLogPerSecond, Now: s.now}
	if s.peerClient == nil {
		s.peerClient = &http.Client{Timeout: holderTimeout}
	}
	if s.nodeKey != nil {
		s.nodeKeyID = federation.KeyID(s.nodeKey.Public().(ed25519.PublicKey))
	}
	s.started = s.now()
	if s.topo != nil && s.stopping != nil {
		go s.watch(s.stopping)
	}
	s.metricsToken = cfg.MetricsToken
	r := s.router(gatherer, cfg.Governor)
	return withRequest(cfg.TrustedProxies, s.observe(s.recoverPanics(s.guardAdminNetworks(cfg.AdminNetworks, r)))), nil
}

// router routes every path of the API to its handler. Which paths exist
// does not depend on the configuration: an endpoint a node cannot serve
// (the hub key on a downstream, peer blobs with gossip off) still answers,
// with the documented error.
func (s *server) router(gatherer prometheus.Gatherer, gov GovernorConfig) *mux.Router {
	r := mux.NewRouter()
	// mux would answer a path with "//" or "/./" with a bare redirect;
	// such a path matches no route here and gets the JSON 404.
	r.SkipClean(true)
	answerUnrouted(r)
	r.Use(recordRoute)

	// Operators must see an overloaded node, so these bypass the governor.
	r.Handle("/metrics", methods{http.MethodGet: s.guardMetrics(s.metricsToken, promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
	}))})
	r.Handle("/debug/info", methods{http.MethodGet: s.handle(s.debugInfo)})
	r.Handle("/debug/status", methods{http.MethodGet: s.handle(s.debugStatus)})
	s.dashboardRoutes(r)

	v1 := subrouter(r, "/v1")
	v1.Use(newGovernor(gov, s.metrics).middleware(s))
	s.adminRoutes(v1)
	s.clientRoutes(v1)
	s.syncRoutes(v1)
	s.joinRoutes(v1)
	s.dashboardAPIRoutes(v1)
	v1.Handle("/topology", methods{http.MethodGet: s.asAdmin(s.topology)})
	v1.Handle("/blobs/{digest}", methods{http.MethodGet: s.handle(s.getBlob), http.MethodHead: s.handle(s.getBlob)})
	v1.Handle("/peer/blobs/{digest}", methods{http.MethodGet: s.handle(s.getPeerBlob), http.MethodHead: s.handle(s.getPeerBlob)})
	return r
}

// Route is one path the API serves and the methods it answers there.
type Route struct {
	// Path is the path template, with variables in braces as gorilla/mux
	// writes them: /v1/admin/tiers/{name}.
	Path string
	// Methods are sorted.
	Methods []string
}

// Routes lists every route a handler from New serves, read off the router
// itself, so that a description of the API (docs/openapi.yaml) can be
// checked against the code. A route whose methods cannot be read is an
// error rather than a silent gap.
func Routes() ([]Route, error) {
	s := &server{log: slog.New(slog.DiscardHandler), metrics: NewMetrics(nil), now: time.Now}
	var out []Route
	err := s.router(prometheus.NewRegistry(), GovernorConfig{}).Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		h := route.GetHandler()
		if h == nil {
			return nil // a subrouter's prefix, not an endpoint
		}
		path, err := route.GetPathTemplate()
		if err != nil {
			return fmt.Errorf("api: route without a path: %w", err)
		}
		m, ok := h.(methods)
		if !ok {
			return fmt.Errorf("api: route %s: handler %T does not say its methods", path, h)
		}
		ms := make([]string, 0, len(m))
		for k := range m {
			ms = append(ms, k)
		}
		slices.Sort(ms)
		out = append(out, Route{Path: path, Methods: ms})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// handlerFunc is a handler that returns its failure for s.fail to answer.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *server) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.fail(w, r, err)
		}
	})
}

// answerUnrouted gives a router a JSON answer for an unknown path.
func answerUnrouted(r *mux.Router) {
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, errorDetail{Code: codeNotFound, Message: "no such endpoint"})
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, errorDetail{Code: codeMethodNotAllowed, Message: "method not allowed on this endpoint"})
	})
}

func subrouter(r *mux.Router, prefix string) *mux.Router {
	return r.PathPrefix(prefix).Subrouter()
}

// methods serves one path, dispatching on the method. It stands in for
// mux's method matching, whose 405 is lost inside nested subrouters.
type methods map[string]http.Handler

func (m methods) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h, ok := m[r.Method]; ok {
		h.ServeHTTP(w, r)
		return
	}
	// HEAD is GET without the body (RFC 9110 §9.3.2), which every
	// general-purpose server must answer: net/http drops what the GET
	// handler writes. Health checks and `curl -I` send it.
	if h, ok := m[http.MethodGet]; ok && r.Method == http.MethodHead {
		h.ServeHTTP(w, r)
		return
	}
	allow := make([]string, 0, len(m)+1)
	for k := range m {
		allow = append(allow, k)
	}
	if _, ok := m[http.MethodGet]; ok && !slices.Contains(allow, http.MethodHead) {
		allow = append(allow, http.MethodHead)
	}
	slices.Sort(allow)
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeError(w, http.StatusMethodNotAllowed, errorDetail{Code: codeMethodNotAllowed, Message: "method not allowed on this endpoint"})
}
