package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/client"
	"github.com/patchmesh/patchmesh/federation"
)

const clientUsage = `Usage: patchmesh client [--server URL] [--state-dir DIR] [--machine-id ID]
                        [--hub-key ed25519:…] [--ca-file PEM] [--allow-http]
                        [--proxy URL] [--output text|json] COMMAND ...

The machine side of patchmesh. Flags may also follow the command.

The machine registers with the node at --server once that node proves it
is one the hub admitted (its signed admission in the node's roster, checked
against the pinned hub key, and its signature over a fresh nonce). It learns
from it the nodes serving its tier, keeps those whose admission on its hub
tier verifies, and ranks them by round-trip time. Every later command goes
to the nearest node that answers; when a node is down, answers 5xx, hands
over a stale hub heartbeat or sends no byte of a download for 30 s, the
next one is tried, and the machine registers
there the first time with the machine credential a node issued it, after
that node's hello verified. The auth token and the machine ID go to the
first contact only.

Every offer is verified before anything is downloaded: it must carry the
hub's signed record, made by a hub key the machine pins, for the machine's
hub tier, kernel and arch, and must not be older than the patch applied
last unless the hub's signed withdrawal of that patch comes with it. The
bytes are checked against the signed digest and size.

Commands:
  register AUTH_TOKEN --hub-key ed25519:… [--hub-tier T] [--kernel K] [--arch A]
      register this machine with the node at --server ($PATCHMESH_URL);
      AUTH_TOKEN "-" reads the token from standard input. The kernel
      defaults to the running one's release (on Ubuntu ABI.BUILD-FLAVOUR
      from /proc/version_signature, elsewhere uname -r), the arch to
      uname -m. The hub key (patchmesh admin hub-key prints it) is pinned,
      and the machine's tier is read from the hub-signed record of the auth
      token; --hub-tier is needed only for a token made on a relay or edge
      instead of the hub. The pins, the machine token and credential and
      the node ranking are saved in the state directory (mode 0600); the
      auth token is not. A node the hub has not admitted is refused before
      it is sent anything (a hub admits itself at its first start).
  status
      print the nearest node's record of this machine, and how fresh the
      machine's view is (the newest hub heartbeat verified, STALE if old)
  nodes
      measure the nodes serving this machine's tier again and print them,
      nearest first
  refresh [--apply-hook CMD] [--kernel K] [--arch A]
      verify the offer of the newest patch for this kernel, download it and
      verify its SHA-256, keep it in the state directory, run CMD (sh -c)
      with PATCHMESH_PATCH_FILE, PATCHMESH_PATCH_VERSION and
      PATCHMESH_PATCH_DIGEST set, and check in: applied (CMD exit 0),
      apply-failed (non-zero), unapplied (no CMD), nothing-to-apply, or
      check-failed (the offer was refused, or the bytes did not match).

Options:
  --server URL     the node to register with (register only), default
                   $PATCHMESH_URL; later commands use the nearest node that
                   answers
  --state-dir DIR  default /var/lib/patchmesh-client as root, else the user
                   config directory's patchmesh-client
  --machine-id ID  this machine's ID, sent when registering at a node;
                   default: the contents of /etc/machine-id
  --hub-key KEY    a hub public key to pin at registration (repeatable);
                   default from PATCHMESH_HUB_KEY (comma-separated)
  --hub-tier T     the machine's hub tier, for a token not made at the hub
  --ca-file PEM    extra CAs trusted besides the system's
  --allow-http     allow plain http:// node URLs (loopback, tests); also
                   PATCHMESH_CLIENT_ALLOW_HTTP=1. Without it every URL must be
                   https: tokens and patch bytes must not cross a network
                   in the clear, and a plain connection can be redirected
  --require-tls    refuse plain http:// even with --allow-http
  --stale-after D  how old the hub's signed heartbeat a node hands over may
                   be before that node counts as stale (default 10m): the
                   machine tries the next node, and refresh exits 7 when
                   none is fresh
  --proxy URL      HTTP(S) proxy; default from HTTPS_PROXY/HTTP_PROXY/NO_PROXY

With --output json, a failure is also JSON, on standard error:
  {"error": {"code": "unauthorized", "message": "…", "status": 401, "request_id": "…", "exit_code": 3}}

Exit codes:
  0  success
  1  server or network error, a refused offer, a patch that failed
     verification, a failed apply hook, no hub key pinned
  2  usage error (including an http:// URL without --allow-http)
  3  authentication failure (401, 403) or not registered
  4  not found (404)
  5  conflict (409)
  6  invalid input (400, 413, 422)
  7  stale: refresh found no node with a hub heartbeat younger than
     --stale-after (what it was offered was still verified and applied;
     a refused offer, failed verification or failed hook exits 1 instead)
`

