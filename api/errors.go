package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
)

// Error codes of the error body, as docs/api.md lists them.
const (
	codeBadRequest   = "bad_request"
	codeInvalidInput = "invalid_input"
	codeUnauthorized = "unauthorized"
	codeForbidden    = "forbidden"
	// A revoked machine tried to register.
	codeMachineRevoked   = "machine_revoked"
	codeNotFound         = "not_found"
	codeMethodNotAllowed = "method_not_allowed"
	codeConflict         = "conflict"
	codeTooLarge         = "too_large"
	codeDigestMismatch   = "digest_mismatch"
	codeOverloaded       = "overloaded"
	codeTooManyRequests  = "too_many_requests"
	// A JSON endpoint was sent a body of another declared type.
	codeUnsupportedMediaType = "unsupported_media_type"
	codeInternal             = "internal"
	codeBadRange             = "range_not_satisfiable"
	// Federation: the node's role does not allow the request.
	codeNotHub        = "not_hub"
	codeNotDownstream = "not_downstream"
	codeConfigKey     = "config_key"
)

// httpError is an answer a handler has already decided on.
type httpError struct {
	status  int
	code    string
	message string
}

func (e *httpError) Error() string { return e.code + ": " + e.message }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, codeBadRequest, fmt.Sprintf(format, args...)}
}

func notFound(message string) error {
	return &httpError{http.StatusNotFound, codeNotFound, message}
}

// invalid reports a field that broke a rule, as catalog does.
func invalid(field, format string, args ...any) error {
	return &catalog.InvalidError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// errorBody is the JSON every error answer carries.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// classify turns an error into the status and body the client sees.
// Anything it does not recognise is a 500 whose cause stays in the log.
func classify(err error) (int, errorDetail) {
	var he *httpError
	if errors.As(err, &he) {
		return he.status, errorDetail{Code: he.code, Message: he.message}
	}
	var inv *catalog.InvalidError
	if errors.As(err, &inv) {
		return http.StatusBadRequest, errorDetail{Code: codeInvalidInput, Message: inv.Error(), Field: inv.Field}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, errorDetail{Code: codeTooLarge,
			Message: fmt.Sprintf("body is over the limit of %d bytes", mbe.Limit)}
	}
	switch {
	case errors.Is(err, blob.ErrDigestMismatch):
		return http.StatusUnprocessableEntity, errorDetail{Code: codeDigestMismatch,
			Message: "the uploaded bytes do not hash to the declared digest; nothing was stored"}
	case errors.Is(err, blob.ErrInvalidDigest):
		return http.StatusBadRequest, errorDetail{Code: codeInvalidInput,
			Message: "digest: must be sha256: followed by 64 lowercase hex digits", Field: "digest"}
	case errors.Is(err, auth.ErrUnauthenticated):
		// Say no more: which part of a credential failed is for the log.
		return http.StatusUnauthorized, errorDetail{Code: codeUnauthorized,
			Message: "missing, malformed, unknown, expired or revoked credentials"}
	case errors.Is(err, auth.ErrThrottled):
		return http.StatusTooManyRequests, errorDetail{Code: codeTooManyRequests,
			Message: "too many failed logins from this client or for this user; retry later"}
	case errors.Is(err, auth.ErrBusy):
		return http.StatusServiceUnavailable, errorDetail{Code: codeOverloaded,
			Message: "too many logins at once; retry later"}
	case errors.Is(err, auth.ErrForbidden):
		return http.StatusForbidden, errorDetail{Code: codeForbidden,
			Message: "these credentials do not grant this request"}
	case errors.Is(err, catalog.ErrNotFound), errors.Is(err, blob.ErrNotFound):
		return http.StatusNotFound, errorDetail{Code: codeNotFound, Message: "not found"}
	case errors.Is(err, blob.ErrRangeNotSatisfiable):
		return http.StatusRequestedRangeNotSatisfiable, errorDetail{Code: codeBadRange,
			Message: "the blob does not have the bytes the Range header asks for"}
	case errors.Is(err, catalog.ErrConflict):
		return http.StatusConflict, errorDetail{Code: codeConflict, Message: conflictMessage(err)}
	}
	return http.StatusInternalServerError, errorDetail{Code: codeInternal, Message: "internal error"}
}

// conflictMessage keeps the store's explanation but not a driver's text,
// which can name tables and constraints.
func conflictMessage(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, catalog.ErrConflict.Error()); i >= 0 {
		msg = msg[:i+len(catalog.ErrConflict.Error())]
	}
	msg = strings.TrimPrefix(msg, "sqlstore: ")
	return msg
}

// fail writes err as an error answer. A 500 logs its cause and shows the
// client only the request ID to quote.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, d := classify(err)
	switch status {
	case http.StatusInternalServerError:
		s.log.LogAttrs(r.Context(), slog.LevelError, "request failed", slog.String("error", err.Error()))
		d.Message = "internal error; request " + RequestID(r.Context())
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", challenge(r))
	case http.StatusServiceUnavailable:
		retry := retryAfterSeconds
		if oe := (*overloadedError)(nil); errors.As(err, &oe) {
			retry = oe.retryAfter // measured by the governor
		}
		w.Header().Set("Retry-After", strconv.Itoa(retry))
	case http.StatusTooManyRequests:
		retry := retryAfterSeconds
		if te := (*auth.ThrottledError)(nil); errors.As(err, &te) {
			retry = max(1, int(math.Ceil(te.RetryAfter.Seconds())))
		}
		w.Header().Set("Retry-After", strconv.Itoa(retry))
	}
	writeError(w, status, d)
}

func writeError(w http.ResponseWriter, status int, d errorDetail) {
	writeJSON(w, status, errorBody{Error: d})
}

// challenge names the scheme a 401'd client should use.
func challenge(r *http.Request) string {
	switch {
	case r.URL.Path == "/v1/admin/login":
		return `Basic realm="patchmesh"`
	case strings.HasPrefix(r.URL.Path, "/v1/admin/"), strings.HasPrefix(r.URL.Path, "/v1/dashboard/"),
		r.URL.Path == "/v1/sync/status", r.URL.Path == "/v1/topology":
		return `Macaroon realm="patchmesh"`
	}
	return `Bearer realm="patchmesh"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The status is out; a failed write means the client went away.
	_ = json.NewEncoder(w).Encode(v)
}
