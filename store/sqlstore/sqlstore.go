// Package sqlstore is the store.Store backend over database/sql. One
// implementation serves both PostgreSQL (production, shared by many nodes)
// and SQLite (modernc.org/sqlite, the embedded default that needs nothing
// installed), with a dialect switch only where the two truly differ: opening,
// and telling constraint violations apart.
//
// It owns the SQL that reads and writes the metadata schema; the schema
// itself lives in the migrations package and the rules on values in the
// catalog package. It knows nothing of HTTP, authentication or blobs.
package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/migrations"
	"github.com/patchmesh/patchmesh/store"
)

// Options tune a Store whatever its dialect.
type Options struct {
	// Observe, if set, is called after every Store method with the method's
	// name, how long it took and the error it returned, so that the caller
	// can export query durations and store errors as metrics.
	Observe func(op string, d time.Duration, err error)
	// Now is the clock for times the store sets itself (created, revoked,
	// event times). Nil means time.Now; tests pin it.
	Now func() time.Time
	// Sealer, set on the hub only, signs every patch event as it is
	// logged, once per tier, so that the node's feed can serve it. Nil on
	// every other node: they serve the hub's records as they received them.
	Sealer store.Sealer
	// Changes, if set, is notified after every committed change that grew
	// the change log, so long-polling feed readers wake without polling.
	Changes *store.Changes
}

// PostgresOptions size the PostgreSQL connection pool. A zero field keeps
// the pgxpool default (or the value the DSN sets).
type PostgresOptions struct {
	// MaxConns caps open connections (pgxpool default: max(4, NumCPU)).
	MaxConns int32
	// MinConns keeps this many connections open while idle.
	MinConns int32
	// MaxConnLifetime closes a connection this long after it opened.
	MaxConnLifetime time.Duration
	// MaxConnIdleTime closes a connection idle this long.
	MaxConnIdleTime time.Duration
	// GenerationPoll is how often the store reads the database's store
	// generation (migration 0013), which every node sharing the database
	// bumps in each transaction it commits, and invalidates Options.
	// Changes when it moved: how late this node's caches hear of another
	// node's write. 0 means DefaultGenerationPoll; negative turns polling
	// off. Without Options.Changes nothing is polled.
	GenerationPoll time.Duration
}

// DefaultGenerationPoll is PostgresOptions.GenerationPoll's default: five
// one-row reads a second per node.
const DefaultGenerationPoll = 200 * time.Millisecond

// Store is a store.Store over database/sql.
//
// Its SQL is written once, with $N placeholders: PostgreSQL requires them,
// and modernc's SQLite driver binds $N by position too, so no query needs
// rewriting per dialect.
type Store struct {
	db      *sql.DB
	dialect migrations.Dialect
	pool    *pgxpool.Pool // nil for SQLite
	locks   *pgxpool.Pool // LockDigest's own connections; nil for SQLite
	observe func(op string, d time.Duration, err error)
	clock   func() time.Time
	sealer  store.Sealer
	changes *store.Changes
	// newest is newestQuery prepared, for SQLite only: modernc compiles a
	// query anew on every call unless prepared, which would double the cost
	// of the hottest query. pgx caches prepared statements per connection
	// by itself, and database/sql cannot keep a statement on PostgreSQL
	// connections it returns to the pool after every use.
	newest *sql.Stmt
	// signed holds signedEventsQuery prepared for one and for two event
	// types (signed[n-1]), SQLite only, for the same reason: it runs on
	// every check-in beside newestQuery.
	signed [2]*sql.Stmt
	// token is tokenQuery prepared, SQLite only: every bearer token check
	// that misses auth's token cache runs it.
	token *sql.Stmt
	// stopPoll ends pollGeneration, which closes pollDone; both nil when
	// the store does not poll.
	stopPoll, pollDone chan struct{}
	// writer, SQLite only, is held by whoever writes (writeLock). SQLite
	// takes one writer at a time and makes the others retry on a timer
	// of up to 100 ms per try, each holding a pool connection meanwhile:
	// with a relay's downstreams pushing at once, writes waited half a
	// second and more while the lock was free most of that time, and
	// readers found the pool drained. Waiting here instead, a writer
	// starts as soon as the last one commits and holds no connection
	// while it waits. PostgreSQL locks rows, not the database.
	writer chan struct{}
}

