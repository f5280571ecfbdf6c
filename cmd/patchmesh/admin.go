package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/client"
)

// adminUsageHead and adminUsageTail frame the command overview, which the
// command table writes (adminUsage).
const adminUsageHead = `Usage: patchmesh admin [--server URL] [--context NAME] [--output text|json|csv] [--ca-file PEM] COMMAND ...

Manage patchmesh nodes. The admin tool keeps one login per node, each under
a context name. A command goes to --context NAME, else the node at --server
URL, else $PATCHMESH_CONTEXT, else the node at $PATCHMESH_URL, else the
current context (the last login, or 'context use'). Flags may also follow
the command. 'patchmesh admin COMMAND --help' shows a command's flags and
an example.

Commands:
`

const adminUsageTail = `
The logins are kept in $PATCHMESH_CONFIG_DIR/admin.json, else in the user's
config directory under patchmesh/ (mode 0600).

With --output json, a failure is also JSON, on standard error:
  {"error": {"code": "not_found", "message": "…", "status": 404, "request_id": "…", "exit_code": 4}}

Exit codes:
  0  success
  1  server or network error
  2  usage error
  3  authentication or authorization failure (401, 403, or not logged in,
     which a --context or PATCHMESH_CONTEXT naming no saved login is)
  4  not found (404; also context use or remove of an unknown context,
     or an unknown digest prefix)
  5  conflict (409; also a patch change on a node that is not the hub)
  6  invalid input (400, 413, 422)
`

// adminCommand is one command of the admin tool. The table of them drives
// dispatch, the overview, each command's --help and shell completion, so
// that a command is described in one place.
type adminCommand struct {
	name    string // "patches upload", or a lone "login"
	args    string // the synopsis after the name: "FILE --kernel K ..."
	summary string // one line for the overview
	about   string // more for the command's --help; may be empty
	example string
	run     func(a *admin, ctx context.Context, args []string) error
}

