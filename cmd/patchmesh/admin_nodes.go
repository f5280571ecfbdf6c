package main

// Node identity commands: admitting nodes at the hub (`patchmesh admin
// nodes …`) and a node's own key (`patchmesh node-key`, which reads or
// makes the key file itself, with no server involved).

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/node"
)

func (a *admin) nodesList(ctx context.Context, args []string) error {
	return showAll(ctx, a, "nodes list", args, "/v1/admin/nodes", "nodes", []string{"NAME", "KEY ID", "TIERS", "URLS", "STATE"},
		func(n catalog.Node) []string {
			state := "admitted " + fmtTime(n.Admitted)
			if !n.Removed.IsZero() {
				state = "removed " + fmtTime(n.Removed)
			}
			return []string{n.Name, n.KeyID, orDash(strings.Join(n.Tiers, ",")), strings.Join(n.URLs, " "), state}
		})
}

func (a *admin) nodesAdmit(ctx context.Context, args []string) error {
	fs := a.flags("nodes admit")
	key := fs.String("key", "", "the node's public key, ed25519:… (patchmesh node-key prints it)")
	var urls, tiers stringList
	fs.Var(&urls, "url", "a base URL machines reach the node at (repeatable)")
	fs.Var(&tiers, "tier", "a tier to admit the node on (repeatable; default every tier)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if *key == "" || len(urls) == 0 {
		return usagef("nodes admit needs --key and at least one --url")
	}
	api, pos, err := a.open("nodes admit", pos, "NAME")
	if err != nil {
		return err
	}
	body := map[string]any{"name": pos[0], "key": *key, "urls": []string(urls)}
	if len(tiers) > 0 {
		body["tiers"] = []string(tiers)
	}
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/nodes", nil, body)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var n catalog.Node
		if err := decode(raw, &n); err != nil {
			return err
		}
		_, err := fmt.Fprintf(a.stdout, "Admitted node %s (key %s) on %s. The hub signed the admission; it reaches every node of those tiers by sync.\n",
			n.Name, n.KeyID, strings.Join(n.Tiers, ", "))
		return err
	})
}

func (a *admin) nodesUpdate(ctx context.Context, args []string) error {
	fs := a.flags("nodes update")
	var urls, tiers stringList
	fs.Var(&urls, "url", "a base URL machines reach the node at (repeatable; default: unchanged)")
	fs.Var(&tiers, "tier", "a tier to add the node to (repeatable)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(urls) == 0 && len(tiers) == 0 {
		return usagef("nodes update needs --url or --tier")
	}
	api, pos, err := a.open("nodes update", pos, "NAME")
	if err != nil {
		return err
	}
	body := map[string]any{}
	if len(urls) > 0 {
		body["urls"] = []string(urls)
	}
	if len(tiers) > 0 {
		body["tiers"] = []string(tiers)
	}
	raw, err := api.call(ctx, http.MethodPatch, "/v1/admin/nodes/"+url.PathEscape(pos[0]), nil, body)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var n catalog.Node
		if err := decode(raw, &n); err != nil {
			return err
		}
		_, err := fmt.Fprintf(a.stdout, "Updated node %s (key %s): %s, on %s. The hub signed fresh admissions; they reach every node of those tiers by sync.\n",
			n.Name, n.KeyID, strings.Join(n.URLs, " "), strings.Join(n.Tiers, ", "))
		return err
	})
}

func (a *admin) nodesRemove(ctx context.Context, args []string) error {
	return deleteOne(ctx, a, "nodes remove", args, "NAME", "/v1/admin/nodes", "removed", func(n string) string {
		return "Removed node " + n + ". Machines stop being sent to it once the signed removal has synced."
	})
}

