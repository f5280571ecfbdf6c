package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// A downstream killed with SIGKILL in the middle of a large blob transfer
// comes back and finishes it, and at no moment lists the patch or serves
// anything but the whole, verified file.
func TestCrashDuringTransfer(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	m := meshtest.New(t)
	h := hub(m)
	px := newProxy(t, m, h)
	// A quarter of the file a second: the transfer takes seconds, and the
	// kill lands well inside it.
	px.bytesPerSec.Store(size / 4)
	d := m.Start(pullSpec(t, "downstream", node.RoleEdge, px.URL, h, "edge"))

	content := randomBytes(t, size)
	digest := meshtest.Digest(content)
	admin := d.Admin(t)

	// Watch the downstream for the whole test: a listed patch or a served
	// blob must be complete. Refused connections are the downtime.
	var (
		violation atomic.Pointer[string]
		seen      atomic.Int64
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if msg := checkWhole(d, admin, digest, size); msg != "" {
				violation.CompareAndSwap(nil, &msg)
			}
			seen.Add(1)
		}
	})
	defer func() {
		close(stop)
		wg.Wait()
	}()

	h.Upload(t, content, meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "64.1"})
	meshtest.WaitFor(t, converge, "an eighth of the blob through the proxy", func() error {
		if n := px.blobBytes.Load(); n < size/8 {
			return fmt.Errorf("%d bytes", n)
		}
		return nil
	})
	d.Kill(t)
	if n := px.blobBytes.Load(); n >= size {
		t.Fatalf("the whole blob (%d bytes) had passed before the kill; the test needs a kill mid-transfer", n)
	}
	if _, err := os.Stat(d.BlobFile(digest)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after a kill mid-transfer: want no blob file at %s, got %v", d.BlobFile(digest), err)
	}

	d.Start(t)
	meshtest.WaitFor(t, converge, "the patch at the restarted downstream", func() error {
		return wantListed(t, d, digest, []string{"edge"})
	})
	got, err := d.FetchBlob(context.Background(), digest, admin)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != http.StatusOK || got.Digest != digest || got.Size != size {
		t.Fatalf("blob after recovery: want 200 with %d bytes hashing to %s, got %+v", size, digest, got)
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close
	if v := violation.Load(); v != nil {
		t.Fatal(*v)
	}
	if seen.Load() < 10 {
		t.Fatalf("the watcher looked only %d times; it proved nothing", seen.Load())
	}
}

// checkWhole looks once at the downstream: the blob, if served, must be
// whole; the patch, if listed, must have its whole blob. It returns what
// was wrong, or "".
func checkWhole(d *meshtest.Node, admin, digest string, size int64) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out struct{ Patches []catalog.Patch }
	err := d.Call(ctx, http.MethodGet, "/v1/admin/patches", admin, nil, &out)
	listed := err == nil && slices.ContainsFunc(out.Patches, func(p catalog.Patch) bool { return p.Digest == digest })
	got, err := d.FetchBlob(ctx, digest, admin)
	switch {
	case err != nil:
		return "" // down, or killed mid-answer
	case got.Status == http.StatusOK && (got.Digest != digest || got.Size != size):
		return fmt.Sprintf("served a blob of %d bytes hashing to %s, want %d bytes hashing to %s", got.Size, got.Digest, size, digest)
	case got.Status != http.StatusOK && got.Status != http.StatusNotFound:
		return fmt.Sprintf("blob answered %d, want 404 or 200", got.Status)
	case listed && got.Status != http.StatusOK:
		return fmt.Sprintf("lists the patch but answers %d for its blob", got.Status)
	}
	return ""
}

