package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"modernc.org/sqlite"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// prepareCounter counts what modernc's connections are asked to prepare.
type prepareCounter struct {
	// prepares counts the statements modernc prepared for the SQL it was
	// handed: by PrepareContext, and inside every QueryContext and
	// ExecContext it got a text for.
	prepares atomic.Int64
	// open counts the statements PrepareContext returned and nothing has
	// closed yet.
	open atomic.Int64
}

// countingConnector stands between the cache and modernc's connector, as
// the cache stands between database/sql and modernc.
type countingConnector struct {
	driver.Connector
	n *prepareCounter
}

func (c countingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &countingConn{sqliteConn: conn.(sqliteConn), n: c.n}, nil
}

type countingConn struct {
	sqliteConn
	n *prepareCounter
}

func (c *countingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	st, err := c.sqliteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.n.prepares.Add(1)
	c.n.open.Add(1)
	return &countingStmt{cacheableStmt: st.(cacheableStmt), n: c.n}, nil
}

func (c *countingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	c.n.prepares.Add(1)
	return c.sqliteConn.QueryContext(ctx, query, args)
}

func (c *countingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	c.n.prepares.Add(1)
	return c.sqliteConn.ExecContext(ctx, query, args)
}

type countingStmt struct {
	cacheableStmt
	n      *prepareCounter
	closed bool
}

func (s *countingStmt) Close() error {
	if !s.closed {
		s.closed = true
		s.n.open.Add(-1)
	}
	return s.cacheableStmt.Close()
}

// openCounted opens a SQLite database with the store's DSN and a cache of
// size statements per connection (0: none), counting prepares, with table
// t holding (k, v) = (1, "one"), (2, "two"), (3, "three").
func openCounted(t *testing.T, size int) (*sql.DB, *prepareCounter) {
	t.Helper()
	base, err := sqlite.NewConnector(sqliteDSN(filepath.Join(t.TempDir(), "cache.db"), 0))
	if err != nil {
		t.Fatal(err)
	}
	n := &prepareCounter{}
	db := sql.OpenDB(stmtCacheConnector{Connector: countingConnector{Connector: base, n: n}, size: size})
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec(`CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);
		INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')`); err != nil {
		t.Fatal(err)
	}
	n.prepares.Store(0)
	return db, n
}

