package api_test

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

func (e *env) securityEvents(code string) []map[string]any {
	e.t.Helper()
	var out []map[string]any
	for _, l := range e.logs.lines(e.t) {
		if l["event"] == code {
			out = append(out, l)
		}
	}
	return out
}

func TestAdminNodesAdmitListRemove(t *testing.T) {
	self, edge := newNodeKey(t), newNodeKey(t)
	e, v := hubEnv(t, self)
	key := federation.FormatPublicKey(pubOf(edge))
	before := e.snapshot()
	for _, tc := range []struct {
		name  string
		body  any
		field string
	}{
		{"a bad name", map[string]any{"name": "edge a1", "key": key, "urls": []string{"https://a.example"}}, "name"},
		{"a bad key", map[string]any{"name": "edge-a1", "key": "ed25519:nope", "urls": []string{"https://a.example"}}, "key"},
		{"no URL", map[string]any{"name": "edge-a1", "key": key}, "urls"},
		{"a URL with credentials", map[string]any{"name": "edge-a1", "key": key, "urls": []string{"https://u:p@a.example"}}, "urls[0]"},
		{"an unknown tier", map[string]any{"name": "edge-a1", "key": key, "urls": []string{"https://a.example"}, "tiers": []string{"edge", "nope"}}, "tiers[1]"},
	} {
		r := e.request(http.MethodPost, "/v1/admin/nodes", e.admin, tc.body)
		if r.StatusCode != http.StatusBadRequest || r.errField() != tc.field {
			t.Errorf("admit with %s: %d %s, want 400 on field %s", tc.name, r.StatusCode, r.body, tc.field)
		}
	}
	e.unchanged("refused admissions", before)
	if r := e.request(http.MethodPost, "/v1/admin/nodes", "", map[string]any{"name": "edge-a1", "key": key}); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("admit without a login: %d, want 401", r.StatusCode)
	}

	var n catalog.Node
	e.want(e.request(http.MethodPost, "/v1/admin/nodes", e.admin,
		map[string]any{"name": "edge-a1", "key": key, "urls": []string{"https://a.example"}, "tiers": []string{"edge", "beta"}}),
		http.StatusCreated, &n)
	if n.KeyID != federation.KeyID(pubOf(edge)) || !slices.Equal(n.Tiers, []string{"edge", "beta"}) {
		t.Errorf("admitted node: %+v", n)
	}
	if r := e.request(http.MethodPost, "/v1/admin/nodes", e.admin,
		map[string]any{"name": "edge-a1", "key": key, "urls": []string{"https://b.example"}}); r.StatusCode != http.StatusConflict {
		t.Errorf("admitting an admitted name: %d %s, want 409", r.StatusCode, r.body)
	}
	var list struct{ Nodes []catalog.Node }
	e.want(e.request(http.MethodGet, "/v1/admin/nodes", e.admin, nil), http.StatusOK, &list)
	if len(list.Nodes) != 1 || list.Nodes[0].Name != "edge-a1" || !slices.Equal(list.Nodes[0].Tiers, []string{"edge", "beta"}) {
		t.Errorf("GET /v1/admin/nodes: %+v", list.Nodes)
	}
	// The roster of each tier serves the hub's signed admission.
	var roster nodesAnswer
	e.want(e.request(http.MethodGet, "/v1/client/roster?tier=beta", "", nil), http.StatusOK, &roster)
	if len(roster.Nodes) != 1 || roster.Nodes[0].Admission == nil {
		t.Fatalf("roster of beta: %+v", roster.Nodes)
	}
	if r, err := federation.VerifyAdmission(v, *roster.Nodes[0].Admission, "edge-a1", pubOf(edge)); err != nil || r.Tier != "beta" {
		t.Errorf("roster admission: %+v, %v", r, err)
	}

	// Without a tier, the roster holds the admissions of every tier: what
	// a machine checks its first contact against before it knows its tier.
	e.want(e.request(http.MethodGet, "/v1/client/roster", "", nil), http.StatusOK, &roster)
	var tiers []string
	for _, rn := range roster.Nodes {
		if rn.Admission == nil {
			t.Fatalf("roster of every tier: %s without its admission", rn.Name)
		}
		r, err := federation.VerifyAdmission(v, *rn.Admission, "edge-a1", pubOf(edge))
		if err != nil {
			t.Fatalf("roster of every tier: %v", err)
		}
		tiers = append(tiers, r.Tier)
	}
	if slices.Sort(tiers); !slices.Equal(tiers, []string{"beta", "edge"}) {
		t.Errorf("roster of every tier: admissions on %v, want beta and edge", tiers)
	}

	e.want(e.request(http.MethodDelete, "/v1/admin/nodes/edge-a1", e.admin, nil), http.StatusNoContent, nil)
	if r := e.request(http.MethodDelete, "/v1/admin/nodes/edge-a1", e.admin, nil); r.StatusCode != http.StatusNotFound {
		t.Errorf("removing a removed node: %d, want 404", r.StatusCode)
	}
	e.want(e.request(http.MethodGet, "/v1/client/roster?tier=beta", "", nil), http.StatusOK, &roster)
	if len(roster.Nodes) != 0 {
		t.Errorf("roster after removal: %+v, want empty", roster.Nodes)
	}
	if a, r := e.securityEvents(auth.EventNodeAdmitted), e.securityEvents(auth.EventNodeRemoved); len(a) != 1 || len(r) != 1 ||
		a[0]["node"] != "edge-a1" || a[0]["key_id"] != n.KeyID || a[0]["user"] != adminUser || r[0]["node"] != "edge-a1" {
		t.Errorf("security events: admitted %v, removed %v", a, r)
	}
}

