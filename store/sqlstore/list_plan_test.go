package sqlstore

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/pgtest"
	"github.com/patchmesh/patchmesh/migrations"
	"github.com/patchmesh/patchmesh/store"
)

// The admin listings page by keyset: a page, the first or one deep into a
// large listing, must walk the listing's index from the cursor, in order,
// with no sort of the whole table, also in PostgreSQL's generic plan of the
// prepared statement (which cannot see parameter values). This checks the
// plans of 20,000-row tables, each patch on every tier, rather than timing
// anything.
func TestListingsPageThroughTheirIndexes(t *testing.T) {
	ctx := t.Context()
	lite, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "p.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	pg, err := OpenPostgres(ctx, pgtest.New(t), PostgresOptions{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()

	fill := map[migrations.Dialect][]string{
		migrations.SQLite: {
			`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
			INSERT INTO patches (digest, kernel, arch, version, version_key, size, created_us)
			SELECT printf('sha256:%064x', i), '5.15.0-107.117-generic', 'x86_64', '1.' || i, printf('%08d', i), 1, 0 FROM n`,
			`INSERT INTO availability (digest, tier, added_us) SELECT p.digest, t.name, 0 FROM patches p, tiers t`,
			`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
			INSERT INTO machines (id, tier, registered_us, last_seen_us) SELECT printf('%064x', i), 'edge', 0, i FROM n`,
			`WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
			INSERT INTO tokens (id, kind, tier, name, hash, created_us) SELECT printf('%016x', i), 'auth', 'edge', 't', X'00', i FROM n`,
		},
		migrations.Postgres: {
			`INSERT INTO patches (digest, kernel, arch, version, version_key, size, created_us)
			SELECT 'sha256:' || lpad(to_hex(i), 64, '0'), '5.15.0-107.117-generic', 'x86_64', '1.' || i, lpad(i::text, 8, '0'), 1, 0
			FROM generate_series(1, 20000) AS i`,
			`INSERT INTO availability (digest, tier, added_us) SELECT p.digest, t.name, 0 FROM patches p, tiers t`,
			`INSERT INTO machines (id, tier, registered_us, last_seen_us)
			SELECT lpad(to_hex(i), 64, '0'), 'edge', 0, i FROM generate_series(1, 20000) AS i`,
			`INSERT INTO tokens (id, kind, tier, name, hash, created_us)
			SELECT lpad(to_hex(i), 16, '0'), 'auth', 'edge', 't', '\x00'::bytea, i FROM generate_series(1, 20000) AS i`,
		},
	}
	at := time.UnixMicro(10000).UTC()
	patches, patchArgs := patchesQuery(store.PatchFilter{Limit: 100, After: &store.PatchCursor{Version: "1.10000", Kernel: "5.15.0-107.117-generic", Arch: "x86_64", Digest: "sha256:ff"}})
	machines, machineArgs := machinesQuery(store.MachineFilter{Limit: 100, After: &store.MachineCursor{LastSeen: at, ID: "ff"}})
	tokens, tokenArgs := tokensQuery(store.TokenFilter{Kind: catalog.TokenAuth, Limit: 100, After: &store.TokenCursor{Created: at, ID: "ff"}})
	firstPatches, firstPatchArgs := patchesQuery(store.PatchFilter{Limit: 100})
	firstMachines, firstMachineArgs := machinesQuery(store.MachineFilter{Limit: 100})
	firstTokens, firstTokenArgs := tokensQuery(store.TokenFilter{Kind: catalog.TokenAuth, Limit: 100})
	for _, s := range []*Store{lite, pg} {
		t.Run(string(s.dialect), func(t *testing.T) {
			for _, q := range fill[s.dialect] {
				if _, err := s.db.ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.db.ExecContext(ctx, `ANALYZE`); err != nil {
				t.Fatal(err)
			}
			// The store's statements are prepared, so PostgreSQL may run
			// them with a generic plan, blind to parameter values: make it
			// plan them so, on one connection.
			conn, err := s.db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			explain := "EXPLAIN QUERY PLAN "
			if s.dialect == migrations.Postgres {
				explain = "EXPLAIN "
				if _, err := conn.ExecContext(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
					t.Fatal(err)
				}
			}
			for _, tc := range []struct {
				name  string
				query string
				args  []any
				index string
			}{
				{"patches", patches, patchArgs, "patches_list"},
				{"machines", machines, machineArgs, "machines_seen"},
				{"tokens", tokens, tokenArgs, "tokens_kind"},
				{"first patches", firstPatches, firstPatchArgs, "patches_list"},
				{"first machines", firstMachines, firstMachineArgs, "machines_seen"},
				{"first tokens", firstTokens, firstTokenArgs, "tokens_kind"},
			} {
				query, args := explain+tc.query, tc.args
				if s.dialect == migrations.Postgres {
					// EXPLAIN plans with the values; EXPLAIN EXECUTE of a
					// prepared statement shows the generic plan.
					if _, err := conn.ExecContext(ctx, `PREPARE listing AS `+tc.query); err != nil {
						t.Fatalf("%s: %v", tc.name, err)
					}
					query, args = `EXPLAIN EXECUTE listing`, nil
					if len(tc.args) > 0 {
						query += `(` + sqlLiterals(tc.args) + `)`
					}
				}
				rows, err := conn.QueryContext(ctx, query, args...)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				cols, err := rows.Columns()
				if err != nil {
					t.Fatal(err)
				}
				var plan strings.Builder
				for rows.Next() {
					vals := make([]any, len(cols))
					ptrs := make([]any, len(cols))
					for i := range vals {
						ptrs[i] = &vals[i]
					}
					if err := rows.Scan(ptrs...); err != nil {
						t.Fatal(err)
					}
					plan.WriteString(asText(vals[len(vals)-1]) + " \n")
				}
				rows.Close()
				if s.dialect == migrations.Postgres {
					if _, err := conn.ExecContext(ctx, `DEALLOCATE listing`); err != nil {
						t.Fatal(err)
					}
				}
				p := plan.String()
				if !strings.Contains(p, tc.index) {
					t.Errorf("%s page: want a plan through %s, got:\n%s", tc.name, tc.index, p)
				}
				// A sort of the result means the whole matching table is
				// read to find a page: SQLite says TEMP B-TREE FOR ORDER BY
				// (a patch's tiers, aggregated per row, may use one of
				// their own), PostgreSQL a Sort node.
				if strings.Contains(p, "TEMP B-TREE FOR ORDER BY") || strings.Contains(p, "Sort") {
					t.Errorf("%s page: the plan sorts instead of walking the index:\n%s", tc.name, p)
				}
			}
		})
	}
}

// sqlLiterals writes query arguments (strings and integers) as SQL literals.
func sqlLiterals(args []any) string {
	out := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			out[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
		default:
			out[i] = fmt.Sprint(v)
		}
	}
	return strings.Join(out, ", ")
}
