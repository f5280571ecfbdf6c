package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/client"
)

// Login and passwords.

func (a *admin) login(ctx context.Context, args []string) error {
	fs := a.flags("login")
	user := fs.String("user", auth.BootstrapUser, "admin user name")
	fromStdin := fs.Bool("password-stdin", false, "read the password from standard input")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("patchmesh admin login", pos); err != nil {
		return err
	}
	dir, err := adminConfigDir(a.getenv)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(dir)
	if err != nil {
		return err
	}
	name, server, err := a.loginTarget(cfg)
	if err != nil {
		return err
	}
	pw, err := a.readPassword(*fromStdin, fmt.Sprintf("Password for %s at %s: ", *user, server), false)
	if err != nil {
		return err
	}
	api, err := a.newAPI(server, "")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	req, err := api.request(ctx, http.MethodPost, "/v1/admin/login", nil, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(*user, pw)
	raw, err := api.do(req)
	var apiErr *client.APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusUnauthorized {
		// The node says no more than 401, by design; this is what it means.
		return fmt.Errorf("login refused: the user name or password is wrong, or the user may not log in: %w", err)
	}
	if err != nil {
		return err
	}
	var out struct {
		Macaroon string    `json:"macaroon"`
		Expires  time.Time `json:"expires"`
	}
	if err := decode(raw, &out); err != nil {
		return err
	}
	if out.Macaroon == "" {
		return errors.New("login: the server's answer holds no macaroon")
	}
	if err := updateConfig(dir, func(cfg *adminConfig) error {
		cfg.Contexts[name] = adminLogin{Server: server, User: *user, Macaroon: out.Macaroon, Expires: out.Expires.UTC()}
		cfg.Current = name
		return nil
	}); err != nil {
		return err
	}
	// The macaroon is a bearer secret: it goes to the file, never to stdout.
	result := struct {
		Context string    `json:"context"`
		Server  string    `json:"server"`
		User    string    `json:"user"`
		Expires time.Time `json:"expires"`
	}{name, server, *user, out.Expires.UTC()}
	return a.show(nil, result, func() error {
		_, err := fmt.Fprintf(a.stdout, "Logged in to %s as %s until %s (context %s, now current).\n", server, *user, fmtTime(out.Expires), name)
		return err
	})
}

// loginTarget is the context a login is kept under and the server it goes
// to. The name is --context (else $PATCHMESH_CONTEXT when no --server is
// given); the server is --server, else the named context's server, else
// $PATCHMESH_URL, else the current context's (a fresh login to it). With
// no name, the context already kept for the server is renewed, else one
// named after the server's host and port is made.
func (a *admin) loginTarget(cfg adminConfig) (name, server string, err error) {
	explicit := a.context
	if explicit == "" && a.server == "" {
		explicit = a.getenv("PATCHMESH_CONTEXT")
	}
	if explicit != "" {
		if err := validContextName(explicit); err != nil {
			return "", "", err
		}
	}
	raw := a.server
	if raw == "" && explicit != "" {
		raw = cfg.Contexts[explicit].Server
	}
	if raw == "" {
		raw = a.getenv("PATCHMESH_URL")
	}
	if raw == "" && explicit == "" {
		c, err := a.choose(cfg)
		if err != nil {
			return "", "", err
		}
		raw = c.server
	}
	if raw == "" {
		return "", "", usagef("no server: give --server URL (context %s is new)", explicit)
	}
	if server, err = normalizeServer(raw); err != nil {
		return "", "", err
	}
	if explicit != "" {
		return explicit, server, nil
	}
	if name, err = cfg.byServer(server); err != nil || name != "" {
		return name, server, err
	}
	// A new context, named after the host; a name another server holds
	// already gets a number.
	base := contextName(server)
	name = base
	for i := 2; i < 1000; i++ {
		if _, taken := cfg.Contexts[name]; !taken {
			return name, server, nil
		}
		name = fmt.Sprintf("%s-%d", base, i)
	}
	return "", "", usagef("too many contexts named after %s: give --context NAME", base)
}

// logout forgets the login the command would use (see choose).
func (a *admin) logout(ctx context.Context, args []string) error {
	fs := a.flags("logout")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("patchmesh admin logout", pos); err != nil {
		return err
	}
	dir, err := adminConfigDir(a.getenv)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(dir)
	if err != nil {
		return err
	}
	c, err := a.choose(cfg)
	if err != nil && !errors.Is(err, errNoContext) && len(cfg.Contexts) > 0 {
		return err
	}
	removed := c.name != "" && err == nil
	if removed {
		if err := updateConfig(dir, func(cfg *adminConfig) error {
			cfg.forget(c.name)
			return nil
		}); err != nil {
			return err
		}
	}
	return a.show(nil, map[string]any{"logged_out": removed, "context": c.name}, func() error {
		msg := fmt.Sprintf("Logged out of %s (context %s removed).", c.server, c.name)
		if !removed {
			msg = "Not logged in; nothing to do."
		}
		_, err := fmt.Fprintln(a.stdout, msg)
		return err
	})
}

// forget removes a context; removing the current context leaves none
// current.
func (cfg *adminConfig) forget(name string) {
	delete(cfg.Contexts, name)
	if cfg.Current == name {
		cfg.Current = ""
	}
}

func (a *admin) hashPassword(ctx context.Context, args []string) error {
	fs := a.flags("hash-password")
	fromStdin := fs.Bool("password-stdin", false, "read the password from standard input")
	cost := fs.Int("cost", 0, "bcrypt cost (0: the default)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("patchmesh admin hash-password", pos); err != nil {
		return err
	}
	pw, err := a.readPassword(*fromStdin, "New password: ", true)
	if err != nil {
		return err
	}
	hash, err := auth.HashPassword(pw, *cost)
	if errors.Is(err, auth.ErrPasswordLength) {
		return &catalog.InvalidError{Field: "password", Message: err.Error()}
	}
	if err != nil {
		return usagef("%v", err)
	}
	return a.show(nil, map[string]string{"hash": hash}, func() error {
		_, err := fmt.Fprintln(a.stdout, hash)
		return err
	})
}

// maxPasswordInput bounds what --password-stdin reads.
const maxPasswordInput = 4096

// readPassword reads one line from standard input with --password-stdin,
// else prompts on the terminal without echo (twice when confirming).
func (a *admin) readPassword(fromStdin bool, prompt string, confirm bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(io.LimitReader(a.stdin, maxPasswordInput)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password: %w", err)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", usagef("no password on standard input")
		}
		return pw, nil
	}
	f, ok := a.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", usagef("standard input is not a terminal: pipe the password in with --password-stdin")
	}
	ask := func(p string) (string, error) {
		fmt.Fprint(a.stderr, p)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(b), nil
	}
	pw, err := ask(prompt)
	if err != nil {
		return "", err
	}
	if confirm {
		again, err := ask("Again: ")
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", usagef("the passwords differ")
		}
	}
	if pw == "" {
		return "", usagef("empty password")
	}
	return pw, nil
}

