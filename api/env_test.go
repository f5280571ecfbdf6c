package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/blob/fsblob"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/nodetest"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

const (
	adminUser     = "root"
	adminPassword = nodetest.Password
	testKernel    = "5.15.0-107.117-generic"
	testArch      = "x86_64"
)

// clock is a settable time shared by the store, auth and the api, so that
// tests can move past expiry times without waiting.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logBuffer collects the JSON log lines of every logger in a test.
type logBuffer struct{ nodetest.LogBuffer }

// lines returns the decoded log records.
func (l *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, ln := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if ln == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(ln), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", ln, err)
		}
		out = append(out, m)
	}
	return out
}

// env is one node's API over a real SQLite store, filesystem blobs and
// authenticator, served by httptest.
type env struct {
	t       *testing.T
	srv     *httptest.Server
	handler http.Handler
	store   *sqlstore.Store
	blobs   *fsblob.Store
	auth    *auth.Authenticator
	clock   *clock
	logs    *logBuffer
	reg     *prometheus.Registry
	admin   string // Authorization header value for the admin

	mu      sync.Mutex
	secrets []string       // every secret the test saw; none may reach the log
	calls   map[string]int // store method calls by name
}

// newEnv wires Changes as a node does, so that every test runs through
// the token cache and the offer index.
func newEnv(t *testing.T, tune ...func(*api.Config)) *env {
	t.Helper()
	return newEnvWith(t, nodetest.Options{Changes: &store.Changes{}}, tune...)
}