// Running one text again on a connection prepares it once, whatever the
// arguments; without the cache every run prepares.
func TestStmtCacheReusesStatementsOnOneConnection(t *testing.T) {
	const runs = 10
	for _, c := range []struct {
		name string
		size int
		want int64
	}{
		{"cached", stmtCacheSize, 2},
		{"uncached", 0, 2 * runs},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			db, n := openCounted(t, c.size)
			conn, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			for i := range runs {
				k := 1 + i%3
				var v string
				if err := conn.QueryRowContext(ctx, `SELECT v FROM t WHERE k = :k`, sql.Named("k", k)).Scan(&v); err != nil {
					t.Fatal(err)
				}
				if want := []string{"one", "two", "three"}[k-1]; v != want {
					t.Errorf("run %d: k %d reads %q, want %q", i, k, v, want)
				}
				if _, err := conn.ExecContext(ctx, `INSERT INTO t (v) VALUES ($1)`, fmt.Sprint("row ", i)); err != nil {
					t.Fatal(err)
				}
			}
			var rows int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM t`).Scan(&rows); err != nil || rows != 3+runs {
				t.Errorf("t holds %d rows (%v), want %d", rows, err, 3+runs)
			}
			if got := n.prepares.Load() - 1; got != c.want { // less the COUNT
				t.Errorf("%d runs each of a query and an insert prepared %d statements, want %d", runs, got, c.want)
			}
		})
	}
}

// A script is run as modernc runs it, statement by statement, and not
// cached.
func TestStmtCacheLeavesScriptsToTheConnection(t *testing.T) {
	ctx := t.Context()
	db, n := openCounted(t, stmtCacheSize)
	for range 2 {
		if _, err := db.ExecContext(ctx, `UPDATE t SET v = v || '.' WHERE k = 1; UPDATE t SET v = v || '!' WHERE k = 2;`); err != nil {
			t.Fatal(err)
		}
	}
	var one, two string
	if err := db.QueryRowContext(ctx, `SELECT (SELECT v FROM t WHERE k = 1), (SELECT v FROM t WHERE k = 2)`).Scan(&one, &two); err != nil {
		t.Fatal(err)
	}
	if one != "one.." || two != "two!!" {
		t.Errorf("after the script ran twice: %q, %q; want \"one..\", \"two!!\"", one, two)
	}
	if got := n.open.Load(); got != 1 { // the SELECT
		t.Errorf("%d statements cached, want 1: the script is not", got)
	}
}

// A query of the same text inside one transaction, while the rows of the
// first are open, runs on a statement of its own: both read what they
// should, and the cached statement serves the next run.
func TestStmtCacheNestedQueryOfSameText(t *testing.T) {
	ctx := t.Context()
	db, n := openCounted(t, stmtCacheSize)
	const q = `SELECT k FROM t WHERE k > $1 ORDER BY k`
	readAll := func(rows *sql.Rows, err error) []int {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var ks []int
		for rows.Next() {
			var k int
			if err := rows.Scan(&k); err != nil {
				t.Fatal(err)
			}
			ks = append(ks, k)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return ks
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	outer, err := tx.QueryContext(ctx, q, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for outer.Next() {
		var k int
		if err := outer.Scan(&k); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprint(k, readAll(tx.QueryContext(ctx, q, k))))
	}
	if err := outer.Err(); err != nil {
		t.Fatal(err)
	}
	outer.Close()
	if want := "[1 [2 3] 2 [3] 3 []]"; fmt.Sprint(got) != want {
		t.Errorf("outer keys with the inner query's: %v, want %v", got, want)
	}
	if ks := readAll(tx.QueryContext(ctx, q, 1)); fmt.Sprint(ks) != "[2 3]" {
		t.Errorf("after the nested queries: %v, want [2 3]", ks)
	}
	// The outer query prepared the cached statement, each inner query one
	// of its own (the outer held the lease), the last run none.
	if got := n.prepares.Load(); got != 4 {
		t.Errorf("%d prepares, want 4", got)
	}
}

// A statement evicted while its rows are open is closed once they are, not
// before: the rows read to the end.
func TestStmtCacheEvictsLeasedStatementOnRelease(t *testing.T) {
	ctx := t.Context()
	db, n := openCounted(t, 1)
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.QueryContext(ctx, `SELECT v FROM t ORDER BY k`)
	if err != nil {
		t.Fatal(err)
	}
	var vs []string
	for rows.Next() {
		// A second text evicts the first from a cache of one.
		var count int
		if err := conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM t`).Scan(&count); err != nil {
			t.Fatal(err)
		}
		if got := n.open.Load(); got != 2 {
			t.Errorf("with the evicted statement's rows open: %d statements open, want 2", got)
		}
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// database/sql closed the rows at their end.
	if fmt.Sprint(vs) != "[one two three]" {
		t.Errorf("rows of the evicted statement: %v, want [one two three]", vs)
	}
	if got := n.open.Load(); got != 1 {
		t.Errorf("after its rows closed: %d statements open, want 1", got)
	}
}

