package sqlstore

// A prepared-statement cache for the SQLite connections.
//
// database/sql hands a query's text to the driver connection's QueryContext
// or ExecContext, and modernc.org/sqlite prepares it there on every call
// (parsing and planning it in SQLite) and finalizes it after: profiles of a
// 1,000-node mesh on one machine, each node with its own SQLite store, put
// statement preparation at 10-14% of all CPU while a patch propagated.
// modernc runs a driver.Stmt it is handed back by resetting it rather than
// preparing again, so each connection keeps the statements it ran recently,
// by text, and runs the next call of the same text on its statement.
//
// PostgreSQL needs none of this: pgx keeps its own statement cache per
// connection.

import (
	"container/list"
	"context"
	"database/sql/driver"
	"reflect"
	"strings"
)

// stmtCacheSize is how many statements each SQLite connection keeps. It
// holds a node's whole working set: in the e2e meshes (a hub, relays and
// edges of TestCascadeThreeLevels and TestCutThroughRelaysBlobBeforeItIsIn)
// each node ran 50-59 distinct texts over its life, at most 50 of them on
// one connection, so nothing the node runs again is evicted; an admin
// listing, whose LIMIT is part of its text, may push out the coldest. A
// statement holds about 6 KiB of SQLite's memory (TestStmtCacheMemory), so
// a full cache is some 400 KiB a connection, beside a page cache of up to
// 2,000 KiB (SQLite's default cache_size).
const stmtCacheSize = 64

// sqliteConn is what the cache needs of modernc's connection, and all of
// the optional interfaces database/sql looks for on it: a cachingConn
// offers exactly these, so database/sql treats it as it would modernc's.
// (modernc implements no driver.NamedValueChecker; arguments are converted
// by database/sql's default converter either way.)
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// cachedStmt is one statement a connection keeps.
type cachedStmt struct {
	query string
	stmt  cacheableStmt
	el    *list.Element // in cachingConn.lru; nil once evicted
	// leased is set while a call runs the statement or rows it returned
	// are open: another call of the same text on the connection (a nested
	// query in one transaction) must not reset it under them.
	leased bool
}

// cacheableStmt is what the cache runs a statement through; modernc's
// statements offer it.
type cacheableStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

// stmtCacheConnector opens connections through modernc's connector and
// gives each a statement cache of size statements; 0 turns the cache off.
type stmtCacheConnector struct {
	driver.Connector
	size int
}

func (c stmtCacheConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil || c.size <= 0 {
		return conn, err
	}
	sc, ok := conn.(sqliteConn)
	if !ok {
		// Not the connection the cache was written for: use it as it is.
		return conn, nil
	}
	return &cachingConn{sqliteConn: sc, size: c.size, byQuery: make(map[string]*cachedStmt)}, nil
}

// cachingConn is a modernc connection with a bounded LRU of its prepared
// statements. Every method but QueryContext, ExecContext and Close is
// modernc's own, explicit PrepareContext included: a statement the store
// prepares itself stays its own, outside the cache.
//
// database/sql never calls into one driver connection from two goroutines
// at once (closing a query's rows included, which it does under the same
// lock), so the cache takes no lock of its own.
type cachingConn struct {
	sqliteConn
	size    int
	lru     list.List // of *cachedStmt, most recently used first
	byQuery map[string]*cachedStmt
}

// QueryContext runs query on the connection's statement for it, leased
// until the rows it returns are closed.
func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs, err := c.lease(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.sqliteConn.QueryContext(ctx, query, args)
	}
	rows, err := cs.stmt.QueryContext(ctx, args)
	if err != nil {
		c.release(cs)
		return nil, err
	}
	return &leasedRows{Rows: rows, c: c, cs: cs}, nil
}

// ExecContext runs query on the connection's statement for it.
func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cs, err := c.lease(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.sqliteConn.ExecContext(ctx, query, args)
	}
	defer c.release(cs)
	return cs.stmt.ExecContext(ctx, args)
}

// lease returns the cached statement for query, prepared if it is not
// cached yet, marked leased; nil (and no error) when the call should go to
// modernc's connection as it would without the cache: a script, or a text
// whose statement is leased already. A failure to prepare is returned as
// is: modernc's own QueryContext would have failed the same way.
func (c *cachingConn) lease(ctx context.Context, query string) (*cachedStmt, error) {
	if script(query) {
		return nil, nil
	}
	if cs := c.byQuery[query]; cs != nil {
		if cs.leased {
			return nil, nil
		}
		c.lru.MoveToFront(cs.el)
		cs.leased = true
		return cs, nil
	}
	st, err := c.sqliteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	cst, ok := st.(cacheableStmt)
	if !ok {
		st.Close()
		return nil, nil
	}
	cs := &cachedStmt{query: query, stmt: cst, leased: true}
	cs.el = c.lru.PushFront(cs)
	c.byQuery[query] = cs
	if c.lru.Len() > c.size {
		c.evict(c.lru.Back().Value.(*cachedStmt))
	}
	return cs, nil
}

// release ends cs's lease, and closes it if it was evicted meanwhile.
func (c *cachingConn) release(cs *cachedStmt) {
	cs.leased = false
	if cs.el == nil {
		cs.stmt.Close()
	}
}

// evict drops cs from the cache, closing it unless it is leased: then its
// release closes it.
func (c *cachingConn) evict(cs *cachedStmt) {
	c.lru.Remove(cs.el)
	cs.el = nil
	delete(c.byQuery, cs.query)
	if !cs.leased {
		cs.stmt.Close()
	}
}

// Close finalizes every cached statement, then closes the connection:
// SQLite keeps a connection with statements left open as a zombie, memory
// and file handle included, until they are finalized. database/sql closes
// a connection only once no rows are open on it, so nothing is leased.
func (c *cachingConn) Close() error {
	for c.lru.Len() > 0 {
		c.evict(c.lru.Front().Value.(*cachedStmt))
	}
	return c.sqliteConn.Close()
}

// script reports whether query holds more than one statement, as a
// migration does: modernc prepares a script statement by statement on
// every run whatever the cache does, so scripts go to the connection as
// they always have. Any ';' before the trailing ones counts, even one
// inside a string literal or a comment: such a statement is only not
// cached.
func script(query string) bool {
	return strings.IndexByte(strings.TrimRight(query, "; \t\r\n"), ';') >= 0
}

// leasedRows are the rows of a cached statement; closing them ends the
// statement's lease. They offer the column type methods modernc's rows do.
type leasedRows struct {
	driver.Rows
	c  *cachingConn
	cs *cachedStmt // nil once closed
}

func (r *leasedRows) Close() error {
	err := r.Rows.Close()
	if r.cs != nil {
		r.c.release(r.cs)
		r.cs = nil
	}
	return err
}

func (r *leasedRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *leasedRows) ColumnTypeLength(i int) (int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *leasedRows) ColumnTypeNullable(i int) (nullable, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *leasedRows) ColumnTypePrecisionScale(i int) (precision, scale int64, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}

func (r *leasedRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}