const nodeKeyUsage = `Usage: patchmesh node-key [--key FILE] [--output text|json]

Prints the node's public identity key ("ed25519:…") and its ID, reading
the private key file, or creating it (mode 0600) if it does not exist.
FILE defaults to node.key in the default data directory (node.key_file in
the node's config).

Admit the node at the hub with the printed key:
  patchmesh admin nodes admit NAME --key ed25519:… --url https://… [--tier T]...

Exit codes: 0 success, 1 the key file cannot be read or made, 2 usage.
`

// runNodeKey is `patchmesh node-key`: it works on the key file, with no
// server involved.
func runNodeKey(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := newFlagSet("patchmesh node-key")
	path := fs.String("key", "", "the key `file`")
	var output outputFlag = "text"
	fs.Var(&output, "output", "text or json")
	err := func() error {
		pos, err := parseArgs(fs, args)
		if err != nil {
			return err
		}
		if err := wantArgs("patchmesh node-key", pos); err != nil {
			return err
		}
		if *path == "" {
			*path = filepath.Join(node.DefaultsWithEnv(getenv).Node.DataDir, "node.key")
		}
		return printKeyFile(*path, "node", federation.LoadOrCreateNodeKey, output, stdout, stderr)
	}()
	return finish("patchmesh node-key", nodeKeyUsage, err, stdout, stderr)
}

