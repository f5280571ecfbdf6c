package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/gorilla/mux"

	"github.com/patchmesh/patchmesh/auth"
)

// RequestIDHeader carries the request ID both ways: a client may name its
// request, and every answer names the request in the server's log.
const RequestIDHeader = "X-Request-ID"

// requestIDHeaderKey is RequestIDHeader as net/http keeps it.
var requestIDHeaderKey = http.CanonicalHeaderKey(RequestIDHeader)

// validRequestID bounds what a client-chosen ID may put into the log: 1
// to 64 of A-Z, a-z, 0-9, '.', '_' and '-'. A loop, not a regular
// expression: the check runs on every request, and regexp's matcher was
// 5.5 % of a check-in's CPU (bench/RESULTS.md, issue 12 part D).
func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// unmatchedRoute labels requests no route matched, so that scanners
// probing random paths cannot grow the metrics' label sets.
const unmatchedRoute = "unmatched"

type ctxKey int

const reqKey ctxKey = 0

// reqInfo is what the middleware learns about a request as it goes; the
// route is known only once the router has matched.
type reqInfo struct {
	id     string
	route  string
	client string // the client's address, see clientAddr
	// slot is the governor's slot the request holds, if it went through
	// the governor: kept here rather than in a context of its own, which
	// would copy the request once more.
	slot *slot
}

func infoFrom(ctx context.Context) *reqInfo {
	ri, _ := ctx.Value(reqKey).(*reqInfo)
	return ri
}

// RequestID returns the ID of the request ctx belongs to, or "".
func RequestID(ctx context.Context) string {
	if ri := infoFrom(ctx); ri != nil {
		return ri.id
	}
	return ""
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail on supported platforms
	return hex.EncodeToString(b[:])
}

// withRequestID names the request: the client's X-Request-ID when it is
// safe to log, else a fresh random one. The answer echoes it.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		// Set would canonicalize the name anew on every request.
		w.Header()[requestIDHeaderKey] = []string{id}
		ctx := context.WithValue(r.Context(), reqKey, &reqInfo{id: id})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// withRequest is withRequestID and withClient in one: the request is
// copied once for both (every copy is some 250 bytes of garbage on the
// check-in's path).
func withRequest(trusted []netip.Prefix, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header()[requestIDHeaderKey] = []string{id}
		c := clientAddr(r, trusted)
		ctx := context.WithValue(r.Context(), reqKey, &reqInfo{id: id, client: c})
		next.ServeHTTP(w, r.WithContext(auth.WithClient(ctx, c)))
	})
}

