package sqlstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/migrations"
	"github.com/patchmesh/patchmesh/store"
)

// maxIDLen bounds the opaque IDs (token IDs, root key IDs) the store keeps.
const maxIDLen = 128

func validID(field, id string) error {
	if id == "" || len(id) > maxIDLen {
		return &catalog.InvalidError{Field: field, Message: fmt.Sprintf("must be 1-%d characters", maxIDLen)}
	}
	return nil
}

var tokenKinds = []catalog.TokenKind{catalog.TokenAuth, catalog.TokenMachine, catalog.TokenSync}

func validKind(k catalog.TokenKind) error {
	if !slices.Contains(tokenKinds, k) {
		return &catalog.InvalidError{Field: "kind", Message: "must be auth, machine or sync"}
	}
	return nil
}

func validToken(t catalog.Token) error {
	if err := validID("id", t.ID); err != nil {
		return err
	}
	if err := validKind(t.Kind); err != nil {
		return err
	}
	if err := catalog.ValidName("tier", t.Tier); err != nil {
		return err
	}
	if err := catalog.ValidName("name", t.Name); err != nil {
		return err
	}
	if len(t.Hash) != sha256.Size {
		return &catalog.InvalidError{Field: "hash", Message: "must be a SHA-256 (32 bytes)"}
	}
	if (t.Kind == catalog.TokenMachine) != (t.MachineID != "") {
		return &catalog.InvalidError{Field: "machine_id", Message: "is set on machine tokens and only on them"}
	}
	return nil
}

const tokenCols = `id, kind, tier, name, hash, created_us, expires_us, revoked_us, machine_id, revoke_machines`

func scanToken(r scanner) (catalog.Token, error) {
	var (
		t                catalog.Token
		kind             string
		created          int64
		expires, revoked sql.NullInt64
		machine          sql.NullString
		machines         int64
	)
	if err := r.Scan(&t.ID, &kind, &t.Tier, &t.Name, &t.Hash, &created, &expires, &revoked, &machine, &machines); err != nil {
		return t, err
	}
	t.RevokeMachines = machines != 0
	t.Kind = catalog.TokenKind(kind)
	t.Created = fromUS(created)
	t.Expires = fromNullUS(expires)
	t.Revoked = fromNullUS(revoked)
	t.MachineID = machine.String
	return t, nil
}

func insertToken(ctx context.Context, q querier, t catalog.Token) error {
	var machine sql.NullString
	if t.MachineID != "" {
		machine = sql.NullString{String: t.MachineID, Valid: true}
	}
	_, err := q.ExecContext(ctx, `INSERT INTO tokens (`+tokenCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		t.ID, string(t.Kind), t.Tier, t.Name, t.Hash, us(t.Created), nullUS(t.Expires), nullUS(t.Revoked), machine,
		boolInt(t.RevokeMachines && !t.Revoked.IsZero()))
	if classify(err) == foreignKeyViolation {
		return fmt.Errorf("tier %q: %w", t.Tier, catalog.ErrNotFound)
	}
	return err
}

// AddToken stores a new token. A zero Created becomes now.
//
// An enrollment (auth) token is a catalog change: it logs a token.added
// event on its tier, sealed on the hub, so that every node serving the
// tier lets machines register with it. One added already revoked logs a
// token.revoked after it, so that no node ever holds it live. Sync and
// machine tokens belong to this node alone and log nothing.
func (s *Store) AddToken(ctx context.Context, t catalog.Token) (err error) {
	defer s.done("AddToken", time.Now(), &err)
	if err := validToken(t); err != nil {
		return fmt.Errorf("sqlstore: add token: %w", err)
	}
	t.Created = s.orNow(t.Created)
	if !t.Revoked.IsZero() {
		t.Revoked = s.orNow(t.Revoked)
	}
	if t.Kind != catalog.TokenAuth {
		// A transaction all the same, for the audit row of an admin's
		// sync token.
		err = s.inTx(ctx, func(tx *sql.Tx) error { return insertToken(ctx, tx, t) })
		return mapErr("add token "+t.ID, err)
	}
	err = s.change(ctx, func(c *changeTx) error {
		if err := insertToken(ctx, c.tx, t); err != nil {
			return err
		}
		added := t
		added.Revoked, added.RevokeMachines = time.Time{}, false
		if err := c.tokenEvent(ctx, catalog.EventTokenAdded, added); err != nil {
			return err
		}
		if t.Revoked.IsZero() {
			return nil
		}
		return c.tokenEvent(ctx, catalog.EventTokenRevoked, t)
	})
	return mapErr("add token "+t.ID, err)
}

