package pgblob

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/blob/blobtest"
	"github.com/patchmesh/patchmesh/internal/pgtest"
)

func newPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.New(t))
	if err != nil {
		t.Fatalf("pgxpool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func openWith(opts Options) func(t *testing.T) blob.Store {
	return func(t *testing.T) blob.Store {
		t.Helper()
		s, err := Open(context.Background(), newPool(t), opts)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	}
}

// leftovers counts open uploads and chunks that belong to no blob.
func leftovers(t *testing.T, bs blob.Store) int {
	t.Helper()
	var n int
	err := bs.(*Store).pool.QueryRow(context.Background(), `
		SELECT (SELECT count(*) FROM blob_uploads) +
		       (SELECT count(*) FROM blob_chunks c
		         WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.upload_id = c.upload_id))`).Scan(&n)
	if err != nil {
		t.Fatalf("counting leftovers: %v", err)
	}
	return n
}

func TestContract(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"DefaultChunks", Options{}},
		// An odd size puts chunk bounds where no power of two would, so
		// off-by-one errors in Seek and the chunk arithmetic show.
		{"OddChunks", Options{ChunkSize: 65537}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blobtest.RunWith(t, openWith(tc.opts), blobtest.Options{Leftovers: leftovers})
		})
	}
}

// A node that crashes mid-upload leaves an upload row and chunks behind.
// They must never be visible, a fresh upload (perhaps another node's, live)
// must survive the next Open, and one gone quiet for AbandonAfter must be
// swept by it; the crashed writer can then neither write nor commit.
func TestAbandonedUploadInvisibleAndSwept(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	const chunk = 4096
	s, err := Open(ctx, pool, Options{ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	b := bytes.Repeat([]byte("crash "), 3*chunk)
	d := blob.FromBytes(b)
	w, err := s.Create(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b[:len(b)-100]); err != nil {
		t.Fatal(err)
	}
	// The crash: neither Commit nor Abort.
	if n := leftovers(t, s); n < 2 {
		t.Fatalf("staged rows after writing %d chunks = %d, want the upload and its chunks", (len(b)-100)/chunk, n)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat of an uncommitted upload: error = %v, want ErrNotFound", err)
	}
	if _, _, err := s.Open(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Open of an uncommitted upload: error = %v, want ErrNotFound", err)
	}
	listed := 0
	if err := s.Enumerate(ctx, func(blob.Info) error { listed++; return nil }); err != nil || listed != 0 {
		t.Errorf("Enumerate with only an uncommitted upload: %d listed, error %v; want 0, nil", listed, err)
	}

	// A restart soon after: the upload is recent, so it may be another
	// node's live one and must be left alone.
	s2, err := Open(ctx, pool, Options{ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	if n := leftovers(t, s2); n < 2 {
		t.Fatalf("a recent upload was swept: %d staged rows left, want the upload and its chunks", n)
	}

	// Later: the upload has been quiet longer than AbandonAfter.
	if _, err := pool.Exec(ctx, `UPDATE blob_uploads SET touched_us = touched_us - $1`,
		(DefaultAbandonAfter + time.Minute).Microseconds()); err != nil {
		t.Fatal(err)
	}
	s3, err := Open(ctx, pool, Options{ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	if n := leftovers(t, s3); n != 0 {
		t.Errorf("after Open past AbandonAfter %d staged rows remain, want 0", n)
	}

	// The crashed writer, had it survived, cannot resurrect the upload.
	if _, err := w.Write(b[len(b)-100:]); err != nil {
		// Only a full chunk reaches the database; a short tail may not.
		t.Logf("write after sweep: %v", err)
	}
	if err := w.Commit(ctx); err == nil {
		t.Errorf("Commit of a swept upload succeeded, want an error")
	}
	if _, err := s3.Stat(ctx, d); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("Stat after committing a swept upload: error = %v, want ErrNotFound", err)
	}
	if n := leftovers(t, s3); n != 0 {
		t.Errorf("after the failed commit %d staged rows remain, want 0", n)
	}
}

// A write after the sweep must fail, not add chunks that nothing owns.
func TestWriteToSweptUploadFails(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	s, err := Open(ctx, pool, Options{ChunkSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Create(ctx, blob.FromBytes([]byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE blob_uploads SET touched_us = 0`); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1, nil", n, err)
	}
	if _, err := w.Write(make([]byte, 4096)); !errors.Is(err, errUploadGone) {
		t.Errorf("Write to a swept upload: error = %v, want errUploadGone", err)
	}
	w.Abort()
	if n := leftovers(t, s); n != 0 {
		t.Errorf("%d staged rows after writing to a swept upload, want 0", n)
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	pool := newPool(t)
	for _, opts := range []Options{
		{ChunkSize: -1},
		{ChunkSize: MaxChunkSize + 1},
		{AbandonAfter: -time.Second},
	} {
		if _, err := Open(context.Background(), pool, opts); err == nil {
			t.Errorf("Open(%+v) succeeded, want an error", opts)
		}
	}
}

// A blob keeps the chunk size it was written with, so a node reconfigured
// with another ChunkSize still reads (and seeks in) its old blobs.
func TestChunkSizeChangeKeepsOldBlobsReadable(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	s1, err := Open(ctx, pool, Options{ChunkSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 10007)
	for i := range b {
		b[i] = byte(i * 7)
	}
	d := blob.FromBytes(b)
	if _, err := blob.Put(ctx, s1, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, pool, Options{ChunkSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := s2.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Seek(2995, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 10)
	if _, err := r.Read(got); err != nil {
		t.Fatal(err)
	}
	if want := b[2995:3000]; !bytes.Equal(got[:5], want) {
		t.Errorf("bytes at 2995 under a new chunk size = %v, want %v", got[:5], want)
	}
}

func BenchmarkPut(b *testing.B) {
	s, err := Open(context.Background(), newPool(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	blobtest.BenchPut(b, s, 8<<20)
}

func BenchmarkRead(b *testing.B) {
	s, err := Open(context.Background(), newPool(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	blobtest.BenchRead(b, s, 8<<20)
}

// A reader must not serve bytes from a blob removed under it, nor shifted
// bytes from a damaged chunk: both are errors, never silent garbage.
func TestReaderFailsOnRemovedOrDamagedChunks(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	s, err := Open(ctx, pool, Options{ChunkSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	b := bytes.Repeat([]byte("0123456789"), 500) // 5 chunks
	d := blob.FromBytes(b)
	if _, err := blob.Put(ctx, s, d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}

	r, _, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := pool.Exec(ctx, `UPDATE blob_chunks SET data = substring(data from 2) WHERE n = 1`); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 1000)
	if _, err := r.Read(first); err != nil || !bytes.Equal(first, b[:1000]) {
		t.Fatalf("reading intact chunk 0: err %v, bytes equal %v; want nil, true", err, bytes.Equal(first, b[:1000]))
	}
	if n, err := r.Read(make([]byte, 1000)); err == nil {
		t.Errorf("reading a chunk one byte short returned %d bytes and no error, want an error", n)
	}

	if err := s.Remove(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Seek(3000, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(make([]byte, 10)); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("reading a removed blob's next chunk: error = %v, want ErrNotFound", err)
	}
}
