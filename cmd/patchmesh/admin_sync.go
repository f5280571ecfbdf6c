package main

// Federation commands: the sync loop's state and trigger, the hub keys a
// node pins, and the hub's own key (`patchmesh admin hub-key` asks a
// running hub; `patchmesh hub-key` reads or makes the key file itself).

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/node"
)

// triggerWaitTimeout bounds `sync trigger --wait`: a round that fetches
// many blobs can take longer than an ordinary admin call.
const triggerWaitTimeout = 10 * time.Minute

func (a *admin) syncStatus(ctx context.Context, args []string) error {
	api, _, err := a.prepare(ctx, "sync status", args)
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodGet, "/v1/sync/status", nil, nil)
	if err != nil {
		return err
	}
	return a.showSyncStatus(raw)
}

func (a *admin) syncTrigger(ctx context.Context, args []string) error {
	fs := a.flags("sync trigger")
	wait := fs.Bool("wait", false, "return once the round has ended on every link")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	api, _, err := a.open("sync trigger", pos)
	if err != nil {
		return err
	}
	timeout := apiTimeout
	if *wait {
		timeout = triggerWaitTimeout
	}
	raw, err := api.callWithin(ctx, timeout, http.MethodPost, "/v1/admin/sync/trigger", nil, map[string]bool{"wait": *wait})
	if err != nil {
		return err
	}
	if err := a.showSyncStatus(raw); err != nil || !*wait {
		return err
	}
	// --wait asks how the round went: a link whose round failed fails
	// the command, so that a script can tell without reading the table.
	var out federation.SyncStatusResponse
	if err := decode(raw, &out); err != nil {
		return err
	}
	var failed []string
	for _, l := range out.Links {
		if l.State == federation.LinkFailing {
			failed = append(failed, fmt.Sprintf("%s (%s)", l.Tier, l.LastError))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("the round failed on %d of %d links: %s", len(failed), len(out.Links), strings.Join(failed, ", "))
	}
	return nil
}

func (a *admin) showSyncStatus(raw []byte) error {
	return a.show(raw, nil, func() error {
		var out federation.SyncStatusResponse
		if err := decode(raw, &out); err != nil {
			return err
		}
		if len(out.Links) == 0 {
			_, err := fmt.Fprintf(a.stdout, "This node (%s) has no sync links.\n", orDash(out.Role))
			return err
		}
		rows := make([][]string, len(out.Links))
		for i, l := range out.Links {
			lastErr := "-"
			if l.LastError != "" {
				lastErr = fmtTime(l.LastErrorAt) + " " + l.LastError
			}
			rows[i] = []string{
				l.Tier, l.HubTier, orDash(l.Upstream), l.State,
				fmt.Sprintf("%d/%d", l.Cursor, l.UpstreamHead),
				fmt.Sprintf("%d events, %s", l.LagEvents, fmtLag(l.LagSeconds)),
				fmtHeartbeat(l), fmtTime(l.LastSuccess), lastErr,
			}
		}
		return table(a.stdout, []string{"TIER", "HUB TIER", "UPSTREAM", "STATE", "CURSOR/HEAD", "LAG", "HUB HEARTBEAT", "LAST SUCCESS", "LAST ERROR"}, rows)
	})
}

// fmtHeartbeat shows how fresh the link's newest hub heartbeat is, what
// it announced, and why the link is stale if it is.
func fmtHeartbeat(l federation.LinkStatus) string {
	s := "none"
	if !l.HeartbeatTime.IsZero() {
		s = fmt.Sprintf("%s old, hub seq %d", fmtLag(l.HeartbeatAge), l.HeartbeatHubHead)
	}
	if l.Stale {
		s += " (stale: " + l.StaleReason + ")"
	}
	return s
}

// fmtLag shows a lag in whole seconds, as a duration.
func fmtLag(seconds float64) string {
	return (time.Duration(seconds) * time.Second).String()
}

// trustKey is a pinned key as GET /v1/admin/trust lists it.
type trustKey struct {
	ID     string    `json:"id"`
	Key    string    `json:"key"`
	Source string    `json:"source"`
	Added  time.Time `json:"added"`
}

func (a *admin) trustList(ctx context.Context, args []string) error {
	return showAll(ctx, a, "trust list", args, "/v1/admin/trust", "keys", []string{"ID", "SOURCE", "ADDED", "KEY"},
		func(k trustKey) []string { return []string{k.ID, k.Source, fmtTime(k.Added), k.Key} })
}

func (a *admin) trustAdd(ctx context.Context, args []string) error {
	api, pos, err := a.prepare(ctx, "trust add", args, "KEY")
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/trust", nil, map[string]string{"key": pos[0]})
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var k trustKey
		if err := decode(raw, &k); err != nil {
			return err
		}
		_, err := fmt.Fprintf(a.stdout, "Pinned hub key %s (%s).\n", k.ID, k.Key)
		return err
	})
}

func (a *admin) trustRemove(ctx context.Context, args []string) error {
	return deleteOne(ctx, a, "trust remove", args, "ID", "/v1/admin/trust", "removed", func(id string) string {
		return "Unpinned hub key " + id + ". Records it signed are refused from now on."
	})
}