// adminCommands is every admin command, in the order the overview lists
// them.
var adminCommands = []adminCommand{
	{name: "login", args: "[--user NAME] [--password-stdin]", summary: "log in; keeps a macaroon in the config dir under a context",
		about:   "The context is --context NAME, else the context already kept for the server, else\none named after the server's host and port. The login becomes the current context.",
		example: "patchmesh admin login --server https://hub.example.com:8443 --context hub --user admin", run: (*admin).login},
	{name: "logout", summary: "forget the chosen context's login",
		example: "patchmesh admin logout --context hub", run: (*admin).logout},
	{name: "context list", summary: "the kept logins: context, server, user, expiry (no secrets)",
		example: "patchmesh admin context list", run: (*admin).contextList},
	{name: "context use", args: "NAME", summary: "make NAME the current context",
		example: "patchmesh admin context use edge-eu", run: (*admin).contextUse},
	{name: "context remove", args: "NAME", summary: "forget the login kept under NAME",
		example: "patchmesh admin context remove edge-eu", run: (*admin).contextRemove},
	{name: "hash-password", args: "[--password-stdin] [--cost N]", summary: "print a bcrypt hash for the config file",
		example: "patchmesh admin hash-password", run: (*admin).hashPassword},
	{name: "tiers list", summary: "the release tiers, in order",
		example: "patchmesh admin tiers list", run: (*admin).tiersList},
	{name: "tiers add", args: "NAME", summary: "append a tier",
		example: "patchmesh admin tiers add canary", run: (*admin).tiersAdd},
	{name: "tiers remove", args: "NAME", summary: "remove a tier no token or machine uses",
		example: "patchmesh admin tiers remove canary", run: (*admin).tiersRemove},
	{name: "auth-tokens list", args: "[--limit N] [--after CURSOR]", summary: "machine enrollment tokens (no secrets)",
		example: "patchmesh admin auth-tokens list", run: tokensList("auth-tokens")},
	{name: "auth-tokens add", args: "TIER NAME [--valid-until T]", summary: "make an enrollment token; T is RFC 3339, a duration (720h) or days (90d)",
		example: "patchmesh admin auth-tokens add edge fleet-a --valid-until 90d", run: tokensAdd("auth-tokens")},
	{name: "auth-tokens revoke", args: "ID [--machines]", summary: "revoke an enrollment token; --machines: and the machines registered with it",
		about:   "Revoked at the hub, the token is refused at every node of its tier once the hub's signed\nrevocation has synced there; with --machines every such node also revokes the machines\nregistered there with it. At this node both take effect at once.",
		example: "patchmesh admin auth-tokens revoke 0123456789abcdef --machines", run: (*admin).authTokensRevoke},
	{name: "sync-tokens list", args: "[--limit N] [--after CURSOR]", summary: "downstream nodes' sync tokens (no secrets)",
		example: "patchmesh admin sync-tokens list", run: tokensList("sync-tokens")},
	{name: "sync-tokens add", args: "TIER NAME [--valid-until T]", summary: "make a sync token for a downstream node",
		example: "patchmesh admin sync-tokens add stable dc-east", run: tokensAdd("sync-tokens")},
	{name: "sync-tokens revoke", args: "ID", summary: "revoke a sync token",
		example: "patchmesh admin sync-tokens revoke 0123456789abcdef", run: tokensRevoke("sync-tokens")},
	{name: "machine-tokens list", args: "[--limit N] [--after CURSOR]", summary: "machine tokens this node issued (no secrets)",
		example: "patchmesh admin machine-tokens list", run: tokensList("machine-tokens")},
	{name: "machine-tokens revoke", args: "ID", summary: "revoke one machine token (the machine may register again)",
		example: "patchmesh admin machine-tokens revoke 0123456789abcdef", run: tokensRevoke("machine-tokens")},
	{name: "patches upload", args: "FILE --kernel K --arch A --version V [--cve ID]... [--description TEXT]", summary: "upload a patch file (hub only)",
		about:   "The file is hashed locally and sent with its digest; the node checks it again.\nUploading the same file with the same kernel, arch and version again is a repeat,\nanswered with the patch as it stands.",
		example: "patchmesh admin patches upload lp.ko --kernel 5.15.0-107.117-generic --arch x86_64 --version 107.1 --cve CVE-2024-1086", run: (*admin).patchesUpload},
	{name: "patches list", args: "[--kernel K] [--arch A] [--tier T] [--version V] [--withdrawn] [--limit N] [--after CURSOR]", summary: "patches, newest version first (every page, or at most N)",
		example: "patchmesh admin patches list --tier edge --limit 50", run: (*admin).patchesList},
	{name: "patches show", args: "DIGEST", summary: "one patch; DIGEST may be a unique prefix of 8+ hex digits",
		example: "patchmesh admin patches show 3f2a9c1e", run: (*admin).patchesShow},
	{name: "patches promote", args: "REF TIER", summary: "REF is a digest (or unique prefix), or a version (every patch with it)",
		example: "patchmesh admin patches promote 107.1 beta", run: (*admin).patchesPromote},
	{name: "patches promote-all", args: "FROM TO", summary: "put every live patch of FROM on TO",
		example: "patchmesh admin patches promote-all beta stable", run: (*admin).patchesPromoteAll},
	{name: "patches withdraw", args: "DIGEST", summary: "stop offering a patch; the record stays (DIGEST may be a unique prefix)",
		example: "patchmesh admin patches withdraw sha256:3f2a9c1e", run: (*admin).patchesWithdraw},
	{name: "patches remove", args: "DIGEST", summary: "delete a patch's record and file (DIGEST may be a unique prefix)",
		example: "patchmesh admin patches remove 3f2a9c1e", run: (*admin).patchesRemove},
	{name: "machines list", args: "[--tier T] [--kernel K] [--state S] [--limit N] [--after CURSOR]", summary: "registered machines, most recently seen first",
		example: "patchmesh admin machines list --state apply-failed", run: (*admin).machinesList},
	{name: "machines revoke", args: "ID", summary: "revoke a machine and its tokens; at the hub, at every node of the mesh",
		about: "ID is the machine's ID as 'machines list --output json' shows it (64 hex digits).\n" +
			"At the hub the revocation is signed on every tier: every node refuses the machine's tokens\n" +
			"and its registration, by enrollment token or credential, even an ID the hub never saw.\n" +
			"At any other node it is that node's only: the machine may still register at another node\n" +
			"of its tier with its credential. Either way it may not register again until deleted.",
		example: "patchmesh admin machines revoke 3f2a9c1e…", run: (*admin).machinesRevoke},
	{name: "machines delete", args: "ID", summary: "forget a machine and delete its tokens; at the hub, also lift its revocation everywhere",
		about: "At the hub, deleting a machine revoked there lifts that revocation at every node (a signed\n" +
			"machine.deleted record), which forgets the machine: it may register anywhere again.\n" +
			"At any other node the machine is forgotten there only; a revocation made at the hub stands.",
		example: "patchmesh admin machines delete 3f2a9c1e…", run: (*admin).machinesDelete},
	{name: "sessions revoke", args: "USER", summary: "end every session (macaroon) of an admin: logout everywhere",
		about:   "Every macaroon minted for USER until now is refused from its next use, on this node and\nthe nodes sharing its database; USER logs in again for a new one.",
		example: "patchmesh admin sessions revoke admin", run: (*admin).sessionsRevoke},
	{name: "storage list", args: "[--limit N] [--after CURSOR]", summary: "the stored patch files",
		example: "patchmesh admin storage list", run: (*admin).storageList},
	{name: "storage refresh", args: "[--repair [--grace 24h]]", summary: "compare files and records: orphans and missing files; --repair mends them",
		about:   "--repair removes orphans older than --grace, claims recorded blobs on a shared bucket,\nand on a relay or edge fetches missing blobs again from the upstreams.",
		example: "patchmesh admin storage refresh --repair --grace 48h", run: (*admin).storageRefresh},
	{name: "sync status", summary: "each sync link's state, cursor and lag",
		example: "patchmesh admin sync status", run: (*admin).syncStatus},
	{name: "sync trigger", args: "[--wait]", summary: "start a sync round now (--wait: until it ends, failing if it failed on a link)",
		example: "patchmesh admin sync trigger --wait", run: (*admin).syncTrigger},
	{name: "trust list", summary: "hub keys this node pins",
		example: "patchmesh admin trust list", run: (*admin).trustList},
	{name: "trust add", args: "KEY", summary: "pin a hub key (KEY is ed25519:…)",
		example: "patchmesh admin trust add ed25519:…", run: (*admin).trustAdd},
	{name: "trust remove", args: "ID", summary: "unpin a hub key",
		example: "patchmesh admin trust remove 0123456789abcdef", run: (*admin).trustRemove},
	{name: "hub-key", summary: "the node's hub signing key (public; no login)",
		example: "patchmesh admin hub-key --server https://hub.example.com:8443", run: (*admin).adminHubKey},
	{name: "topology", summary: "the mesh as the node's gossip sees it: a tree from the hub, with health and lag (UTC)",
		example: "patchmesh admin topology", run: (*admin).topology},
	{name: "nodes list", summary: "the nodes the hub admitted (machines use only these)",
		example: "patchmesh admin nodes list", run: (*admin).nodesList},
	{name: "nodes admit", args: "NAME --key ed25519:… --url URL [--url URL]... [--tier T]...",
		summary: "admit a node at the hub by its identity key (default: every tier)",
		about:   "The hub signs one admission per tier; it reaches every node of those tiers by sync.\n'patchmesh node-key' on the node prints its key.",
		example: "patchmesh admin nodes admit edge-1 --key ed25519:… --url https://edge-1.example:8443 --tier stable", run: (*admin).nodesAdmit},
	{name: "nodes update", args: "NAME [--url URL]... [--tier T]...",
		summary: "move an admitted node to new URLs, or onto more tiers (signed, no removal in between)",
		about:   "The hub signs a fresh admission per tier; what is left out stays as it was. A node's key is\nnot changed here: a compromised key is removed ('nodes remove') and the new one admitted.",
		example: "patchmesh admin nodes update edge-1 --url https://edge-1.new.example:8443", run: (*admin).nodesUpdate},
	{name: "nodes join-token", args: "NAME [--valid-for 1h] [--tier T]...",
		summary: "make a one-time token for a new node to join at this hub's peer listener (patchmesh join)",
		about:   "The join proves the token by HMAC without sending its secret; the hub then admits the node under the key it proved.",
		example: "patchmesh admin nodes join-token edge-1 --valid-for 1h", run: (*admin).nodesJoinToken},
	{name: "nodes join-tokens", summary: "the join tokens made here: who joined with each, when, with which key, from where",
		example: "patchmesh admin nodes join-tokens", run: (*admin).nodesJoinTokens},
	{name: "nodes remove", args: "NAME", summary: "remove a node's admission at the hub (signed, per tier)",
		example: "patchmesh admin nodes remove edge-1", run: (*admin).nodesRemove},
	{name: "report machines", args: "[--tier T] [--dc D] [--kernel K] [--state S] [--version V]",
		summary: "every machine of the node's subtree, one row per machine (all pages; --output csv too)",
		example: "patchmesh admin report machines --dc eu-west --state apply-failed --output csv", run: (*admin).reportMachines},
	{name: "report summary", args: "[--tier T] [--dc D] [--kernel K] [--state S] [--version V]",
		summary: "machine totals of the node's subtree by tier, DC, kernel, patch and state, and how recent",
		example: "patchmesh admin report summary --tier stable", run: (*admin).reportSummary},
	{name: "webhooks list", summary: "the node's webhooks (never their secrets)",
		example: "patchmesh admin webhooks list", run: (*admin).webhooksList},
	{name: "webhooks add", args: "URL --events E[,E]... --secret-file F",
		summary: "post signed events (patch.available, node.down, sync.failing, rollout.wave_opened, rollout.halted)",
		about:   "Each delivery is signed with HMAC-SHA256 over a timestamp and the body (header\nPatchmesh-Signature: t=…,v1=…), retried with backoff, in order per hook. The secret is\nthe file's bytes without a trailing newline.",
		example: "patchmesh admin webhooks add https://hooks.example.com/patchmesh --events patch.available,node.down --secret-file /etc/patchmesh/hook.secret", run: (*admin).webhooksAdd},
	{name: "webhooks remove", args: "ID", summary: "remove a webhook",
		example: "patchmesh admin webhooks remove 0123456789abcdef", run: (*admin).webhooksRemove},
	{name: "webhooks test", args: "ID", summary: "queue a ping delivery to one webhook",
		example: "patchmesh admin webhooks test 0123456789abcdef", run: (*admin).webhooksTest},
	{name: "webhooks deliveries", args: "ID [--limit N]", summary: "a webhook's deliveries: attempts, last status and error",
		example: "patchmesh admin webhooks deliveries 0123456789abcdef --limit 20", run: (*admin).webhooksDeliveries},
	{name: "rollouts create", args: "VERSION --tier T --waves SPEC [--gate-max-failed P%] [--gate-min N] [--soak D]",
		summary: "roll a patch version out on a tier, data centre by data centre (hub only)",
		about: "SPEC lists waves DC-GLOB:DELAY[:PERCENT%], each DELAY after the previous wave opened;\n" +
			"a wave opens once the machines of the open waves report the version with fewer\n" +
			"than P% apply-failed or check-failed (at least N reporting) for D. Defaults 5%, 1, 10m.",
		example: `patchmesh admin rollouts create 107.1 --tier stable --waves "dc-canary:0h,eu-*:6h:10%,us-*:24h"`, run: (*admin).rolloutsCreate},
	{name: "rollouts list", args: "[--tier T]", summary: "rollouts and where each stands (from the signed state this node holds)",
		example: "patchmesh admin rollouts list --tier stable", run: (*admin).rolloutsList},
	{name: "rollouts show", args: "ID", summary: "one rollout: its waves, which are open, and why it halted",
		example: "patchmesh admin rollouts show 0123456789abcdef", run: (*admin).rolloutsShow},
	{name: "rollouts halt", args: "ID [--reason TEXT]", summary: "stop opening waves (hub only)",
		example: `patchmesh admin rollouts halt 0123456789abcdef --reason "crash reports in eu-west"`, run: (*admin).rolloutsHalt},
	{name: "rollouts resume", args: "ID", summary: "let a halted rollout go on; failures seen so far are accepted (hub only)",
		example: "patchmesh admin rollouts resume 0123456789abcdef", run: (*admin).rolloutsResume},
	{name: "rollouts abort", args: "ID", summary: "end a rollout and withdraw its patches everywhere (hub only)",
		example: "patchmesh admin rollouts abort 0123456789abcdef", run: (*admin).rolloutsAbort},
	{name: "audit", args: "[--since T] [--limit N] [--after CURSOR]", summary: "admin changes, newest first (T: RFC 3339 or 24h)",
		example: "patchmesh admin audit --since 24h", run: (*admin).audit},
}

