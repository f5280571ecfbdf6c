// Package blobtest is the contract every blob driver must pass: one suite,
// run against each real backend, so that the api and replication can rely on
// the same behaviour from all of them.
//
// It owns the behaviour a driver promises through the blob interfaces and
// blob.Put: nothing partial or unverified is ever visible, a failed upload
// leaves nothing behind, readers seek, concurrent uploads of one digest
// converge on one copy, and large blobs stream in bounded memory. It does
// not test a driver's own layout or crash recovery; each driver's tests do.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/patchmesh/patchmesh/blob"
)

// Options tunes the suite for one driver.
type Options struct {
	// Leftovers counts the staged, uncommitted data s still holds (temp
	// files, upload rows, chunks of no blob). When set, every failed upload
	// must leave it at zero; when nil those checks are skipped.
	Leftovers func(t *testing.T, s blob.Store) int
	// LargeSize is the size of the blob streamed in the bounded-memory
	// test; 0 means 64 MiB.
	LargeSize int64
}

// Run runs the contract suite. open must return a new, empty store each
// time it is called; register its cleanup with t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) blob.Store) {
	RunWith(t, open, Options{})
}

// RunWith runs the contract suite with driver-specific options.
func RunWith(t *testing.T, open func(t *testing.T) blob.Store, opts Options) {
	if opts.LargeSize == 0 {
		opts.LargeSize = 64 << 20
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s blob.Store, opts Options)
	}{
		{"PutOpenStatRoundTrip", testRoundTrip},
		{"MissingDigestIsNotFound", testMissing},
		{"BadDigestStringRejected", testBadDigest},
		{"UncommittedWriteInvisible", testUncommittedInvisible},
		{"CorruptUploadLeavesNothing", testCorrupt},
		{"ReaderErrorLeavesNothing", testReaderError},
		{"CancelledContextLeavesNothing", testCancelled},
		{"RangeBySeek", testRange},
		{"ConcurrentPutsOfOneDigest", testConcurrentPuts},
		{"PutTwiceKeepsOneCopy", testPutTwice},
		{"Remove", testRemove},
		{"EnumerateInDigestOrder", testEnumerate},
		{"EnumerateStopsOnError", testEnumerateStops},
		{"LargeBlobBoundedMemory", testLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t), opts)
		})
	}
}

// content returns n deterministic, incompressible-looking bytes for seed.
func content(seed uint64, n int) []byte {
	b := make([]byte, n)
	if _, err := io.ReadFull(NewReader(seed, int64(n)), b); err != nil {
		panic(err)
	}
	return b
}

func put(t *testing.T, s blob.Store, b []byte) blob.Digest {
	t.Helper()
	d := blob.FromBytes(b)
	info, err := blob.Put(context.Background(), s, d, bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Put(%d bytes): %v", len(b), err)
	}
	if info.Digest != d || info.Size != int64(len(b)) {
		t.Fatalf("Put returned %+v, want digest %s size %d", info, d, len(b))
	}
	return d
}

func readAll(t *testing.T, s blob.Store, d blob.Digest) ([]byte, blob.Info) {
	t.Helper()
	r, info, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatalf("Open(%s): %v", d, err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading %s: %v", d, err)
	}
	return got, info
}

// assertAbsent checks that d is invisible through every read path and, if
// the driver can tell, that no staged data remains.
func assertAbsent(t *testing.T, s blob.Store, d blob.Digest, opts Options) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat(%s) error = %v, want ErrNotFound", d, err)
	}
	if r, _, err := s.Open(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		if err == nil {
			r.Close()
		}
		t.Errorf("Open(%s) error = %v, want ErrNotFound", d, err)
	}
	if got := enumerate(t, s); len(got) != 0 {
		t.Errorf("Enumerate lists %d blobs (%v), want none", len(got), got)
	}
	if opts.Leftovers != nil {
		if n := opts.Leftovers(t, s); n != 0 {
			t.Errorf("%d staged items left behind, want 0", n)
		}
	}
}

