package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Flags override the environment, which overrides the file, which
// overrides the defaults — option by option.
func TestServeConfigPrecedence(t *testing.T) {
	file := writeFile(t, "c.yaml", `
server:
  listen: 127.0.0.1:1001
  idle_timeout: 1m
node:
  data_dir: /from/file
  role: relay
sync:
  trust: [ed25519:ei7gEASb__yzkdzFAkJeOQyoLb6dg7H4qpSDVYX_t2o]
  links:
    - tier: stable
      upstreams: [{url: "http://127.0.0.1:1000", token: pms_0123456789abcdef_x, allow_http: true}]
log:
  level: debug
`)
	env := map[string]string{
		"PATCHMESH_SERVER_LISTEN": "127.0.0.1:1002",
		"PATCHMESH_NODE_DATA_DIR": "/from/env",
		"PATCHMESH_LOG_FORMAT":    "text",
	}
	cfg, _, err := serveConfig([]string{"--config", file, "--listen", "127.0.0.1:1003"}, envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ option, got, want string }{
		{"server.listen (flag over env over file)", cfg.Server.Listen, "127.0.0.1:1003"},
		{"node.data_dir (env over file)", cfg.Node.DataDir, "/from/env"},
		{"node.role (file over default)", cfg.Node.Role, "relay"},
		{"log.level (file over default)", cfg.Log.Level, "debug"},
		{"log.format (env over default)", cfg.Log.Format, "text"},
		{"server.idle_timeout (file)", cfg.Server.IdleTimeout.String(), "1m0s"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: want %s, got %s", c.option, c.want, c.got)
		}
	}

	cfg, _, err = serveConfig([]string{"--data-dir", "/from/flag", "--log-level", "warn"},
		envMap(map[string]string{"PATCHMESH_CONFIG": file, "PATCHMESH_LOG_LEVEL": "error"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Node.Role != "relay" {
		t.Errorf("PATCHMESH_CONFIG: want the file it names loaded (role relay), got role %s", cfg.Node.Role)
	}
	if cfg.Node.DataDir != "/from/flag" || cfg.Log.Level != "warn" {
		t.Errorf("flags: want data dir /from/flag and level warn, got %s and %s", cfg.Node.DataDir, cfg.Log.Level)
	}
}

func TestServeRejectsBadInvocations(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"--listn", "x"}, nil, "listn"},
		{"stray argument", []string{"now"}, nil, "no arguments"},
		{"missing config file", []string{"--config", "/nonexistent/patchmesh.yaml"}, nil, "/nonexistent/patchmesh.yaml"},
		{"malformed environment", nil, map[string]string{"PATCHMESH_STORE_MAX_CONNS": "lots"}, "PATCHMESH_STORE_MAX_CONNS"},
		{"invalid flag value", []string{"--log-level", "loud"}, nil, "log.level"},
		{"invalid listen", []string{"--listen", "nowhere"}, nil, "server.listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runServe(context.Background(), tt.args, envMap(tt.env), &stdout, &stderr)
			if code != exitUsage {
				t.Fatalf("want exit %d (usage), got %d; stderr %s", exitUsage, code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Fatalf("stderr: want it to mention %q, got %q", tt.want, stderr.String())
			}
		})
	}
}

func TestServeHelpListsEnvironment(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runServe(context.Background(), []string{"--help"}, envMap(nil), &stdout, &stderr); code != exitOK {
		t.Fatalf("--help: want exit 0, got %d", code)
	}
	for _, want := range []string{"-listen host:port", "-data-dir dir", "-log-level", "-config file", "PATCHMESH_STORE_DSN (store.dsn)"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("--help: want %q in the help on stdout, got:\n%s", want, stdout.String())
		}
	}
}

func TestServePrintConfigHidesDSNPassword(t *testing.T) {
	var stdout, stderr bytes.Buffer
	env := map[string]string{
		"PATCHMESH_STORE_DRIVER": "postgres",
		"PATCHMESH_STORE_DSN":    "postgres://pm:hunter2@db.example/pm",
	}
	if code := runServe(context.Background(), []string{"--print-config"}, envMap(env), &stdout, &stderr); code != exitOK {
		t.Fatalf("want exit 0, got %d: %s", code, stderr.String())
	}
	out := stdout.String()
	if strings.Contains(out, "hunter2") || !strings.Contains(out, "db.example/pm") || !strings.Contains(out, "driver: postgres") {
		t.Fatalf("want the effective config with the DSN password hidden, got:\n%s", out)
	}
}

