package main

// The README is executable: this test reads README.md, takes the fenced sh
// blocks of its walk-through, federation and gossip sections, and runs
// every command as written, through sh, against nodes built from this tree
// by `make run` and `patchmesh serve`. Only what a person would paste is
// substituted: the password a node printed (typed at the login prompt, on
// a terminal) and the tokens and keys earlier commands printed (the
// placeholders pma_…, pms_…, ed25519:… and …). Config files shown as
// comments ("#   edge.yaml:" and the indented lines under it) are written
// with the same substitutions.
//
// The README uses fixed addresses (127.0.0.1:8080, 127.0.0.2:8080, gossip
// on :7946), so the test runs in a network namespace of its own when it
// can (unshare, as root), where those ports are free whatever else runs on
// the machine; elsewhere on the machine's loopback.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeSections are the README sections whose commands the test runs, in
// this order; each is found by its heading.
var readmeSections = []string{
	"Five-minute walk-through",
	"A federation of nodes",
	"Gossip, failover and the nearest node",
	"Rollouts",
}

const readmeNetnsEnv = "PATCHMESH_README_NETNS"

func TestREADMECommandsRunAsWritten(t *testing.T) {
	if os.Getenv(readmeNetnsEnv) == "" && !testing.Short() {
		if ran := runInOwnNetns(t); ran {
			return
		}
	}
	if testing.Short() {
		t.Skip("runs the README against real nodes; not in -short")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []shBlock
	for _, title := range readmeSections {
		bs := shBlocks(string(readme), title)
		if len(bs) == 0 {
			t.Fatalf("README.md: no sh block under the heading %q", title)
		}
		blocks = append(blocks, bs...)
	}
	for _, addr := range []string{"127.0.0.1:8080", "127.0.0.2:8080"} {
		if l, err := net.Listen("tcp", addr); err != nil {
			t.Fatalf("the README's node address %s is taken on this machine (%v); run as root for a private network namespace, or free it", addr, err)
		} else {
			l.Close()
		}
	}

	r := newReadmeRun(t, root)
	defer r.stopAll()
	for _, b := range blocks {
		for _, st := range b.steps {
			if st.configName != "" {
				r.writeConfig(st.configName, st.configBody)
			} else {
				r.run(st.command)
			}
		}
	}

	// What the README's comments promise, checked on what the commands printed.
	for _, w := range []struct{ cmd, want string }{
		{"patchmesh client --state-dir ./pm-client status", "applied"},
		{"patchmesh admin machines list", "applied"},
		{"patchmesh admin patches list", "107.1"},
		{"patchmesh admin topology", "edge-1"},
		{"patchmesh admin topology", "hub-1"},
	} {
		out, ok := r.outputs[w.cmd]
		if !ok {
			t.Errorf("the README no longer runs %q; this test checks its output", w.cmd)
			continue
		}
		if !strings.Contains(out, w.want) {
			t.Errorf("%s printed:\n%s\nwant it to show %q", w.cmd, out, w.want)
		}
	}
}

// runInOwnNetns runs this test again in a new network namespace with its
// loopback up. It reports false when no namespace can be made (not root),
// and the test then runs here.
func runInOwnNetns(t *testing.T) bool {
	if os.Geteuid() != 0 {
		return false
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return false
	}
	if out, err := exec.Command("unshare", "--net", "--", "true").CombinedOutput(); err != nil {
		t.Logf("no network namespace (%v: %s); running on this machine's loopback", err, bytes.TrimSpace(out))
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--net", "--fork", "--kill-child", "--",
		"sh", "-c", `ip link set lo up && exec "$@"`, "sh",
		os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), readmeNetnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in a network namespace of its own:\n%s", out)
	if err != nil {
		t.Fatalf("the README run failed: %v", err)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("the README run did not pass")
	}
	return true
}

// shBlock is one fenced sh block, as steps in the order they appear.
type shBlock struct {
	steps []shStep
}

// shStep is a command (comments stripped, continuation lines joined), or
// a config file written in comments: "#   NAME.yaml:" and the lines
// indented under it.
type shStep struct {
	command    string
	configName string
	configBody string
}

// shBlocks returns the sh blocks under the "## title" heading, up to the
// next heading of that level.
func shBlocks(md, title string) []shBlock {
	var blocks []shBlock
	in, fenced := false, false
	var lines []string
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(strings.TrimPrefix(line, "## ")) == title
			continue
		}
		if !in {
			continue
		}
		switch {
		case !fenced && strings.TrimSpace(line) == "```sh":
			fenced, lines = true, nil
		case fenced && strings.TrimSpace(line) == "```":
			fenced = false
			blocks = append(blocks, parseShBlock(lines))
		case fenced:
			lines = append(lines, line)
		}
	}
	return blocks
}

