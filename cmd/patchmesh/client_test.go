package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/client"
	"github.com/patchmesh/patchmesh/federation"
)

const testMachineID = "0123456789abcdef0123456789abcdef"

// machine is one client machine: a state directory and how to run
// `patchmesh client` on it.
type machine struct {
	t        *testing.T
	node     *testNode
	stateDir string
	// uname stands in for the running system's uname.
	uname func() (string, string, error)
	// env is the client's environment.
	env map[string]string
}

func newMachine(t *testing.T, n *testNode) *machine {
	m := &machine{t: t, node: n, stateDir: filepath.Join(t.TempDir(), "state"),
		uname: func() (string, string, error) { return nodeKernel, nodeArch, nil },
		env:   map[string]string{"PATCHMESH_CLIENT_ALLOW_HTTP": "1"}}
	if n != nil {
		m.env["PATCHMESH_HUB_KEY"] = n.hubKey
	}
	return m
}

// getenv is the machine's environment: the node's hub key pinned and
// plain http allowed, as the test node is on loopback http.
func (m *machine) getenv(k string) string { return m.env[k] }

// run runs `patchmesh client` with the machine's state dir.
func (m *machine) run(stdin string, args ...string) result {
	m.t.Helper()
	var stdout, stderr bytes.Buffer
	c := &clientCLI{stdin: strings.NewReader(stdin), stdout: &stdout, stderr: &stderr, geteuid: func() int { return 1000 },
		uname:      m.uname,
		getenv:     m.getenv,
		uptimeFile: filepath.Join(m.t.TempDir(), "no-uptime")}
	code := c.run(context.Background(), append([]string{"--state-dir", m.stateDir}, args...))
	return result{code, stdout.String(), stderr.String()}
}

// authToken makes an auth token on tier with the admin tool.
func authToken(t *testing.T, n *testNode, tier string) string {
	t.Helper()
	r := n.mustAdmin("auth-tokens", "add", tier, "fleet-"+tier, "--output", "json")
	var out struct{ Token string }
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("auth-tokens add: %v", err)
	}
	return out.Token
}

func (m *machine) register(token string) {
	m.t.Helper()
	r := m.run("", "register", token, "--server", m.node.srv.URL, "--machine-id", testMachineID, "--kernel", nodeKernel, "--arch", nodeArch)
	if r.code != exitOK {
		m.t.Fatalf("register: exit %d, stderr %s", r.code, r.stderr)
	}
}

func (m *machine) refresh(args ...string) result {
	m.t.Helper()
	return m.run("", append([]string{"refresh", "--kernel", nodeKernel, "--arch", nodeArch}, args...)...)
}

