package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LockFile is the file in the data directory that a running node holds
// an exclusive lock on, with its PID written inside for the operator.
const LockFile = "patchmesh.lock"

// ErrDataDirInUse is returned by New when another process holds the data
// directory's lock.
var ErrDataDirInUse = errors.New("data directory in use")

// dataDirLock is a held lock on a data directory.
type dataDirLock struct {
	f *os.File
}

// lockDataDir takes the data directory for this process, so that two
// nodes never share one SQLite file, blob directory or hub key. The lock
// is the kernel's (flock), not the file's existence: it goes away with the
// process however it ends, kill -9 included, so a stale file never blocks
// a restart. The file is left in place on release; removing it would let
// a third process lock a new file while a second still waits on the old.
func lockDataDir(dir string) (*dataDirLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("node: data directory: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: data directory lock: %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("node: lock %s: %w", path, err)
	}
	if !held {
		holder := "another process"
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				holder = fmt.Sprintf("another process (PID %d)", pid)
			}
		}
		f.Close()
		return nil, fmt.Errorf("node: %w: %s is used by %s, which holds %s; stop it or give this node another data directory (--data-dir)",
			ErrDataDirInUse, dir, holder, path)
	}
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("node: data directory lock: %w", err)
		}
	}
	return &dataDirLock{f: f}, nil
}

// release gives the directory up. The PID is cleared first, so that the
// file never names a process that no longer holds it after a clean stop.
func (l *dataDirLock) release() error {
	if l == nil {
		return nil
	}
	l.f.Truncate(0)
	return l.f.Close()
}
