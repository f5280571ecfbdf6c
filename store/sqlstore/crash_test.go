package sqlstore_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

const crashEnv = "PATCHMESH_SQLSTORE_CRASH_DB"

// A change AddPatch has returned from is committed: killing the process
// right after, with no Close, must not lose it. The test runs itself as a
// child that adds a patch and SIGKILLs itself.
func TestSQLiteCommittedChangeSurvivesKill(t *testing.T) {
	crashPatch := catalog.Patch{
		Digest: "sha256:" + strings.Repeat("c", 64), Kernel: "6.8.0-45.45-generic",
		Arch: "aarch64", Version: "45.3", Size: 1,
	}
	if path := os.Getenv(crashEnv); path != "" {
		s, err := sqlstore.OpenSQLite(t.Context(), path, sqlstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddPatch(t.Context(), crashPatch); err != nil {
			t.Fatal(err)
		}
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal ends the process
	}

	path := filepath.Join(t.TempDir(), "crash.db")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestSQLiteCommittedChangeSurvivesKill$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child: want it killed, got err %v, output:\n%s", err, out)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child: want death by SIGKILL after the commit, got %v, output:\n%s", err, out)
	}

	s := openSQLite(t, path)
	got, err := s.Patch(t.Context(), crashPatch.Digest)
	if err != nil {
		t.Fatalf("Patch after the kill: want the committed patch, got %v", err)
	}
	if got.Version != crashPatch.Version || len(got.Tiers) != 1 {
		t.Errorf("Patch after the kill: want version %s on one tier, got %+v", crashPatch.Version, got)
	}
	if h, err := s.Head(t.Context()); err != nil || h != 1 {
		t.Errorf("Head after the kill: want 1 (its event committed with it), got %d (err %v)", h, err)
	}
}
