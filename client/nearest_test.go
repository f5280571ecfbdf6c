package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// fakeNodes stands in for gossip, which the topology tests cover: it lists
// the mesh's nodes (by the URLs machines reach them at) for the one tier
// they all serve.
type fakeNodes struct {
	tier string
	mu   sync.Mutex
	list []api.NodeInfo
}

func (f *fakeNodes) Nodes(tier string) []api.NodeInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	if tier != f.tier {
		return nil
	}
	return slices.Clone(f.list)
}

func (f *fakeNodes) add(n api.NodeInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = append(f.list, n)
}

// mesh is several independent real nodes that share nothing but one
// enrollment token, stored in each node with the same ID and hash as the
// hub's replication will do, and a node list.
type mesh struct {
	t      *testing.T
	nodes  []*testNode
	urls   []string // how machines reach each node: directly or through a delaying proxy
	gossip *fakeNodes
	enroll string
	// beats holds the hub heartbeat each node serves; none until a test
	// sets one.
	beats []*heldBeats
}

const meshTier = "edge"

// newMesh starts one node per entry of delays; a non-zero delay puts a
// proxy that waits that long before every request in front of the node,
// as if it were in a far data centre.
func newMesh(t *testing.T, delays ...time.Duration) *mesh {
	t.Helper()
	m := &mesh{t: t, gossip: &fakeNodes{tier: meshTier}}
	secret, tok, err := auth.NewToken(catalog.TokenAuth)
	if err != nil {
		t.Fatal(err)
	}
	tok.Tier, tok.Name, tok.Created = meshTier, "fleet", time.Now().UTC()
	m.enroll = secret
	type member struct {
		name, url string
		key       ed25519.PublicKey
	}
	var members []member
	for i, d := range delays {
		name := fmt.Sprintf("node-%c", 'a'+i)
		pub, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		beats := &heldBeats{t: t}
		n := newTestNodeWith(t, false, func(c *api.Config) {
			c.Nodes = m.gossip
			c.Info.Node = name
			c.NodeKey = key
			c.Heartbeats = beats
		})
		m.beats = append(m.beats, beats)
		if err := n.store.AddToken(context.Background(), tok); err != nil {
			t.Fatalf("add the shared enrollment token to %s: %v", name, err)
		}
		u := n.srv.URL
		if d > 0 {
			u = delayingProxy(t, n.srv.URL, d)
		}
		m.nodes = append(m.nodes, n)
		m.urls = append(m.urls, u)
		m.gossip.add(api.NodeInfo{Name: name, DC: "dc-" + name, Role: "edge", API: u, KeyID: federation.KeyID(pub)})
		members = append(members, member{name, u, pub})
	}
	// Machines are told only of admitted nodes: each node holds the
	// admission of every node, as the hub's signed records would bring it.
	for _, mb := range members {
		m.admit(mb.name, mb.url, mb.key)
	}
	return m
}

// admit records the admission of the node called name, reached at url,
// in every node's store.
func (m *mesh) admit(name, url string, pub ed25519.PublicKey) {
	m.t.Helper()
	for _, n := range m.nodes {
		_, err := n.store.AdmitNode(context.Background(), catalog.Node{Name: name, Key: federation.FormatPublicKey(pub),
			KeyID: federation.KeyID(pub), URLs: []string{url}, Tiers: []string{meshTier}})
		if err != nil {
			m.t.Fatalf("admit %s: %v", name, err)
		}
	}
}

// addAdmitted adds an admitted node to gossip, under a key of its own.
func (m *mesh) addAdmitted(name, url string) {
	m.t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		m.t.Fatal(err)
	}
	m.gossip.add(api.NodeInfo{Name: name, API: url, KeyID: federation.KeyID(pub)})
	m.admit(name, url, pub)
}

// delayingProxy forwards to target after waiting d.
func delayingProxy(t *testing.T, target string, d time.Duration) string {
	t.Helper()
	tu, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(tu)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// upload puts the same patch on every node.
func (m *mesh) upload(content []byte) {
	for _, n := range m.nodes {
		n.upload(content, "107.1")
	}
}

// client registers a machine at the node first and returns its client.
func (m *mesh) client(first int, tune ...func(*Config)) *Client {
	m.t.Helper()
	cfg := Config{Server: m.urls[first]}
	for _, f := range tune {
		f(&cfg)
	}
	c := newTestClient(m.t, cfg)
	register(m.t, c, m.enroll)
	return c
}

func (m *mesh) state(c *Client) State {
	m.t.Helper()
	st, err := LoadState(c.cfg.StateDir)
	if err != nil {
		m.t.Fatalf("LoadState: %v", err)
	}
	return st
}

func nodeURLs(nodes []Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.URL)
	}
	return out
}

