package meshtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// httpClient carries every harness request. The timeout covers a blob of
// a few hundred MiB on loopback and a triggered sync round.
var httpClient = &http.Client{Timeout: 2 * time.Minute, Transport: harnessTransport}

// harnessTransport is the harness's own: it skips certificate checks,
// because it talks only to the loopback processes it started, whose
// certificates it made (Spec.TLS). The nodes themselves verify each
// other (sync.ca_file, or the peer listeners' pinning).
var harnessTransport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, MaxIdleConnsPerHost: 8}

// StatusError is a non-2xx answer.
type StatusError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: status %d: %s", e.Method, e.Path, e.Status, e.Body)
}

// Call sends one request to the node and decodes a 2xx JSON answer into
// out (if not nil). cred is the whole Authorization header value, or "".
// A body of type []byte is sent raw; anything else non-nil as JSON.
func (n *Node) Call(ctx context.Context, method, path, cred string, body, out any) error {
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/octet-stream"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return err
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	base, client := n.URL, httpClient
	if pc := n.m.harnessPeer(n, path, cred); pc != nil {
		base, client = n.PeerURL, pc
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if cred != "" {
		req.Header.Set("Authorization", cred)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s on %s: %w", method, path, n.Name, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s on %s: read answer: %w", method, path, n.Name, err)
	}
	if resp.StatusCode/100 != 2 {
		return &StatusError{Method: method, Path: path, Status: resp.StatusCode, Body: string(raw)}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s on %s: decode %q: %w", method, path, n.Name, raw, err)
		}
	}
	return nil
}

// Bearer is the Authorization value for a token.
func Bearer(token string) string { return "Bearer " + token }

// must fails the test with err, naming the node.
func (n *Node) must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
}

// Admin logs in as the configured admin once and returns the
// Authorization value of the macaroon. The macaroon outlives restarts:
// its root key is in the node's store.
func (n *Node) Admin(t testing.TB) string {
	t.Helper()
	n.mu.Lock()
	m := n.macaroon
	n.mu.Unlock()
	if m != "" {
		return "Macaroon " + m
	}
	req, err := http.NewRequest(http.MethodPost, n.URL+"/v1/admin/login", nil)
	n.must(t, err)
	req.SetBasicAuth(AdminUser, AdminPassword)
	resp, err := httpClient.Do(req)
	n.must(t, err)
	defer resp.Body.Close()
	var body struct {
		Macaroon string `json:"macaroon"`
	}
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: admin login: want 200, got %d: %s", n.Name, resp.StatusCode, raw)
	}
	n.must(t, json.NewDecoder(resp.Body).Decode(&body))
	n.mu.Lock()
	n.macaroon = body.Macaroon
	n.mu.Unlock()
	return "Macaroon " + body.Macaroon
}

// AdminCall is Call with the admin macaroon, failing the test on error.
func (n *Node) AdminCall(t testing.TB, method, path string, body, out any) {
	t.Helper()
	n.must(t, n.Call(context.Background(), method, path, n.Admin(t), body, out))
}

// SyncToken issues a sync token for tier on this node.
func (n *Node) SyncToken(t testing.TB, tier, name string) string {
	t.Helper()
	var out struct{ Token string }
	n.AdminCall(t, http.MethodPost, "/v1/admin/sync-tokens", map[string]string{"tier": tier, "name": name}, &out)
	return out.Token
}

// AuthToken issues a machine registration token for tier on this node.
func (n *Node) AuthToken(t testing.TB, tier, name string) string {
	t.Helper()
	var out struct{ Token string }
	n.AdminCall(t, http.MethodPost, "/v1/admin/auth-tokens", map[string]string{"tier": tier, "name": name}, &out)
	return out.Token
}

// PatchMeta is what an upload declares besides the bytes.
type PatchMeta struct {
	Kernel, Arch, Version string
}

// Digest is the content address of b as patchmesh writes it.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Upload uploads content as a patch at the node (the hub).
func (n *Node) Upload(t testing.TB, content []byte, meta PatchMeta) catalog.Patch {
	t.Helper()
	q := url.Values{
		"digest": {Digest(content)}, "kernel": {meta.Kernel}, "arch": {meta.Arch},
		"version": {meta.Version}, "size": {strconv.Itoa(len(content))},
	}
	var p catalog.Patch
	n.AdminCall(t, http.MethodPost, "/v1/admin/patches?"+q.Encode(), content, &p)
	return p
}

// Promote puts the patch with digest on tier.
func (n *Node) Promote(t testing.TB, digest, tier string) {
	t.Helper()
	n.AdminCall(t, http.MethodPost, "/v1/admin/patches/"+digest+"/promote", map[string]string{"tier": tier}, nil)
}

