package meshtest

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/node"
)

// Spec describes a node to add to a mesh.
type Spec struct {
	// Name is the node's name (node.name) and its directory's.
	Name string
	// Role is node.RoleHub, node.RoleRelay or node.RoleEdge; empty
	// means edge.
	Role string
	// Links are what a relay or edge pulls; none for the hub.
	Links []Link
	// DC is the node's data centre (node.datacenter); empty keeps the
	// default, dc1.
	DC string
	// GossipKey replaces the mesh's gossip key for this node (base64), to
	// test a node that holds the wrong one. Only with Mesh.Gossip set.
	GossipKey string
	// Pools puts the node in these gossip pools (gossip.pools) instead of
	// the mesh's one pool: each on a port of its own, with a key meshtest
	// makes per pool name, joined through the running nodes of that pool.
	// Only with Mesh.Gossip set.
	Pools []string
	// Host is the address the node listens on, HTTP and gossip; empty
	// gives it a loopback address of its own. Netns, if set, runs the
	// node inside that network namespace (ip netns exec), which the test
	// made and whose address Host must then be.
	Host  string
	Netns string
	// TLS serves the node's main listener over TLS with a certificate
	// meshtest makes for its address (cert.pem in its directory, which a
	// downstream can name as sync.ca_file); its URL is then https.
	TLS bool
	// Peer gives the node a peer listener (server.peer_listen): mutual
	// TLS between nodes, with node-to-node traffic refused elsewhere.
	// Links to a node with one should name its PeerURL.
	Peer bool
	// Unadmitted, under Mesh.MTLS, leaves the node out of meshtest's
	// admission at the hub (it still pins the nodes added before it): the
	// test admits it itself, as in a plain run, or plays a node that was
	// never admitted. Without an admission the node's peer certificate is
	// refused, so it can neither sync nor fetch blobs from other nodes.
	Unadmitted bool
	// Configure, if set, adjusts the config after meshtest's defaults and
	// before the file is written. A gossip.join it sets is kept; otherwise
	// meshtest chooses it at every start (see Node.Start).
	Configure func(*node.Config)
	// FixedJoin keeps gossip.join as the config has it at every start,
	// empty included, as a production hub runs: it started the pool, so
	// it joins nobody, even when restarted.
	FixedJoin bool
}

// Link is one sync link of a downstream node.
type Link struct {
	Tier      string
	HubTier   string
	Upstreams []Upstream
}

// Upstream is one upstream of a link. The token is written to a file the
// config names (token_file), as an operator is told to.
type Upstream struct {
	URL   string
	Token string
}

// Test timings: short enough that a test sees a failing link retry and a
// stopped node drain within seconds, long enough not to spin.
const (
	syncWait = 2 * time.Second
	retryMin = 100 * time.Millisecond
	retryMax = time.Second
	// HeartbeatEvery and StaleAfter: the hub signs often, and a link
	// turns stale within seconds, yet not before a heartbeat could have
	// crossed two hops of 2s long polls on a loaded machine.
	HeartbeatEvery  = 500 * time.Millisecond
	StaleAfter      = 10 * time.Second
	reportInterval  = time.Second
	shutdownTimeout = 5 * time.Second
	readyWithin     = 30 * time.Second
	exitWithin      = 30 * time.Second
)

// Node is one patchmesh node of a mesh: its files, its fixed address and,
// while it runs, its process.
type Node struct {
	m    *Mesh
	Name string
	Role string
	// URL is the node's base URL; it stays the same across restarts.
	URL string
	// Dir holds config.yaml, node.log and the data dir.
	Dir     string
	DataDir string
	// Config is what the node's config file says: meshtest's test
	// profile (2s long polls, retries from 100ms to 1s, a 5s drain,
	// heartbeats every 500ms and stale after 10s),
	// then the Spec.
	Config node.Config
	// GossipAddr is the node's gossip host:port, fixed across restarts;
	// empty with gossip off. With Spec.Pools, its first pool's.
	GossipAddr string
	// PoolAddrs are the node's gossip host:port by pool, with Spec.Pools.
	PoolAddrs map[string]string
	// PeerURL is the node's peer listener (https://host:port), fixed
	// across restarts; empty without Spec.Peer.
	PeerURL string

	cfgPath string
	logPath string
	netns   string
	// autoJoin says meshtest picks gossip.join at each start.
	autoJoin bool
	// mtlsKey is the node's public key under Mesh.MTLS.
	mtlsKey string

	mu       sync.Mutex
	proc     *process
	starts   int
	macaroon string
}

