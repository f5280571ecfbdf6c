package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// adminEnv runs `patchmesh admin` with exactly this environment (the test
// node's helper always sets PATCHMESH_URL).
func adminEnv(env map[string]string, stdin string, args ...string) result {
	var stdout, stderr bytes.Buffer
	a := &admin{stdin: strings.NewReader(stdin), stdout: &stdout, stderr: &stderr,
		getenv: func(k string) string { return env[k] }, now: time.Now}
	code := a.run(context.Background(), args)
	return result{code, stdout.String(), stderr.String()}
}

type contextList struct {
	Current  string        `json:"current"`
	Contexts []contextInfo `json:"contexts"`
}

func listContexts(t *testing.T, dir string) contextList {
	t.Helper()
	r := adminEnv(map[string]string{"PATCHMESH_CONFIG_DIR": dir}, "", "context", "list", "--output", "json")
	if r.code != exitOK {
		t.Fatalf("context list: exit %d, stderr %s", r.code, r.stderr)
	}
	var out contextList
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("context list --output json: %v\n%s", err, r.stdout)
	}
	return out
}

func TestAdminContextsPickTheNode(t *testing.T) {
	one, two := newTestNode(t), newTestNode(t)
	dir := filepath.Join(t.TempDir(), "admin-config")
	env := func(kv ...string) map[string]string {
		m := map[string]string{"PATCHMESH_CONFIG_DIR": dir}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	if r := adminEnv(env(), nodePassword+"\n", "login", "--password-stdin", "--server", one.srv.URL, "--context", "one"); r.code != exitOK {
		t.Fatalf("login to one: exit %d, stderr %s", r.code, r.stderr)
	}
	// No --context: the context is named after the server.
	if r := adminEnv(env("PATCHMESH_URL", two.srv.URL), nodePassword+"\n", "login", "--password-stdin"); r.code != exitOK {
		t.Fatalf("login to two: exit %d, stderr %s", r.code, r.stderr)
	}
	twoName := contextName(two.srv.URL)
	list := listContexts(t, dir)
	if len(list.Contexts) != 2 || list.Current != twoName || list.Contexts[0].Name != twoName && list.Contexts[1].Name != twoName {
		t.Fatalf("contexts = %+v, want one and %s, the latter current", list, twoName)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, adminConfigFile))
	r := adminEnv(env(), "", "context", "list")
	cfg, _ := loadConfig(dir)
	for name, l := range cfg.Contexts {
		if strings.Contains(r.stdout, l.Macaroon) || !strings.Contains(string(raw), l.Macaroon) {
			t.Errorf("context %s: the list shows its macaroon, or the file lacks it", name)
		}
		if !strings.Contains(r.stdout, name) || !strings.Contains(r.stdout, l.Server) {
			t.Errorf("context list lacks %s at %s:\n%s", name, l.Server, r.stdout)
		}
	}
	if got := fileMode(t, filepath.Join(dir, adminConfigFile)); got != 0o600 {
		t.Errorf("config file mode = %o, want 600", got)
	}

	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want *testNode
	}{
		{"the current context", env(), nil, two},
		{"--context", env("PATCHMESH_URL", two.srv.URL), []string{"--context", "one"}, one},
		{"PATCHMESH_CONTEXT", env("PATCHMESH_CONTEXT", "one"), nil, one},
		{"PATCHMESH_URL", env("PATCHMESH_URL", one.srv.URL), nil, one},
		{"--server beats PATCHMESH_CONTEXT", env("PATCHMESH_CONTEXT", "one"), []string{"--server", two.srv.URL}, two},
		{"--context beats PATCHMESH_URL", env("PATCHMESH_URL", one.srv.URL), []string{"--context", twoName}, two},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b1, b2 := one.requestCount(), two.requestCount()
			r := adminEnv(tc.env, "", append([]string{"tiers", "list"}, tc.args...)...)
			if r.code != exitOK {
				t.Fatalf("tiers list: exit %d, stderr %s", r.code, r.stderr)
			}
			got1, got2 := one.requestCount()-b1, two.requestCount()-b2
			if (tc.want == one) != (got1 == 1) || (tc.want == two) != (got2 == 1) || got1+got2 != 1 {
				t.Errorf("requests to one: %d, to two: %d; want one request to the %s node", got1, got2, map[bool]string{true: "first", false: "second"}[tc.want == one])
			}
		})
	}

	// A context named with another server is refused before any request.
	b2 := two.requestCount()
	if r := adminEnv(env(), "", "tiers", "list", "--context", "one", "--server", two.srv.URL); r.code != exitAuth || two.requestCount() != b2 {
		t.Errorf("--context one --server two: exit %d, stderr %s; want %d and no request to two", r.code, r.stderr, exitAuth)
	}
	if r := adminEnv(env(), "", "tiers", "list", "--context", "nosuch"); r.code != exitAuth || !strings.Contains(r.stderr, "nosuch") {
		t.Errorf("--context nosuch: exit %d, stderr %q; want %d naming the context", r.code, r.stderr, exitAuth)
	}
	if r := adminEnv(env(), "", "context", "use", "nosuch"); r.code != exitNotFound {
		t.Errorf("context use nosuch: exit %d, want %d", r.code, exitNotFound)
	}

	// context use changes where a plain command goes.
	if r := adminEnv(env(), "", "context", "use", "one"); r.code != exitOK {
		t.Fatalf("context use one: exit %d, stderr %s", r.code, r.stderr)
	}
	b1 := one.requestCount()
	if r := adminEnv(env(), "", "tiers", "list"); r.code != exitOK || one.requestCount() != b1+1 {
		t.Errorf("tiers list after context use one: exit %d, %d requests to one; want 1", r.code, one.requestCount()-b1)
	}

	// logout forgets the chosen context only; context remove the named one.
	if r := adminEnv(env(), "", "logout"); r.code != exitOK {
		t.Fatalf("logout: exit %d, stderr %s", r.code, r.stderr)
	}
	if list := listContexts(t, dir); len(list.Contexts) != 1 || list.Contexts[0].Name != twoName || list.Current != "" {
		t.Errorf("contexts after logout of one = %+v, want only %s, none current", list, twoName)
	}
	if r := adminEnv(env(), "", "tiers", "list"); r.code != exitOK {
		t.Errorf("tiers list with the only context left: exit %d, stderr %s", r.code, r.stderr)
	}
	if r := adminEnv(env(), "", "context", "remove", twoName); r.code != exitOK {
		t.Fatalf("context remove: exit %d, stderr %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, adminConfigFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("config file with no context left: %v, want it gone", err)
	}
}

