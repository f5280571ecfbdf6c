package client

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

const (
	testMachineID = "0123456789abcdef0123456789abcdef"
	testKernel    = "5.15.0-107.117-generic"
	testArch      = "x86_64"
)

func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(t.TempDir(), "state")
	}
	if cfg.UptimeFile == "" {
		cfg.UptimeFile = filepath.Join(t.TempDir(), "no-uptime")
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func register(t *testing.T, c *Client, token string) Registration {
	t.Helper()
	reg, err := c.Register(context.Background(), RegisterRequest{AuthToken: token, MachineID: testMachineID, Kernel: testKernel, Arch: testArch, HubKeys: []string{testHubPub}})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	return reg
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return fi.Mode().Perm()
}

func TestRegisterSavesPrivateStateWithoutRawMachineID(t *testing.T) {
	n := newTestNode(t, false)
	token := n.authToken("beta")
	stateDir := filepath.Join(t.TempDir(), "deep", "state")
	c := newTestClient(t, Config{Server: n.srv.URL, StateDir: stateDir, ClientVersion: "1.2.3"})

	reg := register(t, c, token)
	if reg.Tier != "beta" || reg.Machine.ID == "" || reg.Machine.ID == testMachineID {
		t.Errorf("registration = %+v, want tier beta and the server's (hashed) machine ID", reg)
	}
	body := n.lastBody("/v1/client/register")
	want := map[string]any{"machine_id": testMachineID, "kernel": testKernel, "arch": testArch, "client_version": "1.2.3"}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("register body %s = %v, want %v", k, body[k], v)
		}
	}
	if len(body) != len(want) {
		t.Errorf("register body = %v, want exactly %v", body, want)
	}

	if got := fileMode(t, stateDir); got != 0o700 {
		t.Errorf("state dir mode = %o, want 700", got)
	}
	statePath := filepath.Join(stateDir, StateFile)
	if got := fileMode(t, statePath); got != 0o600 {
		t.Errorf("state file mode = %o, want 600", got)
	}
	raw, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(testMachineID)) {
		t.Errorf("state file holds the raw machine ID:\n%s", raw)
	}
	st, err := LoadState(stateDir)
	if err != nil {
		t.Fatalf("LoadState: %v", err)
	}
	if st.Server != n.srv.URL || !strings.HasPrefix(st.Registrations[n.srv.URL].MachineToken, "pmm_") || st.Tier != "beta" || st.MachineID != reg.Machine.ID {
		t.Errorf("state = %+v, want server %s, a machine token there, tier beta, machine %s", st, n.srv.URL, reg.Machine.ID)
	}
	if st.Credential == "" || len(st.Nodes) != 1 || st.Nodes[0].URL != n.srv.URL || !st.Nodes[0].Reachable || st.Ranked.IsZero() {
		t.Errorf("state = %+v, want the enrollment token kept and the node ranked (the only one, reachable)", st)
	}
	entries, _ := os.ReadDir(stateDir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d entries, want only %s (no temporary files left)", len(entries), StateFile)
	}
}

