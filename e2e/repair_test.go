package e2e_test

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// An edge that lost a patch file fetches it again from its upstream with
// storage refresh --repair, verified, and serves it again.
func TestStorageRepairRefetchesFromUpstream(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	h := hub(m)
	e := pull(t, m, "edge-repair", node.RoleEdge, h, "edge")
	content := randomBytes(t, 300<<10)
	p := h.Upload(t, content, meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "107.1"})
	onEvery(t, []*meshtest.Node{e}, func(n *meshtest.Node) error {
		return wantListed(t, n, p.Digest, []string{"edge"})
	}, "the patch listed on tier edge")
	machine := e.Register(t, e.AuthToken(t, "edge", "fleet"), "machine-repair-0000000001", kernel, arch)

	// The edge's blob goes missing behind its back.
	hexd := p.Digest[len("sha256:"):]
	file := filepath.Join(e.DataDir, "blobs", "sha256", hexd[:2], hexd)
	meshtest.WaitFor(t, converge, "the blob on the edge's disk", func() error {
		_, err := os.Stat(file)
		return err
	})
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	var report struct {
		Missing, Refetched, Removed []string
	}
	e.AdminCall(t, http.MethodPost, "/v1/admin/storage/refresh", nil, &report)
	if !slices.Equal(report.Missing, []string{p.Digest}) || len(report.Refetched) != 0 {
		t.Fatalf("refresh without repair: %+v, want %s missing and nothing fetched", report, p.Digest)
	}
	e.AdminCall(t, http.MethodPost, "/v1/admin/storage/refresh?repair=true", nil, &report)
	if !slices.Equal(report.Refetched, []string{p.Digest}) || len(report.Missing) != 0 {
		t.Fatalf("refresh with repair: %+v, want %s fetched again and nothing missing", report, p.Digest)
	}
	got, err := e.FetchBlob(t.Context(), p.Digest, meshtest.Bearer(machine))
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != 200 || got.Digest != p.Digest {
		t.Fatalf("download after the repair: %+v, want 200 with the patch's bytes", got)
	}
}
