package auth

import (
	"context"
	"sync"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Token cache defaults.
const (
	// DefaultTokenCacheSize holds a token for each of 200,000 machines:
	// about 60 MB at most.
	DefaultTokenCacheSize = 200_000
	// DefaultTokenCacheMaxAge bounds how long a token revoked by another
	// node sharing this node's database (which this node's store.Changes
	// does not hear of) may still be read from the cache.
	DefaultTokenCacheMaxAge = time.Second
)

// tokenCache keeps token records as the store returned them, by ID, so
// that a check-in does not query the store to learn the hash it checks
// the secret against. It caches the record, never the verdict: every use
// still hashes the presented secret, compares it in constant time and
// checks kind, revocation and expiry (Bearer).
//
// An entry is served only while the store's generation (store.Changes) is
// the one read before the entry was fetched, and it is younger than
// maxAge. Every committed store transaction bumps the generation, a
// revocation or deletion of a token, a machine or a tier among them, so a
// revoked token is refused from the moment the revoking call returns. Only
// found tokens are kept: unknown IDs cannot fill the cache.
type tokenCache struct {
	changes *store.Changes
	maxAge  time.Duration
	size    int
	now     func() time.Time

	mu      sync.RWMutex
	entries map[string]cachedToken
}

type cachedToken struct {
	t       catalog.Token
	gen     uint64
	fetched time.Time
}

func newTokenCache(changes *store.Changes, size int, maxAge time.Duration, now func() time.Time) *tokenCache {
	if changes == nil || size < 0 || maxAge < 0 {
		return nil // no cache: every check reads the store
	}
	if size == 0 {
		size = DefaultTokenCacheSize
	}
	if maxAge == 0 {
		maxAge = DefaultTokenCacheMaxAge
	}
	return &tokenCache{changes: changes, maxAge: maxAge, size: size, now: now, entries: make(map[string]cachedToken)}
}

// token returns the token with this ID from the cache or, failing that,
// from the store. A nil cache always reads the store.
func (c *tokenCache) token(ctx context.Context, s Store, id string) (catalog.Token, error) {
	if c == nil {
		return s.Token(ctx, id)
	}
	gen := c.changes.Generation()
	now := c.now()
	c.mu.RLock()
	e, ok := c.entries[id]
	c.mu.RUnlock()
	if ok && e.gen == gen && now.Sub(e.fetched) < c.maxAge && !e.fetched.After(now) {
		return e.t, nil
	}
	// The generation was read before the store: a write committing after
	// this read bumps it and so outdates what is stored below.
	t, err := s.Token(ctx, id)
	if err != nil {
		return t, err
	}
	c.mu.Lock()
	if len(c.entries) >= c.size {
		// Full: start over rather than track recency on every hit. At the
		// default size that happens only on a node with more live machines
		// than it, where a hit rate lower than perfect is the price.
		clear(c.entries)
	}
	c.entries[id] = cachedToken{t: t, gen: gen, fetched: now}
	c.mu.Unlock()
	return t, nil
}