// adminHubKey asks a node for its hub key. The key is public, so no login
// is needed, and none is sent.
func (a *admin) adminHubKey(ctx context.Context, args []string) error {
	fs := a.flags("hub-key")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs("patchmesh admin hub-key", pos); err != nil {
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
	if err != nil {
		return err
	}
	api, err := a.newAPI(c.server, "")
	if err != nil {
		return err
	}
	raw, err := api.call(ctx, http.MethodGet, "/v1/sync/hub-key", nil, nil)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var out struct{ Key, ID string }
		if err := decode(raw, &out); err != nil {
			return err
		}
		if _, err := fmt.Fprintf(a.stdout, "%s\nid %s\n", out.Key, out.ID); err != nil {
			return err
		}
		// What a machine needs, on stderr so that stdout stays the key.
		_, err := fmt.Fprintf(a.stderr, "Machines pin it when they register: patchmesh client register pma_… --server URL --hub-key %s\n", out.Key)
		return err
	})
}

const hubKeyUsage = `Usage: patchmesh hub-key [--key FILE] [--endorse ed25519:NEW] [--output text|json]

Prints the hub's public signing key ("ed25519:…") and its ID, reading the
private key file, or creating it (mode 0600) if it does not exist. FILE
defaults to hub.key in the default data directory.

With --endorse, the key in FILE (which must exist: the current, old key)
signs an endorsement of the NEW public key and prints it ("pmke_…"). Put it
in every node's sync.endorsements: nodes hand it to machines with each
offer, and a machine that pins the old key then pins the new one too.

This is also step 1 of rotating the hub key: make a new key with --key
NEW, pin the printed key on every downstream (node config sync.trust, or
patchmesh admin trust add), then point the hub's sync.hub_key at NEW.
Keep the old pin until nothing signed by the old key is needed.

Exit codes: 0 success, 1 the key file cannot be read or made, 2 usage.
`

// endorseKey prints an endorsement of the public key next by the existing
// key at path. It never creates a key: an endorsement by a key made a
// moment ago would vouch for nothing.
func endorseKey(path, next string, output outputFlag, stdout io.Writer) error {
	pub, err := federation.ParsePublicKey(next)
	if err != nil {
		return usagef("--endorse: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("endorse: the endorsing (old) key: %w", err)
	}
	priv, _, err := federation.LoadOrCreateKey(path)
	if err != nil {
		return err
	}
	oldPub := priv.Public().(ed25519.PublicKey)
	if oldPub.Equal(pub) {
		return usagef("--endorse: that is the key in %s itself", path)
	}
	env, err := federation.Endorse(priv, pub, time.Now())
	if err != nil {
		return err
	}
	out := struct {
		Endorsement string `json:"endorsement"`
		By          string `json:"by"`
		Endorsed    string `json:"endorsed"`
	}{federation.FormatEndorsement(env), federation.KeyID(oldPub), federation.KeyID(pub)}
	if output == "json" {
		return printJSON(stdout, nil, out)
	}
	_, err = fmt.Fprintf(stdout, "%s\nkey %s endorses key %s\n", out.Endorsement, out.By, out.Endorsed)
	return err
}

// printKeyFile prints the public half of the ed25519 key in path and its
// ID, making the key file first if load finds none: the one output of
// `patchmesh hub-key` and `patchmesh node-key`. kind names the key in the
// note that a new one was made.
func printKeyFile(path, kind string, load func(string) (ed25519.PrivateKey, bool, error), output outputFlag, stdout, stderr io.Writer) error {
	priv, created, err := load(path)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(stderr, "Created a new %s key in %s.\n", kind, path)
	}
	pub := priv.Public().(ed25519.PublicKey)
	out := struct {
		Key  string `json:"key"`
		ID   string `json:"id"`
		File string `json:"file"`
	}{federation.FormatPublicKey(pub), federation.KeyID(pub), path}
	if output == "json" {
		return printJSON(stdout, nil, out)
	}
	_, err = fmt.Fprintf(stdout, "%s\nid %s\n", out.Key, out.ID)
	return err
}

// runHubKey is `patchmesh hub-key`: it works on the key file, with no
// server involved.
func runHubKey(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := newFlagSet("patchmesh hub-key")
	path := fs.String("key", "", "the key `file`")
	endorse := fs.String("endorse", "", "a new hub public `key` for the key in FILE to endorse")
	var output outputFlag = "text"
	fs.Var(&output, "output", "text or json")
	err := func() error {
		pos, err := parseArgs(fs, args)
		if err != nil {
			return err
		}
		if err := wantArgs("patchmesh hub-key", pos); err != nil {
			return err
		}
		if *path == "" {
			*path = filepath.Join(node.DefaultsWithEnv(getenv).Node.DataDir, "hub.key")
		}
		if *endorse != "" {
			return endorseKey(*path, *endorse, output, stdout)
		}
		return printKeyFile(*path, "hub", federation.LoadOrCreateKey, output, stdout, stderr)
	}()
	return finish("patchmesh hub-key", hubKeyUsage, err, stdout, stderr)
}
