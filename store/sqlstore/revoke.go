package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// RevokeEnrollment revokes an enrollment token and, with machines, the
// machines registered here with it, logging (and on the hub sealing) the
// token.revoked event that carries both to every node of the token's tier.
func (s *Store) RevokeEnrollment(ctx context.Context, id string, at time.Time, machines bool) (ids []string, err error) {
	defer s.done("RevokeEnrollment", time.Now(), &err)
	at = s.orNow(at)
	err = s.change(ctx, func(c *changeTx) error {
		ids = nil
		t, err := scanToken(c.tx.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = $1 AND kind = $2`,
			id, string(catalog.TokenAuth)))
		if err != nil {
			return err
		}
		changed := false
		if t.Revoked.IsZero() {
			if _, err := c.tx.ExecContext(ctx, `UPDATE tokens SET revoked_us = $1 WHERE id = $2`, us(at), id); err != nil {
				return err
			}
			t.Revoked, changed = at, true
		}
		if machines && !t.RevokeMachines {
			if err := c.revokeEnrolled(ctx, &t, t.Revoked); err != nil {
				return err
			}
			ids, changed = c.revokedMachines, true
		}
		if !changed {
			return nil // revoked already, as asked: nothing to log
		}
		return c.tokenEvent(ctx, catalog.EventTokenRevoked, t)
	})
	if err != nil {
		return nil, mapErr("revoke auth token "+id, err)
	}
	return ids, nil
}

// revokeEnrolled marks the revoked enrollment token t as having taken its
// machines, and revokes every live machine registered here with it at at.
// The IDs revoked are appended to c.revokedMachines.
func (c *changeTx) revokeEnrolled(ctx context.Context, t *catalog.Token, at time.Time) error {
	if _, err := c.tx.ExecContext(ctx, `UPDATE tokens SET revoke_machines = 1 WHERE id = $1`, t.ID); err != nil {
		return err
	}
	t.RevokeMachines = true
	rows, err := c.tx.QueryContext(ctx, `SELECT id FROM machines WHERE enrolled_by = $1 AND revoked_us IS NULL ORDER BY id`, t.ID)
	if err != nil {
		return err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := revokeMachine(ctx, c.tx, id, at); err != nil {
			return err
		}
	}
	c.revokedMachines = append(c.revokedMachines, ids...)
	return nil
}

// revokeMachine revokes machine id and its live machine tokens at at,
// unless it is revoked already; it reports whether anything changed.
func revokeMachine(ctx context.Context, q querier, id string, at time.Time) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE machines SET revoked_us = $1 WHERE id = $2 AND revoked_us IS NULL`, us(at), id)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil || n == 0 {
		return false, err
	}
	_, err = q.ExecContext(ctx, `UPDATE tokens SET revoked_us = $1 WHERE kind = 'machine' AND machine_id = $2 AND revoked_us IS NULL`,
		us(at), id)
	return true, err
}

// RevokeMachine revokes a machine and its machine tokens; it stays
// listed, revoked, and may not register here again until deleted.
func (s *Store) RevokeMachine(ctx context.Context, id string, at time.Time) (m catalog.Machine, err error) {
	defer s.done("RevokeMachine", time.Now(), &err)
	at = s.orNow(at)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := revokeMachine(ctx, tx, id, at); err != nil {
			return err
		}
		m, err = scanMachine(tx.QueryRowContext(ctx, `SELECT `+machineCols+` FROM machines WHERE id = $1`, id))
		return err
	})
	if err != nil {
		return catalog.Machine{}, mapErr("revoke machine "+id, err)
	}
	return m, nil
}

// DeleteMachine forgets a machine and deletes its machine tokens.
func (s *Store) DeleteMachine(ctx context.Context, id string) (err error) {
	defer s.done("DeleteMachine", time.Now(), &err)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		// The machine row first: it is locked until the commit, so a
		// registration racing the delete either came before (its token
		// is deleted below) or comes after, as a new machine.
		res, err := tx.ExecContext(ctx, `DELETE FROM machines WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return sql.ErrNoRows
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM tokens WHERE kind = 'machine' AND machine_id = $1`, id)
		return err
	})
	return mapErr("delete machine "+id, err)
}

// RevokeAdminSessions refuses every macaroon minted for user at or before
// at. The bound only moves forward, so two revocations racing keep the
// later.
func (s *Store) RevokeAdminSessions(ctx context.Context, user string, at time.Time) (err error) {
	defer s.done("RevokeAdminSessions", time.Now(), &err)
	if err := catalog.ValidName("user", user); err != nil {
		return fmt.Errorf("sqlstore: revoke admin sessions: %w", err)
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO admin_sessions_revoked (name, not_before_us) VALUES ($1, $2)
			ON CONFLICT (name) DO UPDATE SET not_before_us = excluded.not_before_us
			WHERE admin_sessions_revoked.not_before_us < excluded.not_before_us`, user, us(s.orNow(at)))
		return err
	})
	return mapErr("revoke admin sessions of "+user, err)
}

// AdminSessionsNotBefore is the bound RevokeAdminSessions set for user,
// zero if none.
func (s *Store) AdminSessionsNotBefore(ctx context.Context, user string) (t time.Time, err error) {
	defer s.done("AdminSessionsNotBefore", time.Now(), &err)
	var v int64
	err = s.db.QueryRowContext(ctx, `SELECT not_before_us FROM admin_sessions_revoked WHERE name = $1`, user).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, mapErr("admin sessions of "+user, err)
	}
	return fromUS(v), nil
}
