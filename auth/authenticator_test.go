package auth

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
	"github.com/patchmesh/patchmesh/store/sqlstore"
)

// clock is a pinned, settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fixture is an Authenticator over a fresh SQLite store, with a pinned
// clock and a captured log.
type fixture struct {
	a     *Authenticator
	store *sqlstore.Store
	clock *clock
	logs  *logCapture
	cfg   Config
}

const (
	alicePassword = "alice's long passphrase"
	bobPassword   = "bob's even longer passphrase"
)

var (
	hashOnce   sync.Once
	aliceHash  string
	bobHash    string
	hashOnceEr error
)

// testHashes are made once at the lowest cost, to keep the tests quick.
func testHashes(t *testing.T) (alice, bob string) {
	t.Helper()
	hashOnce.Do(func() {
		if aliceHash, hashOnceEr = HashPassword(alicePassword, bcrypt.MinCost); hashOnceEr != nil {
			return
		}
		bobHash, hashOnceEr = HashPassword(bobPassword, bcrypt.MinCost)
	})
	if hashOnceEr != nil {
		t.Fatal(hashOnceEr)
	}
	return aliceHash, bobHash
}

// newFixture opens a store; cfg's Now and BcryptCost are filled in.
func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	ctx := context.Background()
	clk := &clock{t: t0}
	s, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "meta.db"), sqlstore.Options{Now: clk.Now})
	if err != nil {
		t.Fatalf("open sqlite store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	cfg.Now = clk.Now
	if cfg.BcryptCost == 0 {
		cfg.BcryptCost = bcrypt.MinCost
	}
	logs, log := newCapture()
	return &fixture{a: New(s, cfg, log), store: s, clock: clk, logs: logs, cfg: cfg}
}

// withConfig returns another Authenticator over the same store and clock
// with a different config: a node restarted with an edited config file.
func (f *fixture) withConfig(cfg Config) (*Authenticator, *logCapture) {
	cfg.Now = f.clock.Now
	cfg.BcryptCost = bcrypt.MinCost
	logs, log := newCapture()
	return New(f.store, cfg, log), logs
}

// addToken stores a fresh token of kind on tier edge.
func (f *fixture) addToken(t *testing.T, kind catalog.TokenKind, expires time.Time) (string, catalog.Token) {
	t.Helper()
	secret, tok, err := NewToken(kind)
	if err != nil {
		t.Fatal(err)
	}
	tok.Tier, tok.Name, tok.Expires, tok.Created = "edge", "test-"+string(kind), expires, f.clock.Now()
	if kind == catalog.TokenMachine {
		tok.MachineID = MachineID([]byte("k"), "machine-0000000001")
		if err := f.store.RegisterMachine(context.Background(), catalog.Machine{
			ID: tok.MachineID, Tier: "edge", Kernel: "5.15.0-107.117-generic", Arch: "x86_64",
			State: catalog.StateUnknown, ClientVersion: "1.0", Registered: f.clock.Now(), LastSeen: f.clock.Now(),
		}, tok); err != nil {
			t.Fatalf("register machine: %v", err)
		}
		return secret, tok
	}
	if err := f.store.AddToken(context.Background(), tok); err != nil {
		t.Fatalf("add token: %v", err)
	}
	return secret, tok
}

// lastEvent returns the last security event logged.
func (f *fixture) lastEvent(t *testing.T) map[string]any {
	t.Helper()
	ev := f.logs.events(t)
	if len(ev) == 0 {
		t.Fatalf("want a security event, got none")
	}
	return ev[len(ev)-1]
}

func (f *fixture) wantEvent(t *testing.T, code, reason string) {
	t.Helper()
	ev := f.lastEvent(t)
	if ev["event"] != code {
		t.Errorf("event: want %s, got %v (%v)", code, ev["event"], ev)
	}
	if reason != "" && ev["reason"] != reason {
		t.Errorf("event %s reason: want %s, got %v", code, reason, ev["reason"])
	}
	wantLevel := "INFO"
	if isFailure(code) {
		wantLevel = "WARN"
	}
	if ev["level"] != wantLevel {
		t.Errorf("event %s level: want %s, got %v", code, wantLevel, ev["level"])
	}
}

func TestBearer(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	authSecret, authTok := f.addToken(t, catalog.TokenAuth, time.Time{})
	machineSecret, _ := f.addToken(t, catalog.TokenMachine, time.Time{})
	syncSecret, syncTok := f.addToken(t, catalog.TokenSync, t0.Add(time.Hour))
	expiredSecret, _ := f.addToken(t, catalog.TokenSync, t0.Add(-time.Second))
	revokedSecret, revokedTok := f.addToken(t, catalog.TokenAuth, time.Time{})
	if err := f.store.RevokeToken(ctx, catalog.TokenAuth, revokedTok.ID, t0); err != nil {
		t.Fatal(err)
	}
	unstoredSecret, _, err := NewToken(catalog.TokenAuth)
	if err != nil {
		t.Fatal(err)
	}
	otherSecret, _, err := NewToken(catalog.TokenAuth)
	if err != nil {
		t.Fatal(err)
	}
	// The real ID of authTok with another token's secret.
	badSecret := authSecret[:21] + otherSecret[21:]
	// The real ID and secret of authTok under the sync prefix.
	wrongPrefix := "pms" + authSecret[3:]

	cases := []struct {
		name    string
		header  string
		kinds   []catalog.TokenKind
		wantErr error
		wantID  string
		event   string
		reason  string
	}{
		{"auth token for auth", "Bearer " + authSecret, []catalog.TokenKind{catalog.TokenAuth}, nil, authTok.ID, EventTokenSuccess, ""},
		{"scheme in lower case", "bearer " + authSecret, []catalog.TokenKind{catalog.TokenAuth}, nil, authTok.ID, EventTokenSuccess, ""},
		{"sync token among kinds", "Bearer " + syncSecret, []catalog.TokenKind{catalog.TokenMachine, catalog.TokenSync}, nil, syncTok.ID, EventTokenSuccess, ""},
		{"machine token where sync is required", "Bearer " + machineSecret, []catalog.TokenKind{catalog.TokenSync}, ErrForbidden, "", EventAuthzFail, reasonWrongKind},
		{"auth token where machine is required", "Bearer " + authSecret, []catalog.TokenKind{catalog.TokenMachine}, ErrForbidden, "", EventAuthzFail, reasonWrongKind},
		{"no header", "", []catalog.TokenKind{catalog.TokenAuth}, ErrUnauthenticated, "", EventTokenFail, reasonMalformed},
		{"other scheme", "Basic " + authSecret, []catalog.TokenKind{catalog.TokenAuth}, ErrUnauthenticated, "", EventTokenFail, reasonMalformed},
		{"macaroon scheme", "Macaroon " + authSecret, []catalog.TokenKind{catalog.TokenAuth}, ErrUnauthenticated, "", EventTokenFail, reasonMalformed},
		{"garbage", "Bearer pma_nothing", []catalog.TokenKind{catalog.TokenAuth}, ErrUnauthenticated, "", EventTokenFail, reasonMalformed},
		{"truncated", "Bearer " + authSecret[:len(authSecret)-1], []catalog.TokenKind{catalog.TokenAuth}, ErrUnauthenticated, "", EventTokenFail, reasonMalformed},
		{"unknown id", "Bearer " + unstoredSecret, []catalog.TokenKind{catalog.TokenAuth}, ErrUnauthenticated, "", EventTokenFail, reasonUnknown},
		{"bad secret", "Bearer " + badSecret, []catalog.TokenKind{catalog.TokenAuth}, ErrUnauthenticated, "", EventTokenFail, reasonBadSecret},
		{"kind prefix changed", "Bearer " + wrongPrefix, []catalog.TokenKind{catalog.TokenSync, catalog.TokenAuth}, ErrUnauthenticated, "", EventTokenFail, reasonUnknown},
		{"expired", "Bearer " + expiredSecret, []catalog.TokenKind{catalog.TokenSync}, ErrUnauthenticated, "", EventTokenFail, reasonExpired},
		{"revoked", "Bearer " + revokedSecret, []catalog.TokenKind{catalog.TokenAuth}, ErrUnauthenticated, "", EventTokenFail, reasonRevoked},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, err := f.a.Bearer(ctx, c.header, c.kinds...)
			if !errors.Is(err, c.wantErr) || (c.wantErr == nil) != (err == nil) {
				t.Fatalf("Bearer: want error %v, got %v", c.wantErr, err)
			}
			if tok.ID != c.wantID {
				t.Errorf("token ID: want %q, got %q", c.wantID, tok.ID)
			}
			f.wantEvent(t, c.event, c.reason)
		})
	}
	f.logs.assertNoSecret(t, authSecret, authSecret[21:], machineSecret[21:], syncSecret[21:],
		expiredSecret[21:], revokedSecret[21:], unstoredSecret[21:], otherSecret[21:])
}

