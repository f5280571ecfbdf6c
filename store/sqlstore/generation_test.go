package sqlstore_test

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/internal/pgtest"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

// Two nodes share one PostgreSQL database. A token that node B verified
// and keeps in its token cache for an hour is revoked through node A:
// B must refuse it once its poll of the store generation has seen A's
// commit, long before the hour is out. Without the poll (or without the
// bump in A's transaction) B would honour the revoked token for the hour.
func TestPostgresNodesHearOfEachOthersWrites(t *testing.T) {
	dsn := pgtest.New(t)
	ctx := t.Context()
	a := openPolling(t, dsn, &store.Changes{})
	bChanges := &store.Changes{}
	b := openPolling(t, dsn, bChanges)
	authB := auth.New(b, auth.Config{Changes: bChanges, TokenCacheMaxAge: time.Hour}, slog.New(slog.NewTextHandler(io.Discard, nil)))

	secret, tok, err := auth.NewToken(catalog.TokenAuth)
	if err != nil {
		t.Fatal(err)
	}
	tok.Tier, tok.Name, tok.Created = catalog.DefaultTiers[0], "shared-db", time.Now().UTC().Truncate(time.Microsecond)
	if err := a.AddToken(ctx, tok); err != nil {
		t.Fatalf("AddToken at A: %v", err)
	}
	// B checks the token twice: the second from its cache.
	for i := range 2 {
		if _, err := authB.Bearer(ctx, "Bearer "+secret, catalog.TokenAuth); err != nil {
			t.Fatalf("check %d at B before the revocation: %v", i, err)
		}
	}
	if err := a.RevokeToken(ctx, catalog.TokenAuth, tok.ID, time.Now().UTC()); err != nil {
		t.Fatalf("RevokeToken at A: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := authB.Bearer(ctx, "Bearer "+secret, catalog.TokenAuth)
		if errors.Is(err, auth.ErrUnauthenticated) {
			return
		}
		if err != nil {
			t.Fatalf("check at B after the revocation: want ErrUnauthenticated, got %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("B still accepts the token A revoked 10 s ago: its cache never heard of the revocation")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A long poll at node B waits on B's store.Changes; a patch logged through
// node A, sharing B's database, must wake it once B's poll of the store
// generation sees A's commit, not when the poll's wait runs out.
func TestPostgresWritesOfAnotherNodeWakeWaiters(t *testing.T) {
	dsn := pgtest.New(t)
	ctx := t.Context()
	a := openPolling(t, dsn, &store.Changes{})
	bChanges := &store.Changes{}
	openPolling(t, dsn, bChanges)
	// Let B's first poll pass, which only learns where the generation is.
	time.Sleep(100 * time.Millisecond)
	wake := bChanges.Wait()
	if _, err := a.AddTier(ctx, "wake-b"); err != nil {
		t.Fatalf("AddTier at A: %v", err)
	}
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("B's waiters slept through A's commit for 10 s")
	}
}

// openPolling opens a node's store on the shared database dsn, polling the
// store generation every 20 ms into changes.
func openPolling(t *testing.T, dsn string, changes *store.Changes) *sqlstore.Store {
	t.Helper()
	s, err := sqlstore.OpenPostgres(t.Context(), dsn, sqlstore.PostgresOptions{MaxConns: 4, GenerationPoll: 20 * time.Millisecond},
		sqlstore.Options{Changes: changes})
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
