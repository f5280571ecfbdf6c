package sqlstore_test

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/pgtest"
	"github.com/patchmesh/patchmesh/migrations"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
	"github.com/patchmesh/patchmesh/store/storetest"
)

func openSQLite(t *testing.T, path string) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.OpenSQLite(t.Context(), path, sqlstore.Options{})
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openPostgres(t *testing.T, dsn string) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.OpenPostgres(t.Context(), dsn, sqlstore.PostgresOptions{MaxConns: 8}, sqlstore.Options{})
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dialects lets each test below run against both backends.
var dialects = []struct {
	name string
	// location makes a fresh, empty database and returns where it is.
	location func(t *testing.T) string
	open     func(ctx context.Context, loc string) (*sqlstore.Store, error)
	dialect  migrations.Dialect
}{
	{
		name:     "sqlite",
		location: func(t *testing.T) string { return filepath.Join(t.TempDir(), "sub", "dir", "patchmesh.db") },
		open: func(ctx context.Context, loc string) (*sqlstore.Store, error) {
			return sqlstore.OpenSQLite(ctx, loc, sqlstore.Options{})
		},
		dialect: migrations.SQLite,
	},
	{
		name:     "postgres",
		location: func(t *testing.T) string { return pgtest.New(t) },
		open: func(ctx context.Context, loc string) (*sqlstore.Store, error) {
			return sqlstore.OpenPostgres(ctx, loc, sqlstore.PostgresOptions{}, sqlstore.Options{})
		},
		dialect: migrations.Postgres,
	},
}

func TestContractSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openSQLite(t, filepath.Join(t.TempDir(), "patchmesh.db"))
	})
}

func TestContractPostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openPostgres(t, pgtest.New(t))
	})
}

func TestFleetContractSQLite(t *testing.T) {
	storetest.RunFleet(t, func(t *testing.T) store.Store {
		return openSQLite(t, filepath.Join(t.TempDir(), "patchmesh.db"))
	})
}

func TestFleetContractPostgres(t *testing.T) {
	storetest.RunFleet(t, func(t *testing.T) store.Store {
		return openPostgres(t, pgtest.New(t))
	})
}