func TestBearerExpiresWithClock(t *testing.T) {
	f := newFixture(t, Config{})
	secret, _ := f.addToken(t, catalog.TokenSync, t0.Add(time.Hour))
	ctx := context.Background()
	if _, err := f.a.Bearer(ctx, "Bearer "+secret, catalog.TokenSync); err != nil {
		t.Fatalf("before expiry: want nil, got %v", err)
	}
	f.clock.Advance(time.Hour)
	if _, err := f.a.Bearer(ctx, "Bearer "+secret, catalog.TokenSync); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("at expiry: want ErrUnauthenticated, got %v", err)
	}
	f.wantEvent(t, EventTokenFail, reasonExpired)
}

func TestBearerWithoutKindsIsAnError(t *testing.T) {
	f := newFixture(t, Config{})
	secret, _ := f.addToken(t, catalog.TokenAuth, time.Time{})
	_, err := f.a.Bearer(context.Background(), "Bearer "+secret)
	if err == nil || errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrForbidden) {
		t.Fatalf("Bearer with no kinds: want a programming error, got %v", err)
	}
}

func TestLogin(t *testing.T) {
	aHash, bHash := testHashes(t)
	f := newFixture(t, Config{Admins: []Admin{{Name: "alice", PasswordHash: aHash}}})
	ctx := context.Background()
	if err := f.store.AddAdminUser(ctx, store.AdminUser{Name: "bob", Hash: []byte(bHash), Created: t0}); err != nil {
		t.Fatal(err)
	}
	// A stored admin with a config admin's name: the config one wins.
	if err := f.store.AddAdminUser(ctx, store.AdminUser{Name: "alice", Hash: []byte(bHash), Created: t0}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, user, password string
		ok                   bool
		reason               string
	}{
		{"config admin", "alice", alicePassword, true, ""},
		{"stored admin", "bob", bobPassword, true, ""},
		{"config admin wins over a stored one", "alice", bobPassword, false, reasonBadPassword},
		{"wrong password", "bob", alicePassword, false, reasonBadPassword},
		{"unknown user", "carol", alicePassword, false, reasonUnknownUser},
		{"empty password", "alice", "", false, reasonMalformed},
		{"empty user", "", alicePassword, false, reasonMalformed},
		{"password over 72 bytes", "alice", alicePassword + string(make([]byte, 73)), false, reasonMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, exp, err := f.a.Login(ctx, c.user, c.password)
			if !c.ok {
				if !errors.Is(err, ErrUnauthenticated) || m != "" {
					t.Fatalf("Login: want ErrUnauthenticated and no macaroon, got %q, %v", m, err)
				}
				f.wantEvent(t, EventLoginFail, c.reason)
				return
			}
			if err != nil {
				t.Fatalf("Login: %v", err)
			}
			f.wantEvent(t, EventLoginSuccess, "")
			if want := t0.Add(DefaultMacaroonTTL); !exp.Equal(want) {
				t.Errorf("expires: want %v, got %v", want, exp)
			}
			user, err := f.a.Admin(ctx, "Macaroon "+m)
			if err != nil || user != c.user {
				t.Fatalf("Admin(login's macaroon): want %q, nil; got %q, %v", c.user, user, err)
			}
			f.wantEvent(t, EventAdminAuthorized, "")
			f.logs.assertNoSecret(t, m)
		})
	}
	f.logs.assertNoSecret(t, alicePassword, bobPassword)
}

