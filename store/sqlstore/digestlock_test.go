package sqlstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/internal/pgtest"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

// TestLockDigestHoldsAcrossStoresOnOneDatabase: two stores on one
// PostgreSQL database stand for two nodes sharing it. While one holds a
// digest's lock the other cannot take it (its wait ends with its context)
// but can take another digest's; once released, it takes it at once.
func TestLockDigestHoldsAcrossStoresOnOneDatabase(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.New(t)
	open := func() *sqlstore.Store {
		s, err := sqlstore.OpenPostgres(ctx, dsn, sqlstore.PostgresOptions{}, sqlstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	const d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	const d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	release, err := a.LockDigest(ctx, d1)
	if err != nil {
		t.Fatalf("LockDigest on node a: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = b.LockDigest(short, d1)
	cancel()
	if err == nil {
		t.Fatalf("LockDigest of a digest node a holds, on node b: want it to wait until its context ends, got the lock")
	}
	if !errors.Is(short.Err(), context.DeadlineExceeded) {
		t.Fatalf("node b's wait ended before its context did: %v", err)
	}
	other, err := b.LockDigest(ctx, d2)
	if err != nil {
		t.Fatalf("LockDigest of another digest on node b: %v", err)
	}
	other()
	release()
	got, err := b.LockDigest(ctx, d1)
	if err != nil {
		t.Fatalf("LockDigest on node b after node a released it: %v", err)
	}
	got()
}