// Tiers.

func (a *admin) tiersList(ctx context.Context, args []string) error {
	return showAll(ctx, a, "tiers list", args, "/v1/admin/tiers", "tiers", []string{"NAME", "POSITION", "CREATED"},
		func(t catalog.Tier) []string { return []string{t.Name, strconv.Itoa(t.Position), fmtTime(t.Created)} })
}

func (a *admin) tiersAdd(ctx context.Context, args []string) error {
	api, pos, err := a.prepare(ctx, "tiers add", args, "NAME")
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/tiers", nil, map[string]string{"name": pos[0]})
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var t catalog.Tier
		if err := decode(raw, &t); err != nil {
			return err
		}
		_, err := fmt.Fprintf(a.stdout, "Added tier %s at position %d.\n", t.Name, t.Position)
		return err
	})
}

func (a *admin) tiersRemove(ctx context.Context, args []string) error {
	return deleteOne(ctx, a, "tiers remove", args, "NAME", "/v1/admin/tiers", "removed",
		func(n string) string { return "Removed tier " + n + "." })
}

// prepare parses a command that has no flags of its own, checks its
// arguments and opens the admin session.
func (a *admin) prepare(ctx context.Context, cmd string, args []string, names ...string) (*adminAPI, []string, error) {
	fs := a.flags(cmd)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return nil, nil, err
	}
	return a.open(cmd, pos, names...)
}

