package auth

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

// countingStore counts token reads, to tell a cache hit from a store read.
type countingStore struct {
	*sqlstore.Store
	reads atomic.Int64
}

func (c *countingStore) Token(ctx context.Context, id string) (catalog.Token, error) {
	c.reads.Add(1)
	return c.Store.Token(ctx, id)
}

// cacheFixture is an Authenticator with a token cache over a SQLite store
// wired to the same store.Changes, as a node wires them.
type cacheFixture struct {
	*fixture
	changes *store.Changes
	counted *countingStore
	path    string // the SQLite file
}

func newCacheFixture(t *testing.T) *cacheFixture {
	t.Helper()
	ctx := context.Background()
	clk := &clock{t: t0}
	changes := &store.Changes{}
	path := filepath.Join(t.TempDir(), "meta.db")
	s, err := sqlstore.OpenSQLite(ctx, path, sqlstore.Options{Now: clk.Now, Changes: changes})
	if err != nil {
		t.Fatalf("open sqlite store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	counted := &countingStore{Store: s}
	logs, log := newCapture()
	cfg := Config{Now: clk.Now, Changes: changes}
	f := &fixture{a: New(counted, cfg, log), store: s, clock: clk, logs: logs, cfg: cfg}
	return &cacheFixture{fixture: f, changes: changes, counted: counted, path: path}
}

// bearer checks secret as a machine, sync or auth token and says whether
// it was accepted.
func (f *cacheFixture) bearer(t *testing.T, secret string) error {
	t.Helper()
	_, err := f.a.Bearer(context.Background(), "Bearer "+secret, catalog.TokenMachine, catalog.TokenSync, catalog.TokenAuth)
	if err != nil && !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("bearer: want nil or ErrUnauthenticated, got %v", err)
	}
	return err
}

func TestTokenCacheServesRepeatChecksFromMemory(t *testing.T) {
	f := newCacheFixture(t)
	secret, _ := f.addToken(t, catalog.TokenMachine, time.Time{})
	before := f.counted.reads.Load()
	for i := range 5 {
		if err := f.bearer(t, secret); err != nil {
			t.Fatalf("check %d: want accepted, got %v", i, err)
		}
	}
	if got := f.counted.reads.Load() - before; got != 1 {
		t.Errorf("store token reads for 5 checks: want 1, got %d", got)
	}
	// A cached record is not a cached verdict: a wrong secret under the
	// cached ID is refused.
	wrong := secret[:len(secret)-4] + "AAAA"
	if wrong == secret {
		wrong = secret[:len(secret)-4] + "BBBA"
	}
	if err := f.bearer(t, wrong); err == nil {
		t.Fatal("wrong secret under a cached token ID: want refused, got accepted")
	}
	f.wantEvent(t, EventTokenFail, reasonBadSecret)
}

// Every way the store revokes or deletes a credential must refuse the
// token on the very next check.
func TestTokenCacheRefusesRevokedTokenAtOnce(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		kind   catalog.TokenKind
		revoke func(t *testing.T, f *cacheFixture, tok catalog.Token)
		reason string
	}{
		{"machine token revoked", catalog.TokenMachine, func(t *testing.T, f *cacheFixture, tok catalog.Token) {
			if err := f.store.RevokeToken(ctx, catalog.TokenMachine, tok.ID, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}, reasonRevoked},
		{"sync token revoked", catalog.TokenSync, func(t *testing.T, f *cacheFixture, tok catalog.Token) {
			if err := f.store.RevokeToken(ctx, catalog.TokenSync, tok.ID, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}, reasonRevoked},
		{"auth token revoked", catalog.TokenAuth, func(t *testing.T, f *cacheFixture, tok catalog.Token) {
			if err := f.store.RevokeToken(ctx, catalog.TokenAuth, tok.ID, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}, reasonRevoked},
		{"machine registered again", catalog.TokenMachine, func(t *testing.T, f *cacheFixture, tok catalog.Token) {
			_, next, err := NewToken(catalog.TokenMachine)
			if err != nil {
				t.Fatal(err)
			}
			next.Tier, next.Name, next.MachineID = tok.Tier, tok.Name, tok.MachineID
			if err := f.store.RegisterMachine(ctx, catalog.Machine{ID: tok.MachineID, Tier: tok.Tier,
				Kernel: "5.15.0-107.117-generic", Arch: "x86_64", State: catalog.StateUnknown, ClientVersion: "1.0"}, next); err != nil {
				t.Fatal(err)
			}
		}, reasonRevoked},
		{"machine and its token deleted", catalog.TokenMachine, func(t *testing.T, f *cacheFixture, tok catalog.Token) {
			// Nothing was heard of the machine after the cut: PurgeFleet
			// deletes it and its tokens.
			if _, _, err := f.store.PurgeFleet(ctx, f.clock.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if _, err := f.store.Token(ctx, tok.ID); !errors.Is(err, catalog.ErrNotFound) {
				t.Fatalf("purged machine's token: want ErrNotFound from the store, got %v", err)
			}
		}, reasonUnknown},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newCacheFixture(t)
			secret, tok := f.addToken(t, c.kind, time.Time{})
			for range 2 { // the second check is served from the cache
				if err := f.bearer(t, secret); err != nil {
					t.Fatalf("before: want accepted, got %v", err)
				}
			}
			c.revoke(t, f, tok)
			if err := f.bearer(t, secret); err == nil {
				t.Fatal("after: want refused at once, got accepted")
			}
			f.wantEvent(t, EventTokenFail, c.reason)
		})
	}
}

// A write this node's store does not make (another node sharing the
// database, or a raw write outside a store transaction) is not seen until
// store.Changes.Invalidate is called or the entry's maximum age passes.
func TestTokenCacheInvalidateHookAndMaxAge(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		after func(f *cacheFixture, now *time.Time)
	}{
		{"Invalidate", func(f *cacheFixture, _ *time.Time) { f.changes.Invalidate() }},
		{"max age", func(_ *cacheFixture, now *time.Time) { *now = now.Add(DefaultTokenCacheMaxAge) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newCacheFixture(t)
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			f.a.tokens.now = func() time.Time { return now }
			secret, tok := f.addToken(t, catalog.TokenMachine, time.Time{})
			if err := f.bearer(t, secret); err != nil {
				t.Fatalf("before: want accepted, got %v", err)
			}
			// Another store over the same database, without this node's
			// Changes: a second node sharing it.
			other, err := sqlstore.OpenSQLite(ctx, f.path, sqlstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			if err := other.RevokeToken(ctx, catalog.TokenMachine, tok.ID, time.Time{}); err != nil {
				t.Fatal(err)
			}
			if err := f.bearer(t, secret); err != nil {
				t.Fatalf("revoked elsewhere, before the hook: the cache is expected to serve it, got %v", err)
			}
			c.after(f, &now)
			if err := f.bearer(t, secret); err == nil {
				t.Fatal("after the hook: want refused, got accepted")
			}
			f.wantEvent(t, EventTokenFail, reasonRevoked)
		})
	}
}

// The cache is bounded: filling it past its size starts it over rather
// than growing.
func TestTokenCacheIsBounded(t *testing.T) {
	f := newCacheFixture(t)
	f.a.tokens.size = 3
	for i := range 7 {
		secret, _ := f.addToken(t, catalog.TokenSync, time.Time{})
		if err := f.bearer(t, secret); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
		if n := len(f.a.tokens.entries); n > 3 {
			t.Fatalf("after %d tokens: cache holds %d entries, want at most 3", i+1, n)
		}
	}
}

// Cached records read exactly as the store's, hold no pointers for the
// garbage collector to follow, and share what many repeat: the tier's name,
// a machine token's name and machine ID.
func TestTokenCacheRecordsArePointerFree(t *testing.T) {
	f := newCacheFixture(t)
	var secrets []string
	for i := range 3 {
		secret, tok, err := NewToken(catalog.TokenMachine)
		if err != nil {
			t.Fatal(err)
		}
		id := MachineID([]byte("k"), fmt.Sprintf("machine-%010d", i))
		tok.Tier, tok.Name, tok.MachineID, tok.Created = "edge", id, id, f.clock.Now()
		if err := f.store.RegisterMachine(context.Background(), catalog.Machine{
			ID: id, Tier: "edge", Kernel: "5.15.0-107.117-generic", Arch: "x86_64", ClientVersion: "1.0",
		}, tok); err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, secret)
		if err := f.bearer(t, secret); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
	}
	// A sync token with an expiry, and a revoked one: the times and flags
	// must read back too.
	secret, _ := f.addToken(t, catalog.TokenSync, f.clock.Now().Add(time.Hour))
	if err := f.bearer(t, secret); err != nil {
		t.Fatal(err)
	}
	c := f.a.tokens
	for _, typ := range []reflect.Type{reflect.TypeOf(c.entries).Key(), reflect.TypeOf(c.entries).Elem()} {
		if p := pointerIn(typ); p != "" {
			t.Errorf("the cache's %v holds a pointer (%s): the GC would scan every entry", typ, p)
		}
	}
	if len(c.entries) != 4 {
		t.Fatalf("%d entries, want 4", len(c.entries))
	}
	for key, e := range c.entries {
		stored, err := f.store.Token(context.Background(), string(key[:]))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.unpack(e); !reflect.DeepEqual(got, stored) {
			t.Errorf("cached %+v, the store has %+v", got, stored)
		}
		if stored.Kind == catalog.TokenMachine && e.name != e.machine {
			t.Errorf("token %s: name and machine ID are two copies", key)
		}
	}
	if len(c.tiers) != 1 {
		t.Errorf("tiers %q, want edge once", c.tiers)
	}
	// Through the cache, a wrong secret is still refused, a right one taken.
	for i, s := range secrets {
		last := s[len(s)-1]
		wrong := s[:len(s)-1] + map[bool]string{true: "A", false: "B"}[last != 'A']
		if err := f.bearer(t, wrong); err == nil {
			t.Fatalf("token %d with a wrong secret: accepted", i)
		}
		if err := f.bearer(t, s); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
	}
}

// A record that would not read back exactly (here a time with a location
// and nanoseconds, which the SQL store never returns) is not kept, and the
// arena is as it was.
func TestTokenCacheKeepsOnlyWhatReadsBack(t *testing.T) {
	c := newTokenCache(&store.Changes{}, 10, time.Hour, time.Now)
	tok := catalog.Token{ID: "0123456789abcdef", Kind: catalog.TokenSync, Tier: "edge", Name: "n",
		Hash: make([]byte, 32), Created: time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600))}
	if _, ok := c.pack(tok); ok {
		t.Fatal("packed a time that does not read back")
	}
	if len(c.arena) != 0 {
		t.Errorf("arena holds %d bytes after a refused record", len(c.arena))
	}
	tok.Created = time.UnixMicro(tok.Created.UnixMicro()).UTC()
	e, ok := c.pack(tok)
	if !ok {
		t.Fatal("refused a record that reads back")
	}
	if got := c.unpack(e); !reflect.DeepEqual(got, tok) {
		t.Errorf("read back %+v, want %+v", got, tok)
	}
	tok.Kind = "other"
	if _, ok := c.pack(tok); ok {
		t.Error("packed a kind the cache does not know")
	}
}

