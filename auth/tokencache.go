package auth

import (
	"bytes"
	"context"
	"math"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Token cache defaults.
const (
	// DefaultTokenCacheSize holds a token for each of 200,000 machines:
	// about 50 MB of live heap at most (some 240 bytes a record, measured
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
//
// The entries hold no pointers: their strings and hashes are spans of one
// byte arena, their tier an index into a short list of the tier names, so
// the garbage collector does not scan 100,000 records on every cycle (it
// took about 17% of a check-in node's CPU when they were Go strings,
// bench/RESULTS.md, part D). A record is kept only if it reads back from
// the arena exactly as the store returned it; any other is read from the
// store every time.
type tokenCache struct {
	changes *store.Changes
	maxAge  time.Duration
	size    int
	now     func() time.Time

	mu      sync.RWMutex
	entries map[[tokenIDLen]byte]cachedToken
	// arena holds the bytes of every entry's ID, name, machine ID and
	// hash. It is only appended to: a string handed out keeps the array
	// it points into alive, whatever the arena became since. Starting over
	// drops it.
	arena []byte
	// tiers and tierIndex intern the tier names the entries carry.
	tiers     []string
	tierIndex map[string]uint32
}

// span is a stretch of the arena.
type span struct{ off, n uint32 }

// cachedToken is a catalog.Token packed without pointers, with the store
// generation it was read under and when (UnixNano of the cache's clock).
type cachedToken struct {
	gen                       uint64
	fetched                   int64
	id, name, machine, hash   span
	created, expires, revoked int64 // UnixMicro, when set
	tier                      uint32
	kind                      uint8 // index in cacheKinds
	flags                     uint8
}

const (
	hasExpires uint8 = 1 << iota
	hasRevoked
	revokeMachines
)

var cacheKinds = [...]catalog.TokenKind{catalog.TokenMachine, catalog.TokenSync, catalog.TokenAuth}

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
	return &tokenCache{changes: changes, maxAge: maxAge, size: size, now: now,
		entries: make(map[[tokenIDLen]byte]cachedToken), tierIndex: make(map[string]uint32)}
}

// token returns the token with this ID from the cache or, failing that,
// from the store. A nil cache always reads the store.
func (c *tokenCache) token(ctx context.Context, s Store, id string) (catalog.Token, error) {
	if c == nil || len(id) != tokenIDLen {
		return s.Token(ctx, id)
	}
	key := [tokenIDLen]byte([]byte(id))
	gen := c.changes.Generation()
	now := c.now().UnixNano()
	c.mu.RLock()
	e, ok := c.entries[key]
	var t catalog.Token
	if ok && e.gen == gen && now-e.fetched < int64(c.maxAge) && e.fetched <= now {
		t = c.unpack(e)
	} else {
		ok = false
	}
	c.mu.RUnlock()
	if ok {
		return t, nil
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
		clear(c.tierIndex)
		c.arena, c.tiers = nil, nil
	}
	if e, ok := c.pack(t); ok {
		e.gen, e.fetched = gen, now
		c.entries[key] = e
		// What the next check reads: the arena's strings, not the store
		// read's, which would be kept alive by nothing else.
		t = c.unpack(e)
	}
	c.mu.Unlock()
	return t, nil
}

// pack appends t's bytes to the arena and returns its entry, or false
// (and the arena as it was) if the entry would not read back as t.
// c.mu is held.
func (c *tokenCache) pack(t catalog.Token) (cachedToken, bool) {
	var e cachedToken
	kind := slices.Index(cacheKinds[:], t.Kind)
	if kind < 0 || len(t.ID) != tokenIDLen || len(c.arena) > math.MaxUint32/2 {
		return e, false
	}
	e.kind = uint8(kind)
	var ok bool
	if e.created, ok = packTime(t.Created, true); !ok {
		return e, false
	}
	if e.expires, ok = packTime(t.Expires, false); !ok {
		return e, false
	}
	if e.revoked, ok = packTime(t.Revoked, false); !ok {
		return e, false
	}
	if !t.Expires.IsZero() {
		e.flags |= hasExpires
	}
	if !t.Revoked.IsZero() {
		e.flags |= hasRevoked
	}
	if t.RevokeMachines {
		e.flags |= revokeMachines
	}
	tier, ok := c.tierIndex[t.Tier]
	if !ok {
		if len(c.tiers) >= c.size {
			return e, false
		}
		tier = uint32(len(c.tiers))
		c.tiers = append(c.tiers, t.Tier)
		c.tierIndex[t.Tier] = tier
	}
	e.tier = tier
	mark := len(c.arena)
	e.id = c.put(t.ID)
	e.machine = c.put(t.MachineID)
	e.name = e.machine // a machine token's name is its machine ID
	if t.Name != t.MachineID {
		e.name = c.put(t.Name)
	}
	e.hash = c.put(string(t.Hash))
	if !sameToken(c.unpack(e), t) {
		c.arena = c.arena[:mark]
		return e, false
	}
	return e, true
}

func (c *tokenCache) put(s string) span {
	sp := span{off: uint32(len(c.arena)), n: uint32(len(s))}
	c.arena = append(c.arena, s...)
	return sp
}

// unpack reads an entry back as the token it was packed from; its strings
// and hash point into the arena. c.mu is held (to read or write).
func (c *tokenCache) unpack(e cachedToken) catalog.Token {
	str := func(sp span) string {
		if sp.n == 0 {
			return ""
		}
		return unsafe.String(&c.arena[sp.off], int(sp.n))
	}
	t := catalog.Token{
		ID:             str(e.id),
		Kind:           cacheKinds[e.kind],
		Tier:           c.tiers[e.tier],
		Name:           str(e.name),
		Created:        time.UnixMicro(e.created).UTC(),
		MachineID:      str(e.machine),
		RevokeMachines: e.flags&revokeMachines != 0,
	}
	if e.hash.n > 0 {
		t.Hash = c.arena[e.hash.off : e.hash.off+e.hash.n : e.hash.off+e.hash.n]
	}
	if e.flags&hasExpires != 0 {
		t.Expires = time.UnixMicro(e.expires).UTC()
	}
	if e.flags&hasRevoked != 0 {
		t.Revoked = time.UnixMicro(e.revoked).UTC()
	}
	return t
}

// packTime is t in microseconds, if time.UnixMicro(us).UTC() gives t back
// exactly (the SQL store's times do); a zero t packs unless must is set.
func packTime(t time.Time, must bool) (int64, bool) {
	if t.IsZero() {
		return 0, !must
	}
	us := t.UnixMicro()
	return us, time.UnixMicro(us).UTC() == t
}

// sameToken is whether a and b are the same record, field by field (a
// zero-length hash and a nil one alike).
func sameToken(a, b catalog.Token) bool {
	return a.ID == b.ID && a.Kind == b.Kind && a.Tier == b.Tier && a.Name == b.Name &&
		bytes.Equal(a.Hash, b.Hash) && a.Created == b.Created && a.Expires == b.Expires &&
		a.Revoked == b.Revoked && a.MachineID == b.MachineID && a.RevokeMachines == b.RevokeMachines
}