// recordRoute runs inside the router, after matching, and tells the outer
// middleware which route template served the request.
func recordRoute(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ri := infoFrom(r.Context()); ri != nil {
			if cr := mux.CurrentRoute(r); cr != nil {
				if t, err := cr.GetPathTemplate(); err == nil {
					ri.route = t
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// observe writes the access log line and the request metrics. It logs the
// route template and path, never the query (uploads carry metadata there,
// and a client could put anything in it) nor any header.
func (s *server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		d := time.Since(start)
		route := unmatchedRoute
		if ri := infoFrom(r.Context()); ri != nil && ri.route != "" {
			route = ri.route
		}
		status := rec.status
		if status == 0 {
			status = http.StatusOK // the handler wrote nothing: net/http answers 200
		}
		s.metrics.httpDuration.WithLabelValues(route, metricMethod(r.Method), statusLabel(status)).Observe(d.Seconds())
		if !s.logsInFull(r, route, status) && !s.successes.Allow() {
			return // counted in the metrics above; a sample is logged
		}
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("route", route),
			slog.String("path", r.URL.Path),
			slog.Int("status", status),
			slog.Int64("bytes", rec.bytes),
			slog.Duration("duration", d),
		)
	})
}

// sampledRoutes are the machine-facing routes a fleet calls all the time:
// their successful answers are logged as a sample (Config.
// SuccessLogPerSecond). Every other route, every failure and every request
// with an admin credential is logged in full.
var sampledRoutes = map[string]bool{
	"/v1/client/patch":        true,
	"/v1/client/checkin":      true,
	"/v1/client/status":       true,
	"/v1/client/nodes":        true,
	"/v1/blobs/{digest}":      true,
	"/v1/peer/blobs/{digest}": true,
	"/v1/sync/feed":           true,
}

// logsInFull says whether the access line of a request is always written.
func (s *server) logsInFull(r *http.Request, route string, status int) bool {
	return status >= 400 || !sampledRoutes[route] || authScheme(r.Header.Get("Authorization")) == "macaroon"
}

// statusLabel is strconv.Itoa(status) without an allocation for the
// statuses a busy node answers most.
func statusLabel(status int) string {
	switch status {
	case http.StatusOK:
		return "200"
	case http.StatusNotFound:
		return "404"
	case http.StatusNotModified:
		return "304"
	case http.StatusPartialContent:
		return "206"
	}
	return strconv.Itoa(status)
}

// metricMethod keeps the method label to a known set.
func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// recoverPanics turns a handler's panic into a logged 500, so that one bad
// request neither kills the connection silently nor goes unrecorded.
func (s *server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.LogAttrs(r.Context(), slog.LevelError, "handler panic",
				slog.String("panic", fmt.Sprint(v)), slog.String("stack", string(debug.Stack())))
			if rec, ok := w.(*recorder); ok && rec.status != 0 {
				// Part of an answer is out: abort the connection so the
				// client sees a broken answer rather than a short one.
				panic(http.ErrAbortHandler)
			}
			writeError(w, http.StatusInternalServerError, errorDetail{
				Code: codeInternal, Message: "internal error; request " + RequestID(r.Context())})
		}()
		next.ServeHTTP(w, r)
	})
}

// recorder notes the status and body bytes of an answer. It implements
// io.ReaderFrom by delegating, so that http.ServeContent's copy of an
// *os.File still reaches the connection's sendfile path through it.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

var _ io.ReaderFrom = (*recorder)(nil)

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 { // 1xx answers are not the final status
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writerOnly{r.ResponseWriter}, src)
	}
	r.bytes += n
	return n, err
}

// Flush lets streaming handlers flush through the recorder.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// writerOnly hides every method but Write, so io.Copy cannot loop back
// into the ReadFrom that called it.
type writerOnly struct{ io.Writer }

// NewLogHandler wraps h so that every record logged with a request's
// context carries that request's request_id, its client address and,
// once the router has matched, its route. Records that already carry the key keep their own.
// The node wraps every logger that may log inside a request with it (the
// api's own and the auth package's), so that security events can be tied
// to the request and the route they concern.
func NewLogHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(*ctxHandler); ok {
		return h
	}
	return &ctxHandler{h}
}

type ctxHandler struct{ slog.Handler }

func (c *ctxHandler) Handle(ctx context.Context, rec slog.Record) error {
	if ri := infoFrom(ctx); ri != nil {
		var hasID, hasRoute, hasClient bool
		rec.Attrs(func(a slog.Attr) bool {
			hasID = hasID || a.Key == "request_id"
			hasRoute = hasRoute || a.Key == "route"
			hasClient = hasClient || a.Key == "client"
			return true
		})
		if !hasClient && ri.client != "" {
			rec.AddAttrs(slog.String("client", ri.client))
		}
		if !hasID {
			rec.AddAttrs(slog.String("request_id", ri.id))
		}
		if !hasRoute && ri.route != "" {
			rec.AddAttrs(slog.String("route", ri.route))
		}
	}
	return c.Handler.Handle(ctx, rec)
}

func (c *ctxHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &ctxHandler{c.Handler.WithAttrs(attrs)}
}

func (c *ctxHandler) WithGroup(name string) slog.Handler {
	return &ctxHandler{c.Handler.WithGroup(name)}
}
