package api

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"strings"

	"github.com/patchmesh/patchmesh/auth"
)

// errUnsupportedMediaType refuses a JSON endpoint's body of another type.
var errUnsupportedMediaType = &httpError{http.StatusUnsupportedMediaType, codeUnsupportedMediaType,
	"the body must be application/json"}

// checkJSONType refuses a declared Content-Type that is not JSON. A body
// without one is read as JSON, as clients of the first API versions sent.
func checkJSONType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return errUnsupportedMediaType
	}
	return nil
}

// checkDuplicateKeys refuses a JSON document in which an object names a
// key twice (compared as encoding/json matches fields, without case):
// encoding/json would keep the last silently, and two readers of one body
// could then see two different requests.
func checkDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return walkJSON(dec, 0)
}

// maxJSONDepth bounds the walk's recursion, as encoding/json bounds its own.
const maxJSONDepth = 10000

func walkJSON(dec *json.Decoder, depth int) error {
	if depth > maxJSONDepth {
		return errors.New("nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar
	}
	switch d {
	case '{':
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return err
			}
			k, _ := kt.(string)
			fold := strings.ToLower(k)
			if seen[fold] {
				return fmt.Errorf("key %q appears twice in one object", truncateKey(k))
			}
			seen[fold] = true
			if err := walkJSON(dec, depth+1); err != nil {
				return err
			}
		}
	case '[':
		for dec.More() {
			if err := walkJSON(dec, depth+1); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return err
}

func truncateKey(k string) string {
	if len(k) > 64 {
		return k[:64] + "…"
	}
	return k
}

// readJSONBody reads a bounded body, checking its type; io.EOF when empty.
func readJSONBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if err := checkJSONType(r); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, io.EOF
	}
	return b, nil
}

// guardMetrics puts /metrics behind a bearer token when token is not
// empty, compared in constant time.
func (s *server) guardMetrics(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) != 1 {
			reason := "bad_secret"
			if !ok {
				reason = "malformed"
			}
			s.securityEvent(r, auth.EventTokenFail, slog.String("kind", "metrics"), slog.String("reason", reason))
			w.Header().Set("WWW-Authenticate", `Bearer realm="patchmesh"`)
			writeError(w, http.StatusUnauthorized, errorDetail{Code: codeUnauthorized,
				Message: "missing, malformed, unknown, expired or revoked credentials"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// guardAdminNetworks refuses admin requests (the admin API, its login
// included, and the dashboard's endpoints) from clients outside nets, when
// nets is not empty.
func (s *server) guardAdminNetworks(nets []netip.Prefix, next http.Handler) http.Handler {
	if len(nets) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if !strings.HasPrefix(p, "/v1/admin/") && !strings.HasPrefix(p, "/v1/dashboard/") {
			next.ServeHTTP(w, r)
			return
		}
		c := auth.Client(r.Context())
		if a, err := netip.ParseAddr(c); err == nil && isTrusted(a, nets) {
			next.ServeHTTP(w, r)
			return
		}
		s.securityEvent(r, auth.EventAuthzFail, slog.String("reason", "admin_network"))
		writeError(w, http.StatusForbidden, errorDetail{Code: codeForbidden,
			Message: "the admin API is not served to this network"})
	})
}
