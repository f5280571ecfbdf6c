package api

import (
	"log/slog"
	"net/http"
	"slices"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
)

// NodeLister lists the healthy nodes serving a tier (from gossip). The
// client API keeps those the hub admitted and hands them to machines, so
// that they can use the nearest node and fail over; the api package
// neither measures nor ranks.
type NodeLister interface {
	Nodes(tier string) []NodeInfo
}

// NodeInfo is one node as gossip reports it. Every field is the member's
// own, unsigned word: a hint for health and ranking, never a reason to
// trust the member.
type NodeInfo struct {
	// Name is the node's name in the mesh (Info.Node on that node).
	Name string `json:"name"`
	// DC is the node's data centre.
	DC string `json:"dc"`
	// Role is hub, relay or edge.
	Role string `json:"role"`
	// API is the node's advertised base URL for machines.
	API string `json:"url"`
	// KeyID is the ID of the node key the member says it holds.
	KeyID string `json:"key_id,omitempty"`
}

// clientNodes answers GET /v1/client/nodes: the nodes a machine of the
// token's tier may use. A node is listed only if gossip reports it alive
// (this node always is) AND the hub admitted it on the tier under the key
// gossip says it holds; it is listed with its admitted URL and the hub's
// signed admission, never with what gossip claims beyond health. So a
// process that only holds the gossip key is never listed, and one that
// claims an admitted name under another key is logged as a security
// event. The list grants nothing: a machine token is valid only at the
// node that issued it, and a machine checks each node (roster, hello)
// before sending it a credential.
func (s *server) clientNodes(w http.ResponseWriter, r *http.Request, t catalog.Token) error {
	as, err := s.store.Admissions(r.Context(), t.Tier)
	if err != nil {
		return err
	}
	var alive []NodeInfo
	if s.nodes != nil {
		alive = s.nodes.Nodes(t.Tier)
	}
	// This node is serving the machine right now, whatever gossip thinks:
	// a node that has not yet heard from its peers still counts itself.
	if !slices.ContainsFunc(alive, func(n NodeInfo) bool { return n.Name == s.info.Node }) {
		alive = append(alive, NodeInfo{Name: s.info.Node, Role: s.info.Role, KeyID: s.nodeKeyID})
	}
	out := make([]federation.RosterNode, 0, len(alive))
	seen := make(map[string]bool, len(alive))
	for _, m := range alive {
		// A name seen twice is gossip catching up: the first report wins.
		if seen[m.Name] {
			continue
		}
		seen[m.Name] = true
		i := slices.IndexFunc(as, func(a store.Admission) bool { return a.Node.Name == m.Name })
		if i < 0 {
			continue // not admitted on this tier: never listed
		}
		a := as[i]
		if m.Name == s.info.Node {
			m.KeyID = s.nodeKeyID // this node knows its own key
		}
		if m.KeyID != a.Node.KeyID {
			s.identityMismatch(r, m, a)
			continue
		}
		n := newRosterNode(a)
		n.DC, n.Role = m.DC, m.Role
		if slices.Contains(a.Node.URLs, m.API) {
			n.URL = m.API
		}
		out = append(out, n)
	}
	writeJSON(w, http.StatusOK, struct {
		Nodes []federation.RosterNode `json:"nodes"`
	}{out})
	return nil
}

// identityMismatch logs a gossip member that claims an admitted node's
// name under another key, once a minute per member and key.
func (s *server) identityMismatch(r *http.Request, m NodeInfo, a store.Admission) {
	if !s.identityLog.due(m.Name+"/"+m.KeyID, s.now()) {
		return
	}
	s.securityEvent(r, auth.EventNodeIdentityFail, slog.String("node", m.Name), slog.String("reason", "key_mismatch"),
		slog.String("claimed_key_id", m.KeyID), slog.String("admitted_key_id", a.Node.KeyID), slog.String("advertised_url", m.API))
}