// open checks the positional arguments, then opens the session.
func (a *admin) open(cmd string, pos []string, names ...string) (*adminAPI, []string, error) {
	if err := wantArgs("patchmesh admin "+cmd, pos, names...); err != nil {
		return nil, nil, err
	}
	api, err := a.session()
	if err != nil {
		return nil, nil, err
	}
	return api, pos, nil
}

// Tokens.

func tokensList(kind string) func(*admin, context.Context, []string) error {
	return func(a *admin, ctx context.Context, args []string) error {
		fs := a.flags(kind + " list")
		limit, after := listFlags(fs)
		pos, err := parseArgs(fs, args)
		if err != nil {
			return err
		}
		api, _, err := a.open(kind+" list", pos)
		if err != nil {
			return err
		}
		l, err := api.list(ctx, "/v1/admin/"+kind, nil, "tokens", *limit, *after)
		if err != nil {
			return err
		}
		return a.showListing(l, func() error {
			var tokens []catalog.Token
			if err := l.decodeItems(&tokens); err != nil {
				return err
			}
			now := a.now()
			rows := make([][]string, len(tokens))
			for i, t := range tokens {
				rows[i] = []string{t.ID, t.Tier, t.Name, fmtTime(t.Created), fmtTime(t.Expires), tokenStatus(t, now)}
			}
			return table(a.stdout, []string{"ID", "TIER", "NAME", "CREATED", "EXPIRES", "STATUS"}, rows)
		})
	}
}

func tokenStatus(t catalog.Token, now time.Time) string {
	switch {
	case !t.Revoked.IsZero():
		return "revoked " + fmtTime(t.Revoked)
	case !t.Live(now):
		return "expired"
	}
	return "live"
}

func tokensAdd(kind string) func(*admin, context.Context, []string) error {
	return func(a *admin, ctx context.Context, args []string) error {
		fs := a.flags(kind + " add")
		validUntil := fs.String("valid-until", "", "expiry: RFC 3339 time, duration (720h) or days (90d)")
		pos, err := parseArgs(fs, args)
		if err != nil {
			return err
		}
		if err := wantArgs("patchmesh admin "+kind+" add", pos, "TIER", "NAME"); err != nil {
			return err
		}
		in := map[string]string{"tier": pos[0], "name": pos[1]}
		if *validUntil != "" {
			t, err := parseValidUntil(*validUntil, a.now())
			if err != nil {
				return err
			}
			in["valid_until"] = t.Format(time.RFC3339)
		}
		api, err := a.session()
		if err != nil {
			return err
		}
		raw, err := api.call(ctx, http.MethodPost, "/v1/admin/"+kind, nil, in)
		if err != nil {
			return err
		}
		return a.show(raw, nil, func() error {
			var out struct {
				Token string        `json:"token"`
				Info  catalog.Token `json:"info"`
			}
			if err := decode(raw, &out); err != nil {
				return err
			}
			expires := "never expires"
			if !out.Info.Expires.IsZero() {
				expires = "expires " + fmtTime(out.Info.Expires)
			}
			_, err := fmt.Fprintf(a.stdout,
				"Created %s token %s on tier %s, name %s, %s.\n\n"+
					"Its secret is shown only this once. Store it now:\n\n    %s\n",
				out.Info.Kind, out.Info.ID, out.Info.Tier, out.Info.Name, expires, out.Token)
			return err
		})
	}
}

// parseValidUntil accepts an RFC 3339 time, a Go duration or a whole
// number of days ("90d"), the latter two counted from now.
func parseValidUntil(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n > 0 && n <= 100*366 {
			return now.UTC().AddDate(0, 0, n).Truncate(time.Second), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.UTC().Add(d).Truncate(time.Second), nil
	}
	return time.Time{}, usagef("--valid-until %q: want an RFC 3339 time (2027-01-31T00:00:00Z), a positive duration (720h) or days (90d)", s)
}

func tokensRevoke(kind string) func(*admin, context.Context, []string) error {
	return func(a *admin, ctx context.Context, args []string) error {
		return deleteOne(ctx, a, kind+" revoke", args, "ID", "/v1/admin/"+kind, "revoked",
			func(id string) string { return "Revoked token " + id + "." })
	}
}

// Patches.

