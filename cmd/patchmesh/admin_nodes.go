package main

// Node identity commands: admitting nodes at the hub (`patchmesh admin
// nodes …`) and a node's own key (`patchmesh node-key`, which reads or
// makes the key file itself, with no server involved).

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"

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
