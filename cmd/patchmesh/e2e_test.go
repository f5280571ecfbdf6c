package main

// The end-to-end test: the real binary, started as `patchmesh serve` with
// no config file, driven by `patchmesh admin` and `patchmesh client`
// through the README's walk-through.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binary built for this test run.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "patchmesh-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const e2eVersion = "e2e-test"

var (
	buildOnce sync.Once
	buildErr  error
)

// binary builds patchmesh once per test run, on first use, so that the
// package's unit tests do not pay for it.
func binary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "patchmesh")
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "-ldflags", "-X main.version="+e2eVersion, ".")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// cleanEnv is the test process's environment without any PATCHMESH_ or
// XDG_ variable, so that the developer's settings cannot leak in, plus
// extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATCHMESH_") || strings.HasPrefix(kv, "XDG_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// server is a running `patchmesh serve`.
type server struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
	err    error // Wait's result, once done is closed
}

func startServe(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	s := &server{stderr: &lockedBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(binary(t), append([]string{"serve"}, args...)...)
	s.cmd.Env = env
	s.cmd.Stdout = s.stderr
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			s.cmd.Process.Kill()
			select {
			case <-s.done:
			case <-time.After(10 * time.Second):
				t.Errorf("patchmesh serve (pid %d) did not exit after SIGKILL", s.cmd.Process.Pid)
			}
		}
		if t.Failed() {
			t.Logf("patchmesh serve output:\n%s", s.stderr.String())
		}
	})
	return s
}

