package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/internal/meshtest"
	"github.com/patchmesh/patchmesh/node"
)

// watchRejections is how long a test watches a downstream keep refusing
// what it must refuse, round after round, before it is satisfied.
const watchRejections = 3 * time.Second

// An edge fetching from a relay whose copy of a blob is corrupt refuses
// the patch, says why, and keeps serving the good version it had.
func TestTamperedRelayBlob(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	h := hub(m)
	relay := pull(t, m, "relay", node.RoleRelay, h, "edge")
	e := pull(t, m, "edge-1", node.RoleEdge, relay, "edge")
	machine := e.Register(t, e.AuthToken(t, "edge", "fleet"), "machine-tamper-00000001", kernel, arch)

	good := h.Upload(t, randomBytes(t, 128<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.1"})
	meshtest.WaitFor(t, converge, "the good version at the edge", func() error {
		return wantListed(t, e, good.Digest, []string{"edge"})
	})

	// The edge is down while the next version reaches the relay, whose
	// disk then rots under it.
	e.Stop(t)
	bad := h.Upload(t, randomBytes(t, 128<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.2"})
	meshtest.WaitFor(t, converge, "the new version at the relay", func() error {
		return wantListed(t, relay, bad.Digest, []string{"edge"})
	})
	corrupt(t, relay.BlobFile(bad.Digest))
	e.Start(t)

	var link federation.LinkStatus
	meshtest.WaitFor(t, converge, "the edge to refuse the corrupt blob", func() error {
		link = e.Link(t, "edge")
		if link.RecordsRejected == 0 || link.State != federation.LinkFailing || link.LastError == "" {
			return fmt.Errorf("link %+v", link)
		}
		return nil
	})
	if ev := wantSecurityEvent(t, e, "digest_mismatch"); ev["upstream"] != relay.LinkURL() {
		t.Errorf("security event: want upstream %s, got %v", relay.LinkURL(), ev)
	}
	wantRefused(t, e, machine, good, bad, false)
}

// An edge behind a proxy that alters a record refuses it, applies nothing
// past it and keeps the good version; once the proxy stops, it catches up.
func TestTamperedFeedRecord(t *testing.T) {
	t.Parallel()
	m := meshtest.New(t)
	h := hub(m)
	relay := pull(t, m, "relay", node.RoleRelay, h, "edge")
	px := newProxy(t, m, relay)
	e := m.Start(pullSpec(t, "edge-1", node.RoleEdge, px.URL, relay, "edge"))
	machine := e.Register(t, e.AuthToken(t, "edge", "fleet"), "machine-tamper-00000002", kernel, arch)

	good := h.Upload(t, randomBytes(t, 128<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.1"})
	meshtest.WaitFor(t, converge, "the good version at the edge", func() error {
		return wantListed(t, e, good.Digest, []string{"edge"})
	})
	at := e.Link(t, "edge")

	px.tamper.Store(true)
	bad := h.Upload(t, randomBytes(t, 128<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.2"})
	// A sound record behind the altered one must wait for it.
	later := h.Upload(t, randomBytes(t, 128<<10), meshtest.PatchMeta{Kernel: kernel, Arch: arch, Version: "1.3"})
	meshtest.WaitFor(t, converge, "the edge to refuse the altered record", func() error {
		l := e.Link(t, "edge")
		if l.RecordsRejected == 0 || l.State != federation.LinkFailing {
			return fmt.Errorf("link %+v", l)
		}
		return nil
	})
	if px.tampered.Load() == 0 {
		t.Fatal("the proxy altered no record, yet the edge refused one")
	}
	ev := wantSecurityEvent(t, e, "bad_signature", "malformed")
	if ev["upstream"] != px.URL {
		t.Errorf("security event: want upstream %s (the proxy), got %v", px.URL, ev)
	}
	// The proxy alters events only: the relay listed 1.2 as pending,
	// authentic, before the altered event came, so the edge may have
	// fetched its blob early (cut-through), verified.
	wantRefused(t, e, machine, good, bad, true)
	if err := wantListed(t, e, later.Digest, []string{"edge"}); err == nil {
		t.Fatal("the edge applied 1.3, which comes after the record it refused")
	}
	if l := e.Link(t, "edge"); l.HubSeq != at.HubSeq || l.Cursor != at.Cursor {
		t.Fatalf("after refusing a record: want the link still at hub_seq %d, cursor %d; got %+v", at.HubSeq, at.Cursor, l)
	}

	px.tamper.Store(false)
	meshtest.WaitFor(t, converge, "the edge to catch up once the proxy is honest", func() error {
		for _, p := range []catalog.Patch{bad, later} {
			if err := wantListed(t, e, p.Digest, []string{"edge"}); err != nil {
				return fmt.Errorf("%s: %w", p.Version, err)
			}
		}
		return nil
	})
	if cp, ok := e.ClientPatch(t, machine, kernel, arch); !ok || cp.Digest != later.Digest {
		t.Fatalf("client patch after catching up: want %s (1.3), got %+v (found %v)", later.Digest, cp, ok)
	}
}

// corrupt flips bytes in the middle of a blob file in place, keeping its
// length, as a failing disk or an intruder would.
func corrupt(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("corrupt blob file: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	off := fi.Size() / 2
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] ^= 0xff
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
}

// wantSecurityEvent wants a sync_record_fail event in n's log with one of
// reasons, and returns it.
func wantSecurityEvent(t *testing.T, n *meshtest.Node, reasons ...string) map[string]any {
	t.Helper()
	evs := n.LogEvents(federation.EventRecordRejected)
	for _, ev := range evs {
		for _, r := range reasons {
			if ev["reason"] == r {
				return ev
			}
		}
	}
	t.Fatalf("%s: want a %s security event with reason %v, got %v", n.Name, federation.EventRecordRejected, reasons, evs)
	return nil
}

// wantRefused watches the edge for a while: it must never list bad nor
// serve its blob to its machine, and must keep offering good to it. It must
// not hold bad's blob either, unless prefetched says the edge may have
// fetched it early from an authentic pending record: then only the very
// bytes of bad's digest.
func wantRefused(t *testing.T, e *meshtest.Node, machine string, good, bad catalog.Patch, prefetched bool) {
	t.Helper()
	deadline := time.Now().Add(watchRejections)
	for time.Now().Before(deadline) {
		if err := wantListed(t, e, bad.Digest, []string{"edge"}); err == nil {
			t.Fatalf("%s lists the refused patch %s", e.Name, bad.Digest)
		}
		if cp, ok := e.ClientPatch(t, machine, kernel, arch); !ok || cp.Digest != good.Digest {
			t.Fatalf("%s: client patch while refusing 1.2: want the good %s (1.1), got %+v (found %v)", e.Name, good.Digest, cp, ok)
		}
		got, err := e.FetchBlob(context.Background(), bad.Digest, meshtest.Bearer(machine))
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != http.StatusNotFound {
			t.Fatalf("%s: refused blob for its machine: want 404, got %+v", e.Name, got)
		}
		got, err = e.FetchBlob(context.Background(), bad.Digest, e.Admin(t))
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != http.StatusNotFound && !(prefetched && got.Status == http.StatusOK && got.Digest == bad.Digest) {
			t.Fatalf("%s: refused blob with an admin macaroon: want 404, got %+v", e.Name, got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
