package node

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/replicate"
	"github.com/patchmesh/patchmesh/store"
)

// maxPeerWait bounds sync.peer_wait: a node that waits longer on its peers
// than this lets a stuck peer hold its data centre back for too long.
const maxPeerWait = 5 * time.Minute

// validateSync checks the sync section against the node's role.
func (c Config) validateSync() []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	s := c.Sync
	if c.Node.Role == RoleHub && len(s.Links) > 0 {
		bad("sync.links", "a hub has no upstream; set node.role to relay or edge to pull from one")
	}
	if c.Node.Role != RoleHub && len(s.Links) == 0 {
		bad("sync.links", "a %s pulls from an upstream: add at least one link", c.Node.Role)
	}
	for i, k := range s.Trust {
		if _, err := federation.ParsePublicKey(k); err != nil {
			bad(fmt.Sprintf("sync.trust[%d]", i), "%v", err)
		}
	}
	for i, e := range s.Endorsements {
		if _, err := federation.ParseEndorsement(e); err != nil {
			bad(fmt.Sprintf("sync.endorsements[%d]", i), "%v", err)
		}
	}
	tiers := map[string]bool{}
	for i, l := range s.Links {
		field := fmt.Sprintf("sync.links[%d]", i)
		if err := catalog.ValidName("tier", l.Tier); err != nil {
			bad(field+".tier", "%v", err)
		} else if tiers[l.Tier] {
			bad(field+".tier", "tier %s already has a link; a tier has one source", l.Tier)
		}
		tiers[l.Tier] = true
		if l.HubTier != "" {
			if err := catalog.ValidName("hub_tier", l.HubTier); err != nil {
				bad(field+".hub_tier", "%v", err)
			}
		}
		if len(l.Upstreams) == 0 {
			bad(field+".upstreams", "must list at least one upstream")
		}
		for j, u := range l.Upstreams {
			uf := fmt.Sprintf("%s.upstreams[%d]", field, j)
			if pu, err := url.Parse(u.URL); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || pu.User != nil {
				bad(uf+".url", "must be an http(s) URL without credentials, got %q", u.URL)
			} else if pu.Scheme == "http" && !u.AllowHTTP && !s.AllowHTTP {
				bad(uf+".url", "%q is plain http, which sends the sync token and blobs in clear: use https, or set %s.allow_http (or sync.allow_http) on a network you trust", u.URL, uf)
			}
			if (u.Token == "") == (u.TokenFile == "") {
				bad(uf, "set exactly one of token and token_file")
			}
		}
		f := federation.Filter{MinKernel: l.MinKernel}
		if err := f.Validate(); err != nil {
			bad(field+".min_kernel", "%v", err)
		}
	}
	if s.Wait <= 0 || s.Wait > federation.MaxFeedWait {
		bad("sync.wait", "must be between 1s and %v, got %v", federation.MaxFeedWait, s.Wait)
	}
	if s.BatchSize < 1 || s.BatchSize > federation.MaxFeedLimit {
		bad("sync.batch_size", "must be between 1 and %d, got %d", federation.MaxFeedLimit, s.BatchSize)
	}
	if s.Parallel < 1 {
		bad("sync.parallel", "must be at least 1, got %d", s.Parallel)
	}
	if s.PeerWait <= 0 || s.PeerWait > maxPeerWait {
		bad("sync.peer_wait", "must be between 1ms and %v, got %v", maxPeerWait, s.PeerWait)
	}
	if s.HeartbeatEvery <= 0 {
		bad("sync.heartbeat_every", "must be positive, got %v", s.HeartbeatEvery)
	}
	if c.Node.Role != RoleHub && s.StaleAfter <= s.Wait {
		bad("sync.stale_after", "must be longer than sync.wait (%v), got %v: a quiet link hears the hub's heartbeat once per wait", s.Wait, s.StaleAfter)
	}
	if s.RetryMin <= 0 || s.RetryMax < s.RetryMin {
		bad("sync.retry_min", "retry_min must be positive and at most retry_max, got %v and %v", s.RetryMin, s.RetryMax)
	}
	if s.Proxy != "" {
		if pu, err := url.Parse(s.Proxy); err != nil || pu.Host == "" {
			bad("sync.proxy", "must be a proxy URL such as http://proxy:3128")
		}
	}
	return errs
}

