package client

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/patchmesh/patchmesh/federation"
)

// Node is one node serving the machine's tier, as ranked.
type Node struct {
	// URL is the node's base URL; registrations are kept under it.
	URL string `json:"url"`
	// Name, DC and Role are what the mesh says of the node; empty for a
	// node known only as the first contact.
	Name string `json:"name,omitempty"`
	DC   string `json:"dc,omitempty"`
	Role string `json:"role,omitempty"`
	// Key is the node key the hub admitted the node with ("ed25519:…"),
	// read from the signed admission the machine verified; the node's
	// hello must be signed by it before the machine registers there.
	// Empty for the first contact, which was checked at registration.
	Key string `json:"key,omitempty"`
	// RTT is the median of three round trips to the node; meaningless when
	// Reachable is false.
	RTT time.Duration `json:"rtt_ns"`
	// Reachable is false when the node did not answer two of the probes.
	Reachable bool `json:"reachable"`
	// Checked is when the node was measured.
	Checked time.Time `json:"checked,omitzero"`
}

// NodeStatus is a ranked node and whether the machine holds a token there.
type NodeStatus struct {
	Node
	Registered bool
}

// probes is how many round trips measure a node; the median of an odd
// count ignores one slow outlier (a TLS handshake, say).
const probes = 3

// maxNodes bounds the node list a node may hand a machine, and so the
// probes a ranking sends.
const maxNodes = 64

// Nodes learns the node list again, re-measures every node and returns the
// ranking, nearest first.
func (c *Client) Nodes(ctx context.Context) ([]NodeStatus, error) {
	s, err := c.open(ctx, "", "", true)
	if err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}
	out := make([]NodeStatus, 0, len(s.st.Nodes))
	for _, n := range s.st.Nodes {
		_, ok := s.st.Registrations[n.URL]
		out = append(out, NodeStatus{Node: n, Registered: ok})
	}
	return out, nil
}

// rerank asks the nearest node that answers for the nodes serving the
// tier, measures them and saves the ranking. When no node can say, the
// nodes already known are measured again: a stale list ranked afresh still
// puts a dead node last.
func (s *session) rerank(ctx context.Context) error {
	nodes := s.st.Nodes
	var listed struct {
		Nodes []federation.RosterNode `json:"nodes"`
	}
	err := s.do(ctx, func(ctx context.Context, t target) error {
		return s.c.apiCall(ctx, t.url, t.token, http.MethodGet, "/v1/client/nodes", nil, nil, &listed)
	})
	if err != nil && ctx.Err() != nil {
		return err
	}
	if err == nil && len(listed.Nodes) > 0 {
		nodes = s.admitted(listed.Nodes)
	}
	if len(nodes) == 0 {
		nodes = []Node{{URL: s.st.Server}}
	}
	s.st.Nodes = s.c.rank(ctx, nodes)
	s.st.Ranked = time.Now().UTC()
	s.st.RerankDue = false
	// do may have saved the flag it set; this save clears it. A ranking
	// that fails to save is measured again next time.
	return s.save()
}

// admitted keeps the listed nodes whose admission verifies against the
// pinned hub keys, on the machine's hub tier, at a URL the hub admitted
// (federation.RosterNode.Verify): a node's list is its word, the hub's
// signature is not. Each is kept with its admitted key, for its hello. A
// URL the client could never use is dropped too, so that it is neither
// probed nor sent a credential.
func (s *session) admitted(listed []federation.RosterNode) []Node {
	pins, err := s.st.Pins()
	if err != nil {
		return nil
	}
	var nodes []Node
	seen := map[string]bool{}
	for _, n := range listed {
		u := strings.TrimRight(n.URL, "/")
		if seen[u] || checkURL(u, s.tlsOnly()) != nil || len(nodes) == maxNodes {
			continue
		}
		pub, rec, err := n.Verify(pins.v)
		if err != nil || rec.Tier != s.st.HubTier {
			continue
		}
		seen[u] = true
		nodes = append(nodes, Node{URL: u, Name: rec.Node.Name, DC: n.DC, Role: n.Role, Key: federation.FormatPublicKey(pub)})
	}
	return nodes
}

// rank measures every node in parallel and sorts them nearest first,
// unreachable ones last, in a stable order.
func (c *Client) rank(ctx context.Context, nodes []Node) []Node {
	out := slices.Clone(nodes)
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() {
			out[i].RTT, out[i].Reachable = c.probe(ctx, out[i].URL)
			out[i].Checked = time.Now().UTC()
		})
	}
	wg.Wait()
	slices.SortStableFunc(out, func(a, b Node) int {
		switch {
		case a.Reachable != b.Reachable:
			if a.Reachable {
				return -1
			}
			return 1
		case !a.Reachable:
			return 0
		}
		return cmp.Compare(a.RTT, b.RTT)
	})
	return out
}

// probe times probes round trips of GET /debug/info, which needs no
// credential and touches no store, one after another so that they do not
// queue behind each other. A failed probe counts as the timeout; the node
// is reachable when the median answered.
func (c *Client) probe(ctx context.Context, server string) (time.Duration, bool) {
	u, err := endpoint(server, "/debug/info", nil, c.cfg.Transport.RequireTLS)
	if err != nil {
		return 0, false
	}
	var rtts []time.Duration
	for range probes {
		rtt, ok := c.roundTrip(ctx, u)
		if !ok {
			rtt = c.cfg.ProbeTimeout
		}
		rtts = append(rtts, rtt)
	}
	failed := 0
	for _, r := range rtts {
		if r >= c.cfg.ProbeTimeout {
			failed++
		}
	}
	slices.Sort(rtts)
	return rtts[probes/2], failed <= probes/2
}

func (c *Client) roundTrip(ctx context.Context, u string) (time.Duration, bool) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, false
	}
	req.Header.Set("User-Agent", "patchmesh-client/"+c.cfg.ClientVersion)
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	// Reading the (small) body lets the connection be reused by the next
	// probe and by the calls that follow.
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	rtt := time.Since(start)
	return rtt, err == nil && resp.StatusCode == http.StatusOK && rtt < c.cfg.ProbeTimeout
}
