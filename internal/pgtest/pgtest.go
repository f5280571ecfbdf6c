// Package pgtest gives tests a fresh, private PostgreSQL database on the
// real server that `make test` ensures is running.
//
// A missing server is a test failure, never a skip: the PostgreSQL backends
// are production code and CI must run their tests. Point
// PATCHMESH_TEST_POSTGRES at a server's maintenance database to use another
// server; scripts/postgres.sh starts or installs one.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultAdminDSN is the server `make test` ensures: local, trust auth.
const DefaultAdminDSN = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// AdminDSN returns the maintenance-database DSN tests connect through.
func AdminDSN() string {
	if s := os.Getenv("PATCHMESH_TEST_POSTGRES"); s != "" {
		return s
	}
	return DefaultAdminDSN
}

// New creates an empty database for this test, drops it when the test ends,
// and returns its DSN.
func New(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin := AdminDSN()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("pgtest: PostgreSQL is not reachable at %s: %v\n"+
			"Run the tests with `make test` (it starts or installs PostgreSQL), "+
			"or set PATCHMESH_TEST_POSTGRES to a reachable server.", redact(admin), err)
	}
	defer conn.Close(ctx)

	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := "patchmesh_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("pgtest: drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop %s: %v", name, err)
		}
	})

	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("pgtest: PATCHMESH_TEST_POSTGRES is not a URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// redact hides a password in a DSN so that a failure message never shows it.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparseable DSN)"
	}
	return u.Redacted()
}
