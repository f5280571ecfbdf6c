package sqlstore

// Join tokens: the hub's one-time tokens for new nodes (store.JoinTokens).

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

const joinTokenCols = `id, name, mac_key, tiers, created_by, created_us, expires_us, failures, used_us, used_key_id, used_from`

func scanJoinToken(r scanner) (store.JoinToken, error) {
	var (
		t                store.JoinToken
		tiers            string
		created, expires int64
		used             sql.NullInt64
		usedKey, from    sql.NullString
	)
	if err := r.Scan(&t.ID, &t.Name, &t.MACKey, &tiers, &t.CreatedBy, &created, &expires, &t.Failures, &used, &usedKey, &from); err != nil {
		return t, err
	}
	if err := json.Unmarshal([]byte(tiers), &t.Tiers); err != nil {
		return t, fmt.Errorf("join token %s: tiers: %w", t.ID, err)
	}
	t.Created, t.Expires, t.Used = fromUS(created), fromUS(expires), fromNullUS(used)
	t.UsedKeyID, t.UsedFrom = usedKey.String, from.String
	return t, nil
}

// AddJoinToken implements store.JoinTokens.
func (s *Store) AddJoinToken(ctx context.Context, t store.JoinToken) (err error) {
	defer s.done("AddJoinToken", time.Now(), &err)
	if t.ID == "" || t.MACKey == "" || !t.Expires.After(t.Created) {
		return &catalog.InvalidError{Field: "join_token", Message: "needs an ID, a MAC key and an expiry after its creation"}
	}
	if err := catalog.ValidNodeName("name", t.Name); err != nil {
		return err
	}
	if t.Tiers == nil {
		t.Tiers = []string{}
	}
	tiers, err := json.Marshal(t.Tiers)
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO join_tokens (id, name, mac_key, tiers, created_by, created_us, expires_us)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, t.ID, t.Name, t.MACKey, string(tiers), t.CreatedBy, us(t.Created), us(t.Expires))
		return err
	})
	return mapErr("add join token "+t.ID, err)
}

// JoinToken implements store.JoinTokens.
func (s *Store) JoinToken(ctx context.Context, id string) (t store.JoinToken, err error) {
	defer s.done("JoinToken", time.Now(), &err)
	t, err = scanJoinToken(s.db.QueryRowContext(ctx, `SELECT `+joinTokenCols+` FROM join_tokens WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("sqlstore: join token %s: %w", id, catalog.ErrNotFound)
	}
	return t, mapErr("join token "+id, err)
}

// JoinTokens implements store.JoinTokens.
func (s *Store) JoinTokens(ctx context.Context) (out []store.JoinToken, err error) {
	defer s.done("JoinTokens", time.Now(), &err)
	out, err = queryAll(ctx, s.db, `SELECT `+joinTokenCols+` FROM join_tokens ORDER BY created_us DESC, id`, nil, scanJoinToken)
	return out, mapErr("join tokens", err)
}

// FailJoinToken implements store.JoinTokens.
func (s *Store) FailJoinToken(ctx context.Context, id string) (n int, err error) {
	defer s.done("FailJoinToken", time.Now(), &err)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE join_tokens SET failures = failures + 1 WHERE id = $1`, id); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT failures FROM join_tokens WHERE id = $1`, id).Scan(&n)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("sqlstore: join token %s: %w", id, catalog.ErrNotFound)
	}
	return n, mapErr("fail join token "+id, err)
}

// UseJoinToken implements store.JoinTokens: a compare-and-set on the
// token's use, failures and expiry, so that two joins racing on one token
// cannot both win, and a wrong answer counted while a right one was on
// its way still kills the token.
func (s *Store) UseJoinToken(ctx context.Context, id, keyID, addr string, at time.Time, maxFailures int) (err error) {
	defer s.done("UseJoinToken", time.Now(), &err)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE join_tokens SET used_us = $1, used_key_id = $2, used_from = $3
			WHERE id = $4 AND used_us IS NULL AND failures < $5 AND expires_us > $1`, us(at), keyID, addr, id, maxFailures)
		if err != nil {
			return err
		}
		if k, err := res.RowsAffected(); err != nil {
			return err
		} else if k == 0 {
			return fmt.Errorf("join token %s is used, dead or expired: %w", id, catalog.ErrConflict)
		}
		return nil
	})
	return mapErr("use join token "+id, err)
}
