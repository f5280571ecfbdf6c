// Package nodetest wires a real node's API for tests: the api package over
// a real SQLite store, filesystem blobs and an authenticator with one known
// admin. The api, client and command-line tests share it so that they all
// test against the same parts, assembled the same way. It is a test fixture
// only; the node package does the production wiring.
package nodetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/blob/fsblob"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

// Password is the admin's password in every wired node. bcrypt cost 4
// keeps logins fast in tests.
const Password = "correct-horse-battery"

// Options tunes Wire. Zero values mean: admin "admin", wall clock, no
// store observer, a store that signs nothing and feed requests that poll.
type Options struct {
	Admin   string
	Now     func() time.Time
	Observe func(op string, d time.Duration, err error)
	// Sealer signs the store's patch events, as on a hub, so that its sync
	// feed has something to serve.
	Sealer store.Sealer
	// Changes is given to the store, auth and the api, as the node wires
	// them, so that long-polling feed requests wake on commit and the
	// token cache and offer index are dropped at every write. Nil turns
	// those off.
	Changes *store.Changes
}

// Node is the wired parts and the api.Config built from them, ready for
// the caller to tune before api.New.
type Node struct {
	Store   *sqlstore.Store
	Blobs   *fsblob.Store
	BlobDir string
	Auth    *auth.Authenticator
	Config  api.Config
}

// Wire opens a SQLite store and filesystem blobs under a fresh temp dir,
// closes them when the test ends, and returns them with an authenticator
// and an api.Config that logs to log.
func Wire(t testing.TB, log *slog.Logger, o Options) *Node {
	t.Helper()
	if o.Admin == "" {
		o.Admin = "admin"
	}
	dir := t.TempDir()
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(dir, "meta.db"), sqlstore.Options{Observe: o.Observe, Now: o.Now, Sealer: o.Sealer, Changes: o.Changes})
	if err != nil {
		t.Fatalf("nodetest: open sqlite store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	n := &Node{Store: st, BlobDir: filepath.Join(dir, "blobs")}
	if n.Blobs, err = fsblob.Open(n.BlobDir); err != nil {
		t.Fatalf("nodetest: open blob store: %v", err)
	}
	hash, err := auth.HashPassword(Password, 4)
	if err != nil {
		t.Fatalf("nodetest: hash password: %v", err)
	}
	n.Auth = auth.New(st, auth.Config{
		Admins:     []auth.Admin{{Name: o.Admin, PasswordHash: hash}},
		BcryptCost: 4,
		Now:        o.Now,
		Changes:    o.Changes,
	}, log)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	// The role is the hub's, where patch changes are allowed; a test of a
	// downstream node sets its own.
	n.Config = api.Config{Store: st, Blobs: n.Blobs, Auth: n.Auth, Log: log, MachineKey: key, Now: o.Now,
		Info: api.Info{Role: "hub"}, Changes: o.Changes}
	return n
}

// LogBuffer collects log output from concurrent writers.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
