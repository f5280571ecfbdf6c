package node

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/internal/pgtest"
)

// syncBuffer is a bytes.Buffer that the node's goroutines and the test can
// share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is a node started by startNode.
type running struct {
	node    *Node
	url     string
	console *syncBuffer
	log     *syncBuffer
	stop    func() error
}

// testConfig is a node on a free loopback port with its data in a fresh
// directory, and a cheap bcrypt cost so that tests stay quick.
func testConfig(t *testing.T) Config {
	c := Defaults()
	c.Node.Name = "test-node"
	c.Node.DataDir = t.TempDir()
	c.Server.Listen = "127.0.0.1:0"
	c.Server.ShutdownTimeout = 10 * time.Second
	c.Auth.BcryptCost = 4
	return c
}

// startNode runs a node until the test ends or stop is called; stop
// returns what Run returned.
func startNode(t *testing.T, cfg Config) *running {
	t.Helper()
	r := &running{console: &syncBuffer{}, log: &syncBuffer{}}
	log, err := NewLogger(LogConfig{Level: "debug", Format: "json"}, r.log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := New(ctx, cfg, log, WithConsole(r.console))
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	r.node, r.url = n, n.URL()
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	var runErr error
	r.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = errors.New("Run did not return within 30s of cancel")
			}
		})
		return runErr
	}
	t.Cleanup(func() { r.stop() })
	return r
}

var passwordRE = regexp.MustCompile(`password: (\S+)`)

func bootstrapPassword(t *testing.T, console string) string {
	t.Helper()
	m := passwordRE.FindStringSubmatch(console)
	if m == nil {
		t.Fatalf("want the bootstrap password on the console, got %q", console)
	}
	return m[1]
}

var client = &http.Client{Timeout: 20 * time.Second}

func getJSON(t *testing.T, req *http.Request, wantStatus int, out any) {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s %s: want status %d, got %d: %s", req.Method, req.URL.Path, wantStatus, resp.StatusCode, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", req.Method, req.URL.Path, body, err)
		}
	}
}

// login logs in over HTTP Basic and returns the macaroon.
func login(t *testing.T, base, user, password string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/admin/login", nil)
	req.SetBasicAuth(user, password)
	var out struct {
		Macaroon string `json:"macaroon"`
	}
	getJSON(t, req, http.StatusOK, &out)
	if out.Macaroon == "" {
		t.Fatal("login: want a macaroon, got none")
	}
	return out.Macaroon
}

