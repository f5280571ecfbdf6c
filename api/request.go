package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/patchmesh/patchmesh/catalog"
)

// decode reads one JSON object of at most Limits.MaxBodyBytes into v,
// refusing unknown fields and anything after the object, so that a client
// that misspells a field or sends two objects hears about it.
func (s *server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	return s.decodeBody(w, r, v, false)
}

// decodeOptional is decode for a body that may be left out altogether,
// leaving v as it was.
func (s *server) decodeOptional(w http.ResponseWriter, r *http.Request, v any) error {
	return s.decodeBody(w, r, v, true)
}

func (s *server) decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	return decodeLimited(w, r, v, optional, s.limits.MaxBodyBytes)
}

// decodeLimited is decodeBody with its own bound on the body. Beyond
// encoding/json's checks it refuses a declared Content-Type that is not
// JSON (415) and an object that names a key twice (400).
func decodeLimited(w http.ResponseWriter, r *http.Request, v any, optional bool, limit int64) error {
	raw, err := readJSONBody(w, r, limit)
	switch {
	case errors.Is(err, io.EOF) && optional:
		return nil
	case errors.Is(err, io.EOF):
		return badRequest("missing JSON body")
	case err != nil:
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("malformed JSON: %v", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return badRequest("malformed JSON: unexpected data after the object")
	}
	if err := checkDuplicateKeys(raw); err != nil {
		return badRequest("malformed JSON: %v", err)
	}
	return nil
}

// pathVar returns a path variable checked by valid.
func pathVar(r *http.Request, name string, valid func(string) error) (string, error) {
	v := mux.Vars(r)[name]
	if err := valid(v); err != nil {
		return "", err
	}
	return v, nil
}

// query reads optional query parameters, each checked by its rule; an
// absent or empty parameter is "".
type query struct {
	v   url.Values
	err error
}

func newQuery(r *http.Request) *query { return &query{v: r.URL.Query()} }

func (q *query) get(name string, valid func(string) error) string {
	v := q.v.Get(name)
	if q.err != nil || v == "" {
		return v
	}
	if err := valid(v); err != nil {
		q.err = err
	}
	return v
}

// limit reads the listing limit: 1 to 10000, 0 when absent.
func (q *query) limit() int {
	v := q.v.Get("limit")
	if q.err != nil || v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxListLimit {
		q.err = invalid("limit", "must be a number from 1 to %d", maxListLimit)
		return 0
	}
	return n
}

func (q *query) bool(name string) bool {
	v := q.v.Get(name)
	if q.err != nil || v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		q.err = invalid(name, "must be true or false")
	}
	return b
}

// maxListLimit is the most a listing may ask for, as the stores cap it.
const maxListLimit = 10000

func validTier(n string) error { return catalog.ValidName("tier", n) }

// validTokenID checks a token ID: 16 lowercase hex digits.
func validTokenID(id string) error {
	if !isHex16(id) {
		return invalid("id", "must be 16 lowercase hex digits")
	}
	return nil
}

// isHex16 reports whether id is 16 lowercase hex digits, the form of token
// and key IDs.
func isHex16(id string) bool {
	if len(id) != 16 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func validStateString(s string) error { return catalog.ValidState(catalog.MachineState(s)) }
