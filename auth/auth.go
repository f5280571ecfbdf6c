// Package auth owns who may call a patchmesh node: bearer tokens (auth,
// machine and sync), admin passwords and the admin macaroons a login mints,
// the macaroon root keys' rotation, the machine-ID hash, and the security
// events every authentication and authorization decision logs.
//
// It does not own HTTP (the api package turns ErrUnauthenticated and
// ErrForbidden into 401 and 403), tier checks (the api package compares a
// token's tier with the resource's), or persistence (tokens, root keys and
// stored admins live in the store; auth reads and writes them through the
// small Store interface below).
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Sentinel errors callers branch on.
var (
	// ErrUnauthenticated means the credential is missing, malformed, unknown,
	// wrong, expired or revoked (401).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden means the credential is valid but does not grant the
	// request, e.g. a machine token where a sync token is required (403).
	ErrForbidden = errors.New("forbidden")
)

// Defaults for the zero Config fields.
const (
	DefaultMacaroonTTL = 240 * time.Hour
	DefaultKeyMint     = 24 * time.Hour
)

// Admin is an administrator named in the node's config file.
type Admin struct {
	Name string `yaml:"name"`
	// PasswordHash is the bcrypt hash of the admin's password.
	PasswordHash string `yaml:"password_hash"`
}

// Config tunes an Authenticator. The zero value is usable: no config
// admins, default lifetimes, default bcrypt cost, the wall clock.
type Config struct {
	// Admins are the configured administrators; they are checked before
	// the stored ones.
	Admins []Admin
	// MacaroonTTL is how long a login's macaroon is valid. Default 240h.
	MacaroonTTL time.Duration
	// KeyMint is how long one root key mints new macaroons. A key is kept
	// KeyMint+MacaroonTTL so that the last macaroon it minted can still be
	// verified, then purged by Maintain. Default 24h.
	KeyMint time.Duration
	// BcryptCost is the cost of the password Bootstrap generates, and of
	// the dummy hash an unknown user's login is checked against. 0 means
	// bcrypt.DefaultCost.
	BcryptCost int
	// Login bounds failed logins and concurrent password checks.
	Login LoginLimits
	// Now is the clock; nil means time.Now. Tests pin it.
	Now func() time.Time
	// Changes is the store's change notifier. When set, bearer tokens'
	// records are cached by ID (see tokenCache) and dropped at every
	// store write; nil reads the store on every check.
	Changes *store.Changes
	// TokenCacheSize caps the cached token records; 0 means
	// DefaultTokenCacheSize, negative turns the cache off.
	TokenCacheSize int
	// TokenCacheMaxAge bounds an entry's life even without a store write
	// on this node (another node sharing the database may revoke); 0
	// means DefaultTokenCacheMaxAge, negative turns the cache off.
	TokenCacheMaxAge time.Duration
	// SuccessLogPerSecond caps the authn_token_success events logged per
	// second (a sample; the api's metrics count every check). 0 logs each
	// one. Failures are always logged.
	SuccessLogPerSecond int
}

// Validate checks the config an operator wrote: admin names are valid and
// unique, hashes are bcrypt hashes, lifetimes are not negative.
func (c Config) Validate() error {
	seen := make(map[string]bool, len(c.Admins))
	for i, a := range c.Admins {
		if err := catalog.ValidName(fmt.Sprintf("admins[%d].name", i), a.Name); err != nil {
			return err
		}
		if seen[a.Name] {
			return fmt.Errorf("admins[%d].name: %q is listed twice", i, a.Name)
		}
		seen[a.Name] = true
		if _, err := bcryptCost(a.PasswordHash); err != nil {
			return fmt.Errorf("admins[%d].password_hash: not a bcrypt hash: %w", i, err)
		}
	}
	if c.MacaroonTTL < 0 {
		return errors.New("macaroon_ttl: must not be negative")
	}
	if c.SuccessLogPerSecond < 0 {
		return errors.New("success_log_per_second: must not be negative")
	}
	if c.KeyMint < 0 {
		return errors.New("key_mint: must not be negative")
	}
	if err := c.Login.Validate(); err != nil {
		return err
	}
	if c.BcryptCost != 0 {
		if err := checkBcryptCost(c.BcryptCost); err != nil {
			return fmt.Errorf("bcrypt_cost: %w", err)
		}
	}
	return nil
}

// Store is the part of store.Store that auth needs.
type Store interface {
	Token(ctx context.Context, id string) (catalog.Token, error)
	AddRootKey(ctx context.Context, k store.RootKey) error
	RootKey(ctx context.Context, id string) (store.RootKey, error)
	MintingRootKey(ctx context.Context, now time.Time) (store.RootKey, error)
	PurgeRootKeys(ctx context.Context, now time.Time) (int, error)
	AdminUser(ctx context.Context, name string) (store.AdminUser, error)
	AdminUsers(ctx context.Context) ([]store.AdminUser, error)
	AddAdminUser(ctx context.Context, u store.AdminUser) error
	// AdminSessionsNotBefore is the time at or before which every
	// macaroon of user is refused (RevokeAdminSessions), zero if none.
	AdminSessionsNotBefore(ctx context.Context, user string) (time.Time, error)
}

// Authenticator checks bearer tokens, admin logins and admin macaroons
// against a store. It is safe for concurrent use.
type Authenticator struct {
	store  Store
	cfg    Config
	log    *slog.Logger
	admins map[string]string // config admin name → bcrypt hash

	throttle *throttle
	bcrypt   *bcryptPool
	tokens   *tokenCache
	// successes samples authn_token_success events.
	successes *Sampler

	dummyOnce sync.Once
	dummy     []byte // bcrypt hash an unknown user's password is checked against
}

// New returns an Authenticator over s. A nil log discards events.
func New(s Store, cfg Config, log *slog.Logger) *Authenticator {
	if cfg.MacaroonTTL <= 0 {
		cfg.MacaroonTTL = DefaultMacaroonTTL
	}
	if cfg.KeyMint <= 0 {
		cfg.KeyMint = DefaultKeyMint
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	admins := make(map[string]string, len(cfg.Admins))
	for _, a := range cfg.Admins {
		if _, dup := admins[a.Name]; !dup { // the first entry wins, as Validate would insist
			admins[a.Name] = a.PasswordHash
		}
	}
	lim := cfg.Login.withDefaults()
	return &Authenticator{store: s, cfg: cfg, log: log, admins: admins,
		throttle:  newThrottle(lim),
		bcrypt:    &bcryptPool{slots: make(chan struct{}, lim.BcryptConcurrency), wait: lim.BcryptWait},
		successes: &Sampler{PerSecond: cfg.SuccessLogPerSecond, Now: cfg.Now},
		tokens:    newTokenCache(cfg.Changes, cfg.TokenCacheSize, cfg.TokenCacheMaxAge, time.Now),
	}
}

func (a *Authenticator) now() time.Time { return a.cfg.Now() }