// adminUsage is the overview `patchmesh admin --help` prints.
func adminUsage() string {
	var b strings.Builder
	b.WriteString(adminUsageHead)
	for _, c := range adminCommands {
		overviewLine(&b, c)
	}
	b.WriteString(adminUsageTail)
	return b.String()
}

// overviewLine writes a command's synopsis and summary, the summary on a
// line of its own when the synopsis is long.
func overviewLine(b *strings.Builder, c adminCommand) {
	synopsis := strings.TrimSpace(c.name + " " + c.args)
	if len(synopsis) <= 40 {
		fmt.Fprintf(b, "  %-40s  %s\n", synopsis, c.summary)
	} else {
		fmt.Fprintf(b, "  %s\n  %-40s  %s\n", synopsis, "", c.summary)
	}
}

// findCommand returns the command with this name.
func findCommand(name string) (adminCommand, bool) {
	for _, c := range adminCommands {
		if c.name == name {
			return c, true
		}
	}
	return adminCommand{}, false
}

// subcommands lists the commands of a group ("patches"), by their second
// word.
func subcommands(group string) []string {
	var subs []string
	for _, c := range adminCommands {
		if g, sub, ok := strings.Cut(c.name, " "); ok && g == group {
			subs = append(subs, sub)
		}
	}
	return subs
}

