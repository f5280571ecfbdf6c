package sqlstore_test

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"modernc.org/sqlite"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/pgtest"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

// An ApplySynced cut short — its transaction failing, its context
// cancelled or its process killed after it has stored part of the round —
// must leave nothing of the round: no event, no patch, the old cursor. The
// cut is made by a trigger on the insert of the round's last event, after
// the round's patches and its first event are written.

// The round under test: the cursor after round one, then round two.
var (
	roundOne = store.Cursor{Tier: "beta", HubTier: "edge", HubSeq: 1, Upstream: "http://127.0.0.1:7070", UpstreamSeq: 10}
	roundTwo = store.Cursor{Tier: "beta", HubTier: "edge", HubSeq: 3, Upstream: "http://127.0.0.1:7070", UpstreamSeq: 12}
	synced   = []catalog.Patch{syncedPatch("1.1"), syncedPatch("1.2"), syncedPatch("1.3")}
)

func syncedPatch(version string) catalog.Patch {
	return catalog.Patch{
		Digest: "sha256:" + strings.Repeat(strings.ReplaceAll(version, ".", ""), 64)[:64],
		Kernel: "6.8.0-45.45-generic", Arch: "x86_64", Version: version, Size: 1,
		Created: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC),
	}
}

// syncedEvent is a patch.added as a sync loop hands it over; the store
// treats the record as opaque bytes, so any bytes do.
func syncedEvent(hubSeq int64) store.SyncedEvent {
	return store.SyncedEvent{
		Record: fmt.Appendf(nil, `{"tier_seq":%d}`, hubSeq), Sig: fmt.Appendf(nil, "sig-%d", hubSeq),
		HubSeq: hubSeq, Type: catalog.EventPatchAdded, Patch: synced[hubSeq-1], Apply: true,
	}
}

// applyRoundOne syncs the first patch and returns the head after it.
func applyRoundOne(t *testing.T, s store.Store) int64 {
	t.Helper()
	if err := s.ApplySynced(t.Context(), store.Cursor{Tier: "beta"}, roundOne, []store.SyncedEvent{syncedEvent(1)}); err != nil {
		t.Fatalf("ApplySynced, round one: %v", err)
	}
	h, err := s.Head(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func applyRoundTwo(ctx context.Context, s store.Store) error {
	return s.ApplySynced(ctx, roundOne, roundTwo, []store.SyncedEvent{syncedEvent(2), syncedEvent(3)})
}

// wantRoundTwoUndone checks that nothing of round two stayed.
func wantRoundTwoUndone(t *testing.T, s store.Store, head int64) {
	t.Helper()
	ctx := t.Context()
	if h, err := s.Head(ctx); err != nil || h != head {
		t.Errorf("Head after the cut round: want %d, got %d (err %v)", head, h, err)
	}
	for _, p := range synced[1:] {
		if _, err := s.Patch(ctx, p.Digest); !errors.Is(err, catalog.ErrNotFound) {
			t.Errorf("patch %s of the cut round: want ErrNotFound, got %v", p.Version, err)
		}
	}
	c, err := s.Cursor(ctx, "beta")
	if err != nil {
		t.Fatal(err)
	}
	c.Updated = time.Time{}
	if c != roundOne {
		t.Errorf("cursor after the cut round: want %+v, got %+v", roundOne, c)
	}
	page, err := s.Feed(ctx, "beta", store.FeedPosition{}, 0)
	if err != nil || len(page.Entries) != 1 || page.HubHead != 1 {
		t.Errorf("Feed(beta) after the cut round: want round one's entry only, got %d entries, hub head %d (err %v)",
			len(page.Entries), page.HubHead, err)
	}
}

// wantRoundTwoApplies checks that the round goes through once the cut is
// gone, so the failure was the injected one.
func wantRoundTwoApplies(t *testing.T, s store.Store) {
	t.Helper()
	if err := applyRoundTwo(t.Context(), s); err != nil {
		t.Fatalf("ApplySynced, round two without the cut: %v", err)
	}
	if _, err := s.Patch(t.Context(), synced[2].Digest); err != nil {
		t.Errorf("patch of round two: %v", err)
	}
}

func TestApplySyncedFailingMidwayLeavesNothing(t *testing.T) {
	last := synced[2].Digest
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			ctx := t.Context()
			s, err := d.open(ctx, d.location(t))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			head := applyRoundOne(t, s)
			install := []string{`CREATE TRIGGER cut BEFORE INSERT ON events WHEN NEW.digest = '` + last + `'
				BEGIN SELECT RAISE(ABORT, 'injected failure'); END`}
			drop := `DROP TRIGGER cut`
			if d.name == "postgres" {
				install = []string{`CREATE FUNCTION cut() RETURNS trigger LANGUAGE plpgsql AS $$
					BEGIN
						IF NEW.digest = '` + last + `' THEN RAISE EXCEPTION 'injected failure'; END IF;
						RETURN NEW;
					END $$`,
					`CREATE TRIGGER cut BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION cut()`}
				drop = `DROP TRIGGER cut ON events`
			}
			for _, q := range install {
				if _, err := s.DB().ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			err = applyRoundTwo(ctx, s)
			if err == nil || !strings.Contains(err.Error(), "injected failure") {
				t.Fatalf("ApplySynced failing midway: want the injected failure, got %v", err)
			}
			wantRoundTwoUndone(t, s, head)
			if _, err := s.DB().ExecContext(ctx, drop); err != nil {
				t.Fatal(err)
			}
			wantRoundTwoApplies(t, s)
		})
	}
}

