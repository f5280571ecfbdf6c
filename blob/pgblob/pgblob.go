// Package pgblob is the PostgreSQL blob driver: blobs live in the same
// database as the catalog, so a node needs no filesystem it must back up.
//
// A blob is stored as fixed-size chunks (Options.ChunkSize, 1 MiB by
// default) in blob_chunks, keyed by the upload that wrote them. Neither side
// ever holds more than one chunk: the writer buffers one and inserts it, the
// reader fetches the one under its offset. The tables are in
// migrations/postgres/0002_blobs.sql.
//
// Why this shape:
//   - Chunks are keyed by upload, not by digest, so concurrent uploads of one
//     digest never touch each other's rows; the first Commit to insert the
//     blobs row wins and the others drop their chunks (the bytes are the
//     same, blob.Put has checked them).
//   - Readers look only at blobs. An upload becomes a blob in one
//     transaction that deletes its blob_uploads row and inserts its blobs
//     row, so a partial upload is never visible.
//   - Each chunk is its own short statement rather than one COPY or one
//     long transaction: an upload arrives at the client's pace, and must not
//     pin a pooled connection or hold a transaction open meanwhile.
//   - Rows rather than large objects: rows are covered by ordinary dumps,
//     replication and DROP DATABASE, and need no separate garbage collection.
//   - blobs records the chunk size, so Seek is arithmetic (offset / chunk
//     size) and a change of Options.ChunkSize never breaks old blobs.
//   - Every open upload is marked live by a session-level PostgreSQL
//     advisory lock (lockNS, upload ID), taken on the Store's own lock
//     connection in the transaction that makes the upload's row visible and
//     released at Commit or Abort. A process that dies, even by SIGKILL,
//     loses its session and so its locks; Open reclaims at once every upload
//     whose lock it can take, which is exactly the abandoned ones, even with
//     several nodes sharing the database. Uploads whose lock is held
//     elsewhere are left alone.
//   - As a backstop (a lock connection lost mid-upload, two IDs colliding in
//     the 31-bit lock key), an open upload is also swept once it has gone
//     quiet for AbandonAfter. Every chunk written refreshes the upload's
//     touched_us in the statement that inserts the chunk, and a swept or
//     reclaimed upload can neither gain chunks nor commit.
//
// The package owns staging, committing and reading chunks. It does not check
// digests (blob.Put does, before it commits) and does not decide who may
// read a blob.
package pgblob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/migrations"
)

// Options configures the driver. The zero value gives the defaults.
type Options struct {
	// ChunkSize is the size of each stored chunk in bytes, and so about the
	// most memory one upload or one reader holds. Default 1 MiB; at most
	// MaxChunkSize. Blobs keep the chunk size they were written with.
	ChunkSize int
	// AbandonAfter is how long an upload may go without a write before it
	// is taken for a crash leftover and swept. It must exceed the longest
	// pause a live upload can take between chunks. Default 1 hour.
	AbandonAfter time.Duration
}

const (
	// DefaultChunkSize is ChunkSize's default.
	DefaultChunkSize = 1 << 20
	// MaxChunkSize bounds ChunkSize well inside PostgreSQL's 1 GB value
	// limit and the memory one upload may pin.
	MaxChunkSize = 64 << 20
	// DefaultAbandonAfter is AbandonAfter's default.
	DefaultAbandonAfter = time.Hour
)

// nowUS is the database clock in Unix microseconds. Every age is measured on
// it, so nodes whose own clocks disagree still agree on what is stale.
const nowUS = `(extract(epoch FROM clock_timestamp()) * 1000000)::bigint`

// lockNS is the first key of the advisory locks marking live uploads
// ("pgb1"); the second is the upload ID modulo 2^31-1, as every
// statement here computes it.
const lockNS int32 = 0x70676231

// Store is a blob.Store in PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool         *pgxpool.Pool
	chunkSize    int
	abandonAfter time.Duration

	// lockConn is the session that holds this process's upload locks; it
	// is not the pool's, so that it lives as long as the Store. mu
	// serialises its use.
	mu       sync.Mutex
	lockConn *pgx.Conn
}

var _ blob.Store = (*Store)(nil)