// login logs alice in and returns her macaroon.
func (f *fixture) login(t *testing.T) string {
	t.Helper()
	m, _, err := f.a.Login(context.Background(), "alice", alicePassword)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	return m
}

func keyIDOf(t *testing.T, enc string) string {
	t.Helper()
	_, id, err := decodeMacaroon(enc)
	if err != nil {
		t.Fatalf("decode macaroon: %v", err)
	}
	return id
}

func TestAdminRefusesMacaroon(t *testing.T) {
	aHash, _ := testHashes(t)
	cfg := Config{Admins: []Admin{{Name: "alice", PasswordHash: aHash}}}
	ctx := context.Background()

	t.Run("expired after 241h", func(t *testing.T) {
		f := newFixture(t, cfg)
		m := f.login(t)
		f.clock.Advance(241 * time.Hour)
		if _, err := f.a.Admin(ctx, "Macaroon "+m); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("want ErrUnauthenticated, got %v", err)
		}
		f.wantEvent(t, EventMacaroonFail, reasonExpired)
	})
	t.Run("tampered", func(t *testing.T) {
		f := newFixture(t, cfg)
		m := f.login(t)
		b := []byte(m)
		b[len(b)/2] ^= 1 // flips a base64 letter's case or digit
		if _, err := f.a.Admin(ctx, "Macaroon "+string(b)); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("want ErrUnauthenticated, got %v", err)
		}
		f.wantEvent(t, EventMacaroonFail, "")
	})
	t.Run("extra caveat", func(t *testing.T) {
		f := newFixture(t, cfg)
		m := reencode(t, f.login(t), func(mc *macaroonT) {
			if err := mc.AddFirstPartyCaveat([]byte("role superuser")); err != nil {
				t.Fatal(err)
			}
		})
		if _, err := f.a.Admin(ctx, "Macaroon "+m); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("want ErrUnauthenticated, got %v", err)
		}
		f.wantEvent(t, EventMacaroonFail, reasonBadCaveat)
	})
	t.Run("root key purged", func(t *testing.T) {
		f := newFixture(t, cfg)
		id := keyIDOf(t, f.login(t))
		k, err := f.store.RootKey(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		// A macaroon signed with the key that outlives it, so that only
		// the purge can refuse it.
		long, err := mintMacaroon(k.Key, k.ID, "alice", k.Expires.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		f.clock.Set(k.Expires.Add(-time.Second))
		if _, err := f.a.Admin(ctx, "Macaroon "+long); err != nil {
			t.Fatalf("before the key expires: want nil, got %v", err)
		}
		f.clock.Set(k.Expires)
		if _, err := f.a.Admin(ctx, "Macaroon "+long); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("key expired, not yet purged: want ErrUnauthenticated, got %v", err)
		}
		f.wantEvent(t, EventMacaroonFail, reasonExpired)
		if err := f.a.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := f.a.Admin(ctx, "Macaroon "+long); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("key purged: want ErrUnauthenticated, got %v", err)
		}
		f.wantEvent(t, EventMacaroonFail, reasonUnknownKey)
	})
	t.Run("admin removed from config", func(t *testing.T) {
		f := newFixture(t, cfg)
		m := f.login(t)
		a2, logs2 := f.withConfig(Config{})
		if _, err := a2.Admin(ctx, "Macaroon "+m); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("want ErrUnauthenticated, got %v", err)
		}
		if ev := logs2.events(t); len(ev) != 1 || ev[0]["event"] != EventMacaroonFail || ev[0]["reason"] != reasonUnknownUser {
			t.Errorf("events: want one %s with reason %s, got %v", EventMacaroonFail, reasonUnknownUser, ev)
		}
		// The same macaroon still works where alice is configured: only
		// her removal refused it.
		if user, err := f.a.Admin(ctx, "Macaroon "+m); err != nil || user != "alice" {
			t.Fatalf("with alice configured: want alice, nil; got %q, %v", user, err)
		}
	})
	t.Run("malformed header", func(t *testing.T) {
		f := newFixture(t, cfg)
		m := f.login(t)
		for _, h := range []string{"", "Macaroon", "Bearer " + m, "Macaroon !!!", "Macaroon " + m + "A"} {
			if _, err := f.a.Admin(ctx, h); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("Admin(%q): want ErrUnauthenticated, got %v", h, err)
			}
			f.wantEvent(t, EventMacaroonFail, reasonMalformed)
		}
		f.logs.assertNoSecret(t, m)
	})
}