var commentFileRE = regexp.MustCompile(`^#(\s+)([A-Za-z0-9._-]+\.yaml):\s*$`)

func parseShBlock(lines []string) shBlock {
	var b shBlock
	var cur *shStep
	indent := 0
	pending := ""
	for _, line := range lines {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") && pending == "" {
			if m := commentFileRE.FindStringSubmatch(trimmed); m != nil {
				b.steps = append(b.steps, shStep{configName: m[2]})
				cur, indent = &b.steps[len(b.steps)-1], len(m[1])
				continue
			}
			body := strings.TrimPrefix(trimmed, "#")
			if cur != nil && len(body)-len(strings.TrimLeft(body, " ")) > indent {
				cur.configBody += body[indent+2:] + "\n"
				continue
			}
			cur = nil
			continue
		}
		cur = nil
		if trimmed == "" {
			continue
		}
		code := stripComment(line)
		if strings.HasSuffix(code, "\\") {
			pending += strings.TrimSuffix(code, "\\") + " "
			continue
		}
		b.steps = append(b.steps, shStep{command: strings.Join(strings.Fields(pending+code), " ")})
		pending = ""
	}
	return b
}

// stripComment cuts a shell comment: a # outside quotes that starts a word.
func stripComment(line string) string {
	var quote rune
	prev := ' '
	for i, c := range line {
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '#' && (prev == ' ' || prev == '\t'):
			return strings.TrimRight(line[:i], " \t")
		}
		prev = c
	}
	return strings.TrimRight(line, " \t")
}

// readmeRun is the state of a reader following the README: the shell's
// exports, the nodes running in other terminals, and what was printed.
type readmeRun struct {
	t       *testing.T
	root    string // the repository, where make runs
	dir     string // the reader's working directory
	env     []string
	exports []string
	nodes   []*server
	// printed values to paste: placeholder → last value printed.
	paste    map[string]string
	password string
	outputs  map[string]string
}

