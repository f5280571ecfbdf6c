package topology

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/hashicorp/memberlist"
)

// MetaMaxSize is memberlist's limit on a node's metadata, in bytes.
const MetaMaxSize = memberlist.MetaMaxSize

// ErrMetaTooLarge is returned by Meta.Encode when the encoding would not fit
// in memberlist's node metadata. Memberlist panics on oversized metadata and
// a truncated one would not decode, so the caller must shrink it instead.
var ErrMetaTooLarge = errors.New("topology: node meta too large")

// Meta is what a node tells the mesh about itself. It travels in memberlist's
// node metadata, limited to MetaMaxSize bytes, hence the short JSON keys.
type Meta struct {
	Name string `json:"n"`
	Role string `json:"r"`   // hub, relay, edge
	DC   string `json:"dc"`  // data centre
	API  string `json:"api"` // base URL machines and downstreams use
	// Peer is the base URL of the node's peer listener (mutual TLS between
	// nodes), "" without one. Encode writes it as ":port" when it is https
	// on the API URL's host, as it usually is; DecodeMeta expands it.
	Peer     string `json:"p,omitempty"`
	Upstream string `json:"up,omitempty"` // API URL of the first link's upstream in use ("" on the hub)
	// Upstreams is the upstream in use of every link, by local tier. Encode
	// leaves it out when it says no more than Upstream (see
	// UpstreamsByTier): most nodes have one link, and every byte of meta
	// travels in every push/pull, once per member.
	Upstreams map[string]string `json:"u,omitempty"`
	// Sync progress (head, synced, lag) is not meta: it moves with every
	// patch, and every move would be gossiped to every member of the
	// node's pools. It travels on the sync links (federation/progress.go).
	Tiers   []string `json:"t"` // tiers it serves
	Version string   `json:"v"`
	// Key is the ID of the node key the node says it holds: a hint that
	// lets others drop a member claiming an admitted name under another
	// key, never proof (only a signed hello is).
	Key string `json:"k,omitempty"`
}

// Encode returns the compact encoding of m, or ErrMetaTooLarge if it exceeds
// MetaMaxSize (typically because of too many tiers).
func (m Meta) Encode() ([]byte, error) {
	if len(m.Upstreams) == 1 && len(m.Tiers) > 0 && m.Upstreams[m.Tiers[0]] == m.Upstream {
		m.Upstreams = nil
	}
	m.Peer = compactPeer(m.API, m.Peer)
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("topology: encode meta: %w", err)
	}
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes with %d tiers, limit %d", ErrMetaTooLarge, len(b), len(m.Tiers), MetaMaxSize)
	}
	return b, nil
}

// DecodeMeta decodes what Encode produced. Unknown keys are ignored so that
// a newer node can add fields without older ones dropping it.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("topology: decode meta: %w", err)
	}
	m.Peer = expandPeer(m.API, m.Peer)
	return m, nil
}

// compactPeer is peer as meta carries it: ":port" when peer is https on
// apiURL's host, else peer whole. Every byte of meta travels in every
// push/pull, once per member.
func compactPeer(apiURL, peer string) string {
	host, port, ok := httpsHostPort(peer)
	if !ok {
		return peer
	}
	a, err := url.Parse(apiURL)
	if err != nil || a.Hostname() != host {
		return peer
	}
	return ":" + port
}

// expandPeer undoes compactPeer. A ":port" without an API URL to take the
// host from is left as it is, and CheckMeta refuses it.
func expandPeer(apiURL, peer string) string {
	if !strings.HasPrefix(peer, ":") {
		return peer
	}
	a, err := url.Parse(apiURL)
	if err != nil || a.Hostname() == "" {
		return peer
	}
	// Built as a URL, not pasted, so that an IPv6 zone comes back escaped
	// ("%25") and the expanded URL parses as the one compacted did.
	return (&url.URL{Scheme: "https", Host: net.JoinHostPort(a.Hostname(), peer[1:])}).String()
}

// httpsHostPort splits an https base URL with a host, an explicit port
// and nothing else (no path, credentials, query) into host and port.
func httpsHostPort(u string) (host, port string, ok bool) {
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme != "https" || pu.User != nil || (pu.Path != "" && pu.Path != "/") ||
		pu.RawQuery != "" || pu.Fragment != "" || pu.Hostname() == "" || pu.Port() == "" {
		return "", "", false
	}
	return pu.Hostname(), pu.Port(), true
}

// UpstreamsByTier returns the upstream each of m's links uses, by local
// tier: Upstreams, or, when a node advertises Upstream alone (one link, or
// an older version), Upstream for the first tier it serves, which is its
// first link's.
func (m Meta) UpstreamsByTier() map[string]string {
	out := make(map[string]string, max(len(m.Upstreams), 1))
	for t, u := range m.Upstreams {
		out[t] = u
	}
	if len(out) == 0 && m.Upstream != "" && len(m.Tiers) > 0 {
		out[m.Tiers[0]] = m.Upstream
	}
	return out
}