func enumerate(t *testing.T, s blob.Store) []blob.Info {
	t.Helper()
	var out []blob.Info
	err := s.Enumerate(context.Background(), func(i blob.Info) error {
		if len(out) > 100000 {
			return errors.New("enumeration does not end")
		}
		out = append(out, i)
		return nil
	})
	if err != nil {
		t.Fatalf("Enumerate: %v", err)
	}
	return out
}

func testRoundTrip(t *testing.T, s blob.Store, _ Options) {
	for _, size := range []int{0, 1, 4096, 100003, 3<<20 + 17} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			want := content(uint64(size), size)
			d := put(t, s, want)
			got, info := readAll(t, s, d)
			if !bytes.Equal(got, want) {
				t.Fatalf("read back %d bytes (digest %s), want %d bytes (digest %s)",
					len(got), blob.FromBytes(got), len(want), d)
			}
			st, err := s.Stat(context.Background(), d)
			if err != nil {
				t.Fatalf("Stat: %v", err)
			}
			for _, i := range []blob.Info{info, st} {
				if i.Digest != d || i.Size != int64(size) || i.Modified.IsZero() {
					t.Errorf("info = %+v, want digest %s, size %d, a modification time", i, d, size)
				}
			}
		})
	}
}

func testMissing(t *testing.T, s blob.Store, opts Options) {
	assertAbsent(t, s, blob.FromBytes([]byte("never stored")), opts)
	if err := s.Remove(context.Background(), blob.FromBytes([]byte("never stored"))); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Remove of a missing blob: error = %v, want ErrNotFound", err)
	}
}

func testBadDigest(t *testing.T, s blob.Store, opts Options) {
	ctx := context.Background()
	good := blob.FromBytes([]byte("x")).Hex()
	bad := []string{
		"",
		good,                                     // no algorithm
		"sha256:",                                // no hex
		"sha256:" + good[:63],                    // short
		"sha256:" + good + "0",                   // long
		"sha256:" + strings.ToUpper(good),        // upper case
		"md5:" + good,                            // other algorithm
		"sha256:../../" + good[:58],              // path traversal
		"sha256:" + good[:62] + "/x",             // separator
		"sha256:" + good[:63] + "\x00",           // NUL
		"SHA256:" + good,                         // prefix case
		" sha256:" + good,                        // padding
		"sha256:" + good[:32] + "\n" + good[:31], // newline
	}
	for _, s0 := range bad {
		d := blob.Digest(s0)
		if _, err := blob.Put(ctx, s, d, strings.NewReader("x")); !errors.Is(err, blob.ErrInvalidDigest) {
			t.Errorf("Put(%q) error = %v, want ErrInvalidDigest", s0, err)
		}
		if w, err := s.Create(ctx, d); !errors.Is(err, blob.ErrInvalidDigest) {
			if err == nil {
				w.Abort()
			}
			t.Errorf("Create(%q) error = %v, want ErrInvalidDigest", s0, err)
		}
		if r, _, err := s.Open(ctx, d); !errors.Is(err, blob.ErrInvalidDigest) {
			if err == nil {
				r.Close()
			}
			t.Errorf("Open(%q) error = %v, want ErrInvalidDigest", s0, err)
		}
		if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrInvalidDigest) {
			t.Errorf("Stat(%q) error = %v, want ErrInvalidDigest", s0, err)
		}
		if err := s.Remove(ctx, d); !errors.Is(err, blob.ErrInvalidDigest) {
			t.Errorf("Remove(%q) error = %v, want ErrInvalidDigest", s0, err)
		}
	}
	if got := enumerate(t, s); len(got) != 0 {
		t.Errorf("after bad digests Enumerate lists %v, want nothing", got)
	}
	if opts.Leftovers != nil {
		if n := opts.Leftovers(t, s); n != 0 {
			t.Errorf("%d staged items left behind by bad digests, want 0", n)
		}
	}
}

