// Package meshtest runs real patchmesh nodes as separate processes, so
// that tests can cascade a hub through relays to edges, kill a node with
// SIGKILL, restart it on the same data and address, and read its log.
//
// It owns the processes and their files: the binary (built once per test
// binary), one directory per node with its config, data and log, and a
// loopback address per node that stays the same across restarts. It does
// not judge what the nodes do; tests check that through the HTTP API, as
// an operator would, with the helpers in api.go.
package meshtest

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/federation"
)

// Admin is the administrator every node is configured with, so that a test
// logs in without reading a bootstrap password off the console.
const (
	AdminUser     = "meshadmin"
	AdminPassword = "meshtest-admin-password"
)

// bcryptCost is the cheapest cost auth accepts: the hash only has to let a
// test log in, and a node checks it on every login.
const bcryptCost = 4

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error

	hashOnce sync.Once
	hashVal  string
	hashErr  error
)

// Main runs the tests of a package that uses meshtest and removes the
// binary built for them afterwards. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(meshtest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	return code
}

// Binary builds cmd/patchmesh once per test binary, on first use, and
// returns its path. PATCHMESH_E2E_BINARY names a prebuilt binary to use
// instead (e.g. the one `make build` made).
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("PATCHMESH_E2E_BINARY"); p != "" {
			buildBin, buildErr = filepath.Abs(p)
			return
		}
		buildDir, buildErr = os.MkdirTemp("", "patchmesh-meshtest-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "patchmesh")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", buildBin,
			"-ldflags", "-X main.version=meshtest", "github.com/patchmesh/patchmesh/cmd/patchmesh")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build cmd/patchmesh: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

func adminHash(t testing.TB) string {
	t.Helper()
	hashOnce.Do(func() { hashVal, hashErr = auth.HashPassword(AdminPassword, bcryptCost) })
	if hashErr != nil {
		t.Fatal(hashErr)
	}
	return hashVal
}

// Addresses. Every node gets its own loopback address, 127.0.0.2 and up,
// so that nodes of tests running in parallel never share a host, and a
// port found free at creation that the node keeps across restarts.
var (
	addrMu   sync.Mutex
	nextHost = 2
)

func freeAddr(t testing.TB) string {
	t.Helper()
	addrMu.Lock()
	host := nextHost
	nextHost++
	if nextHost > 254 {
		nextHost = 2
	}
	addrMu.Unlock()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", host))
	if err != nil {
		t.Fatalf("meshtest: find a free port on 127.0.0.%d: %v", host, err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Mesh is the set of nodes of one test. Its hub signing key is made before
// any node starts, so downstream configs can pin it from the start.
type Mesh struct {
	t   testing.TB
	dir string

	// HubKeyPath is the hub's signing key file; HubPublicKey its public
	// key as sync.trust takes it.
	HubKeyPath   string
	HubPublicKey string

	mu    sync.Mutex
	nodes []*Node
}

// New returns an empty mesh under a fresh temporary directory. When the
// test ends every node still running is killed; if the test failed, the
// tail of every node's log is printed.
func New(t testing.TB) *Mesh {
	t.Helper()
	m := &Mesh{t: t, dir: t.TempDir()}
	m.HubKeyPath = filepath.Join(m.dir, "hub.key")
	key, _, err := federation.LoadOrCreateKey(m.HubKeyPath)
	if err != nil {
		t.Fatalf("meshtest: hub key: %v", err)
	}
	m.HubPublicKey = federation.FormatPublicKey(key.Public().(ed25519.PublicKey))
	// Registered after TempDir's own cleanup, so it runs before it: the
	// processes are gone before their directories are removed.
	t.Cleanup(m.cleanup)
	return m
}

// Dir is the mesh's working directory.
func (m *Mesh) Dir() string { return m.dir }

func (m *Mesh) cleanup() {
	m.mu.Lock()
	nodes := append([]*Node(nil), m.nodes...)
	m.mu.Unlock()
	for _, n := range nodes {
		n.killQuietly()
	}
	if !m.t.Failed() {
		return
	}
	for _, n := range nodes {
		m.t.Logf("--- node %s (%s, %s): last %d log lines of %s ---\n%s",
			n.Name, n.Role, n.URL, tailLines, n.logPath, n.LogTail(tailLines))
	}
}

// tailLines is how much of each node's log a failed test shows.
const tailLines = 40

// cleanEnv is the test process's environment without PATCHMESH_ or XDG_
// variables, so that a developer's settings cannot leak into a node.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATCHMESH_") || strings.HasPrefix(kv, "XDG_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