func newReadmeRun(t *testing.T, root string) *readmeRun {
	work := t.TempDir()
	home := filepath.Join(work, "home")
	dir := filepath.Join(work, "cwd")
	for _, d := range []string{home, dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The reader's own machine: a fresh home and data dir, bin/ on PATH;
	// Go's caches stay where they are, so that make run builds quickly.
	goEnv := func(k string) string {
		out, err := exec.Command("go", "env", k).Output()
		if err != nil {
			t.Fatalf("go env %s: %v", k, err)
		}
		return k + "=" + strings.TrimSpace(string(out))
	}
	env := cleanEnv(goEnv("GOCACHE"), goEnv("GOMODCACHE"), goEnv("GOPATH"),
		"HOME="+home, "XDG_DATA_HOME="+filepath.Join(work, "data"),
		"PATH="+filepath.Join(root, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	return &readmeRun{t: t, root: root, dir: dir, env: env, paste: map[string]string{}, outputs: map[string]string{}}
}

var (
	pastedRE = []struct {
		placeholder string
		re          *regexp.Regexp
	}{
		{"pma_…", regexp.MustCompile(`pma_[A-Za-z0-9_-]+`)},
		{"pms_…", regexp.MustCompile(`pms_[A-Za-z0-9_-]+`)},
		{"ed25519:…", regexp.MustCompile(`ed25519:[A-Za-z0-9_-]{43}`)},
		// A gossip key: a line of standard base64 alone.
		{"…", regexp.MustCompile(`(?m)^[A-Za-z0-9+/]{22,}={0,2}$`)},
	}
	readmePasswordRE = regexp.MustCompile(`password: (\S+)`)
)

// substitute pastes the printed values over their placeholders.
func (r *readmeRun) substitute(s string) string {
	for _, p := range pastedRE { // longest placeholders first
		if v, ok := r.paste[p.placeholder]; ok {
			s = strings.ReplaceAll(s, p.placeholder, v)
		}
	}
	if strings.Contains(s, "…") {
		r.t.Fatalf("nothing printed so far to paste into %q", s)
	}
	return s
}

func (r *readmeRun) remember(out string) {
	for _, p := range pastedRE {
		if all := p.re.FindAllString(out, -1); len(all) > 0 {
			r.paste[p.placeholder] = all[len(all)-1]
		}
	}
}

// writeConfig writes (or extends) a config file a block shows in its
// comments, in the reader's working directory. Changing the file of a
// running node means restarting the nodes, which the README then starts
// again: they are stopped first, as the README asks.
func (r *readmeRun) writeConfig(name, body string) {
	for _, n := range r.nodes {
		if strings.Contains(strings.Join(n.cmd.Args, " "), "--config "+name) {
			r.t.Logf("%s changes: stopping the running nodes", name)
			r.stopAll()
			break
		}
	}
	body = r.substitute(body)
	r.t.Logf("%s gets:\n%s", name, body)
	fh, err := os.OpenFile(filepath.Join(r.dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteString(body); err != nil {
		r.t.Fatal(err)
	}
}

// run runs one README command as the reader would.
func (r *readmeRun) run(command string) {
	t := r.t
	command = r.substitute(command)
	t.Logf("$ %s", command)
	switch {
	case strings.HasPrefix(command, "export "):
		r.export(command)
		return
	case command == "make run" || strings.HasPrefix(command, "patchmesh serve"):
		r.startNode(command)
		return
	}
	script := strings.Join(append(append([]string{}, r.exports...), command), "\n")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Dir, cmd.Env = r.dir, r.env
	var stdout bytes.Buffer
	stderr := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	var err error
	if strings.Contains(command, " login") {
		err = r.runAtPrompt(cmd, stderr)
	} else {
		err = cmd.Run()
	}
	t.Logf("%s%s", stdout.String(), stderr.String())
	if err != nil {
		t.Fatalf("README command %q failed: %v\nstdout: %s\nstderr: %s", command, err, stdout.String(), stderr.String())
	}
	r.remember(stdout.String())
	r.outputs[command] = stdout.String()
}

// exportName finds the names an export line sets.
var exportName = regexp.MustCompile(`(?:^export|\s)([A-Za-z_][A-Za-z0-9_]*)=`)

// export evaluates an export line once, as the reader's shell does, and
// keeps the values it set for every later command: a value computed by a
// command (HUB_KEY=$(…)) is the one it had then, not one asked again of
// whatever node a later section points PATCHMESH_URL at.
func (r *readmeRun) export(command string) {
	t := r.t
	var names []string
	for _, m := range exportName.FindAllStringSubmatch(command, -1) {
		names = append(names, m[1])
	}
	script := strings.Join(append(append([]string{}, r.exports...), command), "\n")
	for _, name := range names {
		script += "\nprintf '%s\\0' \"$" + name + "\""
	}
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir, cmd.Env = r.dir, r.env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("README command %q failed: %v", command, err)
	}
	values := strings.Split(string(out), "\x00")
	if len(values) != len(names)+1 {
		t.Fatalf("README command %q: evaluating it gave %q, want %d values", command, out, len(names))
	}
	for i, name := range names {
		if values[i] == "" {
			t.Fatalf("README command %q left %s empty", command, name)
		}
		r.exports = append(r.exports, "export "+name+"='"+strings.ReplaceAll(values[i], "'", `'\''`)+"'")
	}
}

// runAtPrompt runs a command that asks for a password on its terminal,
// and types the password the last node printed once the prompt shows on
// stderr.
func (r *readmeRun) runAtPrompt(cmd *exec.Cmd, stderr *lockedBuffer) error {
	if r.password == "" {
		r.t.Fatal("a login, but no node printed a password")
	}
	master, tty := openPTY(r.t)
	cmd.Stdin = tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	tty.Close()
	// Wait for the prompt before typing, as a person does: the terminal
	// echoes nothing while the password is read.
	go io.Copy(io.Discard, master)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), "Password") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			return fmt.Errorf("no password prompt within 30s; stderr showed %q", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := io.WriteString(master, r.password+"\n"); err != nil {
		return err
	}
	return cmd.Wait()
}

// startNode starts a long-running command, as in a terminal of its own,
// and waits for its node to listen.
func (r *readmeRun) startNode(command string) {
	t := r.t
	s := &server{stderr: &lockedBuffer{}, done: make(chan struct{})}
	script := strings.Join(append(append([]string{}, r.exports...), "exec "+command), "\n")
	s.cmd = exec.Command("sh", "-c", script)
	s.cmd.Dir, s.cmd.Env = r.dir, r.env
	if command == "make run" {
		s.cmd.Dir = r.root
	}
	s.cmd.Stdout, s.cmd.Stderr = s.stderr, s.stderr
	// Its own process group, so that stopping make stops the node it runs.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	r.nodes = append(r.nodes, s)
	deadline := time.Now().Add(5 * time.Minute) // make run may build first
	for !strings.Contains(s.stderr.String(), "patchmesh listening on") {
		select {
		case <-s.done:
			t.Fatalf("%q exited (%v):\n%s", command, s.err, s.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q did not listen within 5 minutes:\n%s", command, s.stderr.String())
		}
	}
	t.Logf("%q is up", command)
	if m := readmePasswordRE.FindStringSubmatch(s.stderr.String()); m != nil {
		r.password = m[1]
	}
}

// stopAll stops every node with SIGTERM, as ^C in its terminal would, and
// wants a clean exit.
func (r *readmeRun) stopAll() {
	for _, n := range r.nodes {
		select {
		case <-n.done:
			continue
		default:
		}
		syscall.Kill(-n.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
			<-n.done
			r.t.Errorf("%s did not stop within 30s of SIGTERM:\n%s", strings.Join(n.cmd.Args, " "), n.stderr.String())
		}
		var ee *exec.ExitError
		if n.err != nil && !errors.As(n.err, &ee) {
			r.t.Errorf("%s: %v", strings.Join(n.cmd.Args, " "), n.err)
		}
	}
	r.nodes = nil
}

func TestREADMEParsing(t *testing.T) {
	md := "# x\n\n## Other\n\n```sh\nnot me\n```\n\n## Wanted\n\ntext\n\n```sh\n" +
		"export A=1   # set it\n" +
		"# a comment\n" +
		"cmd --x 'a # b' \\\n    --y \"c#d\"   # trailing\n" +
		"#   conf.yaml:\n" +
		"#     key: {a: 1}   # not a shell comment in YAML\n" +
		"#     list: [x]\n" +
		"# prose again\n" +
		"last\n" +
		"```\n\n```go\nignored\n```\n\n## Next\n\n```sh\nnot me either\n```\n"
	bs := shBlocks(md, "Wanted")
	if len(bs) != 1 {
		t.Fatalf("want one sh block under Wanted, got %d", len(bs))
	}
	want := []shStep{
		{command: "export A=1"},
		{command: `cmd --x 'a # b' --y "c#d"`},
		{configName: "conf.yaml", configBody: "key: {a: 1}   # not a shell comment in YAML\nlist: [x]\n"},
		{command: "last"},
	}
	got := bs[0].steps
	if len(got) != len(want) {
		t.Fatalf("steps: got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("step %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}
