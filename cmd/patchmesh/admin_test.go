package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/client"
)

func TestAdminLoginKeepsPrivateConfig(t *testing.T) {
	n := newTestNode(t)
	r := n.admin(nodePassword+"\n", "login", "--password-stdin")
	if r.code != exitOK {
		t.Fatalf("login: exit %d, want 0; stderr %s", r.code, r.stderr)
	}
	if got := fileMode(t, n.cfgDir); got != 0o700 {
		t.Errorf("config dir mode = %o, want 700", got)
	}
	path := filepath.Join(n.cfgDir, adminConfigFile)
	if got := fileMode(t, path); got != 0o600 {
		t.Errorf("config file mode = %o, want 600", got)
	}
	l := currentLogin(t, n.cfgDir)
	if l.Server != n.srv.URL || l.User != nodeAdmin || l.Macaroon == "" || l.Expires.IsZero() {
		t.Errorf("saved login = %+v, want server %s, user %s, a macaroon and its expiry", l, n.srv.URL, nodeAdmin)
	}
	if strings.Contains(r.stdout+r.stderr, l.Macaroon) {
		t.Error("login printed the macaroon; want it only in the config file")
	}
	entries, _ := os.ReadDir(n.cfgDir)
	if len(entries) != 1 {
		t.Errorf("config dir holds %d entries, want only %s", len(entries), adminConfigFile)
	}

	// The saved macaroon works for the next command.
	n.mustAdmin("tiers", "list")

	if r := n.admin("", "logout"); r.code != exitOK {
		t.Fatalf("logout: exit %d", r.code)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("config file after logout: %v, want it gone", err)
	}
	if r := n.admin("", "tiers", "list"); r.code != exitAuth || !strings.Contains(r.stderr, "not logged in") {
		t.Errorf("tiers list after logout: exit %d, stderr %q; want %d and 'not logged in'", r.code, r.stderr, exitAuth)
	}
}

