package e2e_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// A downstream whose sync token is for one tier receives nothing of
// another: not the patches, not the events, not the blobs.
func TestTierIsolation(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	h := hub(m)
	betaToken := h.SyncToken(t, "beta", "isolated")
	d := m.Start(meshtest.Spec{Name: "beta-only", Role: node.RoleEdge, Links: []meshtest.Link{
		{Tier: "beta", Upstreams: []meshtest.Upstream{{URL: h.URL, Token: betaToken}}},
	}})

	// What beta holds before: the hub's admission of itself.
	base := d.Trigger(t).Links[0]
	// A patch on edge only, and one promoted to beta: the first is the
	// one that must not leak, the second proves the link works at all.
	edgeOnly := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.1"})
	before := d.Trigger(t).Links[0]
	if before.HubSeq != base.HubSeq || before.Cursor != base.Cursor || before.State != federation.LinkSynced {
		t.Fatalf("after an edge-only upload: want the beta link synced at hub_seq %d, cursor %d, got %+v", base.HubSeq, base.Cursor, before)
	}
	if ps := d.Patches(t, nil); len(ps) != 0 {
		t.Fatalf("after an edge-only upload: want no patch downstream, got %+v", ps)
	}

	promoted := h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.2"})
	h.Promote(t, promoted.Digest, "beta")
	meshtest.WaitFor(t, converge, "the promoted patch downstream", func() error {
		return wantListed(t, d, promoted.Digest, []string{"beta"})
	})
	ps := d.Patches(t, nil)
	if len(ps) != 1 {
		t.Fatalf("downstream of beta: want only the promoted patch, got %+v", ps)
	}
	after := d.Link(t, "beta")
	if after.HubSeq != base.HubSeq+1 || after.RecordsRejected != 0 {
		t.Fatalf("downstream of beta: want hub_seq %d (the one beta patch event), nothing rejected; got %+v", base.HubSeq+1, after)
	}

	// What the hub serves the token: beta's feed only, and no edge blob.
	var page federation.FeedResponse
	if err := h.Call(context.Background(), http.MethodGet, "/v1/sync/feed?after=0", meshtest.Bearer(betaToken), nil, &page); err != nil {
		t.Fatal(err)
	}
	if want := base.HubSeq + 1; page.Tier != "beta" || int64(len(page.Events)) != want || page.HubHead != want {
		t.Fatalf("hub feed for a beta token: want beta with %d events, got tier %s, %d events, hub head %d", want, page.Tier, len(page.Events), page.HubHead)
	}
	got, err := h.FetchBlob(context.Background(), edgeOnly.Digest, meshtest.Bearer(betaToken))
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != http.StatusNotFound {
		t.Fatalf("edge-only blob with a beta sync token: want 404, got %+v", got)
	}

	// More edge-only changes leave the beta link where it is.
	h.Upload(t, randomBytes(t, 64<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.3"})
	h.Withdraw(t, edgeOnly.Digest)
	still := d.Trigger(t).Links[0]
	if still.HubSeq != after.HubSeq || still.Cursor != after.Cursor {
		t.Fatalf("after edge-only changes: want the beta link still at hub_seq %d, cursor %d; got %+v", after.HubSeq, after.Cursor, still)
	}
	if ps := d.Patches(t, map[string][]string{"withdrawn": {"true"}}); len(ps) != 1 || ps[0].Digest != promoted.Digest {
		t.Fatalf("after edge-only changes: want only %s downstream, withdrawn or not; got %+v", promoted.Digest, ps)
	}
}