// process is one run of the binary.
type process struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// Add creates a node's directory and config file without starting it.
func (m *Mesh) Add(spec Spec) *Node {
	t := m.t
	t.Helper()
	if spec.Role == "" {
		spec.Role = node.RoleEdge
	}
	dir := filepath.Join(m.dir, spec.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("meshtest: %v", err)
	}
	host := spec.Host
	if host == "" {
		host = nextLoopback()
	}
	addr := freePortIn(t, spec.Netns, host, false)
	n := &Node{
		m: m, Name: spec.Name, Role: spec.Role, URL: "http://" + addr,
		Dir: dir, DataDir: filepath.Join(dir, "data"),
		cfgPath: filepath.Join(dir, "config.yaml"), logPath: filepath.Join(dir, "node.log"),
		netns: spec.Netns,
	}

	cfg := node.DefaultsWithEnv(func(string) string { return "" })
	cfg.Node.Name, cfg.Node.Role, cfg.Node.DataDir = spec.Name, spec.Role, n.DataDir
	cfg.Server.Listen = addr
	cfg.Server.ShutdownTimeout = shutdownTimeout
	cfg.Auth.Admins = []auth.Admin{{Name: AdminUser, PasswordHash: adminHash(t)}}
	cfg.Auth.BcryptCost = bcryptCost
	cfg.Sync.Wait = syncWait
	cfg.Sync.RetryMin = retryMin
	cfg.Sync.RetryMax = retryMax
	cfg.Sync.HeartbeatEvery = HeartbeatEvery
	cfg.Sync.StaleAfter = StaleAfter
	cfg.Reports.Interval = reportInterval
	if spec.Role == node.RoleHub {
		cfg.Sync.HubKey = m.HubKeyPath
	} else {
		cfg.Sync.Trust = []string{m.HubPublicKey}
	}
	for _, l := range spec.Links {
		lc := node.LinkConfig{Tier: l.Tier, HubTier: l.HubTier}
		for j, u := range l.Upstreams {
			tf := filepath.Join(dir, fmt.Sprintf("token-%s-%d", l.Tier, j))
			if err := os.WriteFile(tf, []byte(u.Token+"\n"), 0o600); err != nil {
				t.Fatalf("meshtest: %v", err)
			}
			// Loopback only, so plain http is allowed explicitly.
			lc.Upstreams = append(lc.Upstreams, node.UpstreamConfig{URL: u.URL, TokenFile: tf, AllowHTTP: true})
		}
		cfg.Sync.Links = append(cfg.Sync.Links, lc)
	}
	if spec.DC != "" {
		cfg.Node.Datacenter = spec.DC
	}
	if m.Gossip != "" {
		key := m.GossipKey
		if spec.GossipKey != "" {
			key = spec.GossipKey
		}
		cfg.Node.AdvertiseURL = n.URL
		cfg.Gossip.Profile = m.Gossip
		if len(spec.Pools) == 0 {
			n.GossipAddr = freePortIn(t, spec.Netns, host, true)
			cfg.Gossip.Bind = n.GossipAddr
			cfg.Gossip.Keys = []string{key}
		}
		n.PoolAddrs = map[string]string{}
		for _, p := range spec.Pools {
			addr := freePortIn(t, spec.Netns, host, true)
			n.PoolAddrs[p] = addr
			cfg.Gossip.Pools = append(cfg.Gossip.Pools, node.GossipPoolConfig{Name: p, Bind: addr, Keys: []string{m.poolKey(p)}})
		}
		if len(spec.Pools) > 0 {
			n.GossipAddr = n.PoolAddrs[spec.Pools[0]]
		}
	}
	if spec.TLS {
		certFile, keyFile := selfSignedCert(t, dir, host)
		cfg.Server.TLSCert, cfg.Server.TLSKey = certFile, keyFile
		n.URL = "https://" + addr
		if cfg.Node.AdvertiseURL != "" {
			cfg.Node.AdvertiseURL = n.URL
		}
	}
	if spec.Peer || m.MTLS {
		peerAddr := freePortIn(t, spec.Netns, host, false)
		cfg.Server.PeerListen = peerAddr
		n.PeerURL = "https://" + peerAddr
	}
	if m.MTLS {
		m.mtls(t, n, &cfg, !spec.Unadmitted)
	}
	if spec.Configure != nil {
		spec.Configure(&cfg)
	}
	n.autoJoin = m.Gossip != "" && !spec.FixedJoin && len(cfg.Gossip.Join) == 0 && !slices.ContainsFunc(cfg.Gossip.Pools, func(p node.GossipPoolConfig) bool { return len(p.Join) > 0 })
	n.Config = cfg
	n.writeConfig(t)

	m.mu.Lock()
	m.nodes = append(m.nodes, n)
	m.mu.Unlock()
	return n
}