// A downstream killed with SIGKILL again and again while it applies
// hundreds of events ends up with the hub's catalog for its tiers, each
// event logged once, and every blob whole.
func TestCrashDuringApply(t *testing.T) {
	t.Parallel()
	const patches = 300
	tiers := []string{"edge", "beta"}
	m := meshtest.New(t)
	h := hub(m)
	spec := pullSpec(t, "downstream", node.RoleRelay, h.URL, h, tiers...)
	spec.Configure = func(c *node.Config) {
		// Many small transactions, one blob at a time: many moments
		// for a kill to land in.
		c.Sync.BatchSize = 5
		c.Sync.Parallel = 1
	}
	d := m.Add(spec)

	var digests []string
	for i := range patches {
		p := h.Upload(t, randomBytes(t, 1<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: fmt.Sprintf("1.%d", i+1)})
		digests = append(digests, p.Digest)
		if i%3 == 0 {
			h.Promote(t, p.Digest, "beta")
		}
	}

	d.Start(t)
	admin := d.Admin(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	const kills = 6
	midSync := 0
	for k := range kills {
		time.Sleep(time.Duration(50+rng.IntN(400)) * time.Millisecond)
		if k == kills/2 {
			// Withdrawals while the downstream is still catching up:
			// some land before the patch does, some after.
			for i := 0; i < patches; i += 10 {
				h.Withdraw(t, digests[i])
			}
		}
		st, err := syncing(d, admin)
		if err == nil && st {
			midSync++
		}
		d.Kill(t)
		d.Start(t)
	}
	t.Logf("%d of %d kills landed while the downstream was behind", midSync, kills)
	if midSync == 0 {
		t.Fatal("no kill landed while the downstream was syncing; the test proved nothing")
	}

	for _, tier := range tiers {
		hubHead := len(h.FeedRecords(t, h.SyncToken(t, tier, "check-"+tier)))
		meshtest.WaitFor(t, converge, fmt.Sprintf("the %s link at hub_seq %d", tier, hubHead), func() error {
			if l := d.Link(t, tier); l.HubSeq != int64(hubHead) || l.State != federation.LinkSynced {
				return fmt.Errorf("link %+v", l)
			}
			return nil
		})
	}
	wantSameCatalog(t, h, d, tiers)

	// The downstream's own feed: every hub event once, in order.
	for _, tier := range tiers {
		hubRecs := h.FeedRecords(t, h.SyncToken(t, tier, "again-"+tier))
		recs := d.FeedRecords(t, d.SyncToken(t, tier, "check-"+tier))
		if len(recs) != len(hubRecs) {
			t.Errorf("feed of %s downstream: want %d events, got %d", tier, len(hubRecs), len(recs))
		}
		for i, r := range recs {
			if r.TierSeq != int64(i+1) || r.Tier != tier {
				t.Fatalf("feed of %s downstream: event %d has hub seq %d of tier %s, want %d of %s", tier, i, r.TierSeq, r.Tier, i+1, tier)
			}
			if i < len(hubRecs) && (r.Type != hubRecs[i].Type || r.Patch.Digest != hubRecs[i].Patch.Digest) {
				t.Fatalf("feed of %s downstream: event %d is %s %s, the hub's is %s %s", tier, i+1, r.Type, r.Patch.Digest, hubRecs[i].Type, hubRecs[i].Patch.Digest)
			}
		}
	}

	// Every patch the downstream offers has its whole blob.
	for _, p := range d.Patches(t, nil) {
		got, err := d.FetchBlob(context.Background(), p.Digest, admin)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != http.StatusOK || got.Digest != p.Digest || got.Size != p.Size {
			t.Fatalf("blob of listed patch %s: want 200 with %d bytes hashing to it, got %+v", p.Digest, p.Size, got)
		}
	}
}

// syncing reports whether any link of n is behind its upstream.
func syncing(n *meshtest.Node, admin string) (bool, error) {
	var st federation.SyncStatusResponse
	if err := n.Call(context.Background(), http.MethodGet, "/v1/sync/status", admin, nil, &st); err != nil {
		return false, err
	}
	for _, l := range st.Links {
		// Lag is known once a round has read the upstream's head; a
		// link still starting counts as not behind, so a kill is never
		// counted as mid-sync when it may not have been.
		if l.LagEvents > 0 {
			return true, nil
		}
	}
	return false, nil
}

// wantSameCatalog wants the downstream to offer exactly what the hub
// offers on tiers, and to hold no patch the hub withdrew as available.
func wantSameCatalog(t *testing.T, h, d *meshtest.Node, tiers []string) {
	t.Helper()
	all := url.Values{"withdrawn": {"true"}}
	hubAll := map[string]catalog.Patch{}
	for _, p := range h.Patches(t, all) {
		hubAll[p.Digest] = p
	}
	for _, tier := range tiers {
		want := digestsOf(h.Patches(t, url.Values{"tier": {tier}}))
		got := digestsOf(d.Patches(t, url.Values{"tier": {tier}}))
		if !slices.Equal(want, got) {
			t.Errorf("tier %s: the hub offers %d patches, the downstream %d; first differences: %v", tier, len(want), len(got), firstDiff(want, got))
		}
	}
	for _, p := range d.Patches(t, all) {
		hp, ok := hubAll[p.Digest]
		switch {
		case !ok:
			t.Errorf("downstream holds %s, which the hub never had", p.Digest)
		case hp.Withdrawn != p.Withdrawn:
			t.Errorf("%s: withdrawn %v at the hub, %v downstream", p.Digest, hp.Withdrawn, p.Withdrawn)
		case hp.Version != p.Version || hp.Size != p.Size:
			t.Errorf("%s: version %s size %d at the hub, %s %d downstream", p.Digest, hp.Version, hp.Size, p.Version, p.Size)
		}
	}
}

func digestsOf(ps []catalog.Patch) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Digest
	}
	slices.Sort(out)
	return out
}

// firstDiff names up to three digests in one list and not the other.
func firstDiff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) && len(out) < 3 {
			out = append(out, "only at the hub: "+x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) && len(out) < 6 {
			out = append(out, "only downstream: "+x)
		}
	}
	return out
}