// Open applies the schema (idempotent, under the migrations lock, so the
// driver works without the metadata store having run first), reclaims the
// uploads of dead processes (Reclaim) and sweeps quiet ones (Sweep), and
// returns a store on pool. Close ends its lock session.
func Open(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Store, error) {
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.ChunkSize < 0 || opts.ChunkSize > MaxChunkSize {
		return nil, fmt.Errorf("pgblob: chunk size %d outside 1..%d", opts.ChunkSize, MaxChunkSize)
	}
	if opts.AbandonAfter == 0 {
		opts.AbandonAfter = DefaultAbandonAfter
	}
	if opts.AbandonAfter < 0 {
		return nil, fmt.Errorf("pgblob: negative AbandonAfter %s", opts.AbandonAfter)
	}
	db := stdlib.OpenDBFromPool(pool)
	_, err := migrations.Apply(ctx, db, migrations.Postgres)
	if cerr := db.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("pgblob: %w", err)
	}
	s := &Store{pool: pool, chunkSize: opts.ChunkSize, abandonAfter: opts.AbandonAfter}
	if _, err := s.Reclaim(ctx); err != nil {
		return nil, err
	}
	if _, err := s.Sweep(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close ends the lock session, releasing the locks of uploads still open
// (they will be reclaimed). The pool stays the caller's.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lockConn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.lockConn.Close(ctx)
	s.lockConn = nil
	return err
}

// lockSession returns the lock connection, (re)connecting it when needed.
// Called with mu held.
func (s *Store) lockSession(ctx context.Context) (*pgx.Conn, error) {
	if s.lockConn != nil && !s.lockConn.IsClosed() {
		return s.lockConn, nil
	}
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	s.lockConn = c.Hijack()
	return s.lockConn, nil
}