func TestAdminStoredUserRemovedIsRefused(t *testing.T) {
	// Stored admins cannot be deleted through the store yet; a second
	// database without bob plays the node that no longer has him.
	_, bHash := testHashes(t)
	f := newFixture(t, Config{})
	ctx := context.Background()
	if err := f.store.AddAdminUser(ctx, store.AdminUser{Name: "bob", Hash: []byte(bHash), Created: t0}); err != nil {
		t.Fatal(err)
	}
	m, _, err := f.a.Login(ctx, "bob", bobPassword)
	if err != nil {
		t.Fatal(err)
	}
	k, err := f.store.RootKey(ctx, keyIDOf(t, m))
	if err != nil {
		t.Fatal(err)
	}
	g := newFixture(t, Config{})
	if err := g.store.AddRootKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, err := g.a.Admin(ctx, "Macaroon "+m); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("admin not stored: want ErrUnauthenticated, got %v", err)
	}
	g.wantEvent(t, EventMacaroonFail, reasonUnknownUser)
}

func TestRootKeyRotation(t *testing.T) {
	aHash, _ := testHashes(t)
	f := newFixture(t, Config{Admins: []Admin{{Name: "alice", PasswordHash: aHash}}})
	ctx := context.Background()

	first := f.login(t)
	k1 := keyIDOf(t, first)
	f.clock.Advance(23 * time.Hour)
	if got := keyIDOf(t, f.login(t)); got != k1 {
		t.Fatalf("login after 23h: want the first key %s, got %s", k1, got)
	}
	f.clock.Advance(2 * time.Hour) // 25h: the first key no longer mints
	second := f.login(t)
	k2 := keyIDOf(t, second)
	if k2 == k1 {
		t.Fatalf("login after 25h: want a new key, got the first one %s", k1)
	}
	for name, m := range map[string]string{"first": first, "second": second} {
		if _, err := f.a.Admin(ctx, "Macaroon "+m); err != nil {
			t.Errorf("%s macaroon after rotation: want nil, got %v", name, err)
		}
	}

	// The first key is kept until its last macaroon has expired.
	key1, err := f.store.RootKey(ctx, k1)
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(DefaultKeyMint + DefaultMacaroonTTL); !key1.Expires.Equal(want) {
		t.Errorf("first key Expires: want %v, got %v", want, key1.Expires)
	}
	if want := t0.Add(DefaultKeyMint); !key1.MintUntil.Equal(want) {
		t.Errorf("first key MintUntil: want %v, got %v", want, key1.MintUntil)
	}
	f.clock.Set(key1.Expires.Add(-time.Second))
	if err := f.a.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.RootKey(ctx, k1); err != nil {
		t.Fatalf("first key before its Expires: want kept, got %v", err)
	}
	f.clock.Set(key1.Expires)
	if err := f.a.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.RootKey(ctx, k1); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("first key at its Expires: want purged (ErrNotFound), got %v", err)
	}
	if _, err := f.store.RootKey(ctx, k2); err != nil {
		t.Fatalf("second key: want kept, got %v", err)
	}
	if _, err := f.a.Admin(ctx, "Macaroon "+second); err != nil {
		t.Errorf("second macaroon after the purge: want nil, got %v", err)
	}
}