// runAdmin is `patchmesh admin`.
func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &admin{stdin: os.Stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv, now: time.Now}
	return a.run(ctx, args)
}

// admin is one invocation of the admin tool, with its surroundings made
// explicit so that tests can supply them.
type admin struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time

	// Global options, settable before or after the command.
	server  string
	context string
	output  outputFlag
	caFile  string

	// fs is the flag set the running command made last: its --help shows
	// it, and shell completion reads its flags.
	fs *flag.FlagSet
}

func (a *admin) run(ctx context.Context, args []string) int {
	a.output = "text"
	err := a.dispatch(ctx, args)
	return finishOutput("patchmesh admin", adminUsage(), string(a.output), err, a.stdout, a.stderr)
}

// helpText is a help request answered with a text of its own (a command's
// or a group's help) rather than the tool's overview.
type helpText string

func (h helpText) Error() string { return string(h) }
func (h helpText) Unwrap() error { return flag.ErrHelp }

// finish turns a command's outcome into its exit code: help goes to stdout,
// an error to stderr with its exit code, and a usage error with a pointer to
// --help. The admin tool and the client share it so they answer alike.
func finish(prog, usage string, err error, stdout, stderr io.Writer) int {
	return finishOutput(prog, usage, "text", err, stdout, stderr)
}

