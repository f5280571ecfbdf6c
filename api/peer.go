package api

import (
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
)

// kindPeer is the credential kind of a peer token, in security events and
// the auth metrics.
const kindPeer = "peer"

// getPeerBlob serves a committed blob to another node of the mesh, which
// proves membership with a peer token derived from the gossip keyring
// (topology.PeerToken). Any committed blob is served, recorded or not,
// withdrawn or not: a peer is a node, not a machine, and it checks the
// bytes against the digest its own signed record names. With gossip off
// there are no peers, and the endpoint does not exist.
func (s *server) getPeerBlob(w http.ResponseWriter, r *http.Request) error {
	if s.peerTokens == nil {
		return notFound("no such endpoint")
	}
	digest, err := pathVar(r, "digest", catalog.ValidDigest)
	if err != nil {
		return err
	}
	if err := s.peer(r); err != nil {
		return err
	}
	return s.sendBlob(w, r, digest)
}

// peer authenticates the request's peer token against every key of the
// keyring now. The outcome is logged and counted; the token never is.
func (s *server) peer(r *http.Request) error {
	start := time.Now()
	err := s.checkPeerToken(r)
	s.metrics.observeAuth(kindPeer, authOutcome(err), time.Since(start))
	return err
}

func (s *server) checkPeerToken(r *http.Request) error {
	fail := func(reason string) error {
		s.securityEvent(r, auth.EventTokenFail, slog.String("kind", kindPeer), slog.String("reason", reason))
		return auth.ErrUnauthenticated
	}
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	tok = strings.TrimLeft(tok, " ")
	if !strings.EqualFold(scheme, "Bearer") || !strings.HasPrefix(tok, "pmp_") {
		return fail("malformed")
	}
	// Every key is compared, match or not, so the time taken says nothing
	// about which key, if any, the token came from.
	match := 0
	for _, want := range s.peerTokens() {
		match |= subtle.ConstantTimeCompare([]byte(tok), []byte(want))
	}
	if match != 1 {
		return fail("bad_secret")
	}
	s.securityEvent(r, auth.EventTokenSuccess, slog.String("kind", kindPeer))
	return nil
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
