package sqlstore

// Fleet reports: the mesh-wide machine-ID key, the report pushes this
// node takes from its downstreams, and the listings over this node's own
// machines and its subtree's. The report format is federation's; here an
// entry is rows keyed by the link (via) it came up.

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

// MeshKey returns the mesh key held here.
func (s *Store) MeshKey(ctx context.Context) (k store.MeshKey, err error) {
	defer s.done("MeshKey", time.Now(), &err)
	var issued int64
	err = s.db.QueryRowContext(ctx, `SELECT key_id, secret, record, sig, issued_us FROM mesh_key WHERE one = 1`).
		Scan(&k.ID, &k.Secret, &k.Record, &k.Sig, &issued)
	if errors.Is(err, sql.ErrNoRows) {
		return store.MeshKey{}, fmt.Errorf("sqlstore: mesh key: %w", catalog.ErrNotFound)
	}
	if err != nil {
		return store.MeshKey{}, mapErr("mesh key", err)
	}
	k.Issued = fromUS(issued)
	return k, nil
}

// PutMeshKey stores k unless a key issued later is held.
func (s *Store) PutMeshKey(ctx context.Context, k store.MeshKey) (err error) {
	defer s.done("PutMeshKey", time.Now(), &err)
	if k.ID == "" || len(k.Secret) < 16 || len(k.Record) == 0 || len(k.Sig) == 0 || k.Issued.IsZero() {
		return fmt.Errorf("sqlstore: put mesh key: %w",
			&catalog.InvalidError{Field: "mesh_key", Message: "needs an ID, a secret of at least 16 bytes, a record, a signature and an issue time"})
	}
	res, err := s.exec(ctx, `INSERT INTO mesh_key (one, key_id, secret, record, sig, issued_us) VALUES (1, $1, $2, $3, $4, $5)
		ON CONFLICT (one) DO UPDATE SET key_id = excluded.key_id, secret = excluded.secret, record = excluded.record,
		  sig = excluded.sig, issued_us = excluded.issued_us
		WHERE mesh_key.issued_us <= excluded.issued_us`,
		k.ID, k.Secret, k.Record, k.Sig, us(k.Issued))
	if err != nil {
		return mapErr("put mesh key", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return mapErr("put mesh key", err)
	} else if n == 0 {
		return fmt.Errorf("sqlstore: put mesh key: a key issued later is held: %w", catalog.ErrConflict)
	}
	return nil
}

// PutFleetReport replaces what p.TokenID pushed for p.Tier before.
func (s *Store) PutFleetReport(ctx context.Context, p store.FleetPush) (err error) {
	defer s.done("PutFleetReport", time.Now(), &err)
	if p.TokenID == "" || p.Seq < 1 {
		return fmt.Errorf("sqlstore: put fleet report: %w", &catalog.InvalidError{Field: "seq", Message: "a push needs its token and a positive seq"})
	}
	if err := catalog.ValidName("tier", p.Tier); err != nil {
		return fmt.Errorf("sqlstore: put fleet report: %w", err)
	}
	now := us(s.now())
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		// The compare and the move are one statement, so two pushes of one
		// link racing cannot both pass.
		res, err := tx.ExecContext(ctx, `INSERT INTO fleet_pushes (token_id, tier, node, seq, received_us) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (token_id) DO UPDATE SET tier = excluded.tier, node = excluded.node, seq = excluded.seq, received_us = excluded.received_us
			WHERE fleet_pushes.seq < excluded.seq`, p.TokenID, p.Tier, p.Node, p.Seq, now)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("push %d of link %s is not past the last one taken: %w", p.Seq, p.TokenID, catalog.ErrConflict)
		}
		for _, table := range []string{"fleet_entries", "fleet_counts", "fleet_machines"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE via = $1`, p.TokenID); err != nil {
				return err
			}
		}
		for _, e := range p.Entries {
			if err := putFleetEntry(ctx, tx, s.dialect, p.Tier, p.TokenID, now, e); err != nil {
				return fmt.Errorf("entry of node %s: %w", e.Node, err)
			}
		}
		return nil
	})
	return mapErr("put fleet report", err)
}

func putFleetEntry(ctx context.Context, tx *sql.Tx, dialect migrations.Dialect, tier, via string, now int64, e store.FleetEntry) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO fleet_entries (tier, via, node, dc, as_of_us, received_us, has_machines)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, tier, via, e.Node, e.DC, us(e.AsOf), now, boolInt(e.HasMachines)); err != nil {
		return err
	}
	for _, c := range e.Counts {
		if _, err := tx.ExecContext(ctx, `INSERT INTO fleet_counts (tier, via, node, kernel, patch_version, state, machines)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, tier, via, e.Node, c.Kernel, c.PatchVersion, string(c.State), c.Machines); err != nil {
			return err
		}
	}
	if len(e.Machines) == 0 {
		return nil
	}
	put := func(stmt *sql.Stmt, batch []store.FleetMachine) error {
		args := make([]any, 0, 10*len(batch))
		for _, m := range batch {
			args = append(args, tier, via, e.Node, m.ID, e.DC, m.Kernel, m.Arch, string(m.State), m.PatchVersion, us(m.LastSeen))
		}
		_, err := stmt.ExecContext(ctx, args...)
		return err
	}
	// One prepared statement of many rows: PostgreSQL takes a round trip
	// per statement, so a large subtree goes in a few hundred rows at a
	// time. SQLite looks its numbered parameters up by name in a list, at
	// a cost that grows with the square of their number, and has no round
	// trip: there one row per execution of one statement is fastest.
	per := 200
	if dialect == migrations.SQLite {
		per = 1
	}
	var full *sql.Stmt
	for start := 0; start < len(e.Machines); start += per {
		batch := e.Machines[start:min(start+per, len(e.Machines))]
		stmt := full
		if stmt == nil || len(batch) < per {
			var err error
			if stmt, err = tx.PrepareContext(ctx, insertFleetMachines(len(batch))); err != nil {
				return err
			}
			if len(batch) == per {
				full = stmt
				defer full.Close()
			} else {
				defer stmt.Close()
			}
		}
		if err := put(stmt, batch); err != nil {
			return err
		}
	}
	return nil
}