func TestConcurrentFirstLoginsAllVerify(t *testing.T) {
	aHash, _ := testHashes(t)
	// The pool is what this test is not about: a generous wait keeps a
	// loaded machine (-race, other packages' tests) from refusing a turn.
	f := newFixture(t, Config{Admins: []Admin{{Name: "alice", PasswordHash: aHash}},
		Login: LoginLimits{BcryptWait: time.Minute}})
	ctx := context.Background()
	const n = 8
	ms := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { ms[i], _, errs[i] = f.a.Login(ctx, "alice", alicePassword) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("login %d: %v", i, errs[i])
		}
		if _, err := f.a.Admin(ctx, "Macaroon "+ms[i]); err != nil {
			t.Errorf("macaroon %d: want nil, got %v", i, err)
		}
	}
}

func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	t.Run("creates once", func(t *testing.T) {
		f := newFixture(t, Config{})
		user, password, created, err := f.a.Bootstrap(ctx)
		if err != nil || !created || user != BootstrapUser {
			t.Fatalf("first Bootstrap: want %q, created, nil; got %q, %v, %v", BootstrapUser, user, created, err)
		}
		if len(password) < MinPasswordLen || len(password) > MaxPasswordLen {
			t.Errorf("password length: want %d-%d, got %d", MinPasswordLen, MaxPasswordLen, len(password))
		}
		f.wantEvent(t, EventAdminBootstrap, "")
		stored, err := f.store.AdminUser(ctx, BootstrapUser)
		if err != nil {
			t.Fatal(err)
		}
		if string(stored.Hash) == password || bcrypt.CompareHashAndPassword(stored.Hash, []byte(password)) != nil {
			t.Errorf("stored hash: want the bcrypt hash of the password")
		}
		m, _, err := f.a.Login(ctx, user, password)
		if err != nil {
			t.Fatalf("login with the bootstrap password: %v", err)
		}
		user2, password2, created2, err := f.a.Bootstrap(ctx)
		if err != nil || created2 || user2 != "" || password2 != "" {
			t.Fatalf("second Bootstrap: want nothing created, got %q, %q, %v, %v", user2, password2, created2, err)
		}
		f.logs.assertNoSecret(t, password, string(stored.Hash), m)
	})
	t.Run("not with configured admins", func(t *testing.T) {
		aHash, _ := testHashes(t)
		f := newFixture(t, Config{Admins: []Admin{{Name: "alice", PasswordHash: aHash}}})
		_, _, created, err := f.a.Bootstrap(ctx)
		if err != nil || created {
			t.Fatalf("Bootstrap with a configured admin: want created=false, nil; got %v, %v", created, err)
		}
		if us, err := f.store.AdminUsers(ctx); err != nil || len(us) != 0 {
			t.Fatalf("stored admins: want none, got %v, %v", us, err)
		}
	})
}