// url waits for the node to say where it listens and returns its URL.
func (s *server) url(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if m := e2eListeningRE.FindStringSubmatch(s.stderr.String()); m != nil {
			return m[1]
		}
		select {
		case <-s.done:
			t.Fatalf("patchmesh serve exited early (%v):\n%s", s.err, s.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("want %q within 60s, got:\n%s", "patchmesh listening on", s.stderr.String())
	return ""
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(60 * time.Second):
		t.Fatal("patchmesh serve: want exit within 60s of SIGTERM, still running")
	}
	if s.err != nil {
		t.Fatalf("patchmesh serve after SIGTERM: want exit 0, got %v", s.err)
	}
}

// pm runs the binary with args and returns its stdout; a non-zero exit
// fails the test unless wantCode says otherwise.
func pm(t *testing.T, env []string, stdin string, wantCode int, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok || ctx.Err() != nil {
			t.Fatalf("patchmesh %s: %v (stderr %s)", strings.Join(args, " "), err, stderr.String())
		}
		code = ee.ExitCode()
	}
	if code != wantCode {
		t.Fatalf("patchmesh %s: want exit %d, got %d\nstdout: %s\nstderr: %s",
			strings.Join(args, " "), wantCode, code, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// pmJSON runs a command that must succeed and decodes its JSON output.
func pmJSON(t *testing.T, env []string, out any, args ...string) {
	t.Helper()
	raw := pm(t, env, "", 0, append(args, "--output", "json")...)
	if err := json.Unmarshal([]byte(raw), out); err != nil {
		t.Fatalf("patchmesh %s: want JSON, got %q: %v", strings.Join(args, " "), raw, err)
	}
}

type e2ePatch struct {
	Digest    string   `json:"digest"`
	Version   string   `json:"version"`
	Size      int64    `json:"size"`
	CVEs      []string `json:"cves"`
	Tiers     []string `json:"tiers"`
	Withdrawn bool     `json:"withdrawn"`
}

type e2eMachine struct {
	ID            string `json:"id"`
	Tier          string `json:"tier"`
	State         string `json:"state"`
	PatchVersion  string `json:"patch_version"`
	ClientVersion string `json:"client_version"`
}

type e2eRefresh struct {
	State      string     `json:"state"`
	Patch      *e2ePatch  `json:"patch"`
	Path       string     `json:"path"`
	Downloaded bool       `json:"downloaded"`
	Machine    e2eMachine `json:"machine"`
}

var (
	e2eListeningRE = regexp.MustCompile(`patchmesh listening on (http://127\.0\.0\.1:[0-9]+)`)
	e2ePasswordRE  = regexp.MustCompile(`password: (\S+)`)
)

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func TestEndToEndWalkThrough(t *testing.T) {
	work := t.TempDir()
	xdgData := filepath.Join(work, "xdg-data")

	// Start: no config file and no data dir — the node picks its default
	// data dir ($XDG_DATA_HOME/patchmesh here) and says where it listens.
	srv := startServe(t, cleanEnv("XDG_DATA_HOME="+xdgData), "--listen", "127.0.0.1:0")
	url := srv.url(t)
	m := e2ePasswordRE.FindStringSubmatch(srv.stderr.String())
	if m == nil {
		t.Fatalf("want the bootstrap password printed once, got:\n%s", srv.stderr.String())
	}
	password := m[1]
	for _, p := range []string{"patchmesh/patchmesh.db", "patchmesh/blobs"} {
		if _, err := os.Stat(filepath.Join(xdgData, p)); err != nil {
			t.Errorf("default data dir: want %s under $XDG_DATA_HOME: %v", p, err)
		}
	}

	if out := pm(t, cleanEnv(), "", 0, "version"); !strings.Contains(out, e2eVersion) {
		t.Errorf("version: want %q (set by -ldflags), got %q", e2eVersion, out)
	}

	adminEnv := cleanEnv("PATCHMESH_CONFIG_DIR=" + filepath.Join(work, "admin-config"))
	admin := func(out any, args ...string) {
		t.Helper()
		pmJSON(t, adminEnv, out, append([]string{"admin", "--server", url}, args...)...)
	}

	// Log in with the bootstrap password.
	var login struct{ User, Server string }
	if err := json.Unmarshal([]byte(pm(t, adminEnv, password+"\n", 0,
		"admin", "--server", url, "login", "--user", "admin", "--password-stdin", "--output", "json")), &login); err != nil {
		t.Fatal(err)
	}
	if login.User != "admin" || login.Server != url {
		t.Fatalf("login: want user admin on %s, got %+v", url, login)
	}
	pm(t, adminEnv, "not-the-password\n", exitAuth, "admin", "--server", url, "login", "--user", "admin", "--password-stdin")

	// Add a tier, and a registration token for it and for the first tier.
	var tier struct{ Name string }
	admin(&tier, "tiers", "add", "canary")
	var tiers struct{ Tiers []struct{ Name string } }
	admin(&tiers, "tiers", "list")
	var names []string
	for _, tr := range tiers.Tiers {
		names = append(names, tr.Name)
	}
	if want := []string{"edge", "beta", "candidate", "stable", "canary"}; !slices.Equal(names, want) {
		t.Fatalf("tiers list: want %v, got %v", want, names)
	}
	var edgeToken, canaryToken struct {
		Token string
		Info  struct{ Tier string }
	}
	admin(&edgeToken, "auth-tokens", "add", "edge", "fleet-edge")
	admin(&canaryToken, "auth-tokens", "add", "canary", "fleet-canary")
	if !strings.HasPrefix(edgeToken.Token, "pma_") || canaryToken.Info.Tier != "canary" {
		t.Fatalf("auth-tokens add: want pma_ tokens, got %+v and %+v", edgeToken, canaryToken)
	}

	// Upload a generated patch file.
	const kernel, arch = "5.15.0-107.117-generic", "x86_64"
	patchFile := filepath.Join(work, "livepatch-107.1.ko")
	content := make([]byte, 300<<10)
	rand.Read(content)
	if err := os.WriteFile(patchFile, content, 0o600); err != nil {
		t.Fatal(err)
	}
	wantDigest := fileDigest(t, patchFile)
	var patch e2ePatch
	admin(&patch, "patches", "upload", patchFile, "--kernel", kernel, "--arch", arch, "--version", "107.1", "--cve", "CVE-2024-1086")
	if patch.Digest != wantDigest || patch.Size != int64(len(content)) || !slices.Equal(patch.Tiers, []string{"edge"}) {
		t.Fatalf("upload: want digest %s, size %d, on tier edge; got %+v", wantDigest, len(content), patch)
	}
	admin(&patch, "patches", "show", wantDigest)
	if !slices.Equal(patch.CVEs, []string{"CVE-2024-1086"}) {
		t.Fatalf("patches show: want CVE-2024-1086, got %+v", patch)
	}

	// What a machine pins: the hub's public key.
	var hubKey struct{ Key, ID string }
	admin(&hubKey, "hub-key")
	if !strings.HasPrefix(hubKey.Key, "ed25519:") {
		t.Fatalf("admin hub-key: want an ed25519 key, got %+v", hubKey)
	}

	// Register two machines: one on edge, where the patch is, one on
	// canary, where it is not yet. The node is plain http on loopback, so
	// the client must be told that is allowed.
	clientEnv := cleanEnv("PATCHMESH_CLIENT_ALLOW_HTTP=1")
	stateA, stateB := filepath.Join(work, "machine-a"), filepath.Join(work, "machine-b")
	clientA := func(out any, args ...string) {
		t.Helper()
		pmJSON(t, clientEnv, out, append([]string{"client", "--state-dir", stateA}, args...)...)
	}
	clientB := func(out any, args ...string) {
		t.Helper()
		pmJSON(t, clientEnv, out, append([]string{"client", "--state-dir", stateB}, args...)...)
	}
	var reg struct{ Tier string }
	clientA(&reg, "--server", url, "register", edgeToken.Token, "--hub-key", hubKey.Key, "--machine-id", "e2e-machine-a-0000000001", "--kernel", kernel, "--arch", arch)
	if reg.Tier != "edge" {
		t.Fatalf("register A: want tier edge, got %q", reg.Tier)
	}
	clientB(&reg, "--server", url, "register", canaryToken.Token, "--hub-key", hubKey.Key, "--machine-id", "e2e-machine-b-0000000002", "--kernel", kernel, "--arch", arch)
	if reg.Tier != "canary" {
		t.Fatalf("register B: want tier canary, got %q", reg.Tier)
	}

	// Refresh: A downloads the patch, verifies it and applies it with the
	// hook; B has nothing to apply.
	var ref e2eRefresh
	clientA(&ref, "refresh", "--kernel", kernel, "--arch", arch, "--apply-hook", "true")
	if ref.State != "applied" || !ref.Downloaded || ref.Patch == nil || ref.Patch.Digest != wantDigest {
		t.Fatalf("refresh A: want the patch downloaded and applied, got %+v", ref)
	}
	if got := fileDigest(t, ref.Path); got != wantDigest {
		t.Fatalf("refresh A: the kept file hashes to %s, want %s", got, wantDigest)
	}
	clientB(&ref, "refresh", "--kernel", kernel, "--arch", arch, "--apply-hook", "true")
	if ref.State != "nothing-to-apply" || ref.Patch != nil {
		t.Fatalf("refresh B: want nothing-to-apply on canary, got %+v", ref)
	}

	var status e2eMachine
	clientA(&status, "status")
	if status.State != "applied" || status.PatchVersion != "107.1" || status.Tier != "edge" || status.ClientVersion != e2eVersion {
		t.Fatalf("status A: want applied 107.1 on edge by client %s, got %+v", e2eVersion, status)
	}

	var machines struct{ Machines []e2eMachine }
	admin(&machines, "machines", "list")
	states := map[string]string{}
	for _, mc := range machines.Machines {
		states[mc.Tier] = mc.State
	}
	if len(machines.Machines) != 2 || states["edge"] != "applied" || states["canary"] != "nothing-to-apply" {
		t.Fatalf("machines list: want edge applied and canary nothing-to-apply, got %+v", machines.Machines)
	}
	for _, mc := range machines.Machines {
		if strings.Contains(mc.ID, "e2e-machine") {
			t.Fatalf("machines list: want machine IDs stored only as HMACs, got %q", mc.ID)
		}
	}

	// Promote the version to canary: B now gets it.
	var promoted struct{ Patches []e2ePatch }
	admin(&promoted, "patches", "promote", "107.1", "canary")
	if len(promoted.Patches) != 1 || !slices.Contains(promoted.Patches[0].Tiers, "canary") {
		t.Fatalf("promote: want the patch on canary, got %+v", promoted)
	}
	clientB(&ref, "refresh", "--kernel", kernel, "--arch", arch, "--apply-hook", "true")
	if ref.State != "applied" || ref.Patch == nil || ref.Patch.Digest != wantDigest || fileDigest(t, ref.Path) != wantDigest {
		t.Fatalf("refresh B after promote: want the verified patch applied, got %+v", ref)
	}

	// Withdraw it: a refresh gets nothing, and the patch is no longer listed.
	var withdrawn e2ePatch
	admin(&withdrawn, "patches", "withdraw", wantDigest)
	if !withdrawn.Withdrawn {
		t.Fatalf("withdraw: want withdrawn true, got %+v", withdrawn)
	}
	clientA(&ref, "refresh", "--kernel", kernel, "--arch", arch)
	if ref.State != "nothing-to-apply" || ref.Patch != nil {
		t.Fatalf("refresh after withdraw: want nothing-to-apply, got %+v", ref)
	}
	var list struct{ Patches []e2ePatch }
	admin(&list, "patches", "list")
	if len(list.Patches) != 0 {
		t.Fatalf("patches list after withdraw: want none, got %+v", list.Patches)
	}

	// Stop with SIGTERM: the node drains and exits 0.
	srv.stop(t)
	out := srv.stderr.String()
	if !strings.Contains(out, `"msg":"node_stopped"`) {
		t.Errorf("want node_stopped logged after SIGTERM, got:\n%s", out)
	}
	// The password was printed once, in the box; no log line carries it or
	// any token secret.
	if n := strings.Count(out, password); n != 1 {
		t.Errorf("want the bootstrap password printed exactly once, found it %d times", n)
	}
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		for _, secret := range []string{password, edgeToken.Token, canaryToken.Token} {
			if strings.Contains(line, secret) {
				t.Fatalf("log line carries a secret: %s", line)
			}
		}
	}
}

// A node restarted on the same data keeps its admin and catalog and does
// not print a new password.
func TestEndToEndRestartKeepsState(t *testing.T) {
	work := t.TempDir()
	env := cleanEnv("PATCHMESH_DATA_DIR="+filepath.Join(work, "data"), "PATCHMESH_AUTH_BCRYPT_COST=4")

	first := startServe(t, env, "--listen", "127.0.0.1:0")
	url := first.url(t)
	m := e2ePasswordRE.FindStringSubmatch(first.stderr.String())
	if m == nil {
		t.Fatalf("first start: want a bootstrap password, got:\n%s", first.stderr.String())
	}
	adminEnv := slices.Concat(env, []string{"PATCHMESH_CONFIG_DIR=" + filepath.Join(work, "admin-config")})
	pm(t, adminEnv, m[1]+"\n", 0, "admin", "--server", url, "login", "--password-stdin")
	pm(t, adminEnv, "", 0, "admin", "--server", url, "tiers", "add", "kept")
	first.stop(t)

	second := startServe(t, env, "--listen", "127.0.0.1:0")
	url2 := second.url(t)
	if strings.Contains(second.stderr.String(), "password:") {
		t.Fatalf("second start: want no new bootstrap password, got:\n%s", second.stderr.String())
	}
	pm(t, adminEnv, m[1]+"\n", 0, "admin", "--server", url2, "login", "--password-stdin")
	var tiers struct{ Tiers []struct{ Name string } }
	pmJSON(t, adminEnv, &tiers, "admin", "--server", url2, "tiers", "list")
	if !slices.ContainsFunc(tiers.Tiers, func(tr struct{ Name string }) bool { return tr.Name == "kept" }) {
		t.Fatalf("second start: want tier kept to survive the restart, got %+v", tiers.Tiers)
	}
	second.stop(t)
}
