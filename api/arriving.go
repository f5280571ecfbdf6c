package api

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/federation"
)

// serveArriving answers a downstream node (a sync token of tier) asking
// for a blob this node is still fetching for that tier: the bytes as they
// arrive (cut-through, see federation/relay.go), from the offset of a
// "bytes=N-" range whose If-Range, if any, is the digest. The stream ends
// only once this node has verified and committed the blob; if its own
// digest check fails the connection is cut mid-body, so the downstream
// sees a broken transfer and discards it. Nothing here is cached
// (no-store): the answer is not yet a verified blob. A blob that is
// neither arriving nor committed is 404, as for any unknown blob.
func (s *server) serveArriving(w http.ResponseWriter, r *http.Request, tier, digest string) error {
	ctx := r.Context()
	d := blob.Digest(digest)
	off := arrivingOffset(r, digest)
	rc, size, err := s.arrivals.OpenArriving(ctx, tier, d, off)
	switch {
	case errors.Is(err, federation.ErrNotArriving):
		return notFound("no such blob")
	case errors.Is(err, blob.ErrNotFound):
		// The transfer ended between the record lookup and now: the
		// blob is committed (verified) and its record about to be, or
		// it failed. Serve what the store has.
		rs, info, err := s.blobs.Open(ctx, d)
		if err != nil {
			return err
		}
		defer rs.Close()
		h := w.Header()
		h.Set("ETag", `"`+digest+`"`)
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Type", "application/octet-stream")
		rec := &recorder{ResponseWriter: w}
		http.ServeContent(rec, r, "", info.Modified, rs)
		s.metrics.blobBytes.Add(float64(rec.bytes))
		return nil
	case err != nil:
		return err
	}
	defer rc.Close()
	h := w.Header()
	h.Set("ETag", `"`+digest+`"`)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(size-off, 10))
	status := http.StatusOK
	if off > 0 {
		status = http.StatusPartialContent
		h.Set("Content-Range", "bytes "+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(size-1, 10)+"/"+strconv.FormatInt(size, 10))
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	rec := &recorder{ResponseWriter: w}
	// In the chunks the blob is staged in (the response's own ReadFrom
	// would copy 32 KiB at a time): fewer writes and wake-ups per blob.
	n, err := io.CopyBuffer(struct{ io.Writer }{rec}, rc, make([]byte, blob.PutChunk))
	s.metrics.blobBytes.Add(float64(n))
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "relayed blob stream cut", slog.String("digest", digest),
			slog.String("tier", tier), slog.Int64("offset", off+n), slog.String("error", err.Error()))
		// Short of Content-Length: the downstream sees the body break.
		panic(http.ErrAbortHandler)
	}
	return nil
}

// arrivingOffset is where a resumed transfer of a blob still arriving
// starts: the first byte of a "bytes=N-" range for this very blob (If-Range
// absent or the digest's ETag), else 0 (the whole blob, as RFC 9110 lets a
// server answer a range it does not serve).
func arrivingOffset(r *http.Request, digest string) int64 {
	rng := singleRange(r.Header.Get("Range"))
	if rng == "" {
		return 0
	}
	if ir := r.Header.Get("If-Range"); ir != "" && ir != `"`+digest+`"` {
		return 0
	}
	first, last, _ := strings.Cut(strings.TrimPrefix(rng, "bytes="), "-")
	if first == "" || last != "" {
		return 0
	}
	off, err := strconv.ParseInt(first, 10, 64)
	if err != nil {
		return 0
	}
	return off
}