// runClient is `patchmesh client`.
func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &clientCLI{stdin: os.Stdin, stdout: stdout, stderr: stderr, geteuid: os.Geteuid, uname: client.Uname, getenv: os.Getenv}
	return c.run(ctx, args)
}

// clientCLI is one invocation of the client command line.
type clientCLI struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	geteuid        func() int
	uname          func() (kernel, arch string, err error)
	// getenv reads PATCHMESH_URL, PATCHMESH_HUB_KEY and
	// PATCHMESH_CLIENT_ALLOW_HTTP; nil reads nothing.
	getenv func(string) string
	// machineIDFile is read when --machine-id is not given.
	machineIDFile string
	// uptimeFile overrides /proc/uptime, for tests.
	uptimeFile string

	server     string
	stateDir   string
	machineID  string
	caFile     string
	requireTLS bool
	allowHTTP  bool
	hubKeys    stringList
	hubTier    string
	proxy      string
	staleAfter time.Duration
	output     outputFlag
}

func (c *clientCLI) run(ctx context.Context, args []string) int {
	c.output = "text"
	var err error
	if v := c.env("PATCHMESH_CLIENT_ALLOW_HTTP"); v != "" {
		if c.allowHTTP, err = strconv.ParseBool(v); err != nil {
			err = usagef("PATCHMESH_CLIENT_ALLOW_HTTP=%q: want 1, true, 0 or false", v)
		}
	}
	if err == nil {
		err = c.dispatch(ctx, args)
	}
	if errors.Is(err, client.ErrInsecureURL) && !c.requireTLS {
		err = fmt.Errorf("%w (give --allow-http, or PATCHMESH_CLIENT_ALLOW_HTTP=1, for a loopback or test node)", err)
	}
	return finishOutput("patchmesh client", clientUsage, string(c.output), err, c.stdout, c.stderr)
}

func (c *clientCLI) flags(name string) *flag.FlagSet {
	fs := newFlagSet("patchmesh client " + name)
	fs.StringVar(&c.server, "server", c.server, "node URL")
	fs.StringVar(&c.stateDir, "state-dir", c.stateDir, "state directory")
	fs.StringVar(&c.machineID, "machine-id", c.machineID, "machine ID (default: the contents of /etc/machine-id)")
	fs.StringVar(&c.caFile, "ca-file", c.caFile, "PEM bundle of extra CAs")
	fs.BoolVar(&c.requireTLS, "require-tls", c.requireTLS, "refuse plain http URLs, even with --allow-http")
	fs.BoolVar(&c.allowHTTP, "allow-http", c.allowHTTP, "allow plain http URLs (loopback, tests)")
	fs.Var(&c.hubKeys, "hub-key", "hub public key to pin at registration (repeatable)")
	fs.StringVar(&c.hubTier, "hub-tier", c.hubTier, "the machine's hub tier, for a token not made at the hub")
	fs.StringVar(&c.proxy, "proxy", c.proxy, "HTTP(S) proxy URL")
	fs.DurationVar(&c.staleAfter, "stale-after", c.staleAfter, "how old the hub heartbeat may be before the machine is stale (default 10m)")
	fs.Var(&c.output, "output", "text or json")
	return fs
}

func (c *clientCLI) dispatch(ctx context.Context, args []string) error {
	fs := c.flags("")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return usagef("no command given")
	}
	switch rest[0] {
	case "register":
		return c.register(ctx, rest[1:])
	case "status":
		return c.status(ctx, rest[1:])
	case "refresh":
		return c.refresh(ctx, rest[1:])
	case "nodes":
		return c.nodes(ctx, rest[1:])
	case "help":
		return flag.ErrHelp
	}
	return usagef("unknown command %q", rest[0])
}