func TestRegisterRefusedSavesNothing(t *testing.T) {
	n := newTestNode(t, false)
	stateDir := filepath.Join(t.TempDir(), "state")
	c := newTestClient(t, Config{Server: n.srv.URL, StateDir: stateDir})

	unknown := "pma_0123456789abcdef_" + strings.Repeat("A", 43)
	_, err := c.Register(context.Background(), RegisterRequest{AuthToken: unknown, MachineID: testMachineID, Kernel: testKernel, Arch: testArch, HubKeys: []string{testHubPub}})
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized || apiErr.Code != "unauthorized" || apiErr.RequestID == "" {
		t.Fatalf("Register error = %v, want an APIError 401 unauthorized with a request ID", err)
	}
	if _, err := os.Stat(filepath.Join(stateDir, StateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file after a refused registration: stat err = %v, want not exist", err)
	}
}

func TestRegisterRejectsBadInputWithoutCallingServer(t *testing.T) {
	n := newTestNode(t, false)
	token := n.authToken("edge")
	c := newTestClient(t, Config{Server: n.srv.URL})
	before := n.total()
	for _, tc := range []struct {
		name string
		req  RegisterRequest
	}{
		{"not an auth token", RegisterRequest{AuthToken: "pmm_0123456789abcdef_x", MachineID: testMachineID, Kernel: testKernel, Arch: testArch}},
		{"short machine ID", RegisterRequest{AuthToken: token, MachineID: "abc", Kernel: testKernel, Arch: testArch}},
		{"bad kernel", RegisterRequest{AuthToken: token, MachineID: testMachineID, Kernel: "linux", Arch: testArch}},
		{"bad arch", RegisterRequest{AuthToken: token, MachineID: testMachineID, Kernel: testKernel, Arch: "vax"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Register(context.Background(), tc.req); err == nil {
				t.Fatal("Register succeeded, want an error")
			}
		})
	}
	if got := n.total() - before; got != 0 {
		t.Errorf("server got %d requests, want 0", got)
	}
}

func TestStatusNeedsRegistration(t *testing.T) {
	n := newTestNode(t, false)
	c := newTestClient(t, Config{Server: n.srv.URL})
	if _, err := c.Status(context.Background()); !errors.Is(err, ErrNotRegistered) {
		t.Errorf("Status before Register = %v, want ErrNotRegistered", err)
	}
	reg := register(t, c, n.authToken("edge"))
	m, err := c.Status(context.Background())
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if m.ID != reg.Machine.ID || m.Tier != "edge" || m.Kernel != testKernel {
		t.Errorf("Status = %+v, want machine %s on edge", m, reg.Machine.ID)
	}
}

func TestRequireTLSRefusesPlainHTTP(t *testing.T) {
	n := newTestNode(t, false)
	if _, err := New(Config{Server: n.srv.URL, StateDir: t.TempDir(), Transport: Transport{RequireTLS: true}}); !errors.Is(err, ErrInsecureURL) {
		t.Errorf("New with an http server and RequireTLS = %v, want ErrInsecureURL", err)
	}

	// A registration saved with an http URL is refused too, before any request.
	stateDir := filepath.Join(t.TempDir(), "state")
	register(t, newTestClient(t, Config{Server: n.srv.URL, StateDir: stateDir}), n.authToken("edge"))
	before := n.total()
	c := newTestClient(t, Config{StateDir: stateDir, Transport: Transport{RequireTLS: true}})
	if _, err := c.Status(context.Background()); !errors.Is(err, ErrInsecureURL) {
		t.Errorf("Status over http with RequireTLS = %v, want ErrInsecureURL", err)
	}
	if _, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch}); !errors.Is(err, ErrInsecureURL) {
		t.Errorf("Refresh over http with RequireTLS = %v, want ErrInsecureURL", err)
	}
	if got := n.total() - before; got != 0 {
		t.Errorf("server got %d requests under RequireTLS, want 0", got)
	}
}

func TestRequireTLSRefusesRedirectToHTTP(t *testing.T) {
	n := newTestNode(t, false)
	// A TLS front that redirects to the plain node, as a misconfigured
	// load balancer might.
	front := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, n.srv.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(front.Close)
	token := n.authToken("edge")
	before := n.total()
	c := newTestClient(t, Config{Server: front.URL, Transport: Transport{RequireTLS: true, CAFile: writeCA(t, front)}})
	_, err := c.Register(context.Background(), RegisterRequest{AuthToken: token, MachineID: testMachineID, Kernel: testKernel, Arch: testArch, HubKeys: []string{testHubPub}})
	if !errors.Is(err, ErrInsecureURL) {
		t.Errorf("Register redirected to http = %v, want ErrInsecureURL", err)
	}
	if got := n.total() - before; got != 0 {
		t.Errorf("the plain http node got %d requests, want 0", got)
	}
}

// writeCA writes the test server's certificate as a PEM bundle.
func writeCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCAFileIsTrusted(t *testing.T) {
	n := newTestNode(t, true)
	token := n.authToken("edge")

	without := newTestClient(t, Config{Server: n.srv.URL})
	if _, err := without.Register(context.Background(), RegisterRequest{AuthToken: token, MachineID: testMachineID, Kernel: testKernel, Arch: testArch}); err == nil {
		t.Fatal("Register to a server with a private CA succeeded without the CA file, want a certificate error")
	}

	with := newTestClient(t, Config{Server: n.srv.URL, Transport: Transport{CAFile: writeCA(t, n.srv), RequireTLS: true}})
	register(t, with, token)
	content := []byte("patch over TLS")
	n.upload(content, "107.1")
	res, err := with.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch})
	if err != nil || !res.Downloaded {
		t.Errorf("Refresh over TLS with the CA file = %+v, %v; want a download", res, err)
	}
}

