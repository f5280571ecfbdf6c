package api

import (
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"

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
	recorded, err := s.mayRead(r, digest)
	if err != nil {
		return err
	}
	rs, info, err := s.blobs.Open(ctx, blob.Digest(digest))
	if err != nil {
		if recorded && errors.Is(err, blob.ErrNotFound) {
			s.log.LogAttrs(ctx, slog.LevelError, "a patch record names a missing blob", slog.String("digest", digest))
		}
		return err
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
	http.ServeContent(rec, r, "", info.Modified, rs)
	s.metrics.blobBytes.Add(float64(rec.bytes))
	return nil
}

// mayRead decides whether the request's credential may read the blob: an
// admin macaroon reads anything; a machine or sync token reads a blob of a
// patch live on its tier. recorded says a patch record names the blob.
func (s *server) mayRead(r *http.Request, digest string) (recorded bool, err error) {
	if authScheme(r.Header.Get("Authorization")) == "macaroon" {
		_, err := s.admin(r)
		return false, err
	}
	t, err := s.bearer(r, catalog.TokenMachine, catalog.TokenSync)
	if err != nil {
		return false, err
	}
	p, err := s.store.Patch(r.Context(), digest)
	if errors.Is(err, catalog.ErrNotFound) {
		return false, notFound("no such blob")
	}
	if err != nil {
		return false, err
	}
	if p.Withdrawn || !slices.Contains(p.Tiers, t.Tier) {
		reason := "not_on_tier"
		if p.Withdrawn {
			reason = "withdrawn"
		}
		s.securityEvent(r, auth.EventAuthzFail, slog.String("token_id", t.ID), slog.String("kind", string(t.Kind)),
			slog.String("tier", t.Tier), slog.String("digest", digest), slog.String("reason", reason))
		return false, notFound("no such blob")
	}
	return true, nil
}

// authScheme returns the lower-cased scheme of an Authorization header.
func authScheme(h string) string {
	scheme, _, _ := strings.Cut(h, " ")
	return strings.ToLower(scheme)
}