var _ store.Store = (*Store)(nil)

// SQLiteOptions tune the embedded store.
type SQLiteOptions struct {
	// MmapSize is the most of the database file SQLite maps into the
	// process (PRAGMA mmap_size) rather than copying each page it reads in
	// with a system call. The mapped pages count in the process's RSS as
	// file-backed memory (RssFile): the kernel may drop them under memory
	// pressure, as any page cache. 0 turns mapping off; negative means
	// DefaultSQLiteMmapSize.
	MmapSize int64
}

// DefaultSQLiteMmapSize is SQLiteOptions.MmapSize's default: off. Each
// connection maps the file on its own, and the process's RSS counts a
// page once per mapping: with 100,000 machines a 64 MiB mmap_size added
// about 170 MB of RssFile and 256 MiB about 420 MB, while check-ins,
// served from the token cache and the offer index, ran no faster with
// either than with none (bench/RESULTS.md, "Issue 12, part D").
const DefaultSQLiteMmapSize = 0

// OpenSQLite opens (creating if needed) the SQLite database at path with
// the default SQLiteOptions and brings its schema up to date.
func OpenSQLite(ctx context.Context, path string, opts Options) (*Store, error) {
	return OpenSQLiteWith(ctx, path, SQLiteOptions{MmapSize: -1}, opts)
}

// OpenSQLiteWith is OpenSQLite with SQLiteOptions.
func OpenSQLiteWith(ctx context.Context, path string, sq SQLiteOptions, opts Options) (*Store, error) {
	return openSQLite(ctx, path, sq, opts, stmtCacheSize)
}

// openSQLite is OpenSQLiteWith keeping up to cached prepared statements on
// each connection (stmtcache.go); 0 turns the cache off, for benchmarks
// that weigh it.
func openSQLite(ctx context.Context, path string, sq SQLiteOptions, opts Options, cached int) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlstore: sqlite: empty database path")
	}
	// The driver takes everything after the first '?' as parameters.
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlstore: sqlite: database path %q must not contain '?' or '#'", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("sqlstore: sqlite: create directory: %w", err)
	}
	mmap := sq.MmapSize
	if mmap < 0 {
		mmap = DefaultSQLiteMmapSize
	}
	dsn := sqliteDSN(path, mmap)
	// sqlite.NewConnector opens connections as sql.Open("sqlite", dsn)
	// does, functions registered with the sqlite package included.
	base, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: sqlite: open %s: %w", path, err)
	}
	db := sql.OpenDB(stmtCacheConnector{Connector: walSwitchConnector{base}, size: cached})
	// Each SQLite connection re-runs the pragmas when it opens, so keep the
	// connections that parallel readers use rather than the default two.
	n := max(8, 4*runtime.NumCPU())
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	s, err := open(ctx, db, migrations.SQLite, nil, opts)
	if err != nil {
		return nil, err
	}
	s.writer = make(chan struct{}, 1)
	return s, nil
}

// sqliteDSN is the DSN of the SQLite database at path, with the settings
// every connection to it needs.
func sqliteDSN(path string, mmap int64) string {
	// foreign_keys: SQLite enforces REFERENCES only when asked, per
	// connection. WAL lets readers run while one writer writes.
	// synchronous(FULL) syncs the WAL at every commit, so a committed change
	// survives a power loss, not only a process crash. busy_timeout makes a
	// writer wait for the lock instead of failing. _txlock=immediate takes
	// the write lock at BEGIN: migrations.Apply relies on it, and it spares
	// us SQLITE_BUSY when a read transaction would upgrade to a write while
	// another writer holds the lock, which busy_timeout cannot resolve.
	// mmap_size lets reads map the database file rather than copy each page
	// in with a system call per page: that halved the cost of Newest on a
	// catalog larger than a connection's page cache, before the offer index
	// took Newest off the check-in path, and is off by default since
	// (DefaultSQLiteMmapSize). Writes go through the journal either way, so
	// durability is the same.
	return path + "?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)" +
		"&_pragma=busy_timeout(" + strconv.FormatInt(sqliteBusyTimeout.Milliseconds(), 10) + ")" +
		"&_pragma=synchronous(FULL)" +
		"&_pragma=mmap_size(" + strconv.FormatInt(mmap, 10) + ")" +
		"&_txlock=immediate"
}

