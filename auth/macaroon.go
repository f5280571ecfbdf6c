package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"gopkg.in/macaroon.v2"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// An admin macaroon is a V2 macaroon whose id is macaroonIDPrefix followed
// by the ID of the root key that signed it, with exactly these first-party
// caveats: first "issued <RFC 3339 with fraction>", the time it was
// minted, which a server-side revocation of the user's sessions compares
// against (one without it, minted before the caveat existed, counts as
// minted at the beginning of time; anywhere but first it is refused, as a
// holder could have appended it); then one "user <name>", and one or more
// "time-before <RFC 3339>" (a holder may add tighter ones; every one must
// hold). On the wire it is the raw base64url of the binary
// encoding.
const (
	macaroonIDPrefix   = "pm1 "
	macaroonLocation   = "patchmesh"
	caveatUser         = "user "
	caveatTimeBefore   = "time-before "
	caveatIssued       = "issued "
	rootKeyBytes       = 32
	rootKeyIDBytes     = 16
	maxMacaroonEncoded = 4096 // far above a real one (~200 bytes); bounds the decoding work
)

// errMacaroon carries the reason a macaroon was refused, for the log.
type errMacaroon struct{ reason string }

func (e *errMacaroon) Error() string { return "macaroon refused: " + e.reason }

func refuse(reason string) error { return &errMacaroon{reason: reason} }

// mintMacaroon makes the encoded macaroon for user, valid until expires,
// signed with rootKey whose ID is keyID, without an issue time (as
// macaroons were minted before sessions could be revoked).
func mintMacaroon(rootKey []byte, keyID, user string, expires time.Time) (string, error) {
	return mintIssued(rootKey, keyID, user, time.Time{}, expires)
}

