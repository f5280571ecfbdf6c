// Package objblobtest is the suite every object-store driver (s3blob,
// swiftblob) passes on top of blob/blobtest: nodes sharing one bucket,
// sweeping crash leftovers, the health probe, and faults injected by a proxy
// in front of the real server (a store that stops mid-upload or
// mid-download, answers 500 or answers slowly).
package objblobtest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/blob/blobtest"
	"github.com/patchmesh/patchmesh/blob/objblob"
	"github.com/patchmesh/patchmesh/internal/objtest"
)

// Setup says how to open one store.
type Setup struct {
	// Like is a config from Driver.Config: open on the same bucket. Nil:
	// a fresh bucket.
	Like         any
	Node         string
	Shared       bool
	AbandonAfter time.Duration
	// Proxy, when set, is the base URL of a fault proxy to reach the
	// server through, with ResponseTimeout and HTTPClient for the driver.
	Proxy           string
	ResponseTimeout time.Duration
	HTTPClient      *http.Client
	// PageSize, when set, is the most keys one listing request returns.
	PageSize int
}

// Driver opens stores of one driver.
type Driver struct {
	Open func(t *testing.T, s Setup) *objblob.Store
	// Config returns a config for a fresh bucket, for Setup.Like.
	Config func(t *testing.T) any
	// Target is the server's scheme://host:port in cfg, for a proxy.
	Target func(cfg any) string
}

// Run runs the suite.
func Run(t *testing.T, d Driver) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Driver)
	}{
		{"SharedBlobVisibleToOtherNode", testSharedVisible},
		{"SharedConcurrentUploadsOfOneDigest", testSharedConcurrent},
		{"SharedDeleteKeepsBlobOthersName", testSharedDelete},
		{"SharedDeleteRacingUpload", testSharedRace},
		{"SweepRemovesOnlyOldStaging", testSweep},
		{"EnumerateAcrossPages", testPaging},
		{"StoreStopsMidUpload", testCutUpload},
		{"StoreStopsMidDownload", testCutDownload},
		{"ServerErrorsRetriedBounded", testRetries},
		{"SlowAnswersTimeOutWithoutLeaks", testSlow},
		{"ProbeSeesStoreDown", testProbe},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, d) })
	}
}

func content(seed uint64, n int) []byte {
	b := make([]byte, n)
	io.ReadFull(blobtest.NewReader(seed, int64(n)), b)
	return b
}

func put(t *testing.T, s blob.Store, b []byte) blob.Digest {
	t.Helper()
	d := blob.FromBytes(b)
	if _, err := blob.Put(context.Background(), s, d, bytes.NewReader(b)); err != nil {
		t.Fatalf("Put: %v", err)
	}
	return d
}

func read(t *testing.T, s blob.Store, d blob.Digest) []byte {
	t.Helper()
	r, _, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatalf("Open(%s): %v", d, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", d, err)
	}
	return b
}

func twoNodes(t *testing.T, d Driver) (a, b *objblob.Store) {
	cfg := d.Config(t)
	return d.Open(t, Setup{Like: cfg, Node: "node-a", Shared: true}), d.Open(t, Setup{Like: cfg, Node: "node-b", Shared: true})
}

func claims(t *testing.T, s *objblob.Store, d blob.Digest) []string {
	t.Helper()
	c, err := s.Claims(context.Background(), d)
	if err != nil {
		t.Fatalf("Claims: %v", err)
	}
	slices.Sort(c)
	return c
}