// Reclaim deletes, with their chunks, the open uploads no live session
// holds the lock of: those of a process that died mid-upload. It returns
// how many it deleted. Open calls it; uploads of this Store and of other
// live nodes sharing the database are held, so skipped.
func (s *Store) Reclaim(ctx context.Context) (int, error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("pgblob: reclaim: %w", err)
	}
	defer func() {
		// Release this session's locks before the connection goes back.
		if _, err := c.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock_all()`); err != nil {
			c.Conn().Close(context.WithoutCancel(ctx)) // the pool drops a closed conn
		}
		c.Release()
	}()
	rows, err := c.Query(ctx, `SELECT upload_id FROM blob_uploads
		WHERE pg_try_advisory_lock($1::integer, (upload_id % 2147483647)::integer)`, lockNS)
	if err != nil {
		return 0, fmt.Errorf("pgblob: reclaim: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, fmt.Errorf("pgblob: reclaim: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	// Holding their locks, delete them: no writer of theirs is alive.
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM blob_uploads WHERE upload_id = ANY($1)`, ids); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM blob_chunks WHERE upload_id = ANY($1)`, ids)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("pgblob: reclaim abandoned uploads: %w", err)
	}
	return len(ids), nil
}

// unlock releases a finished upload's lock. A failure only leaves the lock
// until the session ends; the row is gone by then, so nothing is kept.
func (s *Store) unlock(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lockConn == nil || s.lockConn.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	_, _ = s.lockConn.Exec(ctx, `SELECT pg_advisory_unlock($1::integer, ($2::bigint % 2147483647)::integer)`, lockNS, id)
}

// Sweep deletes uploads that have had no write for AbandonAfter, with their
// chunks, and returns how many it deleted. Open calls it; a node may also
// call it periodically.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx,
			`DELETE FROM blob_uploads WHERE touched_us <= `+nowUS+` - $1 RETURNING upload_id`,
			s.abandonAfter.Microseconds())
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		n = len(ids)
		if n == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `DELETE FROM blob_chunks WHERE upload_id = ANY($1)`, ids)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("pgblob: sweep abandoned uploads: %w", err)
	}
	return n, nil
}

// Create opens an upload for d.
func (s *Store) Create(ctx context.Context, d blob.Digest) (blob.Writer, error) {
	if _, err := blob.ParseDigest(string(d)); err != nil {
		return nil, err
	}
	id, err := s.create(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("pgblob: create %s: %w", d, err)
	}
	return &writer{s: s, ctx: ctx, digest: d, id: id, buf: make([]byte, 0, s.chunkSize)}, nil
}

// create inserts the upload's row and takes its lock on the lock session in
// one transaction, so that the row is never visible unlocked: a Reclaim
// elsewhere cannot take a live upload for an abandoned one.
func (s *Store) create(ctx context.Context, d blob.Digest) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.lockSession(ctx)
	if err != nil {
		return 0, err
	}
	var id int64
	err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx,
			`INSERT INTO blob_uploads (digest, started_us, touched_us) VALUES ($1, `+nowUS+`, `+nowUS+`) RETURNING upload_id`,
			string(d)).Scan(&id)
		if err != nil {
			return err
		}
		// A session lock outlives the transaction. Try, not wait: another
		// live upload whose ID maps to the same key holds it, and then
		// this one relies on the AbandonAfter sweep alone.
		_, err = tx.Exec(ctx, `SELECT pg_try_advisory_lock($1::integer, ($2::bigint % 2147483647)::integer)`, lockNS, id)
		return err
	})
	if err != nil && c.IsClosed() {
		s.lockConn = nil
	}
	return id, err
}

// writer buffers one chunk at a time and inserts it when full.
type writer struct {
	s      *Store
	ctx    context.Context // Create's: Write has no context of its own
	digest blob.Digest
	id     int64
	buf    []byte
	next   int32 // number of the next chunk to insert
	size   int64
	done   bool // Commit succeeded or Abort ran
}

// errUploadGone means the upload's row vanished: it was swept as abandoned.
var errUploadGone = errors.New("upload was swept as abandoned")

func (w *writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("pgblob: write after commit or abort")
	}
	written := 0
	for len(p) > 0 {
		c := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+c]
		p = p[c:]
		written += c
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(w.ctx); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// flush inserts the buffered chunk. The insert and the refresh of
// touched_us are one statement, and the insert happens only if the upload
// row is still there: the UPDATE locks that row, so a concurrent sweep
// either waits and then sees a fresh touched_us, or deleted it first and the
// insert adds nothing.
func (w *writer) flush(ctx context.Context) error {
	if len(w.buf) == 0 {
		return nil
	}
	var tag pgconn.CommandTag
	err := pgx.BeginFunc(ctx, w.s.pool, func(tx pgx.Tx) error {
		// A chunk need not be durable on its own: Commit's transaction
		// waits for its own commit record to reach disk, and the WAL is
		// flushed in order, so every chunk written before it is durable by
		// then. A chunk lost to a crash belongs to an upload that never
		// committed, which the sweep removes. Skipping the flush here saves
		// one disk flush per chunk.
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		var err error
		tag, err = tx.Exec(ctx, `
			WITH u AS (
				UPDATE blob_uploads SET touched_us = `+nowUS+` WHERE upload_id = $1 RETURNING upload_id
			)
			INSERT INTO blob_chunks (upload_id, n, data) SELECT upload_id, $2::integer, $3::bytea FROM u`,
			w.id, w.next, w.buf)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgblob: write %s chunk %d: %w", w.digest, w.next, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("pgblob: write %s: %w", w.digest, errUploadGone)
	}
	w.size += int64(len(w.buf))
	w.next++
	w.buf = w.buf[:0]
	return nil
}

// Commit writes the last chunk and turns the upload into a blob in one
// transaction. If Commit fails the upload is discarded, as Abort would.
func (w *writer) Commit(ctx context.Context) error {
	if w.done {
		return errors.New("pgblob: commit after commit or abort")
	}
	if err := w.commit(ctx); err != nil {
		return errors.Join(fmt.Errorf("pgblob: commit %s: %w", w.digest, err), w.Abort())
	}
	w.done = true
	w.buf = nil
	w.s.unlock(w.id)
	return nil
}

func (w *writer) commit(ctx context.Context) error {
	if err := w.flush(ctx); err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, w.s.pool, func(tx pgx.Tx) error {
		// Deleting the upload row first, under its row lock, settles any
		// race with a sweep: whoever deletes it owns the chunks.
		tag, err := tx.Exec(ctx, `DELETE FROM blob_uploads WHERE upload_id = $1`, w.id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return errUploadGone
		}
		// A concurrent commit of the same digest makes this wait on its
		// key until it ends, then do nothing if it committed.
		tag, err = tx.Exec(ctx, `
			INSERT INTO blobs (digest, upload_id, size, chunk_size, created_us)
			VALUES ($1, $2, $3, $4, `+nowUS+`)
			ON CONFLICT (digest) DO NOTHING`,
			string(w.digest), w.id, w.size, w.s.chunkSize)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			// Another upload of this digest won; ours is a duplicate.
			_, err = tx.Exec(ctx, `DELETE FROM blob_chunks WHERE upload_id = $1`, w.id)
		}
		return err
	})
}

// abortTimeout bounds cleanup, which runs without a caller's context: Abort
// is often called because that context was cancelled.
const abortTimeout = 30 * time.Second

// Abort deletes the upload and its chunks. It does nothing after a
// successful Commit. If it fails, Sweep removes the upload later.
func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.buf = nil
	defer w.s.unlock(w.id)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), abortTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, w.s.pool, func(tx pgx.Tx) error {
		// If the upload row is gone it was committed or swept; either way
		// its chunks are not ours to delete.
		tag, err := tx.Exec(ctx, `DELETE FROM blob_uploads WHERE upload_id = $1`, w.id)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM blob_chunks WHERE upload_id = $1`, w.id)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgblob: abort %s: %w", w.digest, err)
	}
	return nil
}

// meta is a committed blob's row.
type meta struct {
	uploadID  int64
	chunkSize int64
	info      blob.Info
}

