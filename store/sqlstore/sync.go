package sqlstore

// Placeholder until the sync tables land in this package: every method
// fails, so nothing can mistake it for a working feed.

import (
	"context"
	"errors"

	"github.com/patchmesh/patchmesh/store"
)

var errSyncNotBuilt = errors.New("sqlstore: federation sync tables are not built yet")

func (s *Store) Feed(ctx context.Context, tier string, pos store.FeedPosition, limit int) (store.FeedPage, error) {
	return store.FeedPage{}, errSyncNotBuilt
}
func (s *Store) Cursor(ctx context.Context, tier string) (store.Cursor, error) {
	return store.Cursor{}, errSyncNotBuilt
}
func (s *Store) ApplySynced(ctx context.Context, prev, next store.Cursor, events []store.SyncedEvent) error {
	return errSyncNotBuilt
}
func (s *Store) TrustedKeys(ctx context.Context) ([]store.TrustedKey, error) {
	return nil, errSyncNotBuilt
}
func (s *Store) AddTrustedKey(ctx context.Context, k store.TrustedKey) error { return errSyncNotBuilt }
func (s *Store) RemoveTrustedKey(ctx context.Context, id string) error       { return errSyncNotBuilt }
