package api

import (
	"net/http"

	"github.com/patchmesh/patchmesh/topology"
)

// TopologyViewer gives the mesh as this node sees it through gossip. The
// api only serves the view; membership and health are topology's.
type TopologyViewer interface {
	View() topology.View
}

// topology answers GET /v1/topology. Without gossip this node knows of no
// other, so the view holds it alone: it is alive, since it is answering.
func (s *server) topology(w http.ResponseWriter, r *http.Request, _ string) error {
	// Health changes by the second; a cached view would mislead.
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, s.topologyView())
	return nil
}

func (s *server) topologyView() topology.View {
	if s.topo != nil {
		return s.topo.View()
	}
	return topology.View{
		Self:  s.info.Node,
		Pools: []string{},
		Nodes: []topology.ViewNode{{
			Name: s.info.Node, Role: s.info.Role, URL: s.info.URL, State: topology.Alive,
			Version: s.info.Version, Since: s.started, Tiers: []string{}, Pools: []string{},
		}},
		Links: []topology.ViewLink{},
	}
}
