package e2e_test

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
	"github.com/patchmesh/patchmesh/topology"
)

// A node whose gossip key is not the mesh's cannot join it: the members
// never count it, it counts none of them, and they log and count the
// refusal as a security event.
func TestTopologyWrongGossipKeyIsRefused(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	m.Gossip = gossipProfile
	h, rs := regionsMesh(t, m, 1, "a")
	members := meshNodes(h, rs)
	viewEvery(t, members, converge, "every member alive", allAlive(members))

	k, err := topology.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	spec := pullSpec(t, "intruder", node.RoleEdge, h.URL, h, "edge")
	spec.GossipKey = base64.StdEncoding.EncodeToString(k)
	in := m.Start(spec)
	if len(in.Config.Gossip.Join) == 0 {
		t.Fatal("the intruder was given nobody to join; the test would prove nothing")
	}

	// Long enough for several probe and gossip rounds and one push-pull
	// attempt of the local profile; a joined node would be counted within
	// a second or two.
	const watch = 8 * time.Second
	in.Admin(t)
	deadline := time.Now().Add(watch)
	for time.Now().Before(deadline) {
		for _, n := range members {
			v, err := n.Topology(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if st := v.State(in.Name); st != "" || len(v.Nodes) != len(members) {
				t.Fatalf("%s: knows the intruder (%q) or a stranger: view %+v", n.Name, st, v.Nodes)
			}
		}
		v, err := in.Topology(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Nodes) != 1 || v.State(in.Name) != "alive" {
			t.Fatalf("intruder: view %+v, want itself alone", v.Nodes)
		}
		// The metrics say the same as the view.
		g, err := in.GossipView(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if g.Total() != 1 {
			t.Fatalf("intruder: gossip metrics count members %v, want itself alone", g.Members)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !in.Running() {
		t.Fatalf("intruder: exited; want it running alone. Log:\n%s", in.LogTail(20))
	}
	// The members refused it as a security event, and count it.
	events, counted := 0, 0
	for _, n := range members {
		events += strings.Count(n.Log(), `"event":"gossip_key_fail"`)
		g, err := n.GossipView(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		counted += g.Rejected["gossip_key_fail"]
	}
	if events == 0 || counted == 0 {
		t.Errorf("want the refusal logged as the security event gossip_key_fail and counted; found %d events, %d counted", events, counted)
	}
	fmt.Fprintln(testWriter{t}, "gossip_key_fail events logged:", events, "refusals counted:", counted)
}

// testWriter logs through t.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