// TestSecurityEventsCarryNoSecret runs every kind of decision and checks
// the whole log for every secret involved.
func TestSecurityEventsCarryNoSecret(t *testing.T) {
	aHash, _ := testHashes(t)
	f := newFixture(t, Config{Admins: []Admin{{Name: "alice", PasswordHash: aHash}}})
	ctx := context.Background()
	secret, _ := f.addToken(t, catalog.TokenMachine, time.Time{})
	boot, _ := f.withConfig(Config{}) // logs elsewhere
	_, bootPassword, _, err := boot.Bootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.a.Bearer(ctx, "Bearer "+secret, catalog.TokenMachine)
	f.a.Bearer(ctx, "Bearer "+secret, catalog.TokenSync)
	f.a.Bearer(ctx, "Bearer "+secret[:30], catalog.TokenMachine)
	f.a.Login(ctx, "alice", "wrong password for alice")
	f.a.Login(ctx, "nobody", alicePassword)
	m := f.login(t)
	f.a.Admin(ctx, "Macaroon "+m)
	f.a.Admin(ctx, "Macaroon "+m[:len(m)-2])
	f.clock.Advance(241 * time.Hour)
	f.a.Admin(ctx, "Macaroon "+m)

	var codes []string
	for _, ev := range f.logs.events(t) {
		codes = append(codes, ev["event"].(string))
	}
	want := []string{EventTokenSuccess, EventAuthzFail, EventTokenFail, EventLoginFail, EventLoginFail,
		EventLoginSuccess, EventAdminAuthorized, EventMacaroonFail, EventMacaroonFail}
	if len(codes) != len(want) {
		t.Fatalf("events: want %v, got %v", want, codes)
	}
	for i := range want {
		if codes[i] != want[i] {
			t.Errorf("event %d: want %s, got %s (all: %v)", i, want[i], codes[i], codes)
		}
	}
	f.logs.assertNoSecret(t, secret, secret[21:], secret[21:40], alicePassword, "wrong password for alice",
		bootPassword, m, m[:len(m)-2], m[20:60], aHash)
}