func TestAdminNodesChangeOnlyAtTheHub(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.Info.Role = "edge" })
	key := federation.FormatPublicKey(pubOf(newNodeKey(t)))
	for _, r := range []response{
		e.request(http.MethodPost, "/v1/admin/nodes", e.admin, map[string]any{"name": "x", "key": key, "urls": []string{"https://x.example"}}),
		e.request(http.MethodDelete, "/v1/admin/nodes/x", e.admin, nil),
	} {
		if r.StatusCode != http.StatusConflict || r.errCode() != "not_hub" {
			t.Errorf("%s on an edge: %d %s, want 409 not_hub", r.Request.Method, r.StatusCode, r.body)
		}
	}
	e.want(e.request(http.MethodGet, "/v1/admin/nodes", e.admin, nil), http.StatusOK, nil)
}

func TestRosterRefusesABadTier(t *testing.T) {
	e := newEnv(t)
	for _, q := range []string{"?tier=", "?tier=Not%20A%20Tier"} {
		if r := e.request(http.MethodGet, "/v1/client/roster"+q, "", nil); r.StatusCode != http.StatusBadRequest || r.errField() != "tier" {
			t.Errorf("roster%s: %d %s, want 400 on tier", q, r.StatusCode, r.body)
		}
	}
}

func TestHelloProvesTheNodeKey(t *testing.T) {
	self := newNodeKey(t)
	e, _ := hubEnv(t, self)
	nonce := "bm9uY2UtZm9yLWhlbGxvLXRlc3Q"
	var h federation.Hello
	e.want(e.request(http.MethodGet, "/v1/client/hello?nonce="+nonce, "", nil), http.StatusOK, &h)
	host := strings.TrimPrefix(e.srv.URL, "http://")
	if err := federation.VerifyHello(h, pubOf(self), nonce, host); err != nil || h.Name != "node-a" {
		t.Errorf("hello %+v: %v", h, err)
	}
	if err := federation.VerifyHello(h, pubOf(self), nonce, "other.example:80"); err == nil {
		t.Error("hello verified for a host it was not asked by")
	}
	var info struct{ Node, NodeKey, KeyID string }
	e.want(e.request(http.MethodGet, "/debug/info", "", nil), http.StatusOK, nil)
	r := e.request(http.MethodGet, "/debug/info", "", nil)
	e.want(r, http.StatusOK, &struct {
		NodeKey *string `json:"node_key"`
		KeyID   *string `json:"key_id"`
	}{&info.NodeKey, &info.KeyID})
	if info.NodeKey != federation.FormatPublicKey(pubOf(self)) || info.KeyID != federation.KeyID(pubOf(self)) {
		t.Errorf("/debug/info: key %q id %q", info.NodeKey, info.KeyID)
	}
	for _, bad := range []string{"", "?nonce=short", "?nonce=" + url.QueryEscape("has spaces in it, sixteen+")} {
		if r := e.request(http.MethodGet, "/v1/client/hello"+bad, "", nil); r.StatusCode != http.StatusBadRequest || r.errField() != "nonce" {
			t.Errorf("hello%s: %d %s, want 400 on nonce", bad, r.StatusCode, r.body)
		}
	}
	noKey := newEnv(t)
	if r := noKey.request(http.MethodGet, "/v1/client/hello?nonce="+nonce, "", nil); r.StatusCode != http.StatusNotFound {
		t.Errorf("hello without a node key: %d, want 404", r.StatusCode)
	}
}

// machineHMAC is a machine ID as another node stored it: 64 hex digits.
var machineHMAC = strings.Repeat("5a", 32)

