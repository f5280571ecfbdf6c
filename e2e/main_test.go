// Package e2e_test runs patchmesh federations of real processes: a hub,
// relays and edges started from the built binary, each with its own data
// dir and loopback address, driven through the HTTP API. internal/meshtest
// owns the processes; these tests own what the mesh must do.
package e2e_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"testing"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

func TestMain(m *testing.M) { os.Exit(meshtest.Main(m)) }

const (
	kernel = "5.15.0-107.117-generic"
	arch   = "x86_64"
)

// randomBytes returns n bytes no other patch of the run has.
func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// hub starts a mesh's hub.
func hub(m *meshtest.Mesh) *meshtest.Node {
	return m.Start(meshtest.Spec{Name: "hub", Role: node.RoleHub})
}

// pull adds a downstream of up with one link per tier, each with a sync
// token up issues for that tier, and starts it unless add is all that is
// wanted.
func pull(t *testing.T, m *meshtest.Mesh, name, role string, up *meshtest.Node, tiers ...string) *meshtest.Node {
	t.Helper()
	return m.Start(pullSpec(t, name, role, up.URL, up, tiers...))
}

// pullSpec is the spec of a downstream whose links reach up at url (up's
// own, or a proxy's in front of it).
func pullSpec(t *testing.T, name, role, url string, up *meshtest.Node, tiers ...string) meshtest.Spec {
	t.Helper()
	spec := meshtest.Spec{Name: name, Role: role}
	for _, tier := range tiers {
		tok := up.SyncToken(t, tier, fmt.Sprintf("%s-%s", name, tier))
		spec.Links = append(spec.Links, meshtest.Link{Tier: tier, Upstreams: []meshtest.Upstream{{URL: url, Token: tok}}})
	}
	return spec
}