// tokenQuery reads one token by ID.
const tokenQuery = `SELECT ` + tokenCols + ` FROM tokens WHERE id = $1`

// Token returns a token by ID, revoked or not.
func (s *Store) Token(ctx context.Context, id string) (t catalog.Token, err error) {
	defer s.done("Token", time.Now(), &err)
	if s.token != nil {
		t, err = scanToken(s.token.QueryRowContext(ctx, id))
	} else {
		t, err = scanToken(s.db.QueryRowContext(ctx, tokenQuery, id))
	}
	if err != nil {
		return catalog.Token{}, mapErr("token "+id, err)
	}
	return t, nil
}

// tokensQuery is the listing query for f and its arguments.
func tokensQuery(f store.TokenFilter) (string, []any) {
	q := `SELECT ` + tokenCols + ` FROM tokens WHERE kind = $1`
	args := []any{string(f.Kind)}
	if a := f.After; a != nil {
		args = append(args, us(a.Created), a.ID)
		q += ` AND (created_us, id) < ($2, $3)`
	}
	q += fmt.Sprintf(` ORDER BY created_us DESC, id DESC LIMIT %d`, limit(f.Limit)) // see patchesQuery
	return q, args
}

// Tokens lists tokens of one kind, newest first, revoked ones included, a
// page at a time.
func (s *Store) Tokens(ctx context.Context, f store.TokenFilter) (ts []catalog.Token, err error) {
	defer s.done("Tokens", time.Now(), &err)
	q, args := tokensQuery(f)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, mapErr("tokens", err)
	}
	defer rows.Close()
	ts = []catalog.Token{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, mapErr("tokens", err)
		}
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("tokens", err)
	}
	return ts, nil
}

// RevokeToken marks a token of kind revoked at the given time. Revoking a
// revoked token keeps the first revocation time. A token of another kind is
// not found, so one kind's endpoint cannot revoke another's tokens.
//
// Revoking an enrollment (auth) token is a catalog change, logging a
// token.revoked event on its tier (sealed on the hub), so that every node
// the token reached stops accepting it. Revoking a revoked one logs
// nothing, as nothing changed.
func (s *Store) RevokeToken(ctx context.Context, kind catalog.TokenKind, id string, at time.Time) (err error) {
	defer s.done("RevokeToken", time.Now(), &err)
	at = s.orNow(at)
	if kind != catalog.TokenAuth {
		err = s.inTx(ctx, func(tx *sql.Tx) error {
			_, _, err := revokeToken(ctx, tx, kind, id, at)
			return err
		})
	} else {
		err = s.change(ctx, func(c *changeTx) error {
			t, changed, err := revokeToken(ctx, c.tx, kind, id, at)
			if err != nil || !changed {
				return err
			}
			return c.tokenEvent(ctx, catalog.EventTokenRevoked, t)
		})
	}
	return mapErr(fmt.Sprintf("revoke %s token %s", kind, id), err)
}

