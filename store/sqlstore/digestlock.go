package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// digestLockNS is the first key of the advisory locks LockDigest takes;
// the second is hashtext(digest). It differs from pgblob's key for live
// uploads, so the two never collide.
const digestLockNS = 0x706d646c // "pmdl"

// lockPoolConns caps the connections held by LockDigest at once. They come
// from a pool of their own so that a lock holder, which needs a second
// connection to write its record, can never wait on a pool its fellow
// holders have drained.
const lockPoolConns = 4

func newLockPool(ctx context.Context, cfg *pgxpool.Config) (*pgxpool.Pool, error) {
	c := cfg.Copy()
	c.MaxConns, c.MinConns = lockPoolConns, 0
	return pgxpool.NewWithConfig(ctx, c)
}

// LockDigest waits until no other holder of digest's lock, in this
// process or any other sharing the PostgreSQL database, holds it, and
// returns the function that releases it. Nodes sharing one database (and
// its blob store) take it around every step that makes a blob and its
// patch record agree: an upload from its blob commit to its record, a
// patch removal from its record to its blob, an orphan's removal. So a
// node cannot delete a blob another node has just committed and is about
// to record.
//
// It is pg_advisory_xact_lock in a transaction of its own that release
// rolls back: a node that dies holding it loses its connection, and the
// lock with it. The context bounds the wait; a request that goes away
// gives the lock up at once. On SQLite, whose database one node holds
// alone (the data directory lock), it returns at once.
func (s *Store) LockDigest(ctx context.Context, digest string) (release func(), err error) {
	defer s.done("LockDigest", time.Now(), &err)
	if s.locks == nil {
		return func() {}, nil
	}
	conn, err := s.locks.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: lock digest: %w", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("sqlstore: lock digest: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1::integer, hashtext($2))`, digestLockNS, digest); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		conn.Release()
		return nil, fmt.Errorf("sqlstore: lock digest: %w", err)
	}
	return func() {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		conn.Release()
	}, nil
}