// insertFleetMachines inserts n fleet_machines rows.
func insertFleetMachines(n int) string {
	var q strings.Builder
	q.WriteString(`INSERT INTO fleet_machines (tier, via, node, id, dc, kernel, arch, state, patch_version, last_seen_us) VALUES `)
	for i := range n {
		if i > 0 {
			q.WriteString(", ")
		}
		k := 10 * i
		fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", k+1, k+2, k+3, k+4, k+5, k+6, k+7, k+8, k+9, k+10)
	}
	// A machine listed twice in one entry is one machine.
	q.WriteString(` ON CONFLICT (tier, via, node, id) DO NOTHING`)
	return q.String()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// newestEntries selects, per tier and node, the entry with the newest
// as_of among those the downstream links pushed: a node whose link moved
// to another upstream is reported by both until the old one ages out.
const newestEntries = `SELECT tier, via, node, dc, as_of_us, received_us, has_machines FROM (
	SELECT e.*, ROW_NUMBER() OVER (PARTITION BY e.tier, e.node ORDER BY e.as_of_us DESC, e.via) AS rn
	FROM fleet_entries e WHERE ($1 = '' OR e.tier = $1)) x WHERE rn = 1`

// FleetEntries returns the newest entry per node held for tier.
func (s *Store) FleetEntries(ctx context.Context, tier string, withMachines bool) (out []store.FleetEntry, err error) {
	defer s.done("FleetEntries", time.Now(), &err)
	rows, err := s.db.QueryContext(ctx, newestEntries+` ORDER BY node`, tier)
	if err != nil {
		return nil, mapErr("fleet entries", err)
	}
	out = []store.FleetEntry{}
	for rows.Next() {
		var (
			e           store.FleetEntry
			asOf, recvd int64
			has         int
		)
		if err := rows.Scan(&e.Tier, &e.Via, &e.Node, &e.DC, &asOf, &recvd, &has); err != nil {
			rows.Close()
			return nil, mapErr("fleet entries", err)
		}
		e.AsOf, e.Received, e.HasMachines = fromUS(asOf), fromUS(recvd), has != 0
		out = append(out, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, mapErr("fleet entries", err)
	}
	for i := range out {
		e := &out[i]
		if e.Counts, err = fleetCounts(ctx, s.db, e.Tier, e.Via, e.Node); err != nil {
			return nil, mapErr("fleet entries", err)
		}
		if withMachines && e.HasMachines {
			if e.Machines, err = fleetEntryMachines(ctx, s.db, e.Tier, e.Via, e.Node); err != nil {
				return nil, mapErr("fleet entries", err)
			}
		}
	}
	return out, nil
}

func fleetCounts(ctx context.Context, q querier, tier, via, node string) ([]store.FleetCount, error) {
	rows, err := q.QueryContext(ctx, `SELECT kernel, patch_version, state, machines FROM fleet_counts
		WHERE tier = $1 AND via = $2 AND node = $3 ORDER BY kernel, patch_version, state`, tier, via, node)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cs := []store.FleetCount{}
	for rows.Next() {
		var (
			c     store.FleetCount
			state string
		)
		if err := rows.Scan(&c.Kernel, &c.PatchVersion, &state, &c.Machines); err != nil {
			return nil, err
		}
		c.State = catalog.MachineState(state)
		cs = append(cs, c)
	}
	return cs, rows.Err()
}

func fleetEntryMachines(ctx context.Context, q querier, tier, via, node string) ([]store.FleetMachine, error) {
	rows, err := q.QueryContext(ctx, `SELECT id, tier, node, dc, kernel, arch, state, patch_version, last_seen_us
		FROM fleet_machines WHERE tier = $1 AND via = $2 AND node = $3 ORDER BY id`, tier, via, node)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanFleetMachines(rows)
}

func scanFleetMachines(rows *sql.Rows) ([]store.FleetMachine, error) {
	ms := []store.FleetMachine{}
	for rows.Next() {
		var (
			m     store.FleetMachine
			state string
			seen  int64
		)
		if err := rows.Scan(&m.ID, &m.Tier, &m.Node, &m.DC, &m.Kernel, &m.Arch, &state, &m.PatchVersion, &seen); err != nil {
			return nil, err
		}
		m.State, m.LastSeen = catalog.MachineState(state), fromUS(seen)
		ms = append(ms, m)
	}
	return ms, rows.Err()
}

// LocalFleet returns this node's own machines of tier.
func (s *Store) LocalFleet(ctx context.Context, tier string, withMachines bool) (cs []store.FleetCount, ms []store.FleetMachine, err error) {
	defer s.done("LocalFleet", time.Now(), &err)
	rows, err := s.db.QueryContext(ctx, `SELECT kernel, patch_version, state, COUNT(*) FROM machines WHERE tier = $1
		GROUP BY kernel, patch_version, state ORDER BY kernel, patch_version, state`, tier)
	if err != nil {
		return nil, nil, mapErr("local fleet", err)
	}
	cs = []store.FleetCount{}
	for rows.Next() {
		var (
			c     store.FleetCount
			state string
		)
		if err := rows.Scan(&c.Kernel, &c.PatchVersion, &state, &c.Machines); err != nil {
			rows.Close()
			return nil, nil, mapErr("local fleet", err)
		}
		c.State = catalog.MachineState(state)
		cs = append(cs, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, mapErr("local fleet", err)
	}
	if !withMachines {
		return cs, nil, nil
	}
	rows, err = s.db.QueryContext(ctx, `SELECT id, tier, '', '', kernel, arch, state, patch_version, last_seen_us
		FROM machines WHERE tier = $1 ORDER BY id`, tier)
	if err != nil {
		return nil, nil, mapErr("local fleet", err)
	}
	defer rows.Close()
	if ms, err = scanFleetMachines(rows); err != nil {
		return nil, nil, mapErr("local fleet", err)
	}
	return cs, ms, nil
}

// fleetUnion is every machine this node knows of, its own and its
// subtree's, one row per machine ID: the newest check-in wins, so a
// machine that failed over between nodes counts once. $1 and $2 name this
// node and its data centre.
const fleetUnion = `SELECT id, tier, node, dc, kernel, arch, state, patch_version, last_seen_us FROM (
	SELECT a.*, ROW_NUMBER() OVER (PARTITION BY a.id ORDER BY a.last_seen_us DESC, a.node) AS rn FROM (
		SELECT id, tier, CAST($1 AS TEXT) AS node, CAST($2 AS TEXT) AS dc, kernel, arch, state, patch_version, last_seen_us FROM machines
		UNION ALL
		SELECT id, tier, node, dc, kernel, arch, state, patch_version, last_seen_us FROM fleet_machines
	) a) u WHERE rn = 1`

// fleetWhere adds f's conditions, numbered from $3 on, to a query over
// fleetUnion's columns.
func fleetWhere(f store.FleetFilter, args []any) (string, []any) {
	var q strings.Builder
	add := func(col, v string) {
		if v == "" {
			return
		}
		args = append(args, v)
		fmt.Fprintf(&q, " AND %s = $%d", col, len(args))
	}
	add("tier", f.Tier)
	add("dc", f.DC)
	add("kernel", f.Kernel)
	add("state", string(f.State))
	add("patch_version", f.PatchVersion)
	return q.String(), args
}

// FleetMachines lists one row per machine of this node's subtree.
func (s *Store) FleetMachines(ctx context.Context, self, dc string, f store.FleetFilter) (ms []store.FleetMachine, err error) {
	defer s.done("FleetMachines", time.Now(), &err)
	where, args := fleetWhere(f, []any{self, dc})
	args = append(args, f.After)
	q := `SELECT * FROM (` + fleetUnion + `) m WHERE 1 = 1` + where + fmt.Sprintf(" AND id > $%d", len(args))
	args = append(args, limit(f.Limit))
	q += fmt.Sprintf(" ORDER BY id LIMIT $%d", len(args))
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, mapErr("fleet machines", err)
	}
	defer rows.Close()
	if ms, err = scanFleetMachines(rows); err != nil {
		return nil, mapErr("fleet machines", err)
	}
	return ms, nil
}

// FleetSummary totals this node's subtree: machines by their rows, and
// the counts of the newest entry of each node that sent no rows.
func (s *Store) FleetSummary(ctx context.Context, self, dc string, f store.FleetFilter) (ts []store.FleetTotal, err error) {
	defer s.done("FleetSummary", time.Now(), &err)
	where, args := fleetWhere(f, []any{self, dc})
	q := `SELECT tier, dc, kernel, patch_version, state, CAST(SUM(n) AS BIGINT) FROM (
		SELECT tier, dc, kernel, patch_version, state, 1 AS n FROM (` + fleetUnion + `) m WHERE 1 = 1` + where + `
		UNION ALL
		SELECT tier, dc, kernel, patch_version, state, n FROM (
			SELECT c.tier, e.dc, c.kernel, c.patch_version, c.state, c.machines AS n
			FROM (` + strings.ReplaceAll(newestEntries, "$1", "''") + `) e
			JOIN fleet_counts c ON c.tier = e.tier AND c.via = e.via AND c.node = e.node
			WHERE e.has_machines = 0) k WHERE 1 = 1` + where + `
	) t GROUP BY tier, dc, kernel, patch_version, state ORDER BY tier, dc, kernel, patch_version, state`
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, mapErr("fleet summary", err)
	}
	defer rows.Close()
	ts = []store.FleetTotal{}
	for rows.Next() {
		var (
			t     store.FleetTotal
			state string
		)
		if err := rows.Scan(&t.Tier, &t.DC, &t.Kernel, &t.PatchVersion, &state, &t.Machines); err != nil {
			return nil, mapErr("fleet summary", err)
		}
		t.State = catalog.MachineState(state)
		ts = append(ts, t)
	}
	if err := rows.Err(); err != nil {
		return nil, mapErr("fleet summary", err)
	}
	return ts, nil
}

// PurgeFleet deletes what was last heard of before before.
func (s *Store) PurgeFleet(ctx context.Context, before time.Time) (machines, entries int, err error) {
	defer s.done("PurgeFleet", time.Now(), &err)
	cut := us(before)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		// A purged machine's tokens go with it: it registers again when it
		// comes back, as after any lost token.
		// A revoked machine stays, however long silent: forgetting it would
		// let it register again.
		if _, err := tx.ExecContext(ctx, `DELETE FROM tokens WHERE kind = 'machine' AND machine_id IN
			(SELECT id FROM machines WHERE last_seen_us < $1 AND revoked_us IS NULL)`, cut); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM machines WHERE last_seen_us < $1 AND revoked_us IS NULL`, cut)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		machines = int(n)
		if _, err := tx.ExecContext(ctx, `DELETE FROM fleet_machines WHERE last_seen_us < $1`, cut); err != nil {
			return err
		}
		stale := `SELECT tier, via, node FROM fleet_entries WHERE as_of_us < $1`
		for _, table := range []string{"fleet_counts", "fleet_machines"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE (tier, via, node) IN (`+stale+`)`, cut); err != nil {
				return err
			}
		}
		res, err = tx.ExecContext(ctx, `DELETE FROM fleet_entries WHERE as_of_us < $1`, cut)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		entries = int(n)
		return err
	})
	if err != nil {
		return 0, 0, mapErr("purge fleet", err)
	}
	return machines, entries, nil
}
