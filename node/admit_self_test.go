package node

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

// A hub admits itself on every tier at its first start, at its URL, with
// the hub's signature, so that machines can verify it as a first contact;
// a restart admits nothing again.
func TestHubAdmitsItselfAtFirstStart(t *testing.T) {
	cfg := testConfig(t)
	r := startNode(t, cfg)

	req, _ := http.NewRequest(http.MethodGet, r.url+"/v1/sync/hub-key", nil)
	var hk struct {
		Key string `json:"key"`
	}
	getJSON(t, req, http.StatusOK, &hk)
	pub, err := federation.ParsePublicKey(hk.Key)
	if err != nil {
		t.Fatalf("hub key %q: %v", hk.Key, err)
	}
	req, _ = http.NewRequest(http.MethodGet, r.url+"/v1/client/roster", nil)
	var roster federation.RosterResponse
	getJSON(t, req, http.StatusOK, &roster)
	var tiers []string
	v := federation.NewVerifier(pub)
	for _, n := range roster.Nodes {
		_, rec, err := n.Verify(v)
		if err != nil || n.Name != "test-node" || n.URL != r.url {
			t.Fatalf("roster entry %+v: %v; want the hub's own admission at %s", n, err, r.url)
		}
		tiers = append(tiers, rec.Tier)
	}
	if slices.Sort(tiers); !slices.Equal(tiers, []string{"beta", "candidate", "edge", "stable"}) {
		t.Errorf("the hub admitted itself on %v, want every tier", tiers)
	}
	if n := strings.Count(r.log.String(), `"event":"node_admitted"`); n != 1 {
		t.Errorf("%d node_admitted security events at the first start, want 1", n)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	again := startNode(t, cfg)
	if strings.Contains(again.log.String(), `"event":"node_admitted"`) {
		t.Error("a restart admitted the hub again")
	}
	req, _ = http.NewRequest(http.MethodGet, again.url+"/v1/client/roster?tier=edge", nil)
	var edge federation.RosterResponse
	getJSON(t, req, http.StatusOK, &edge)
	if b, _ := json.Marshal(edge.Nodes); len(edge.Nodes) != 1 {
		t.Errorf("edge roster after a restart: %s, want the one admission", b)
	}
}

// A tier added at the hub has the hub's own admission too, signed, with
// the node's change in no audit entry; a tier added while the hub was
// stopped is covered at its next start; once the operator removed the
// hub's admission, a new tier does not bring it back.
func TestHubAdmitsItselfOnTiersAddedLater(t *testing.T) {
	cfg := testConfig(t)
	r := startNode(t, cfg)
	password := bootstrapPassword(t, r.console.String())
	mac := login(t, r.url, auth.BootstrapUser, password)
	admin := func(method, path string, body any, want int, out any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, r.url+path, rd)
		req.Header.Set("Authorization", "Macaroon "+mac)
		req.Header.Set("Content-Type", "application/json")
		getJSON(t, req, want, out)
	}
	var hk struct {
		Key string `json:"key"`
	}
	req, _ := http.NewRequest(http.MethodGet, r.url+"/v1/sync/hub-key", nil)
	getJSON(t, req, http.StatusOK, &hk)
	pub, err := federation.ParsePublicKey(hk.Key)
	if err != nil {
		t.Fatal(err)
	}
	onRoster := func(url, tier string) bool {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url+"/v1/client/roster?tier="+tier, nil)
		var roster federation.RosterResponse
		getJSON(t, req, http.StatusOK, &roster)
		for _, n := range roster.Nodes {
			if _, rec, err := n.Verify(federation.NewVerifier(pub)); err == nil && n.Name == "test-node" && rec.Tier == tier {
				return true
			}
		}
		return false
	}

	admin(http.MethodPost, "/v1/admin/tiers", map[string]string{"name": "canary"}, http.StatusCreated, nil)
	if !onRoster(r.url, "canary") {
		t.Error("the hub is not on the roster of a tier added at it")
	}
	if !strings.Contains(r.log.String(), `"by":"hub_tier_added"`) {
		t.Error("no node_admitted security event by hub_tier_added")
	}
	var audit struct {
		Entries []store.AuditEntry `json:"entries"`
	}
	admin(http.MethodGet, "/v1/admin/audit", nil, http.StatusOK, &audit)
	if len(audit.Entries) != 1 || audit.Entries[0].Action != "POST /v1/admin/tiers" {
		t.Errorf("audit after adding a tier: %+v, want the one entry of the request", audit.Entries)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}

	s, err := sqlstore.OpenSQLite(t.Context(), cfg.StorePath(), sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddTier(t.Context(), "late"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	r = startNode(t, cfg)
	if !onRoster(r.url, "late") {
		t.Error("the hub is not on the roster of a tier added while it was stopped, after its start")
	}
	if !strings.Contains(r.log.String(), `"by":"hub_start"`) {
		t.Error("no node_admitted security event by hub_start")
	}

	mac = login(t, r.url, auth.BootstrapUser, password)
	admin(http.MethodDelete, "/v1/admin/nodes/test-node", nil, http.StatusNoContent, nil)
	admin(http.MethodPost, "/v1/admin/tiers", map[string]string{"name": "after"}, http.StatusCreated, nil)
	if onRoster(r.url, "after") {
		t.Error("a tier added after the operator removed the hub's admission admitted the hub again")
	}
}