func TestRegisterRanksNodesByRoundTripAndUsesTheNearest(t *testing.T) {
	m := newMesh(t, 300*time.Millisecond, 0)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	m.addAdmitted("node-dead", dead.URL)
	slow, near := m.nodes[0], m.nodes[1]

	// The first contact is the slow node: the machine registers there and
	// learns the others from it.
	c := m.client(0)
	st := m.state(c)
	want := []string{m.urls[1], m.urls[0], dead.URL}
	if got := nodeURLs(st.Nodes); !slices.Equal(got, want) {
		t.Fatalf("ranking = %v, want the direct node, the delayed one, the dead one last: %v", got, want)
	}
	if !st.Nodes[0].Reachable || !st.Nodes[1].Reachable || st.Nodes[2].Reachable {
		t.Errorf("reachable = %v %v %v, want true true false", st.Nodes[0].Reachable, st.Nodes[1].Reachable, st.Nodes[2].Reachable)
	}
	if st.Nodes[0].Name != "node-b" || st.Nodes[0].DC != "dc-node-b" || st.Nodes[0].Checked.IsZero() {
		t.Errorf("nearest = %+v, want node-b in dc-node-b, with the time it was measured", st.Nodes[0])
	}
	if _, ok := st.Registrations[m.urls[1]]; ok || len(st.Registrations) != 1 {
		t.Errorf("registered at %v after Register, want only the first contact", slices.Collect(mapKeys(st.Registrations)))
	}

	// The first call goes to the nearest node, registering there first.
	slowStatus := slow.count(http.MethodGet, "/v1/client/status")
	m1, err := c.Status(context.Background())
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if near.count(http.MethodPost, "/v1/client/register") != 1 || near.count(http.MethodGet, "/v1/client/status") != 1 {
		t.Errorf("nearest node saw %d registrations and %d status calls, want 1 and 1", near.count(http.MethodPost, "/v1/client/register"), near.count(http.MethodGet, "/v1/client/status"))
	}
	if slow.count(http.MethodGet, "/v1/client/status") != slowStatus {
		t.Error("the slow node was asked for status, want the nearest one")
	}
	st = m.state(c)
	if reg, ok := st.Registrations[m.urls[1]]; !ok || reg.MachineID != m1.ID {
		t.Errorf("registration at the nearest node = %+v, want its token saved under the machine ID it answered with (%s)", reg, m1.ID)
	}
	// The second call reuses the token.
	if _, err := c.Status(context.Background()); err != nil || near.count(http.MethodPost, "/v1/client/register") != 1 {
		t.Errorf("second Status: %v, %d registrations at the nearest node; want it to reuse its token", err, near.count(http.MethodPost, "/v1/client/register"))
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// blobHalf answers a blob download with half of content, flushed, and then
// calls after, which ends the answer its own way; other requests pass on.
func blobHalf(content []byte, after func(r *http.Request)) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/v1/blobs/") {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(content)))
		w.WriteHeader(http.StatusOK)
		w.Write(content[:len(content)/2])
		w.(http.Flusher).Flush()
		after(r)
		return true
	}
}

// blobAbort answers a blob download with half the bytes and then drops the
// connection, closing the node's server so that it stays down.
func blobAbort(n *testNode, content []byte) func(http.ResponseWriter, *http.Request) bool {
	return blobHalf(content, func(*http.Request) {
		go n.srv.Close()
		panic(http.ErrAbortHandler)
	})
}