// checkServing asserts that the node's store and blobs are healthy and
// that an admin can log in and list tiers.
func checkServing(t *testing.T, base, user, password string) {
	t.Helper()
	var status struct {
		Store struct{ OK bool } `json:"store"`
		Blobs struct{ OK bool } `json:"blobs"`
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/debug/status", nil)
	getJSON(t, req, http.StatusOK, &status)
	if !status.Store.OK || !status.Blobs.OK {
		t.Fatalf("/debug/status: want store and blobs ok, got %+v", status)
	}
	var info struct {
		Node string `json:"node"`
		Role string `json:"role"`
	}
	req, _ = http.NewRequest(http.MethodGet, base+"/debug/info", nil)
	getJSON(t, req, http.StatusOK, &info)
	if info.Node != "test-node" || info.Role != RoleHub {
		t.Fatalf("/debug/info: want node test-node, role hub, got %+v", info)
	}

	mac := login(t, base, user, password)
	req, _ = http.NewRequest(http.MethodGet, base+"/v1/admin/tiers", nil)
	req.Header.Set("Authorization", "Macaroon "+mac)
	var tiers struct {
		Tiers []struct{ Name string } `json:"tiers"`
	}
	getJSON(t, req, http.StatusOK, &tiers)
	if len(tiers.Tiers) == 0 || tiers.Tiers[0].Name != "edge" {
		t.Fatalf("tiers: want the default tiers starting with edge, got %+v", tiers.Tiers)
	}
}

// A fresh node bootstraps one admin, serves, stops cleanly, and on its
// next start keeps that admin instead of making another.
func testLifecycle(t *testing.T, cfg Config) *running {
	first := startNode(t, cfg)
	if !waitFor(func() bool { return strings.Contains(first.console.String(), "patchmesh listening on "+first.url) }, 10*time.Second) {
		t.Errorf("console: want %q, got %q", "patchmesh listening on "+first.url, first.console.String())
	}
	if _, port, _ := net.SplitHostPort(first.node.Addr()); port == "0" {
		t.Fatalf("Addr: want the real port of a :0 listener, got %s", first.node.Addr())
	}
	password := bootstrapPassword(t, first.console.String())
	checkServing(t, first.url, auth.BootstrapUser, password)

	if err := first.stop(); err != nil {
		t.Fatalf("Run after cancel: want nil (clean drain), got %v", err)
	}
	if strings.Contains(first.log.String(), password) {
		t.Fatal("log: want the bootstrap password never logged, found it")
	}
	for _, event := range []string{`"event":"admin_bootstrap"`, `"msg":"bootstrap_password_printed"`, `"msg":"node_listening"`, `"msg":"node_stopped"`} {
		if !strings.Contains(first.log.String(), event) {
			t.Errorf("log: want an %s event, got:\n%s", event, first.log.String())
		}
	}
	if _, err := client.Get(first.url + "/debug/info"); err == nil {
		t.Fatal("after stop: want the port closed, a request succeeded")
	}

	second := startNode(t, cfg)
	if strings.Contains(second.console.String(), "password:") || strings.Contains(second.log.String(), "bootstrap") {
		t.Fatalf("second start: want no new bootstrap admin, console %q", second.console.String())
	}
	checkServing(t, second.url, auth.BootstrapUser, password)
	if err := second.stop(); err != nil {
		t.Fatalf("second Run: want a clean stop, got %v", err)
	}
	return first
}

func TestNodeLifecycleSQLiteAndFS(t *testing.T) {
	cfg := testConfig(t)
	testLifecycle(t, cfg)
}

func TestNodeLifecyclePostgres(t *testing.T) {
	dsn := pgtest.New(t)
	// Trust auth ignores the password; it is here to prove that the DSN's
	// password never reaches the log.
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	const secret = "pm-test-secret-7f3a"
	u.User = url.UserPassword(u.User.Username(), secret)

	cfg := testConfig(t)
	cfg.Store.Driver = DriverPostgres
	cfg.Store.DSN = u.String()
	cfg.Store.MaxConns = 4
	cfg.Blobs.Driver = DriverPostgres
	cfg.Blobs.ChunkSize = 64 << 10
	first := testLifecycle(t, cfg)
	if strings.Contains(first.log.String(), secret) {
		t.Fatal("log: want the DSN password never logged, found it")
	}
	if !strings.Contains(first.log.String(), `"driver":"postgres"`) {
		t.Errorf("log: want the store and blob drivers logged as postgres, got:\n%s", first.log.String())
	}
}

// Configured admins replace the bootstrap: nothing is created or printed.
func TestConfiguredAdminSkipsBootstrap(t *testing.T) {
	hash, err := auth.HashPassword("correct horse", 4)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Auth.Admins = []auth.Admin{{Name: "alice", PasswordHash: hash}}
	r := startNode(t, cfg)
	if strings.Contains(r.console.String(), "password:") {
		t.Fatalf("console: want no bootstrap password with an admin configured, got %q", r.console.String())
	}
	checkServing(t, r.url, "alice", "correct horse")
}

// A request in flight when the node is told to stop still completes.
func TestRunDrainsRequestsInFlight(t *testing.T) {
	cfg := testConfig(t)
	r := startNode(t, cfg)
	mac := login(t, r.url, auth.BootstrapUser, bootstrapPassword(t, r.console.String()))

	content := bytes.Repeat([]byte("patch"), 1000)
	digest := blob.FromBytes(content).String()
	q := url.Values{"digest": {digest}, "kernel": {"5.15.0-107.117-generic"}, "arch": {"x86_64"}, "version": {"107.1"}}
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, r.url+"/v1/admin/patches?"+q.Encode(), pr)
	req.Header.Set("Authorization", "Macaroon "+mac)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.ContentLength = int64(len(content))

	type result struct {
		status int
		err    error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		res <- result{status: resp.StatusCode}
	}()
	// Half the body is sent and the request has been authorized (its
	// security event is logged), so it is in the handler; then the node is
	// told to stop while the upload is still running.
	if _, err := pw.Write(content[:len(content)/2]); err != nil {
		t.Fatal(err)
	}
	if !waitFor(func() bool { return strings.Contains(r.log.String(), `"route":"/v1/admin/patches"`) }, 10*time.Second) {
		t.Fatalf("want the upload authorized within 10s, log:\n%s", r.log.String())
	}
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	if !waitFor(func() bool { return strings.Contains(r.log.String(), "node_draining") }, 10*time.Second) {
		t.Fatal("want the node to start draining within 10s")
	}
	if _, err := pw.Write(content[len(content)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	select {
	case got := <-res:
		if got.err != nil || got.status != http.StatusCreated {
			t.Logf("log:\n%s", r.log.String())
			t.Fatalf("upload during drain: want 201, got %d %v", got.status, got.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("upload during drain: no answer within 20s")
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run: want a clean drain, got %v", err)
	}
}

func waitFor(cond func() bool, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

func TestNewRejects(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	tests := []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"invalid config", func(c *Config) { c.Node.Role = "leader" }, "node.role"},
		{"port in use", func(c *Config) { c.Server.Listen = taken.Addr().String() }, "listen on " + taken.Addr().String()},
		{"unreachable postgres", func(c *Config) {
			c.Store.Driver, c.Store.DSN = DriverPostgres, "postgres://pm:hunter2@127.0.0.1:1/pm?sslmode=disable&connect_timeout=2"
		}, "open postgres store"},
		{"missing TLS files", func(c *Config) {
			c.Server.TLSCert, c.Server.TLSKey = "/nonexistent/cert.pem", "/nonexistent/key.pem"
		}, "TLS certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			tt.change(&cfg)
			console := &syncBuffer{}
			n, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler), WithConsole(console))
			if err == nil {
				n.Close()
				t.Fatalf("want an error mentioning %q, got a node", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error mentioning %q, got %v", tt.want, err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("want the DSN password kept out of the error, got %v", err)
			}
			if console.String() != "" {
				t.Fatalf("want nothing printed by a node that failed to start, got %q", console.String())
			}
		})
	}
}

// writeSelfSigned writes a certificate and key for 127.0.0.1 and returns
// their paths and a pool that trusts the certificate.
func writeSelfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "patchmesh test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestNodeServesTLS12OrNewer(t *testing.T) {
	certFile, keyFile, pool := writeSelfSigned(t)
	cfg := testConfig(t)
	cfg.Server.TLSCert, cfg.Server.TLSKey = certFile, keyFile
	r := startNode(t, cfg)
	if !strings.HasPrefix(r.url, "https://") {
		t.Fatalf("URL: want https://, got %s", r.url)
	}

	tlsClient := func(maxVersion uint16) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			// MinVersion 1.0 so that the client offers old versions and
			// only the server can refuse them.
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: maxVersion},
		}}
	}
	resp, err := tlsClient(0).Get(r.url + "/debug/info")
	if err != nil {
		t.Fatalf("HTTPS request: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Fatalf("HTTPS: want 200 over TLS 1.2+, got %d (TLS %+v)", resp.StatusCode, resp.TLS)
	}
	_, err = tlsClient(tls.VersionTLS11).Get(r.url + "/debug/info")
	if err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("TLS 1.1 client: want the server to refuse the protocol version, got %v", err)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("Run: want a clean stop, got %v", err)
	}
}

// The node wires its store's timings, the API's request metrics and the Go
// runtime's into one /metrics page.
func TestNodeExportsMetrics(t *testing.T) {
	r := startNode(t, testConfig(t))
	checkServing(t, r.url, auth.BootstrapUser, bootstrapPassword(t, r.console.String()))
	resp, err := client.Get(r.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"patchmesh_http_request_duration_seconds_count",
		`patchmesh_store_query_duration_seconds_count{op="Tiers"`,
		"go_goroutines",
		"go_gc_heap_live_bytes",
		"process_open_fds",
		`go_sql_wait_count_total{db_name="patchmesh"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics: want %s, missing from:\n%.2000s", want, body)
		}
	}
}