func (a *admin) nodesJoinToken(ctx context.Context, args []string) error {
	fs := a.flags("nodes join-token")
	validFor := fs.Duration("valid-for", time.Hour, "how long the token works (at most 168h)")
	var tiers stringList
	fs.Var(&tiers, "tier", "a tier the join admits the node on (repeatable; default every tier)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	api, pos, err := a.open("nodes join-token", pos, "NAME")
	if err != nil {
		return err
	}
	body := map[string]any{"name": pos[0], "valid_for": validFor.String()}
	if len(tiers) > 0 {
		body["tiers"] = []string(tiers)
	}
	raw, err := api.call(ctx, http.MethodPost, "/v1/admin/nodes/join-tokens", nil, body)
	if err != nil {
		return err
	}
	return a.show(raw, nil, func() error {
		var t struct {
			ID      string    `json:"id"`
			Name    string    `json:"name"`
			Token   string    `json:"token"`
			Expires time.Time `json:"expires"`
		}
		if err := decode(raw, &t); err != nil {
			return err
		}
		// The token alone goes to standard output, so that
		// `join-token NAME > FILE` writes the file `patchmesh join
		// --token-file` reads; what it is goes to standard error.
		fmt.Fprintf(a.stderr, "Join token %s for node %s, valid once until %s, shown only this once. On the new node:\n  patchmesh join --config FILE --token-file FILE\n",
			t.ID, t.Name, fmtTime(t.Expires))
		_, err := fmt.Fprintln(a.stdout, t.Token)
		return err
	})
}

func (a *admin) nodesJoinTokens(ctx context.Context, args []string) error {
	return showAll(ctx, a, "nodes join-tokens", args, "/v1/admin/nodes/join-tokens", "join_tokens",
		[]string{"ID", "NAME", "CREATED BY", "EXPIRES", "STATE"},
		func(t struct {
			ID        string    `json:"id"`
			Name      string    `json:"name"`
			CreatedBy string    `json:"created_by"`
			Expires   time.Time `json:"expires"`
			Failures  int       `json:"failures"`
			Used      time.Time `json:"used"`
			UsedKeyID string    `json:"used_key_id"`
			UsedFrom  string    `json:"used_from"`
		}) []string {
			state := "unused"
			if !t.Used.IsZero() {
				state = fmt.Sprintf("joined %s by key %s from %s", fmtTime(t.Used), t.UsedKeyID, t.UsedFrom)
			} else if t.Failures > 0 {
				state = fmt.Sprintf("unused, %d failed attempts", t.Failures)
			}
			return []string{t.ID, t.Name, t.CreatedBy, fmtTime(t.Expires), state}
		})
}

const joinUsage = `Usage: patchmesh join --config FILE --token-file FILE

Joins the mesh with a one-time join token made at the hub
(patchmesh admin nodes join-token NAME). The node, not yet running,
proves it holds the token to the hub over the hub's peer listener
(mutual TLS, the hub pinned by the key ID in the token) without sending
the token's secret, and the hub admits it under its node key, at its
advertised URL (node.advertise_url, else its listen address).

The join is kept in data_dir/join.json: the node then trusts the hub and
the nodes the hub had admitted for node-to-node TLS until their
admissions reach it by sync. Pin the printed hub signing key in
sync.trust, then start the node (patchmesh serve).

Exit codes: 0 joined, 1 refused or unreachable, 2 usage.
`

// runJoin is `patchmesh join`: the new node's side of the signed join.
func runJoin(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := newFlagSet("patchmesh join")
	config := fs.String("config", "", "the node's config `file`")
	tokenFile := fs.String("token-file", "", "a `file` holding the join token (- for standard input)")
	err := func() error {
		pos, err := parseArgs(fs, args)
		if err != nil {
			return err
		}
		if err := wantArgs("patchmesh join", pos); err != nil {
			return err
		}
		if *tokenFile == "" {
			return usagef("join needs --token-file")
		}
		var cargs []string
		if *config != "" {
			cargs = []string{"--config", *config}
		}
		cfg, _, err := serveConfig(cargs, getenv)
		if err != nil {
			return usagef("%v", err)
		}
		var raw []byte
		if *tokenFile == "-" {
			raw, err = io.ReadAll(io.LimitReader(os.Stdin, 8<<10))
		} else {
			raw, err = os.ReadFile(*tokenFile)
		}
		if err != nil {
			return fmt.Errorf("read the join token: %w", err)
		}
		tok, err := federation.ParseJoinToken(string(raw))
		if err != nil {
			return err
		}
		key, _, err := federation.LoadOrCreateNodeKey(cfg.NodeKeyPath())
		if err != nil {
			return err
		}
		cert, err := federation.NodeCertificate(key, cfg.Node.Name, time.Now())
		if err != nil {
			return err
		}
		apiURL, peerURL := cfg.Node.AdvertiseURL, cfg.Server.PeerAdvertiseURL
		if apiURL == "" {
			scheme := "http"
			if cfg.Server.TLSCert != "" {
				scheme = "https"
			}
			apiURL = scheme + "://" + cfg.Server.Listen
		}
		if peerURL == "" && cfg.Server.PeerListen != "" {
			peerURL = "https://" + cfg.Server.PeerListen
		}
		res, err := federation.Join(ctx, federation.JoinRequest{Token: tok, Cert: cert, Key: key, URL: apiURL, PeerURL: peerURL})
		if err != nil {
			return err
		}
		pins := append([]string{res.HubKey}, res.Pins...)
		rec := node.JoinRecord{Hub: res.Hub, HubKey: res.HubKey, HubPeerURL: tok.Hub, Pins: pins, Tiers: res.Tiers,
			Joined: time.Now().UTC()}
		if res.SigningKey != "" {
			rec.SigningKeys = []string{res.SigningKey}
		}
		if err := node.WriteJoinFile(cfg.Node.DataDir, rec); err != nil {
			return fmt.Errorf("keep the join: %w", err)
		}
		fmt.Fprintf(stdout, "Joined: hub %s admitted this node as %s on %s (key %s).\n", res.Hub, res.Name,
			strings.Join(res.Tiers, ", "), federation.KeyID(key.Public().(ed25519.PublicKey)))
		if res.Name != cfg.Node.Name {
			fmt.Fprintf(stdout, "Set node.name to %s: the hub admitted that name.\n", res.Name)
		}
		if res.SigningKey != "" {
			fmt.Fprintf(stdout, "Pin the hub's signing key (sync.trust): %s\n", res.SigningKey)
		}
		fmt.Fprintf(stdout, "Link to the hub's peer listener: %s\n", tok.Hub)
		return nil
	}()
	return finish("patchmesh join", joinUsage, err, stdout, stderr)
}