// pointerIn names a pointer that a value of typ holds, "" if none.
func pointerIn(typ reflect.Type) string {
	switch typ.Kind() {
	case reflect.Pointer, reflect.String, reflect.Slice, reflect.Map, reflect.Chan, reflect.Func, reflect.Interface, reflect.UnsafePointer:
		return typ.String()
	case reflect.Array:
		return pointerIn(typ.Elem())
	case reflect.Struct:
		for i := range typ.NumField() {
			if p := pointerIn(typ.Field(i).Type); p != "" {
				return typ.Field(i).Name + " " + p
			}
		}
	}
	return ""
}

// BenchmarkBearerCached is BenchmarkBearer's known token through the
// token cache, from parallel callers spread over many machines' tokens.
func BenchmarkBearerCached(b *testing.B) {
	ctx := context.Background()
	changes := &store.Changes{}
	s, err := sqlstore.OpenSQLite(ctx, filepath.Join(b.TempDir(), "meta.db"), sqlstore.Options{Changes: changes})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var secrets []string
	for i := range 1000 {
		secret, tok, err := NewToken(catalog.TokenSync)
		if err != nil {
			b.Fatal(err)
		}
		tok.Tier, tok.Name, tok.Created = "edge", fmt.Sprint("bench-", i), time.Now()
		if err := s.AddToken(ctx, tok); err != nil {
			b.Fatal(err)
		}
		secrets = append(secrets, "Bearer "+secret)
	}
	for _, c := range []struct {
		name    string
		changes *store.Changes
	}{{"uncached", nil}, {"cached", changes}} {
		a := New(s, Config{Changes: c.changes}, nil)
		b.Run(c.name, func(b *testing.B) {
			var next atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					h := secrets[int(next.Add(1))%len(secrets)]
					if _, err := a.Bearer(ctx, h, catalog.TokenSync); err != nil {
						b.Fatalf("want accepted, got %v", err)
					}
				}
			})
		})
	}
}