func TestClientRegisterSavesPrivateState(t *testing.T) {
	n := newTestNode(t)
	n.login()
	m := newMachine(t, n)
	token := authToken(t, n, "beta")

	// The token may come on standard input, kept out of the process list.
	r := m.run(token+"\n", "register", "-", "--server", n.srv.URL, "--machine-id", testMachineID, "--kernel", nodeKernel, "--arch", nodeArch)
	if r.code != exitOK {
		t.Fatalf("register: exit %d, stderr %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "tier beta") {
		t.Errorf("register output = %q, want the tier", r.stdout)
	}
	if got := fileMode(t, m.stateDir); got != 0o700 {
		t.Errorf("state dir mode = %o, want 700", got)
	}
	statePath := filepath.Join(m.stateDir, client.StateFile)
	if got := fileMode(t, statePath); got != 0o600 {
		t.Errorf("state file mode = %o, want 600", got)
	}
	raw, _ := os.ReadFile(statePath)
	if bytes.Contains(raw, []byte(testMachineID)) {
		t.Error("the state file holds the raw machine ID")
	}
	st, err := client.LoadState(m.stateDir)
	mt := st.Registrations[n.srv.URL].MachineToken
	if err != nil || st.Tier != "beta" || st.Server != n.srv.URL || !strings.HasPrefix(mt, "pmm_") || !strings.HasPrefix(st.Credential, "pmc_") ||
		bytes.Contains(raw, []byte(token)) {
		t.Errorf("state = %+v, %v; want tier beta, the server, a machine token there and a credential, not the auth token", st, err)
	}
	if strings.Contains(r.stdout+r.stderr, mt) || strings.Contains(r.stdout+r.stderr, strings.SplitN(token, "_", 3)[2]) {
		t.Errorf("register printed a token: %q %q", r.stdout, r.stderr)
	}

	s := m.run("", "status", "--output", "json")
	var got catalog.Machine
	if err := json.Unmarshal([]byte(s.stdout), &got); err != nil || got.Tier != "beta" || got.Kernel != nodeKernel || got.ID != st.MachineID {
		t.Errorf("status --output json = %s (%v), want the machine on beta", s.stdout, err)
	}
	if s := m.run("", "status"); s.code != exitOK || !strings.Contains(s.stdout, st.MachineID) {
		t.Errorf("status: exit %d, stdout %q", s.code, s.stdout)
	}
}

func TestClientRegisterRefused(t *testing.T) {
	n := newTestNode(t)
	n.login()
	m := newMachine(t, n)
	token := authToken(t, n, "edge")
	n.mustAdmin("auth-tokens", "revoke", strings.Split(token, "_")[1])

	r := m.run("", "register", token, "--server", n.srv.URL, "--machine-id", testMachineID, "--kernel", nodeKernel, "--arch", nodeArch)
	if r.code != exitAuth || !strings.Contains(r.stderr, "unauthorized") || !strings.Contains(r.stderr, "revoked or expired; ask for a new one") {
		t.Errorf("register with a revoked token: exit %d, stderr %q; want %d, unauthorized, and what it means", r.code, r.stderr, exitAuth)
	}
	// Under --output json the refusal is the error envelope, with the
	// node's code and the exit code.
	r = m.run("", "register", token, "--server", n.srv.URL, "--machine-id", testMachineID, "--kernel", nodeKernel, "--arch", nodeArch, "--output", "json")
	var body errorBody
	if err := json.Unmarshal([]byte(r.stderr), &body); err != nil || body.Error.Code != "unauthorized" || body.Error.Status != 401 || body.Error.ExitCode != exitAuth || r.code != exitAuth {
		t.Errorf("register --output json with a revoked token: exit %d, stderr %s (%v); want the envelope, unauthorized, 401, exit %d", r.code, r.stderr, err, exitAuth)
	}
	if _, err := os.Stat(filepath.Join(m.stateDir, client.StateFile)); err == nil {
		t.Error("a refused registration left a state file")
	}
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"not registered", []string{"status"}, exitAuth},
		{"no token", []string{"register", "--server", n.srv.URL}, exitUsage},
		{"not an auth token", []string{"register", "pmm_x", "--server", n.srv.URL}, exitUsage},
		{"no server", []string{"register", token}, exitUsage},
		{"unknown command", []string{"frob"}, exitUsage},
	} {
		if r := m.run("", tc.args...); r.code != tc.want {
			t.Errorf("%s: exit %d, want %d; stderr %s", tc.name, r.code, tc.want, r.stderr)
		}
	}
}

