package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewRefusesADataDirInUse(t *testing.T) {
	cfg := testConfig(t)
	ctx := context.Background()
	first, err := New(ctx, cfg, nil, WithConsole(&syncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := os.ReadFile(filepath.Join(cfg.Node.DataDir, LockFile))
	if err != nil || strings.TrimSpace(string(pid)) != fmt.Sprint(os.Getpid()) {
		t.Errorf("lock file: want this PID %d, got %q, %v", os.Getpid(), pid, err)
	}

	_, err = New(ctx, cfg, nil, WithConsole(&syncBuffer{}))
	if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), fmt.Sprintf("PID %d", os.Getpid())) {
		t.Fatalf("second node on %s: want ErrDataDirInUse naming PID %d, got %v", cfg.Node.DataDir, os.Getpid(), err)
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := New(ctx, cfg, nil, WithConsole(&syncBuffer{}))
	if err != nil {
		t.Fatalf("a node after the first closed: %v", err)
	}
	again.Close()
}
