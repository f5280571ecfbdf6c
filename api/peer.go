package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// kindPeer is the credential kind of a peer's certificate identity, in
// the auth metrics.
const kindPeer = "peer"

// maxPeerWaiters bounds the peer requests waiting for a blob at once. A
// waiting node holds one request at a time per link (federation's peer
// wait), so this covers several links of a data centre of a few dozen
// nodes; past it a request is answered at once, as by a node that ignores
// the wait, and its sender asks again at its own pace.
const maxPeerWaiters = 512

// getPeerBlob serves a committed blob to another node of the mesh, which
// proved its node key on the peer listener's mutual TLS, a key holding a
// live admission here (PeerListener). Any committed blob is served,
// recorded or not, withdrawn or not: a peer is a node, not a machine, and
// it checks the bytes against the digest its own signed record names.
// With ?wait= (a duration, capped at federation.MaxPeerBlobWait) a request
// for a blob not committed here yet waits for it, so that a peer waiting
// on this node's fetch asks once rather than polling; it is answered as
// soon as the blob is committed, or as without the wait once the wait
// ends. Only committed blobs are waited for and served: a 200 to HEAD
// means the bytes can be fetched, verified. Without a peer listener the
// endpoint does not exist.
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
	wait, err := peerBlobWait(r)
	if err != nil {
		return err
	}
	if wait > 0 {
		if err := s.awaitBlob(r.Context(), blob.Digest(digest), wait); err != nil {
			return err
		}
	}
	return s.sendBlob(w, r, digest)
}

// peerBlobWait reads ?wait=: 0 when absent, at most MaxPeerBlobWait (a
// longer wait is cut to it, so that a newer peer asking for more is still
// answered).
func peerBlobWait(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, invalid("wait", "must be a duration such as 1s or 500ms, got %q", v)
	}
	return min(d, federation.MaxPeerBlobWait), nil
}

// awaitBlob waits up to wait for d to be committed here, unless it is
// already, waiting is not wired (no PeerConfig.Commits) or maxPeerWaiters
// requests wait already. It holds no governor slot meanwhile, as a long
// poll of the feed does, and ends early when the node stops or the client
// leaves. What it found is for sendBlob to see: it only fails when the
// governor has no slot to give back (503 overloaded).
func (s *server) awaitBlob(ctx context.Context, d blob.Digest, wait time.Duration) error {
	if s.peer.Commits == nil {
		return nil
	}
	if _, err := s.blobs.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		return nil // here, or a store error sendBlob meets too
	}
	select {
	case s.peerWaiters <- struct{}{}:
		defer func() { <-s.peerWaiters }()
	default:
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	sl := slotFrom(ctx)
	sl.release()
	if s.stopping != nil {
		// A draining node answers its waiters now, as it does long polls;
		// the deferred cancel ends this watch otherwise.
		go func() {
			select {
			case <-s.stopping:
				cancel()
			case <-wctx.Done():
			}
		}()
	}
	// Not found (the wait ended) is sendBlob's 404 to answer.
	_ = s.peer.Commits.Await(wctx, d)
	if err := sl.reacquire(ctx); errors.Is(err, errOverloaded) {
		return err
	}
	// Else the client left while queued: the answer is for the access log.
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