// links turns the config's links into the sync loop's, reading token
// files. A token never appears in an error.
func (c Config) links() ([]federation.Link, error) {
	var out []federation.Link
	for _, l := range c.Sync.Links {
		fl := federation.Link{
			Tier: l.Tier, HubTier: l.HubTier,
			Filter: federation.Filter{Archs: l.Architectures, Flavours: l.Flavours, MinKernel: l.MinKernel},
		}
		for _, u := range l.Upstreams {
			tok := u.Token
			if u.TokenFile != "" {
				b, err := os.ReadFile(u.TokenFile)
				if err != nil {
					return nil, fmt.Errorf("sync link %s: token file: %w", l.Tier, err)
				}
				tok = strings.TrimSpace(string(b))
				if tok == "" {
					return nil, fmt.Errorf("sync link %s: token file %s is empty", l.Tier, u.TokenFile)
				}
			}
			fl.Upstreams = append(fl.Upstreams, federation.Upstream{URL: u.URL, Token: tok, AllowHTTP: u.AllowHTTP || c.Sync.AllowHTTP})
		}
		out = append(out, fl)
	}
	return out, nil
}

// syncTransport is the HTTP client for upstreams: proxy from the config or
// the environment, the system roots plus the configured CA bundle, TLS 1.2
// at least.
func (c Config) syncTransport() (*http.Client, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.Sync.CAFile != "" {
		pem, err := os.ReadFile(c.Sync.CAFile)
		if err != nil {
			return nil, fmt.Errorf("sync.ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("sync.ca_file %s: no PEM certificate in it", c.Sync.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	proxy := http.ProxyFromEnvironment
	if c.Sync.Proxy != "" {
		pu, err := url.Parse(c.Sync.Proxy)
		if err != nil {
			return nil, fmt.Errorf("sync.proxy: %w", err)
		}
		proxy = http.ProxyURL(pu)
	}
	tr := &http.Transport{
		Proxy:                 proxy,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: c.Sync.Wait + 30*time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   c.Sync.Parallel + 2,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{Transport: tr}, nil
}

// trustedKeys returns the hub keys pinned in the config and through the
// admin API.
func trustedKeys(cfgKeys []string, st store.Syncer) func(ctx context.Context) ([]ed25519.PublicKey, error) {
	return func(ctx context.Context) ([]ed25519.PublicKey, error) {
		var keys []ed25519.PublicKey
		for _, k := range cfgKeys {
			pub, err := federation.ParsePublicKey(k)
			if err != nil {
				return nil, err // Validate refused it already
			}
			keys = append(keys, pub)
		}
		stored, err := st.TrustedKeys(ctx)
		if err != nil {
			return nil, err
		}
		for _, k := range stored {
			pub, err := federation.ParsePublicKey(k.Key)
			if err != nil {
				return nil, fmt.Errorf("stored trusted key %s: %w", k.ID, err)
			}
			keys = append(keys, pub)
		}
		return keys, nil
	}
}

// loadNodeKey loads the node's identity key, creating it on first start
// and telling the operator the public key to admit at the hub.
func (n *Node) loadNodeKey() error {
	path := n.cfg.NodeKeyPath()
	key, created, err := federation.LoadOrCreateNodeKey(path)
	if err != nil {
		return fmt.Errorf("node: identity key: %w", err)
	}
	n.nodeKey = key
	pub := key.Public().(ed25519.PublicKey)
	n.log.Info("node_key_loaded", "path", path, "created", created, "public_key", federation.FormatPublicKey(pub),
		"key_id", federation.KeyID(pub))
	switch {
	case created && n.cfg.Node.Role == RoleHub:
		// A hub admits itself (admitSelf).
		n.announce = append(n.announce, fmt.Sprintf("patchmesh created the node key %s; the hub admits itself with it\n", path))
	case created:
		n.announce = append(n.announce, fmt.Sprintf(
			"patchmesh created the node key %s\nAdmit the node at the hub:\n  patchmesh admin nodes admit %s --key %s --url %s\n",
			path, n.cfg.Node.Name, federation.FormatPublicKey(pub), n.apiURL()))
	}
	return nil
}

// nodeKeyID is the ID of the node's identity key.
func (n *Node) nodeKeyID() string {
	return federation.KeyID(n.nodeKey.Public().(ed25519.PublicKey))
}

// loadHubKey loads the hub's signing key, creating it on first start and
// telling the operator the public key to pin downstream.
func (n *Node) loadHubKey() error {
	path := n.cfg.HubKeyPath()
	key, created, err := federation.LoadOrCreateKey(path)
	if err != nil {
		return fmt.Errorf("node: hub signing key: %w", err)
	}
	n.hubKey = key
	pub := federation.FormatPublicKey(key.Public().(ed25519.PublicKey))
	n.log.Info("hub_key_loaded", "path", path, "created", created, "public_key", pub,
		"key_id", federation.KeyID(key.Public().(ed25519.PublicKey)))
	if created {
		n.announce = append(n.announce, fmt.Sprintf(
			"patchmesh created the hub signing key %s\nPin it on every relay and edge (sync.trust):\n  %s\n", path, pub))
	}
	return nil
}

// endorsements are the configured hub key endorsements, checked in form by
// validateSync; machines verify their signatures.
func (n *Node) endorsements() []federation.Envelope {
	var out []federation.Envelope
	for _, s := range n.cfg.Sync.Endorsements {
		if e, err := federation.ParseEndorsement(s); err == nil {
			out = append(out, e)
		}
	}
	return out
}

func (n *Node) hubPublicKey() ed25519.PublicKey {
	if n.hubKey == nil {
		return nil
	}
	return n.hubKey.Public().(ed25519.PublicKey)
}

// heartbeats is where the feed finds the heartbeat it serves: the hub's
// own beacon, or the puller's newest per link. A nil interface when
// neither exists.
func (n *Node) heartbeats() federation.Heartbeats {
	switch {
	case n.beacon != nil:
		return n.beacon
	case n.puller != nil:
		return n.puller
	}
	return nil
}

// syncControl is the puller as the API sees it; a nil interface, not a
// typed nil, on the hub.
func (n *Node) syncControl() federation.Control {
	if n.puller == nil {
		return nil
	}
	return n.puller
}

// arrivals is the puller as the feed and blob routes see it, for
// cut-through relaying; a nil interface on the hub.
func (n *Node) arrivals() federation.Arrivals {
	if n.puller == nil {
		return nil
	}
	return n.puller
}

// newPuller builds a relay's or edge's sync loop from the config.
func (n *Node) newPuller(now func() time.Time) error {
	client, err := n.nodeClient()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	links, err := n.cfg.links()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	rep, err := replicate.New(replicate.Config{Client: client, Blobs: n.blobs, Parallel: n.cfg.Sync.Parallel, Log: n.log})
	if err != nil {
		return fmt.Errorf("node: replicator: %w", err)
	}
	n.replicator = rep
	pc := federation.PullConfig{
		Store:    n.store,
		Fetcher:  rep,
		Client:   client,
		Keys:     trustedKeys(n.cfg.Sync.Trust, n.store),
		Links:    links,
		Wait:     n.cfg.Sync.Wait,
		Limit:    n.cfg.Sync.BatchSize,
		RetryMin: n.cfg.Sync.RetryMin,
		RetryMax: n.cfg.Sync.RetryMax,
		Health: func(url string) (bool, bool) {
			if n.gossip == nil || n.gossip.mesh == nil {
				return false, false
			}
			// A link to a peer listener: the member is known by its API URL.
			return n.gossip.mesh.Health(n.gossip.apiOf(url))
		},
		PeerWait:   n.cfg.Sync.PeerWait,
		StaleAfter: n.cfg.Sync.StaleAfter,
		Notify:     n.changes.Notify,
		Node:       n.cfg.Node.Name,
		Progress:   n.ownProgress,
		Log:        n.log,
		Now:        now,
	}
	if n.cfg.Gossip.On() {
		// Gossip starts after the puller; the loop runs after both.
		pc.Peers = func(tier, upstream string) (bool, []replicate.Source) {
			if n.gossip == nil {
				return true, nil
			}
			return n.gossip.peers(tier, upstream)
		}
	}
	n.puller, err = federation.NewPuller(pc)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// admitSelf has the hub admit itself, under its node key and advertised
// URL, on every tier, the first time it starts: machines verify every
// node against the hub's signed admissions before sending it a credential,
// the first contact included, and a lone hub is where an operator points
// its first machine. Tiers added at the hub later are admitted on as they
// are added (the API's admitSelfOn); at every start the hub's live
// admission under its own key is admitted on any tier it still lacks (one
// added before that, or in a crash between the two). A name the hub holds
// only a removed admission for, or one under another key, is left alone:
// that is the operator's call.
func (n *Node) admitSelf(ctx context.Context) error {
	known, err := n.store.Nodes(ctx)
	if err != nil {
		return fmt.Errorf("node: admit the hub itself: %w", err)
	}
	tiers, err := n.store.Tiers(ctx)
	if err != nil {
		return fmt.Errorf("node: admit the hub itself: %w", err)
	}
	pub := n.nodeKey.Public().(ed25519.PublicKey)
	self := catalog.Node{Name: n.cfg.Node.Name, Key: federation.FormatPublicKey(pub), KeyID: federation.KeyID(pub),
		URLs: []string{strings.TrimRight(n.apiURL(), "/")}}
	by := "hub_first_start"
	if i := slices.IndexFunc(known, func(k catalog.Node) bool { return k.Name == self.Name }); i >= 0 {
		k := known[i]
		if !k.Removed.IsZero() || k.KeyID != self.KeyID {
			return nil
		}
		self, by = k, "hub_start"
		self.Tiers, self.Admitted = nil, time.Time{}
		for _, t := range tiers {
			if !slices.Contains(k.Tiers, t.Name) {
				self.Tiers = append(self.Tiers, t.Name)
			}
		}
	} else {
		for _, t := range tiers {
			self.Tiers = append(self.Tiers, t.Name)
		}
	}
	if len(self.Tiers) == 0 {
		return nil
	}
	if _, err := n.store.AdmitNode(ctx, self); err != nil {
		if errors.Is(err, catalog.ErrConflict) {
			return nil
		}
		return fmt.Errorf("node: admit the hub itself: %w", err)
	}
	// The same security event as an operator's admission, by the node.
	auth.SecurityEvent(ctx, n.log, auth.EventNodeAdmitted, slog.String("node", self.Name), slog.String("key_id", self.KeyID),
		slog.String("tiers", strings.Join(self.Tiers, ",")), slog.String("url", strings.Join(self.URLs, ",")), slog.String("by", by))
	return nil
}

// ownProgress is this node's sync figures now, as its feed requests and
// fleet reports send them upstream and its view shows them: its log head,
// and the sum over its links of the hub seq applied and of the lag. The
// head is read from the store only when the store was written since the
// last read (its change generation moved), or storeRecheck passed: a view
// is built every few seconds on every node of a churning mesh. A failed
// read gives the last head read, and is tried again next time.
func (n *Node) ownProgress() federation.NodeProgress {
	now := time.Now
	if n.now != nil {
		now = n.now
	}
	at := now()
	p := federation.NodeProgress{AsOf: at.UTC()}
	stale := at.Sub(time.Unix(0, n.headAt.Load())) >= n.storeRecheck
	if gen := n.changes.Generation(); gen != n.headGen.Load() || stale {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h, err := n.store.Head(ctx)
		cancel()
		if err == nil {
			// Generation first, then the read: a write between the two
			// moves the generation again and is read next time.
			n.lastHead.Store(h)
			n.headGen.Store(gen)
			n.headAt.Store(at.UnixNano())
		}
	}
	p.Head = n.lastHead.Load()
	if n.puller != nil {
		for _, s := range n.puller.Status() {
			p.Synced += s.HubSeq
			p.Lag += s.LagEvents
		}
	}
	return p
}