// lockedBuffer is written by the node's goroutines while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var listeningRE = regexp.MustCompile(`patchmesh listening on (http://\S+)`)

// waitListening returns the URL a node printed, waiting at most limit.
func waitListening(t *testing.T, stderr interface{ String() string }, limit time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if m := listeningRE.FindStringSubmatch(stderr.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %q on stderr within %v, got:\n%s", "patchmesh listening on", limit, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With nothing but a data dir, serve runs a node on the embedded defaults,
// says where it listens, and exits 0 after draining when its context ends.
func TestServeRunsAndDrains(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"PATCHMESH_DATA_DIR": dir, "PATCHMESH_AUTH_BCRYPT_COST": "4"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &lockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- runServe(ctx, []string{"--listen", "127.0.0.1:0"}, envMap(env), &bytes.Buffer{}, stderr)
	}()
	url := waitListening(t, stderr, 30*time.Second)

	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url + "/debug/info")
	if err != nil {
		t.Fatal(err)
	}
	var info struct{ Version, Role string }
	err = json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if err != nil || info.Version != version || info.Role != "hub" {
		t.Fatalf("/debug/info: want version %s role hub, got %+v (%v)", version, info, err)
	}
	if !strings.Contains(stderr.String(), "password: ") {
		t.Errorf("stderr: want the bootstrap password box, got:\n%s", stderr.String())
	}
	// The default data dir came from PATCHMESH_DATA_DIR: the embedded
	// store and the blob dir live there.
	for _, p := range []string{"patchmesh.db", "blobs"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("want %s in the data dir: %v", p, err)
		}
	}

	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("after cancel: want exit 0, got %d; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return within 30s of cancel")
	}
	if !strings.Contains(stderr.String(), `"msg":"node_stopped"`) {
		t.Errorf("log: want node_stopped after the drain, got:\n%s", stderr.String())
	}
}

func TestServeFailsOnTakenPort(t *testing.T) {
	first := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := map[string]string{"PATCHMESH_DATA_DIR": t.TempDir(), "PATCHMESH_AUTH_BCRYPT_COST": "4"}
	done := make(chan int, 1)
	go func() {
		done <- runServe(ctx, []string{"--listen", "127.0.0.1:0"}, envMap(env), &bytes.Buffer{}, first)
	}()
	url := waitListening(t, first, 30*time.Second)
	addr := strings.TrimPrefix(url, "http://")

	var stderr bytes.Buffer
	env2 := map[string]string{"PATCHMESH_DATA_DIR": t.TempDir()}
	if code := runServe(context.Background(), []string{"--listen", addr}, envMap(env2), &bytes.Buffer{}, &stderr); code != exitServer {
		t.Fatalf("second node on %s: want exit %d, got %d", addr, exitServer, code)
	}
	if !strings.Contains(stderr.String(), "listen on "+addr) {
		t.Fatalf("stderr: want the taken address named, got %q", stderr.String())
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("first node did not stop within 30s")
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("version: want exit 0, got %d", code)
	}
	if !strings.HasPrefix(stdout.String(), "patchmesh "+version+" (go") {
		t.Fatalf("version: want %q first, got %q", "patchmesh "+version+" (go", stdout.String())
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"version", "--output", "json"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("version --output json: want exit 0, got %d", code)
	}
	var b buildInfo
	if err := json.Unmarshal(stdout.Bytes(), &b); err != nil || b.Version != version || !strings.HasPrefix(b.GoVersion, "go") {
		t.Fatalf("version --output json: want version %s and a Go version, got %q (%v)", version, stdout.String(), err)
	}
}

func TestUnknownCommandIsUsageError(t *testing.T) {
	for _, args := range [][]string{nil, {"serv"}, {"version", "--output", "xml"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != exitUsage {
			t.Errorf("%q: want exit %d, got %d", args, exitUsage, code)
		}
		if stderr.Len() == 0 {
			t.Errorf("%q: want usage on stderr, got nothing", args)
		}
	}
}
