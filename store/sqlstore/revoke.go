package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/migrations"
	"github.com/patchmesh/patchmesh/store"
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
	ids, err := queryAll(ctx, c.tx, `SELECT id FROM machines WHERE enrolled_by = $1 AND revoked_us IS NULL ORDER BY id`,
		[]any{t.ID}, scanString)
	if err != nil {
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

// RevokeMachine revokes a machine and its machine tokens; see
// store.Revocations. On the hub it records the revocation by ID and seals
// it on every tier; elsewhere it revokes the machine registered here.
func (s *Store) RevokeMachine(ctx context.Context, id string, at time.Time) (out store.MachineRevoked, err error) {
	defer s.done("RevokeMachine", time.Now(), &err)
	if err := validMachineID(id); err != nil {
		return store.MachineRevoked{}, fmt.Errorf("sqlstore: revoke machine: %w", err)
	}
	at = s.orNow(at)
	if s.sealer == nil {
		err = s.inTx(ctx, func(tx *sql.Tx) error {
			if _, err := revokeMachine(ctx, tx, id, at); err != nil {
				return err
			}
			m, err := scanMachine(tx.QueryRowContext(ctx, `SELECT `+machineCols+` FROM machines WHERE id = $1`, id))
			out = store.MachineRevoked{Machine: &m}
			return err
		})
		if err != nil {
			return store.MachineRevoked{}, mapErr("revoke machine "+id, err)
		}
		return out, nil
	}
	err = s.change(ctx, func(c *changeTx) error {
		out = store.MachineRevoked{Mesh: true}
		if err := s.lockMachineID(ctx, c.tx, id); err != nil {
			return err
		}
		rev, err := machineRevocation(ctx, c.tx, id)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			rev = catalog.MachineRevocation{ID: id, Revoked: at}
		case err != nil:
			return err
		case rev.Lifted.IsZero():
			// Standing: the first time stays; sealed again below.
		default:
			// Revoked again after a lift: strictly later than the
			// revocation lifted, so that a node applying the records of
			// two tiers in any interleaving tells the new revocation
			// from a late copy of the old one.
			rev = catalog.MachineRevocation{ID: id, Revoked: maxTime(at, rev.Revoked.Add(time.Microsecond))}
		}
		if err := putMachineRevocation(ctx, c.tx, rev); err != nil {
			return err
		}
		if _, err := revokeMachine(ctx, c.tx, id, rev.Revoked); err != nil {
			return err
		}
		m, err := scanMachine(c.tx.QueryRowContext(ctx, `SELECT `+machineCols+` FROM machines WHERE id = $1`, id))
		switch {
		case err == nil:
			out.Machine = &m
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		out.Revocation = rev
		out.Tiers, err = c.machineEventEachTier(ctx, catalog.EventMachineRevoked, rev)
		return err
	})
	if err != nil {
		return store.MachineRevoked{}, mapErr("revoke machine "+id, err)
	}
	return out, nil
}

// DeleteMachine forgets a machine and deletes its machine tokens; on the
// hub it also lifts the machine's standing revocation on every tier. See
// store.Revocations.
func (s *Store) DeleteMachine(ctx context.Context, id string) (out store.MachineDeleted, err error) {
	defer s.done("DeleteMachine", time.Now(), &err)
	if err := validMachineID(id); err != nil {
		return store.MachineDeleted{}, fmt.Errorf("sqlstore: delete machine: %w", err)
	}
	forget := func(tx *sql.Tx) error {
		out = store.MachineDeleted{}
		var err error
		out.Forgotten, err = forgetMachine(ctx, tx, id)
		return err
	}
	if s.sealer == nil {
		err = s.inTx(ctx, forget)
	} else {
		err = s.change(ctx, func(c *changeTx) error {
			if err := forget(c.tx); err != nil {
				return err
			}
			return s.liftMachineRevocation(ctx, c, id, &out)
		})
	}
	if err == nil && !out.Forgotten && out.Lifted == nil {
		err = sql.ErrNoRows
	}
	if err != nil {
		return store.MachineDeleted{}, mapErr("delete machine "+id, err)
	}
	return out, nil
}

// liftMachineRevocation lifts the hub's standing revocation of id, if
// there is one, sealing a machine.deleted event on every tier.
func (s *Store) liftMachineRevocation(ctx context.Context, c *changeTx, id string, out *store.MachineDeleted) error {
	if err := s.lockMachineID(ctx, c.tx, id); err != nil {
		return err
	}
	rev, err := machineRevocation(ctx, c.tx, id)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !rev.Lifted.IsZero()) {
		return nil
	}
	if err != nil {
		return err
	}
	rev.Lifted = maxTime(c.now, rev.Revoked)
	if err := putMachineRevocation(ctx, c.tx, rev); err != nil {
		return err
	}
	out.Lifted = &rev
	out.Tiers, err = c.machineEventEachTier(ctx, catalog.EventMachineDeleted, rev)
	return err
}

