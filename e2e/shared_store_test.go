package e2e

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/internal/pgtest"
	"github.com/patchmesh/patchmesh/node"
)

// TestSharedPostgresUploadRacingDeleteNeverLeavesARecordWithoutItsBlob
// runs two real nodes on one PostgreSQL database (metadata and blobs) and
// races, round after round, one node's upload of a file against the other
// node's removal of the same file's patch, and a storage repair removing
// orphans at once (grace 0). Whatever order they land in, a patch record
// must never name a missing blob: every step that makes a blob and its
// record agree holds the digest's advisory lock, across both nodes.
func TestSharedPostgresUploadRacingDeleteNeverLeavesARecordWithoutItsBlob(t *testing.T) {
	dsn := pgtest.New(t)
	m := meshtest.New(t)
	shared := func(c *node.Config) {
		c.Store.Driver, c.Store.DSN = node.DriverPostgres, dsn
		c.Blobs.Driver = node.DriverPostgres
	}
	a := m.Start(meshtest.Spec{Name: "hub-a", Role: node.RoleHub, Configure: shared})
	b := m.Start(meshtest.Spec{Name: "hub-b", Role: node.RoleHub, Configure: shared})
	adminA, adminB := a.Admin(t), b.Admin(t)

	content := bytes.Repeat([]byte("shared-store race "), 32<<10) // ~576 KiB
	digest := meshtest.Digest(content)
	q := url.Values{"digest": {digest}, "kernel": {"5.15.0-107.117-generic"}, "arch": {"x86_64"},
		"version": {"107.1"}, "size": {strconv.Itoa(len(content))}}
	upload := "/v1/admin/patches?" + q.Encode()

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var uploads, deletes int
	for round := range 30 {
		var wg sync.WaitGroup
		var upErr, delErr error
		wg.Go(func() { upErr = a.Call(ctx, http.MethodPost, upload, adminA, content, nil) })
		wg.Go(func() { delErr = b.Call(ctx, http.MethodDelete, "/v1/admin/patches/"+digest, adminB, nil, nil) })
		if round%3 == 2 {
			wg.Go(func() {
				_ = b.Call(ctx, http.MethodPost, "/v1/admin/storage/refresh?repair=true&grace=0s", adminB, nil, nil)
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			t.Fatalf("round %d: ran out of time", round)
		}
		if upErr == nil {
			uploads++
		}
		if delErr == nil {
			deletes++
		}
		var refresh struct {
			Patches int      `json:"patches"`
			Missing []string `json:"missing"`
		}
		if err := a.Call(ctx, http.MethodPost, "/v1/admin/storage/refresh", adminA, nil, &refresh); err != nil {
			t.Fatalf("round %d: storage refresh: %v", round, err)
		}
		if len(refresh.Missing) > 0 {
			t.Fatalf("round %d: a patch record names a missing blob %v (upload: %v; delete: %v)", round, refresh.Missing, upErr, delErr)
		}
	}
	t.Logf("30 rounds: %d uploads and %d deletes succeeded, no record without its blob", uploads, deletes)
	if uploads == 0 || deletes == 0 {
		t.Errorf("want uploads and deletes both to have landed in some rounds, got %d and %d", uploads, deletes)
	}
}