func TestAdminMigratesTheSingleLoginFile(t *testing.T) {
	n, other := newTestNode(t), newTestNode(t)
	n.login()
	l := currentLogin(t, n.cfgDir)
	old, _ := json.Marshal(map[string]any{"server": l.Server, "user": l.User, "macaroon": l.Macaroon, "expires": l.Expires})
	path := filepath.Join(n.cfgDir, adminConfigFile)
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}

	// Read as it is: the login works, as the current context.
	env := map[string]string{"PATCHMESH_CONFIG_DIR": n.cfgDir}
	if r := adminEnv(env, "", "tiers", "list"); r.code != exitOK {
		t.Fatalf("tiers list with an old login file: exit %d, stderr %s", r.code, r.stderr)
	}
	list := listContexts(t, n.cfgDir)
	if len(list.Contexts) != 1 || list.Current != contextName(l.Server) || list.Contexts[0].Server != l.Server {
		t.Fatalf("contexts of the old file = %+v, want one named %s for %s", list, contextName(l.Server), l.Server)
	}

	// The next change writes the new format, keeping the old login.
	if r := adminEnv(env, nodePassword+"\n", "login", "--password-stdin", "--server", other.srv.URL, "--context", "other"); r.code != exitOK {
		t.Fatalf("login to another node: exit %d, stderr %s", r.code, r.stderr)
	}
	var file adminConfig
	raw, _ := os.ReadFile(path)
	if err := json.Unmarshal(raw, &file); err != nil || len(file.Contexts) != 2 || file.Contexts[contextName(l.Server)].Macaroon != l.Macaroon || file.Current != "other" {
		t.Errorf("config after the next login = %s (%v), want both logins in contexts, other current", raw, err)
	}
	if got := fileMode(t, path); got != 0o600 {
		t.Errorf("config file mode = %o, want 600", got)
	}
}