// finishOutput is finish for a command run with --output output: under
// json, the error is the JSON error envelope (see errorJSON).
func finishOutput(prog, usage, output string, err error, stdout, stderr io.Writer) int {
	var h helpText
	switch {
	case errors.As(err, &h):
		fmt.Fprint(stdout, string(h))
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return exitOK
	case err == nil:
		return exitOK
	}
	code := exitCode(err)
	if output == "json" {
		if werr := printJSON(stderr, nil, errorJSON(err, code)); werr == nil {
			return code
		}
	}
	fmt.Fprintf(stderr, "%s: %v\n", prog, err)
	if code == exitUsage {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", prog)
	}
	return code
}

// flags makes a command's flag set with the global options on it.
func (a *admin) flags(name string) *flag.FlagSet {
	fs := newFlagSet("patchmesh admin " + name)
	fs.StringVar(&a.server, "server", a.server, "node URL")
	fs.StringVar(&a.context, "context", a.context, "the kept login to use, by name")
	fs.Var(&a.output, "output", "text or json")
	fs.StringVar(&a.caFile, "ca-file", a.caFile, "PEM bundle of extra CAs")
	a.fs = fs
	return fs
}

// globalFlags are the flags every admin command takes (flags).
var globalFlags = map[string]bool{"server": true, "context": true, "output": true, "ca-file": true}