func (c *clientCLI) env(name string) string {
	if c.getenv == nil {
		return ""
	}
	return c.getenv(name)
}

// pinnedKeys are the hub keys to pin: --hub-key, else PATCHMESH_HUB_KEY.
func (c *clientCLI) pinnedKeys() []string {
	if len(c.hubKeys) > 0 {
		return c.hubKeys
	}
	var keys []string
	for _, k := range strings.Split(c.env("PATCHMESH_HUB_KEY"), ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// defaultStateDir is /var/lib/patchmesh-client for root, else the user's
// config directory's patchmesh-client.
func (c *clientCLI) defaultStateDir() (string, error) {
	if c.geteuid() == 0 {
		return "/var/lib/patchmesh-client", nil
	}
	base, err := os.UserConfigDir()
	if err != nil {
		return "", usagef("no state directory: give --state-dir (%v)", err)
	}
	return filepath.Join(base, "patchmesh-client"), nil
}

// newClient builds the client from the global options.
func (c *clientCLI) newClient(progressLabel string) (*client.Client, *progress, error) {
	dir := c.stateDir
	if dir == "" {
		d, err := c.defaultStateDir()
		if err != nil {
			return nil, nil, err
		}
		dir = d
	}
	bar := newProgress(c.stderr, progressLabel)
	cfg := client.Config{
		Server:   strings.TrimRight(c.server, "/"),
		StateDir: dir,
		// Plain http is refused unless asked for: see --allow-http.
		Transport:  client.Transport{CAFile: c.caFile, RequireTLS: c.requireTLS || !c.allowHTTP, Proxy: c.proxy},
		UptimeFile: c.uptimeFile,
		// The client reports the binary's own version (main.version).
		ClientVersion: version,
		// The hook's output goes to stderr so that stdout stays parseable.
		HookStdout: c.stderr,
		HookStderr: c.stderr,
		StaleAfter: c.staleAfter,
	}
	if bar != nil {
		cfg.Progress = bar.update
	}
	cl, err := client.New(cfg)
	if errors.Is(err, client.ErrInsecureURL) {
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, usagef("%v", err)
	}
	return cl, bar, nil
}

func (c *clientCLI) machineIDPath() string {
	if c.machineIDFile != "" {
		return c.machineIDFile
	}
	return client.DefaultMachineIDFile
}

func (c *clientCLI) register(ctx context.Context, args []string) error {
	fs := c.flags("register")
	kernel := fs.String("kernel", "", "kernel release (default: the running kernel's, see docs/api.md)")
	arch := fs.String("arch", "", "architecture (default: uname -m)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("patchmesh client register", pos, "AUTH_TOKEN"); err != nil {
		return err
	}
	if c.server == "" && c.getenv != nil {
		// As the admin tool does: one export serves both tools.
		c.server = c.getenv("PATCHMESH_URL")
	}
	if c.server == "" {
		return usagef("register needs --server URL or PATCHMESH_URL")
	}
	keys := c.pinnedKeys()
	if len(keys) == 0 {
		return usagef("register needs the hub key to pin: --hub-key ed25519:… (patchmesh admin hub-key at the hub prints it) or PATCHMESH_HUB_KEY")
	}
	for _, k := range keys {
		if _, err := federation.ParsePublicKey(k); err != nil {
			return usagef("--hub-key: %v", err)
		}
	}
	token := pos[0]
	if token == "-" {
		line, err := bufio.NewReader(io.LimitReader(c.stdin, 4096)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read auth token: %w", err)
		}
		token = strings.TrimSpace(line)
	}
	if !strings.HasPrefix(token, "pma_") {
		return usagef("AUTH_TOKEN must be an auth token (pma_…)")
	}
	if c.machineID == "" {
		id, err := client.ReadMachineID(c.machineIDPath())
		if err != nil {
			return usagef("%v; give --machine-id", err)
		}
		c.machineID = id
	}
	if err := c.fillHost(kernel, arch); err != nil {
		return err
	}
	cl, _, err := c.newClient("")
	if err != nil {
		return err
	}
	reg, err := cl.Register(ctx, client.RegisterRequest{AuthToken: token, MachineID: c.machineID, Kernel: *kernel, Arch: *arch,
		HubKeys: keys, HubTier: c.hubTier})
	if err != nil {
		return explainRefusal(err, true)
	}
	// The machine token stays in the state file; it is never printed.
	out := struct {
		Tier    string          `json:"tier"`
		Machine catalog.Machine `json:"machine"`
	}{reg.Tier, reg.Machine}
	if c.output == "json" {
		return printJSON(c.stdout, nil, out)
	}
	_, err = fmt.Fprintf(c.stdout, "Registered on tier %s as machine %s; %d node(s) serve the tier.\n", reg.Tier, reg.Machine.ID, len(reg.Nodes))
	return err
}

// fillHost defaults kernel and arch to the running system's.
func (c *clientCLI) fillHost(kernel, arch *string) error {
	if *kernel != "" && *arch != "" {
		return nil
	}
	k, a, err := c.uname()
	if err != nil {
		return usagef("%v", err)
	}
	if *kernel == "" {
		if catalog.ValidKernel(k) != nil {
			return usagef("the running kernel's release %q is not well formed (%v); give --kernel", k, catalog.ValidKernel(k))
		}
		*kernel = k
	}
	if *arch == "" {
		if catalog.ValidArch(a) != nil {
			return usagef("the machine architecture %q is not one patchmesh serves (%s); give --arch", a, strings.Join(catalog.Architectures, ", "))
		}
		*arch = a
	}
	return nil
}

func (c *clientCLI) status(ctx context.Context, args []string) error {
	fs := c.flags("status")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("patchmesh client status", pos); err != nil {
		return err
	}
	cl, _, err := c.newClient("")
	if err != nil {
		return err
	}
	m, err := cl.Status(ctx)
	if err != nil {
		return explainRefusal(err, false)
	}
	f, err := cl.Freshness()
	if err != nil {
		return err
	}
	if c.output == "json" {
		return printJSON(c.stdout, nil, struct {
			catalog.Machine
			Freshness client.Freshness `json:"freshness"`
		}{m, f})
	}
	if err := machineDetail(c.stdout, m); err != nil {
		return err
	}
	return freshnessDetail(c.stdout, f)
}

// freshnessDetail says how fresh the machine's view of its tier is: the
// newest hub heartbeat it verified, and STALE with the reason when no node
// handed over a fresh one.
func freshnessDetail(w io.Writer, f client.Freshness) error {
	hb := "none yet"
	if f.Heartbeat != nil {
		hb = fmt.Sprintf("%s (%s ago, hub seq %d, from %s)", fmtTime(f.Heartbeat.Time), f.Age, f.Heartbeat.TierSeq, f.Heartbeat.Node)
	}
	fresh := "fresh"
	if f.Stale != "" {
		fresh = "STALE: " + f.Stale
	}
	// A reason kept from the last refresh may name the bound already.
	if bound := fmt.Sprintf("(bound %s)", f.StaleAfter); !strings.HasSuffix(fresh, bound) {
		fresh += " " + bound
	}
	_, err := fmt.Fprintf(w, "hub heartbeat: %s\nfreshness: %s\n", hb, fresh)
	return err
}

func machineDetail(w io.Writer, m catalog.Machine) error {
	return table(w, []string{"FIELD", "VALUE"}, [][]string{
		{"machine", m.ID},
		{"tier", m.Tier},
		{"kernel", m.Kernel},
		{"arch", m.Arch},
		{"state", string(m.State)},
		{"patch version", orDash(m.PatchVersion)},
		{"client version", orDash(m.ClientVersion)},
		{"uptime", strconv.FormatInt(m.UptimeSeconds, 10) + "s"},
		{"registered", fmtTime(m.Registered)},
		{"last seen", fmtTime(m.LastSeen)},
	})
}

func (c *clientCLI) refresh(ctx context.Context, args []string) error {
	fs := c.flags("refresh")
	hook := fs.String("apply-hook", "", "shell command that applies the verified patch")
	kernel := fs.String("kernel", "", "kernel release (default: the running kernel's, see docs/api.md)")
	arch := fs.String("arch", "", "architecture (default: uname -m)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("patchmesh client refresh", pos); err != nil {
		return err
	}
	if err := c.fillHost(kernel, arch); err != nil {
		return err
	}
	cl, bar, err := c.newClient("downloading")
	if err != nil {
		return err
	}
	res, err := cl.Refresh(ctx, client.RefreshOptions{Kernel: *kernel, Arch: *arch, ApplyHook: *hook})
	bar.finish()
	if res.State == "" {
		return explainRefusal(err, false) // nothing was reported
	}
	if c.output == "json" {
		out := struct {
			State      catalog.MachineState `json:"state"`
			Patch      *catalog.Patch       `json:"patch"`
			Refused    string               `json:"refused,omitempty"`
			Path       string               `json:"path,omitempty"`
			Downloaded bool                 `json:"downloaded"`
			Machine    catalog.Machine      `json:"machine"`
			Stale      string               `json:"stale,omitempty"`
		}{res.State, res.Patch, res.Refused, res.Path, res.Downloaded, res.Machine, res.Stale}
		if perr := printJSON(c.stdout, nil, out); perr != nil {
			return errors.Join(err, perr)
		}
		return err
	}
	switch {
	case res.Refused != "":
		fmt.Fprintf(c.stdout, "Offer REFUSED, nothing downloaded: %s\n", res.Refused)
	case res.Patch == nil:
		fmt.Fprintf(c.stdout, "No patch for kernel %s (%s) on this machine's tier.\n", *kernel, *arch)
	case res.Path == "":
		fmt.Fprintf(c.stdout, "Patch %s (version %s) REFUSED: it failed verification and was deleted.\n", res.Patch.Digest, res.Patch.Version)
	default:
		how := "already verified"
		if res.Downloaded {
			how = "downloaded and verified"
		}
		fmt.Fprintf(c.stdout, "Patch %s (version %s) %s: %s\n", res.Patch.Digest, res.Patch.Version, how, res.Path)
	}
	fmt.Fprintf(c.stdout, "Checked in: %s.\n", res.State)
	if res.Stale != "" {
		fmt.Fprintf(c.stdout, "STALE: no node handed over a fresh hub heartbeat (%s); a newer patch may exist.\n", res.Stale)
	}
	return err
}

func (c *clientCLI) nodes(ctx context.Context, args []string) error {
	fs := c.flags("nodes")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("patchmesh client nodes", pos); err != nil {
		return err
	}
	cl, _, err := c.newClient("")
	if err != nil {
		return err
	}
	nodes, err := cl.Nodes(ctx)
	if err != nil {
		return err
	}
	if c.output == "json" {
		type jsonNode struct {
			Name       string    `json:"name"`
			DC         string    `json:"dc"`
			Role       string    `json:"role"`
			URL        string    `json:"url"`
			Reachable  bool      `json:"reachable"`
			RTTMillis  float64   `json:"rtt_ms"`
			Registered bool      `json:"registered"`
			Checked    time.Time `json:"checked"`
		}
		out := struct {
			Nodes []jsonNode `json:"nodes"`
		}{Nodes: []jsonNode{}}
		for _, n := range nodes {
			rtt := 0.0
			if n.Reachable {
				rtt = float64(n.RTT.Microseconds()) / 1000
			}
			out.Nodes = append(out.Nodes, jsonNode{n.Name, n.DC, n.Role, n.URL, n.Reachable, rtt, n.Registered, n.Checked})
		}
		return printJSON(c.stdout, nil, out)
	}
	rows := make([][]string, 0, len(nodes))
	for _, n := range nodes {
		rtt := "unreachable"
		if n.Reachable {
			rtt = n.RTT.Round(100 * time.Microsecond).String()
		}
		reg := "no"
		if n.Registered {
			reg = "yes"
		}
		rows = append(rows, []string{orDash(n.Name), orDash(n.DC), n.URL, rtt, reg})
	}
	return table(c.stdout, []string{"NAME", "DC", "URL", "RTT", "REGISTERED"}, rows)
}

// explainRefusal says what a 401 most likely means. The node answers every
// refused token alike, so that a guesser learns nothing; the machine knows
// which token it sent and can say what to do.
func explainRefusal(err error, registering bool) error {
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized {
		return err
	}
	if registering {
		return fmt.Errorf("the node refused the auth token: it is mistyped, revoked or expired; ask for a new one: %w", err)
	}
	return fmt.Errorf("the node refused this machine's token, and its machine credential: both were revoked or expired; register again with a new auth token: %w", err)
}
