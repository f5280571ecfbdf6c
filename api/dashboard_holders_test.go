package api_test

import (
	"bytes"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/topology"
)

// gossipPair starts node-a's API with gossip, joined to node-b's gossip,
// whose meta advertises node-b's API (a second, real API server), with
// node-b's peer listener behind it. node-b admits node-a's key only if
// admitB.
func gossipPair(t *testing.T, admitB bool) (a, b *env) {
	t.Helper()
	key, err := topology.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	nodeA, nodeB := newPeerNode(t), newPeerNode(t)
	pinsB := &pins{}
	if admitB {
		pinsB.set(nodeA.id)
	}
	b = newEnv(t, func(c *api.Config) { c.Peer = &api.PeerConfig{Pins: pinsB, URL: func(string) string { return "" }} })
	peerB := peerServer(t, b, pinsB, nodeB)
	tb, err := topology.Start(t.Context(), topology.Config{
		Name: "node-b", BindAddr: "127.0.0.1", Profile: "local", Keys: [][]byte{key},
		Meta: func() topology.Meta {
			return topology.Meta{Role: "edge", API: b.srv.URL, Upstream: "http://node-a.invalid", Tiers: []string{"edge"}}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	ta, err := topology.Start(t.Context(), topology.Config{
		Name: "node-a", BindAddr: "127.0.0.1", Profile: "local", Keys: [][]byte{key}, Join: []string{tb.LocalAddr()},
		Meta: func() topology.Meta { return topology.Meta{Role: "hub", Tiers: []string{"edge", "stable"}} },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ta.Close() })
	a = newEnv(t, func(c *api.Config) {
		c.Topology = ta
		c.Peer = &api.PeerConfig{Pins: &pins{}, URL: func(u string) string {
			if u == b.srv.URL {
				return peerB.URL
			}
			return ""
		}}
		c.Dashboard.PeerClient = nodeA.dial(nodeB)
	})
	for range 100 { // bounded: joining on loopback takes milliseconds
		if len(ta.View().Nodes) == 2 {
			return a, b
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("node-a's view never held node-b: %+v", ta.View())
	return nil, nil
}

// holderStates reads the patch's holders from node-a's view, a tick
// after the last (the view is computed at most every 500 ms of the env's
// clock).
func holderStates(t *testing.T, a *env, digest string) (map[string]string, api.DashboardPatch) {
	t.Helper()
	a.clock.Advance(time.Second)
	var v api.DashboardView
	a.want(a.request(http.MethodGet, "/v1/dashboard/snapshot", a.admin, nil), http.StatusOK, &v)
	i := slices.IndexFunc(v.Patches, func(p api.DashboardPatch) bool { return p.Digest == digest })
	if i < 0 {
		t.Fatalf("patch %s not in the view: %+v", digest, v.Patches)
	}
	out := map[string]string{}
	for _, h := range v.Patches[i].Holders {
		out[h.Node] = h.State
	}
	return out, v.Patches[i]
}

func TestDashboardAsksOtherNodesWhichPatchesTheyHold(t *testing.T) {
	a, b := gossipPair(t, true)
	body := content(4096, "holders")
	p := a.upload(body, "107.1")

	got, dp := holderStates(t, a, p.Digest)
	if got["node-a"] != "held" || got["node-b"] != "missing" || dp.Held != 1 || dp.Expected != 2 {
		t.Errorf("before node-b has the blob: holders %v, %d of %d; want node-a held, node-b missing, 1 of 2", got, dp.Held, dp.Expected)
	}

	if _, err := blob.Put(t.Context(), b.blobs, blob.Digest(p.Digest), bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	got, dp = holderStates(t, a, p.Digest)
	if got["node-b"] != "held" || dp.Held != 2 || dp.Expected != 2 {
		t.Errorf("after node-b stored the blob: holders %v, %d of %d; want both held, 2 of 2", got, dp.Held, dp.Expected)
	}
}

func TestDashboardCallsANodeThatRefusesItsCertificateUnknown(t *testing.T) {
	a, _ := gossipPair(t, false)
	p := a.upload(content(4096, "holders-refused"), "107.1")
	got, dp := holderStates(t, a, p.Digest)
	if got["node-b"] != "unknown" || dp.Held != 1 || dp.Expected != 2 {
		t.Errorf("holders %v, %d of %d; want node-b unknown (it refused node-a's key), 1 of 2", got, dp.Held, dp.Expected)
	}
}