// Start adds a node and starts it.
func (m *Mesh) Start(spec Spec) *Node {
	m.t.Helper()
	n := m.Add(spec)
	n.Start(m.t)
	return n
}

// writeConfig writes n.Config as the node's config file. Marshalling the
// node's own Config type keeps the file in step with the options the
// binary knows.
func (n *Node) writeConfig(t testing.TB) {
	t.Helper()
	b, err := yaml.Marshal(n.Config)
	if err != nil {
		t.Fatalf("meshtest: encode config of %s: %v", n.Name, err)
	}
	if err := os.WriteFile(n.cfgPath, b, 0o600); err != nil {
		t.Fatalf("meshtest: %v", err)
	}
}

// Start runs the node and waits until it answers /debug/info. Its output
// goes to node.log, appended to across restarts.
func (n *Node) Start(t testing.TB) {
	t.Helper()
	if n.autoJoin && !n.Running() {
		// Chosen now, not at Add: who is up to be joined changes as the
		// test kills and restarts nodes. Outside n.mu: joinSeeds takes
		// the other nodes' locks.
		if len(n.Config.Gossip.Pools) == 0 {
			n.Config.Gossip.Join = n.m.joinSeeds(n)
		}
		for i, p := range n.Config.Gossip.Pools {
			n.Config.Gossip.Pools[i].Join = n.m.poolSeeds(n, p.Name)
		}
		n.writeConfig(t)
	}
	// Before taking n.mu: a failed build ends the test, and the cleanup
	// that kills the nodes takes n.mu.
	bin := Binary(t)
	n.mu.Lock()
	if n.proc != nil {
		n.mu.Unlock()
		t.Fatalf("meshtest: %s is already running", n.Name)
	}
	n.starts++
	log, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		n.mu.Unlock()
		t.Fatalf("meshtest: %v", err)
	}
	fmt.Fprintf(log, "=== meshtest: start %d of %s at %s ===\n", n.starts, n.Name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(bin, "serve", "--config", n.cfgPath)
	if n.netns != "" {
		cmd = exec.Command("ip", "netns", "exec", n.netns, bin, "serve", "--config", n.cfgPath)
	}
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		n.mu.Unlock()
		t.Fatalf("meshtest: start %s: %v", n.Name, err)
	}
	p := &process{cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	n.proc = p
	n.mu.Unlock()
	n.waitReady(t, p)
	if n.m.MTLS && n.Role == node.RoleHub {
		n.m.admitHarness(t, n)
	}
}

