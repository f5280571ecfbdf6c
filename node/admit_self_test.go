package node

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/federation"
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