func TestNewRejectsBadTransport(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("not pem"), 0o600)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no state dir", Config{Server: "https://node.example"}},
		{"ftp server", Config{Server: "ftp://node.example", StateDir: t.TempDir()}},
		{"missing CA file", Config{StateDir: t.TempDir(), Transport: Transport{CAFile: "/nonexistent/ca.pem"}}},
		{"CA file without certificates", Config{StateDir: t.TempDir(), Transport: Transport{CAFile: empty}}},
		{"bad proxy", Config{StateDir: t.TempDir(), Transport: Transport{Proxy: "socks://proxy:1080"}}},
		{"bad client version", Config{StateDir: t.TempDir(), ClientVersion: "1 2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Error("New succeeded, want an error")
			}
		})
	}
}

func TestProxyIsUsed(t *testing.T) {
	n := newTestNode(t, false)
	var mu sync.Mutex
	var proxied []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A forward proxy gets the absolute URL; pass it on to the node.
		mu.Lock()
		proxied = append(proxied, r.URL.String())
		mu.Unlock()
		r.RequestURI = ""
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(proxy.Close)
	c := newTestClient(t, Config{Server: n.srv.URL, Transport: Transport{Proxy: proxy.URL}})
	token := n.authToken("edge")
	before := n.total()
	register(t, c, token)
	mu.Lock()
	defer mu.Unlock()
	// The first contact's roster and hello, then the registration.
	if len(proxied) < 3 || !strings.HasSuffix(proxied[0], "/v1/client/roster") ||
		!strings.Contains(proxied[1], "/v1/client/hello?nonce=") || !strings.HasSuffix(proxied[2], "/v1/client/register") {
		t.Errorf("proxy saw %v, want the roster, the hello and the registration first", proxied)
	}
	// The node list and the round-trip probes go through the proxy too.
	if got := n.total() - before; got != len(proxied) {
		t.Errorf("the node got %d requests, the proxy passed on %d (%v); want every request through the proxy", got, len(proxied), proxied)
	}
}

func TestRefreshStates(t *testing.T) {
	content := []byte("live patch module bytes\n")
	for _, tc := range []struct {
		name      string
		upload    bool
		hook      string
		wantState catalog.MachineState
		wantErr   error
		wantVer   string
	}{
		{"no patch checks in nothing-to-apply", false, "", catalog.StateNothingToApply, nil, ""},
		{"no hook checks in unapplied", true, "", catalog.StateUnapplied, nil, "107.1"},
		{"hook exit 0 checks in applied", true, "exit 0", catalog.StateApplied, nil, "107.1"},
		{"hook exit 3 checks in apply-failed", true, "exit 3", catalog.StateApplyFailed, ErrApplyFailed, "107.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, false)
			uptime := filepath.Join(t.TempDir(), "uptime")
			os.WriteFile(uptime, []byte("4321.77 9999.00\n"), 0o644)
			c := newTestClient(t, Config{Server: n.srv.URL, UptimeFile: uptime, ClientVersion: "9.9.9"})
			register(t, c, n.authToken("edge"))
			if tc.upload {
				n.upload(content, "107.1")
			}
			res, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch, ApplyHook: tc.hook})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("Refresh error = %v, want %v", err, tc.wantErr)
			}
			if res.State != tc.wantState || res.Machine.State != tc.wantState {
				t.Errorf("result state = %s, machine state = %s, want %s", res.State, res.Machine.State, tc.wantState)
			}
			if res.Machine.UptimeSeconds != 4321 || res.Machine.PatchVersion != tc.wantVer || res.Machine.ClientVersion != "9.9.9" {
				t.Errorf("machine after check-in = %+v, want uptime 4321, patch version %q, client 9.9.9", res.Machine, tc.wantVer)
			}
			got := n.lastBody("/v1/client/checkin")
			want := map[string]any{"state": string(tc.wantState), "kernel": testKernel, "arch": testArch, "patch_version": tc.wantVer, "client_version": "9.9.9", "uptime_seconds": float64(4321)}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("check-in %s = %v, want %v", k, got[k], v)
				}
			}
			if len(got) != len(want) {
				t.Errorf("check-in body = %v, want exactly the fields %v", got, want)
			}
		})
	}
}

