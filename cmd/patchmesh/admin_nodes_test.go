package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
)

func TestAdminNodesAdmitListRemove(t *testing.T) {
	// A node of its own identity, which the test does not admit.
	_, self, _ := ed25519.GenerateKey(rand.Reader)
	n := newTestNode(t, func(c *api.Config) { c.NodeKey = self })
	n.login()
	pub := newPublicKey(t)
	key := federation.FormatPublicKey(pub)
	if r := n.admin("", "nodes", "admit", "edge-a1", "--key", key); r.code != exitUsage {
		t.Errorf("nodes admit without --url: exit %d, want %d", r.code, exitUsage)
	}
	if r := n.admin("", "nodes", "admit", "edge-a1", "--key", "ed25519:bad", "--url", "https://a1.example"); r.code != exitInvalid {
		t.Errorf("nodes admit with a bad key: exit %d (%s), want %d", r.code, r.stderr, exitInvalid)
	}
	r := n.mustAdmin("nodes", "admit", "edge-a1", "--key", key, "--url", "https://a1.example", "--url", "https://a1.example:8443",
		"--tier", "edge", "--tier", "beta")
	if !strings.Contains(r.stdout, federation.KeyID(pub)) || !strings.Contains(r.stdout, "edge, beta") {
		t.Errorf("nodes admit printed %q, want the key ID and the tiers", r.stdout)
	}
	r = n.mustAdmin("nodes", "list", "--output", "json")
	var out struct {
		Nodes []struct {
			Name  string
			KeyID string `json:"key_id"`
			URLs  []string
			Tiers []string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out.Nodes) != 1 || out.Nodes[0].KeyID != federation.KeyID(pub) ||
		len(out.Nodes[0].URLs) != 2 || strings.Join(out.Nodes[0].Tiers, ",") != "edge,beta" {
		t.Errorf("nodes list --output json = %s (%v)", r.stdout, err)
	}
	if r := n.admin("", "nodes", "admit", "edge-a1", "--key", key, "--url", "https://a1.example"); r.code != exitConflict {
		t.Errorf("admitting an admitted node: exit %d, want %d", r.code, exitConflict)
	}
	if r := n.admin("", "nodes", "update", "edge-a1"); r.code != exitUsage {
		t.Errorf("nodes update without a change: exit %d, want %d", r.code, exitUsage)
	}
	if r := n.admin("", "nodes", "update", "edge-a9", "--url", "https://a9.example"); r.code != exitNotFound {
		t.Errorf("nodes update of a node never admitted: exit %d, want %d", r.code, exitNotFound)
	}
	r = n.mustAdmin("nodes", "update", "edge-a1", "--url", "https://a1.new.example")
	if !strings.Contains(r.stdout, federation.KeyID(pub)) || !strings.Contains(r.stdout, "https://a1.new.example") || !strings.Contains(r.stdout, "edge, beta") {
		t.Errorf("nodes update printed %q, want the key ID, the new URL and the tiers", r.stdout)
	}
	if r := n.mustAdmin("nodes", "list"); !strings.Contains(r.stdout, "https://a1.new.example") || strings.Contains(r.stdout, "https://a1.example:8443") || strings.Contains(r.stdout, "removed") {
		t.Errorf("nodes list after the update: %q, want the new URL only and no removal", r.stdout)
	}
	n.mustAdmin("nodes", "remove", "edge-a1")
	if r := n.mustAdmin("nodes", "list"); !strings.Contains(r.stdout, "removed") {
		t.Errorf("nodes list after removal: %q, want the node shown removed", r.stdout)
	}
	if r := n.admin("", "nodes", "remove", "edge-a1"); r.code != exitNotFound {
		t.Errorf("removing a removed node: exit %d, want %d", r.code, exitNotFound)
	}
	edge := newTestNode(t, func(c *api.Config) { c.Info.Role = "edge" })
	edge.login()
	if r := edge.admin("", "nodes", "admit", "x", "--key", key, "--url", "https://x.example"); r.code != exitConflict || !strings.Contains(r.stderr, "not_hub") {
		t.Errorf("nodes admit at an edge: exit %d, stderr %q; want %d and not_hub", r.code, r.stderr, exitConflict)
	}
}

func TestNodeKeyCommandMakesThenReadsTheKey(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	env := map[string]string{"PATCHMESH_DATA_DIR": dataDir}
	nodeKey := func(args ...string) result {
		var stdout, stderr bytes.Buffer
		code := runNodeKey(args, func(k string) string { return env[k] }, &stdout, &stderr)
		return result{code, stdout.String(), stderr.String()}
	}
	first := nodeKey()
	if first.code != exitOK || !strings.Contains(first.stderr, "Created") {
		t.Fatalf("first node-key: exit %d, stderr %q", first.code, first.stderr)
	}
	priv, created, err := federation.LoadOrCreateNodeKey(filepath.Join(dataDir, "node.key"))
	if err != nil || created {
		t.Fatalf("node key at the default path: created %v, %v", created, err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	if want := federation.FormatPublicKey(pub) + "\nid " + federation.KeyID(pub) + "\n"; first.stdout != want {
		t.Errorf("node-key printed %q, want %q", first.stdout, want)
	}
	if again := nodeKey(); again.stdout != first.stdout || strings.Contains(again.stderr, "Created") {
		t.Errorf("second node-key: %q, stderr %q; want the same key", again.stdout, again.stderr)
	}
	if err := os.Chmod(filepath.Join(dataDir, "node.key"), 0o640); err != nil {
		t.Fatal(err)
	}
	if r := nodeKey(); r.code != exitServer || !strings.Contains(r.stderr, "chmod 600") {
		t.Errorf("node-key on a group-readable key: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := nodeKey("--help"); r.code != exitOK || !strings.Contains(r.stdout, "nodes admit") {
		t.Errorf("node-key --help: exit %d, stdout %q", r.code, r.stdout)
	}
}

// `nodes join-token NAME > FILE`, as the README runs it, leaves the token
// alone in FILE, which `patchmesh join --token-file` reads; what the token
// is and how to use it goes to standard error.
func TestAdminJoinTokenStdoutIsTheTokenAlone(t *testing.T) {
	n := newTestNode(t, func(c *api.Config) {
		c.JoinTokens = c.Store.(store.JoinTokens)
		c.Info.PeerURL = "https://127.0.0.1:8444"
	})
	n.login()
	r := n.mustAdmin("nodes", "join-token", "edge-1", "--valid-for", "1h")
	tok, rest, _ := strings.Cut(r.stdout, "\n")
	if !strings.HasPrefix(tok, federation.JoinTokenPrefix) || rest != "" {
		t.Errorf("join-token stdout = %q, want the %s… token on one line and nothing else", r.stdout, federation.JoinTokenPrefix)
	}
	if !strings.Contains(r.stderr, "edge-1") || !strings.Contains(r.stderr, "patchmesh join") || strings.Contains(r.stderr, tok) {
		t.Errorf("join-token stderr = %q, want the node named, how to join, and not the secret", r.stderr)
	}
}
