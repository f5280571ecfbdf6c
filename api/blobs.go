package api

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
)

// getBlob serves a patch file to a machine or downstream node whose tier
// the patch is live on, or to an admin. A blob the caller may not read is
// answered exactly as a blob that does not exist.
func (s *server) getBlob(w http.ResponseWriter, r *http.Request) error {
	digest, err := pathVar(r, "digest", catalog.ValidDigest)
	if err != nil {
		return err
	}
	ctx := r.Context()
	recorded, arrivingOn, err := s.mayRead(r, digest)
	if err != nil {
		return err
	}
	if arrivingOn != "" {
		return s.serveArriving(w, r, arrivingOn, digest)
	}
	missing := func(err error) error {
		if recorded && errors.Is(err, blob.ErrNotFound) {
			s.log.LogAttrs(ctx, slog.LevelError, "a patch record names a missing blob", slog.String("digest", digest))
		}
		return err
	}
	if ro, ok := s.blobs.(blob.RangeOpener); ok {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		rec := &recorder{ResponseWriter: w}
		err := s.sendSection(rec, r, ro, digest, true)
		s.metrics.blobBytes.Add(float64(rec.bytes))
		return missing(err)
	}
	rs, info, err := s.blobs.Open(ctx, blob.Digest(digest))
	if err != nil {
		return missing(err)
	}
	defer rs.Close()
	h := w.Header()
	h.Set("ETag", `"`+digest+`"`)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("Content-Type", "application/octet-stream")
	// rs goes to ServeContent unwrapped: the filesystem driver's *os.File
	// then reaches the connection's sendfile. The recorder counts bytes
	// from what ReadFrom reports, without touching the file.
	rec := &recorder{ResponseWriter: w}
	if wholeAsked(r) {
		serveWhole(rec, r, info, rs)
	} else {
		http.ServeContent(rec, r, "", info.Modified, rs)
	}
	s.metrics.blobBytes.Add(float64(rec.bytes))
	return nil
}

// wholeAsked reports a GET or HEAD with no range and no precondition: the
// answer is the whole blob with 200, whatever the blob.
func wholeAsked(r *http.Request) bool {
	for _, k := range [...]string{"Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range"} {
		if _, ok := r.Header[k]; ok {
			return false
		}
	}
	return true
}

// serveWhole answers a request wholeAsked approves with the headers
// http.ServeContent would send and the whole of rs. ServeContent would also
// seek rs to its end and back to learn the size the driver has already
// reported: two system calls on every download, which this spares. The
// caller has set ETag, Cache-Control and Content-Type.
func serveWhole(w http.ResponseWriter, r *http.Request, info blob.Info, rs io.Reader) {
	h := w.Header()
	if !info.Modified.IsZero() && !info.Modified.Equal(time.Unix(0, 0)) {
		h.Set("Last-Modified", info.Modified.UTC().Format(http.TimeFormat))
	}
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(info.Size, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		// CopyN hands the connection an io.LimitedReader over the file,
		// which it sends with sendfile. A client gone mid-way is no error
		// of ours, as with ServeContent.
		io.CopyN(w, rs, info.Size)
	}
}

// mayRead decides whether the request's credential may read the blob: an
// admin macaroon reads anything; a machine or sync token reads a blob of a
// patch live on its tier. recorded says a patch record names the blob.
// arrivingOn is the tier of a sync token asking for a blob no record here
// names yet: the sync loop may be fetching it for that tier (cut-through).
func (s *server) mayRead(r *http.Request, digest string) (recorded bool, arrivingOn string, err error) {
	if authScheme(r.Header.Get("Authorization")) == "macaroon" {
		_, err := s.admin(r)
		return false, "", err
	}
	t, err := s.bearer(r, catalog.TokenMachine, catalog.TokenSync)
	if err != nil {
		return false, "", err
	}
	p, err := s.patch(r.Context(), digest)
	if errors.Is(err, catalog.ErrNotFound) {
		if t.Kind == catalog.TokenSync && s.arrivals != nil {
			return false, t.Tier, nil
		}
		return false, "", notFound("no such blob")
	}
	if err != nil {
		return false, "", err
	}
	if p.Withdrawn || !slices.Contains(p.Tiers, t.Tier) {
		reason := "not_on_tier"
		if p.Withdrawn {
			reason = "withdrawn"
		}
		s.securityEvent(r, auth.EventAuthzFail, slog.String("token_id", t.ID), slog.String("kind", string(t.Kind)),
			slog.String("tier", t.Tier), slog.String("digest", digest), slog.String("reason", reason))
		return false, "", notFound("no such blob")
	}
	return true, "", nil
}