func TestRefreshFailsOverWhenTheNearestNodeGoesDown(t *testing.T) {
	content := bytes.Repeat([]byte("live patch module "), 20_000)
	for _, tc := range []struct {
		name string
		// down takes the nearest node down at some point.
		down func(near *testNode)
		// nearPatchQueries and nearBlobs are how many patch queries and
		// downloads the nearest node got.
		nearPatchQueries, nearBlobs int
	}{
		{"closed before the refresh", func(near *testNode) { near.srv.Close() }, 0, 0},
		{"closed mid-download", func(near *testNode) { near.setIntercept(blobAbort(near, content)) }, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The second node is farther, so the first is the nearest.
			m := newMesh(t, 0, 100*time.Millisecond)
			near, next := m.nodes[0], m.nodes[1]
			m.upload(content)
			c := m.client(0)
			if got := nodeURLs(m.state(c).Nodes); !slices.Equal(got, m.urls) {
				t.Fatalf("ranking = %v, want %v", got, m.urls)
			}
			tc.down(near)

			res, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch})
			if err != nil {
				t.Fatalf("Refresh with the nearest node down: %v", err)
			}
			if got, _ := os.ReadFile(res.Path); !res.Downloaded || !bytes.Equal(got, content) {
				t.Errorf("Refresh = %+v, want the patch downloaded and verified", res)
			}
			if got, blobs := near.count(http.MethodGet, "/v1/client/patch"), near.count(http.MethodGet, "/v1/blobs/"); got != tc.nearPatchQueries || blobs != tc.nearBlobs {
				t.Errorf("nearest node got %d patch queries and %d downloads, want %d and %d", got, blobs, tc.nearPatchQueries, tc.nearBlobs)
			}
			if near.count(http.MethodPost, "/v1/client/checkin") != 0 {
				t.Error("the nearest node got a check-in after it went down")
			}
			// The next node: registered at on first use, served the blob,
			// got the check-in.
			if got := next.count(http.MethodPost, "/v1/client/register"); got != 1 {
				t.Errorf("next node saw %d registrations, want 1", got)
			}
			if next.count(http.MethodGet, "/v1/blobs/") != 1 || next.lastBody("/v1/client/checkin")["state"] != string(catalog.StateUnapplied) {
				t.Errorf("next node: %d blob downloads, check-in %v; want the download and the check-in unapplied", next.count(http.MethodGet, "/v1/blobs/"), next.lastBody("/v1/client/checkin"))
			}
			if res.Machine.State != catalog.StateUnapplied || res.Machine.ID != m.state(c).Registrations[m.urls[1]].MachineID {
				t.Errorf("machine after check-in = %+v, want the next node's record, unapplied", res.Machine)
			}
			entries, _ := os.ReadDir(c.cfg.StateDir)
			for _, e := range entries {
				if strings.HasSuffix(e.Name(), ".part") || strings.HasSuffix(e.Name(), ".tmp") {
					t.Errorf("left %s behind", e.Name())
				}
			}
			if !m.state(c).RerankDue {
				t.Error("state after a failover does not ask for a re-rank")
			}

			// The next call re-ranks: the dead node goes last, and the
			// machine keeps its token at the next one.
			if _, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch}); err != nil {
				t.Fatalf("second Refresh: %v", err)
			}
			st := m.state(c)
			if got := nodeURLs(st.Nodes); !slices.Equal(got, []string{m.urls[1], m.urls[0]}) || st.Nodes[1].Reachable || st.RerankDue {
				t.Errorf("ranking after the failover = %+v, want the dead node last and unreachable, no re-rank due", st.Nodes)
			}
			if got := next.count(http.MethodPost, "/v1/client/register"); got != 1 {
				t.Errorf("next node saw %d registrations after two refreshes, want 1", got)
			}
		})
	}
}

// A node that stops sending mid-body (hung, SIGSTOPped, behind a path
// that drops packets) is abandoned after DownloadStall without a byte: its
// partial file is deleted and the next node serves the patch. Before, the
// refresh waited for ever. Partial files a killed run left are deleted.
func TestRefreshFailsOverFromAStalledDownload(t *testing.T) {
	content := bytes.Repeat([]byte("live patch module "), 20_000)
	m := newMesh(t, 0, 100*time.Millisecond)
	near, next := m.nodes[0], m.nodes[1]
	m.upload(content)
	const stall = time.Second
	c := m.client(0, func(cfg *Config) { cfg.DownloadStall = stall })
	near.setIntercept(blobHalf(content, func(r *http.Request) {
		select { // stalls until the client gives up
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
	}))

	// What a killed run left (not written for longer than twice the stall
	// bound) goes; what a live run in parallel is writing stays.
	dead, live := filepath.Join(c.cfg.StateDir, ".download-1.part"), filepath.Join(c.cfg.StateDir, ".download-2.part")
	for _, p := range []string{dead, live} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(dead, time.Now().Add(-3*stall), time.Now().Add(-3*stall)); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	began := time.Now()
	res, err := c.Refresh(ctx, RefreshOptions{Kernel: testKernel, Arch: testArch})
	if err != nil {
		t.Fatalf("Refresh with the nearest node stalling mid-download: %v", err)
	}
	t.Logf("refresh took %v with a %v stall bound", time.Since(began).Round(time.Millisecond), stall)
	if got, _ := os.ReadFile(res.Path); !res.Downloaded || !bytes.Equal(got, content) {
		t.Errorf("Refresh = %+v, want the patch downloaded and verified", res)
	}
	if near.count(http.MethodGet, "/v1/blobs/") != 1 || next.count(http.MethodGet, "/v1/blobs/") != 1 {
		t.Errorf("downloads: %d at the stalled node, %d at the next; want 1 and 1",
			near.count(http.MethodGet, "/v1/blobs/"), next.count(http.MethodGet, "/v1/blobs/"))
	}
	entries, _ := os.ReadDir(c.cfg.StateDir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".part") && e.Name() != filepath.Base(live) {
			t.Errorf("left %s behind", e.Name())
		}
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the partial download of a live run was removed: %v", err)
	}
}