// sqliteBusyTimeout is how long a connection waits for another's lock
// before it fails with SQLITE_BUSY.
const sqliteBusyTimeout = 10 * time.Second

// walSwitchConnector retries opening a connection that met SQLITE_BUSY.
// journal_mode(WAL) on a file not yet in WAL mode takes an exclusive lock,
// and SQLite fails it at once, without the busy handler busy_timeout set,
// when another connection holds the file meanwhile: two nodes, or two
// connections of one, opening a new database together. The mode is stored
// in the file once set, so this happens only at a database's first opens;
// the retries are bounded by the same wait as busy_timeout's.
type walSwitchConnector struct{ driver.Connector }

func (c walSwitchConnector) Connect(ctx context.Context) (driver.Conn, error) {
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(5*time.Millisecond),
		backoff.WithMaxInterval(250*time.Millisecond), backoff.WithMaxElapsedTime(sqliteBusyTimeout))
	return backoff.RetryWithData(func() (driver.Conn, error) {
		conn, err := c.Connector.Connect(ctx)
		var se *sqlite.Error
		if err != nil && !(errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY) {
			return nil, backoff.Permanent(err)
		}
		return conn, err
	}, backoff.WithContext(b, ctx))
}

// OpenPostgres connects to the PostgreSQL database dsn names and brings its
// schema up to date.
//
// The connections come from a pgxpool.Pool that database/sql borrows from
// (stdlib.OpenDBFromPool) rather than from a second pool of its own: so the
// one SQL implementation in this package serves both dialects, the pool's
// size and lifetimes are tuned in one place, and the PostgreSQL blob driver
// can share the same connections through Pool.
func OpenPostgres(ctx context.Context, dsn string, pg PostgresOptions, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parse error may quote the DSN, password included.
		return nil, errors.New("sqlstore: postgres: the DSN does not parse")
	}
	// The node's queries are short OLTP ones, but PostgreSQL's planner
	// estimates a page of a listing (a generic plan, or 1,000 rows) past
	// jit_above_cost and JIT-compiles it on every run: about 16 ms of a
	// 70–100 ms page, more than the compiled code saves (bench/RESULTS.md,
	// "Admin listings"). The node owns these connections, so it turns JIT
	// off for them as a startup parameter, unless the DSN sets jit itself.
	if _, set := cfg.ConnConfig.RuntimeParams["jit"]; !set {
		cfg.ConnConfig.RuntimeParams["jit"] = "off"
	}
	if pg.MaxConns > 0 {
		cfg.MaxConns = pg.MaxConns
	}
	if pg.MinConns > 0 {
		cfg.MinConns = pg.MinConns
	}
	if pg.MaxConnLifetime > 0 {
		cfg.MaxConnLifetime = pg.MaxConnLifetime
	}
	if pg.MaxConnIdleTime > 0 {
		cfg.MaxConnIdleTime = pg.MaxConnIdleTime
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: postgres: pool: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	s, err := open(ctx, db, migrations.Postgres, pool, opts)
	if err != nil {
		return nil, err
	}
	if s.locks, err = newLockPool(ctx, cfg); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlstore: postgres: lock pool: %w", err)
	}
	if every := pg.GenerationPoll; s.changes != nil && every >= 0 {
		if every == 0 {
			every = DefaultGenerationPoll
		}
		s.stopPoll, s.pollDone = make(chan struct{}), make(chan struct{})
		go s.pollGeneration(every)
	}
	return s, nil
}

