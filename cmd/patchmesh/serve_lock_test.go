package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeRefusesADataDirInUse runs real `patchmesh serve` processes on
// one data directory: the second is refused, naming the first's PID, and
// the directory is free again once the first is gone, killed or stopped.
func TestServeRefusesADataDirInUse(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	env := cleanEnv()
	args := []string{"--data-dir", dataDir, "--listen", "127.0.0.1:0"}

	first := startServe(t, env, args...)
	first.url(t)

	second := startServe(t, env, args...)
	select {
	case <-second.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("a second serve on a data directory in use: want it refused, still running:\n%s", second.stderr.String())
	}
	out := second.stderr.String()
	want := fmt.Sprintf("data directory in use: %s is used by another process (PID %d)", dataDir, first.cmd.Process.Pid)
	if second.cmd.ProcessState.ExitCode() != exitServer || !strings.Contains(out, want) {
		t.Fatalf("second serve: want exit %d and %q, got exit %d:\n%s", exitServer, want, second.cmd.ProcessState.ExitCode(), out)
	}
	if strings.Contains(out, "listening on") || strings.Contains(out, "password") {
		t.Errorf("the refused serve started anyway:\n%s", out)
	}

	// kill -9 leaves the lock file behind, but not the lock.
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.done
	third := startServe(t, env, args...)
	third.url(t)
	third.stop(t)

	fourth := startServe(t, env, args...)
	fourth.url(t)
	fourth.stop(t)
}