// answer makes a node answer every request to path with status.
func answer(path string, status int) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != path {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":{"code":"test","message":"answered %d by the test"}}`, status)
		return true
	}
}

func TestOnlyFailuresFailOver(t *testing.T) {
	for _, tc := range []struct {
		status   int
		failover bool
	}{
		{http.StatusBadRequest, false},
		{http.StatusForbidden, false},
		{http.StatusNotFound, false},
		{http.StatusConflict, false},
		{http.StatusInternalServerError, true},
		{http.StatusBadGateway, true},
		{http.StatusServiceUnavailable, true},
	} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			m := newMesh(t, 0, 100*time.Millisecond)
			near, next := m.nodes[0], m.nodes[1]
			c := m.client(0)
			near.setIntercept(answer("/v1/client/status", tc.status))

			_, err := c.Status(context.Background())
			var apiErr *APIError
			switch {
			case tc.failover && err != nil:
				t.Errorf("Status with the nearest answering %d = %v, want the next node's answer", tc.status, err)
			case !tc.failover && (!errors.As(err, &apiErr) || apiErr.Status != tc.status):
				t.Errorf("Status with the nearest answering %d = %v, want that answer", tc.status, err)
			}
			want := 0
			if tc.failover {
				want = 1
			}
			if got := next.count(http.MethodGet, "/v1/client/status"); got != want {
				t.Errorf("next node got %d status calls, want %d", got, want)
			}
		})
	}
}

func TestNothingToApplyAtTheNearestNodeIsTheAnswer(t *testing.T) {
	m := newMesh(t, 0, 100*time.Millisecond)
	near, next := m.nodes[0], m.nodes[1]
	// Only the farther node has the patch: the nearest's 404 stands.
	next.upload([]byte("a patch only the farther node has"), "107.1")
	c := m.client(0)
	before := next.total()
	res, err := c.Refresh(context.Background(), RefreshOptions{Kernel: testKernel, Arch: testArch})
	if err != nil || res.State != catalog.StateNothingToApply {
		t.Fatalf("Refresh = %+v, %v; want nothing-to-apply", res, err)
	}
	if near.lastBody("/v1/client/checkin")["state"] != string(catalog.StateNothingToApply) {
		t.Error("the nearest node did not get the check-in")
	}
	if got := next.total() - before; got != 0 {
		t.Errorf("the farther node got %d requests, want none", got)
	}
}

func TestRefusedTokenRegistersAgainOnce(t *testing.T) {
	m := newMesh(t, 0)
	n := m.nodes[0]
	c := m.client(0)
	// The node no longer knows the machine's token (its store was
	// restored from a backup, say).
	st := m.state(c)
	st.Registrations[m.urls[0]] = NodeRegistration{MachineToken: "pmm_0123456789abcdef_" + strings.Repeat("A", 43)}
	if err := saveState(c.cfg.StateDir, st); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("Status with a refused token: %v", err)
	}
	if got := n.count(http.MethodPost, "/v1/client/register"); got != 2 {
		t.Errorf("node saw %d registrations, want the first and one more", got)
	}
	if got := m.state(c).Registrations[m.urls[0]].MachineToken; got == st.Registrations[m.urls[0]].MachineToken {
		t.Error("the refused token is still saved")
	}

	// A node that refuses even a fresh registration is given up on after
	// one registration and one retry.
	n.setIntercept(answer("/v1/client/status", http.StatusUnauthorized))
	before := n.total()
	if _, err := c.Status(context.Background()); err == nil {
		t.Fatal("Status at a node refusing every token succeeded")
	}
	if got := n.total() - before; got != 4 {
		t.Errorf("node got %d requests, want 4 (status, hello, registration with the credential, status)", got)
	}
}