// Cancelling a query's context interrupts it on a cached statement as it
// does without the cache.
func TestStmtCacheCancelInterruptsQuery(t *testing.T) {
	ctx := t.Context()
	db, n := openCounted(t, stmtCacheSize)
	db.SetMaxOpenConns(1)
	const count = `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $1)
		SELECT COUNT(*) FROM c`
	var got int64
	if err := db.QueryRowContext(ctx, count, 10).Scan(&got); err != nil || got != 10 {
		t.Fatalf("counting to 10: %d, %v", got, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- db.QueryRowContext(cctx, count, 1_000_000_000).Scan(&got) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("counting to 1e9, cancelled after 50 ms: %d, %v; want context.Canceled", got, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("the cancelled query returned after %v", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("counting to 1e9, cancelled after 50 ms: still running after 30 s")
	}
	// The one connection ran both on one statement.
	if got := n.prepares.Load(); got != 1 {
		t.Errorf("%d prepares, want 1: the cancelled query did not run on the cached statement", got)
	}
	if err := db.QueryRowContext(ctx, count, 5).Scan(&got); err != nil || got != 5 {
		t.Errorf("after the cancel, counting to 5: %d, %v", got, err)
	}
}

// Closing the database finalizes every statement the connections cached.
func TestStmtCacheCloseFinalizesStatements(t *testing.T) {
	ctx := t.Context()
	db, n := openCounted(t, stmtCacheSize)
	db.SetMaxIdleConns(3) // keep the three connections until the database closes
	var conns []*sql.Conn
	for i := range 3 {
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		for j := range 4 {
			var k int
			q := fmt.Sprintf(`SELECT k FROM t WHERE k = %d`, 1+(i+j)%3)
			if err := conn.QueryRowContext(ctx, q).Scan(&k); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, conn := range conns {
		conn.Close()
	}
	if got := n.open.Load(); got != 3*3 {
		t.Errorf("before closing: %d statements open, want 9 (3 texts on 3 connections)", got)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if got := n.open.Load(); got != 0 {
		t.Errorf("after closing the database: %d of %d statements open, want 0", got, n.prepares.Load())
	}
}

// TestStmtCacheMemory runs a node's common reads and writes on one
// connection and reports what its cached statements hold in SQLite's
// memory, which bounds the cache's cost (see stmtCacheSize).
func TestStmtCacheMemory(t *testing.T) {
	ctx := t.Context()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "meta.db"), Options{Sealer: benchSealer{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.db.SetMaxOpenConns(1)
	seedFeed(t, s, 20)
	for _, err := range []error{
		errOnly(s.Head(ctx)), errOnly(s.Tiers(ctx)), errOnly(s.Nodes(ctx)),
		errOnly(s.Feed(ctx, "beta", store.FeedPosition{}, 100)),
		errOnly(s.Feed(ctx, "beta", store.FeedPosition{ByHub: true}, 100)),
		errOnly(s.Patches(ctx, store.PatchFilter{})), errOnly(s.Events(ctx, 0, 100)),
		errOnly(s.Machines(ctx, store.MachineFilter{})), errOnly(s.Webhooks(ctx)),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Raw(func(dc any) error {
		c := dc.(*cachingConn)
		used, _, err := c.sqliteConn.(sqlite.DBStatus).Status(sqlite.DBStatusStmtUsed, false)
		if err != nil {
			return err
		}
		// The store's own prepared statements count too, if on this
		// connection; so the mean is over all it holds.
		per := used / (c.lru.Len() + 4)
		t.Logf("%d statements cached, %d bytes of statements in SQLite's memory, about %d a statement", c.lru.Len(), used, per)
		if per > 32<<10 {
			t.Errorf("about %d bytes a statement; stmtCacheSize assumes a few KiB", per)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func errOnly[T any](_ T, err error) error { return err }

// benchSealer seals every event with a fixed record, so that it is in the
// feed.
type benchSealer struct{}

func (benchSealer) Seal(e store.SealRequest) ([]byte, []byte, error) {
	return []byte(fmt.Sprintf(`{"tier":%q,"seq":%d}`, e.Tier, e.TierSeq)), make([]byte, 64), nil
}

// seedFeed adds n patches, each promoted to beta: 2n signed events.
func seedFeed(tb testing.TB, s *Store, n int) {
	tb.Helper()
	ctx := context.Background()
	for i := range n {
		p, err := s.AddPatch(ctx, catalog.Patch{
			Digest: fmt.Sprintf("sha256:%064x", i+1), Kernel: "5.15.0-107.117-generic", Arch: "x86_64",
			Version: fmt.Sprint("1.", i+1), Size: 4096,
		})
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := s.Promote(ctx, p.Digest, "beta"); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkStmtCache runs reads a node serves all day, on one goroutine,
// with each connection's statement cache and without it, in turns.
func BenchmarkStmtCache(b *testing.B) {
	ctx := context.Background()
	open := func(cached int) *Store {
		s, err := openSQLite(ctx, filepath.Join(b.TempDir(), "bench.db"), SQLiteOptions{MmapSize: -1}, Options{Sealer: benchSealer{}}, cached)
		if err != nil {
			b.Fatal(err)
		}
		seedFeed(b, s, 20)
		return s
	}
	stores := []struct {
		name string
		s    *Store
	}{{"cached", open(stmtCacheSize)}, {"uncached", open(0)}}
	defer func() {
		for _, st := range stores {
			st.s.Close()
		}
	}()
	reads := []struct {
		name string
		run  func(s *Store) error
	}{
		{"Head", func(s *Store) error { return errOnly(s.Head(ctx)) }},
		{"Tiers", func(s *Store) error { return errOnly(s.Tiers(ctx)) }},
		{"Feed", func(s *Store) error {
			page, err := s.Feed(ctx, "beta", store.FeedPosition{AfterSeq: 20}, 100)
			if err == nil && len(page.Entries) != 10 {
				err = fmt.Errorf("feed page of %d entries, want 10", len(page.Entries))
			}
			return err
		}},
	}
	for _, r := range reads {
		for range 2 {
			for _, st := range stores {
				b.Run(r.name+"/"+st.name, func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						if err := r.run(st.s); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
