package pgblob

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/internal/pgtest"
)

// crashEnv carries the database to the child process that dies mid-upload.
const crashEnv = "PATCHMESH_PGBLOB_CRASH_DSN"

// crashApp names the child's sessions, so the parent can wait for
// PostgreSQL to notice they are gone.
const crashApp = "pgblob-crash-child"

// TestUploadKilledMidwayIsReclaimedAtOpen runs a child process that stages
// three chunks of an upload and SIGKILLs itself, while this process (a
// second node sharing the database) has an upload of its own in progress.
// The next Open reclaims the dead child's upload and its chunks at once,
// not an AbandonAfter later, and leaves the live upload alone, which then
// commits.
func TestUploadKilledMidwayIsReclaimedAtOpen(t *testing.T) {
	const chunk = 4096
	ctx := context.Background()
	if dsn := os.Getenv(crashEnv); dsn != "" {
		pool, err := pgxpool.New(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(ctx, pool, Options{ChunkSize: chunk})
		if err != nil {
			t.Fatal(err)
		}
		b := bytes.Repeat([]byte("dead "), 4*chunk)
		w, err := s.Create(ctx, blob.FromBytes(b))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b[:3*chunk]); err != nil {
			t.Fatal(err)
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal ends the process
	}

	dsn := pgtest.New(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	live, err := Open(ctx, pool, Options{ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { live.Close() })
	kept := bytes.Repeat([]byte("live "), 3*chunk)
	w, err := live.Create(ctx, blob.FromBytes(kept))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(kept[:2*chunk]); err != nil {
		t.Fatal(err)
	}

	childDSN := dsn + "&application_name=" + crashApp
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestUploadKilledMidwayIsReclaimedAtOpen$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+childDSN)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child: want it killed, got err %v, output:\n%s", err, out)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child: want death by SIGKILL mid-upload, got %v, output:\n%s", err, out)
	}
	uploads := func() (n int) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM blob_uploads`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := uploads(); n != 2 {
		t.Fatalf("before the restart: want 2 open uploads (the dead child's and the live one), got %d", n)
	}
	// The kernel closed the child's sockets; wait (bounded) for PostgreSQL
	// to end its sessions, which releases their locks.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, crashApp).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed child's %d sessions still open after 20s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}

	restarted, err := Open(ctx, pool, Options{ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restarted.Close() })
	if n := uploads(); n != 1 {
		t.Fatalf("after the restart: want only the live upload open, got %d", n)
	}
	var stray int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM blob_chunks c WHERE NOT EXISTS
		(SELECT 1 FROM blob_uploads u WHERE u.upload_id = c.upload_id)`).Scan(&stray); err != nil {
		t.Fatal(err)
	}
	if stray != 0 {
		t.Errorf("after the restart: %d chunks of the dead upload remain, want 0", stray)
	}
	if _, err := w.Write(kept[2*chunk:]); err != nil {
		t.Fatalf("the live upload after the restart: %v", err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("the live upload's commit after the restart: %v", err)
	}
	if _, err := restarted.Stat(ctx, blob.FromBytes(kept)); err != nil {
		t.Errorf("the live upload's blob: %v", err)
	}
	if n := leftovers(t, restarted); n != 0 {
		t.Errorf("after the commit: %d staged rows remain, want 0", n)
	}
}