func TestFailoverIsBounded(t *testing.T) {
	m := newMesh(t, 0, 0, 0)
	c := m.client(0)
	for _, n := range m.nodes {
		n.setIntercept(answer("/v1/client/status", http.StatusServiceUnavailable))
	}
	var before []int
	for _, n := range m.nodes {
		before = append(before, n.count(http.MethodGet, "/v1/client/status"))
	}
	_, err := c.Status(context.Background())
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable {
		t.Fatalf("Status with every node answering 503 = %v, want the 503s", err)
	}
	for i, n := range m.nodes {
		if got := n.count(http.MethodGet, "/v1/client/status") - before[i]; got != 1 {
			t.Errorf("node %d got %d status calls, want 1", i, got)
		}
		if got := n.count(http.MethodPost, "/v1/client/register"); got > 1 {
			t.Errorf("node %d got %d registrations, want at most 1", i, got)
		}
	}
}

func TestRankingIsLearnedAgainWhenStale(t *testing.T) {
	m := newMesh(t, 0)
	n := m.nodes[0]
	c := m.client(0)
	lists := func() int { return n.count(http.MethodGet, "/v1/client/nodes") }
	before := lists()
	if _, err := c.Status(context.Background()); err != nil || lists() != before {
		t.Fatalf("Status with a fresh ranking: %v, %d node lists asked; want none", err, lists()-before)
	}
	st := m.state(c)
	st.Ranked = time.Now().Add(-11 * time.Minute)
	if err := saveState(c.cfg.StateDir, st); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(context.Background()); err != nil || lists() != before+1 {
		t.Fatalf("Status with an 11-minute-old ranking: %v, %d node lists asked; want 1", err, lists()-before)
	}
	if got := m.state(c).Ranked; time.Since(got) > time.Minute {
		t.Errorf("ranked at %v after re-ranking, want now", got)
	}
}

func TestNodesReportsRankingAndRegistrations(t *testing.T) {
	m := newMesh(t, 0, 100*time.Millisecond, 200*time.Millisecond)
	c := m.client(1)
	got, err := c.Nodes(context.Background())
	if err != nil {
		t.Fatalf("Nodes: %v", err)
	}
	// The list came from the nearest node, which the machine registered at
	// to ask; the farthest it has not used.
	if len(got) != 3 || got[0].URL != m.urls[0] || !got[0].Registered || got[1].URL != m.urls[1] || !got[1].Registered ||
		got[2].URL != m.urls[2] || got[2].Registered {
		t.Errorf("Nodes = %+v, want the nodes nearest first, registered at the first two", got)
	}
	if got[1].RTT < 100*time.Millisecond || got[2].RTT < 200*time.Millisecond {
		t.Errorf("RTTs through the delaying proxies = %v, %v; want at least their delays", got[1].RTT, got[2].RTT)
	}
	if n := m.nodes[0].count(http.MethodGet, "/v1/client/nodes"); n != 1 {
		t.Errorf("the nearest node was asked for the list %d times, want 1", n)
	}
}

