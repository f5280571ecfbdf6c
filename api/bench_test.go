package api_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/blob/fsblob"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

// The check-in benchmark's catalog: 10,000 patches over 100 tiers.
const (
	benchPatches = 10000
	benchTiers   = 100
	benchKernels = 100
)

// checkInFixture is built once per test binary run: a SQLite store holding
// the benchmark catalog and one machine token per tier.
var checkInFixture struct {
	once    sync.Once
	dir     string
	err     error
	store   *sqlstore.Store
	changes store.Changes
	handler http.Handler
	// machines[i] asks about kernels[i] from tier i.
	machines []string
	kernels  []string
}

func benchKernel(k int) string { return fmt.Sprintf("5.15.0-%d.1-generic", 100+k) }

func buildCheckInFixture() error {
	f := &checkInFixture
	ctx := context.Background()
	var err error
	if f.dir, err = os.MkdirTemp("", "patchmesh-api-bench-"); err != nil {
		return err
	}
	// Sealed as a hub's store is, so that each check-in also finds the
	// hub's signed record of the patch it offers.
	_, hubKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	if f.store, err = sqlstore.OpenSQLite(ctx, filepath.Join(f.dir, "meta.db"), sqlstore.Options{Sealer: federation.Sealer{Key: hubKey}, Changes: &f.changes}); err != nil {
		return err
	}
	blobs, err := fsblob.Open(filepath.Join(f.dir, "blobs"))
	if err != nil {
		return err
	}
	tiers := append([]string(nil), catalog.DefaultTiers...)
	for i := len(tiers); i < benchTiers; i++ {
		name := fmt.Sprintf("tier-%03d", i)
		if _, err := f.store.AddTier(ctx, name); err != nil {
			return err
		}
		tiers = append(tiers, name)
	}
	// Patch i is for kernel i%100 at version (107+k).(i/100+1); it lands
	// on the first tier and is promoted to one more, spread so that each
	// (kernel, tier) pair has about one patch.
	for i := range benchPatches {
		k := i % benchKernels
		p := catalog.Patch{
			Digest:  string(blob.FromBytes([]byte(fmt.Sprint("bench-patch-", i)))),
			Kernel:  benchKernel(k),
			Arch:    "x86_64",
			Version: fmt.Sprintf("%d.%d", 107+k, i/benchKernels+1),
			Size:    4096,
			CVEs:    []string{"CVE-2024-1086"},
		}
		if _, err := f.store.AddPatch(ctx, p); err != nil {
			return fmt.Errorf("add patch %d: %w", i, err)
		}
		if tier := tiers[(i*7+i/benchKernels)%benchTiers]; tier != tiers[0] {
			if _, err := f.store.Promote(ctx, p.Digest, tier); err != nil {
				return fmt.Errorf("promote patch %d: %w", i, err)
			}
		}
	}
	key := make([]byte, 32)
	rand.Read(key)
	for i, tier := range tiers {
		secret, t, err := auth.NewToken(catalog.TokenMachine)
		if err != nil {
			return err
		}
		id := auth.MachineID(key, fmt.Sprintf("bench-machine-%06d", i))
		t.Tier, t.Name, t.MachineID = tier, id, id
		m := catalog.Machine{ID: id, Tier: tier, Kernel: benchKernel(i), Arch: "x86_64"}
		if err := f.store.RegisterMachine(ctx, m, t); err != nil {
			return err
		}
		f.machines = append(f.machines, "Bearer "+secret)
		f.kernels = append(f.kernels, benchKernel((i*13)%benchKernels))
	}
	discard := slog.New(slog.DiscardHandler)
	f.handler, err = api.New(api.Config{
		Store: f.store, Blobs: blobs, Auth: auth.New(f.store, auth.Config{Changes: &f.changes}, discard), Log: discard,
		// Wired as a node wires them: the store tells the token cache and
		// the offer index of every write.
		Changes:    &f.changes,
		MachineKey: key,
	})
	return err
}

func TestMain(m *testing.M) {
	code := m.Run()
	if checkInFixture.store != nil {
		checkInFixture.store.Close()
	}
	if checkInFixture.dir != "" {
		os.RemoveAll(checkInFixture.dir)
	}
	os.Exit(code)
}

// BenchmarkCheckIn measures the check-in question, GET /v1/client/patch
// ("the newest patch for my kernel on my tier", with the hub's signed
// record of it), through the full handler (middleware, governor,
// machine-token authentication, the SQLite queries) without a network,
// from parallel clients spread over 100 tiers.
func BenchmarkCheckIn(b *testing.B) {
	f := &checkInFixture
	f.once.Do(func() {
		start := time.Now()
		f.err = buildCheckInFixture()
		b.Logf("built %d patches over %d tiers in %v", benchPatches, benchTiers, time.Since(start))
	})
	if f.err != nil {
		b.Fatalf("fixture: %v", f.err)
	}
	var next, found, missing atomic.Int64
	// CPU time of the whole process per check-in: on a machine shared with
	// other work the wall-clock rate swings widely, the CPU a check-in
	// costs much less.
	cpuBefore := processCPU()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1)) % len(f.machines)
			req := httptest.NewRequest(http.MethodGet, "/v1/client/patch?kernel="+f.kernels[i]+"&arch=x86_64", nil)
			req.Header.Set("Authorization", f.machines[i])
			w := httptest.NewRecorder()
			f.handler.ServeHTTP(w, req)
			switch w.Code {
			case http.StatusOK:
				if !bytes.Contains(w.Body.Bytes(), []byte(`"signed":`)) {
					b.Fatalf("offer without the hub's signed record: %s", w.Body)
				}
				found.Add(1)
			case http.StatusNotFound:
				missing.Add(1)
			default:
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpuBefore).Microseconds())/float64(b.N), "cpu-µs/op")
	if n := found.Load() + missing.Load(); n > 0 {
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "checkins/s")
		b.ReportMetric(float64(found.Load())/float64(n), "found-ratio")
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