// forgetMachine deletes machine id and its machine tokens, reporting
// whether it was registered here.
func forgetMachine(ctx context.Context, q querier, id string) (bool, error) {
	// The machine row first: it is locked until the commit, so a
	// registration racing the delete either came before (its token is
	// deleted below) or comes after, as a new machine.
	res, err := q.ExecContext(ctx, `DELETE FROM machines WHERE id = $1`, id)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	_, err = q.ExecContext(ctx, `DELETE FROM tokens WHERE kind = 'machine' AND machine_id = $1`, id)
	return n > 0, err
}

// machineEventEachTier logs a machine event on every tier, in tier order,
// sealed on the hub, and returns the tiers. A machine's ID is an HMAC the
// hub cannot map to a tier, and the machine may register at any node of
// its tier, so every tier's feed carries it: every node then holds it.
func (c *changeTx) machineEventEachTier(ctx context.Context, typ catalog.EventType, rev catalog.MachineRevocation) ([]string, error) {
	ts, err := tiers(ctx, c.tx)
	if err != nil {
		return nil, err
	}
	names := []string{}
	for _, t := range ts {
		r := rev
		if err := c.sealedEvent(ctx, logEntry{typ: typ, tier: t.Name, data: r},
			store.SealRequest{Machine: &r}, "machine "+rev.ID); err != nil {
			return nil, err
		}
		names = append(names, t.Name)
	}
	return names, nil
}

// MachineRevocation returns the hub's word on machine id as held here.
func (s *Store) MachineRevocation(ctx context.Context, id string) (rev catalog.MachineRevocation, err error) {
	defer s.done("MachineRevocation", time.Now(), &err)
	rev, err = machineRevocation(ctx, s.db, id)
	if err != nil {
		return catalog.MachineRevocation{}, mapErr("machine revocation "+id, err)
	}
	return rev, nil
}

func machineRevocation(ctx context.Context, q querier, id string) (catalog.MachineRevocation, error) {
	var (
		revoked int64
		lifted  sql.NullInt64
	)
	err := q.QueryRowContext(ctx, `SELECT revoked_us, lifted_us FROM machine_revocations WHERE id = $1`, id).Scan(&revoked, &lifted)
	if err != nil {
		return catalog.MachineRevocation{}, err
	}
	return catalog.MachineRevocation{ID: id, Revoked: fromUS(revoked), Lifted: fromNullUS(lifted)}, nil
}

func putMachineRevocation(ctx context.Context, q querier, rev catalog.MachineRevocation) error {
	_, err := q.ExecContext(ctx, `INSERT INTO machine_revocations (id, revoked_us, lifted_us) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET revoked_us = excluded.revoked_us, lifted_us = excluded.lifted_us`,
		rev.ID, us(rev.Revoked), nullUS(rev.Lifted))
	return err
}

