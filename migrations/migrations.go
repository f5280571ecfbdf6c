// Package migrations holds patchmesh's versioned SQL schema, one folder per
// SQL dialect, embedded in the binary and applied at start.
//
// Files are named NNNN_name.sql; NNNN is the version. Both dialects share one
// version sequence so that a version means the same change everywhere; a
// dialect may lack a version that does not concern it (the PostgreSQL blob
// driver's tables have no SQLite counterpart). Each file runs in its own
// transaction together with its row in schema_version, so a crash leaves a
// migration either wholly applied or not at all. A database whose newest
// applied version is beyond what this binary knows is refused: an older
// binary must not write to a schema it does not understand.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

//go:embed postgres/*.sql sqlite/*.sql
var files embed.FS

// Dialect names an SQL dialect, and so a folder of migrations.
type Dialect string

const (
	Postgres Dialect = "postgres"
	SQLite   Dialect = "sqlite"
)

// ErrSchemaTooNew means the database was migrated by a newer patchmesh.
var ErrSchemaTooNew = errors.New("database schema is newer than this binary")

// Migration is one versioned SQL file.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// advisoryLockKey is an arbitrary constant shared by every patchmesh node so
// that nodes starting together on one PostgreSQL migrate one at a time.
const advisoryLockKey = 0x70617463686d6573 // "patchmes"

// List returns the dialect's migrations in version order.
func List(d Dialect) ([]Migration, error) {
	entries, err := fs.ReadDir(files, string(d))
	if err != nil {
		return nil, fmt.Errorf("migrations: unknown dialect %q: %w", d, err)
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		num, rest, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migrations: %s/%s is not named NNNN_name.sql", d, name)
		}
		body, err := fs.ReadFile(files, path.Join(string(d), name))
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: rest, SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("migrations: %s has two files for version %d", d, out[i].Version)
		}
	}
	return out, nil
}

// Latest returns the highest version the dialect's migrations reach.
func Latest(d Dialect) (int, error) {
	ms, err := List(d)
	if err != nil || len(ms) == 0 {
		return 0, err
	}
	return ms[len(ms)-1].Version, nil
}

// Apply brings db up to the newest schema, under a lock so that concurrent
// starts apply each migration once, and returns the versions it applied.
// For SQLite, open the database with an immediate transaction lock
// (modernc's _txlock=immediate) so that the version check and the change
// happen under the write lock.
func Apply(ctx context.Context, db *sql.DB, d Dialect) ([]int, error) {
	ms, err := List(d)
	if err != nil {
		return nil, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	defer conn.Close()

	versionTable := `CREATE TABLE IF NOT EXISTS schema_version (
		version INTEGER PRIMARY KEY,
		name TEXT NOT NULL,
		applied_at TEXT NOT NULL)`
	if d == Postgres {
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(advisoryLockKey)); err != nil {
			return nil, fmt.Errorf("migrations: lock: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(advisoryLockKey))
	}
	if _, err := conn.ExecContext(ctx, versionTable); err != nil {
		return nil, fmt.Errorf("migrations: schema_version: %w", err)
	}

	var current int
	if err := conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&current); err != nil {
		return nil, fmt.Errorf("migrations: read version: %w", err)
	}
	latest := 0
	if len(ms) > 0 {
		latest = ms[len(ms)-1].Version
	}
	if current > latest {
		return nil, fmt.Errorf("%w: database is at version %d, this binary knows up to %d", ErrSchemaTooNew, current, latest)
	}

	var applied []int
	for _, m := range ms {
		if m.Version <= current {
			continue
		}
		ok, err := applyOne(ctx, conn, d, m)
		if err != nil {
			return applied, err
		}
		if ok {
			applied = append(applied, m.Version)
		}
	}
	return applied, nil
}

// applyOne runs one migration and records it in one transaction. It checks
// again inside the transaction, so a migration another process applied in
// the meantime is skipped rather than run twice.
func applyOne(ctx context.Context, conn *sql.Conn, d Dialect, m Migration) (bool, error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("migrations: begin %d: %w", m.Version, err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_version WHERE version = $1`, m.Version).Scan(&n); err != nil {
		return false, fmt.Errorf("migrations: check %d: %w", m.Version, err)
	}
	if n > 0 {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return false, fmt.Errorf("migrations: apply %s/%04d_%s: %w", d, m.Version, m.Name, err)
	}
	now := `to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')`
	if d == SQLite {
		now = `strftime('%Y-%m-%dT%H:%M:%SZ', 'now')`
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, `+now+`)`, m.Version, m.Name); err != nil {
		return false, fmt.Errorf("migrations: record %d: %w", m.Version, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("migrations: commit %d: %w", m.Version, err)
	}
	return true, nil
}

// Current returns the newest version applied to db, 0 for a new database.
func Current(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&v)
	return v, err
}
