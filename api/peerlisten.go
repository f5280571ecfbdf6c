package api

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"net/http"
	"strings"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/federation"
)

// PeerPins says which node keys hold a live admission here; the node
// passes its store-backed pins (federation.PeerPins).
type PeerPins interface {
	Pinned(keyID string) bool
}

// PeerConfig is how the API reaches and trusts other nodes' peer
// listeners.
type PeerConfig struct {
	// Pins says which node keys hold a live admission here.
	Pins PeerPins
	// URL maps a member's API URL (from gossip) to its peer listener's
	// base URL, "" when unknown; the dashboard asks peers which blobs they
	// hold there, with the Dashboard.PeerClient (mutual TLS).
	URL func(apiURL string) string
	// Commits, when set, lets a peer's request for a blob this node does
	// not hold yet wait for it (?wait= on the peer endpoint): it is woken
	// when this node commits the blob. Nil: such a request is answered at
	// once, as one without the wait.
	Commits Awaiter
}

// Awaiter wakes a request waiting for a blob when this node commits it;
// *replicate.Replicator is one.
type Awaiter interface {
	// Await returns nil once d is committed here, or ctx's error.
	Await(ctx context.Context, d blob.Digest) error
}

// peerKey carries a request's peer identity: the key ID its TLS client
// certificate proved on the peer listener.
type peerKey struct{}

// PeerFrom returns the key ID of the node that sent the request over the
// peer listener, or "" for any other request.
func PeerFrom(ctx context.Context) string {
	id, _ := ctx.Value(peerKey{}).(string)
	return id
}

// peerPaths are what the peer listener serves: node-to-node traffic and
// the join. Machines and admins use the main listener.
var peerPaths = []string{"/v1/sync/", "/v1/blobs/", "/v1/peer/", "/v1/join/", "/debug/info"}

// joinPrefix is reachable by a node that holds no admission yet.
const joinPrefix = "/v1/join/"

// PeerListener wraps the API for the peer listener, whose TLS handshake
// (federation.PeerServerTLS) required a client certificate and refused
// removed keys. Each request then names its sender by certificate key ID,
// which must hold a live admission now, asked per request so that a
// removal takes effect on the next request of a kept-alive connection;
// only the join is open to a key never admitted. Paths outside node-to-
// node traffic are not served here.
func PeerListener(h http.Handler, pins PeerPins, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		served := false
		for _, p := range peerPaths {
			if strings.HasPrefix(r.URL.Path, p) || r.URL.Path == strings.TrimSuffix(p, "/") {
				served = true
			}
		}
		if !served {
			writeError(w, http.StatusNotFound, errorDetail{Code: codeNotFound,
				Message: "the peer listener serves node-to-node traffic only; machines and admins use the node's main URL"})
			return
		}
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			auth.SecurityEvent(ctx, log, auth.EventPeerFail, slog.String("reason", "no_client_certificate"), slog.String("path", r.URL.Path))
			writeError(w, http.StatusUnauthorized, errorDetail{Code: codeUnauthorized, Message: "a node certificate is required"})
			return
		}
		pub, err := federation.PeerKey(r.TLS.PeerCertificates)
		if err != nil {
			auth.SecurityEvent(ctx, log, auth.EventPeerFail, slog.String("reason", "not_a_node_certificate"), slog.String("path", r.URL.Path))
			writeError(w, http.StatusUnauthorized, errorDetail{Code: codeUnauthorized, Message: "a node certificate is required"})
			return
		}
		id := federation.KeyID(pub)
		if !strings.HasPrefix(r.URL.Path, joinPrefix) && !pins.Pinned(id) {
			auth.SecurityEvent(ctx, log, auth.EventPeerFail, slog.String("reason", "not_admitted"), slog.String("key_id", id),
				slog.String("path", r.URL.Path), slog.String("client", clientHost(r)))
			writeError(w, http.StatusForbidden, errorDetail{Code: codeForbidden,
				Message: "this node key holds no live admission here; join the mesh first (patchmesh join)"})
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(ctx, peerKey{}, id)))
	})
}

// clientHost is the TCP peer's host, for security events logged before
// the API's middleware has named the client.
func clientHost(r *http.Request) string {
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i > 0 {
		host = host[:i]
	}
	return host
}

// peerPublicKey is the request's peer certificate key, for the join,
// which binds it into its MACs; nil outside the peer listener.
func peerPublicKey(r *http.Request) ed25519.PublicKey {
	if r.TLS == nil || PeerFrom(r.Context()) == "" {
		return nil
	}
	pub, err := federation.PeerKey(r.TLS.PeerCertificates)
	if err != nil {
		return nil
	}
	return pub
}