func testSharedVisible(t *testing.T, d Driver) {
	a, b := twoNodes(t, d)
	want := content(1, 300000)
	dg := put(t, a, want)
	if got := read(t, b, dg); !bytes.Equal(got, want) {
		t.Fatalf("node b read %d bytes of a's blob, want the %d a wrote", len(got), len(want))
	}
	var list []blob.Digest
	if err := b.Enumerate(context.Background(), func(i blob.Info) error { list = append(list, i.Digest); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(list, []blob.Digest{dg}) {
		t.Errorf("node b enumerates %v, want [%s]", list, dg)
	}
}

func testSharedConcurrent(t *testing.T, d Driver) {
	a, b := twoNodes(t, d)
	want := content(2, 6<<20+3) // more than one S3 part
	dg := blob.FromBytes(want)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() { _, errs[i] = blob.Put(context.Background(), s, dg, bytes.NewReader(want)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Put %d: %v", i, err)
		}
	}
	if got := read(t, b, dg); !bytes.Equal(got, want) {
		t.Fatalf("after concurrent puts from two nodes read %d bytes, want %d", len(got), len(want))
	}
	if c := claims(t, a, dg); !slices.Equal(c, []string{"node-a", "node-b"}) {
		t.Errorf("claims = %v, want both nodes", c)
	}
	if n, err := a.Staged(context.Background()); err != nil || n != 0 {
		t.Errorf("staged entries after the puts = %d, %v; want 0", n, err)
	}
}

func testSharedDelete(t *testing.T, d Driver) {
	ctx := context.Background()
	a, b := twoNodes(t, d)
	want := content(3, 5000)
	dg := put(t, a, want)
	// b finds the blob present (as replication does) and claims it
	// rather than uploading it again.
	if _, err := b.Stat(ctx, dg); err != nil {
		t.Fatal(err)
	}
	if err := b.Claim(ctx, dg); err != nil {
		t.Fatalf("Claim: %v", err)
	}
	if err := a.Remove(ctx, dg); err != nil {
		t.Fatalf("a.Remove: %v", err)
	}
	if got := read(t, b, dg); !bytes.Equal(got, want) {
		t.Fatalf("after a removed its blob, b read %d bytes, want the blob b still names", len(got))
	}
	if c := claims(t, a, dg); !slices.Equal(c, []string{"node-b"}) {
		t.Errorf("claims after a's remove = %v, want [node-b]", c)
	}
	if err := b.Remove(ctx, dg); err != nil {
		t.Fatalf("b.Remove: %v", err)
	}
	for _, s := range []*objblob.Store{a, b} {
		if _, err := s.Stat(ctx, dg); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat after both nodes removed it: %v, want ErrNotFound", err)
		}
	}
	if err := a.Remove(ctx, dg); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Remove of a blob gone everywhere: %v, want ErrNotFound", err)
	}
}

// A delete by one node racing an upload of the same digest by another must
// never leave the uploader without its blob.
func testSharedRace(t *testing.T, d Driver) {
	ctx := context.Background()
	a, b := twoNodes(t, d)
	for i := range 6 {
		want := content(uint64(100+i), 20000)
		dg := put(t, a, want)
		var wg sync.WaitGroup
		var putErr, rmErr error
		wg.Go(func() { _, putErr = blob.Put(ctx, b, dg, bytes.NewReader(want)) })
		wg.Go(func() { rmErr = a.Remove(ctx, dg) })
		wg.Wait()
		if rmErr != nil {
			t.Fatalf("round %d: a.Remove: %v", i, rmErr)
		}
		if putErr != nil {
			t.Fatalf("round %d: b's Put: %v", i, putErr)
		}
		if got := read(t, b, dg); !bytes.Equal(got, want) {
			t.Fatalf("round %d: b's blob is gone after a's racing delete", i)
		}
		if c := claims(t, b, dg); !slices.Equal(c, []string{"node-b"}) {
			t.Errorf("round %d: claims = %v, want [node-b]", i, c)
		}
	}
}