func testUncommittedInvisible(t *testing.T, s blob.Store, opts Options) {
	ctx := context.Background()
	b := content(7, 300000)
	d := blob.FromBytes(b)
	w, err := s.Create(ctx, d)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat of a written, uncommitted blob: error = %v, want ErrNotFound", err)
	}
	if got := enumerate(t, s); len(got) != 0 {
		t.Errorf("Enumerate lists uncommitted blobs %v, want none", got)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	got, _ := readAll(t, s, d)
	if !bytes.Equal(got, b) {
		t.Fatalf("after Commit read %d bytes, want the %d written", len(got), len(b))
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort after Commit: %v, want a no-op", err)
	}
	if _, err := s.Stat(ctx, d); err != nil {
		t.Errorf("Abort after Commit removed the blob: Stat error = %v", err)
	}
	if opts.Leftovers != nil {
		if n := opts.Leftovers(t, s); n != 0 {
			t.Errorf("%d staged items left after Commit, want 0", n)
		}
	}
}

func testCorrupt(t *testing.T, s blob.Store, opts Options) {
	ctx := context.Background()
	want := content(11, 2<<20+5)
	d := blob.FromBytes(want)
	cases := []struct {
		name string
		body []byte
	}{
		{"one byte flipped", func() []byte { b := bytes.Clone(want); b[len(b)/2] ^= 1; return b }()},
		{"truncated", want[:len(want)-1]},
		{"extended", append(bytes.Clone(want), 0)},
		{"empty", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := blob.Put(ctx, s, d, bytes.NewReader(tc.body))
			if !errors.Is(err, blob.ErrDigestMismatch) {
				t.Fatalf("Put of %s bytes: error = %v, want ErrDigestMismatch", tc.name, err)
			}
			assertAbsent(t, s, d, opts)
		})
	}
}

// failingReader yields n bytes of content, then err.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func testReaderError(t *testing.T, s blob.Store, opts Options) {
	b := content(13, 3<<20)
	d := blob.FromBytes(b)
	errBroken := errors.New("connection reset by test")
	r := &failingReader{r: bytes.NewReader(b[:len(b)/2+3]), err: errBroken}
	if _, err := blob.Put(context.Background(), s, d, r); !errors.Is(err, errBroken) {
		t.Fatalf("Put from a failing reader: error = %v, want the reader's error", err)
	}
	assertAbsent(t, s, d, opts)
}

// cancellingReader cancels its context once it has passed after bytes.
type cancellingReader struct {
	r      io.Reader
	read   int
	after  int
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	if c.read >= c.after {
		c.cancel()
	}
	return n, err
}

func testCancelled(t *testing.T, s blob.Store, opts Options) {
	b := content(17, 3<<20)
	d := blob.FromBytes(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := &cancellingReader{r: bytes.NewReader(b), after: len(b) / 2, cancel: cancel}
	if _, err := blob.Put(ctx, s, d, r); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a context cancelled mid-stream: error = %v, want context.Canceled", err)
	}
	assertAbsent(t, s, d, opts)
}