func TestAdminEveryCommandHasHelp(t *testing.T) {
	n := newTestNode(t)
	before := n.requestCount()
	for _, c := range adminCommands {
		t.Run(c.name, func(t *testing.T) {
			for _, args := range [][]string{
				append(strings.Fields(c.name), "--help"),
				append([]string{"help"}, strings.Fields(c.name)...),
			} {
				r := n.admin("", args...)
				if r.code != exitOK || r.stderr != "" {
					t.Fatalf("%v: exit %d, stderr %q; want 0 and nothing on stderr", args, r.code, r.stderr)
				}
				for _, want := range []string{"Usage: patchmesh admin " + c.name, "Example:\n  patchmesh admin " + c.name, "--context NAME"} {
					if !strings.Contains(r.stdout, want) {
						t.Errorf("%v: help lacks %q:\n%s", args, want, r.stdout)
					}
				}
				if strings.Contains(r.stdout, "Commands:") {
					t.Errorf("%v printed the overview, want the command's own help:\n%s", args, r.stdout)
				}
			}
		})
	}
	r := n.admin("", "patches", "upload", "--help")
	for _, flag := range []string{"--kernel", "--arch", "--version", "--cve", "--description"} {
		if !strings.Contains(r.stdout, flag) {
			t.Errorf("patches upload --help lacks %s:\n%s", flag, r.stdout)
		}
	}
	r = n.admin("", "patches", "--help")
	if r.code != exitOK || !strings.Contains(r.stdout, "patches upload") || !strings.Contains(r.stdout, "patches promote-all") {
		t.Errorf("patches --help: exit %d, stdout %s; want the group's commands", r.code, r.stdout)
	}
	if n.requestCount() != before {
		t.Errorf("help sent %d requests to the node, want none", n.requestCount()-before)
	}
}

func TestAdminJSONErrors(t *testing.T) {
	n := newTestNode(t)
	for _, tc := range []struct {
		name   string
		login  bool
		args   []string
		exit   int
		code   string
		status int
	}{
		{"not logged in", false, []string{"tiers", "list"}, exitAuth, "not_logged_in", 0},
		{"usage", true, []string{"tiers", "add"}, exitUsage, "usage", 0},
		{"not found", true, []string{"patches", "show", "sha256:" + strings.Repeat("0", 64)}, exitNotFound, "not_found", 404},
		{"invalid", true, []string{"tiers", "add", "Not A Name"}, exitInvalid, "invalid_input", 400},
		{"conflict", true, []string{"tiers", "add", "edge"}, exitConflict, "conflict", 409},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.login {
				n.login()
			}
			r := n.admin("", append(tc.args, "--output", "json")...)
			var body errorBody
			dec := json.NewDecoder(strings.NewReader(r.stderr))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil {
				t.Fatalf("stderr is not the error envelope: %v\n%s", err, r.stderr)
			}
			e := body.Error
			if r.code != tc.exit || e.ExitCode != tc.exit || e.Code != tc.code || e.Status != tc.status || e.Message == "" {
				t.Errorf("exit %d, error %+v; want exit %d, code %s, status %d and a message", r.code, e, tc.exit, tc.code, tc.status)
			}
			if tc.status != 0 && e.RequestID == "" {
				t.Errorf("error %+v lacks the node's request ID", e)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing on failure", r.stdout)
			}
		})
	}
	// Text output keeps the text error.
	if r := n.admin("", "tiers", "add", "edge"); strings.HasPrefix(strings.TrimSpace(r.stderr), "{") {
		t.Errorf("text output printed a JSON error: %s", r.stderr)
	}
}

func TestAdminRefusalsSayWhatTheyMean(t *testing.T) {
	n := newTestNode(t)
	r := n.admin("wrong-password-here\n", "login", "--password-stdin")
	if r.code != exitAuth || !strings.Contains(r.stderr, "user name or password is wrong") {
		t.Errorf("login with a wrong password: exit %d, stderr %q; want %d saying the user name or password is wrong", r.code, r.stderr, exitAuth)
	}
	r2 := n.admin(nodePassword+"\n", "login", "--password-stdin", "--user", "nobody")
	if r2.code != exitAuth || !strings.Contains(r2.stderr, "user name or password is wrong") {
		t.Errorf("login as an unknown user: exit %d, stderr %q", r2.code, r2.stderr)
	}

	n.login()
	cfg, _ := loadConfig(n.cfgDir)
	l := cfg.Contexts[cfg.Current]
	l.Macaroon = "bm90LWEtbWFjYXJvb24"
	cfg.Contexts[cfg.Current] = l
	if err := saveConfig(n.cfgDir, cfg); err != nil {
		t.Fatal(err)
	}
	r = n.admin("", "tiers", "list")
	if r.code != exitAuth || !strings.Contains(r.stderr, "refused the login of context "+cfg.Current) || !strings.Contains(r.stderr, "admin login --context "+cfg.Current) {
		t.Errorf("a refused macaroon: exit %d, stderr %q; want %d, what it means and how to log in again", r.code, r.stderr, exitAuth)
	}
}

