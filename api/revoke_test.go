package api_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// machineRevocation is the answer to a machine's revocation.
type machineRevocation struct {
	ID      string           `json:"id"`
	Scope   string           `json:"scope"`
	Revoked time.Time        `json:"revoked"`
	Tiers   []string         `json:"tiers"`
	Machine *catalog.Machine `json:"machine"`
	Note    string           `json:"note"`
}

type machineDeletion struct {
	ID        string   `json:"id"`
	Scope     string   `json:"scope"`
	Forgotten bool     `json:"forgotten"`
	Lifted    bool     `json:"lifted"`
	Tiers     []string `json:"tiers"`
	Note      string   `json:"note"`
}

var everyTier = []string{"edge", "beta", "candidate", "stable"}

// wantRegistrationRefused checks that a registration is refused as a
// revoked machine's, logged, and changes nothing.
func (e *env) wantRegistrationRefused(what, authz string, body map[string]any) {
	e.t.Helper()
	before := e.snapshot()
	refusals := len(e.securityEvents(auth.EventAuthzFail))
	r := e.request(http.MethodPost, "/v1/client/register", authz, body)
	if r.StatusCode != http.StatusForbidden || r.errCode() != "machine_revoked" {
		e.t.Errorf("%s: %d %s, want 403 machine_revoked", what, r.StatusCode, r.body)
	}
	e.unchanged(what, before)
	ev := e.securityEvents(auth.EventAuthzFail)
	if len(ev) != refusals+1 || ev[len(ev)-1]["reason"] != "machine_revoked" {
		e.t.Errorf("%s: want one authz_fail security event with reason machine_revoked, got %v", what, ev[refusals:])
	}
}