func (a *admin) patchesUpload(ctx context.Context, args []string) error {
	fs := a.flags("patches upload")
	var p catalog.Patch
	var cves stringList
	fs.StringVar(&p.Kernel, "kernel", "", "kernel release its machines report: Ubuntu's ABI.BUILD-FLAVOUR (5.15.0-107.117-generic), elsewhere uname -r")
	fs.StringVar(&p.Arch, "arch", "", "architecture, as uname -m prints it")
	fs.StringVar(&p.Version, "version", "", "patch version, e.g. 107.1")
	fs.Var(&cves, "cve", "a `CVE` the patch fixes (repeatable)")
	fs.StringVar(&p.Description, "description", "", "free text")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("patchmesh admin patches upload", pos, "FILE"); err != nil {
		return err
	}
	for _, need := range []struct{ name, v string }{{"kernel", p.Kernel}, {"arch", p.Arch}, {"version", p.Version}} {
		if need.v == "" {
			return usagef("patches upload needs --%s", need.name)
		}
	}
	p.CVEs = cves

	f, err := os.Open(pos[0])
	if err != nil {
		return usagef("patches upload: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return usagef("patches upload: %s is not a regular file", pos[0])
	}
	p.Size = fi.Size()
	// Check what can be checked before reading a possibly large file, with
	// a placeholder digest, so a typo costs nothing.
	p.Digest = "sha256:" + strings.Repeat("0", 64)
	if err := p.Validate(); err != nil {
		return err
	}
	api, err := a.session()
	if err != nil {
		return err
	}

	// Hash first, streaming; then send the same bytes with their length.
	// The server hashes again and keeps nothing if the two differ (the file
	// changed in between).
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("hash %s: %w", pos[0], err)
	}
	p.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	q := url.Values{"digest": {p.Digest}, "kernel": {p.Kernel}, "arch": {p.Arch}, "version": {p.Version}, "size": {strconv.FormatInt(p.Size, 10)}}
	if len(p.CVEs) > 0 {
		q.Set("cves", strings.Join(p.CVEs, ","))
	}
	if p.Description != "" {
		q.Set("description", p.Description)
	}
	var body io.Reader = io.LimitReader(f, p.Size)
	bar := newProgress(a.stderr, "uploading")
	if bar != nil {
		body = &countingReader{r: body, total: p.Size, fn: bar.update}
	}
	req, err := api.request(ctx, http.MethodPost, "/v1/admin/patches", q, body)
	if err != nil {
		return err
	}
	req.ContentLength = p.Size
	req.Header.Set("Content-Type", "application/octet-stream")
	status, raw, err := api.doStatus(req)
	bar.finish()
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var got catalog.Patch
		if err := decode(raw, &got); err != nil {
			return err
		}
		verb := "Uploaded"
		if status == http.StatusOK { // a repeat: the node had this very patch
			verb = "Already uploaded (unchanged)"
		}
		_, err := fmt.Fprintf(a.stdout, "%s %s\n  kernel %s, arch %s, version %s, %s, on tiers %s\n",
			verb, got.Digest, got.Kernel, got.Arch, got.Version, fmtSize(got.Size), orDash(strings.Join(got.Tiers, ", ")))
		return err
	})
}

func (a *admin) patchesList(ctx context.Context, args []string) error {
	fs := a.flags("patches list")
	kernel := fs.String("kernel", "", "only this kernel release")
	arch := fs.String("arch", "", "only this architecture")
	tier := fs.String("tier", "", "only patches on this tier")
	version := fs.String("version", "", "only this version")
	withdrawn := fs.Bool("withdrawn", false, "include withdrawn patches")
	limit, after := listFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	api, _, err := a.open("patches list", pos)
	if err != nil {
		return err
	}
	q := url.Values{}
	setNonEmpty(q, "kernel", *kernel)
	setNonEmpty(q, "arch", *arch)
	setNonEmpty(q, "tier", *tier)
	setNonEmpty(q, "version", *version)
	if *withdrawn {
		q.Set("withdrawn", "true")
	}
	l, err := api.list(ctx, "/v1/admin/patches", q, "patches", *limit, *after)
	if err != nil {
		return err
	}
	return a.showListing(l, func() error {
		var patches []catalog.Patch
		if err := l.decodeItems(&patches); err != nil {
			return err
		}
		return a.patchTable(patches)
	})
}