func TestAdminLoginRefusedSavesNothing(t *testing.T) {
	n := newTestNode(t)
	r := n.admin("wrong-password-here\n", "login", "--password-stdin")
	if r.code != exitAuth {
		t.Errorf("login with a wrong password: exit %d, want %d", r.code, exitAuth)
	}
	if !strings.Contains(r.stderr, "unauthorized") || !strings.Contains(r.stderr, "request ID") {
		t.Errorf("stderr = %q, want the server's code and the request ID", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(n.cfgDir, adminConfigFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("config file after a refused login: %v, want none", err)
	}
	if r := n.admin("", "login"); r.code != exitUsage {
		t.Errorf("login without a terminal or --password-stdin: exit %d, want %d", r.code, exitUsage)
	}
}

func TestAdminSessionChecks(t *testing.T) {
	n := newTestNode(t)
	n.login()
	other := newTestNode(t)

	before := other.requestCount()
	r := n.admin("", "tiers", "list", "--server", other.srv.URL)
	if r.code != exitAuth || !strings.Contains(r.stderr, "not logged in") {
		t.Errorf("tiers list on another server: exit %d, stderr %q; want %d, not logged in", r.code, r.stderr, exitAuth)
	}
	if other.requestCount() != before {
		t.Error("the macaroon was sent to a server that did not issue it")
	}

	r = n.adminAt(time.Now().Add(241*time.Hour), "", "tiers", "list")
	if r.code != exitAuth || !strings.Contains(r.stderr, "expired") {
		t.Errorf("tiers list with an expired login: exit %d, stderr %q; want %d, expired", r.code, r.stderr, exitAuth)
	}

	cfg, _ := loadConfig(n.cfgDir)
	l := cfg.Contexts[cfg.Current]
	l.Macaroon = "bm90LWEtbWFjYXJvb24"
	cfg.Contexts[cfg.Current] = l
	if err := saveConfig(n.cfgDir, cfg); err != nil {
		t.Fatal(err)
	}
	if r := n.admin("", "tiers", "list"); r.code != exitAuth {
		t.Errorf("tiers list with a forged macaroon: exit %d, want %d; stderr %s", r.code, exitAuth, r.stderr)
	}
}

func TestAdminExitCodes(t *testing.T) {
	n := newTestNode(t, func(c *api.Config) { c.Limits.MaxUploadBytes = 1024 })
	n.login()
	n.mustAdmin("auth-tokens", "add", "edge", "fleet-a")
	small, _ := writePatchFile(t, []byte("small patch"))
	big, _ := writePatchFile(t, bytes.Repeat([]byte("x"), 2048))

	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"success", []string{"tiers", "list"}, exitOK},
		{"unknown command", []string{"frobnicate"}, exitUsage},
		{"unknown subcommand", []string{"tiers", "frobnicate"}, exitUsage},
		{"missing argument", []string{"tiers", "add"}, exitUsage},
		{"extra argument", []string{"tiers", "list", "extra"}, exitUsage},
		{"unknown flag", []string{"tiers", "list", "--frob"}, exitUsage},
		{"bad output format", []string{"--output", "yaml", "tiers", "list"}, exitUsage},
		{"bad valid-until", []string{"auth-tokens", "add", "edge", "x", "--valid-until", "soon"}, exitUsage},
		{"upload without metadata", []string{"patches", "upload", small}, exitUsage},
		{"upload of a missing file", []string{"patches", "upload", "/nonexistent/patch.ko", "--kernel", nodeKernel, "--arch", nodeArch, "--version", "1"}, exitUsage},
		{"conflict: duplicate tier", []string{"tiers", "add", "edge"}, exitConflict},
		{"conflict: tier in use", []string{"tiers", "remove", "edge"}, exitConflict},
		{"not found: patch", []string{"patches", "show", "sha256:" + strings.Repeat("0", 64)}, exitNotFound},
		{"not found: token", []string{"auth-tokens", "revoke", "0123456789abcdef"}, exitNotFound},
		{"invalid: tier name", []string{"tiers", "add", "Not A Name"}, exitInvalid},
		{"invalid: kernel, checked before upload", []string{"patches", "upload", small, "--kernel", "linux", "--arch", nodeArch, "--version", "1"}, exitInvalid},
		{"invalid: too large", []string{"patches", "upload", big, "--kernel", nodeKernel, "--arch", nodeArch, "--version", "1"}, exitInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := n.admin("", tc.args...)
			if r.code != tc.want {
				t.Errorf("patchmesh admin %s: exit %d, want %d; stderr %s", strings.Join(tc.args, " "), r.code, tc.want, r.stderr)
			}
			if tc.want == exitUsage && !strings.Contains(r.stderr, "--help") {
				t.Errorf("usage error without a pointer to --help: %q", r.stderr)
			}
		})
	}

	// A server that does not answer is a server error.
	n.srv.Close()
	if r := n.admin("", "tiers", "list"); r.code != exitServer {
		t.Errorf("tiers list against a closed server: exit %d, want %d", r.code, exitServer)
	}
}