func open(ctx context.Context, db *sql.DB, d migrations.Dialect, pool *pgxpool.Pool, opts Options) (*Store, error) {
	s := &Store{db: db, dialect: d, pool: pool, observe: opts.Observe, clock: opts.Now,
		sealer: opts.Sealer, changes: opts.Changes}
	if s.clock == nil {
		s.clock = time.Now
	}
	if err := db.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlstore: %s: connect: %w", d, err)
	}
	if _, err := migrations.Apply(ctx, db, d); err != nil {
		s.Close()
		if errors.Is(err, migrations.ErrSchemaTooNew) {
			return nil, fmt.Errorf("sqlstore: %s: refusing to open: %w", d, err)
		}
		return nil, fmt.Errorf("sqlstore: %s: migrate: %w", d, err)
	}
	if d == migrations.SQLite {
		var err error
		if s.newest, err = db.PrepareContext(ctx, newestQuery); err != nil {
			s.Close()
			return nil, fmt.Errorf("sqlstore: %s: prepare: %w", d, err)
		}
		for i := range s.signed {
			if s.signed[i], err = db.PrepareContext(ctx, signedEventsQuery(typeMarks(i+1))); err != nil {
				s.Close()
				return nil, fmt.Errorf("sqlstore: %s: prepare: %w", d, err)
			}
		}
		if s.token, err = db.PrepareContext(ctx, tokenQuery); err != nil {
			s.Close()
			return nil, fmt.Errorf("sqlstore: %s: prepare: %w", d, err)
		}
	}
	return s, nil
}

// Pool returns the PostgreSQL connection pool, so the PostgreSQL blob driver
// can share it; nil for SQLite.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// DB returns the underlying database handle, for tests and tools that
// inspect the schema. Writing through it bypasses the change log.
func (s *Store) DB() *sql.DB { return s.db }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) (err error) {
	defer s.done("Ping", time.Now(), &err)
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlstore: ping: %w", err)
	}
	return nil
}

// Close closes the database and, for PostgreSQL, the pool.
func (s *Store) Close() (err error) {
	defer s.done("Close", time.Now(), &err)
	if s.stopPoll != nil {
		close(s.stopPoll)
		<-s.pollDone
		s.stopPoll = nil
	}
	if s.newest != nil {
		s.newest.Close()
	}
	if s.token != nil {
		s.token.Close()
	}
	for _, st := range s.signed {
		if st != nil {
			st.Close()
		}
	}
	err = s.db.Close()
	if s.locks != nil {
		s.locks.Close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if err != nil {
		return fmt.Errorf("sqlstore: close: %w", err)
	}
	return nil
}

// done reports one method call to Options.Observe; deferred with a pointer
// to the method's named error so it sees the final value.
func (s *Store) done(op string, start time.Time, err *error) {
	if s.observe != nil {
		s.observe(op, time.Since(start), *err)
	}
}

// now is the store's clock at the schema's resolution.
func (s *Store) now() time.Time {
	return s.clock().UTC().Truncate(time.Microsecond)
}

// us turns a time into the schema's Unix microseconds.
func us(t time.Time) int64 { return t.UnixMicro() }

// nullUS maps the zero time to NULL ("never").
func nullUS(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

// fromUS turns stored microseconds back into a UTC time.
func fromUS(v int64) time.Time { return time.UnixMicro(v).UTC() }

func fromNullUS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromUS(v.Int64)
}

// orNow gives the store's clock for a zero time, else t at the schema's
// resolution, so what a method returns equals what a later read returns.
func (s *Store) orNow(t time.Time) time.Time {
	if t.IsZero() {
		return s.now()
	}
	return t.UTC().Truncate(time.Microsecond)
}

// Listing limits: a zero limit means defaultLimit; no caller gets more than
// maxLimit rows in one answer, which bounds one query's memory. Listings
// page (keyset, the After fields of the filters), so the cap bounds a page,
// not what can be listed.
const (
	defaultLimit = 1000
	maxLimit     = 100_000
)

func limit(n int) int {
	switch {
	case n <= 0:
		return defaultLimit
	case n > maxLimit:
		return maxLimit
	}
	return n
}

// Constraint violations the dialects report in their own ways.
type violation int

const (
	noViolation violation = iota
	uniqueViolation
	foreignKeyViolation
)

func classify(err error) violation {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505":
			return uniqueViolation
		case "23503":
			return foreignKeyViolation
		}
		return noViolation
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return uniqueViolation
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return foreignKeyViolation
		}
	}
	return noViolation
}