func TestSamplerCapsLinesPerSecond(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &Sampler{PerSecond: 2, Now: func() time.Time { return now }}
	var got []bool
	for range 4 {
		got = append(got, s.Allow())
	}
	now = now.Add(time.Second)
	got = append(got, s.Allow())
	want := []bool{true, true, false, false, true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Allow over two seconds: want %v, got %v", want, got)
	}
	var off *Sampler
	if !off.Allow() || !(&Sampler{}).Allow() {
		t.Error("a nil or zero Sampler must let everything through")
	}
}

// Accepted tokens are logged as a sample; every refusal is logged.
func TestBearerSamplesSuccessesNotFailures(t *testing.T) {
	f := newFixture(t, Config{SuccessLogPerSecond: 1})
	// The fixture's clock stands still: all within one second.
	secret, _ := f.addToken(t, catalog.TokenSync, time.Time{})
	ctx := context.Background()
	for range 10 {
		if _, err := f.a.Bearer(ctx, "Bearer "+secret, catalog.TokenSync); err != nil {
			t.Fatal(err)
		}
		if _, err := f.a.Bearer(ctx, "Bearer "+secret, catalog.TokenMachine); !errors.Is(err, ErrForbidden) {
			t.Fatalf("wrong kind: want ErrForbidden, got %v", err)
		}
		if _, err := f.a.Bearer(ctx, "Bearer pm-garbage", catalog.TokenSync); err == nil {
			t.Fatal("garbage token accepted")
		}
	}
	count := map[any]int{}
	for _, ev := range f.logs.events(t) {
		count[ev["event"]]++
	}
	if n := count[EventTokenSuccess]; n != 1 {
		t.Errorf("authn_token_success events for 10 successes in one second at 1/s: want 1, got %d", n)
	}
	if n := count[EventAuthzFail]; n != 10 {
		t.Errorf("authz_fail events: want all 10, got %d", n)
	}
	if n := count[EventTokenFail]; n != 10 {
		t.Errorf("authn_token_fail events: want all 10, got %d", n)
	}
}