func TestExitCodeByStatus(t *testing.T) {
	for status, want := range map[int]int{
		400: exitInvalid, 401: exitAuth, 403: exitAuth, 404: exitNotFound, 409: exitConflict,
		413: exitInvalid, 422: exitInvalid, 500: exitServer, 503: exitServer, 502: exitServer,
	} {
		err := fmt.Errorf("call: %w", &client.APIError{Status: status})
		if got := exitCode(err); got != want {
			t.Errorf("exit code for HTTP %d = %d, want %d", status, got, want)
		}
	}
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{usagef("x"), exitUsage},
		{fmt.Errorf("x: %w", client.ErrInsecureURL), exitUsage},
		{fmt.Errorf("x: %w", errNotLoggedIn), exitAuth},
		{fmt.Errorf("x: %w", client.ErrNotRegistered), exitAuth},
		{&catalog.InvalidError{Field: "kernel"}, exitInvalid},
		{fmt.Errorf("x: %w", client.ErrDigestMismatch), exitServer},
		{errors.New("network down"), exitServer},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exit code for %v = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestAdminHelpListsExitCodes(t *testing.T) {
	n := newTestNode(t)
	r := n.admin("", "--help")
	if r.code != exitOK {
		t.Fatalf("--help: exit %d", r.code)
	}
	for _, want := range []string{"Exit codes:", "2  usage error", "3  authentication", "4  not found", "5  conflict", "6  invalid input"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

func TestAdminTokenSecretPrintedOnce(t *testing.T) {
	n := newTestNode(t)
	n.login()
	for _, kind := range []struct{ cmd, prefix string }{{"auth-tokens", "pma_"}, {"sync-tokens", "pms_"}} {
		t.Run(kind.cmd, func(t *testing.T) {
			r := n.mustAdmin(kind.cmd, "add", "edge", "fleet-a", "--valid-until", "30d")
			if c := strings.Count(r.stdout, kind.prefix); c != 1 {
				t.Fatalf("add printed %d secrets, want exactly 1:\n%s", c, r.stdout)
			}
			i := strings.Index(r.stdout, kind.prefix)
			secret := strings.Fields(r.stdout[i:])[0]
			if !strings.Contains(r.stdout, "only this once") {
				t.Errorf("add output does not say the secret is shown once:\n%s", r.stdout)
			}
			list := n.mustAdmin(kind.cmd, "list")
			listJSON := n.mustAdmin(kind.cmd, "list", "--output", "json")
			parts := strings.SplitN(secret, "_", 3)
			if strings.Contains(list.stdout+listJSON.stdout, parts[2]) {
				t.Error("list shows the token's secret")
			}
			if !strings.Contains(list.stdout, parts[1]) || !strings.Contains(list.stdout, "fleet-a") || !strings.Contains(list.stdout, "live") {
				t.Errorf("list lacks the token's ID, name or status:\n%s", list.stdout)
			}

			n.mustAdmin(kind.cmd, "revoke", parts[1])
			if list := n.mustAdmin(kind.cmd, "list"); !strings.Contains(list.stdout, "revoked") {
				t.Errorf("list after revoke does not say revoked:\n%s", list.stdout)
			}
		})
	}

	// In JSON the secret is the server's "token" field, once.
	r := n.mustAdmin("auth-tokens", "add", "beta", "fleet-b", "--output", "json")
	var out struct {
		Token string        `json:"token"`
		Info  catalog.Token `json:"info"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("--output json is not JSON: %v\n%s", err, r.stdout)
	}
	if !strings.HasPrefix(out.Token, "pma_") || out.Info.Tier != "beta" || out.Info.Name != "fleet-b" || strings.Count(r.stdout, "pma_") != 1 {
		t.Errorf("JSON = %s, want the token once and its info on tier beta", r.stdout)
	}
}

func TestAdminJSONOutputIsTheServersJSON(t *testing.T) {
	n := newTestNode(t)
	n.login()
	// --output may come before or after the command.
	for _, args := range [][]string{{"--output", "json", "tiers", "list"}, {"tiers", "list", "--output", "json"}, {"tiers", "--output=json", "list"}} {
		r := n.mustAdmin(args...)
		var out struct {
			Tiers []catalog.Tier `json:"tiers"`
		}
		dec := json.NewDecoder(strings.NewReader(r.stdout))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&out); err != nil {
			t.Fatalf("%v: output is not {\"tiers\": [...]}: %v\n%s", args, err, r.stdout)
		}
		var names []string
		for _, tier := range out.Tiers {
			names = append(names, tier.Name)
		}
		if strings.Join(names, ",") != strings.Join(catalog.DefaultTiers, ",") {
			t.Errorf("%v: tiers = %v, want %v", args, names, catalog.DefaultTiers)
		}
	}

	r := n.mustAdmin("tiers", "list")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 1+len(catalog.DefaultTiers) || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("text output = %q, want a header and one line per tier", r.stdout)
	}
	col := strings.Index(lines[0], "POSITION")
	for _, ln := range lines[1:] {
		if len(ln) <= col || ln[col-1] != ' ' || ln[col] == ' ' {
			t.Errorf("table column POSITION not aligned at %d in %q", col, ln)
		}
	}

	// Commands whose answer has no body print the CLI's own JSON.
	n.mustAdmin("tiers", "add", "canary")
	r = n.mustAdmin("tiers", "remove", "canary", "--output", "json")
	var removed map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &removed); err != nil || removed["removed"] != "canary" {
		t.Errorf("tiers remove --output json = %q, want {\"removed\": \"canary\"}", r.stdout)
	}
}

func TestAdminUploadSendsDigestAndLength(t *testing.T) {
	n := newTestNode(t)
	n.login()
	content := []byte("a kernel live patch module\x00\x01\x02")
	path, digest := writePatchFile(t, content)

	r := n.mustAdmin("patches", "upload", path, "--kernel", nodeKernel, "--arch", nodeArch, "--version", "107.1",
		"--cve", "CVE-2024-1086", "--cve", "CVE-2024-26581", "--description", "fixes two bugs", "--output", "json")
	req := n.lastRequest(http.MethodPost, "/v1/admin/patches")
	if req == nil {
		t.Fatal("no upload request reached the node")
	}
	q := req.URL.Query()
	if q.Get("digest") != digest || q.Get("kernel") != nodeKernel || q.Get("arch") != nodeArch || q.Get("version") != "107.1" ||
		q.Get("cves") != "CVE-2024-1086,CVE-2024-26581" || q.Get("description") != "fixes two bugs" || q.Get("size") != fmt.Sprint(len(content)) {
		t.Errorf("upload query = %v, want digest %s and the metadata", q, digest)
	}
	if req.ContentLength != int64(len(content)) || len(req.TransferEncoding) != 0 {
		t.Errorf("upload Content-Length = %d, Transfer-Encoding %v; want %d and none", req.ContentLength, req.TransferEncoding, len(content))
	}
	var p catalog.Patch
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatalf("upload --output json: %v\n%s", err, r.stdout)
	}
	if p.Digest != digest || p.Size != int64(len(content)) || len(p.CVEs) != 2 || p.Tiers[0] != "edge" {
		t.Errorf("uploaded patch = %+v, want digest %s, size %d, 2 CVEs, on edge", p, digest, len(content))
	}
	stored, err := os.ReadFile(n.blobPath(digest))
	if err != nil || !bytes.Equal(stored, content) {
		t.Errorf("the node stored %q (%v), want the file's bytes", stored, err)
	}
	if r.stderr != "" {
		t.Errorf("stderr = %q, want nothing (no progress when stderr is not a terminal)", r.stderr)
	}

	// Uploading it again under the same metadata is a repeat, answered
	// with the existing patch; under another version it conflicts.
	if r := n.admin("", "patches", "upload", path, "--kernel", nodeKernel, "--arch", nodeArch, "--version", "107.1"); r.code != exitOK || !strings.Contains(r.stdout, "Already uploaded") || !strings.Contains(r.stdout, digest) {
		t.Errorf("identical second upload: exit %d, stdout %q; want 0 and 'Already uploaded %s'", r.code, r.stdout, digest)
	}
	if r := n.admin("", "patches", "upload", path, "--kernel", nodeKernel, "--arch", nodeArch, "--version", "107.9"); r.code != exitConflict {
		t.Errorf("upload of the same file as another version: exit %d, want %d", r.code, exitConflict)
	}
}

// TestAdminUploadStreams uploads a file far larger than the memory the
// whole upload (client and node, same process) may allocate: reading the
// file into memory would blow the budget.
func TestAdminUploadStreams(t *testing.T) {
	n := newTestNode(t)
	n.login()
	const size = 64 << 20
	path := filepath.Join(t.TempDir(), "big.ko")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("patch header")
	if err := f.Truncate(size); err != nil { // sparse: cheap to make
		t.Fatal(err)
	}
	f.Close()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := n.mustAdmin("patches", "upload", path, "--kernel", nodeKernel, "--arch", nodeArch, "--version", "2")
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/4 {
		t.Errorf("uploading %d MiB allocated %d MiB, want under %d MiB (streamed, not buffered)", size>>20, alloc>>20, size>>22)
	}
	if !strings.Contains(r.stdout, "64.0 MiB") {
		t.Errorf("upload output = %q, want the size", r.stdout)
	}
}

func TestAdminPatchLifecycle(t *testing.T) {
	n := newTestNode(t)
	n.login()
	path1, d1 := writePatchFile(t, []byte("patch one"))
	path2, d2 := writePatchFile(t, []byte("patch two"))
	n.mustAdmin("patches", "upload", path1, "--kernel", nodeKernel, "--arch", nodeArch, "--version", "107.1")
	n.mustAdmin("patches", "upload", path2, "--kernel", nodeKernel, "--arch", nodeArch, "--version", "107.2")

	list := n.mustAdmin("patches", "list", "--tier", "edge")
	if !strings.Contains(list.stdout, d1) || !strings.Contains(list.stdout, d2) {
		t.Errorf("patches list lacks the uploads:\n%s", list.stdout)
	}
	show := n.mustAdmin("patches", "show", d1)
	if !strings.Contains(show.stdout, "107.1") || !strings.Contains(show.stdout, nodeKernel) {
		t.Errorf("patches show:\n%s", show.stdout)
	}

	// promote by version, then promote-all.
	r := n.mustAdmin("patches", "promote", "107.1", "beta", "--output", "json")
	var promoted struct{ Patches []catalog.Patch }
	json.Unmarshal([]byte(r.stdout), &promoted)
	if len(promoted.Patches) != 1 || promoted.Patches[0].Digest != d1 {
		t.Errorf("promote 107.1 beta = %s, want patch %s", r.stdout, d1)
	}
	r = n.mustAdmin("patches", "promote-all", "edge", "beta", "--output", "json")
	var all struct{ Promoted int }
	if err := json.Unmarshal([]byte(r.stdout), &all); err != nil || all.Promoted != 1 {
		t.Errorf("promote-all edge beta = %s, want {\"promoted\": 1}", r.stdout)
	}
	if list := n.mustAdmin("patches", "list", "--tier", "beta", "--output", "json"); strings.Count(list.stdout, `"digest"`) != 2 {
		t.Errorf("beta after promotions:\n%s", list.stdout)
	}

	n.mustAdmin("patches", "withdraw", d2)
	if list := n.mustAdmin("patches", "list"); strings.Contains(list.stdout, d2) {
		t.Errorf("patches list shows the withdrawn patch without --withdrawn:\n%s", list.stdout)
	}
	if list := n.mustAdmin("patches", "list", "--withdrawn"); !strings.Contains(list.stdout, "withdrawn") {
		t.Errorf("patches list --withdrawn:\n%s", list.stdout)
	}

	storage := n.mustAdmin("storage", "list")
	if !strings.Contains(storage.stdout, d1) || !strings.Contains(storage.stdout, d2) {
		t.Errorf("storage list:\n%s", storage.stdout)
	}
	n.mustAdmin("patches", "remove", d2)
	if r := n.admin("", "patches", "show", d2); r.code != exitNotFound {
		t.Errorf("show after remove: exit %d, want %d", r.code, exitNotFound)
	}

	// An orphan file is reported by storage refresh.
	os.Remove(n.blobPath(d1))
	r = n.mustAdmin("storage", "refresh")
	if !strings.Contains(r.stdout, "Missing (patches whose file is gone): 1") || !strings.Contains(r.stdout, d1) {
		t.Errorf("storage refresh:\n%s", r.stdout)
	}
}

func TestAdminHashPassword(t *testing.T) {
	n := newTestNode(t)
	r := n.admin("a-long-enough-password\n", "hash-password", "--password-stdin", "--cost", "4")
	if r.code != exitOK {
		t.Fatalf("hash-password: exit %d, stderr %s", r.code, r.stderr)
	}
	hash := strings.TrimSpace(r.stdout)
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("a-long-enough-password")); err != nil {
		t.Errorf("printed hash %q does not verify the password: %v", hash, err)
	}
	if c, _ := bcrypt.Cost([]byte(hash)); c != 4 {
		t.Errorf("hash cost = %d, want 4", c)
	}
	if r := n.admin("short\n", "hash-password", "--password-stdin"); r.code != exitInvalid {
		t.Errorf("hash-password of a short password: exit %d, want %d", r.code, exitInvalid)
	}
	if r := n.admin("a-long-enough-password\n", "hash-password", "--password-stdin", "--cost", "99"); r.code != exitUsage {
		t.Errorf("hash-password --cost 99: exit %d, want %d", r.code, exitUsage)
	}
}

func TestParseValidUntil(t *testing.T) {
	now := time.Date(2026, 11, 23, 9, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"2027-01-31T00:00:00Z", time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)},
		{"2027-01-31T02:00:00+02:00", time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)},
		{"720h", now.Add(720 * time.Hour)},
		{"90d", now.AddDate(0, 0, 90)},
	} {
		got, err := parseValidUntil(tc.in, now)
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("parseValidUntil(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "soon", "-5h", "0d", "2027-01-31"} {
		if _, err := parseValidUntil(bad, now); err == nil {
			t.Errorf("parseValidUntil(%q) succeeded, want an error", bad)
		}
	}
}

func TestProgressRedrawsAtMostTenTimesASecond(t *testing.T) {
	var buf bytes.Buffer
	clock := time.Unix(0, 0)
	p := &progress{w: &buf, label: "uploading", now: func() time.Time { return clock }}
	for i := int64(1); i <= 100; i++ {
		clock = clock.Add(10 * time.Millisecond) // 100 updates over one second
		p.update(i*1024, 100*1024)
	}
	p.finish()
	draws := strings.Count(buf.String(), "\r")
	if draws < 10 || draws > 12 {
		t.Errorf("%d redraws for one second of updates, want about 10", draws)
	}
	if !strings.Contains(buf.String(), "100.0 KiB / 100.0 KiB (100%)") || !strings.HasSuffix(buf.String(), "\n") {
		t.Errorf("progress = %q, want a final 100%% line ended by a newline", buf.String())
	}
	if newProgress(&buf, "x") != nil {
		t.Error("newProgress drew on a buffer; want nothing when not a terminal")
	}
	var nilBar *progress
	nilBar.update(1, 2) // must not panic
	nilBar.finish()
}

func TestParseArgsTakesFlagsAnywhere(t *testing.T) {
	fs := newFlagSet("t")
	v := fs.String("kernel", "", "")
	b := fs.Bool("withdrawn", false, "")
	pos, err := parseArgs(fs, []string{"a", "--kernel", "k", "b", "--withdrawn", "--", "--c"})
	if err != nil || *v != "k" || !*b || strings.Join(pos, " ") != "a b --c" {
		t.Errorf("parseArgs = %q, %v (kernel %q, withdrawn %v); want [a b --c], k, true", pos, err, *v, *b)
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestTableCleansControlCharacters(t *testing.T) {
	var buf bytes.Buffer
	table(&buf, []string{"A", "B"}, [][]string{{"x\x1b[2Jy", "tab\there"}})
	if strings.ContainsAny(buf.String(), "\x1b\t") {
		t.Errorf("table output %q holds control characters from the cells", buf.String())
	}
}

// currentLogin is the login of the current context.
func currentLogin(t *testing.T, dir string) adminLogin {
	t.Helper()
	cfg, err := loadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	l, ok := cfg.Contexts[cfg.Current]
	if !ok {
		t.Fatalf("no current context in %+v", cfg)
	}
	return l
}

// patchmesh --help names every admin command group and every client
// command.
func TestMainHelpListsEveryCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"--help"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("--help: exit %d, stderr %s", code, stderr.String())
	}
	help := stdout.String()
	admin, _, _ := strings.Cut(help[strings.Index(help, "patchmesh admin"):], "patchmesh hub-key")
	for _, g := range adminGroups() {
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(g) + `\b`).MatchString(admin) {
			t.Errorf("--help lacks the admin command %q:\n%s", g, admin)
		}
	}
	_, clientHelp, _ := strings.Cut(help, "patchmesh client")
	clientHelp, _, _ = strings.Cut(clientHelp, "patchmesh version")
	for _, c := range []string{"register", "refresh", "status", "nodes"} {
		if !strings.Contains(clientHelp, c) {
			t.Errorf("--help lacks the client command %q:\n%s", c, clientHelp)
		}
	}
}

// Every command `patchmesh --help` lists completes at the top level, with
// its own words.
func TestCompletionKnowsEveryCommand(t *testing.T) {
	var top []string
	paths := map[string]bool{}
	for _, n := range completionTree() {
		paths[n.path] = true
		if n.path == "patchmesh" {
			top = n.words
		}
	}
	listed := regexp.MustCompile(`(?m)^  patchmesh ([a-z-]+)`).FindAllStringSubmatch(mainUsage, -1)
	if len(listed) < 10 {
		t.Fatalf("found %d commands in the help, want every one: %q", len(listed), mainUsage)
	}
	for _, m := range listed {
		if !slices.Contains(top, m[1]) || !paths["patchmesh "+m[1]] {
			t.Errorf("completion lacks the command %q that --help lists (top level %v)", m[1], top)
		}
	}
}