func testSweep(t *testing.T, d Driver) {
	ctx := context.Background()
	cfg := d.Config(t)
	s := d.Open(t, Setup{Like: cfg})
	// A crash leaves a staging entry no process names; write one as a
	// crashed node would have.
	staging := s.Prefix() + "staging/crashed-upload"
	if err := s.Bucket().Put(ctx, staging, []byte("left by a crash")); err != nil {
		t.Fatal(err)
	}
	young := d.Open(t, Setup{Like: cfg, AbandonAfter: time.Hour})
	if n, err := young.Staged(ctx); err != nil || n != 1 {
		t.Fatalf("a store opened with AbandonAfter 1h left %d staging entries (%v), want the young one kept", n, err)
	}

	// A delete cut short between its copy to trash and the end: the blob
	// is gone, its trash copy left, and a node still claims it. Another,
	// unclaimed, trash copy is simply removed.
	b := content(77, 4000)
	dg := blob.FromBytes(b)
	if err := s.Bucket().Put(ctx, s.Prefix()+"trash/"+dg.Hex()+"/cut-short", b); err != nil {
		t.Fatal(err)
	}
	if err := s.Bucket().Put(ctx, s.Prefix()+"refs/"+dg.Hex()+"/other-node", nil); err != nil {
		t.Fatal(err)
	}
	gone := blob.FromBytes([]byte("unclaimed"))
	if err := s.Bucket().Put(ctx, s.Prefix()+"trash/"+gone.Hex()+"/cut-short", []byte("unclaimed")); err != nil {
		t.Fatal(err)
	}
	if err := s.Bucket().Put(ctx, s.Prefix()+"probe/crashed-probe", []byte("probe")); err != nil {
		t.Fatal(err)
	}

	time.Sleep(1100 * time.Millisecond) // object stores keep modification times in seconds
	old := d.Open(t, Setup{Like: cfg, AbandonAfter: time.Millisecond})
	if n, err := old.Staged(ctx); err != nil || n != 0 {
		t.Fatalf("a store opened with AbandonAfter 1ms left %d staging entries (%v), want none", n, err)
	}
	if got := read(t, old, dg); !bytes.Equal(got, b) {
		t.Errorf("the claimed blob was not restored from its trash")
	}
	if _, err := old.Stat(ctx, gone); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("an unclaimed trash copy was restored: Stat %v, want ErrNotFound", err)
	}
	for _, p := range []string{"trash/", "probe/"} {
		var left []string
		old.Bucket().List(ctx, old.Prefix()+p, func(o objblob.ObjectInfo) error { left = append(left, o.Key); return nil })
		if len(left) != 0 {
			t.Errorf("left under %s after the sweep: %v", p, left)
		}
	}
}

func viaProxy(t *testing.T, d Driver, timeout time.Duration) (*objblob.Store, *objblob.Store, *objtest.Proxy, *http.Client) {
	cfg := d.Config(t)
	direct := d.Open(t, Setup{Like: cfg})
	p := objtest.NewProxy(t, d.Target(cfg))
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	t.Cleanup(hc.CloseIdleConnections)
	s := d.Open(t, Setup{Like: cfg, Proxy: p.URL, ResponseTimeout: timeout, HTTPClient: hc})
	return direct, s, p, hc
}

func testCutUpload(t *testing.T, d Driver) {
	ctx := context.Background()
	direct, s, p, _ := viaProxy(t, d, 5*time.Second)
	want := content(5, 12<<20)
	dg := blob.FromBytes(want)
	p.CutUpload(2 << 20)
	_, err := blob.Put(ctx, s, dg, bytes.NewReader(want))
	if err == nil {
		t.Fatal("Put through a store that stopped mid-upload succeeded, want an error")
	}
	t.Logf("error from the cut upload: %v", err)
	p.Up()
	for _, st := range []blob.Store{direct, s} {
		if _, err := st.Stat(ctx, dg); !errors.Is(err, blob.ErrNotFound) {
			t.Errorf("Stat after a cut upload: %v, want ErrNotFound (no partial blob)", err)
		}
	}
	if _, err := blob.Put(ctx, s, dg, bytes.NewReader(want)); err != nil {
		t.Fatalf("retried Put after the store came back: %v", err)
	}
	if got := read(t, direct, dg); !bytes.Equal(got, want) {
		t.Fatalf("after the retry read %d bytes, want %d", len(got), len(want))
	}
}

func testCutDownload(t *testing.T, d Driver) {
	ctx := context.Background()
	direct, s, p, _ := viaProxy(t, d, 5*time.Second)
	want := content(6, 8<<20)
	dg := put(t, direct, want)
	r, _, err := s.Open(ctx, dg)
	if err != nil {
		t.Fatal(err)
	}
	p.CutDownload(1 << 20)
	n, err := io.Copy(io.Discard, r)
	r.Close()
	if err == nil {
		t.Fatalf("reading through a store that stopped mid-download gave %d bytes and no error, want an error", n)
	}
	if n >= int64(len(want)) {
		t.Fatalf("read %d bytes of a cut download, want fewer than %d", n, len(want))
	}
	p.Up()
	if got := read(t, s, dg); !bytes.Equal(got, want) {
		t.Fatalf("reading again after the store came back gave %d bytes, want %d", len(got), len(want))
	}
}

