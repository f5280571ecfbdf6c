package api

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
)

// kindPeer is the credential kind of a peer's certificate identity, in
// the auth metrics.
const kindPeer = "peer"

// getPeerBlob serves a committed blob to another node of the mesh, which
// proved its node key on the peer listener's mutual TLS, a key holding a
// live admission here (PeerListener). Any committed blob is served,
// recorded or not, withdrawn or not: a peer is a node, not a machine, and
// it checks the bytes against the digest its own signed record names.
// Without a peer listener the endpoint does not exist.
func (s *server) getPeerBlob(w http.ResponseWriter, r *http.Request) error {
	if s.peer == nil {
		return notFound("no such endpoint")
	}
	digest, err := pathVar(r, "digest", catalog.ValidDigest)
	if err != nil {
		return err
	}
	start := time.Now()
	id := PeerFrom(r.Context())
	if id == "" {
		s.metrics.observeAuth(kindPeer, authOutcome(auth.ErrUnauthenticated), time.Since(start))
		s.securityEvent(r, auth.EventPeerFail, slog.String("reason", "not_on_peer_listener"))
		return notFound("peer blobs are served on the peer listener")
	}
	s.metrics.observeAuth(kindPeer, authOutcome(nil), time.Since(start))
	s.securityEvent(r, auth.EventPeerSuccess, slog.String("key_id", id))
	return s.sendBlob(w, r, digest)
}

// sendBlob answers GET or HEAD for a committed blob, with Range support
// and the digest as its ETag, as GET /v1/blobs does.
func (s *server) sendBlob(w http.ResponseWriter, r *http.Request, digest string) error {
	if ro, ok := s.blobs.(blob.RangeOpener); ok {
		w.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
		return s.sendSection(w, r, ro, digest, false)
	}
	rs, info, err := s.blobs.Open(r.Context(), blob.Digest(digest))
	if err != nil {
		return err
	}
	defer rs.Close()
	h := w.Header()
	h.Set("ETag", `"`+digest+`"`)
	// Immutable, but private: a shared cache must not hand a peer's
	// answer to a caller without the token.
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	h.Set("Content-Type", "application/octet-stream")
	// rs goes to ServeContent unwrapped, so that the filesystem driver's
	// *os.File reaches the connection's sendfile.
	http.ServeContent(w, r, "", info.Modified, rs)
	return nil
}