// newEnvWith is newEnv with the store wired as o says; its admin, clock
// and observer are the env's own.
func newEnvWith(t *testing.T, o nodetest.Options, tune ...func(*api.Config)) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{t: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}, logs: &logBuffer{}, reg: prometheus.NewRegistry(),
		calls: map[string]int{}}
	log := slog.New(api.NewLogHandler(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	metrics := api.NewMetrics(e.reg)
	o.Admin, o.Now = adminUser, e.clock.Now
	o.Observe = func(op string, d time.Duration, err error) {
		e.mu.Lock()
		e.calls[op]++
		e.mu.Unlock()
		metrics.ObserveStore(op, d, err)
	}
	n := nodetest.Wire(t, log, o)
	e.store, e.blobs, e.auth = n.Store, n.Blobs, n.Auth
	cfg := n.Config
	cfg.Metrics = metrics
	cfg.Info = api.Info{Version: "1.2.3", Role: "hub", Node: "node-a"}
	for _, f := range tune {
		f(&cfg)
	}
	h, err := api.New(cfg)
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	e.handler = h
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	t.Cleanup(e.checkNoSecretsLogged)
	e.admin = "Macaroon " + e.login()
	return e
}

// storeCalls is how many times the store's method op has been called.
func (e *env) storeCalls(op string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls[op]
}

// keep remembers a secret the log must never contain.
func (e *env) keep(secret string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.secrets = append(e.secrets, secret)
	return secret
}

func (e *env) checkNoSecretsLogged() {
	logs := e.logs.String()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range append(e.secrets, adminPassword) {
		// Token secrets are checked by their secret part; the ID before it
		// may be logged.
		part := s
		if f := strings.SplitN(s, "_", 3); len(f) == 3 && strings.HasPrefix(s, "pm") {
			part = f[2]
		}
		if strings.Contains(logs, part) {
			e.t.Errorf("the log contains a secret (%.12s…); want no secret in any log line", part)
		}
	}
}

// response is a finished request.
type response struct {
	*http.Response
	body []byte
}

func (r response) errCode() string {
	var b struct {
		Error struct {
			Code, Message, Field string
		}
	}
	json.Unmarshal(r.body, &b)
	return b.Error.Code
}

func (r response) errField() string {
	var b struct {
		Error struct{ Field string }
	}
	json.Unmarshal(r.body, &b)
	return b.Error.Field
}

// request sends a request; body is a string, []byte, io.Reader or a value
// to encode as JSON; nil sends none.
func (e *env) request(method, path, authz string, body any, hdr ...string) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatalf("encode body: %v", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{resp, b}
}

// want checks the status and decodes the body into v (if not nil).
func (e *env) want(r response, status int, v any) {
	e.t.Helper()
	if r.StatusCode != status {
		e.t.Fatalf("%s %s: status %d, want %d; body %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.body)
	}
	if v != nil {
		if err := json.Unmarshal(r.body, v); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", r.Request.Method, r.Request.URL.Path, r.body, err)
		}
	}
}

func (e *env) login() string {
	e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/admin/login", nil)
	req.SetBasicAuth(adminUser, adminPassword)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("login: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Macaroon string    `json:"macaroon"`
		Expires  time.Time `json:"expires"`
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("login: status %d, want 200; body %s", resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Macaroon == "" {
		e.t.Fatalf("login: answer %+v, %v; want a macaroon", out, err)
	}
	return e.keep(out.Macaroon)
}

// token creates an auth or sync token through the API and returns it.
func (e *env) token(kind, tier, name string) (secret string, info catalog.Token) {
	e.t.Helper()
	var out struct {
		Token string        `json:"token"`
		Info  catalog.Token `json:"info"`
	}
	e.want(e.request(http.MethodPost, "/v1/admin/"+kind+"-tokens", e.admin, map[string]any{"tier": tier, "name": name}), http.StatusCreated, &out)
	return e.keep(out.Token), out.Info
}

// machine registers a machine on tier and returns its machine token.
func (e *env) machine(tier, rawID string) string {
	e.t.Helper()
	at, _ := e.token("auth", tier, "reg-"+tier)
	var out struct {
		MachineToken string `json:"machine_token"`
	}
	e.want(e.request(http.MethodPost, "/v1/client/register", "Bearer "+at, registration(rawID)), http.StatusCreated, &out)
	return "Bearer " + e.keep(out.MachineToken)
}

func registration(rawID string) map[string]any {
	return map[string]any{"machine_id": rawID, "kernel": testKernel, "arch": testArch, "client_version": "0.1.0"}
}

// uploadPath is the upload URL for a file with this metadata.
func uploadPath(digest, kernel, version string) string {
	q := url.Values{"digest": {digest}, "kernel": {kernel}, "arch": {testArch}, "version": {version},
		"cves": {"CVE-2024-1086,CVE-2024-26581"}, "description": {"fixes things"}}
	return "/v1/admin/patches?" + q.Encode()
}

// upload stores content as a patch for testKernel at version.
func (e *env) upload(content []byte, version string) catalog.Patch {
	e.t.Helper()
	var p catalog.Patch
	d := blob.FromBytes(content)
	e.want(e.request(http.MethodPost, uploadPath(string(d), testKernel, version), e.admin, content), http.StatusCreated, &p)
	return p
}

// snapshot is what a rejected request must leave unchanged.
type snapshot struct {
	head                  int64
	tokens, machines, nbl int
}

func (e *env) snapshot() snapshot {
	e.t.Helper()
	ctx := context.Background()
	var s snapshot
	var err error
	if s.head, err = e.store.Head(ctx); err != nil {
		e.t.Fatalf("head: %v", err)
	}
	for _, k := range []catalog.TokenKind{catalog.TokenAuth, catalog.TokenMachine, catalog.TokenSync} {
		ts, err := e.store.Tokens(ctx, store.TokenFilter{Kind: k, Limit: 100_000})
		if err != nil {
			e.t.Fatalf("tokens: %v", err)
		}
		for _, t := range ts {
			s.tokens++
			if !t.Revoked.IsZero() {
				s.tokens += 1000 // a revocation is a change too
			}
		}
	}
	ms, err := e.store.Machines(ctx, store.MachineFilter{})
	if err != nil {
		e.t.Fatalf("machines: %v", err)
	}
	s.machines = len(ms)
	if err := e.blobs.Enumerate(ctx, func(blob.Info) error { s.nbl++; return nil }); err != nil {
		e.t.Fatalf("enumerate: %v", err)
	}
	return s
}

func (e *env) unchanged(what string, before snapshot) {
	e.t.Helper()
	if after := e.snapshot(); after != before {
		e.t.Errorf("%s changed the node: before %+v, after %+v; want no change", what, before, after)
	}
}

func content(n int, seed string) []byte {
	b := bytes.Repeat([]byte(seed), n/len(seed)+1)
	return b[:n]
}

func digestOf(b []byte) string { return string(blob.FromBytes(b)) }

func (r response) errMessage() string {
	var b struct {
		Error struct{ Message string }
	}
	json.Unmarshal(r.body, &b)
	return b.Error.Message
}