func TestEventsCarryTheRequestContext(t *testing.T) {
	// The api package adds request_id through a handler reading ctx; the
	// events must be logged with the caller's ctx for that to work.
	type key struct{}
	var got []any
	h := ctxHandler{Handler: slog.DiscardHandler, seen: func(ctx context.Context) { got = append(got, ctx.Value(key{})) }}
	f := newFixture(t, Config{})
	a := New(f.store, f.cfg, slog.New(h))
	ctx := context.WithValue(context.Background(), key{}, "req-1")
	a.Bearer(ctx, "Bearer nothing", catalog.TokenAuth)
	a.Login(ctx, "nobody", alicePassword)
	a.Admin(ctx, "Macaroon nothing")
	if len(got) != 3 {
		t.Fatalf("want 3 events, got %d", len(got))
	}
	for i, v := range got {
		if v != "req-1" {
			t.Errorf("event %d: want the caller's ctx (req-1), got %v", i, v)
		}
	}
}

type ctxHandler struct {
	slog.Handler
	seen func(context.Context)
}

func (h ctxHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h ctxHandler) Handle(ctx context.Context, r slog.Record) error {
	h.seen(ctx)
	return nil
}

// BenchmarkLogin compares a wrong password for a real admin with any
// password for a name that does not exist: both should cost one bcrypt
// comparison at the same cost, so their times should match.
func BenchmarkLogin(b *testing.B) {
	hash, err := HashPassword(alicePassword, bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	s, err := sqlstore.OpenSQLite(ctx, filepath.Join(b.TempDir(), "meta.db"), sqlstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	// Limits high enough that the benchmark measures bcrypt, not refusals.
	a := New(s, Config{Admins: []Admin{{Name: "alice", PasswordHash: hash}},
		Login: LoginLimits{FreeFailures: 1 << 30, LockoutAfter: 1<<30 + 1}}, nil)
	for _, c := range []struct{ name, user string }{{"known_user_wrong_password", "alice"}, {"unknown_user", "nobody"}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, _, err := a.Login(ctx, c.user, "not the password at all"); !errors.Is(err, ErrUnauthenticated) {
					b.Fatalf("want ErrUnauthenticated, got %v", err)
				}
			}
		})
	}
}

// BenchmarkBearer compares a known token ID with an unknown one.
func BenchmarkBearer(b *testing.B) {
	ctx := context.Background()
	s, err := sqlstore.OpenSQLite(ctx, filepath.Join(b.TempDir(), "meta.db"), sqlstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	secret, tok, err := NewToken(catalog.TokenSync)
	if err != nil {
		b.Fatal(err)
	}
	tok.Tier, tok.Name, tok.Created = "edge", "bench", time.Now()
	if err := s.AddToken(ctx, tok); err != nil {
		b.Fatal(err)
	}
	unknown, _, err := NewToken(catalog.TokenSync)
	if err != nil {
		b.Fatal(err)
	}
	a := New(s, Config{}, nil)
	for _, c := range []struct {
		name, token string
		want        error
	}{{"known", secret, nil}, {"unknown_id", unknown, ErrUnauthenticated}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := a.Bearer(ctx, "Bearer "+c.token, catalog.TokenSync); !errors.Is(err, c.want) {
					b.Fatalf("want %v, got %v", c.want, err)
				}
			}
		})
	}
}