// Withdraw withdraws the patch with digest.
func (n *Node) Withdraw(t testing.TB, digest string) {
	t.Helper()
	n.AdminCall(t, http.MethodPost, "/v1/admin/patches/"+digest+"/withdraw", nil, nil)
}

// Patches lists the node's patches matching query (see docs/api.md),
// up to 10,000.
func (n *Node) Patches(t testing.TB, query url.Values) []catalog.Patch {
	t.Helper()
	ps, err := n.TryPatches(t, query)
	n.must(t, err)
	return ps
}

// TryPatches is Patches that returns the error, for wait conditions.
func (n *Node) TryPatches(t testing.TB, query url.Values) ([]catalog.Patch, error) {
	t.Helper()
	q := url.Values{"limit": {"10000"}}
	for k, v := range query {
		q[k] = v
	}
	var out struct{ Patches []catalog.Patch }
	err := n.Call(context.Background(), http.MethodGet, "/v1/admin/patches?"+q.Encode(), n.Admin(t), nil, &out)
	return out.Patches, err
}

// SyncStatus returns the node's link states.
func (n *Node) SyncStatus(t testing.TB) federation.SyncStatusResponse {
	t.Helper()
	var st federation.SyncStatusResponse
	n.AdminCall(t, http.MethodGet, "/v1/sync/status", nil, &st)
	return st
}

// Link returns the state of the link feeding tier; it fails the test if
// the node has none.
func (n *Node) Link(t testing.TB, tier string) federation.LinkStatus {
	t.Helper()
	for _, l := range n.SyncStatus(t).Links {
		if l.Tier == tier {
			return l
		}
	}
	t.Fatalf("%s: no sync link feeds tier %s", n.Name, tier)
	return federation.LinkStatus{}
}

// Trigger starts a sync round on every link and waits for it to end.
func (n *Node) Trigger(t testing.TB) federation.SyncStatusResponse {
	t.Helper()
	var st federation.SyncStatusResponse
	n.AdminCall(t, http.MethodPost, "/v1/admin/sync/trigger", map[string]bool{"wait": true}, &st)
	return st
}

// BlobInfo is what a blob download returned.
type BlobInfo struct {
	Status int
	Size   int64
	// Digest is the sha256 of the bytes received, as patchmesh writes
	// digests; empty unless Status is 200.
	Digest string
}