// A machine registers at a node it fails over to with its machine
// credential, after that node's hello verified: the enrollment token and
// the raw machine ID go to the first contact only. Without a credential
// it registers nowhere else.
func TestFailoverRegistersWithTheCredentialOnly(t *testing.T) {
	m := newMesh(t, 0, 100*time.Millisecond)
	stateDir := filepath.Join(t.TempDir(), "state")
	m.client(0, func(c *Config) { c.StateDir = stateDir })
	st, err := LoadState(stateDir)
	if err != nil || !strings.HasPrefix(st.Credential, federation.CredentialPrefix) {
		t.Fatalf("state after Register: credential %q, %v; want the first contact's", st.Credential, err)
	}
	raw, _ := os.ReadFile(filepath.Join(stateDir, StateFile))
	if bytes.Contains(raw, []byte(m.enroll)) || bytes.Contains(raw, []byte(testMachineID)) {
		t.Errorf("state file holds the enrollment token or the raw machine ID:\n%s", raw)
	}
	first := st.Credential
	m.nodes[0].srv.Close()
	next := m.nodes[1]

	c := newTestClient(t, Config{StateDir: stateDir})
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("Status after the first contact died: %v", err)
	}
	regs := next.find(http.MethodPost, "/v1/client/register")
	if len(regs) != 1 {
		t.Fatalf("next node saw %d registrations, want 1", len(regs))
	}
	if got := regs[0].header.Get("Authorization"); got != "Bearer "+first {
		t.Errorf("registration at the next node authorized by %.20q…, want the machine credential", got)
	}
	if bytes.Contains(regs[0].body, []byte("machine_id")) || bytes.Contains(regs[0].body, []byte(testMachineID)) {
		t.Errorf("registration at the next node sent the machine ID: %s", regs[0].body)
	}
	if next.count(http.MethodGet, "/v1/client/hello") != 1 {
		t.Errorf("next node was asked for %d hellos, want 1 before the registration", next.count(http.MethodGet, "/v1/client/hello"))
	}
	for _, r := range next.requests {
		if strings.Contains(r.header.Get("Authorization"), m.enroll) {
			t.Errorf("the enrollment token reached the next node (%s %s)", r.method, r.path)
		}
	}
	if st, _ := LoadState(stateDir); st.Credential == first || !strings.HasPrefix(st.Credential, federation.CredentialPrefix) {
		t.Errorf("credential after failover = %.20q…, want the newer one the next node issued", st.Credential)
	}

	// Without a credential the machine registers nowhere else.
	m2 := newMesh(t, 0, 100*time.Millisecond)
	dir2 := filepath.Join(t.TempDir(), "state")
	m2.client(0, func(c *Config) { c.StateDir = dir2 })
	st2, _ := LoadState(dir2)
	st2.Credential = ""
	if err := saveState(dir2, st2); err != nil {
		t.Fatal(err)
	}
	m2.nodes[0].srv.Close()
	if _, err := newTestClient(t, Config{StateDir: dir2}).Status(context.Background()); err == nil {
		t.Fatal("Status without a credential succeeded, want the next node unused")
	}
	if got := m2.nodes[1].count(http.MethodPost, "/v1/client/register"); got != 0 {
		t.Errorf("next node saw %d registrations without a credential, want none", got)
	}
}

func TestOneServerStateIsMigrated(t *testing.T) {
	n := newTestNode(t, false)
	// Register by hand and write the state as the one-server client did.
	var out struct {
		MachineToken string          `json:"machine_token"`
		Machine      catalog.Machine `json:"machine"`
	}
	body, _ := json.Marshal(map[string]string{"machine_id": testMachineID, "kernel": testKernel, "arch": testArch, "client_version": "0.1.0"})
	req, _ := http.NewRequest(http.MethodPost, n.srv.URL+"/v1/client/register", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+n.authToken("edge"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	old := fmt.Sprintf(`{"server": %q, "machine_token": %q, "tier": "edge", "machine_id": %q, "registered": "2026-01-02T03:04:05Z"}`,
		n.srv.URL+"/", out.MachineToken, out.Machine.ID)
	stateDir := filepath.Join(t.TempDir(), "state")
	if err := ensureDir(stateDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stateDir, StateFile), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}

	st, err := LoadState(stateDir)
	if err != nil {
		t.Fatalf("LoadState of the old format: %v", err)
	}
	if st.Server != n.srv.URL || st.Registrations[n.srv.URL].MachineToken != out.MachineToken || st.Registrations[n.srv.URL].MachineID != out.Machine.ID ||
		!slices.Equal(nodeURLs(st.Nodes), []string{n.srv.URL}) || !st.RerankDue {
		t.Errorf("migrated state = %+v, want the token as the registration at its server, the only node, to be ranked", st)
	}

	c := newTestClient(t, Config{StateDir: stateDir})
	m, err := c.Status(context.Background())
	if err != nil || m.ID != out.Machine.ID {
		t.Fatalf("Status on migrated state = %+v, %v; want machine %s", m, err, out.Machine.ID)
	}
	if got := n.count(http.MethodPost, "/v1/client/register"); got != 1 {
		t.Errorf("node saw %d registrations, want only the original one", got)
	}
	raw, _ := os.ReadFile(filepath.Join(stateDir, StateFile))
	var onDisk map[string]any
	json.Unmarshal(raw, &onDisk)
	if _, ok := onDisk["machine_token"]; ok || onDisk["registrations"] == nil || onDisk["ranked"] == nil {
		t.Errorf("state file after the first call:\n%s\nwant the current format, ranked", raw)
	}
}
