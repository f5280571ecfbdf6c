package node

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/topology"
)

// peerPins is the node's answer to "which node keys may I talk to": the
// keys holding a live admission in the store, read again whenever the
// store changes (an admission or removal applied from the feed, or made
// here at the hub), plus keys pinned before any admission could arrive
// (sync.peer_keys, and the join's pins). A removal beats a pin.
type peerPins struct {
	static map[string]bool

	mu      sync.RWMutex
	live    map[string]bool
	removed map[string]bool
}

func (p *peerPins) Pinned(id string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.live[id] || (p.static[id] && !p.removed[id])
}

func (p *peerPins) Refused(id string) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.removed[id]
}

// refresh reads the admissions again and reports whether the set of
// removed keys grew, so that the caller can cut their connections.
func (n *Node) refreshPins(ctx context.Context) (grew bool, err error) {
	nodes, err := n.store.Nodes(ctx)
	if err != nil {
		return false, err
	}
	live, removed := map[string]bool{}, map[string]bool{}
	for _, k := range nodes {
		if k.Removed.IsZero() {
			live[k.KeyID] = true
		} else {
			removed[k.KeyID] = true
		}
	}
	// A key removed under one name and live under another (re-admitted)
	// is live.
	for id := range live {
		delete(removed, id)
	}
	p := n.pins
	p.mu.Lock()
	for id := range removed {
		if !p.removed[id] {
			grew = true
		}
	}
	p.live, p.removed = live, removed
	p.mu.Unlock()
	return grew, nil
}

// peerStaticPins reads sync.peer_keys and the join's pins.
func (c Config) peerStaticPins() (map[string]bool, error) {
	out := map[string]bool{}
	for _, k := range c.Sync.PeerKeys {
		pub, err := federation.ParsePublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("sync.peer_keys: %w", err)
		}
		out[federation.KeyID(pub)] = true
	}
	j, err := ReadJoinFile(c.Node.DataDir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		for _, k := range j.Pins {
			pub, err := federation.ParsePublicKey(k)
			if err != nil {
				return nil, fmt.Errorf("%s: pin: %w", JoinFile, err)
			}
			out[federation.KeyID(pub)] = true
		}
	}
	return out, nil
}

// JoinFile is where `patchmesh join` leaves what the join taught the node,
// in its data directory.
const JoinFile = "join.json"

// JoinRecord is what a node keeps of its join: who admitted it, and the
// node keys it pins for node-to-node TLS until their admissions arrive on
// its feed (the hub's, and every node the hub had admitted).
type JoinRecord struct {
	// Hub is the name of the node that admitted this one, HubKey its node
	// key and HubPeerURL its peer listener.
	Hub        string `json:"hub"`
	HubKey     string `json:"hub_key"`
	HubPeerURL string `json:"hub_peer_url"`
	// SigningKeys are the hub's record-signing keys, to pin as sync.trust.
	SigningKeys []string `json:"signing_keys"`
	// Pins are node public keys ("ed25519:…").
	Pins   []string  `json:"pins"`
	Tiers  []string  `json:"tiers"`
	Joined time.Time `json:"joined"`
}

// ReadJoinFile reads dataDir's join record; an error wrapping
// os.ErrNotExist means the node never joined by token.
func ReadJoinFile(dataDir string) (JoinRecord, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, JoinFile))
	if err != nil {
		return JoinRecord{}, err
	}
	var j JoinRecord
	if err := json.Unmarshal(b, &j); err != nil {
		return JoinRecord{}, fmt.Errorf("%s: %w", JoinFile, err)
	}
	return j, nil
}

// WriteJoinFile keeps j in dataDir, replacing the file whole.
func WriteJoinFile(dataDir string, j JoinRecord) error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(dataDir, JoinFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dataDir, JoinFile))
}

// peerConns tracks the peer listener's connections, so that a removal
// cuts the live ones of the removed key at once instead of at their next
// request.
type peerConns struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (c *peerConns) track(conn net.Conn, state http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch state {
	case http.StateNew:
		c.conns[conn] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(c.conns, conn)
	}
}

// cut closes every connection whose client key refused says is refused.
func (c *peerConns) cut(refused func(string) bool, log *slog.Logger) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for conn := range c.conns {
		tc, ok := conn.(*tls.Conn)
		if !ok {
			continue
		}
		cs := tc.ConnectionState()
		if !cs.HandshakeComplete {
			continue
		}
		pub, err := federation.PeerKey(cs.PeerCertificates)
		if err != nil {
			continue
		}
		if id := federation.KeyID(pub); refused(id) {
			conn.Close()
			delete(c.conns, conn)
			auth.SecurityEvent(context.Background(), log, auth.EventPeerClosed, slog.String("key_id", id),
				slog.String("client", conn.RemoteAddr().String()), slog.String("reason", "admission_removed"))
		}
	}
}

// bindPeer opens the peer listener and makes the node's certificate from
// its key. Called from New once the node key and the store are there.
func (n *Node) bindPeer(ctx context.Context) error {
	static, err := n.cfg.peerStaticPins()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.pins = &peerPins{static: static}
	if _, err := n.refreshPins(ctx); err != nil {
		return fmt.Errorf("node: read admissions: %w", err)
	}
	cert, err := federation.NodeCertificate(n.nodeKey, n.cfg.Node.Name, n.now())
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	n.peerCert = cert
	if n.cfg.Server.PeerListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", n.cfg.Server.PeerListen)
	if err != nil {
		return fmt.Errorf("node: listen for peers on %s: %w", n.cfg.Server.PeerListen, err)
	}
	n.peerLn = ln
	n.conns = &peerConns{conns: map[net.Conn]struct{}{}}
	return nil
}