func TestSyncContractSQLite(t *testing.T) {
	storetest.RunSync(t, func(t *testing.T, sealer store.Sealer, changes *store.Changes) store.Store {
		s, err := sqlstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "patchmesh.db"),
			sqlstore.Options{Sealer: sealer, Changes: changes})
		if err != nil {
			t.Fatalf("OpenSQLite: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestSyncContractPostgres(t *testing.T) {
	storetest.RunSync(t, func(t *testing.T, sealer store.Sealer, changes *store.Changes) store.Store {
		s, err := sqlstore.OpenPostgres(t.Context(), pgtest.New(t), sqlstore.PostgresOptions{MaxConns: 8},
			sqlstore.Options{Sealer: sealer, Changes: changes})
		if err != nil {
			t.Fatalf("OpenPostgres: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestReopenAppliesNothingAndKeepsData(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			ctx := t.Context()
			loc := d.location(t)
			s, err := d.open(ctx, loc)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			p := catalog.Patch{
				Digest: "sha256:" + strings.Repeat("a", 64), Kernel: "5.15.0-107.117-generic",
				Arch: "x86_64", Version: "107.1", Size: 10, CVEs: []string{"CVE-2024-1086"},
			}
			added, err := s.AddPatch(ctx, p)
			if err != nil {
				t.Fatalf("AddPatch: %v", err)
			}
			before, err := migrations.Current(ctx, s.DB())
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}

			s, err = d.open(ctx, loc)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer s.Close()
			// Applying again finds nothing to do.
			applied, err := migrations.Apply(ctx, s.DB(), d.dialect)
			if err != nil || len(applied) != 0 {
				t.Errorf("Apply on a migrated database: want nothing applied, got %v (err %v)", applied, err)
			}
			var rows int
			if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_version`).Scan(&rows); err != nil {
				t.Fatal(err)
			}
			after, err := migrations.Current(ctx, s.DB())
			if err != nil {
				t.Fatal(err)
			}
			latest, _ := migrations.Latest(d.dialect)
			// A dialect may skip a version (SQLite has no 0002), so count files.
			ms, _ := migrations.List(d.dialect)
			if after != before || after != latest || rows != len(ms) {
				t.Errorf("schema after reopen: want version %d with one row per migration (%d), got version %d (was %d), %d rows",
					latest, len(ms), after, before, rows)
			}
			got, err := s.Patch(ctx, p.Digest)
			if err != nil {
				t.Fatalf("Patch after reopen: %v", err)
			}
			if got.Version != added.Version || !got.Created.Equal(added.Created) || len(got.Tiers) != 1 {
				t.Errorf("Patch after reopen: want %+v, got %+v", added, got)
			}
			if h, err := s.Head(ctx); err != nil || h != 1 {
				t.Errorf("Head after reopen: want 1, got %d (err %v)", h, err)
			}
		})
	}
}

func TestSchemaTooNewIsRefused(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			ctx := t.Context()
			loc := d.location(t)
			s, err := d.open(ctx, loc)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			latest, _ := migrations.Latest(d.dialect)
			if _, err := s.DB().ExecContext(ctx,
				`INSERT INTO schema_version (version, name, applied_at) VALUES ($1, 'from_the_future', '2099-01-01T00:00:00Z')`,
				latest+1); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s, err = d.open(ctx, loc)
			if !errors.Is(err, migrations.ErrSchemaTooNew) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("open of a newer schema: want ErrSchemaTooNew, got %v", err)
			}
		})
	}
}

// TestConcurrentFirstOpensAllSucceed opens one new database from several
// stores at once, as nodes sharing it do at their first start: each must
// open, migrate it once and see one set of default tiers. On SQLite the
// first opens race to switch the file to WAL, which fails with SQLITE_BUSY
// past busy_timeout (walSwitchConnector); without the retry this test
// failed a few runs in a hundred here.
func TestConcurrentFirstOpensAllSucceed(t *testing.T) {
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			ctx := t.Context()
			loc := d.location(t)
			const n = 4
			var wg sync.WaitGroup
			stores := make([]*sqlstore.Store, n)
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() { stores[i], errs[i] = d.open(ctx, loc) })
			}
			wg.Wait()
			for i := range n {
				if errs[i] != nil {
					t.Errorf("open %d: want nil, got %v", i, errs[i])
					continue
				}
				defer stores[i].Close()
			}
			if t.Failed() {
				return
			}
			var rows int
			if err := stores[0].DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_version`).Scan(&rows); err != nil {
				t.Fatal(err)
			}
			ms, _ := migrations.List(d.dialect)
			if rows != len(ms) {
				t.Errorf("schema_version rows: want %d (each migration once), got %d", len(ms), rows)
			}
			ts, err := stores[1].Tiers(ctx)
			if err != nil || len(ts) != len(catalog.DefaultTiers) {
				t.Errorf("Tiers: want the %d default tiers once, got %d (err %v)", len(catalog.DefaultTiers), len(ts), err)
			}
		})
	}
}

func TestObserveSeesEveryCall(t *testing.T) {
	type call struct {
		op  string
		err error
	}
	var (
		mu    sync.Mutex
		calls []call
	)
	pinned := time.Date(2026, 7, 1, 10, 0, 0, 123456789, time.UTC)
	s, err := sqlstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "p.db"), sqlstore.Options{
		Observe: func(op string, d time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, call{op, err})
		},
		Now: func() time.Time { return pinned },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tier, err := s.AddTier(t.Context(), "canary")
	if err != nil {
		t.Fatal(err)
	}
	if want := pinned.Truncate(time.Microsecond); !tier.Created.Equal(want) {
		t.Errorf("AddTier with a pinned clock: want Created %v, got %v", want, tier.Created)
	}
	_, err = s.Patch(t.Context(), "sha256:"+strings.Repeat("b", 64))
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 || calls[0].op != "AddTier" || calls[0].err != nil ||
		calls[1].op != "Patch" || !errors.Is(calls[1].err, catalog.ErrNotFound) {
		t.Errorf("Observe: want AddTier (nil) then Patch (not found), got %+v", calls)
	}
}

