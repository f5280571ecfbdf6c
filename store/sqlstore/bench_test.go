package sqlstore_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/pgtest"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

// The benchmark catalog: 500 kernel releases on two architectures, ten
// versions each (10,000 patches), over 100 tiers. Older versions have been
// promoted further than newer ones, as a staged rollout leaves them, so the
// newest patch on a late tier is several versions down the index.
const (
	benchKernels  = 500
	benchVersions = 10
	benchTiers    = 100
)

var benchArchs = []string{"x86_64", "aarch64"}

func benchKernel(i int) string {
	return fmt.Sprintf("%d.%d.0-%d.%d-generic", 5+i%3, 4+i%17, 100+i, 100+i)
}

func benchTierName(pos int) string {
	if pos <= len(catalog.DefaultTiers) {
		return catalog.DefaultTiers[pos-1]
	}
	return fmt.Sprintf("wave-%03d", pos)
}

// reach is how many tiers (from the first) a patch has been promoted to.
func reach(kernel, version int) int {
	return max(1, benchTiers-version*11-(kernel*7+version*3)%10)
}

// seedBench fills s with the benchmark catalog in one transaction, writing
// the tables directly: 10,000 AddPatch round trips would measure seeding,
// not Newest. Events are not written; Newest does not read them.
func seedBench(b *testing.B, s *sqlstore.Store) {
	b.Helper()
	ctx := context.Background()
	for pos := len(catalog.DefaultTiers) + 1; pos <= benchTiers; pos++ {
		if _, err := s.AddTier(ctx, benchTierName(pos)); err != nil {
			b.Fatalf("AddTier: %v", err)
		}
	}
	tx, err := s.DB().BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback()
	insPatch, err := tx.PrepareContext(ctx, `INSERT INTO patches
		(digest, kernel, arch, version, version_key, size, cves, description, created_us, withdrawn)
		VALUES ($1, $2, $3, $4, $5, 4096, '["CVE-2024-1086"]', 'benchmark patch', 0, $6)`)
	if err != nil {
		b.Fatal(err)
	}
	insAvail, err := tx.PrepareContext(ctx, `INSERT INTO availability (digest, tier, added_us)
		SELECT $1, name, 0 FROM tiers WHERE position <= $2`)
	if err != nil {
		b.Fatal(err)
	}
	exec := func(st *sql.Stmt, args ...any) {
		if _, err := st.ExecContext(ctx, args...); err != nil {
			b.Fatalf("seed: %v", err)
		}
	}
	for k := range benchKernels {
		for _, arch := range benchArchs {
			for v := range benchVersions {
				// Versions 107.1 … 107.10 put text order and numeric order at odds.
				version := fmt.Sprintf("%d.%d", 100+k%50, v+1)
				h := sha256.Sum256([]byte(benchKernel(k) + arch + version))
				digest := "sha256:" + hex.EncodeToString(h[:])
				withdrawn := (k+v)%53 == 0
				exec(insPatch, digest, benchKernel(k), arch, version, catalog.VersionKey(version), withdrawn)
				// Tier positions may have gaps once tiers are removed; here
				// they are 1..100, so position <= reach is the first reach tiers.
				exec(insAvail, digest, reach(k, v))
			}
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	// Fresh statistics, as autovacuum/ANALYZE would have in production.
	if _, err := s.DB().ExecContext(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
}

type benchQuery struct{ tier, kernel, arch string }

// benchQueries mixes machines on every tier, both architectures and some
// kernels the catalog has no patch for.
func benchQueries() []benchQuery {
	var qs []benchQuery
	for i := range 4096 {
		kernel := benchKernel(i * 13 % benchKernels)
		if i%16 == 0 {
			kernel = fmt.Sprintf("4.%d.0-1.1-generic", i%100)
		}
		qs = append(qs, benchQuery{
			tier:   benchTierName(1 + i*37%benchTiers),
			kernel: kernel,
			arch:   benchArchs[i%2],
		})
	}
	return qs
}

// benchOpeners opens an empty store of each backend.
var benchOpeners = []struct {
	name string
	open func(b *testing.B) *sqlstore.Store
}{
	{"sqlite", func(b *testing.B) *sqlstore.Store {
		s, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "bench.db"), sqlstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}},
	{"postgres", func(b *testing.B) *sqlstore.Store {
		s, err := sqlstore.OpenPostgres(context.Background(), pgtest.New(b), sqlstore.PostgresOptions{}, sqlstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}},
}

// BenchmarkPatchesPage reads a page of 100 patches from the start of the
// 10,000-patch listing and from 9,000 patches in: keyset paging makes the
// two cost alike, where an offset would read the 9,000 first.
func BenchmarkPatchesPage(b *testing.B) {
	ctx := context.Background()
	for _, o := range benchOpeners {
		s := o.open(b)
		seedBench(b, s)
		all, err := s.Patches(ctx, store.PatchFilter{IncludeWithdrawn: true, Limit: 10_000})
		if err != nil || len(all) != 10_000 {
			b.Fatalf("%s: listing: %d patches, %v", o.name, len(all), err)
		}
		// Each position twice, in turns, so that what the seeding leaves
		// running (checkpoints, autovacuum) weighs on both alike.
		for _, at := range []int{0, 9_000, 0, 9_000} {
			f := store.PatchFilter{IncludeWithdrawn: true, Limit: 100}
			if at > 0 {
				f.After = store.PatchCursorOf(all[at-1])
			}
			b.Run(fmt.Sprintf("%s/after-%d", o.name, at), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					ps, err := s.Patches(ctx, f)
					if err != nil || len(ps) != 100 || ps[0].Digest != all[at].Digest {
						b.Fatalf("page after %d: %d patches, %v", at, len(ps), err)
					}
				}
			})
		}
		s.Close()
	}
}

func BenchmarkNewest(b *testing.B) {
	openers := []struct {
		name string
		open func(b *testing.B) *sqlstore.Store
	}{
		{"sqlite", func(b *testing.B) *sqlstore.Store {
			s, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "bench.db"), sqlstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"postgres", func(b *testing.B) *sqlstore.Store {
			s, err := sqlstore.OpenPostgres(context.Background(), pgtest.New(b), sqlstore.PostgresOptions{}, sqlstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
	}
	qs := benchQueries()
	for _, o := range openers {
		// Seed once per backend, outside b.Run: its function runs once per
		// round as the benchmark grows b.N.
		s := o.open(b)
		seedBench(b, s)
		if p, err := s.Newest(context.Background(), benchTierName(1), benchKernel(0), "x86_64"); err != nil || p.Version != "100.10" {
			b.Fatalf("%s: Newest on the first tier: want version 100.10, got %q (err %v)", o.name, p.Version, err)
		}
		b.Run(o.name, func(b *testing.B) {
			var next atomic.Uint64
			var found atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					q := qs[next.Add(1)%uint64(len(qs))]
					_, err := s.Newest(ctx, q.tier, q.kernel, q.arch)
					switch {
					case err == nil:
						found.Add(1)
					case !errors.Is(err, catalog.ErrNotFound):
						b.Errorf("Newest(%v): %v", q, err)
						return
					}
				}
			})
			b.ReportMetric(float64(found.Load())/float64(b.N), "found/op")
		})
		s.Close()
	}
}

// BenchmarkPatchesPageJIT reads a page of 1,000 patches on PostgreSQL with
// the store's default (jit off) and with jit=on in the DSN, in turns on the
// same database, so the two rows share the load of the moment.
func BenchmarkPatchesPageJIT(b *testing.B) {
	ctx := context.Background()
	dsn := pgtest.New(b)
	open := func(dsn string) *sqlstore.Store {
		s, err := sqlstore.OpenPostgres(ctx, dsn, sqlstore.PostgresOptions{}, sqlstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	off := open(dsn)
	defer off.Close()
	seedBench(b, off)
	on := open(withJIT(b, dsn, "on"))
	defer on.Close()
	// Four turns each: on a shared machine one turn can be unlucky.
	type turn struct {
		name string
		s    *sqlstore.Store
	}
	var turns []turn
	for range 4 {
		turns = append(turns, turn{"jit-on", on}, turn{"jit-off", off})
	}
	for _, run := range turns {
		b.Run(run.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ps, err := run.s.Patches(ctx, store.PatchFilter{IncludeWithdrawn: true, Limit: 1000})
				if err != nil || len(ps) != 1000 {
					b.Fatalf("page: %d patches, %v", len(ps), err)
				}
			}
		})
	}
}
