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
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/topology"
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
// so that nodes of tests running in parallel never share a host, and ports
// found free at creation that the node keeps across restarts.
var (
	addrMu   sync.Mutex
	nextHost = 2
)

// nextLoopback hands out the next loopback host, wrapping after .254.
func nextLoopback() string {
	addrMu.Lock()
	defer addrMu.Unlock()
	host := nextHost
	nextHost++
	if nextHost > 254 {
		nextHost = 2
	}
	return fmt.Sprintf("127.0.0.%d", host)
}

// freePort finds a port on host that is free for TCP and, with udp, for
// UDP too (gossip listens on both with one number).
func freePort(t testing.TB, host string, udp bool) string {
	t.Helper()
	for range 20 { // bounded: a TCP port whose UDP twin is taken is retried
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatalf("meshtest: find a free port on %s: %v", host, err)
		}
		addr := ln.Addr().String()
		if !udp {
			ln.Close()
			return addr
		}
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatalf("meshtest: no port free for both TCP and UDP on %s", host)
	return ""
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

	// Gossip, when set before nodes are added, turns gossip on for them
	// with this memberlist profile (local, lan or wan); see Spec.
	Gossip string
	// GossipKey is the mesh's gossip keyring (one base64 key), made by New.
	GossipKey string
	// poolKeys are the keys of the gossip pools nodes were put in
	// (Spec.Pools), by pool name, made as first asked for.
	poolKeys map[string]string
	// MTLS, when set before nodes are added, runs all node-to-node
	// traffic over peer listeners (mutual TLS): every node gets one, its
	// node key made before it starts, is admitted at the running hub and
	// pins the nodes added before it, and links to another node's URL
	// name its peer URL instead. New sets it, unless
	// PATCHMESH_MESH_MTLS=0 asks for a plain run (node-to-node traffic on
	// the main listeners, as a mesh without peer listeners runs); a test
	// that must run plain clears it before adding nodes, and says why.
	MTLS bool
	// harnessKey and harnessCert are the harness's own node identity,
	// pinned by every node and admitted at the hub once it has started
	// under MTLS.
	harnessKey      ed25519.PrivateKey
	harnessCert     *tls.Certificate
	harnessAdmitted bool

	mu    sync.Mutex
	nodes []*Node
}

// New returns an empty mesh under a fresh temporary directory. When the
// test ends every node still running is killed; if the test failed, the
// tail of every node's log is printed.
func New(t testing.TB) *Mesh {
	t.Helper()
	m := &Mesh{t: t, dir: t.TempDir(), MTLS: os.Getenv("PATCHMESH_MESH_MTLS") != "0"}
	m.HubKeyPath = filepath.Join(m.dir, "hub.key")
	key, _, err := federation.LoadOrCreateKey(m.HubKeyPath)
	if err != nil {
		t.Fatalf("meshtest: hub key: %v", err)
	}
	m.HubPublicKey = federation.FormatPublicKey(key.Public().(ed25519.PublicKey))
	gk, err := topology.NewKey()
	if err != nil {
		t.Fatalf("meshtest: gossip key: %v", err)
	}
	m.GossipKey = base64.StdEncoding.EncodeToString(gk)
	if m.harnessKey, m.harnessCert, err = newHarnessIdentity(); err != nil {
		t.Fatalf("meshtest: harness key: %v", err)
	}
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

// freePortIn is freePort for a node in network namespace netns, or in the
// test's own when netns is empty. The test process cannot listen inside a
// namespace, but one the test made is empty: any port there is free.
func freePortIn(t testing.TB, netns, host string, udp bool) string {
	t.Helper()
	if netns == "" {
		return freePort(t, host, udp)
	}
	return net.JoinHostPort(host, strconv.Itoa(20000+rand.IntN(40000)))
}

// poolKey is the key of the gossip pool named name, the same for every
// node of the mesh in that pool and different from every other pool's.
func (m *Mesh) poolKey(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k, ok := m.poolKeys[name]; ok {
		return k
	}
	gk, err := topology.NewKey()
	if err != nil {
		m.t.Fatalf("meshtest: gossip key of pool %s: %v", name, err)
	}
	if m.poolKeys == nil {
		m.poolKeys = map[string]string{}
	}
	m.poolKeys[name] = base64.StdEncoding.EncodeToString(gk)
	return m.poolKeys[name]
}

// poolSeeds is where a starting node joins its gossip pool pool: the
// first few running nodes of the mesh in that pool, as joinSeeds.
func (m *Mesh) poolSeeds(self *Node, pool string) []string {
	const seeds = 3
	m.mu.Lock()
	nodes := append([]*Node(nil), m.nodes...)
	m.mu.Unlock()
	out := []string{}
	for _, n := range nodes {
		addr := n.PoolAddrs[pool]
		if n == self || addr == "" || !n.Running() {
			continue
		}
		out = append(out, addr)
		if len(out) == seeds {
			break
		}
	}
	return out
}

// joinSeeds is where a starting node joins the gossip: the first few
// running nodes of the mesh, in the order they were added, that hold the
// mesh's key (a node given a wrong one is never a seed). The first node of a mesh finds none and starts the cluster; a node
// restarted later rejoins through whoever is up.
func (m *Mesh) joinSeeds(self *Node) []string {
	const seeds = 3
	m.mu.Lock()
	nodes := append([]*Node(nil), m.nodes...)
	m.mu.Unlock()
	var out []string
	for _, n := range nodes {
		if n == self || n.GossipAddr == "" || !n.Running() || !slices.Equal(n.Config.Gossip.Keys, []string{m.GossipKey}) {
			continue
		}
		out = append(out, n.GossipAddr)
		if len(out) == seeds {
			break
		}
	}
	return out
}