func TestHubRevocationIsSignedOnEveryTierAndRefusesRegistration(t *testing.T) {
	self, issuer := newNodeKey(t), newNodeKey(t)
	e, v := hubEnv(t, self)
	e.admit("edge-a1", issuer, "https://a1.example", "beta")
	syncTok, _ := e.token("sync", "beta", "edge-a1")
	now := e.clock.Now()
	cred, err := federation.IssueCredential(issuer, federation.MachineStatement{
		Machine: machineHMAC, Tier: "beta", Issuer: "edge-a1", Issued: now, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	e.keep(cred)
	byCredential := map[string]any{"kernel": testKernel, "arch": testArch, "client_version": "0.1.0"}

	// The machine registered at edge-a1, never here: the hub revokes it
	// all the same, on every tier.
	var rev machineRevocation
	e.want(e.request(http.MethodPost, "/v1/admin/machines/"+machineHMAC+"/revoke", e.admin, nil), http.StatusOK, &rev)
	if rev.Scope != "mesh" || !slices.Equal(rev.Tiers, everyTier) || rev.Machine != nil || !rev.Revoked.Equal(now) ||
		!strings.Contains(rev.Note, "every node") {
		t.Errorf("hub revocation of a machine it never saw: want scope mesh on %v, no machine, got %+v", everyTier, rev)
	}
	page := e.feed(syncTok, "")
	last, err := v.Open(page.Events[len(page.Events)-1].Envelope)
	if err != nil || last.Type != catalog.EventMachineRevoked || last.Machine == nil || last.Machine.ID != machineHMAC ||
		!last.Machine.Revoked.Equal(now) || last.Tier != "beta" {
		t.Errorf("beta feed after the revocation: want a signed machine.revoked of %s, got %+v, %v", machineHMAC, last, err)
	}
	if ev := e.securityEvents(auth.EventMachineRevoked); len(ev) != 1 || ev[0]["scope"] != "mesh" {
		t.Errorf("machine_revoked security events: want one, scope mesh, got %v", ev)
	}
	e.wantRegistrationRefused("registration by credential of a machine revoked at the hub", "Bearer "+cred, byCredential)

	// One that registered here by enrollment: its token goes at once,
	// and so does its registration.
	at, _ := e.token("auth", "edge", "fleet")
	var reg struct {
		MachineToken string          `json:"machine_token"`
		Machine      catalog.Machine `json:"machine"`
	}
	e.want(e.request(http.MethodPost, "/v1/client/register", "Bearer "+at, registration("raw-machine-0000000001")), http.StatusCreated, &reg)
	e.keep(reg.MachineToken)
	e.want(e.request(http.MethodPost, "/v1/admin/machines/"+reg.Machine.ID+"/revoke", e.admin, nil), http.StatusOK, &rev)
	if rev.Scope != "mesh" || rev.Machine == nil || rev.Machine.Revoked.IsZero() || rev.Machine.Tier != "edge" {
		t.Errorf("hub revocation of a machine registered here: want scope mesh with the machine revoked, got %+v", rev)
	}
	if r := e.request(http.MethodGet, "/v1/client/status", "Bearer "+reg.MachineToken, nil); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("revoked machine's token: %d, want 401", r.StatusCode)
	}
	e.wantRegistrationRefused("registration by enrollment token of a machine revoked at the hub", "Bearer "+at, registration("raw-machine-0000000001"))

	// Deleting at the hub lifts the revocation: the machine registers.
	var del machineDeletion
	e.want(e.request(http.MethodDelete, "/v1/admin/machines/"+machineHMAC, e.admin, nil), http.StatusOK, &del)
	if del.Scope != "mesh" || !del.Lifted || del.Forgotten || !slices.Equal(del.Tiers, everyTier) {
		t.Errorf("hub deletion of a revoked machine it never saw: want the revocation lifted on every tier, got %+v", del)
	}
	page = e.feed(syncTok, "")
	if last, err := v.Open(page.Events[len(page.Events)-1].Envelope); err != nil || last.Type != catalog.EventMachineDeleted ||
		last.Machine == nil || last.Machine.Lifted.IsZero() {
		t.Errorf("beta feed after the deletion: want a signed machine.deleted, got %+v, %v", last, err)
	}
	e.want(e.request(http.MethodPost, "/v1/client/register", "Bearer "+cred, byCredential), http.StatusCreated, nil)
	if r := e.request(http.MethodDelete, "/v1/admin/machines/"+strings.Repeat("0", 64), e.admin, nil); r.StatusCode != http.StatusNotFound {
		t.Errorf("deleting an ID neither registered nor revoked: %d, want 404", r.StatusCode)
	}
}

func TestEdgeRevocationIsLocalAndSaysSo(t *testing.T) {
	e := newEnv(t)
	at, _ := e.token("auth", "edge", "fleet")
	var reg struct {
		Machine catalog.Machine `json:"machine"`
	}
	e.want(e.request(http.MethodPost, "/v1/client/register", "Bearer "+at, registration("raw-machine-0000000002")), http.StatusCreated, &reg)
	head, err := e.store.Head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var rev machineRevocation
	e.want(e.request(http.MethodPost, "/v1/admin/machines/"+reg.Machine.ID+"/revoke", e.admin, nil), http.StatusOK, &rev)
	if rev.Scope != "node" || len(rev.Tiers) != 0 || rev.Machine == nil || !rev.Revoked.Equal(rev.Machine.Revoked) ||
		rev.Revoked.IsZero() || !strings.Contains(rev.Note, "at the hub") {
		t.Errorf("revocation off the hub: want scope node, the machine revoked, a note to revoke at the hub; got %+v", rev)
	}
	if h, err := e.store.Head(t.Context()); err != nil || h != head {
		t.Errorf("revocation off the hub: want nothing logged for the feed, head %d → %d (%v)", head, h, err)
	}
	if _, err := e.store.MachineRevocation(t.Context(), reg.Machine.ID); err == nil {
		t.Errorf("revocation off the hub: want no mesh-wide revocation recorded")
	}
	e.wantRegistrationRefused("registration of a machine revoked here", "Bearer "+at, registration("raw-machine-0000000002"))
	if r := e.request(http.MethodPost, "/v1/admin/machines/"+machineHMAC+"/revoke", e.admin, nil); r.StatusCode != http.StatusNotFound {
		t.Errorf("revocation off the hub of a machine not registered here: %d, want 404", r.StatusCode)
	}
	var del machineDeletion
	e.want(e.request(http.MethodDelete, "/v1/admin/machines/"+reg.Machine.ID, e.admin, nil), http.StatusOK, &del)
	if del.Scope != "node" || !del.Forgotten || del.Lifted {
		t.Errorf("deletion off the hub: want scope node, forgotten, nothing lifted; got %+v", del)
	}
	e.want(e.request(http.MethodPost, "/v1/client/register", "Bearer "+at, registration("raw-machine-0000000002")), http.StatusCreated, nil)
}

// A machine credential names the enrollment token the machine registered
// with; a node the machine registers at by credential records it, so the
// token's revocation with its machines reaches the machine there, and
// refuses it once the token took its machines.
func TestCredentialCarriesTheEnrollmentToken(t *testing.T) {
	self, issuer := newNodeKey(t), newNodeKey(t)
	e, _ := hubEnv(t, self)
	e.admit("edge-a1", issuer, "https://a1.example", "beta")
	at, info := e.token("auth", "beta", "fleet")
	var reg struct {
		Credential string `json:"credential"`
	}
	e.want(e.request(http.MethodPost, "/v1/client/register", "Bearer "+at, registration("raw-machine-0000000003")), http.StatusCreated, &reg)
	e.keep(reg.Credential)
	c, err := federation.ParseCredential(reg.Credential)
	if err != nil || c.Statement.EnrolledBy != info.ID {
		t.Fatalf("credential issued at enrollment: want enrolled_by %s, got %+v, %v", info.ID, c.Statement, err)
	}

	// The machine edge-a1 enrolled with the same token comes here by
	// credential: recorded as enrolled by it, and its new credential says so.
	now := e.clock.Now()
	moved, err := federation.IssueCredential(issuer, federation.MachineStatement{
		Machine: machineHMAC, Tier: "beta", Issuer: "edge-a1", Issued: now, Expires: now.Add(time.Hour), EnrolledBy: info.ID})
	if err != nil {
		t.Fatal(err)
	}
	e.keep(moved)
	byCredential := map[string]any{"kernel": testKernel, "arch": testArch, "client_version": "0.1.0"}
	var out struct {
		MachineToken string          `json:"machine_token"`
		Machine      catalog.Machine `json:"machine"`
		Credential   string          `json:"credential"`
	}
	e.want(e.request(http.MethodPost, "/v1/client/register", "Bearer "+moved, byCredential), http.StatusCreated, &out)
	e.keep(out.MachineToken)
	e.keep(out.Credential)
	if out.Machine.EnrolledBy != info.ID {
		t.Errorf("machine registered by credential: want enrolled_by %s, got %+v", info.ID, out.Machine)
	}
	if c, err := federation.ParseCredential(out.Credential); err != nil || c.Statement.EnrolledBy != info.ID {
		t.Errorf("credential issued at registration by credential: want enrolled_by %s carried, got %+v, %v", info.ID, c.Statement, err)
	}

	// The token revoked with its machines: the moved machine goes too, and
	// may not come back with its credential.
	e.want(e.request(http.MethodDelete, "/v1/admin/auth-tokens/"+info.ID+"?machines=true", e.admin, nil), http.StatusOK, nil)
	if r := e.request(http.MethodGet, "/v1/client/status", "Bearer "+out.MachineToken, nil); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("machine that came by credential, after its enrollment token took its machines: %d, want 401", r.StatusCode)
	}
	e.wantRegistrationRefused("registration by credential naming a token revoked with its machines", "Bearer "+moved, byCredential)
}