func (a *admin) patchTable(patches []catalog.Patch) error {
	rows := make([][]string, len(patches))
	for i, p := range patches {
		state := "live"
		if p.Withdrawn {
			state = "withdrawn"
		}
		rows[i] = []string{p.Digest, p.Kernel, p.Arch, p.Version, fmtSize(p.Size), orDash(strings.Join(p.Tiers, ",")), orDash(strings.Join(p.CVEs, ",")), state}
	}
	return table(a.stdout, []string{"DIGEST", "KERNEL", "ARCH", "VERSION", "SIZE", "TIERS", "CVES", "STATE"}, rows)
}

func setNonEmpty(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

func (a *admin) patchesShow(ctx context.Context, args []string) error {
	api, pos, err := a.prepare(ctx, "patches show", args, "DIGEST")
	if err != nil {
		return err
	}
	digest, err := api.resolveDigest(ctx, pos[0])
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodGet, "/v1/admin/patches/"+pathEscape(digest), nil, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error { return a.patchDetail(raw) })
}

func (a *admin) patchDetail(raw []byte) error {
	var p catalog.Patch
	if err := decode(raw, &p); err != nil {
		return err
	}
	return table(a.stdout, []string{"FIELD", "VALUE"}, [][]string{
		{"digest", p.Digest},
		{"kernel", p.Kernel},
		{"arch", p.Arch},
		{"version", p.Version},
		{"size", fmt.Sprintf("%d (%s)", p.Size, fmtSize(p.Size))},
		{"tiers", orDash(strings.Join(p.Tiers, ", "))},
		{"cves", orDash(strings.Join(p.CVEs, ", "))},
		{"withdrawn", strconv.FormatBool(p.Withdrawn)},
		{"created", fmtTime(p.Created)},
		{"description", orDash(strings.ReplaceAll(p.Description, "\n", " "))},
	})
}

func (a *admin) patchesPromote(ctx context.Context, args []string) error {
	api, pos, err := a.prepare(ctx, "patches promote", args, "REF", "TIER")
	if err != nil {
		return err
	}
	// A version stays a version; anything else names one patch by its
	// digest or a prefix of it.
	ref := pos[0]
	if catalog.ValidVersion(ref) != nil {
		if ref, err = api.resolveDigest(ctx, ref); err != nil {
			return err
		}
	}
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/patches/"+pathEscape(ref)+"/promote", nil, map[string]string{"tier": pos[1]})
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var out struct{ Patches []catalog.Patch }
		if err := decode(raw, &out); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "Promoted %d patch(es) to %s:\n", len(out.Patches), pos[1])
		return a.patchTable(out.Patches)
	})
}

func (a *admin) patchesPromoteAll(ctx context.Context, args []string) error {
	api, pos, err := a.prepare(ctx, "patches promote-all", args, "FROM", "TO")
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/promote-all", nil, map[string]string{"from": pos[0], "to": pos[1]})
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var out struct{ Promoted int }
		if err := decode(raw, &out); err != nil {
			return err
		}
		_, err := fmt.Fprintf(a.stdout, "Promoted %d patch(es) from %s to %s.\n", out.Promoted, pos[0], pos[1])
		return err
	})
}

func (a *admin) patchesWithdraw(ctx context.Context, args []string) error {
	api, pos, err := a.prepare(ctx, "patches withdraw", args, "DIGEST")
	if err != nil {
		return err
	}
	digest, err := api.resolveDigest(ctx, pos[0])
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/patches/"+pathEscape(digest)+"/withdraw", nil, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var p catalog.Patch
		if err := decode(raw, &p); err != nil {
			return err
		}
		_, err := fmt.Fprintf(a.stdout, "Withdrew %s (kernel %s, arch %s, version %s): no machine is offered it any more.\n", p.Digest, p.Kernel, p.Arch, p.Version)
		return err
	})
}

func (a *admin) patchesRemove(ctx context.Context, args []string) error {
	api, pos, err := a.prepare(ctx, "patches remove", args, "DIGEST")
	if err != nil {
		return err
	}
	digest, err := api.resolveDigest(ctx, pos[0])
	if err != nil {
		return err
	}
	if _, err := api.call(ctx, http.MethodDelete, "/v1/admin/patches/"+pathEscape(digest), nil, nil); err != nil {
		return err
	}
	return a.show(nil, map[string]string{"removed": digest}, func() error {
		_, err := fmt.Fprintf(a.stdout, "Removed %s and its file.\n", digest)
		return err
	})
}