func TestRegisterWithAMachineCredentialFromAnAdmittedNode(t *testing.T) {
	self, issuer, stranger := newNodeKey(t), newNodeKey(t), newNodeKey(t)
	e, _ := hubEnv(t, self)
	e.admit("edge-a1", issuer, "https://a1.example", "beta")
	now := e.clock.Now()
	issue := func(key []byte, name, tier string, issued time.Time) string {
		c, err := federation.IssueCredential(key, federation.MachineStatement{
			Machine: machineHMAC, Tier: tier, Issuer: name, Issued: issued, Expires: issued.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return e.keep(c)
	}
	good := issue(issuer, "edge-a1", "beta", now)
	body := func(extra map[string]any) map[string]any {
		b := map[string]any{"kernel": testKernel, "arch": testArch, "client_version": "0.1.0"}
		for k, v := range extra {
			b[k] = v
		}
		return b
	}
	before := e.snapshot()
	for _, tc := range []struct {
		name, authz string
		body        map[string]any
		status      int
		reason      string
	}{
		{"a stranger's credential", "Bearer " + issue(stranger, "edge-z9", "beta", now), body(nil), 401, "issuer_not_admitted"},
		{"an admitted name, another key", "Bearer " + issue(stranger, "edge-a1", "beta", now), body(nil), 401, "issuer_key_mismatch"},
		{"a tier the issuer is not admitted on", "Bearer " + issue(issuer, "edge-a1", "edge", now), body(nil), 401, "issuer_not_admitted"},
		{"an expired credential", "Bearer " + issue(issuer, "edge-a1", "beta", now.Add(-2*time.Hour)), body(nil), 401, "expired"},
		{"a garbled credential", "Bearer " + good[:len(good)-4] + "AAAA", body(nil), 401, "bad_signature"},
		{"a credential with the raw machine ID", "Bearer " + good, body(map[string]any{"machine_id": "0123456789abcdef0123"}), 400, ""},
		{"a credential twice, differing", "Bearer " + good, body(map[string]any{"credential": "pmc_x"}), 400, ""},
	} {
		r := e.request(http.MethodPost, "/v1/client/register", tc.authz, tc.body)
		if r.StatusCode != tc.status {
			t.Errorf("register with %s: %d %s, want %d", tc.name, r.StatusCode, r.body, tc.status)
		}
		if tc.reason != "" {
			ev := e.securityEvents(auth.EventCredentialFail)
			if len(ev) == 0 || ev[len(ev)-1]["reason"] != tc.reason {
				t.Errorf("register with %s: want authn_credential_fail reason %s, got %v", tc.name, tc.reason, ev)
			}
		}
	}
	e.unchanged("refused credentials", before)

	for i, send := range []func() response{
		func() response { return e.request(http.MethodPost, "/v1/client/register", "Bearer "+good, body(nil)) },
		func() response {
			return e.request(http.MethodPost, "/v1/client/register", "", body(map[string]any{"credential": good}))
		},
	} {
		var out struct {
			MachineToken string          `json:"machine_token"`
			Tier         string          `json:"tier"`
			Machine      catalog.Machine `json:"machine"`
			Credential   string          `json:"credential"`
		}
		e.want(send(), http.StatusCreated, &out)
		e.keep(out.MachineToken)
		e.keep(out.Credential)
		if out.Tier != "beta" || out.Machine.ID != machineHMAC {
			t.Errorf("registration %d by credential: tier %q machine %q, want beta %s", i, out.Tier, out.Machine.ID, machineHMAC)
		}
		// This node vouches for the machine in turn, under its own key.
		c, err := federation.ParseCredential(out.Credential)
		if err != nil || federation.VerifyCredential(c, pubOf(self), now) != nil ||
			c.Statement.Machine != machineHMAC || c.Statement.Issuer != "node-a" || c.Statement.Tier != "beta" {
			t.Errorf("registration %d: credential issued here %+v, %v", i, c.Statement, err)
		}
		var st catalog.Machine
		e.want(e.request(http.MethodGet, "/v1/client/status", "Bearer "+out.MachineToken, nil), http.StatusOK, &st)
		if st.ID != machineHMAC {
			t.Errorf("status of the machine registered by credential: %+v", st)
		}
	}
	if ok := e.securityEvents(auth.EventCredentialSuccess); len(ok) != 2 || ok[0]["issuer"] != "edge-a1" {
		t.Errorf("authn_credential_success events: %v", ok)
	}
}

func TestRegisterWithAnAuthTokenReturnsACredential(t *testing.T) {
	self := newNodeKey(t)
	e, _ := hubEnv(t, self)
	at, _ := e.token("auth", "beta", "fleet")
	var out struct {
		Machine    catalog.Machine `json:"machine"`
		Credential string          `json:"credential"`
	}
	e.want(e.request(http.MethodPost, "/v1/client/register", "Bearer "+at, registration("0123456789abcdef0123")), http.StatusCreated, &out)
	e.keep(out.Credential)
	c, err := federation.ParseCredential(out.Credential)
	if err != nil || federation.VerifyCredential(c, pubOf(self), e.clock.Now()) != nil || c.Statement.Machine != out.Machine.ID {
		t.Errorf("credential at registration: %+v, %v; machine %s", c.Statement, err, out.Machine.ID)
	}
	if r := e.request(http.MethodPost, "/v1/client/register", "Bearer "+at,
		map[string]any{"machine_id": "0123456789abcdef0123", "kernel": testKernel, "arch": testArch, "credential": out.Credential}); r.StatusCode != http.StatusBadRequest {
		t.Errorf("auth token and credential together: %d, want 400", r.StatusCode)
	}
	if r := e.request(http.MethodPost, "/v1/client/register", "", registration("0123456789abcdef0123")); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("no credential at all: %d, want 401", r.StatusCode)
	}
}

// TestAdminNodeUpdate moves an admitted node to new URLs and onto a new
// tier: the roster then serves the hub's fresh admissions with them, and
// refusals (a new key among them) change nothing.
func TestAdminNodeUpdate(t *testing.T) {
	self, edge := newNodeKey(t), newNodeKey(t)
	e, v := hubEnv(t, self)
	key := federation.FormatPublicKey(pubOf(edge))
	e.want(e.request(http.MethodPost, "/v1/admin/nodes", e.admin,
		map[string]any{"name": "edge-a1", "key": key, "urls": []string{"https://a.example"}, "tiers": []string{"edge"}}),
		http.StatusCreated, nil)

	before := e.snapshot()
	for _, tc := range []struct {
		name, path string
		body       any
		status     int
		field      string
	}{
		{"a name never admitted", "/v1/admin/nodes/edge-a9", map[string]any{"urls": []string{"https://b.example"}}, http.StatusNotFound, ""},
		{"nothing changed", "/v1/admin/nodes/edge-a1", map[string]any{"urls": []string{"https://a.example"}}, http.StatusConflict, ""},
		{"a URL with credentials", "/v1/admin/nodes/edge-a1", map[string]any{"urls": []string{"https://u:p@a.example"}}, http.StatusBadRequest, "urls[0]"},
		{"an unknown tier", "/v1/admin/nodes/edge-a1", map[string]any{"tiers": []string{"nope"}}, http.StatusBadRequest, "tiers[0]"},
		{"no tier", "/v1/admin/nodes/edge-a1", map[string]any{"tiers": []string{}}, http.StatusBadRequest, "tiers"},
		{"a new key", "/v1/admin/nodes/edge-a1", map[string]any{"key": federation.FormatPublicKey(pubOf(newNodeKey(t)))}, http.StatusBadRequest, ""},
	} {
		r := e.request(http.MethodPatch, tc.path, e.admin, tc.body)
		if r.StatusCode != tc.status || tc.field != "" && r.errField() != tc.field {
			t.Errorf("update with %s: %d %s, want %d on field %q", tc.name, r.StatusCode, r.body, tc.status, tc.field)
		}
	}
	e.unchanged("refused updates", before)
	if r := e.request(http.MethodPatch, "/v1/admin/nodes/edge-a1", "", map[string]any{"urls": []string{"https://b.example"}}); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("update without a login: %d, want 401", r.StatusCode)
	}

	var n catalog.Node
	e.want(e.request(http.MethodPatch, "/v1/admin/nodes/edge-a1", e.admin, map[string]any{
		"urls": []string{"https://b.example"}, "tiers": []string{"beta"}}), http.StatusOK, &n)
	if n.KeyID != federation.KeyID(pubOf(edge)) || !slices.Equal(n.URLs, []string{"https://b.example"}) || !slices.Equal(n.Tiers, []string{"edge", "beta"}) {
		t.Errorf("updated node: %+v", n)
	}
	for _, tier := range []string{"edge", "beta"} {
		var roster nodesAnswer
		e.want(e.request(http.MethodGet, "/v1/client/roster?tier="+tier, "", nil), http.StatusOK, &roster)
		if len(roster.Nodes) != 1 || roster.Nodes[0].Admission == nil || roster.Nodes[0].URL != "https://b.example" {
			t.Fatalf("roster of %s after the update: %+v", tier, roster.Nodes)
		}
		if r, err := federation.VerifyAdmission(v, *roster.Nodes[0].Admission, "edge-a1", pubOf(edge)); err != nil || !slices.Equal(r.Node.URLs, []string{"https://b.example"}) {
			t.Errorf("roster of %s: the signed admission: %+v, %v", tier, r, err)
		}
	}
	if ev := e.securityEvents(auth.EventNodeUpdated); len(ev) != 1 || ev[0]["was_urls"] != "https://a.example" ||
		ev[0]["urls"] != "https://b.example" || ev[0]["key_id"] != n.KeyID || ev[0]["user"] != adminUser {
		t.Errorf("security events: %v", ev)
	}
	if r := e.securityEvents(auth.EventNodeRemoved); len(r) != 0 {
		t.Errorf("an update logged removals: %v", r)
	}
}
