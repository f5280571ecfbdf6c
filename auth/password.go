package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Password length bounds, in bytes. bcrypt reads only the first 72 bytes,
// so a longer password would silently be checked by its prefix.
const (
	MinPasswordLen = 12
	MaxPasswordLen = 72
)

// ErrPasswordLength means a new password is shorter than MinPasswordLen or
// longer than MaxPasswordLen bytes.
var ErrPasswordLength = fmt.Errorf("password must be %d to %d bytes", MinPasswordLen, MaxPasswordLen)

// HashPassword returns the bcrypt hash of password at cost (0 means
// bcrypt.DefaultCost). It refuses passwords outside the length bounds with
// ErrPasswordLength.
func HashPassword(password string, cost int) (string, error) {
	if len(password) < MinPasswordLen || len(password) > MaxPasswordLen {
		return "", ErrPasswordLength
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if err := checkBcryptCost(cost); err != nil {
		return "", err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return "", fmt.Errorf("auth: hash password: %w", err)
	}
	return string(h), nil
}

func checkBcryptCost(cost int) error {
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return fmt.Errorf("bcrypt cost %d is outside %d-%d", cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	return nil
}

func bcryptCost(hash string) (int, error) { return bcrypt.Cost([]byte(hash)) }

// dummyHash is the hash an unknown user's password is checked against, so
// that a login for a name that does not exist costs what a real one does.
// It is made on first use at the configured cost.
func (a *Authenticator) dummyHash() []byte {
	a.dummyOnce.Do(func() {
		cost := a.cfg.BcryptCost
		if cost == 0 {
			cost = bcrypt.DefaultCost
		}
		h, err := bcrypt.GenerateFromPassword([]byte("patchmesh-no-such-admin"), cost)
		if err != nil {
			// Only an invalid cost gets here; fall back to the default.
			h, _ = bcrypt.GenerateFromPassword([]byte("patchmesh-no-such-admin"), bcrypt.DefaultCost)
		}
		a.dummy = h
	})
	return a.dummy
}

// adminHash returns the bcrypt hash of the named admin: config admins
// first, then stored ones. ok is false when there is no such admin.
func (a *Authenticator) adminHash(ctx context.Context, name string) (hash []byte, ok bool, err error) {
	if h, found := a.admins[name]; found {
		return []byte(h), true, nil
	}
	u, err := a.store.AdminUser(ctx, name)
	if errors.Is(err, catalog.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("auth: look up admin: %w", err)
	}
	return u.Hash, true, nil
}

// Login checks an admin's user name and password and mints a macaroon for
// "Authorization: Macaroon <m>". A wrong or unknown user or password is
// ErrUnauthenticated; an unknown user still costs one bcrypt comparison,
// so the answer's timing does not tell which names exist.
//
// Failures count against the name and the client address (WithClient);
// while either must wait, Login refuses unchecked with a *ThrottledError
// (ErrThrottled), and when no bcrypt slot frees in time with ErrBusy (see
// LoginLimits). A name that matches no admin is logged only as its hash:
// it may be a password typed into the wrong field.
func (a *Authenticator) Login(ctx context.Context, user, password string) (macaroon string, expires time.Time, err error) {
	client := Client(ctx)
	keys := []string{"user:" + UserHash(user)}
	if client != "" {
		keys = append(keys, "addr:"+client)
	}
	logUser := logUnknownUser(user)
	refuse := func(reason string, err error, attrs ...slog.Attr) (string, time.Time, error) {
		a.event(ctx, EventLoginFail, append([]slog.Attr{logUser, slog.String("reason", reason)}, attrs...)...)
		return "", time.Time{}, err
	}
	fail := func(reason string) (string, time.Time, error) {
		for _, k := range a.throttle.fail(a.now(), keys...) {
			a.event(ctx, EventLoginLockout, logUser, slog.String("key", lockKind(k)),
				retryAttr(a.throttle.lim.LockoutWindow))
		}
		return refuse(reason, ErrUnauthenticated)
	}
	if user == "" || len(user) > catalog.MaxNameLen || password == "" || len(password) > MaxPasswordLen {
		return fail(reasonMalformed)
	}
	if err := a.throttle.check(a.now(), keys...); err != nil {
		var te *ThrottledError
		errors.As(err, &te)
		reason := reasonDelayed
		if te.Locked {
			reason = reasonLockedOut
		}
		return refuse(reason, err, retryAttr(te.RetryAfter))
	}
	if err := a.bcrypt.acquire(ctx); err != nil {
		if errors.Is(err, ErrBusy) {
			return refuse(reasonBusy, err)
		}
		return "", time.Time{}, err
	}
	hash, ok, err := a.adminHash(ctx, user)
	if err != nil {
		a.bcrypt.release()
		return "", time.Time{}, err
	}
	if !ok {
		_ = bcrypt.CompareHashAndPassword(a.dummyHash(), []byte(password))
		a.bcrypt.release()
		return fail(reasonUnknownUser)
	}
	logUser = slog.String("user", user) // a real admin's name is no secret
	bad := bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil
	a.bcrypt.release()
	if bad {
		return fail(reasonBadPassword)
	}
	a.throttle.succeed(keys[0])
	m, exp, keyID, err := a.mintFor(ctx, user)
	if err != nil {
		return "", time.Time{}, err
	}
	a.event(ctx, EventLoginSuccess, logUser, slog.String("root_key_id", keyID), slog.Time("expires", exp))
	return m, exp, nil
}

// lockKind says what a throttle key counts without repeating it.
func lockKind(key string) string {
	if strings.HasPrefix(key, "addr:") {
		return "client"
	}
	return "user"
}

// truncate bounds what an untrusted string can put into a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// BootstrapUser is the name of the admin Bootstrap creates.
const BootstrapUser = "admin"

// Bootstrap makes sure a fresh node can be administered: when no admin is
// configured and none is stored, it creates BootstrapUser with a random
// password, stores only its bcrypt hash and returns the password, to be
// shown once (created=true). Otherwise it changes nothing (created=false).
// Two nodes bootstrapping one database at once create one admin: the loser's
// AddAdminUser conflicts and it reports created=false.
func (a *Authenticator) Bootstrap(ctx context.Context) (user, password string, created bool, err error) {
	if len(a.admins) > 0 {
		return "", "", false, nil
	}
	users, err := a.store.AdminUsers(ctx)
	if err != nil {
		return "", "", false, fmt.Errorf("auth: bootstrap: list admins: %w", err)
	}
	if len(users) > 0 {
		return "", "", false, nil
	}
	var b [24]byte // 192 bits, 32 characters: well inside bcrypt's 72 bytes
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", false, fmt.Errorf("auth: bootstrap: %w", err)
	}
	password = base64.RawURLEncoding.EncodeToString(b[:])
	hash, err := HashPassword(password, a.cfg.BcryptCost)
	if err != nil {
		return "", "", false, fmt.Errorf("auth: bootstrap: %w", err)
	}
	err = a.store.AddAdminUser(ctx, store.AdminUser{Name: BootstrapUser, Hash: []byte(hash), Created: a.now()})
	if errors.Is(err, catalog.ErrConflict) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("auth: bootstrap: store admin: %w", err)
	}
	a.event(ctx, EventAdminBootstrap, slog.String("user", BootstrapUser))
	return BootstrapUser, password, true, nil
}