func TestOpenSQLiteRejectsQueryInPath(t *testing.T) {
	_, err := sqlstore.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "x.db?mode=ro"), sqlstore.Options{})
	if err == nil {
		t.Fatal("OpenSQLite with '?' in the path: want an error, got nil")
	}
}

func TestOpenPostgresUnreachableFailsClearly(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := sqlstore.OpenPostgres(ctx, "postgres://postgres:hunter2@127.0.0.1:1/none?sslmode=disable&connect_timeout=2",
		sqlstore.PostgresOptions{}, sqlstore.Options{})
	if err == nil {
		t.Fatal("OpenPostgres of a closed port: want an error, got nil")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("OpenPostgres error must not show the password, got %q", err)
	}
}

// The SQLite durability and integrity settings must be in force on the
// connections the store uses: without them a committed change could be lost
// to a power cut, or a row could name a tier that does not exist.
func TestSQLiteConnectionSettings(t *testing.T) {
	s := openSQLite(t, filepath.Join(t.TempDir(), "p.db"))
	for _, tc := range []struct{ pragma, want string }{
		{"foreign_keys", "1"},
		{"journal_mode", "wal"},
		{"synchronous", "2"}, // FULL
		{"busy_timeout", "10000"},
		{"mmap_size", "0"}, // DefaultSQLiteMmapSize
	} {
		var got string
		if err := s.DB().QueryRowContext(t.Context(), "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tc.pragma, err)
		}
		if got != tc.want {
			t.Errorf("PRAGMA %s: want %s, got %s", tc.pragma, tc.want, got)
		}
	}
}

// A token added to a tier while RemoveTier is between its checks and its
// delete (possible on PostgreSQL, where token writes do not queue behind
// catalog changes) must make RemoveTier answer ErrConflict, not remove the
// tier and not report a missing record.
func TestPostgresRemoveTierRacingAddTokenConflicts(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.New(t)
	s := openPostgres(t, dsn)
	other, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.WithoutCancel(ctx))
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `INSERT INTO tokens (id, kind, tier, name, hash, created_us)
		VALUES ('racer00000000001', 'auth', 'beta', 'racer', '\x00'::bytea, 0)`); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.RemoveTier(ctx, "beta") }()

	// Wait (bounded) until RemoveTier blocks on the uncommitted token's lock.
	blocked := false
	for range 200 {
		var n int
		if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			blocked = true
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if !blocked {
		t.Fatal("RemoveTier never waited for the concurrent token insert")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, catalog.ErrConflict) {
			t.Fatalf("RemoveTier racing AddToken: want ErrConflict, got %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("RemoveTier did not return within 20s of the token commit")
	}
	ts, err := s.Tiers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != len(catalog.DefaultTiers) {
		t.Errorf("tiers after the refused removal: want %d, got %d", len(catalog.DefaultTiers), len(ts))
	}
}

// TestPostgresJITIsOffUnlessTheDSNSetsIt checks that the store's connections
// run with jit off, and that an operator's jit in the DSN wins.
func TestPostgresJITIsOffUnlessTheDSNSetsIt(t *testing.T) {
	dsn := pgtest.New(t)
	tests := []struct {
		name, dsn, want string
	}{
		{"default", dsn, "off"},
		{"dsn sets on", withJIT(t, dsn, "on"), "on"},
		{"dsn sets off", withJIT(t, dsn, "off"), "off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openPostgres(t, tt.dsn)
			var got string
			if err := s.DB().QueryRowContext(t.Context(), `SHOW jit`).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("jit = %q, want %q", got, tt.want)
			}
		})
	}
}

// withJIT is dsn with its jit parameter set to v.
func withJIT(t testing.TB, dsn, v string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("jit", v)
	u.RawQuery = q.Encode()
	return u.String()
}