// revokeToken revokes the token of kind with this id at at, unless it is
// revoked already, and returns the token as it stands after, and whether
// it changed. sql.ErrNoRows if there is no such token of kind.
func revokeToken(ctx context.Context, q querier, kind catalog.TokenKind, id string, at time.Time) (catalog.Token, bool, error) {
	t, err := scanToken(q.QueryRowContext(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = $1 AND kind = $2`, id, string(kind)))
	if err != nil || !t.Revoked.IsZero() {
		return t, false, err
	}
	if _, err := q.ExecContext(ctx, `UPDATE tokens SET revoked_us = $1 WHERE id = $2`, us(at), id); err != nil {
		return t, false, err
	}
	t.Revoked = at
	return t, true, nil
}

func validMachine(m catalog.Machine) error {
	if err := catalog.ValidName("id", m.ID); err != nil {
		return err
	}
	if err := catalog.ValidName("tier", m.Tier); err != nil {
		return err
	}
	return validReport(m)
}

// validReport checks what a machine reports; empty fields mean "not reported".
func validReport(m catalog.Machine) error {
	if m.Kernel != "" {
		if err := catalog.ValidKernel(m.Kernel); err != nil {
			return err
		}
	}
	if m.Arch != "" {
		if err := catalog.ValidArch(m.Arch); err != nil {
			return err
		}
	}
	if m.State != "" {
		if err := catalog.ValidState(m.State); err != nil {
			return err
		}
	}
	if m.PatchVersion != "" {
		if err := catalog.ValidVersion(m.PatchVersion); err != nil {
			return &catalog.InvalidError{Field: "patch_version", Message: "must be up to four dot-separated numbers, such as 107.1"}
		}
	}
	if m.ClientVersion != "" {
		if err := catalog.ValidClientVersion(m.ClientVersion); err != nil {
			return err
		}
	}
	if m.UptimeSeconds < 0 {
		return &catalog.InvalidError{Field: "uptime_seconds", Message: "must not be negative"}
	}
	return nil
}

// RegisterMachine records (or re-records) a machine with its new machine
// token, revoking the machine's earlier machine tokens, in one transaction.
// A zero Registered or LastSeen becomes now; an empty State is unknown.
func (s *Store) RegisterMachine(ctx context.Context, m catalog.Machine, t catalog.Token) (err error) {
	defer s.done("RegisterMachine", time.Now(), &err)
	m, t, err = s.machineToRegister(m, t)
	if err != nil {
		return err
	}
	now := s.now()
	err = s.inTx(ctx, func(tx *sql.Tx) error { return s.registerMachineTx(ctx, tx, m, t, now) })
	return mapErr("register machine "+m.ID, err)
}

// RegisterMachines is RegisterMachine for ms[i] with ts[i], every one in a
// single transaction: all are registered or none. It is there for bulk
// loads (bench/seed registers 100,000 machines with it), which one
// transaction per machine, each synced to disk, would make take minutes.
func (s *Store) RegisterMachines(ctx context.Context, ms []catalog.Machine, ts []catalog.Token) (err error) {
	defer s.done("RegisterMachines", time.Now(), &err)
	if len(ms) != len(ts) {
		return fmt.Errorf("sqlstore: register machines: %d machines, %d tokens", len(ms), len(ts))
	}
	// Filled in copies: the caller's slices stay as they were.
	ms, ts = slices.Clone(ms), slices.Clone(ts)
	for i := range ms {
		if ms[i], ts[i], err = s.machineToRegister(ms[i], ts[i]); err != nil {
			return err
		}
	}
	now := s.now()
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		for i := range ms {
			if err := s.registerMachineTx(ctx, tx, ms[i], ts[i], now); err != nil {
				return fmt.Errorf("machine %s: %w", ms[i].ID, err)
			}
		}
		return nil
	})
	return mapErr("register machines", err)
}

// machineToRegister checks a machine and its token for RegisterMachine
// and fills in the times and state left unset.
func (s *Store) machineToRegister(m catalog.Machine, t catalog.Token) (catalog.Machine, catalog.Token, error) {
	if err := validMachine(m); err != nil {
		return m, t, fmt.Errorf("sqlstore: register machine: %w", err)
	}
	if err := validToken(t); err != nil {
		return m, t, fmt.Errorf("sqlstore: register machine: token: %w", err)
	}
	if t.Kind != catalog.TokenMachine || t.MachineID != m.ID || t.Tier != m.Tier {
		return m, t, fmt.Errorf("sqlstore: register machine: %w", &catalog.InvalidError{
			Field: "token", Message: "must be a machine token for this machine and its tier"})
	}
	m.Registered = s.orNow(m.Registered)
	m.LastSeen = s.orNow(m.LastSeen)
	t.Created = s.orNow(t.Created)
	if m.State == "" {
		m.State = catalog.StateUnknown
	}
	return m, t, nil
}

// registerMachineTx writes one registration in tx: the machine's row, its
// earlier tokens revoked at now, its new token; it refuses a machine the
// hub revoked, or whose enrollment token was revoked with its machines.
func (s *Store) registerMachineTx(ctx context.Context, tx *sql.Tx, m catalog.Machine, t catalog.Token, now time.Time) error {
	var enrolledBy sql.NullString
	if m.EnrolledBy != "" {
		enrolledBy = sql.NullString{String: m.EnrolledBy, Valid: true}
	}
	// A hub revocation refuses the ID whether or not it registered here
	// before; the lock keeps one being applied from racing this.
	if err := s.lockMachineID(ctx, tx, m.ID); err != nil {
		return err
	}
	if revoked, err := machineRevoked(ctx, tx, m.ID); err != nil {
		return err
	} else if revoked {
		return fmt.Errorf("machine %s, by the hub: %w", m.ID, catalog.ErrRevoked)
	}
	if err := s.checkEnrollment(ctx, tx, m); err != nil {
		return err
	}
	// The update's WHERE is evaluated on the row as it stands once
	// locked, so a revocation committed at any moment before is seen:
	// a revoked machine gets no new token, even racing its revocation.
	// A registration by credential keeps the enrollment token the
	// machine last registered with here.
	res, err := tx.ExecContext(ctx, `INSERT INTO machines
		(id, tier, kernel, arch, state, patch_version, client_version, uptime_seconds, registered_us, last_seen_us, enrolled_by)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (id) DO UPDATE SET tier = excluded.tier, kernel = excluded.kernel, arch = excluded.arch,
			state = excluded.state, patch_version = excluded.patch_version,
			client_version = excluded.client_version, uptime_seconds = excluded.uptime_seconds,
			registered_us = excluded.registered_us, last_seen_us = excluded.last_seen_us,
			enrolled_by = COALESCE(excluded.enrolled_by, machines.enrolled_by)
		WHERE machines.revoked_us IS NULL`,
		m.ID, m.Tier, m.Kernel, m.Arch, string(m.State), m.PatchVersion, m.ClientVersion, m.UptimeSeconds,
		us(m.Registered), us(m.LastSeen), enrolledBy)
	if classify(err) == foreignKeyViolation {
		return fmt.Errorf("tier %q: %w", m.Tier, catalog.ErrNotFound)
	}
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return fmt.Errorf("machine %s: %w", m.ID, catalog.ErrRevoked)
	}
	if _, err := tx.ExecContext(ctx,
		`UPDATE tokens SET revoked_us = $1 WHERE kind = 'machine' AND machine_id = $2 AND revoked_us IS NULL`,
		us(now), m.ID); err != nil {
		return err
	}
	return insertToken(ctx, tx, t)
}

const machineCols = `id, tier, kernel, arch, state, patch_version, client_version, uptime_seconds, registered_us, last_seen_us,
	enrolled_by, revoked_us`

func scanMachine(r scanner) (catalog.Machine, error) {
	var (
		m          catalog.Machine
		state      string
		registered int64
		seen       int64
		enrolledBy sql.NullString
		revoked    sql.NullInt64
	)
	if err := r.Scan(&m.ID, &m.Tier, &m.Kernel, &m.Arch, &state, &m.PatchVersion, &m.ClientVersion,
		&m.UptimeSeconds, &registered, &seen, &enrolledBy, &revoked); err != nil {
		return m, err
	}
	m.EnrolledBy = enrolledBy.String
	m.Revoked = fromNullUS(revoked)
	m.State = catalog.MachineState(state)
	m.Registered = fromUS(registered)
	m.LastSeen = fromUS(seen)
	return m, nil
}

// Machine returns a machine by its (hashed) ID.
func (s *Store) Machine(ctx context.Context, id string) (m catalog.Machine, err error) {
	defer s.done("Machine", time.Now(), &err)
	m, err = scanMachine(s.db.QueryRowContext(ctx, `SELECT `+machineCols+` FROM machines WHERE id = $1`, id))
	if err != nil {
		return catalog.Machine{}, mapErr("machine "+id, err)
	}
	return m, nil
}

// CheckIn stores a machine's report. The machine's tier and registration
// time are not the machine's to change. A zero LastSeen becomes now; an
// empty State is unknown.
func (s *Store) CheckIn(ctx context.Context, m catalog.Machine) (err error) {
	defer s.done("CheckIn", time.Now(), &err)
	if err := validReport(m); err != nil {
		return fmt.Errorf("sqlstore: check in: %w", err)
	}
	if m.State == "" {
		m.State = catalog.StateUnknown
	}
	res, err := s.exec(ctx, `UPDATE machines SET kernel = $1, arch = $2, state = $3, patch_version = $4,
		client_version = $5, uptime_seconds = $6, last_seen_us = $7 WHERE id = $8`,
		m.Kernel, m.Arch, string(m.State), m.PatchVersion, m.ClientVersion, m.UptimeSeconds, us(s.orNow(m.LastSeen)), m.ID)
	if err != nil {
		return mapErr("check in "+m.ID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return mapErr("check in "+m.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("sqlstore: check in: machine %s: %w", m.ID, catalog.ErrNotFound)
	}
	return nil
}

// machinesQuery is the listing query for f and its arguments.
func machinesQuery(f store.MachineFilter) (string, []any) {
	q := `SELECT ` + machineCols + ` FROM machines WHERE 1 = 1`
	var args []any
	add := func(col string, v string) {
		args = append(args, v)
		q += fmt.Sprintf(" AND %s = $%d", col, len(args))
	}
	if f.Tier != "" {
		add("tier", f.Tier)
	}
	if f.Kernel != "" {
		add("kernel", f.Kernel)
	}
	if f.State != "" {
		add("state", string(f.State))
	}
	if a := f.After; a != nil {
		args = append(args, us(a.LastSeen), a.ID)
		q += fmt.Sprintf(" AND (last_seen_us, id) < ($%d, $%d)", len(args)-1, len(args))
	}
	q += fmt.Sprintf(" ORDER BY last_seen_us DESC, id DESC LIMIT %d", limit(f.Limit)) // see patchesQuery
	return q, args
}

// Machines lists machines matching f, most recently seen first.
func (s *Store) Machines(ctx context.Context, f store.MachineFilter) (ms []catalog.Machine, err error) {
	defer s.done("Machines", time.Now(), &err)
	q, args := machinesQuery(f)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, mapErr("machines", err)
	}
	defer rows.Close()
	ms = []catalog.Machine{}
	for rows.Next() {
		m, err := scanMachine(rows)
		if err != nil {
			return nil, mapErr("machines", err)
		}
		ms = append(ms, m)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("machines", err)
	}
	return ms, nil
}

const rootKeyCols = `id, key, created_us, mint_until_us, expires_us`

func scanRootKey(r scanner) (store.RootKey, error) {
	var (
		k                         store.RootKey
		created, until, expiresAt int64
	)
	if err := r.Scan(&k.ID, &k.Key, &created, &until, &expiresAt); err != nil {
		return k, err
	}
	k.Created, k.MintUntil, k.Expires = fromUS(created), fromUS(until), fromUS(expiresAt)
	return k, nil
}

// AddRootKey stores a new macaroon root key. ErrConflict if its ID exists.
func (s *Store) AddRootKey(ctx context.Context, k store.RootKey) (err error) {
	defer s.done("AddRootKey", time.Now(), &err)
	if err := validID("id", k.ID); err != nil {
		return fmt.Errorf("sqlstore: add root key: %w", err)
	}
	if len(k.Key) < 16 {
		return fmt.Errorf("sqlstore: add root key: %w", &catalog.InvalidError{Field: "key", Message: "must be at least 16 bytes"})
	}
	if k.MintUntil.IsZero() || k.Expires.IsZero() || k.Expires.Before(k.MintUntil) {
		return fmt.Errorf("sqlstore: add root key: %w", &catalog.InvalidError{
			Field: "expires", Message: "mint_until and expires must be set, expires not before mint_until"})
	}
	k.Created = s.orNow(k.Created)
	_, err = s.exec(ctx, `INSERT INTO root_keys (`+rootKeyCols+`) VALUES ($1, $2, $3, $4, $5)`,
		k.ID, k.Key, us(k.Created), us(k.MintUntil), us(k.Expires))
	return mapErr("add root key "+k.ID, err)
}

// RootKey returns a root key by ID, expired or not.
func (s *Store) RootKey(ctx context.Context, id string) (k store.RootKey, err error) {
	defer s.done("RootKey", time.Now(), &err)
	k, err = scanRootKey(s.db.QueryRowContext(ctx, `SELECT `+rootKeyCols+` FROM root_keys WHERE id = $1`, id))
	if err != nil {
		return store.RootKey{}, mapErr("root key "+id, err)
	}
	return k, nil
}

// MintingRootKey returns the newest key that may still mint at now.
func (s *Store) MintingRootKey(ctx context.Context, now time.Time) (k store.RootKey, err error) {
	defer s.done("MintingRootKey", time.Now(), &err)
	k, err = scanRootKey(s.db.QueryRowContext(ctx, `SELECT `+rootKeyCols+` FROM root_keys
		WHERE mint_until_us > $1 AND expires_us > $1 ORDER BY created_us DESC, id DESC LIMIT 1`, us(now)))
	if err != nil {
		return store.RootKey{}, mapErr("minting root key", err)
	}
	return k, nil
}

// PurgeRootKeys deletes keys whose Expires is at or before now.
func (s *Store) PurgeRootKeys(ctx context.Context, now time.Time) (n int, err error) {
	defer s.done("PurgeRootKeys", time.Now(), &err)
	res, err := s.exec(ctx, `DELETE FROM root_keys WHERE expires_us <= $1`, us(now))
	if err != nil {
		return 0, mapErr("purge root keys", err)
	}
	c, err := res.RowsAffected()
	if err != nil {
		return 0, mapErr("purge root keys", err)
	}
	return int(c), nil
}

// AdminUser returns a stored admin by name.
func (s *Store) AdminUser(ctx context.Context, name string) (u store.AdminUser, err error) {
	defer s.done("AdminUser", time.Now(), &err)
	var created int64
	err = s.db.QueryRowContext(ctx, `SELECT name, hash, created_us FROM admin_users WHERE name = $1`, name).
		Scan(&u.Name, &u.Hash, &created)
	if err != nil {
		return store.AdminUser{}, mapErr("admin user "+name, err)
	}
	u.Created = fromUS(created)
	return u, nil
}

// AdminUsers lists stored admins by name.
func (s *Store) AdminUsers(ctx context.Context) (admins []store.AdminUser, err error) {
	defer s.done("AdminUsers", time.Now(), &err)
	rows, err := s.db.QueryContext(ctx, `SELECT name, hash, created_us FROM admin_users ORDER BY name`)
	if err != nil {
		return nil, mapErr("admin users", err)
	}
	defer rows.Close()
	admins = []store.AdminUser{}
	for rows.Next() {
		var u store.AdminUser
		var created int64
		if err := rows.Scan(&u.Name, &u.Hash, &created); err != nil {
			return nil, mapErr("admin users", err)
		}
		u.Created = fromUS(created)
		admins = append(admins, u)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("admin users", err)
	}
	return admins, nil
}

// AddAdminUser stores an admin. A zero Created becomes now.
func (s *Store) AddAdminUser(ctx context.Context, u store.AdminUser) (err error) {
	defer s.done("AddAdminUser", time.Now(), &err)
	if err := catalog.ValidName("name", u.Name); err != nil {
		return fmt.Errorf("sqlstore: add admin user: %w", err)
	}
	if len(u.Hash) == 0 {
		return fmt.Errorf("sqlstore: add admin user: %w", &catalog.InvalidError{Field: "hash", Message: "must be set"})
	}
	_, err = s.exec(ctx, `INSERT INTO admin_users (name, hash, created_us) VALUES ($1, $2, $3)`,
		u.Name, u.Hash, us(s.orNow(u.Created)))
	return mapErr("add admin user "+u.Name, err)
}

// Secret returns the named secret, creating it from gen on first use. The
// insert is ON CONFLICT DO NOTHING and the value is read back afterwards, so
// when several callers (or nodes sharing the database) race on first use,
// one value wins and all of them return it.
func (s *Store) Secret(ctx context.Context, name string, gen func() ([]byte, error)) (v []byte, err error) {
	defer s.done("Secret", time.Now(), &err)
	read := func() ([]byte, error) {
		var v []byte
		err := s.db.QueryRowContext(ctx, `SELECT value FROM secrets WHERE name = $1`, name).Scan(&v)
		return v, err
	}
	v, err = read()
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, mapErr("secret "+name, err)
	}
	fresh, err := gen()
	if err != nil {
		return nil, fmt.Errorf("sqlstore: secret %s: generate: %w", name, err)
	}
	if len(fresh) == 0 {
		return nil, fmt.Errorf("sqlstore: secret %s: generator returned no bytes", name)
	}
	if _, err := s.exec(ctx,
		`INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, name, fresh); err != nil {
		return nil, mapErr("secret "+name, err)
	}
	if v, err = read(); err != nil {
		return nil, mapErr("secret "+name, err)
	}
	return v, nil
}

// checkEnrollment refuses a machine whose enrollment token (m.EnrolledBy,
// which a machine credential carries too) was revoked with its machines:
// revoking the token took the machines registered with it, and one that
// registers after, here or by credential anywhere, is one of them. On
// PostgreSQL the token row is read FOR SHARE, so a revocation racing the
// registration either commits first and is seen here, or waits for this
// registration and then finds its machine (revokeEnrolled reads the
// machines after it updates the token).
func (s *Store) checkEnrollment(ctx context.Context, tx *sql.Tx, m catalog.Machine) error {
	if m.EnrolledBy == "" {
		return nil
	}
	q := `SELECT revoke_machines FROM tokens WHERE id = $1 AND kind = 'auth'`
	if s.dialect == migrations.Postgres {
		q += ` FOR SHARE`
	}
	var machines int
	err := tx.QueryRowContext(ctx, q, m.EnrolledBy).Scan(&machines)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil // a token this node never held: nothing to go by
	case err != nil:
		return err
	case machines != 0:
		return fmt.Errorf("machine %s, with enrollment token %s: %w", m.ID, m.EnrolledBy, catalog.ErrRevoked)
	}
	return nil
}
