package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// recordingServer counts every request it gets: a rogue a machine must
// never talk to.
func recordingServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// A first contact the hub did not admit, or that cannot prove it holds
// the admitted key, gets neither the enrollment token nor the machine ID.
func TestRegisterRefusesAFirstContactTheHubDidNotAdmit(t *testing.T) {
	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		rogue func(n *testNode)
	}{
		{"no admission in its roster", func(n *testNode) {
			n.mu.Lock()
			n.roster = &federation.RosterResponse{}
			n.mu.Unlock()
		}},
		{"a hello signed by another key", func(n *testNode) {
			n.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path != "/v1/client/hello" {
					return false
				}
				h, _ := federation.SignHello(otherKey, "test-node", r.URL.Query().Get("nonce"), r.Host)
				json.NewEncoder(w).Encode(h)
				return true
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNode(t, false)
			tc.rogue(n)
			c := newTestClient(t, Config{Server: n.srv.URL})
			_, err := c.Register(context.Background(), RegisterRequest{AuthToken: n.authToken("edge"), MachineID: testMachineID,
				Kernel: testKernel, Arch: testArch, HubKeys: []string{testHubPub}})
			if !errors.Is(err, ErrNodeNotAdmitted) {
				t.Fatalf("Register = %v, want ErrNodeNotAdmitted", err)
			}
			if got := n.count(http.MethodPost, "/v1/client/register"); got != 0 {
				t.Errorf("the node saw %d registrations, want none", got)
			}
			if _, err := LoadState(c.cfg.StateDir); !errors.Is(err, ErrNotRegistered) {
				t.Errorf("state after a refused first contact: %v, want none", err)
			}
		})
	}
}

// A node list is the node's word: entries whose admission does not verify
// against the pinned keys, is for another hub tier, or names a URL the hub
// did not admit are dropped, and never probed.
func TestNodeListKeepsOnlyVerifiedAdmissions(t *testing.T) {
	m := newMesh(t, 0)
	forger := newHubKey(t)
	rogue, hits := recordingServer(t)
	rogue2, hits2 := recordingServer(t)
	rogue3, hits3 := recordingServer(t)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	admission := func(key ed25519.PrivateKey, tier, url string) *federation.Envelope {
		env, err := federation.Sign(key, federation.Record{Tier: tier, TierSeq: 99, Type: catalog.EventNodeAdmitted, Time: time.Now().UTC(),
			Node: &federation.NodeRecord{Name: "rogue", Key: federation.FormatPublicKey(pub), URLs: []string{url}, Admitted: time.Now().UTC()}})
		if err != nil {
			t.Fatal(err)
		}
		return &env
	}
	n := m.nodes[0]
	h := n.srv.Config.Handler
	n.setIntercept(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v1/client/nodes" {
			return false
		}
		rec := httptest.NewRecorder()
		n.setIntercept(nil)
		h.ServeHTTP(rec, r)
		var out struct {
			Nodes []federation.RosterNode `json:"nodes"`
		}
		json.Unmarshal(rec.Body.Bytes(), &out)
		real := out.Nodes[0]
		copied := real
		copied.URL = rogue.URL // an admitted node's entry, at another URL
		entry := func(url string, adm *federation.Envelope) federation.RosterNode {
			return federation.RosterNode{Name: "rogue", URL: url, URLs: []string{url}, Key: federation.FormatPublicKey(pub),
				KeyID: federation.KeyID(pub), Admission: adm}
		}
		out.Nodes = append(out.Nodes, copied,
			entry(rogue2.URL, admission(forger.priv, meshTier, rogue2.URL)), // signed by a key not pinned
			entry(rogue3.URL, admission(testHubKey, "stable", rogue3.URL)),  // the hub's, for another tier
		)
		json.NewEncoder(w).Encode(out)
		return true
	})
	c := m.client(0)
	st := m.state(c)
	if got := nodeURLs(st.Nodes); len(got) != 1 || got[0] != m.urls[0] {
		t.Errorf("ranking = %v, want only the admitted node %s", got, m.urls[0])
	}
	if hits.Load()+hits2.Load()+hits3.Load() != 0 {
		t.Errorf("rogues got %d, %d, %d requests, want none", hits.Load(), hits2.Load(), hits3.Load())
	}
}
