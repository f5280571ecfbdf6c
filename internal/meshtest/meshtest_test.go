package meshtest

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

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

// With gossip on, the nodes of a mesh find each other through the first
// one started, and a killed node comes back at the same gossip address
// and rejoins through whoever is up, even when it was the first.
func TestGossipJoinsAndRejoinsAtSameAddress(t *testing.T) {
	m := New(t)
	m.Gossip = "local"
	h := m.Start(Spec{Name: "hub", Role: node.RoleHub})
	r := m.Start(Spec{Name: "relay", Role: node.RoleRelay, Links: []Link{{Tier: "edge",
		Upstreams: []Upstream{{URL: h.URL, Token: h.SyncToken(t, "edge", "relay")}}}}})
	if len(h.Config.Gossip.Join) != 0 || !slices.Equal(r.Config.Gossip.Join, []string{h.GossipAddr}) {
		t.Fatalf("want the hub to start the cluster and the relay to join it, got joins %v and %v",
			h.Config.Gossip.Join, r.Config.Gossip.Join)
	}
	bothAlive := func() error {
		for _, n := range []*Node{h, r} {
			g, err := n.GossipView(t.Context())
			if err != nil {
				return err
			}
			if g.Members["alive"] != 2 || g.Total() != 2 {
				return fmt.Errorf("%s: members %v", n.Name, g.Members)
			}
		}
		return nil
	}
	WaitFor(t, 30*time.Second, "both nodes alive in both views", bothAlive)

	addr := h.GossipAddr
	h.Restart(t)
	if h.GossipAddr != addr || !slices.Equal(h.Config.Gossip.Join, []string{r.GossipAddr}) {
		t.Fatalf("restarted hub: want gossip at %s joining %s, got %s joining %v", addr, r.GossipAddr, h.GossipAddr, h.Config.Gossip.Join)
	}
	WaitFor(t, 30*time.Second, "both nodes alive again after the hub's restart", bothAlive)
}

// Over mutual TLS, each node's peer listener travels in its gossip meta:
// the relay's view of the mesh gives the hub's peer URL, which is where
// the relay's link reaches the hub.
func TestPeerURLTravelsInGossip(t *testing.T) {
	m := New(t)
	m.Gossip = "local"
	m.MTLS = true
	h := m.Start(Spec{Name: "hub", Role: node.RoleHub})
	r := m.Start(Spec{Name: "relay", Role: node.RoleRelay, Links: []Link{{Tier: "edge",
		Upstreams: []Upstream{{URL: h.URL, Token: h.SyncToken(t, "edge", "relay")}}}}})
	if h.PeerURL == "" || r.Config.Sync.Links[0].Upstreams[0].URL != h.PeerURL {
		t.Fatalf("want the relay's link at the hub's peer listener %q, got %+v", h.PeerURL, r.Config.Sync.Links)
	}
	r.Admin(t)
	WaitFor(t, 30*time.Second, "the hub's peer URL in the relay's view", func() error {
		v, err := r.Topology(t.Context())
		if err != nil {
			return err
		}
		for _, n := range v.Nodes {
			if n.Name == "hub" && n.PeerURL == h.PeerURL {
				return nil
			}
		}
		return fmt.Errorf("view %+v", v.Nodes)
	})
}