// Machines and storage.

func (a *admin) machinesList(ctx context.Context, args []string) error {
	fs := a.flags("machines list")
	tier := fs.String("tier", "", "only machines on this tier")
	kernel := fs.String("kernel", "", "only machines running this kernel release")
	state := fs.String("state", "", "only machines that last reported this state")
	limit, after := listFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	api, _, err := a.open("machines list", pos)
	if err != nil {
		return err
	}
	q := url.Values{}
	setNonEmpty(q, "tier", *tier)
	setNonEmpty(q, "kernel", *kernel)
	setNonEmpty(q, "state", *state)
	l, err := api.list(ctx, "/v1/admin/machines", q, "machines", *limit, *after)
	if err != nil {
		return err
	}
	return a.showListing(l, func() error {
		var machines []catalog.Machine
		if err := l.decodeItems(&machines); err != nil {
			return err
		}
		rows := make([][]string, len(machines))
		for i, m := range machines {
			id := m.ID
			if len(id) > 16 {
				id = id[:16]
			}
			rows[i] = []string{id, m.Tier, m.Kernel, m.Arch, string(m.State), orDash(m.PatchVersion), orDash(m.ClientVersion), fmtTime(m.LastSeen)}
		}
		return table(a.stdout, []string{"MACHINE", "TIER", "KERNEL", "ARCH", "STATE", "PATCH", "CLIENT", "LAST SEEN"}, rows)
	})
}

func (a *admin) storageList(ctx context.Context, args []string) error {
	fs := a.flags("storage list")
	limit, after := listFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	api, _, err := a.open("storage list", pos)
	if err != nil {
		return err
	}
	l, err := api.list(ctx, "/v1/admin/storage", nil, "blobs", *limit, *after)
	if err != nil {
		return err
	}
	return a.showListing(l, func() error {
		var blobs []struct {
			Digest   string    `json:"digest"`
			Size     int64     `json:"size"`
			Modified time.Time `json:"modified"`
		}
		if err := l.decodeItems(&blobs); err != nil {
			return err
		}
		rows := make([][]string, len(blobs))
		for i, b := range blobs {
			rows[i] = []string{b.Digest, fmtSize(b.Size), fmtTime(b.Modified)}
		}
		return table(a.stdout, []string{"DIGEST", "SIZE", "MODIFIED"}, rows)
	})
}

func (a *admin) storageRefresh(ctx context.Context, args []string) error {
	fs := a.flags("storage refresh")
	repair := fs.Bool("repair", false, "remove orphans older than --grace and fetch missing blobs again from upstream")
	grace := fs.Duration("grace", 24*time.Hour, "with --repair, how old an orphan must be to be removed")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	api, _, err := a.open("storage refresh", pos)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *repair {
		q.Set("repair", "true")
		q.Set("grace", grace.String())
	}
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/storage/refresh", q, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var out struct {
			Blobs     int      `json:"blobs"`
			Patches   int      `json:"patches"`
			Orphans   []string `json:"orphans"`
			Missing   []string `json:"missing"`
			Removed   []string `json:"removed"`
			Refetched []string `json:"refetched"`
		}
		if err := decode(raw, &out); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "%d blob(s), %d patch record(s).\n", out.Blobs, out.Patches)
		fmt.Fprintf(a.stdout, "Orphans (files no patch names): %d\n", len(out.Orphans))
		for _, d := range out.Orphans {
			fmt.Fprintf(a.stdout, "  %s\n", d)
		}
		fmt.Fprintf(a.stdout, "Missing (patches whose file is gone): %d\n", len(out.Missing))
		for _, d := range out.Missing {
			fmt.Fprintf(a.stdout, "  %s\n", d)
		}
		if *repair {
			fmt.Fprintf(a.stdout, "Removed orphans older than %s: %d\n", *grace, len(out.Removed))
			for _, d := range out.Removed {
				fmt.Fprintf(a.stdout, "  %s\n", d)
			}
			fmt.Fprintf(a.stdout, "Fetched again from upstream: %d\n", len(out.Refetched))
			for _, d := range out.Refetched {
				fmt.Fprintf(a.stdout, "  %s\n", d)
			}
		}
		return nil
	})
}