func testRetries(t *testing.T, d Driver) {
	ctx := context.Background()
	direct, s, p, _ := viaProxy(t, d, 5*time.Second)
	dg := put(t, direct, content(7, 1000))
	p.Fail(2)
	if _, err := s.Stat(ctx, dg); err != nil {
		t.Fatalf("Stat with two 500s before success: %v, want the retries to succeed", err)
	}
	if p.Failed() != 2 {
		t.Errorf("proxy failed %d requests, want 2", p.Failed())
	}
	p.Fail(1000)
	before := p.Failed()
	_, err := s.Stat(ctx, dg)
	if err == nil || errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Stat against a store answering only 500: %v, want a server error", err)
	}
	if tries := p.Failed() - before; tries < 2 || tries > 3 {
		t.Errorf("a failing Stat made %d tries, want 2 to 3 (bounded retries)", tries)
	}
}

func testSlow(t *testing.T, d Driver) {
	ctx := context.Background()
	direct, s, p, hc := viaProxy(t, d, 300*time.Millisecond)
	dg := put(t, direct, content(8, 1000))
	if _, err := s.Stat(ctx, dg); err != nil {
		t.Fatal(err)
	}
	hc.CloseIdleConnections()
	base := runtime.NumGoroutine()
	p.Delay(3 * time.Second)
	if _, err := s.Stat(ctx, dg); err == nil {
		t.Fatal("Stat against a store answering after 3s with a 300ms response timeout succeeded, want a timeout")
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, _, err := s.Open(short, dg)
	cancel()
	if err == nil {
		t.Fatal("Open with a 200ms context against a slow store succeeded, want an error")
	}
	p.Up()
	if _, err := s.Stat(ctx, dg); err != nil {
		t.Fatalf("Stat once the store is fast again: %v", err)
	}
	hc.CloseIdleConnections()
	if n := objtest.WaitGoroutines(ctx, base+2, runtime.NumGoroutine); n > base+2 {
		t.Errorf("%d goroutines after the slow requests ended, want at most %d (no leak)", n, base+2)
	}
}

func testProbe(t *testing.T, d Driver) {
	ctx := context.Background()
	_, s, p, _ := viaProxy(t, d, 2*time.Second)
	if err := s.Probe(ctx); err != nil {
		t.Fatalf("Probe of a healthy store: %v", err)
	}
	p.Down()
	if err := s.Probe(ctx); err == nil {
		t.Fatal("Probe of a stopped store succeeded, want an error")
	}
	p.Up()
	if err := s.Probe(ctx); err != nil {
		t.Fatalf("Probe after the store came back: %v", err)
	}
	var left int
	s.Bucket().List(ctx, s.Prefix()+"probe/", func(objblob.ObjectInfo) error { left++; return nil })
	if left != 0 {
		t.Errorf("%d probe objects left behind, want 0", left)
	}
}

// Listing pages: with 3 keys a page, 11 blobs (and claims and staging
// around them) enumerate completely, in order, each once.
func testPaging(t *testing.T, d Driver) {
	ctx := context.Background()
	cfg := d.Config(t)
	s := d.Open(t, Setup{Like: cfg, Node: "pager", Shared: true, PageSize: 3})
	var want []blob.Digest
	for i := range 11 {
		want = append(want, put(t, s, content(uint64(500+i), 100+i)))
	}
	slices.Sort(want)
	var got []blob.Digest
	if err := s.Enumerate(ctx, func(i blob.Info) error { got = append(got, i.Digest); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Enumerate with 3 keys a page gave %d blobs %v, want the %d stored, in order", len(got), got, len(want))
	}
	calls := 0
	errStop := errors.New("stop")
	err := s.Enumerate(ctx, func(blob.Info) error {
		if calls++; calls == 5 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) || calls != 5 {
		t.Errorf("Enumerate stopped on page 2: %d calls, %v; want 5 calls and fn's error", calls, err)
	}
}