func TestRefreshHookSeesPatchEnvironment(t *testing.T) {
	n := newTestNode(t, false)
	c := newTestClient(t, Config{Server: n.srv.URL})
	register(t, c, n.authToken("edge"))
	content := []byte("patch for the hook")
	p := n.upload(content, "107.1")
	out := filepath.Join(t.TempDir(), "hook.out")
	hook := `printf '%s\n%s\n%s\n' "$PATCHMESH_PATCH_FILE" "$PATCHMESH_PATCH_VERSION" "$PATCHMESH_PATCH_DIGEST" > ` + out + ` && cmp -s "$PATCHMESH_PATCH_FILE" ` + writeTemp(t, content)
	res, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch, ApplyHook: hook})
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if res.State != catalog.StateApplied {
		t.Errorf("state = %s, want applied (the hook compares the file with the patch)", res.State)
	}
	got, _ := os.ReadFile(out)
	want := res.Path + "\n107.1\n" + p.Digest + "\n"
	if string(got) != want {
		t.Errorf("hook environment:\n%s\nwant:\n%s", got, want)
	}
	if wantPath := filepath.Join(c.cfg.StateDir, PatchDir, strings.TrimPrefix(p.Digest, "sha256:")); res.Path != wantPath {
		t.Errorf("patch path = %s, want %s", res.Path, wantPath)
	}
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "expected")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRefreshRefusesTamperedBlob(t *testing.T) {
	content := []byte("the genuine patch")
	for _, tc := range []struct {
		name string
		sent []byte
	}{
		{"same length, other bytes", []byte("the tampered patc")},
		{"longer", append([]byte("the genuine patch"), "and more"...)},
		{"shorter", []byte("the genuine")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, false)
			c := newTestClient(t, Config{Server: n.srv.URL})
			register(t, c, n.authToken("edge"))
			p := n.upload(content, "107.1")
			// Tamper with the node's copy: it now serves other bytes.
			if err := os.WriteFile(n.blobPath(p.Digest), tc.sent, 0o600); err != nil {
				t.Fatal(err)
			}
			hookRan := filepath.Join(t.TempDir(), "hook-ran")

			res, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch, ApplyHook: "touch " + hookRan})
			if !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("Refresh of tampered bytes = %v, want ErrDigestMismatch", err)
			}
			if res.State != catalog.StateCheckFailed || n.lastBody("/v1/client/checkin")["state"] != "check-failed" || res.Machine.State != catalog.StateCheckFailed {
				t.Errorf("state = %s, machine %s, want check-failed reported", res.State, res.Machine.State)
			}
			if res.Path != "" {
				t.Errorf("result path = %q, want none", res.Path)
			}
			if _, err := os.Stat(hookRan); err == nil {
				t.Error("the apply hook ran on a refused patch")
			}
			assertNoPatchFiles(t, c.cfg.StateDir)
		})
	}
}

