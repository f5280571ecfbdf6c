package api

import (
	"net/http"

	"github.com/patchmesh/patchmesh/catalog"
)

// NodeLister lists the healthy nodes serving a tier (from gossip). The
// client API hands the list to machines so that they can use the nearest
// node and fail over; the api package neither measures nor ranks.
type NodeLister interface {
	Nodes(tier string) []NodeInfo
}

// NodeInfo is one node a machine may use.
type NodeInfo struct {
	// Name is the node's name in the mesh (Info.Node on that node).
	Name string `json:"name"`
	// DC is the node's data centre.
	DC string `json:"dc"`
	// Role is hub, relay or edge.
	Role string `json:"role"`
	// API is the node's advertised base URL for machines.
	API string `json:"url"`
}

// clientNodes answers GET /v1/client/nodes: the healthy nodes that serve
// the machine token's tier, this node always among them. The list says
// where the machine may go; it grants nothing there, since each node
// checks its own machine tokens.
func (s *server) clientNodes(w http.ResponseWriter, r *http.Request, t catalog.Token) error {
	var listed []NodeInfo
	if s.nodes != nil {
		listed = s.nodes.Nodes(t.Tier)
	}
	self := s.self(r)
	out := make([]NodeInfo, 0, len(listed)+1)
	seen := make(map[string]bool, len(listed)+1)
	for _, n := range listed {
		// A node without an API URL is of no use to a machine; a name seen
		// twice is gossip catching up, and the first report wins.
		if n.API == "" || seen[n.Name] {
			continue
		}
		seen[n.Name] = true
		out = append(out, n)
	}
	// This node is serving the machine right now, whatever gossip thinks:
	// a node that has not yet heard from its peers still lists itself.
	if !seen[self.Name] {
		out = append(out, self)
	}
	writeJSON(w, http.StatusOK, struct {
		Nodes []NodeInfo `json:"nodes"`
	}{out})
	return nil
}

// self describes this node. Without an advertised URL (Info.URL) it is the
// scheme and host the machine reached it by, which is the one URL known to
// work for that machine.
func (s *server) self(r *http.Request) NodeInfo {
	u := s.info.URL
	if u == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		u = scheme + "://" + r.Host
	}
	return NodeInfo{Name: s.info.Node, Role: s.info.Role, API: u}
}
