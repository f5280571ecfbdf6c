package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/catalog"
)

// register sends a machine's registration with bearer and returns the
// status and, on success, the machine token and the machine's stored ID.
func (n *testNode) register(bearer, machineID string) (status int, token, id string) {
	n.t.Helper()
	body, _ := json.Marshal(map[string]string{"machine_id": machineID, "kernel": nodeKernel, "arch": nodeArch, "client_version": "1.0.0"})
	req, err := http.NewRequestWithContext(n.t.Context(), http.MethodPost, n.srv.URL+"/v1/client/register", bytes.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		MachineToken string          `json:"machine_token"`
		Machine      catalog.Machine `json:"machine"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.MachineToken, out.Machine.ID
}

// machineStatus is the status a machine token's GET /v1/client/status gets.
func (n *testNode) machineStatus(token string) int {
	n.t.Helper()
	req, err := http.NewRequestWithContext(n.t.Context(), http.MethodGet, n.srv.URL+"/v1/client/status", nil)
	if err != nil {
		n.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestAdminRevocation drives the revocation commands against a real node's
// API: a revoked machine is refused at its next request and cannot register
// again until deleted; an enrollment token revoked with --machines takes
// its machines; machine tokens are listed; ending an admin's sessions
// refuses the tool's own macaroon. Each decision is a security event.
func TestAdminRevocation(t *testing.T) {
	n := newTestNode(t)
	n.login()
	var tok struct {
		Token string        `json:"token"`
		Info  catalog.Token `json:"info"`
	}
	if err := json.Unmarshal([]byte(n.mustAdmin("auth-tokens", "add", "edge", "fleet", "--output", "json").stdout), &tok); err != nil {
		t.Fatal(err)
	}
	code, m1tok, m1 := n.register(tok.Token, "machine-revoke-000001")
	_, m2tok, _ := n.register(tok.Token, "machine-revoke-000002")
	if code != http.StatusCreated || n.machineStatus(m1tok) != http.StatusOK {
		t.Fatalf("registration: status %d, machine token answered %d", code, n.machineStatus(m1tok))
	}

	r := n.mustAdmin("machines", "revoke", m1)
	if !strings.Contains(r.stdout, "Revoked machine "+m1) || !strings.Contains(r.stdout, "scope ") {
		t.Errorf("machines revoke printed %q, want the machine and the revocation's scope", r.stdout)
	}
	if got := n.machineStatus(m1tok); got != http.StatusUnauthorized {
		t.Errorf("revoked machine's token: want 401 at once, got %d", got)
	}
	if got, _, _ := n.register(tok.Token, "machine-revoke-000001"); got != http.StatusForbidden {
		t.Errorf("revoked machine registering again: want 403, got %d", got)
	}
	if got := n.machineStatus(m2tok); got != http.StatusOK {
		t.Errorf("another machine of the token after one was revoked: want 200, got %d", got)
	}
	if r := n.admin("", "machines", "revoke", "not-an-id"); r.code == exitOK {
		t.Errorf("machines revoke of a malformed ID: want a failure, got exit 0")
	}

	if r := n.mustAdmin("machines", "delete", m1); !strings.Contains(r.stdout, "Deleted machine "+m1) || !strings.Contains(r.stdout, "scope ") {
		t.Errorf("machines delete printed %q, want the machine and the deletion's scope", r.stdout)
	}
	code, m1tok, _ = n.register(tok.Token, "machine-revoke-000001")
	if code != http.StatusCreated {
		t.Errorf("deleted machine registering again: want 201, got %d", code)
	}

	// The deleted machine's tokens went with it: two live ones remain.
	list := n.mustAdmin("machine-tokens", "list")
	if strings.Count(list.stdout, " live") != 2 || strings.Contains(list.stdout, "revoked") {
		t.Errorf("machine-tokens list: want the two live tokens only, got\n%s", list.stdout)
	}

	r = n.mustAdmin("auth-tokens", "revoke", tok.Info.ID, "--machines")
	if !strings.Contains(r.stdout, "the 2 machine(s)") {
		t.Errorf("auth-tokens revoke --machines: want 2 machines revoked, printed %q", r.stdout)
	}
	for name, mt := range map[string]string{"re-registered machine": m1tok, "second machine": m2tok} {
		if got := n.machineStatus(mt); got != http.StatusUnauthorized {
			t.Errorf("%s after its enrollment token was revoked with its machines: want 401, got %d", name, got)
		}
	}

	if list := n.mustAdmin("machine-tokens", "list"); strings.Count(list.stdout, "revoked") != 2 {
		t.Errorf("machine-tokens list after the enrollment token took its machines: want 2 revoked, got\n%s", list.stdout)
	}

	n.mustAdmin("sessions", "revoke", nodeAdmin)
	if r := n.admin("", "tiers", "list"); r.code == exitOK {
		t.Errorf("admin tool after its user's sessions were revoked: want refused, got exit 0")
	}
	n.login()
	n.mustAdmin("tiers", "list")

	logs := n.logs.String()
	for _, ev := range []string{"machine_revoked", "machine_deleted", "admin_sessions_revoked", "token_revoked"} {
		if !strings.Contains(logs, `"event":"`+ev+`"`) {
			t.Errorf("want a %s security event in the node's log", ev)
		}
	}
	if !strings.Contains(logs, `"reason":"machine_revoked"`) {
		t.Errorf("want the refused registration of a revoked machine logged as a security event")
	}
	if strings.Contains(logs, tok.Token) {
		t.Errorf("the node's log holds an enrollment token's secret")
	}
}