func testRange(t *testing.T, s blob.Store, _ Options) {
	const size = 5<<20/2 + 1234 // crosses 1 MiB and many smaller chunk bounds
	b := content(19, size)
	d := put(t, s, b)
	r, _, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()

	// Each step seeks, then reads n bytes; steps run in order on one
	// reader, as net/http does for a multi-range answer.
	steps := []struct {
		offset int64
		whence int
		wantAt int64 // absolute position the seek must report
		n      int
	}{
		{0, io.SeekEnd, size, 0}, // how net/http learns the size
		{0, io.SeekStart, 0, 10},
		{1<<20 - 5, io.SeekStart, 1<<20 - 5, 10}, // across the 1 MiB bound
		{65536 - 1, io.SeekStart, 65535, 3},      // across a 64 KiB bound
		{65537*3 - 2, io.SeekStart, 65537*3 - 2, 70000},
		{100, io.SeekCurrent, 65537*3 - 2 + 70000 + 100, 1},
		{-1, io.SeekEnd, size - 1, 1},
		{-(1<<20 + 3), io.SeekEnd, size - (1<<20 + 3), 1<<20 + 3}, // tail across a bound
		{12345, io.SeekStart, 12345, 2 << 20},                     // long read spanning chunks
		{0, io.SeekStart, 0, size},                                // whole blob after seeking back
		{-200, io.SeekCurrent, size - 200, 200},
	}
	for i, st := range steps {
		at, err := r.Seek(st.offset, st.whence)
		if err != nil || at != st.wantAt {
			t.Fatalf("step %d: Seek(%d, %d) = %d, %v; want %d, nil", i, st.offset, st.whence, at, err, st.wantAt)
		}
		got := make([]byte, st.n)
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("step %d: reading %d bytes at %d: %v", i, st.n, at, err)
		}
		if want := b[at : at+int64(st.n)]; !bytes.Equal(got, want) {
			t.Fatalf("step %d: %d bytes at %d differ from the stored bytes", i, st.n, at)
		}
	}

	// At and past the end a read reports io.EOF, not an error or bytes.
	for _, off := range []int64{size, size + 1, size + 1<<20} {
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			t.Fatalf("Seek to %d (at or past the end): %v, want nil", off, err)
		}
		n, err := r.Read(make([]byte, 10))
		if n != 0 || err != io.EOF {
			t.Errorf("Read at %d of a %d-byte blob = %d, %v; want 0, io.EOF", off, size, n, err)
		}
	}
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Errorf("Seek to -1 succeeded, want an error")
	}
	if _, err := r.Seek(-(size + 1), io.SeekEnd); err == nil {
		t.Errorf("Seek before the start from the end succeeded, want an error")
	}
}

func testConcurrentPuts(t *testing.T, s blob.Store, opts Options) {
	const writers = 16
	b := content(23, 1<<20+77)
	d := blob.FromBytes(b)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = blob.Put(context.Background(), s, d, bytes.NewReader(b))
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Put %d of %d: %v, want nil", i, writers, err)
		}
	}
	got, _ := readAll(t, s, d)
	if !bytes.Equal(got, b) {
		t.Fatalf("after concurrent puts read %d bytes (digest %s), want %d (digest %s)", len(got), blob.FromBytes(got), len(b), d)
	}
	if list := enumerate(t, s); len(list) != 1 || list[0].Digest != d || list[0].Size != int64(len(b)) {
		t.Errorf("Enumerate after concurrent puts = %+v, want exactly %s of %d bytes", list, d, len(b))
	}
	if opts.Leftovers != nil {
		if n := opts.Leftovers(t, s); n != 0 {
			t.Errorf("%d staged items left after concurrent puts, want 0", n)
		}
	}
}

func testPutTwice(t *testing.T, s blob.Store, opts Options) {
	b := content(29, 200000)
	d := put(t, s, b)
	put(t, s, b)
	if list := enumerate(t, s); len(list) != 1 || list[0].Digest != d {
		t.Errorf("Enumerate after two puts = %+v, want exactly %s", list, d)
	}
	if opts.Leftovers != nil {
		if n := opts.Leftovers(t, s); n != 0 {
			t.Errorf("%d staged items left after a repeated put, want 0", n)
		}
	}
}

func testRemove(t *testing.T, s blob.Store, opts Options) {
	ctx := context.Background()
	keep := put(t, s, content(31, 1000))
	b := content(37, 150000)
	d := put(t, s, b)
	if err := s.Remove(ctx, d); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat after Remove: error = %v, want ErrNotFound", err)
	}
	if r, _, err := s.Open(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		if err == nil {
			r.Close()
		}
		t.Errorf("Open after Remove: error = %v, want ErrNotFound", err)
	}
	if err := s.Remove(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("second Remove: error = %v, want ErrNotFound", err)
	}
	if list := enumerate(t, s); len(list) != 1 || list[0].Digest != keep {
		t.Errorf("Enumerate after Remove = %+v, want only %s", list, keep)
	}
	// A removed digest can be stored again.
	put(t, s, b)
	if got, _ := readAll(t, s, d); !bytes.Equal(got, b) {
		t.Errorf("re-put after Remove read back %d bytes, want %d", len(got), len(b))
	}
}