// machineRevoked reports whether a hub revocation of id stands here.
func machineRevoked(ctx context.Context, q querier, id string) (bool, error) {
	var one int
	err := q.QueryRowContext(ctx, `SELECT 1 FROM machine_revocations WHERE id = $1 AND lifted_us IS NULL`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// machineLockNS is the first key of the advisory lock lockMachineID
// takes; the second is hashtext(id). It differs from LockDigest's.
const machineLockNS = 0x706d6d69 // "pmmi"

// lockMachineID serialises, until tx ends, the transactions that decide
// whether machine id may hold a token: registration, and the hub's
// revocation made or applied here. Under READ COMMITTED neither sees the
// other's uncommitted rows (a new machine row, a new revocation row), so
// without it a registration racing a revocation could commit a live
// machine the revocation never saw. SQLite's BEGIN IMMEDIATE serialises
// every writer already.
func (s *Store) lockMachineID(ctx context.Context, tx *sql.Tx, id string) error {
	return lockMachineID(ctx, tx, s.dialect, id)
}

func lockMachineID(ctx context.Context, tx *sql.Tx, d migrations.Dialect, id string) error {
	if d != migrations.Postgres {
		return nil
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1::integer, hashtext($2))`, machineLockNS, id)
	return err
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// validMachineID checks a stored machine ID: the hex HMAC-SHA256 the
// node's machine key makes of a machine's own ID.
func validMachineID(id string) error {
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		return &catalog.InvalidError{Field: "id", Message: "must be a machine ID: 64 lowercase hex digits"}
	}
	return nil
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

// checkSyncedMachine checks the revocation of a machine event against
// what the store keeps of one.
func checkSyncedMachine(ev store.SyncedEvent) error {
	m := ev.Machine
	if m == nil {
		return &catalog.InvalidError{Field: "machine", Message: fmt.Sprintf("must be set for a %s event", ev.Type)}
	}
	if ev.Token != nil || ev.Node != nil || ev.Rollout != nil {
		return &catalog.InvalidError{Field: "machine", Message: fmt.Sprintf("a %s event carries a machine only", ev.Type)}
	}
	if validMachineID(m.ID) != nil {
		return &catalog.InvalidError{Field: "machine.id", Message: "must be a machine ID: 64 lowercase hex digits"}
	}
	if m.Revoked.IsZero() {
		return &catalog.InvalidError{Field: "machine.revoked", Message: "must be set"}
	}
	switch lifted := !m.Lifted.IsZero(); {
	case ev.Type == catalog.EventMachineDeleted && !lifted:
		return &catalog.InvalidError{Field: "machine.lifted", Message: "must be set for a machine.deleted event"}
	case ev.Type == catalog.EventMachineRevoked && lifted:
		return &catalog.InvalidError{Field: "machine.lifted", Message: "must be empty for a machine.revoked event"}
	}
	return nil
}

// applySyncedMachine applies one synced machine event and logs it under
// tierName with its record. The hub seals each on every tier, so a node
// serving several tiers applies each several times, in any interleaving
// of the tiers' sequences: the revocation held per ID only moves forward.
// A revocation stands unless one stands already or the one held was
// lifted and is not older (then this is a late copy); a deletion lifts
// the standing revocation it names or an earlier one, never a later one,
// and forgets the machine registered here, so it may register again.
func (c *changeTx) applySyncedMachine(ctx context.Context, tierName string, ev store.SyncedEvent) error {
	in := *ev.Machine
	in.Revoked = in.Revoked.UTC().Truncate(time.Microsecond)
	if !in.Lifted.IsZero() {
		in.Lifted = in.Lifted.UTC().Truncate(time.Microsecond)
	}
	if err := lockMachineID(ctx, c.tx, c.dialect, in.ID); err != nil {
		return err
	}
	held, err := machineRevocation(ctx, c.tx, in.ID)
	have := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	switch ev.Type {
	case catalog.EventMachineRevoked:
		if !have || (!held.Lifted.IsZero() && in.Revoked.After(held.Revoked)) {
			if err := putMachineRevocation(ctx, c.tx, in); err != nil {
				return err
			}
			held, have = in, true
		}
		if held.Lifted.IsZero() {
			if _, err := revokeMachine(ctx, c.tx, in.ID, held.Revoked); err != nil {
				return err
			}
		}
	case catalog.EventMachineDeleted:
		if have && held.Lifted.IsZero() && !held.Revoked.After(in.Revoked) {
			held.Lifted = in.Lifted
			if err := putMachineRevocation(ctx, c.tx, held); err != nil {
				return err
			}
			if _, err := forgetMachine(ctx, c.tx, in.ID); err != nil {
				return err
			}
		}
	default:
		return errors.New("not a machine event")
	}
	data := in
	if have {
		data = held
	}
	return c.append(ctx, logEntry{
		typ: ev.Type, tier: tierName, data: data,
		record: ev.Record, sig: ev.Sig, hubSeq: ev.HubSeq,
	})
}