// mapErr wraps err with what failed, adding catalog.ErrNotFound for a
// missing row and catalog.ErrConflict for a duplicate. A foreign-key
// violation becomes catalog.ErrNotFound: every foreign key a write can break
// names a tier (or a patch) that does not exist.
func mapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrConflict) {
		return fmt.Errorf("sqlstore: %s: %w", what, err)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlstore: %s: %w", what, catalog.ErrNotFound)
	}
	switch classify(err) {
	case uniqueViolation:
		return fmt.Errorf("sqlstore: %s: already exists: %w: %w", what, catalog.ErrConflict, err)
	case foreignKeyViolation:
		return fmt.Errorf("sqlstore: %s: referenced record does not exist: %w: %w", what, catalog.ErrNotFound, err)
	}
	return fmt.Errorf("sqlstore: %s: %w", what, err)
}

// querier is what both *sql.DB and *sql.Tx offer, so reads can run inside
// or outside a transaction.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// inTx runs fn in a transaction and commits if fn returns nil. Under a
// context carrying a store.Actor the transaction is an admin change and
// gets its audit row before the commit.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	unlock, err := s.writeLock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := s.audit(ctx, tx); err != nil {
		return err
	}
	if s.dialect == migrations.Postgres {
		// Last, so that the row stays locked only for the commit: other
		// nodes sharing the database learn of this transaction from it.
		if _, err := tx.ExecContext(ctx, `UPDATE store_generation SET n = n + 1`); err != nil {
			return fmt.Errorf("bump store generation: %w", err)
		}
	}
	err = tx.Commit()
	// Every transaction may have changed a token, a machine's registration
	// or the catalog: caches over the store (auth's verified tokens, the
	// api's offers) must not serve what they read before it. A failed
	// commit may still have committed (the connection died after the
	// server did), so it invalidates too.
	if s.changes != nil {
		s.changes.Invalidate()
	}
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// writeLock waits for this process's turn to write, on SQLite, and
// returns what ends it; on PostgreSQL it returns at once. Every write goes
// through it: inTx, and exec for single statements. The context bounds
// the wait.
func (s *Store) writeLock(ctx context.Context) (unlock func(), err error) {
	if s.writer == nil {
		return func() {}, nil
	}
	select {
	case s.writer <- struct{}{}:
		return func() { <-s.writer }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait to write: %w", context.Cause(ctx))
	}
}

// exec runs one writing statement outside a transaction, in its turn
// (writeLock).
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	unlock, err := s.writeLock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.db.ExecContext(ctx, query, args...)
}

// pollGeneration reads the database's store generation every interval and,
// whenever it moved (another node sharing the database wrote, or this one
// did), invalidates the node's caches and wakes its waiters (s.changes), as
// a commit that grew this node's log does. A read that fails invalidates
// too, since a write may have gone unseen; the first read only learns
// where the generation is. A wake-up with nothing new costs a long poll
// one shared read of its page, and the webhook tail a read that writes
// nothing.
func (s *Store) pollGeneration(every time.Duration) {
	defer close(s.pollDone)
	t := time.NewTicker(every)
	defer t.Stop()
	last := int64(-1)
	for {
		select {
		case <-s.stopPoll:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*every)
		var n int64
		err := s.pool.QueryRow(ctx, `SELECT n FROM store_generation`).Scan(&n)
		cancel()
		switch {
		case err == nil && last >= 0 && n != last:
			// What another node logged may be news to this node's long
			// polls, which only a Notify wakes.
			s.changes.Notify()
		case err != nil || n != last:
			s.changes.Invalidate()
		}
		if err == nil {
			last = n
		}
	}
}
