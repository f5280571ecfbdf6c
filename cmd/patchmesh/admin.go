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
	"sort"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/client"
)

const adminUsage = `Usage: patchmesh admin [--server URL] [--output text|json] [--ca-file PEM] COMMAND ...

Manage a patchmesh node. The server is --server, else $PATCHMESH_URL, else
the server of the last login. Flags may also follow the command.

Commands:
  login [--user NAME] [--password-stdin]    log in; keeps a macaroon in the config dir
  logout                                    forget the login
  hash-password [--password-stdin] [--cost N]
                                            print a bcrypt hash for the config file
  tiers list | add NAME | remove NAME
  auth-tokens list | add TIER NAME [--valid-until T] | revoke ID
  sync-tokens list | add TIER NAME [--valid-until T] | revoke ID
                                            T is RFC 3339, a duration (720h) or days (90d)
  patches upload FILE --kernel K --arch A --version V [--cve ID]... [--description TEXT]
  patches list [--kernel K] [--arch A] [--tier T] [--version V] [--withdrawn] [--limit N]
  patches show DIGEST
  patches promote REF TIER                  REF is a digest, or a version (every patch with it)
  patches promote-all FROM TO
  patches withdraw DIGEST
  patches remove DIGEST
  machines list [--tier T] [--kernel K] [--state S] [--limit N]
  storage list | refresh [--repair [--grace 24h]]
  sync status                               each sync link's state, cursor and lag
  sync trigger [--wait]                     start a sync round now (--wait: until it ends)
  trust list | add KEY | remove ID          hub keys this node pins (KEY is ed25519:…)
  hub-key                                   the node's hub signing key (public; no login)
  topology                                  the mesh as the node's gossip sees it: a tree
                                            from the hub, with health and lag (times UTC)

The login is kept in $PATCHMESH_CONFIG_DIR/admin.json, else in the user's
config directory under patchmesh/ (mode 0600).

Exit codes:
  0  success
  1  server or network error
  2  usage error
  3  authentication or authorization failure (401, 403, or not logged in)
  4  not found (404)
  5  conflict (409; also a patch change on a node that is not the hub)
  6  invalid input (400, 413, 422)
`

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
	server string
	output outputFlag
	caFile string
}

func (a *admin) run(ctx context.Context, args []string) int {
	a.output = "text"
	return finish("patchmesh admin", adminUsage, a.dispatch(ctx, args), a.stdout, a.stderr)
}

// finish turns a command's outcome into its exit code: help goes to stdout,
// an error to stderr with its exit code, and a usage error with a pointer to
// --help. The admin tool and the client share it so they answer alike.
func finish(prog, usage string, err error, stdout, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		code := exitCode(err)
		if code == exitUsage {
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", prog)
		}
		return code
	}
	return exitOK
}

// flags makes a command's flag set with the global options on it.
func (a *admin) flags(name string) *flag.FlagSet {
	fs := newFlagSet("patchmesh admin " + name)
	fs.StringVar(&a.server, "server", a.server, "node URL")
	fs.Var(&a.output, "output", "text or json")
	fs.StringVar(&a.caFile, "ca-file", a.caFile, "PEM bundle of extra CAs")
	return fs
}

// adminCommands maps "group sub" (or a lone command) to its handler.
var adminCommands = map[string]func(a *admin, ctx context.Context, args []string) error{
	"login":               (*admin).login,
	"logout":              (*admin).logout,
	"hash-password":       (*admin).hashPassword,
	"tiers list":          (*admin).tiersList,
	"tiers add":           (*admin).tiersAdd,
	"tiers remove":        (*admin).tiersRemove,
	"auth-tokens list":    tokensList("auth-tokens"),
	"auth-tokens add":     tokensAdd("auth-tokens"),
	"auth-tokens revoke":  tokensRevoke("auth-tokens"),
	"sync-tokens list":    tokensList("sync-tokens"),
	"sync-tokens add":     tokensAdd("sync-tokens"),
	"sync-tokens revoke":  tokensRevoke("sync-tokens"),
	"patches upload":      (*admin).patchesUpload,
	"patches list":        (*admin).patchesList,
	"patches show":        (*admin).patchesShow,
	"patches promote":     (*admin).patchesPromote,
	"patches promote-all": (*admin).patchesPromoteAll,
	"patches withdraw":    (*admin).patchesWithdraw,
	"patches remove":      (*admin).patchesRemove,
	"machines list":       (*admin).machinesList,
	"storage list":        (*admin).storageList,
	"storage refresh":     (*admin).storageRefresh,
	"sync status":         (*admin).syncStatus,
	"sync trigger":        (*admin).syncTrigger,
	"trust list":          (*admin).trustList,
	"trust add":           (*admin).trustAdd,
	"trust remove":        (*admin).trustRemove,
	"hub-key":             (*admin).adminHubKey,
	"topology":            (*admin).topology,
}

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
		return flag.ErrHelp
	}
	if h, ok := adminCommands[rest[0]]; ok {
		return h(a, ctx, rest[1:])
	}
	// A group's global flags may also stand before its subcommand.
	group := rest[0]
	gs := a.flags(group)
	if err := gs.Parse(rest[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usagef("%v", err)
	}
	if sub := gs.Args(); len(sub) > 0 {
		if h, ok := adminCommands[group+" "+sub[0]]; ok {
			return h(a, ctx, sub[1:])
		}
	}
	var subs []string
	for name := range adminCommands {
		if g, sub, ok := strings.Cut(name, " "); ok && g == group {
			subs = append(subs, sub)
		}
	}
	if len(subs) > 0 {
		sort.Strings(subs)
		return usagef("%s needs one of: %s", group, strings.Join(subs, ", "))
	}
	return usagef("unknown command %q", group)
}

// serverURL is --server, else $PATCHMESH_URL, else fallback.
func (a *admin) serverURL(fallback string) (string, error) {
	s := a.server
	if s == "" {
		s = a.getenv("PATCHMESH_URL")
	}
	if s == "" {
		s = fallback
	}
	if s == "" {
		return "", usagef("no server: give --server URL or set PATCHMESH_URL")
	}
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
	http     *http.Client
}

// session loads the login and checks that it belongs to the chosen server
// and has not expired: a macaroon is never sent to a server it was not
// issued by.
func (a *admin) session() (*adminAPI, error) {
	dir, err := adminConfigDir(a.getenv)
	if err != nil {
		return nil, err
	}
	l, err := loadLogin(dir)
	if err != nil {
		return nil, err
	}
	server, err := a.serverURL(l.Server)
	if err != nil {
		return nil, err
	}
	if server != l.Server {
		return nil, fmt.Errorf("%w to %s (the login is for %s): run patchmesh admin login --server %s", errNotLoggedIn, server, l.Server, server)
	}
	if !l.Expires.IsZero() && !a.now().Before(l.Expires) {
		return nil, fmt.Errorf("%w: the login to %s expired at %s; run patchmesh admin login", errNotLoggedIn, server, fmtTime(l.Expires))
	}
	return a.newAPI(server, l.Macaroon)
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
	what := req.Method + " " + req.URL.Path
	resp, err := api.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("%s: %w", what, client.ReadError(resp))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("%s: read answer: %w", what, err)
	}
	return b, nil
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
	if a.output == "json" {
		return printJSON(a.stdout, raw, v)
	}
	return text()
}

// pathEscape escapes one path segment of an API URL.
func pathEscape(s string) string { return url.PathEscape(s) }
