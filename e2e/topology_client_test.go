package e2e_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/internal/meshtest"
)

// clientNode is one row of `patchmesh client nodes --output json`.
type clientNode struct {
	Name       string `json:"name"`
	URL        string `json:"url"`
	Reachable  bool   `json:"reachable"`
	Registered bool   `json:"registered"`
}

// machineCLI runs the real `patchmesh client` for one machine, inside
// network namespace netns when that is set.
type machineCLI struct {
	bin, stateDir, id string
	netns             string
	// hubKey is the mesh's hub key, which the machine pins.
	hubKey string
}

func newMachineCLI(t *testing.T, m *meshtest.Mesh) *machineCLI {
	return &machineCLI{bin: meshtest.Binary(t), stateDir: t.TempDir(), id: hex.EncodeToString(randomBytes(t, 16)), hubKey: m.HubPublicKey}
}

// run runs one client command and returns its exit code, stdout and
// stderr. A command that runs longer than a minute is killed.
func (c *machineCLI) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := append([]string{"client", "--state-dir", c.stateDir, "--machine-id", c.id}, args...)
	cmd := exec.CommandContext(ctx, c.bin, full...)
	if c.netns != "" {
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.netns, c.bin}, full...)...)
	}
	// The mesh's nodes are plain http on loopback (or a test namespace).
	cmd.Env = append(os.Environ(), "PATCHMESH_HUB_KEY="+c.hubKey, "PATCHMESH_CLIENT_ALLOW_HTTP=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("patchmesh %v: %v", full, err)
		}
		code = ee.ExitCode()
	}
	return code, out.String(), errb.String()
}

func (c *machineCLI) nodes(t *testing.T) []clientNode {
	t.Helper()
	code, out, errs := c.run(t, "--output", "json", "nodes")
	if code != 0 {
		t.Fatalf("client nodes: exit %d: %s%s", code, out, errs)
	}
	var got struct{ Nodes []clientNode }
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("client nodes: %v in %q", err, out)
	}
	return got.Nodes
}

// A machine registered at an edge with the hub's enrollment token keeps
// working when that edge is killed: its next refresh goes to the next
// nearest node, registers there with its machine credential (never the
// enrollment token) and applies a patch published after the kill, without
// a failed refresh in between.
func TestTopologyClientFailsOverFromKilledEdge(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	m.Gossip = gossipProfile
	h, rs := regionsMesh(t, m, 2, "a")
	all := meshNodes(h, rs)
	viewEvery(t, all, converge, "every member alive", allAlive(all))
	// Machines are told only of the nodes the hub admitted.
	h.Admit(t, all...)
	e1 := rs[0].edges[0]

	// The token is made at the hub; the edge knows it once it replicated.
	enroll := h.AuthToken(t, "edge", "fleet")
	mc := newMachineCLI(t, m)
	meshtest.WaitFor(t, converge, "registration at "+e1.Name+" with the hub's token", func() error {
		code, out, errs := mc.run(t, "--server", e1.URL, "register", enroll, "--kernel", kernel, "--arch", arch)
		if code != 0 {
			return fmt.Errorf("exit %d: %s%s", code, out, errs)
		}
		return nil
	})
	var ranked []clientNode
	meshtest.WaitFor(t, converge, "the client to know at least 2 nodes", func() error {
		ranked = mc.nodes(t)
		if len(ranked) < 2 {
			return fmt.Errorf("nodes %+v", ranked)
		}
		return nil
	})
	t.Logf("ranking before the kill: %+v", ranked)
	if !slices.ContainsFunc(ranked, func(n clientNode) bool { return n.URL == e1.URL && n.Registered }) {
		t.Fatalf("before the kill: want the machine registered at %s, got %+v", e1.URL, ranked)
	}

	e1.Kill(t)
	p := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "3.1"})
	onEvery(t, without(all, e1), func(n *meshtest.Node) error {
		return wantListed(t, n, p.Digest, []string{"edge"})
	}, "the patch published after the kill")

	code, out, errs := mc.run(t, "--output", "json", "refresh", "--kernel", kernel, "--arch", arch,
		"--apply-hook", `test "$PATCHMESH_PATCH_DIGEST" = "`+p.Digest+`" && test -s "$PATCHMESH_PATCH_FILE"`)
	if code != 0 {
		t.Fatalf("first refresh after the kill: want exit 0, got %d: %s%s", code, out, errs)
	}
	var res struct {
		State string
		Patch struct{ Digest string }
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("refresh output: %v in %q", err, out)
	}
	if res.State != "applied" || res.Patch.Digest != p.Digest {
		t.Fatalf("refresh: want %s applied, got %+v", p.Digest, res)
	}
	after := mc.nodes(t)
	if !slices.ContainsFunc(after, func(n clientNode) bool { return n.Registered && n.URL != e1.URL }) {
		t.Fatalf("after the refresh: want the machine registered at a node other than %s, got %+v", e1.URL, after)
	}
	// Every node it registered at after the first contact took its
	// machine credential, and never saw the enrollment token.
	enrollID := enroll[len("pma_") : len("pma_")+16]
	for _, n := range without(all, e1) {
		if !slices.ContainsFunc(after, func(c clientNode) bool { return c.URL == n.URL && c.Registered }) {
			continue
		}
		creds := n.LogEvents("authn_credential_success")
		if len(creds) == 0 {
			t.Errorf("%s: the machine registered there without an authn_credential_success event", n.Name)
		}
		for _, e := range n.LogEvents("authn_token_success") {
			if e["token_id"] == enrollID {
				t.Errorf("%s: the enrollment token reached it: %v", n.Name, e)
			}
		}
	}
}