func TestPostgresApplySyncedCancelledMidwayLeavesNothing(t *testing.T) {
	ctx := t.Context()
	s := openPostgres(t, pgtest.New(t))
	head := applyRoundOne(t, s)
	for _, q := range []string{`CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN
				IF NEW.digest = '` + synced[2].Digest + `' THEN PERFORM pg_sleep(30); END IF;
				RETURN NEW;
			END $$`,
		`CREATE TRIGGER stall BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION stall()`} {
		if _, err := s.DB().ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	applyCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- applyRoundTwo(applyCtx, s) }()

	// Wait (bounded) until the round stalls inside its last insert.
	stalled := false
	for range 400 {
		var n int
		if err := s.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event = 'PgSleep'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			stalled = true
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if !stalled {
		t.Fatal("ApplySynced never reached its last event's insert")
	}
	cancel()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("ApplySynced cancelled midway: want an error, got nil")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ApplySynced did not return within 20s of its cancellation")
	}
	wantRoundTwoUndone(t, s, head)
	if _, err := s.DB().ExecContext(ctx, `DROP TRIGGER stall ON events`); err != nil {
		t.Fatal(err)
	}
	wantRoundTwoApplies(t, s)
}

// onCut is what the SQLite trigger function cut() does: cancel a context,
// or kill the process. SQLite functions are registered once per process.
var (
	onCut        atomic.Pointer[func()]
	registerOnce sync.Once
)

func registerCut(t *testing.T) {
	registerOnce.Do(func() {
		err := sqlite.RegisterScalarFunction("patchmesh_test_cut", 0,
			func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
				if f := onCut.Load(); f != nil {
					(*f)()
				}
				return nil, nil
			})
		if err != nil {
			t.Fatalf("register cut(): %v", err)
		}
	})
}

func installSQLiteCut(t *testing.T, s *sqlstore.Store) {
	t.Helper()
	if _, err := s.DB().ExecContext(t.Context(), `CREATE TRIGGER cut BEFORE INSERT ON events
		WHEN NEW.digest = '`+synced[2].Digest+`' BEGIN SELECT patchmesh_test_cut(); END`); err != nil {
		t.Fatal(err)
	}
}

func TestSQLiteApplySyncedCancelledMidwayLeavesNothing(t *testing.T) {
	registerCut(t)
	s := openSQLite(t, filepath.Join(t.TempDir(), "p.db"))
	head := applyRoundOne(t, s)
	installSQLiteCut(t, s)
	applyCtx, cancel := context.WithCancel(t.Context())
	defer cancel()
	f := func() { cancel() }
	onCut.Store(&f)
	defer onCut.Store(nil)
	if err := applyRoundTwo(applyCtx, s); err == nil {
		t.Fatal("ApplySynced cancelled midway: want an error, got nil")
	}
	wantRoundTwoUndone(t, s, head)
	onCut.Store(nil)
	wantRoundTwoApplies(t, s)
}

const syncCrashEnv = "PATCHMESH_SQLSTORE_SYNC_CRASH_DB"

// The child applies round one, then dies by SIGKILL inside round two.
func TestSQLiteApplySyncedKilledMidwayLeavesNothing(t *testing.T) {
	if path := os.Getenv(syncCrashEnv); path != "" {
		registerCut(t)
		s, err := sqlstore.OpenSQLite(t.Context(), path, sqlstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		applyRoundOne(t, s)
		installSQLiteCut(t, s)
		kill := func() { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
		onCut.Store(&kill)
		err = applyRoundTwo(t.Context(), s)
		t.Fatalf("ApplySynced returned (%v) although the process was to die inside it", err)
	}

	path := filepath.Join(t.TempDir(), "crash.db")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestSQLiteApplySyncedKilledMidwayLeavesNothing$", "-test.count=1")
	cmd.Env = append(os.Environ(), syncCrashEnv+"="+path)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child: want it killed, got err %v, output:\n%s", err, out)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child: want death by SIGKILL inside round two, got %v, output:\n%s", err, out)
	}

	s := openSQLite(t, path)
	var cuts int
	if err := s.DB().QueryRowContext(t.Context(), `SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'cut'`).Scan(&cuts); err != nil {
		t.Fatal(err)
	}
	if cuts != 1 {
		t.Fatalf("child: want the cut trigger installed before the kill, found %d", cuts)
	}
	// Round one's event, nothing of round two.
	wantRoundTwoUndone(t, s, 1)
	if _, err := s.DB().ExecContext(t.Context(), `DROP TRIGGER cut`); err != nil {
		t.Fatal(err)
	}
	wantRoundTwoApplies(t, s)
}