// peerURL is the peer listener's URL as others reach it; "" without one.
func (n *Node) peerURL() string {
	switch {
	case n.peerLn == nil:
		return ""
	case n.cfg.Server.PeerAdvertiseURL != "":
		return strings.TrimRight(n.cfg.Server.PeerAdvertiseURL, "/")
	}
	return "https://" + n.peerLn.Addr().String()
}

// PeerURL is the node's peer listener URL, "" without a peer listener.
func (n *Node) PeerURL() string { return n.peerURL() }

// newPeerServer serves the API on the peer listener behind its mutual TLS.
func (n *Node) newPeerServer() {
	if n.peerLn == nil {
		return
	}
	refused := func(id string, err error) {
		auth.SecurityEvent(context.Background(), n.log, auth.EventPeerFail, slog.String("key_id", id),
			slog.String("reason", "handshake"), slog.String("error", err.Error()))
	}
	n.peerSrv = &http.Server{
		Handler:           api.PeerListener(n.handler, n.pins, n.log),
		TLSConfig:         federation.PeerServerTLS(n.peerCert, n.pins, refused),
		ReadHeaderTimeout: n.cfg.Server.ReadHeaderTimeout,
		IdleTimeout:       n.cfg.Server.IdleTimeout,
		ConnState:         n.conns.track,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
	}
}

// watchPins keeps the pins current with the store, and cuts the peer
// connections of a key whose admission was removed, until ctx ends. It
// reads the store only when the store was written since the last read
// (its change generation moved: every admission and removal bumps it, and
// so does a revocation made outside a transaction, see store.Changes) and
// at least every storeRecheck; the second's tick only checks the
// generation. Reading every second on every node was 4% of the CPU of a
// 100-node start (bench/RESULTS.md, issue 15).
func (n *Node) watchPins(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var gen uint64
	var readAt time.Time
	for first := true; ; first = false {
		wake := n.changes.Wait()
		k := n.changes.Generation()
		if !first && k == gen && time.Since(readAt) < n.storeRecheck {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			case <-tick.C:
			}
			continue
		}
		gen, readAt = k, time.Now()
		grew, err := n.refreshPins(ctx)
		if err != nil {
			gen = k - 1 // read again at the next tick
		}
		switch {
		case err != nil && ctx.Err() == nil:
			n.log.Warn("peer_pins_refresh_failed", "error", err.Error())
		case grew:
			if n.conns != nil {
				n.conns.cut(n.pins.Refused, n.log)
			}
			// Connections this node opened to a removed peer are idle
			// between requests; dropping them makes the next request
			// handshake again, and fail.
			for _, c := range n.peerClients {
				c.CloseIdleConnections()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick.C:
		}
	}
}

// peerTLS is the client side of node-to-node TLS: this node's certificate,
// the server's key checked against the pins. Nil without a peer
// listener, when upstreams are reached as configured (CA bundle).
func (n *Node) peerTLS() *tls.Config {
	if n.peerLn == nil {
		return nil
	}
	return federation.PeerClientTLS(n.peerCert, n.pins, "")
}

// peerResolver finds a member's peer listener from the API URL gossip
// knows it by, in the peer URL its meta carries (topology.Meta.Peer). The
// URL is only where to dial: who answers there is the TLS handshake's to
// prove against the pins. Before gossip starts, and with gossip off, no
// member is known.
type peerResolver struct {
	topo atomic.Pointer[topology.Topology]
}

// URL is the peer URL of the member at apiURL, "" when it has none or is
// not known.
func (r *peerResolver) URL(apiURL string) string {
	t := r.topo.Load()
	if t == nil {
		return ""
	}
	m, ok := t.ByAPI(apiURL)
	if !ok {
		return ""
	}
	return strings.TrimRight(m.Peer, "/")
}

// API is the API URL of the member whose peer URL is peerURL, or "". If
// several claim it, an alive one wins: the others are gone or stale.
func (r *peerResolver) API(peerURL string) string {
	t := r.topo.Load()
	if t == nil {
		return ""
	}
	m, ok := t.ByPeer(peerURL)
	if !ok {
		return ""
	}
	return strings.TrimRight(m.API, "/")
}

// nodeKeyPub is the node's public key.
func (n *Node) nodeKeyPub() ed25519.PublicKey { return n.nodeKey.Public().(ed25519.PublicKey) }

// peerConfig is the api's view of the peer listener; nil without one.
func (n *Node) peerConfig() *api.PeerConfig {
	if n.peerLn == nil {
		return nil
	}
	pc := &api.PeerConfig{Pins: n.pins, URL: n.resolver.URL}
	if n.replicator != nil {
		// A typed nil would not be a nil Awaiter.
		pc.Commits = n.replicator
	}
	return pc
}

// nodeClient is an HTTP client to other nodes: the sync transport (proxy,
// CA bundle) with, when this node has a peer listener, node-to-node
// mutual TLS in place of the CA check. The node keeps it, to drop its
// idle connections on a removal.
func (n *Node) nodeClient() (*http.Client, error) {
	c, err := n.cfg.syncTransport()
	if err != nil {
		return nil, err
	}
	if t := n.peerTLS(); t != nil {
		c.Transport.(*http.Transport).TLSClientConfig = t
	}
	n.peerClients = append(n.peerClients, c)
	return c, nil
}

// joinTokens is the hub's join token store for the api; nil elsewhere.
func (n *Node) joinTokens() store.JoinTokens {
	if n.hubKey == nil {
		return nil
	}
	return n.store
}