func TestClientRefreshStates(t *testing.T) {
	n := newTestNode(t)
	n.login()
	m := newMachine(t, n)
	m.register(authToken(t, n, "edge"))

	// Nothing uploaded yet.
	r := m.refresh()
	if r.code != exitOK || !strings.Contains(r.stdout, "Checked in: nothing-to-apply.") {
		t.Fatalf("refresh with no patch: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	content := []byte("live patch for 107.117")
	path, digest := writePatchFile(t, content)
	n.mustAdmin("patches", "upload", path, "--kernel", nodeKernel, "--arch", nodeArch, "--version", "107.1")
	kept := filepath.Join(m.stateDir, client.PatchDir, strings.TrimPrefix(digest, "sha256:"))

	hookOut := filepath.Join(t.TempDir(), "hook.env")
	for _, tc := range []struct {
		name  string
		hook  []string
		code  int
		state catalog.MachineState
	}{
		{"no hook", nil, exitOK, catalog.StateUnapplied},
		{"hook succeeds", []string{"--apply-hook", `echo "$PATCHMESH_PATCH_FILE $PATCHMESH_PATCH_VERSION $PATCHMESH_PATCH_DIGEST" > ` + hookOut}, exitOK, catalog.StateApplied},
		{"hook fails", []string{"--apply-hook", "echo cannot apply >&2; exit 7"}, exitServer, catalog.StateApplyFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := m.refresh(append(tc.hook, "--output", "json")...)
			if r.code != tc.code {
				t.Fatalf("refresh: exit %d, want %d; stderr %s", r.code, tc.code, r.stderr)
			}
			var out struct {
				State   catalog.MachineState `json:"state"`
				Patch   *catalog.Patch       `json:"patch"`
				Path    string               `json:"path"`
				Machine catalog.Machine      `json:"machine"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
				t.Fatalf("refresh --output json: %v\n%s", err, r.stdout)
			}
			if out.State != tc.state || out.Machine.State != tc.state || out.Patch == nil || out.Patch.Digest != digest || out.Path != kept {
				t.Errorf("refresh = %s, want state %s for %s at %s", r.stdout, tc.state, digest, kept)
			}
			if out.Machine.PatchVersion != "107.1" {
				t.Errorf("machine's patch version = %q, want 107.1", out.Machine.PatchVersion)
			}
			machines := n.mustAdmin("machines", "list", "--state", string(tc.state), "--output", "json")
			if strings.Count(machines.stdout, `"id"`) != 1 {
				t.Errorf("machines list --state %s:\n%s", tc.state, machines.stdout)
			}
		})
	}
	if got, _ := os.ReadFile(kept); !bytes.Equal(got, content) {
		t.Errorf("kept patch = %q, want %q", got, content)
	}
	if got, _ := os.ReadFile(hookOut); string(got) != kept+" 107.1 "+digest+"\n" {
		t.Errorf("hook saw %q, want %q", got, kept+" 107.1 "+digest+"\n")
	}
}

func TestClientRefreshRefusesTamperedBlob(t *testing.T) {
	n := newTestNode(t)
	n.login()
	m := newMachine(t, n)
	m.register(authToken(t, n, "edge"))
	content := []byte("the genuine live patch")
	path, digest := writePatchFile(t, content)
	n.mustAdmin("patches", "upload", path, "--kernel", nodeKernel, "--arch", nodeArch, "--version", "107.1")

	// Tamper with the node's copy: it now serves other bytes under the digest.
	if err := os.WriteFile(n.blobPath(digest), []byte("the tampered live patc"), 0o600); err != nil {
		t.Fatal(err)
	}
	hookRan := filepath.Join(t.TempDir(), "hook-ran")
	r := m.refresh("--apply-hook", "touch "+hookRan)
	if r.code != exitServer {
		t.Errorf("refresh of tampered bytes: exit %d, want %d", r.code, exitServer)
	}
	if !strings.Contains(r.stderr, "does not match its digest") || !strings.Contains(r.stdout, "REFUSED") || !strings.Contains(r.stdout, "check-failed") {
		t.Errorf("refresh output: stdout %q, stderr %q; want a clear refusal and check-failed", r.stdout, r.stderr)
	}
	if _, err := os.Stat(hookRan); err == nil {
		t.Error("the apply hook ran on a refused patch")
	}
	filepath.WalkDir(m.stateDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != client.StateFile {
			t.Errorf("file %s kept after a refused download", p)
		}
		return nil
	})
	if machines := n.mustAdmin("machines", "list", "--state", "check-failed"); !strings.Contains(machines.stdout, "check-failed") {
		t.Errorf("the node does not list the machine as check-failed:\n%s", machines.stdout)
	}
}

func TestClientRequireTLSRefusesHTTP(t *testing.T) {
	n := newTestNode(t)
	n.login()
	token := authToken(t, n, "edge")
	m := newMachine(t, n)

	before := n.requestCount()
	r := m.run("", "register", token, "--require-tls", "--server", n.srv.URL, "--machine-id", testMachineID, "--kernel", nodeKernel, "--arch", nodeArch)
	if r.code != exitUsage || !strings.Contains(r.stderr, "TLS is required") {
		t.Errorf("register over http with --require-tls: exit %d, stderr %q; want %d, TLS is required", r.code, r.stderr, exitUsage)
	}
	if n.requestCount() != before {
		t.Error("a request went out over plain http despite --require-tls")
	}

	m.register(token)
	before = n.requestCount()
	for _, cmd := range [][]string{{"status"}, {"refresh", "--kernel", nodeKernel, "--arch", nodeArch}} {
		if r := m.run("", append(cmd, "--require-tls")...); r.code != exitUsage {
			t.Errorf("%s over http with --require-tls: exit %d, want %d", cmd[0], r.code, exitUsage)
		}
	}
	if n.requestCount() != before {
		t.Error("a request went out over plain http despite --require-tls")
	}
}

func TestClientHelpListsExitCodes(t *testing.T) {
	m := newMachine(t, nil)
	r := m.run("", "--help")
	if r.code != exitOK || !strings.Contains(r.stdout, "Exit codes:") || !strings.Contains(r.stdout, "--allow-http") || !strings.Contains(r.stdout, "--hub-key") {
		t.Errorf("--help: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestClientDefaultsToTheRunningKernel(t *testing.T) {
	n := newTestNode(t)
	n.login()
	token := authToken(t, n, "edge")
	m := newMachine(t, n)
	idFile := filepath.Join(t.TempDir(), "machine-id")
	os.WriteFile(idFile, []byte(testMachineID+"\n"), 0o444)

	// A release no kernel prints is refused with a hint.
	m.uname = func() (string, string, error) { return "custom kernel", "x86_64", nil }
	r := m.run("", "register", token, "--server", n.srv.URL, "--machine-id", testMachineID)
	if r.code != exitUsage || !strings.Contains(r.stderr, "give --kernel") {
		t.Errorf("register on a malformed kernel release: exit %d, stderr %q; want %d and a hint to give --kernel", r.code, r.stderr, exitUsage)
	}

	m.uname = func() (string, string, error) { return "6.8.0-45.45-generic", "aarch64", nil }
	var stdout, stderr bytes.Buffer
	c := &clientCLI{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, geteuid: func() int { return 1000 }, uname: m.uname, machineIDFile: idFile}
	if code := c.run(context.Background(), []string{"--state-dir", m.stateDir, "--allow-http", "register", token, "--server", n.srv.URL, "--hub-key", n.hubKey}); code != exitOK {
		t.Fatalf("register with defaults: exit %d, stderr %s", code, stderr.String())
	}
	machines := n.mustAdmin("machines", "list", "--output", "json")
	var out struct{ Machines []catalog.Machine }
	json.Unmarshal([]byte(machines.stdout), &out)
	if len(out.Machines) != 1 || out.Machines[0].Kernel != "6.8.0-45.45-generic" || out.Machines[0].Arch != "aarch64" || out.Machines[0].ClientVersion != version {
		t.Errorf("machines = %+v, want one on 6.8.0-45.45-generic aarch64 reporting client version %q", out.Machines, version)
	}
}

// fakeNodes stands in for gossip, which the topology tests cover: it lists
// the same nodes for every tier.
type fakeNodes []api.NodeInfo

func (f fakeNodes) Nodes(string) []api.NodeInfo { return f }

func TestClientNodesPrintsTheRanking(t *testing.T) {
	dead := httptest.NewServer(nil)
	dead.Close()
	// Gossip adds a node that is down; the hub admitted both.
	_, self, _ := ed25519.GenerateKey(rand.Reader)
	farPub, _, _ := ed25519.GenerateKey(rand.Reader)
	n := newTestNode(t, func(c *api.Config) {
		c.Info.Node = "hub-1"
		c.NodeKey = self
		c.Nodes = fakeNodes{{Name: "edge-far", DC: "far", Role: "edge", API: dead.URL, KeyID: federation.KeyID(farPub)}}
	})
	n.login()
	n.mustAdmin("nodes", "admit", "hub-1", "--key", federation.FormatPublicKey(self.Public().(ed25519.PublicKey)), "--url", n.srv.URL)
	n.mustAdmin("nodes", "admit", "edge-far", "--key", federation.FormatPublicKey(farPub), "--url", dead.URL)
	m := newMachine(t, n)
	m.register(authToken(t, n, "edge"))

	r := m.run("", "nodes")
	if r.code != exitOK {
		t.Fatalf("nodes: exit %d, stderr %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "NAME DC URL RTT REGISTERED" {
		t.Fatalf("nodes output:\n%s\nwant a header and two nodes", r.stdout)
	}
	first, last := strings.Fields(lines[1]), strings.Fields(lines[2])
	if len(first) != 5 || first[0] != "hub-1" || first[2] != n.srv.URL || first[4] != "yes" || !strings.HasSuffix(first[3], "s") {
		t.Errorf("first row %q, want hub-1 at %s with an RTT, registered", lines[1], n.srv.URL)
	}
	if len(last) != 5 || last[0] != "edge-far" || last[1] != "far" || last[3] != "unreachable" || last[4] != "no" {
		t.Errorf("last row %q, want edge-far unreachable and not registered", lines[2])
	}

	r = m.run("", "nodes", "--output", "json")
	var out struct {
		Nodes []struct {
			Name       string  `json:"name"`
			URL        string  `json:"url"`
			Reachable  bool    `json:"reachable"`
			RTTMillis  float64 `json:"rtt_ms"`
			Registered bool    `json:"registered"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != exitOK {
		t.Fatalf("nodes --output json: exit %d, %v\n%s", r.code, err, r.stdout)
	}
	if len(out.Nodes) != 2 || out.Nodes[0].Name != "hub-1" || !out.Nodes[0].Reachable || out.Nodes[0].RTTMillis <= 0 || !out.Nodes[0].Registered ||
		out.Nodes[1].URL != dead.URL || out.Nodes[1].Reachable || out.Nodes[1].Registered {
		t.Errorf("nodes --output json = %+v, want hub-1 reachable and registered, then the dead node", out.Nodes)
	}

	if r := newMachine(t, n).run("", "nodes"); r.code != exitAuth {
		t.Errorf("nodes before registering: exit %d, want %d", r.code, exitAuth)
	}
}

func TestClientRegisterReadsPATCHMESH_URL(t *testing.T) {
	n := newTestNode(t)
	n.login()
	token := authToken(t, n, "edge")
	m := newMachine(t, n)

	r := m.run("", "register", token, "--machine-id", testMachineID)
	if r.code != exitUsage || !strings.Contains(r.stderr, "PATCHMESH_URL") {
		t.Errorf("register without --server or PATCHMESH_URL: exit %d, stderr %q; want %d naming PATCHMESH_URL", r.code, r.stderr, exitUsage)
	}

	m.env["PATCHMESH_URL"] = n.srv.URL
	r = m.run("", "register", token, "--machine-id", testMachineID)
	if r.code != exitOK {
		t.Fatalf("register with PATCHMESH_URL set: exit %d, stderr %q", r.code, r.stderr)
	}
	r = m.run("", "status", "--output", "json")
	var got catalog.Machine
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &got) != nil || got.Kernel != nodeKernel {
		t.Errorf("status after registering through PATCHMESH_URL: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// --server wins over the environment, as it does for the admin tool.
	dead := httptest.NewServer(nil)
	dead.Close()
	m.env["PATCHMESH_URL"] = dead.URL
	r = m.run("", "register", token, "--server", n.srv.URL, "--machine-id", testMachineID)
	if r.code != exitOK {
		t.Errorf("register with --server and a dead PATCHMESH_URL: exit %d, stderr %q; want the flag used", r.code, r.stderr)
	}
}

// Without a hub key to pin the client registers nowhere, and a machine
// registered before offers were signed refuses to refresh, both saying how
// to pin; plain http needs --allow-http.
func TestClientNeedsPinsAndHTTPSUnlessAllowed(t *testing.T) {
	n := newTestNode(t)
	n.login()
	token := authToken(t, n, "edge")
	m := newMachine(t, n)
	delete(m.env, "PATCHMESH_HUB_KEY")
	before := n.requestCount()
	r := m.run("", "register", token, "--server", n.srv.URL, "--machine-id", testMachineID, "--kernel", nodeKernel, "--arch", nodeArch)
	if r.code != exitUsage || !strings.Contains(r.stderr, "--hub-key") || n.requestCount() != before {
		t.Errorf("register without a hub key: exit %d, stderr %q, %d requests; want %d, a hint to give --hub-key, none sent",
			r.code, r.stderr, n.requestCount()-before, exitUsage)
	}
	r = m.run("", "register", token, "--server", n.srv.URL, "--hub-key", "ed25519:short", "--machine-id", testMachineID, "--kernel", nodeKernel, "--arch", nodeArch)
	if r.code != exitUsage || n.requestCount() != before {
		t.Errorf("register with a malformed hub key: exit %d, stderr %q; want %d and nothing sent", r.code, r.stderr, exitUsage)
	}
	delete(m.env, "PATCHMESH_CLIENT_ALLOW_HTTP")
	r = m.run("", "register", token, "--server", n.srv.URL, "--hub-key", n.hubKey, "--machine-id", testMachineID, "--kernel", nodeKernel, "--arch", nodeArch)
	if r.code != exitUsage || !strings.Contains(r.stderr, "--allow-http") || n.requestCount() != before {
		t.Errorf("register over http without --allow-http: exit %d, stderr %q; want %d and a hint to give --allow-http", r.code, r.stderr, exitUsage)
	}
	r = m.run("", "--allow-http", "register", token, "--server", n.srv.URL, "--hub-key", n.hubKey, "--machine-id", testMachineID, "--kernel", nodeKernel, "--arch", nodeArch)
	if r.code != exitOK {
		t.Fatalf("register with --allow-http and --hub-key: exit %d, stderr %s", r.code, r.stderr)
	}

	// State as an older client wrote it: no pins.
	path := filepath.Join(m.stateDir, client.StateFile)
	var st map[string]any
	b, _ := os.ReadFile(path)
	json.Unmarshal(b, &st)
	delete(st, "hub_keys")
	b, _ = json.Marshal(st)
	os.WriteFile(path, b, 0o600)
	r = m.refresh("--allow-http")
	if r.code == exitOK || !strings.Contains(r.stderr, "--hub-key") {
		t.Errorf("refresh without pins: exit %d, stderr %q; want a failure saying how to pin", r.code, r.stderr)
	}
}