func testEnumerate(t *testing.T, s blob.Store, _ Options) {
	if list := enumerate(t, s); len(list) != 0 {
		t.Fatalf("a new store enumerates %v, want nothing", list)
	}
	want := map[blob.Digest]int64{}
	for i := range 40 {
		b := content(uint64(1000+i), 10+i*37)
		want[put(t, s, b)] = int64(len(b))
	}
	list := enumerate(t, s)
	if len(list) != len(want) {
		t.Fatalf("Enumerate lists %d blobs, want %d", len(list), len(want))
	}
	for i, info := range list {
		if i > 0 && list[i-1].Digest >= info.Digest {
			t.Errorf("Enumerate order: %s came before %s, want ascending digests", list[i-1].Digest, info.Digest)
		}
		if size, ok := want[info.Digest]; !ok || size != info.Size {
			t.Errorf("Enumerate gave %s of %d bytes, want a stored digest with its size (%d, stored %v)", info.Digest, info.Size, size, ok)
		}
		if info.Modified.IsZero() {
			t.Errorf("Enumerate gave %s with no modification time", info.Digest)
		}
	}
	if !slices.IsSortedFunc(list, func(a, b blob.Info) int { return strings.Compare(string(a.Digest), string(b.Digest)) }) {
		t.Errorf("Enumerate is not in digest order")
	}
}

