package e2e_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/client"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// machineState reads the real client's saved state.
func (c *machineCLI) state(t *testing.T) client.State {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.stateDir, client.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	var st client.State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("client state: %v", err)
	}
	return st
}

// registerByCredential registers the machine the credential names at n,
// as the client does when it fails over, and returns the error (nil on
// 201).
func registerByCredential(t *testing.T, n *meshtest.Node, cred string) error {
	t.Helper()
	return n.Call(t.Context(), http.MethodPost, "/v1/client/register", meshtest.Bearer(cred),
		map[string]any{"kernel": kernel, "arch": arch, "client_version": "1.0.0"}, nil)
}

// caughtUp waits until n applied every record the hub's tier holds.
func caughtUp(t *testing.T, h, n *meshtest.Node, tier, syncTok string) {
	t.Helper()
	recs := h.FeedRecords(t, syncTok)
	head := recs[len(recs)-1].TierSeq
	meshtest.WaitFor(t, converge, n.Name+" to apply the hub's "+tier+" records", func() error {
		if got := n.Link(t, tier).HubSeq; got < head {
			return fmt.Errorf("hub seq %d applied, want %d", got, head)
		}
		return nil
	})
}

// A machine that registered at edge-a and is revoked at the hub is refused
// at every node: its next refresh at edge-a fails, and edge-b refuses to
// register it with the credential edge-a issued, though the hub never saw
// the machine. Deleting it at the hub lets it register again, and the real
// client recovers by itself.
func TestMachineRevokedAtTheHubIsRefusedAtEveryNode(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	m.Gossip = gossipProfile
	h := m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub})
	a := pull(t, m, "edge-a", node.RoleEdge, h, "edge")
	b := pull(t, m, "edge-b", node.RoleEdge, h, "edge")
	h.Admit(t, h, a, b)
	all := []*meshtest.Node{h, a, b}
	viewEvery(t, all, converge, "every member alive", allAlive(all))

	enroll := h.AuthToken(t, "edge", "fleet")
	mc := newMachineCLI(t, m)
	meshtest.WaitFor(t, converge, "registration at edge-a", func() error {
		if code, out, errs := mc.run(t, "--server", a.URL, "register", enroll, "--kernel", kernel, "--arch", arch); code != 0 {
			return fmt.Errorf("exit %d: %s%s", code, out, errs)
		}
		return nil
	})
	refresh := func() (int, string) {
		code, out, errs := mc.run(t, "refresh", "--kernel", kernel, "--arch", arch)
		return code, out + errs
	}
	st := mc.state(t)
	id, cred, token := st.MachineID, st.Credential, st.Registrations[a.URL].MachineToken
	if id == "" || cred == "" || token == "" || st.Server != a.URL {
		t.Fatalf("client state after registering at edge-a: want its ID and token there and a credential, got %+v", st)
	}
	// No refresh yet: the nearest node may be the hub or edge-b, and the
	// machine is to be one that only edge-a knows.
	if err := a.Call(t.Context(), http.MethodGet, "/v1/client/status", meshtest.Bearer(token), nil, nil); err != nil {
		t.Fatalf("edge-a: the machine's token before the revocation: %v", err)
	}
	for _, n := range []*meshtest.Node{h, b} {
		if ev := n.LogEvents("machine_registered"); len(ev) != 0 {
			t.Fatalf("%s registered the machine: the test wants one only edge-a knows: %v", n.Name, ev)
		}
	}

	var rev struct {
		Scope string   `json:"scope"`
		Tiers []string `json:"tiers"`
	}
	h.AdminCall(t, http.MethodPost, "/v1/admin/machines/"+id+"/revoke", nil, &rev)
	if rev.Scope != "mesh" || len(rev.Tiers) == 0 {
		t.Fatalf("revocation at the hub: want scope mesh on every tier, got %+v", rev)
	}
	hubSync := h.SyncToken(t, "edge", "watcher")
	caughtUp(t, h, a, "edge", hubSync)
	caughtUp(t, h, b, "edge", hubSync)

	var se *meshtest.StatusError
	if err := a.Call(t.Context(), http.MethodGet, "/v1/client/status", meshtest.Bearer(token), nil, nil); !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
		t.Errorf("edge-a: the revoked machine's token: want 401, got %v", err)
	}
	if code, out := refresh(); code == 0 || !strings.Contains(out, "revoked") {
		t.Errorf("refresh after the hub revoked the machine: want a failure naming the revocation, got exit %d: %s", code, out)
	}
	err := registerByCredential(t, b, cred)
	if !errors.As(err, &se) || se.Status != http.StatusForbidden || !strings.Contains(se.Body, `"machine_revoked"`) {
		t.Errorf("edge-b: registration with the revoked machine's credential: want 403 machine_revoked, got %v", err)
	}
	if ev := b.LogEvents("machine_registered"); len(ev) != 0 {
		t.Errorf("edge-b registered the revoked machine: %v", ev)
	}
	refused := false
	for _, ev := range b.LogEvents("authz_fail") {
		refused = refused || (ev["reason"] == "machine_revoked" && ev["machine_id"] == id)
	}
	if !refused {
		t.Error("edge-b: want the refused registration logged as a security event")
	}

	// Deleted at the hub: every node lifts the revocation and forgets the
	// machine, which registers again by itself with its credential.
	var del struct {
		Scope  string `json:"scope"`
		Lifted bool   `json:"lifted"`
	}
	h.AdminCall(t, http.MethodDelete, "/v1/admin/machines/"+id, nil, &del)
	if del.Scope != "mesh" || !del.Lifted {
		t.Fatalf("deletion at the hub: want the mesh revocation lifted, got %+v", del)
	}
	caughtUp(t, h, a, "edge", hubSync)
	caughtUp(t, h, b, "edge", hubSync)
	if err := registerByCredential(t, b, cred); err != nil {
		t.Errorf("edge-b: registration with the credential after the hub deleted the machine: %v", err)
	}
	if code, out := refresh(); code != 0 {
		t.Errorf("refresh after the hub deleted the machine: want the client to register again and succeed, got exit %d: %s", code, out)
	}

	// The machine is at edge-b now by credential only, never enrolled
	// there; revoking its enrollment token with its machines at the hub
	// reaches it all the same, as its credential named the token.
	parts := strings.SplitN(enroll, "_", 3)
	if len(parts) != 3 {
		t.Fatalf("enrollment token %q: want pma_<id>_<secret>", parts[0])
	}
	h.AdminCall(t, http.MethodDelete, "/v1/admin/auth-tokens/"+parts[1]+"?machines=true", nil, nil)
	caughtUp(t, h, b, "edge", hubSync)
	err = registerByCredential(t, b, cred)
	if !errors.As(err, &se) || se.Status != http.StatusForbidden || !strings.Contains(se.Body, `"machine_revoked"`) {
		t.Errorf("edge-b: the credential of a machine whose enrollment token took its machines: want 403 machine_revoked, got %v", err)
	}
}