// assertNoPatchFiles checks that the state directory holds no patch and no
// partial download.
func assertNoPatchFiles(t *testing.T, stateDir string) {
	t.Helper()
	err := filepath.WalkDir(stateDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() != StateFile {
			t.Errorf("file %s kept after a refused download", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRefreshReusesVerifiedCopyAndReplacesDamagedOne(t *testing.T) {
	n := newTestNode(t, false)
	c := newTestClient(t, Config{Server: n.srv.URL})
	register(t, c, n.authToken("edge"))
	content := []byte("patch bytes to keep")
	n.upload(content, "107.1")
	opts := RefreshOptions{Kernel: testKernel, Arch: testArch}
	gets := func() int { return n.count(http.MethodGet, "/v1/blobs/") }

	first, err := c.Refresh(context.Background(), opts)
	if err != nil || !first.Downloaded || gets() != 1 {
		t.Fatalf("first Refresh = %+v, %v, %d blob GETs; want one download", first, err, gets())
	}
	if got := fileMode(t, first.Path); got != 0o600 {
		t.Errorf("patch file mode = %o, want 600", got)
	}
	second, err := c.Refresh(context.Background(), opts)
	if err != nil || second.Downloaded || gets() != 1 {
		t.Errorf("second Refresh downloaded=%v err=%v blob GETs=%d, want the verified copy reused (1 GET)", second.Downloaded, err, gets())
	}

	if err := os.WriteFile(first.Path, []byte("bit rot"), 0o600); err != nil {
		t.Fatal(err)
	}
	third, err := c.Refresh(context.Background(), opts)
	if err != nil || !third.Downloaded || gets() != 2 {
		t.Errorf("Refresh over a damaged copy downloaded=%v err=%v blob GETs=%d, want a fresh download", third.Downloaded, err, gets())
	}
	if got, _ := os.ReadFile(third.Path); !bytes.Equal(got, content) {
		t.Errorf("patch file = %q, want %q", got, content)
	}
}

// fakeServerBadRecord stands in for the api package only to test that the
// client refuses a patch record whose digest is not a content address (a
// path-traversal attempt), which a real node never sends: it answers
// GET /v1/client/patch with such a record and records every request.
type fakeServerBadRecord struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string
}

func newFakeServerBadRecord(t *testing.T) *fakeServerBadRecord {
	f := &fakeServerBadRecord{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.seen = append(f.seen, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(catalog.Patch{Digest: "sha256:../../../../etc/passwd", Kernel: testKernel, Arch: testArch, Version: "1", Size: 1})
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func TestRefreshRefusesBadDigestRecord(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pins    []string
		wantErr error
		want    []string
	}{
		// A machine without pins asks nothing: it cannot verify an answer.
		{"no pins", nil, ErrNoPins, nil},
		// The record is unsigned: refused before any download, and
		// reported.
		{"pinned", []string{testHubPub}, ErrOfferUnsigned, []string{"GET /v1/client/patch", "POST /v1/client/checkin"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeServerBadRecord(t)
			stateDir := filepath.Join(t.TempDir(), "state")
			// A fresh ranking, so that the client asks for nothing but the patch.
			st := State{Server: f.srv.URL, Tier: "edge", Ranked: time.Now(), HubKeys: tc.pins, HubTier: "edge",
				Registrations: map[string]NodeRegistration{f.srv.URL: {MachineToken: "pmm_0123456789abcdef_x"}},
				Nodes:         []Node{{URL: f.srv.URL, Reachable: true}}}
			if err := saveState(stateDir, st); err != nil {
				t.Fatal(err)
			}
			c := newTestClient(t, Config{StateDir: stateDir})
			if _, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch}); !errors.Is(err, tc.wantErr) {
				t.Fatalf("Refresh of a bad patch record = %v, want %v", err, tc.wantErr)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if !slices.Equal(f.seen, tc.want) {
				t.Errorf("requests = %v, want %v (no download)", f.seen, tc.want)
			}
			assertNoPatchFiles(t, stateDir)
		})
	}
}

func TestRefreshReportsProgress(t *testing.T) {
	n := newTestNode(t, false)
	var last, total int64
	c := newTestClient(t, Config{Server: n.srv.URL, Progress: func(d, tot int64) { last, total = d, tot }})
	register(t, c, n.authToken("edge"))
	content := bytes.Repeat([]byte("p"), 100_000)
	n.upload(content, "107.1")
	if _, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch}); err != nil {
		t.Fatal(err)
	}
	if last != int64(len(content)) || total != int64(len(content)) {
		t.Errorf("last progress = %d/%d, want %d/%d", last, total, len(content), len(content))
	}
}

func TestReadUptime(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content string
		want    int64
	}{
		{"350735.47 234388.90\n", 350735},
		{"", 0},
		{"garbage", 0},
		{"-5 1", 0},
	} {
		path := filepath.Join(dir, "uptime")
		os.WriteFile(path, []byte(tc.content), 0o600)
		if got := readUptime(path); got != tc.want {
			t.Errorf("readUptime(%q) = %d, want %d", tc.content, got, tc.want)
		}
	}
	if got := readUptime(filepath.Join(dir, "missing")); got != 0 {
		t.Errorf("readUptime(missing) = %d, want 0", got)
	}
}

func TestReadMachineID(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte(testMachineID+"\n"), 0o444)
	if got, err := ReadMachineID(good); err != nil || got != testMachineID {
		t.Errorf("ReadMachineID = %q, %v; want %q", got, err, testMachineID)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("short\n"), 0o444)
	if _, err := ReadMachineID(bad); err == nil {
		t.Error("ReadMachineID accepted a 5-character ID")
	}
}

func TestReadErrorHandlesForeignBodies(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("X-Request-ID", "r1")
	rec.WriteHeader(http.StatusBadGateway)
	rec.WriteString("<html>\x1b[31mbad gateway</html>")
	err := ReadError(rec.Result())
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 502 || apiErr.Code != "" || strings.ContainsRune(apiErr.Message, 0x1b) || apiErr.RequestID != "r1" {
		t.Errorf("ReadError = %#v, want status 502, no code, no escape characters, request ID r1", err)
	}
}

func TestUnameNamesThisMachine(t *testing.T) {
	k, a, err := Uname()
	if err != nil || k == "" || a == "" {
		t.Errorf("Uname = %q, %q, %v; want this machine's release and arch", k, a, err)
	}
}