func (a *admin) dispatch(ctx context.Context, args []string) error {
	// Global flags before the command; the command's own flag set parses
	// them again wherever else they appear.
	fs := a.flags("")
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
	if rest[0] == "help" {
		return a.help(rest[1:])
	}
	if c, ok := findCommand(rest[0]); ok {
		return a.runCommand(ctx, c, rest[1:])
	}
	// A group's global flags may also stand before its subcommand.
	group := rest[0]
	subs := subcommands(group)
	gs := a.flags(group)
	if err := gs.Parse(rest[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) && len(subs) > 0 {
			return helpText(groupHelp(group))
		}
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if sub := gs.Args(); len(sub) > 0 {
		if c, ok := findCommand(group + " " + sub[0]); ok {
			return a.runCommand(ctx, c, sub[1:])
		}
	}
	if len(subs) > 0 {
		return usagef("%s needs one of: %s", group, strings.Join(subs, ", "))
	}
	return usagef("unknown command %q", group)
}

// runCommand runs c, answering its --help with its own help.
func (a *admin) runCommand(ctx context.Context, c adminCommand, args []string) error {
	err := c.run(a, ctx, args)
	if errors.Is(err, flag.ErrHelp) {
		return helpText(commandHelp(c, a.fs))
	}
	return err
}

// help is `patchmesh admin help [COMMAND...]`.
func (a *admin) help(words []string) error {
	name := strings.Join(words, " ")
	if name == "" {
		return flag.ErrHelp
	}
	if c, ok := findCommand(name); ok {
		return helpText(commandHelp(c, commandFlags(c)))
	}
	if len(subcommands(name)) > 0 {
		return helpText(groupHelp(name))
	}
	return usagef("help: unknown command %q", name)
}

// commandFlags returns the flag set c makes, by running it with --help: a
// command parses its flags before it does anything else.
func commandFlags(c adminCommand) *flag.FlagSet {
	probe := &admin{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard,
		getenv: func(string) string { return "" }, now: time.Now, output: "text"}
	if err := c.run(probe, context.Background(), []string{"--help"}); !errors.Is(err, flag.ErrHelp) || probe.fs == nil {
		return newFlagSet(c.name)
	}
	return probe.fs
}

// commandHelp is one command's usage, flags and example.
func commandHelp(c adminCommand, fs *flag.FlagSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: patchmesh admin %s\n\n%s.\n", strings.TrimSpace(c.name+" "+c.args), upperFirst(c.summary))
	if c.about != "" {
		fmt.Fprintf(&b, "%s\n", c.about)
	}
	var own []string
	fs.VisitAll(func(f *flag.Flag) {
		if globalFlags[f.Name] {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		line = fmt.Sprintf("%-26s %s", line, usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			line += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		own = append(own, line)
	})
	if len(own) > 0 {
		fmt.Fprintf(&b, "\nFlags:\n%s\n", strings.Join(own, "\n"))
	}
	b.WriteString("\nGlobal flags: --server URL, --context NAME, --output text|json, --ca-file PEM\n")
	if c.example != "" {
		fmt.Fprintf(&b, "\nExample:\n  %s\n", c.example)
	}
	return b.String()
}

// groupHelp lists a group's commands.
func groupHelp(group string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: patchmesh admin %s COMMAND ...\n\nCommands:\n", group)
	for _, c := range adminCommands {
		if g, _, ok := strings.Cut(c.name, " "); ok && g == group {
			overviewLine(&b, c)
		}
	}
	fmt.Fprintf(&b, "\nRun 'patchmesh admin %s COMMAND --help' for a command's flags and an example.\n", group)
	return b.String()
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// normalizeServer checks a server URL and drops trailing slashes, so that
// one node has one spelling in the config file.
func normalizeServer(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", usagef("server %q: must be an http:// or https:// URL", s)
	}
	return strings.TrimRight(s, "/"), nil
}

// adminAPI is an admin session with one node.
type adminAPI struct {
	server   string
	macaroon string
	context  string // the kept login's name, for messages
	http     *http.Client
}

// session loads the chosen context's login and checks that it has not
// expired. The macaroon goes only to the server it was issued by: the
// context is chosen by name or by server, and a name given with another
// server is refused.
func (a *admin) session() (*adminAPI, error) {
	dir, err := adminConfigDir(a.getenv)
	if err != nil {
		return nil, err
	}
	cfg, err := loadConfig(dir)
	if err != nil {
		return nil, err
	}
	c, err := a.choose(cfg)
	if err != nil {
		if errors.Is(err, errNoContext) {
			return nil, fmt.Errorf("%w: %w", errNotLoggedIn, err)
		}
		return nil, err
	}
	if c.name == "" {
		return nil, fmt.Errorf("%w to %s: run patchmesh admin login --server %s", errNotLoggedIn, c.server, c.server)
	}
	l := cfg.Contexts[c.name]
	if !l.Expires.IsZero() && !a.now().Before(l.Expires) {
		return nil, fmt.Errorf("%w: the login of context %s (%s) expired at %s; run patchmesh admin login --context %s",
			errNotLoggedIn, c.name, l.Server, fmtTime(l.Expires), c.name)
	}
	api, err := a.newAPI(l.Server, l.Macaroon)
	if err != nil {
		return nil, err
	}
	api.context = c.name
	return api, nil
}

func (a *admin) newAPI(server, macaroon string) (*adminAPI, error) {
	hc, err := client.NewHTTPClient(client.Transport{CAFile: a.caFile})
	if err != nil {
		return nil, err
	}
	return &adminAPI{server: server, macaroon: macaroon, http: hc}, nil
}

// apiTimeout bounds every admin call but uploads, which take as long as
// the file needs.
const apiTimeout = 60 * time.Second

// call sends a JSON request (in may be nil) and returns the raw answer of
// a 2xx, or an error wrapping *client.APIError.
func (api *adminAPI) call(ctx context.Context, method, path string, query url.Values, in any) ([]byte, error) {
	return api.callWithin(ctx, apiTimeout, method, path, query, in)
}

// callWithin is call for a request that may take longer than apiTimeout.
func (api *adminAPI) callWithin(ctx context.Context, timeout time.Duration, method, path string, query url.Values, in any) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := api.request(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return api.do(req)
}

func (api *adminAPI) request(ctx context.Context, method, path string, query url.Values, body io.Reader) (*http.Request, error) {
	u := api.server + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "patchmesh-admin/"+version)
	if api.macaroon != "" {
		req.Header.Set("Authorization", "Macaroon "+api.macaroon)
	}
	return req, nil
}

// maxAnswer bounds what an admin answer may hold.
const maxAnswer = 64 << 20

func (api *adminAPI) do(req *http.Request) ([]byte, error) {
	_, b, err := api.doStatus(req)
	return b, err
}

// doStatus is do that also says which 2xx status answered.
func (api *adminAPI) doStatus(req *http.Request) (int, []byte, error) {
	what := req.Method + " " + req.URL.Path
	resp, err := api.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return 0, nil, fmt.Errorf("%s: %w", what, api.explain(client.ReadError(resp)))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, nil, fmt.Errorf("%s: read answer: %w", what, err)
	}
	return resp.StatusCode, b, nil
}

// explain adds what a refused login most likely means. The node answers
// every refused credential alike (401, nothing said about why, so that a
// guesser learns nothing); the tool knows what it sent and can say what to
// do about it.
func (api *adminAPI) explain(err error) error {
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || api.macaroon == "" {
		return err
	}
	switch apiErr.Status {
	case http.StatusUnauthorized:
		return fmt.Errorf("the node refused the login of context %s: it is no longer valid there (its user removed, or the node's keys changed); run patchmesh admin login --context %s: %w", api.context, api.context, err)
	case http.StatusForbidden:
		return fmt.Errorf("the login of context %s may not do this: %w", api.context, err)
	}
	return err
}

// decode unmarshals an answer for text output.
func decode(raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("the server's answer is not what docs/api.md promises: %w", err)
	}
	return nil
}

// show prints raw as JSON with --output json, else calls text.
func (a *admin) show(raw []byte, v any, text func() error) error {
	if a.output == "csv" {
		return usagef("--output csv is offered by the report commands only")
	}
	if a.output == "json" {
		return printJSON(a.stdout, raw, v)
	}
	return text()
}

// pathEscape escapes one path segment of an API URL.
func pathEscape(s string) string { return url.PathEscape(s) }
