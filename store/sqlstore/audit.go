package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/patchmesh/patchmesh/store"
)

// audit writes the audit row of an admin change in its transaction, when
// ctx carries the actor (store.WithActor). Changes made by the node itself
// (sync, maintenance) carry none and are not audited.
func (s *Store) audit(ctx context.Context, tx *sql.Tx) error {
	a, ok := store.ActorFrom(ctx)
	if !ok {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO audit_log
		(at_us, user_name, token_id, request_id, client, action, target)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		us(s.now()), a.User, a.TokenID, a.RequestID, a.Client, a.Action, a.Target)
	if err != nil {
		return fmt.Errorf("audit %s: %w", a.Action, err)
	}
	return nil
}

// Audit lists audit entries matching f, newest first.
func (s *Store) Audit(ctx context.Context, f store.AuditFilter) (es []store.AuditEntry, err error) {
	defer s.done("Audit", time.Now(), &err)
	q := `SELECT id, at_us, user_name, token_id, request_id, client, action, target
		FROM audit_log WHERE at_us >= $1`
	args := []any{us(f.Since)}
	if f.Since.IsZero() {
		args[0] = int64(0)
	}
	if f.Before > 0 {
		q += ` AND id < $2`
		args = append(args, f.Before)
	}
	q += fmt.Sprintf(` ORDER BY id DESC LIMIT %d`, limit(f.Limit))
	es, err = queryAll(ctx, s.db, q, args, func(r scanner) (store.AuditEntry, error) {
		var e store.AuditEntry
		var at int64
		err := r.Scan(&e.ID, &at, &e.User, &e.TokenID, &e.RequestID, &e.Client, &e.Action, &e.Target)
		e.At = fromUS(at)
		return e, err
	})
	return es, mapErr("audit", err)
}

// queryAll runs a query and scans every row with scan; an empty result is
// an empty, non-nil slice.
func queryAll[T any](ctx context.Context, q querier, query string, args []any, scan func(scanner) (T, error)) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// scanString reads a row of one text column, for queryAll.
func scanString(r scanner) (string, error) {
	var s string
	err := r.Scan(&s)
	return s, err
}
