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
	// about 80 MB of live heap at most (some 400 bytes a record, measured
	// with 100,000 in bench/RESULTS.md, "Issue 12, part D").
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
	// tiers holds one copy of each tier name the entries carry, so that
	// 100,000 machines on a tier share its name rather than each keeping
	// the copy its store read made. Guarded by mu, cleared with entries.
	tiers map[string]string
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
	return &tokenCache{changes: changes, maxAge: maxAge, size: size, now: now, entries: make(map[string]cachedToken), tiers: make(map[string]string)}
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
		clear(c.tiers)
	}
	t = c.compact(t)
	// Keyed by the record's own ID, not id: id is a slice of the request's
	// Authorization header, which the key would keep alive whole.
	c.entries[t.ID] = cachedToken{t: t, gen: gen, fetched: now}
	c.mu.Unlock()
	return t, nil
}

// compact makes t share the strings that many records repeat: its kind
// the package's constant, its tier the one copy in c.tiers, its name its
// machine ID when they are equal (a machine token's are). The record reads
// the same; only the memory behind it changes. c.mu is held.
func (c *tokenCache) compact(t catalog.Token) catalog.Token {
	for _, k := range [...]catalog.TokenKind{catalog.TokenMachine, catalog.TokenSync, catalog.TokenAuth} {
		if t.Kind == k {
			t.Kind = k
		}
	}
	if tier, ok := c.tiers[t.Tier]; ok {
		t.Tier = tier
	} else if len(c.tiers) < c.size {
		c.tiers[t.Tier] = t.Tier
	}
	if t.Name == t.MachineID {
		t.Name = t.MachineID
	}
	return t
}