// mintIssued makes the encoded macaroon for user, minted at issued (none
// if zero) and valid until expires, signed with rootKey whose ID is keyID.
func mintIssued(rootKey []byte, keyID, user string, issued, expires time.Time) (string, error) {
	m, err := macaroon.New(rootKey, []byte(macaroonIDPrefix+keyID), macaroonLocation, macaroon.V2)
	if err != nil {
		return "", fmt.Errorf("auth: new macaroon: %w", err)
	}
	var caveats []string
	if !issued.IsZero() {
		// First, where no holder can put one: a holder can only append
		// caveats, and one appending a later issue time to an old
		// macaroon would escape a revocation.
		caveats = append(caveats, caveatIssued+issued.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano))
	}
	caveats = append(caveats, caveatTimeBefore+expires.UTC().Format(time.RFC3339), caveatUser+user)
	for _, c := range caveats {
		if err := m.AddFirstPartyCaveat([]byte(c)); err != nil {
			return "", fmt.Errorf("auth: macaroon caveat: %w", err)
		}
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return "", fmt.Errorf("auth: encode macaroon: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// decodeMacaroon parses an encoded macaroon and returns it with the ID of
// its root key. It accepts only the canonical V2 encoding: the bytes must
// re-encode to themselves, so there is no trailing data and no second
// spelling of one macaroon.
func decodeMacaroon(s string) (*macaroon.Macaroon, string, error) {
	if s == "" || len(s) > maxMacaroonEncoded {
		return nil, "", refuse(reasonMalformed)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, "", refuse(reasonMalformed)
	}
	var m macaroon.Macaroon
	if err := m.UnmarshalBinary(b); err != nil || m.Version() != macaroon.V2 {
		return nil, "", refuse(reasonMalformed)
	}
	if again, err := m.MarshalBinary(); err != nil || !bytes.Equal(again, b) {
		return nil, "", refuse(reasonMalformed)
	}
	keyID, ok := strings.CutPrefix(string(m.Id()), macaroonIDPrefix)
	if !ok || !isRootKeyID(keyID) {
		return nil, "", refuse(reasonMalformed)
	}
	return &m, keyID, nil
}

// isRootKeyID reports whether s could be an ID newRootKey made, so that
// nothing else is looked up or logged.
func isRootKeyID(s string) bool {
	if len(s) != 2*rootKeyIDBytes {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// verifyMacaroon checks m's signature under rootKey, then its caveats at
// now, and returns the user it was minted for.
func verifyMacaroon(m *macaroon.Macaroon, rootKey []byte, now time.Time) (string, error) {
	user, _, err := verifyIssued(m, rootKey, now)
	return user, err
}

// verifyIssued checks m's signature under rootKey, then its caveats at
// now, and returns the user it was minted for and when (zero if it does
// not say). Signature first: a caveat is only worth reading once it is
// known to be ours.
func verifyIssued(m *macaroon.Macaroon, rootKey []byte, now time.Time) (user string, issued time.Time, err error) {
	// Third-party caveats need discharges; with none given, a macaroon
	// that has one fails here.
	conds, err := m.VerifySignature(rootKey, nil)
	if err != nil {
		return "", time.Time{}, refuse(reasonBadSignature)
	}
	users, deadlines := 0, 0
	for i, c := range conds {
		switch {
		case strings.HasPrefix(c, caveatIssued):
			if i != 0 { // only the minter's first caveat says when
				return "", time.Time{}, refuse(reasonBadCaveat)
			}
			t, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(c, caveatIssued))
			if err != nil {
				return "", time.Time{}, refuse(reasonBadCaveat)
			}
			issued = t
		case strings.HasPrefix(c, caveatUser):
			users++
			user = strings.TrimPrefix(c, caveatUser)
		case strings.HasPrefix(c, caveatTimeBefore):
			deadlines++
			t, err := time.Parse(time.RFC3339, strings.TrimPrefix(c, caveatTimeBefore))
			if err != nil {
				return "", time.Time{}, refuse(reasonBadCaveat)
			}
			if !now.Before(t) {
				return "", time.Time{}, refuse(reasonExpired)
			}
		default:
			return "", time.Time{}, refuse(reasonBadCaveat)
		}
	}
	// Exactly one user (a second one, even the same, is not something we
	// mint), and at least one deadline: a macaroon never lives forever.
	if users != 1 || user == "" || deadlines == 0 {
		return "", time.Time{}, refuse(reasonBadCaveat)
	}
	return user, issued, nil
}

// newRootKey makes a root key that mints from now for KeyMint and is kept
// long enough to verify the last macaroon it mints.
func (a *Authenticator) newRootKey(now time.Time) (store.RootKey, error) {
	var id [rootKeyIDBytes]byte
	key := make([]byte, rootKeyBytes)
	if _, err := rand.Read(id[:]); err != nil {
		return store.RootKey{}, fmt.Errorf("auth: root key id: %w", err)
	}
	if _, err := rand.Read(key); err != nil {
		return store.RootKey{}, fmt.Errorf("auth: root key: %w", err)
	}
	mintUntil := now.Add(a.cfg.KeyMint)
	return store.RootKey{
		ID:        hex.EncodeToString(id[:]),
		Key:       key,
		Created:   now,
		MintUntil: mintUntil,
		Expires:   mintUntil.Add(a.cfg.MacaroonTTL),
	}, nil
}

// mintingKey returns the root key to mint with now, creating one when none
// mints. Concurrent first logins (or nodes sharing a database) may each
// create a key; that is harmless: every key verifies its own macaroons,
// MintingRootKey picks the newest, and the others expire and are purged.
func (a *Authenticator) mintingKey(ctx context.Context, now time.Time) (store.RootKey, error) {
	k, err := a.store.MintingRootKey(ctx, now)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, catalog.ErrNotFound) {
		return store.RootKey{}, fmt.Errorf("auth: minting root key: %w", err)
	}
	k, err = a.newRootKey(now)
	if err != nil {
		return store.RootKey{}, err
	}
	if err := a.store.AddRootKey(ctx, k); err != nil {
		return store.RootKey{}, fmt.Errorf("auth: add root key: %w", err)
	}
	return k, nil
}

// mintFor mints a macaroon for user and returns it, its expiry and the ID
// of the root key that signed it.
func (a *Authenticator) mintFor(ctx context.Context, user string) (string, time.Time, string, error) {
	now := a.now()
	k, err := a.mintingKey(ctx, now)
	if err != nil {
		return "", time.Time{}, "", err
	}
	// Caveats carry whole seconds; round down so the caveat and the
	// returned expiry agree. Never outlive the key (a key made under a
	// shorter TTL than today's config).
	exp := now.Add(a.cfg.MacaroonTTL).UTC().Truncate(time.Second)
	if exp.After(k.Expires) {
		exp = k.Expires.UTC().Truncate(time.Second)
	}
	m, err := mintIssued(k.Key, k.ID, user, now, exp)
	if err != nil {
		return "", time.Time{}, "", err
	}
	return m, exp, k.ID, nil
}

// Admin verifies an Authorization header value "Macaroon <m>" and returns
// the admin it was minted for, as AdminCredential does.
func (a *Authenticator) Admin(ctx context.Context, header string) (user string, err error) {
	user, _, err = a.AdminCredential(ctx, header)
	return user, err
}

// MacaroonID names one admin macaroon in logs and the audit trail without
// revealing it: the first 16 hex digits of SHA-256 of its signature, which
// differs for every macaroon minted and cannot be turned back into it.
func MacaroonID(m *macaroon.Macaroon) string {
	h := sha256.Sum256(m.Signature())
	return hex.EncodeToString(h[:8])
}

// AdminCredential verifies an Authorization header value "Macaroon <m>"
// and returns the admin it was minted for and the macaroon's ID
// (MacaroonID). The macaroon must be well formed, signed by
// a root key the store still holds and that has not expired, carry only
// known caveats that all hold now, and name an admin that is still
// configured or stored; otherwise ErrUnauthenticated.
func (a *Authenticator) AdminCredential(ctx context.Context, header string) (user, tokenID string, err error) {
	var keyID string
	fail := func(reason string) (string, string, error) {
		attrs := []slog.Attr{slog.String("reason", reason)}
		if keyID != "" {
			attrs = append(attrs, slog.String("root_key_id", keyID))
		}
		if user != "" {
			attrs = append(attrs, slog.String("user", truncate(user, catalog.MaxNameLen)))
		}
		a.event(ctx, EventMacaroonFail, attrs...)
		return "", "", ErrUnauthenticated
	}
	reason := func(err error) string {
		if e, ok := errors.AsType[*errMacaroon](err); ok {
			return e.reason
		}
		return reasonMalformed
	}

	raw, ok := cutScheme(header, "Macaroon")
	if !ok {
		return fail(reasonMalformed)
	}
	m, id, err := decodeMacaroon(raw)
	if err != nil {
		return fail(reason(err))
	}
	keyID = id
	k, err := a.store.RootKey(ctx, keyID)
	if errors.Is(err, catalog.ErrNotFound) {
		return fail(reasonUnknownKey)
	}
	if err != nil {
		return "", "", fmt.Errorf("auth: look up root key: %w", err)
	}
	now := a.now()
	if !now.Before(k.Expires) { // expired but not yet purged
		return fail(reasonExpired)
	}
	u, issued, err := verifyIssued(m, k.Key, now)
	if err != nil {
		return fail(reason(err))
	}
	user = u
	if _, ok, err := a.adminHash(ctx, user); err != nil {
		return "", "", err
	} else if !ok {
		return fail(reasonUnknownUser)
	}
	// Read on every request, not cached: a revocation takes effect at the
	// next request on every node that shares the store.
	notBefore, err := a.store.AdminSessionsNotBefore(ctx, user)
	if err != nil {
		return "", "", fmt.Errorf("auth: admin sessions of %s: %w", user, err)
	}
	if !notBefore.IsZero() && !issued.After(notBefore) {
		return fail(reasonRevoked)
	}
	tokenID = MacaroonID(m)
	a.event(ctx, EventAdminAuthorized, slog.String("user", user), slog.String("root_key_id", keyID),
		slog.String("token_id", tokenID))
	return user, tokenID, nil
}

// Maintain purges root keys past their Expires; the macaroons they signed
// have all expired by then. The node calls it periodically.
func (a *Authenticator) Maintain(ctx context.Context) error {
	n, err := a.store.PurgeRootKeys(ctx, a.now())
	if err != nil {
		return fmt.Errorf("auth: purge root keys: %w", err)
	}
	if n > 0 {
		a.log.LogAttrs(ctx, slog.LevelInfo, "purged macaroon root keys", slog.Int("count", n))
	}
	return nil
}