func (s *Store) lookup(ctx context.Context, d blob.Digest) (meta, error) {
	if _, err := blob.ParseDigest(string(d)); err != nil {
		return meta{}, err
	}
	var m meta
	var created int64
	err := s.pool.QueryRow(ctx,
		`SELECT upload_id, size, chunk_size, created_us FROM blobs WHERE digest = $1`,
		string(d)).Scan(&m.uploadID, &m.info.Size, &m.chunkSize, &created)
	if errors.Is(err, pgx.ErrNoRows) {
		return meta{}, fmt.Errorf("pgblob: %s: %w", d, blob.ErrNotFound)
	}
	if err != nil {
		return meta{}, fmt.Errorf("pgblob: %s: %w", d, err)
	}
	m.info.Digest = d
	m.info.Modified = time.UnixMicro(created)
	return m, nil
}

// Stat reports on a committed blob.
func (s *Store) Stat(ctx context.Context, d blob.Digest) (blob.Info, error) {
	m, err := s.lookup(ctx, d)
	return m.info, err
}

// Open returns a reader that fetches one chunk at a time as it is read,
// using ctx for every fetch. If the blob is removed while it is being read,
// the next fetch fails with an error wrapping blob.ErrNotFound.
func (s *Store) Open(ctx context.Context, d blob.Digest) (io.ReadSeekCloser, blob.Info, error) {
	m, err := s.lookup(ctx, d)
	if err != nil {
		return nil, blob.Info{}, err
	}
	return &reader{s: s, ctx: ctx, m: m, cur: -1}, m.info, nil
}

// reader serves reads from one cached chunk and fetches the next on demand;
// Seek only moves the offset, so net/http's size probe and range seeks cost
// no query.
type reader struct {
	s      *Store
	ctx    context.Context
	m      meta
	off    int64
	cur    int64 // number of the chunk in buf, -1 for none
	buf    pgtype.PreallocBytes
	closed bool
}

func (r *reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, errors.New("pgblob: read after close")
	}
	if r.off >= r.m.info.Size {
		return 0, io.EOF
	}
	n := r.off / r.m.chunkSize
	if n != r.cur {
		if err := r.fetch(n); err != nil {
			return 0, err
		}
	}
	c := copy(p, r.buf[r.off-n*r.m.chunkSize:])
	r.off += int64(c)
	return c, nil
}

func (r *reader) fetch(n int64) error {
	r.cur = -1
	err := r.s.pool.QueryRow(r.ctx,
		`SELECT data FROM blob_chunks WHERE upload_id = $1 AND n = $2`,
		r.m.uploadID, n).Scan(&r.buf)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("pgblob: %s chunk %d: removed while reading: %w", r.m.info.Digest, n, blob.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("pgblob: read %s chunk %d: %w", r.m.info.Digest, n, err)
	}
	// Every chunk but the last is full; anything else is damage, and
	// serving it would shift every later byte.
	want := min(r.m.chunkSize, r.m.info.Size-n*r.m.chunkSize)
	if int64(len(r.buf)) != want {
		return fmt.Errorf("pgblob: %s chunk %d holds %d bytes, want %d", r.m.info.Digest, n, len(r.buf), want)
	}
	r.cur = n
	return nil
}

func (r *reader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.m.info.Size + offset
	default:
		return 0, fmt.Errorf("pgblob: seek: invalid whence %d", whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("pgblob: seek to negative offset %d", abs)
	}
	r.off = abs
	return abs, nil
}

func (r *reader) Close() error {
	r.closed = true
	r.buf = nil
	return nil
}

// Remove deletes a committed blob and its chunks in one transaction.
func (s *Store) Remove(ctx context.Context, d blob.Digest) error {
	if _, err := blob.ParseDigest(string(d)); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var id int64
		err := tx.QueryRow(ctx, `DELETE FROM blobs WHERE digest = $1 RETURNING upload_id`, string(d)).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return blob.ErrNotFound
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM blob_chunks WHERE upload_id = $1`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgblob: remove %s: %w", d, err)
	}
	return nil
}

// enumeratePage is how many blobs Enumerate reads per query.
const enumeratePage = 1000

// Enumerate lists committed blobs in digest order. It reads a page at a
// time and calls fn with no query open, so fn may use the store (or the
// pool) without needing a second connection.
func (s *Store) Enumerate(ctx context.Context, fn func(blob.Info) error) error {
	after := ""
	for {
		rows, err := s.pool.Query(ctx,
			`SELECT digest, size, created_us FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2`,
			after, enumeratePage)
		if err != nil {
			return fmt.Errorf("pgblob: enumerate: %w", err)
		}
		page, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (blob.Info, error) {
			var i blob.Info
			var d string
			var created int64
			err := row.Scan(&d, &i.Size, &created)
			i.Digest = blob.Digest(d)
			i.Modified = time.UnixMicro(created)
			return i, err
		})
		if err != nil {
			return fmt.Errorf("pgblob: enumerate: %w", err)
		}
		for _, i := range page {
			if err := fn(i); err != nil {
				return err
			}
		}
		if len(page) < enumeratePage {
			return nil
		}
		after = string(page[len(page)-1].Digest)
	}
}
