package meshtest

import (
	"os"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/node"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// A node killed and started again is the same node: same address, same
// data (the admin's macaroon still works), one log across both runs.
func TestNodeSurvivesKillAtSameAddress(t *testing.T) {
	m := New(t)
	n := m.Start(Spec{Name: "hub", Role: node.RoleHub})
	url := n.URL
	tok := n.AuthToken(t, "edge", "before-kill")

	n.Kill(t)
	if n.Running() {
		t.Fatal("after Kill: want the node not running")
	}
	n.Start(t)
	if n.URL != url {
		t.Fatalf("after restart: want URL %s, got %s", url, n.URL)
	}
	var list struct {
		Tokens []struct{ Name string }
	}
	n.AdminCall(t, "GET", "/v1/admin/auth-tokens", nil, &list)
	if len(list.Tokens) != 1 || list.Tokens[0].Name != "before-kill" || tok == "" {
		t.Fatalf("after restart: want the token made before the kill, got %+v", list.Tokens)
	}
	if got := strings.Count(n.Log(), "=== meshtest: start "); got != 2 {
		t.Fatalf("want both runs in one log, found %d start markers", got)
	}
	n.Stop(t)
	if !strings.Contains(n.LogTail(5), `"msg":"node_stopped"`) {
		t.Fatalf("after Stop: want node_stopped at the end of the log, got:\n%s", n.LogTail(5))
	}
}