// FetchBlob downloads a blob with cred and hashes it; it does not fail
// the test, so that a goroutine may poll with it.
func (n *Node) FetchBlob(ctx context.Context, digest, cred string) (BlobInfo, error) {
	base, client := n.URL, httpClient
	if pc := n.m.harnessPeer(n, "/v1/blobs/"+digest, cred); pc != nil {
		base, client = n.PeerURL, pc
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/blobs/"+digest, nil)
	if err != nil {
		return BlobInfo{}, err
	}
	req.Header.Set("Authorization", cred)
	resp, err := client.Do(req)
	if err != nil {
		return BlobInfo{}, fmt.Errorf("GET blob %s on %s: %w", digest, n.Name, err)
	}
	defer resp.Body.Close()
	info := BlobInfo{Status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return info, nil
	}
	h := sha256.New()
	info.Size, err = io.Copy(h, resp.Body)
	if err != nil {
		return info, fmt.Errorf("GET blob %s on %s: body after %d bytes: %w", digest, n.Name, info.Size, err)
	}
	info.Digest = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return info, nil
}

// Register registers a machine with an auth token and returns its
// machine token.
func (n *Node) Register(t testing.TB, authToken, machineID, kernel, arch string) string {
	t.Helper()
	var out struct {
		MachineToken string `json:"machine_token"`
	}
	body := map[string]string{"machine_id": machineID, "kernel": kernel, "arch": arch, "client_version": "meshtest"}
	n.must(t, n.Call(context.Background(), http.MethodPost, "/v1/client/register", Bearer(authToken), body, &out))
	return out.MachineToken
}

// ClientPatch asks, as a machine, for the newest patch for kernel and
// arch; ok is false when the node answers 404 (nothing to offer).
func (n *Node) ClientPatch(t testing.TB, machineToken, kernel, arch string) (p catalog.Patch, ok bool) {
	t.Helper()
	q := url.Values{"kernel": {kernel}, "arch": {arch}}
	err := n.Call(context.Background(), http.MethodGet, "/v1/client/patch?"+q.Encode(), Bearer(machineToken), nil, &p)
	if se, isStatus := err.(*StatusError); isStatus && se.Status == http.StatusNotFound {
		return catalog.Patch{}, false
	}
	n.must(t, err)
	return p, true
}

// FeedRecords reads the node's whole feed of tier with a sync token the
// node issued, page by page, and returns the records, verified against
// the mesh's hub key.
func (n *Node) FeedRecords(t testing.TB, syncToken string) []federation.Record {
	t.Helper()
	pub, err := federation.ParsePublicKey(n.m.HubPublicKey)
	n.must(t, err)
	v := federation.NewVerifier(pub)
	var out []federation.Record
	after := int64(0)
	for range 10_000 { // bounded: at most 10 million events
		var page federation.FeedResponse
		path := fmt.Sprintf("/v1/sync/feed?after=%d&limit=%d", after, federation.MaxFeedLimit)
		n.must(t, n.Call(context.Background(), http.MethodGet, path, Bearer(syncToken), nil, &page))
		for _, e := range page.Events {
			r, err := v.Open(e.Envelope)
			if err != nil {
				t.Fatalf("%s: feed event seq %d does not verify: %v", n.Name, e.Seq, err)
			}
			out = append(out, r)
			after = e.Seq
		}
		if len(page.Events) == 0 || after >= page.Head {
			return out
		}
	}
	t.Fatalf("%s: feed did not end", n.Name)
	return nil
}

// WaitFor polls check every 100ms until it returns nil, and fails the
// test with what it wanted and the last error if that takes longer than
// within. A check may call helpers that fail the test.
func WaitFor(t testing.TB, within time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %s within %v; last: %v", what, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Metrics reads the node's /metrics and returns each sample by its series
// as exposed, e.g. `patchmesh_gossip_members{state="dead"}`. It does not
// fail the test, so that a goroutine may poll with it.
func (n *Node) Metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics on %s: %w", n.Name, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("GET /metrics on %s: %w", n.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{Method: http.MethodGet, Path: "/metrics", Status: resp.StatusCode, Body: string(raw)}
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(raw)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// The value is the last field: label values may hold spaces.
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, nil
}

// Gossip is one node's view of the mesh's membership, read from its
// metrics: how many members it counts in each state (alive, dead, left;
// itself among the alive), its gossip traffic so far, and the gossip it
// refused, by security event.
type Gossip struct {
	Members                  map[string]int
	SentBytes, ReceivedBytes float64
	Rejected                 map[string]int // by event: gossip_key_fail, gossip_meta_fail, gossip_name_fail
}

// Total is how many members the node knows of, in any state.
func (g Gossip) Total() int {
	k := 0
	for _, c := range g.Members {
		k += c
	}
	return k
}

// GossipView reads the node's view of the membership. It does not fail
// the test, so that a goroutine may poll with it. It reads counts, not
// names: the per-member admin view (GET /v1/topology) is not there yet.
func (n *Node) GossipView(ctx context.Context) (Gossip, error) {
	ms, err := n.Metrics(ctx)
	if err != nil {
		return Gossip{}, err
	}
	if _, ok := ms["patchmesh_gossip_sent_bytes_total"]; !ok {
		return Gossip{}, fmt.Errorf("%s: no gossip metrics (gossip off?)", n.Name)
	}
	g := Gossip{
		Members:       map[string]int{},
		SentBytes:     ms["patchmesh_gossip_sent_bytes_total"],
		ReceivedBytes: ms["patchmesh_gossip_received_bytes_total"],
	}
	for _, st := range []string{"alive", "dead", "left"} {
		g.Members[st] = int(ms[`patchmesh_gossip_members{state="`+st+`"}`])
	}
	g.Rejected = map[string]int{}
	for _, ev := range []string{"gossip_key_fail", "gossip_meta_fail", "gossip_name_fail"} {
		g.Rejected[ev] = int(ms[`patchmesh_gossip_rejected_total{event="`+ev+`"}`])
	}
	return g, nil
}

// Member is one node as another's gossip sees it (GET /v1/topology).
type Member struct {
	Name     string    `json:"name"`
	Role     string    `json:"role"`
	DC       string    `json:"dc"`
	URL      string    `json:"url"`
	PeerURL  string    `json:"peer_url"`
	Upstream string    `json:"upstream"`
	State    string    `json:"state"`
	Since    time.Time `json:"since"`
	// Head, Synced and Lag are the member's sync progress as of
	// ProgressAsOf, where the viewing node knows it.
	Head         int64     `json:"head"`
	Synced       int64     `json:"synced"`
	Lag          int64     `json:"lag"`
	ProgressAsOf time.Time `json:"progress_as_of"`
	Addr         string    `json:"addr"`
	Pools        []string  `json:"pools"`
}

// Topology is a node's view of the mesh.
type Topology struct {
	Self  string   `json:"self"`
	Pools []string `json:"pools"`
	Nodes []Member `json:"nodes"`
}

// Member is the member named name, if the view knows it.
func (v Topology) Member(name string) (Member, bool) {
	for _, m := range v.Nodes {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// State is the state the view gives the member named name, "" if the
// view does not know it.
func (v Topology) State(name string) string {
	for _, m := range v.Nodes {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}

// Topology reads the node's view of the mesh (GET /v1/topology). It does
// not fail the test, so that a goroutine may poll with it, and so needs
// the admin macaroon from an earlier call of Admin.
func (n *Node) Topology(ctx context.Context) (Topology, error) {
	n.mu.Lock()
	m := n.macaroon
	n.mu.Unlock()
	if m == "" {
		return Topology{}, fmt.Errorf("%s: call Admin before Topology", n.Name)
	}
	var v Topology
	err := n.Call(ctx, http.MethodGet, "/v1/topology", "Macaroon "+m, nil, &v)
	return v, err
}

// NodeKey is the node's public identity key, as GET /debug/info names it.
func (n *Node) NodeKey(t testing.TB) string {
	t.Helper()
	var info struct {
		NodeKey string `json:"node_key"`
	}
	n.must(t, n.Call(context.Background(), http.MethodGet, "/debug/info", "", nil, &info))
	if info.NodeKey == "" {
		t.Fatalf("%s: /debug/info names no node key", n.Name)
	}
	return info.NodeKey
}

// Admit admits each node at this node (the hub) under its own key and URL,
// on every tier. A node admitted already under that key and URL (the hub
// admits itself at its first start, on the tiers it had then) is admitted
// on the tiers made since, with no removal; one admitted at another URL is
// moved to its own (PATCH), also with no removal; one admitted under
// another key is removed and admitted again.
func (n *Node) Admit(t testing.TB, nodes ...*Node) {
	t.Helper()
	var list struct {
		Nodes []catalog.Node `json:"nodes"`
	}
	n.AdminCall(t, http.MethodGet, "/v1/admin/nodes", nil, &list)
	var tiers struct {
		Tiers []catalog.Tier `json:"tiers"`
	}
	n.AdminCall(t, http.MethodGet, "/v1/admin/tiers", nil, &tiers)
	covers := func(l catalog.Node, o *Node) bool {
		if l.Key != o.NodeKey(t) || !slices.Equal(l.URLs, []string{o.URL}) {
			return false
		}
		for _, tier := range tiers.Tiers {
			if !slices.Contains(l.Tiers, tier.Name) {
				return false
			}
		}
		return true
	}
nodes:
	for _, o := range nodes {
		for _, l := range list.Nodes {
			if l.Name != o.Name || !l.Removed.IsZero() || len(l.Tiers) == 0 {
				continue
			}
			if covers(l, o) {
				continue nodes
			}
			if l.Key != o.NodeKey(t) {
				n.AdminCall(t, http.MethodDelete, "/v1/admin/nodes/"+o.Name, nil, nil)
				break // and admitted again below
			}
			if !slices.Equal(l.URLs, []string{o.URL}) {
				// Moved in place, with no removal a downstream could
				// apply alone, and onto every tier.
				var all []string
				for _, tier := range tiers.Tiers {
					all = append(all, tier.Name)
				}
				n.AdminCall(t, http.MethodPatch, "/v1/admin/nodes/"+o.Name,
					map[string]any{"urls": []string{o.URL}, "tiers": all}, nil)
				continue nodes
			}
			// Else the hub admits the same node on the tiers it lacks.
		}
		n.AdminCall(t, http.MethodPost, "/v1/admin/nodes",
			map[string]any{"name": o.Name, "key": o.NodeKey(t), "urls": []string{o.URL}}, nil)
	}
}

// ListedNode is one node of GET /v1/client/nodes.
type ListedNode = federation.RosterNode

// ClientNodes asks, as a machine, for the nodes it may use.
func (n *Node) ClientNodes(ctx context.Context, machineToken string) ([]ListedNode, error) {
	var out struct {
		Nodes []ListedNode `json:"nodes"`
	}
	err := n.Call(ctx, http.MethodGet, "/v1/client/nodes", Bearer(machineToken), nil, &out)
	return out.Nodes, err
}

// LinkURL is the URL a downstream's link names n by, as its sync status
// reports it: n's peer listener under Mesh.MTLS, where meshtest points
// links there, n's URL otherwise.
func (n *Node) LinkURL() string {
	if n.m.MTLS && n.PeerURL != "" {
		return n.PeerURL
	}
	return n.URL
}

// AsDownstream is where and how a test acting as one of n's downstreams
// (with a sync token) reaches n: its peer listener with the harness's
// admitted certificate under Mesh.MTLS, its URL otherwise.
func (n *Node) AsDownstream() (base string, c *http.Client) {
	if pc := n.m.harnessPeer(n, "/v1/sync/", ""); pc != nil {
		return n.PeerURL, pc
	}
	return n.URL, &http.Client{Timeout: 2 * time.Minute}
}