func (n *Node) waitReady(t testing.TB, p *process) {
	t.Helper()
	deadline := time.Now().Add(readyWithin)
	c := &http.Client{Timeout: 2 * time.Second, Transport: harnessTransport}
	for {
		resp, err := c.Get(n.URL + "/debug/info")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			n.forget(p)
			t.Fatalf("meshtest: %s exited while starting (%v); log tail:\n%s", n.Name, p.err, n.LogTail(tailLines))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshtest: %s did not answer %s/debug/info within %v (last error %v)", n.Name, n.URL, readyWithin, err)
		}
	}
}

func (n *Node) forget(p *process) {
	n.mu.Lock()
	if n.proc == p {
		n.proc = nil
	}
	n.mu.Unlock()
}

// Running reports whether the node's process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// PID is the node's process ID, 0 when it is not running; benchmarks read
// its memory in /proc.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return 0
	}
	return n.proc.cmd.Process.Pid
}

// Stop sends SIGTERM and wants a clean exit (status 0) within 30s.
func (n *Node) Stop(t testing.TB) {
	t.Helper()
	p := n.running(t)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("meshtest: SIGTERM %s: %v", n.Name, err)
	}
	n.await(t, p, "SIGTERM")
	if p.err != nil {
		t.Fatalf("meshtest: %s after SIGTERM: want exit 0, got %v; log tail:\n%s", n.Name, p.err, n.LogTail(tailLines))
	}
}

// Kill sends SIGKILL, as a crash or a power cut would end the node, and
// waits for the process to be gone.
func (n *Node) Kill(t testing.TB) {
	t.Helper()
	p := n.running(t)
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("meshtest: SIGKILL %s: %v", n.Name, err)
	}
	n.await(t, p, "SIGKILL")
}

// Restart kills the node and starts it again on the same data.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.Kill(t)
	n.Start(t)
}

func (n *Node) running(t testing.TB) *process {
	t.Helper()
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		t.Fatalf("meshtest: %s is not running", n.Name)
	}
	select {
	case <-p.done:
		n.forget(p)
		t.Fatalf("meshtest: %s exited on its own (%v); log tail:\n%s", n.Name, p.err, n.LogTail(tailLines))
	default:
	}
	return p
}

func (n *Node) await(t testing.TB, p *process, sig string) {
	t.Helper()
	select {
	case <-p.done:
		n.forget(p)
	case <-time.After(exitWithin):
		t.Fatalf("meshtest: %s still running %v after %s", n.Name, exitWithin, sig)
	}
}

// killQuietly ends a node at the end of a test, whatever its state.
func (n *Node) killQuietly() {
	n.mu.Lock()
	p := n.proc
	n.proc = nil
	n.mu.Unlock()
	if p == nil {
		return
	}
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(exitWithin):
		n.m.t.Errorf("meshtest: %s (pid %d) still running after SIGKILL", n.Name, p.cmd.Process.Pid)
	}
}

// Log returns everything the node has written to its log, across restarts.
func (n *Node) Log() string {
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// LogTail returns the last k lines of the node's log.
func (n *Node) LogTail(k int) string {
	lines := strings.Split(strings.TrimRight(n.Log(), "\n"), "\n")
	if len(lines) > k {
		lines = lines[len(lines)-k:]
	}
	return strings.Join(lines, "\n")
}

// LogEvents returns the JSON log lines whose "event" attribute is event
// (the security events), decoded.
func (n *Node) LogEvents(event string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(n.Log()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	needle := []byte(`"event":"` + event + `"`)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("{")) || !bytes.Contains(line, needle) {
			continue
		}
		var e map[string]any
		if json.Unmarshal(line, &e) == nil && e["event"] == event {
			out = append(out, e)
		}
	}
	return out
}

// BlobFile is where the node's fs blob driver keeps a blob.
func (n *Node) BlobFile(digest string) string {
	h := blob.Digest(digest).Hex()
	return filepath.Join(n.Config.BlobPath(), "sha256", h[:2], h)
}