// TestCompletionScripts checks the scripts' syntax with each shell, and
// completes in a real bash as a user's TAB does.
func TestCompletionScripts(t *testing.T) {
	bin := binary(t)
	script := func(shell string) string {
		t.Helper()
		path := filepath.Join(t.TempDir(), "patchmesh."+shell)
		out, err := exec.Command(bin, "completion", shell).Output()
		if err != nil {
			t.Fatalf("patchmesh completion %s: %v", shell, err)
		}
		if err := os.WriteFile(path, out, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// zsh and fish are installed when missing, so that no shell's check is
	// ever skipped; a machine that cannot install them fails here.
	if out, err := exec.Command("../../scripts/shells.sh").CombinedOutput(); err != nil {
		t.Fatalf("scripts/shells.sh: %v\n%s", err, out)
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run(shell+" syntax", func(t *testing.T) {
			sh, err := exec.LookPath(shell)
			if err != nil {
				t.Fatalf("%s is not installed: %v", shell, err)
			}
			if out, err := exec.Command(sh, "-n", script(shell)).CombinedOutput(); err != nil {
				t.Errorf("%s -n: %v\n%s", shell, err, out)
			}
		})
	}
	// fish completes through its own completion machinery.
	if fish, err := exec.LookPath("fish"); err != nil {
		t.Errorf("fish: %v", err)
	} else {
		out, err := exec.Command(fish, "--no-config", "-c", "source "+shellQuote(script("fish"))+"; complete -C 'patchmesh admin pa'; complete -C 'patchmesh admin patches upload x --ke'").CombinedOutput()
		if f := strings.Fields(string(out)); err != nil || len(f) == 0 || f[0] != "patches" || !strings.Contains(string(out), "--kernel") {
			t.Errorf("fish completion = %q (%v), want patches, then --kernel", out, err)
		}
	}
	if r := run(context.Background(), []string{"completion", "tcsh"}, &bytes.Buffer{}, &bytes.Buffer{}); r != exitUsage {
		t.Errorf("completion tcsh: exit %d, want %d", r, exitUsage)
	}

	bashScript := script("bash")
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"patchmesh", "admin", "pa"}, "patches"},
		{[]string{"patchmesh", "ad"}, "admin"},
		{[]string{"patchmesh", "admin", "patches", "up"}, "upload"},
		{[]string{"patchmesh", "admin", "--output", "json", "patches", "pro"}, "promote promote-all"},
		{[]string{"patchmesh", "admin", "patches", "upload", "lp.ko", "--ker"}, "--kernel"},
		{[]string{"patchmesh", "admin", "context", "u"}, "use"},
		{[]string{"patchmesh", "admin", "tiers", "list", "--output", "j"}, "json"},
		{[]string{"patchmesh", "completion", "f"}, "fish"},
	} {
		t.Run(strings.Join(tc.words, " "), func(t *testing.T) {
			var words strings.Builder
			for _, w := range tc.words {
				words.WriteString(shellQuote(w) + " ")
			}
			prog := "source " + shellQuote(bashScript) + "\n" +
				"COMP_WORDS=(" + words.String() + ")\nCOMP_CWORD=" + strconv.Itoa(len(tc.words)-1) + "\n" +
				"_patchmesh\necho \"${COMPREPLY[*]}\"\n"
			out, err := exec.Command("bash", "--norc", "--noprofile", "-c", prog).CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("completing %q = %q, want %q", strings.Join(tc.words, " "), got, tc.want)
			}
		})
	}
}

// Logins run side by side, as a script logging in to every node at once
// runs them, each keep their context: the file is changed under a lock.
func TestAdminConcurrentLoginsKeepEveryContext(t *testing.T) {
	nodes := []*testNode{newTestNode(t), newTestNode(t)}
	dir := filepath.Join(t.TempDir(), "admin-config")
	const logins = 8
	codes := make(chan result, logins)
	for i := range logins {
		go func() {
			n := nodes[i%len(nodes)]
			codes <- adminEnv(map[string]string{"PATCHMESH_CONFIG_DIR": dir}, nodePassword+"\n",
				"login", "--password-stdin", "--server", n.srv.URL, "--context", fmt.Sprint("ctx-", i))
		}()
	}
	for range logins {
		if r := <-codes; r.code != exitOK {
			t.Errorf("login: exit %d, stderr %s", r.code, r.stderr)
		}
	}
	list := listContexts(t, dir)
	if len(list.Contexts) != logins {
		t.Errorf("%d contexts after %d concurrent logins, want all: %+v", len(list.Contexts), logins, list.Contexts)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("config dir holds %d entries, want only %s", len(entries), adminConfigFile)
	}
}