func testEnumerateStops(t *testing.T, s blob.Store, _ Options) {
	for i := range 5 {
		put(t, s, content(uint64(2000+i), 100))
	}
	errStop := errors.New("stop here")
	calls := 0
	err := s.Enumerate(context.Background(), func(blob.Info) error {
		calls++
		if calls == 2 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) || calls != 2 {
		t.Errorf("Enumerate with fn failing on call 2: %d calls, error %v; want 2 calls and fn's error", calls, err)
	}
}

// heapBytes returns the bytes of heap objects, live or not yet swept. It
// reads runtime/metrics, which does not stop the world, so the sampling
// costs the transfer little.
func heapBytes() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// heapPeak samples the heap every 256 KiB that passes through it.
type heapPeak struct {
	peak  int64
	since int64
}

func (h *heapPeak) saw(n int) {
	h.since += int64(n)
	if h.since >= 256<<10 {
		h.since = 0
		h.peak = max(h.peak, heapBytes())
	}
}

type sampledReader struct {
	r io.Reader
	h *heapPeak
}

func (s sampledReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.h.saw(n)
	return n, err
}

type sampledWriter struct {
	w io.Writer
	h *heapPeak
}

func (s sampledWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.h.saw(n)
	return n, err
}

func testLarge(t *testing.T, s blob.Store, opts Options) {
	size := opts.LargeSize
	const seed = 0x9e3779b97f4a7c15
	h := sha256.New()
	if _, err := io.Copy(h, NewReader(seed, size)); err != nil {
		t.Fatal(err)
	}
	d := blob.Digest("sha256:" + hex.EncodeToString(h.Sum(nil)))
	// Buffering the whole blob would need at least size bytes of heap; a
	// streaming driver needs a few chunks. A quarter of the blob tells the
	// two apart with room for garbage the collector has not yet reclaimed.
	bound := size / 4
	// The bound counts garbage too, so the collector must be running at
	// its usual pace even if the environment turned it down or off.
	defer debug.SetGCPercent(debug.SetGCPercent(100))

	runtime.GC()
	base := heapBytes()
	hp := &heapPeak{peak: base}
	info, err := blob.Put(context.Background(), s, d, sampledReader{NewReader(seed, size), hp})
	if err != nil {
		t.Fatalf("Put of %d bytes: %v", size, err)
	}
	if info.Size != size {
		t.Errorf("Put size = %d, want %d", info.Size, size)
	}
	t.Logf("put %d bytes: heap peak grew %d bytes (bound %d)", size, hp.peak-base, bound)
	if grew := hp.peak - base; grew > bound {
		t.Errorf("heap grew by %d bytes while putting a %d-byte blob, want at most %d (streamed, not buffered)", grew, size, bound)
	}

	runtime.GC()
	base = heapBytes()
	hp = &heapPeak{peak: base}
	r, info, err := s.Open(context.Background(), d)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	h.Reset()
	n, err := io.Copy(sampledWriter{h, hp}, r)
	if err != nil {
		t.Fatalf("reading %d bytes back: %v", size, err)
	}
	if n != size || info.Size != size {
		t.Errorf("read back %d bytes, info size %d; want %d", n, info.Size, size)
	}
	if got := blob.Digest("sha256:" + hex.EncodeToString(h.Sum(nil))); got != d {
		t.Errorf("read back digest %s, want %s", got, d)
	}
	t.Logf("read %d bytes: heap peak grew %d bytes (bound %d)", size, hp.peak-base, bound)
	if grew := hp.peak - base; grew > bound {
		t.Errorf("heap grew by %d bytes while reading a %d-byte blob, want at most %d (streamed, not buffered)", grew, size, bound)
	}
}

// NewReader returns a reader of n deterministic pseudo-random bytes for
// seed, generated as it is read, so tests and benchmarks can stream blobs
// of any size without holding them.
func NewReader(seed uint64, n int64) io.Reader {
	return &genReader{state: seed, left: n}
}

type genReader struct {
	state uint64
	left  int64
	buf   [8]byte
	have  int // unread bytes at the end of buf
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n := 0
	for n < len(p) {
		if g.have == 0 {
			// splitmix64: fast, and no two seeds share a long prefix.
			g.state += 0x9e3779b97f4a7c15
			z := g.state
			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
			z = (z ^ (z >> 27)) * 0x94d049bb133111eb
			z ^= z >> 31
			for i := range 8 {
				g.buf[i] = byte(z >> (8 * i))
			}
			g.have = 8
		}
		c := copy(p[n:], g.buf[8-g.have:])
		g.have -= c
		n += c
	}
	g.left -= int64(n)
	return n, nil
}

// BenchPut measures blob.Put of size-byte blobs into s. Each iteration puts
// a new digest (so no put is short-cut by an existing copy) and removes it
// again outside the timer.
func BenchPut(b *testing.B, s blob.Store, size int) {
	ctx := context.Background()
	data := content(41, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var i uint64
	for b.Loop() {
		b.StopTimer()
		i++
		for j := range 8 {
			data[j] = byte(i >> (8 * j))
		}
		d := blob.FromBytes(data)
		b.StartTimer()
		if _, err := blob.Put(ctx, s, d, bytes.NewReader(data)); err != nil {
			b.Fatalf("Put: %v", err)
		}
		b.StopTimer()
		if err := s.Remove(ctx, d); err != nil {
			b.Fatalf("Remove: %v", err)
		}
		b.StartTimer()
	}
}

// BenchRead measures opening a size-byte blob and reading it to the end.
func BenchRead(b *testing.B, s blob.Store, size int) {
	ctx := context.Background()
	data := content(43, size)
	d := blob.FromBytes(data)
	if _, err := blob.Put(ctx, s, d, bytes.NewReader(data)); err != nil {
		b.Fatalf("Put: %v", err)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		r, _, err := s.Open(ctx, d)
		if err != nil {
			b.Fatalf("Open: %v", err)
		}
		n, err := io.Copy(io.Discard, r)
		r.Close()
		if err != nil || n != int64(size) {
			b.Fatalf("read %d bytes, %v; want %d, nil", n, err, size)
		}
	}
}