// authScheme returns the lower-cased scheme of an Authorization header.
func authScheme(h string) string {
	scheme, _, _ := strings.Cut(h, " ")
	return strings.ToLower(scheme)
}

// sendSection answers GET or HEAD for a blob on an object store with at
// most one request to the store: a matching If-None-Match costs none (the
// ETag is the digest), a redirect one presigning (no request), HEAD one
// Stat, and GET one ranged or whole read streamed through a fixed-size
// copy buffer.
// Multi-range requests and an If-Range that is not the ETag get the whole
// blob, as RFC 9110 allows. redirect allows answering with a presigned URL
// (blobs.redirect); peers never get one, as a peer shares the store anyway
// or has no credentials for it.
func (s *server) sendSection(w http.ResponseWriter, r *http.Request, ro blob.RangeOpener, digest string, redirect bool) error {
	ctx := r.Context()
	d := blob.Digest(digest)
	etag := `"` + digest + `"`
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Accept-Ranges", "bytes")
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	if p, ok := s.blobs.(blob.Presigner); ok && redirect && s.redirect > 0 {
		u, err := p.PresignGet(ctx, d, s.redirect)
		if err != nil {
			return err
		}
		// The URL expires: no cache may keep the redirect for a year.
		h.Set("Cache-Control", "private, no-store")
		http.Redirect(w, r, u, http.StatusTemporaryRedirect)
		s.metrics.blobRedirects.Inc()
		return nil
	}
	h.Set("Content-Type", "application/octet-stream")
	if r.Method == http.MethodHead {
		info, err := s.blobs.Stat(ctx, d)
		if err != nil {
			return err
		}
		h.Set("Last-Modified", info.Modified.UTC().Format(http.TimeFormat))
		h.Set("Content-Length", strconv.FormatInt(info.Size, 10))
		w.WriteHeader(http.StatusOK)
		return nil
	}
	rng := singleRange(r.Header.Get("Range"))
	if ir := r.Header.Get("If-Range"); ir != "" && ir != etag {
		rng = ""
	}
	body, sec, err := ro.OpenRange(ctx, d, rng)
	if err != nil {
		return err
	}
	defer body.Close()
	h.Set("Last-Modified", sec.Modified.UTC().Format(http.TimeFormat))
	h.Set("Content-Length", strconv.FormatInt(sec.Length, 10))
	status := http.StatusOK
	if rng != "" {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", sec.Offset, sec.Offset+sec.Length-1, sec.Size))
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	// net/http copies through a pooled buffer of fixed size: a download
	// holds that much of the blob at a time, whatever its size.
	if n, err := io.Copy(w, io.LimitReader(body, sec.Length)); err != nil || n != sec.Length {
		// The status is sent: all that is left is to cut the answer
		// short, which the client sees against Content-Length.
		s.log.LogAttrs(ctx, slog.LevelError, "blob download cut short", slog.String("digest", digest),
			slog.Int64("sent", n), slog.Int64("want", sec.Length), slog.Any("error", err))
		panic(http.ErrAbortHandler)
	}
	return nil
}

// singleRange returns h if it is one well-formed byte range ("bytes=a-b",
// "bytes=a-" or "bytes=-n"), else "" (no range: the whole blob).
func singleRange(h string) string {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return ""
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	digits := func(s string) bool {
		if s == "" || len(s) > 18 {
			return false
		}
		for _, c := range s {
			if c < '0' || c > '9' {
				return false
			}
		}
		return true
	}
	switch {
	case !ok:
		return ""
	case first == "":
		if !digits(last) {
			return ""
		}
	case !digits(first) || (last != "" && !digits(last)):
		return ""
	case last != "":
		a, _ := strconv.ParseInt(first, 10, 64)
		b, _ := strconv.ParseInt(last, 10, 64)
		if b < a {
			return ""
		}
	}
	return "bytes=" + first + "-" + last
}

// etagMatches reports whether an If-None-Match list names etag (weak
// comparison, as RFC 9110 asks for If-None-Match) or is "*".
func etagMatches(list, etag string) bool {
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}
