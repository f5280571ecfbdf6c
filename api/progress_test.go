package api_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/federation"
)

// A downstream's feed request and its fleet reports carry sync progress;
// the node keeps it for its view. A request naming a node with bad figures
// is refused and changes nothing.
func TestFeedAndReportsTellTheNodeItsDownstreamsProgress(t *testing.T) {
	var progress *federation.Progress
	e := newEnv(t, func(c *api.Config) {
		if c.Now == nil {
			t.Fatal("the env's config has no clock")
		}
		progress = federation.NewProgress(c.Now)
		c.Progress = progress
	})
	tok, _ := e.token("sync", "edge", "relay-a")

	e.want(e.request(http.MethodGet, "/v1/sync/feed?after=0&node=relay-a&node_head=12&node_synced=11&node_lag=1", "Bearer "+tok, nil), http.StatusOK, nil)
	got, ok := progress.Get("relay-a")
	if !ok || got.Head != 12 || got.Synced != 11 || got.Lag != 1 || !got.AsOf.Equal(e.clock.Now()) {
		t.Fatalf("relay-a after its feed request: %+v (%v), want head 12, synced 11, lag 1 as of the node's now", got, ok)
	}

	for _, q := range []string{"node=relay-a&node_head=13", "node=relay-a&node_head=13&node_synced=12&node_lag=-1", "node=Relay%20A&node_head=13&node_synced=12&node_lag=0"} {
		r := e.request(http.MethodGet, "/v1/sync/feed?after=0&"+q, "Bearer "+tok, nil)
		if r.StatusCode != http.StatusBadRequest {
			t.Errorf("feed with %s: status %d, want 400; body %s", q, r.StatusCode, r.body)
		}
	}
	if again, _ := progress.Get("relay-a"); again != got {
		t.Errorf("after refused requests: %+v, want %+v unchanged", again, got)
	}
	// A request naming no node, as an older downstream's, is served.
	e.want(e.request(http.MethodGet, "/v1/sync/feed?after=0", "Bearer "+tok, nil), http.StatusOK, nil)

	// A report brings the subtree: relay-a's edge, as of its own time.
	asOf := e.clock.Now().Add(-3 * time.Second)
	e.pushReport(tok, 1,
		federation.ReportEntry{Node: "relay-a", DC: "dc-a", AsOf: e.clock.Now(), Progress: &federation.NodeProgress{Head: 12, Synced: 11, AsOf: asOf}},
		federation.ReportEntry{Node: "edge-a1", DC: "dc-a", AsOf: e.clock.Now(), Progress: &federation.NodeProgress{Head: 7, Synced: 11, AsOf: asOf}})
	if g, ok := progress.Get("edge-a1"); !ok || g.Head != 7 || !g.AsOf.Equal(asOf) {
		t.Errorf("edge-a1 after relay-a's report: %+v (%v), want head 7 as of %v", g, ok, asOf)
	}
	// relay-a's own older word in the report does not replace its feed's.
	if g, _ := progress.Get("relay-a"); g != got {
		t.Errorf("relay-a after an older report: %+v, want its feed request's %+v", g, got)
	}
}