// mtls prepares n for a mesh run over mutual TLS (Mesh.MTLS): its node
// key now, its admission at the hub, its pins, its links' peer URLs.
func (m *Mesh) mtls(t testing.TB, n *Node, cfg *node.Config, admit bool) {
	t.Helper()
	key, _, err := federation.LoadOrCreateNodeKey(filepath.Join(n.DataDir, "node.key"))
	if err != nil {
		t.Fatalf("meshtest: node key: %v", err)
	}
	pub := federation.FormatPublicKey(key.Public().(ed25519.PublicKey))
	m.mu.Lock()
	others := append([]*Node(nil), m.nodes...)
	harness := m.harnessKey
	m.mu.Unlock()
	// The harness's key too: a test proxy between nodes presents it
	// (ServeProxy).
	cfg.Sync.PeerKeys = append(cfg.Sync.PeerKeys, federation.FormatPublicKey(harness.Public().(ed25519.PublicKey)))
	for _, o := range others {
		if o.mtlsKey != "" {
			cfg.Sync.PeerKeys = append(cfg.Sync.PeerKeys, o.mtlsKey)
		}
		for i := range cfg.Sync.Links {
			for j, u := range cfg.Sync.Links[i].Upstreams {
				if strings.TrimRight(u.URL, "/") == o.URL && o.PeerURL != "" {
					cfg.Sync.Links[i].Upstreams[j].URL = o.PeerURL
				}
			}
		}
		if admit && o.Role == node.RoleHub && o.Running() && n.Role != node.RoleHub {
			o.AdminCall(t, http.MethodPost, "/v1/admin/nodes", map[string]any{"name": n.Name, "key": pub, "urls": []string{n.URL}}, nil)
		}
	}
	n.mtlsKey = pub
}

// selfSignedCert writes a certificate and key for host into dir.
func selfSignedCert(t testing.TB, dir, host string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(host)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// harnessName is the node name the harness's own key is admitted under
// (Mesh.MTLS), so that a test's sync calls reach a node's peer listener as
// its downstreams' do.
const harnessName = "meshtest-harness"

// admitHarness admits the harness's key (made by New) at hub, once per
// mesh, when the hub has started.
func (m *Mesh) admitHarness(t testing.TB, hub *Node) {
	t.Helper()
	m.mu.Lock()
	done := m.harnessAdmitted
	m.harnessAdmitted = true
	key := m.harnessKey
	m.mu.Unlock()
	if done {
		return
	}
	hub.AdminCall(t, http.MethodPost, "/v1/admin/nodes", map[string]any{"name": harnessName,
		"key": federation.FormatPublicKey(key.Public().(ed25519.PublicKey)), "urls": []string{"http://127.0.0.1:1"}}, nil)
}

// newHarnessIdentity makes the harness's node key and certificate.
func newHarnessIdentity() (ed25519.PrivateKey, *tls.Certificate, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	cert, err := federation.NodeCertificate(key, harnessName, time.Now())
	if err != nil {
		return nil, nil, err
	}
	return key, &cert, nil
}

// harnessPeer is the client to send a call to n's peer listener with,
// under Mesh.MTLS, for what nodes send each other there (sync calls, and
// blob fetches with a sync token); nil for everything else.
func (m *Mesh) harnessPeer(n *Node, path, cred string) *http.Client {
	if n.PeerURL == "" || !m.MTLS {
		return nil
	}
	if !strings.HasPrefix(path, "/v1/sync/") && !(strings.HasPrefix(path, "/v1/blobs/") && strings.HasPrefix(cred, "Bearer pms_")) {
		return nil
	}
	m.mu.Lock()
	cert, admitted := m.harnessCert, m.harnessAdmitted
	m.mu.Unlock()
	if !admitted {
		return nil
	}
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cert},
			// The harness dials only processes it started.
			InsecureSkipVerify: true}, DisableKeepAlives: true}}
}
