package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/patchmesh/patchmesh/catalog"
)

// A token is "pm<k>_<id>_<secret>": k names the kind, id is 16 lowercase
// hex digits (8 random bytes, public), secret is 32 random bytes in raw
// base64url. The secret's alphabet includes '_', so the string is parsed by
// position, never split on '_'.
const (
	tokenIDBytes     = 8
	tokenSecretBytes = 32
	tokenIDLen       = 2 * tokenIDBytes                                 // 16
	tokenSecretLen   = (tokenSecretBytes*8 + 5) / 6                     // 43
	tokenPrefixLen   = len("pmX_")                                      // 4
	tokenLen         = tokenPrefixLen + tokenIDLen + 1 + tokenSecretLen // 64
)

var kindLetters = map[catalog.TokenKind]byte{
	catalog.TokenAuth:    'a',
	catalog.TokenMachine: 'm',
	catalog.TokenSync:    's',
}

func kindOfLetter(b byte) (catalog.TokenKind, bool) {
	for k, l := range kindLetters {
		if l == b {
			return k, true
		}
	}
	return "", false
}

// NewToken makes a random token of kind. secret is the whole token string,
// to be shown once; t has ID, Kind and Hash set, and the caller sets Tier,
// Name, Expires and MachineID before storing it.
func NewToken(kind catalog.TokenKind) (secret string, t catalog.Token, err error) {
	letter, ok := kindLetters[kind]
	if !ok {
		return "", catalog.Token{}, fmt.Errorf("auth: unknown token kind %q", kind)
	}
	var id [tokenIDBytes]byte
	var sec [tokenSecretBytes]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", catalog.Token{}, fmt.Errorf("auth: token id: %w", err)
	}
	if _, err := rand.Read(sec[:]); err != nil {
		return "", catalog.Token{}, fmt.Errorf("auth: token secret: %w", err)
	}
	idHex := hex.EncodeToString(id[:])
	secPart := base64.RawURLEncoding.EncodeToString(sec[:])
	t = catalog.Token{ID: idHex, Kind: kind, Hash: secretHash(secPart)}
	return "pm" + string(letter) + "_" + idHex + "_" + secPart, t, nil
}

// secretHash is what the store keeps of a token: SHA-256 of the secret part
// as it is written in the token (its 43 base64url characters).
func secretHash(secretPart string) []byte {
	h := sha256.Sum256([]byte(secretPart))
	return h[:]
}

// parsedToken is a well-formed token string taken apart.
type parsedToken struct {
	kind   catalog.TokenKind
	id     string
	secret string // the secret part, still encoded
}

var errMalformedToken = errors.New("malformed token")

func parseToken(s string) (parsedToken, error) {
	if len(s) != tokenLen || s[0] != 'p' || s[1] != 'm' || s[3] != '_' || s[tokenPrefixLen+tokenIDLen] != '_' {
		return parsedToken{}, errMalformedToken
	}
	kind, ok := kindOfLetter(s[2])
	if !ok {
		return parsedToken{}, errMalformedToken
	}
	id := s[tokenPrefixLen : tokenPrefixLen+tokenIDLen]
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return parsedToken{}, errMalformedToken
		}
	}
	sec := s[tokenPrefixLen+tokenIDLen+1:]
	// Strict decoding refuses non-zero padding bits, so each secret has
	// exactly one spelling.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(sec)
	if err != nil || len(raw) != tokenSecretBytes {
		return parsedToken{}, errMalformedToken
	}
	return parsedToken{kind: kind, id: id, secret: sec}, nil
}

// dummyTokenHash is compared against when the token ID is unknown, so that
// an unknown ID costs the same hash and compare as a known one.
var dummyTokenHash = secretHash(strings.Repeat("A", tokenSecretLen))

// Bearer authenticates an Authorization header value "Bearer pm…" and
// returns the live token. The token must be one of kinds: a valid token of
// another kind is ErrForbidden. Anything wrong with the credential itself is
// ErrUnauthenticated; a store failure is returned wrapped, as neither.
func (a *Authenticator) Bearer(ctx context.Context, header string, kinds ...catalog.TokenKind) (catalog.Token, error) {
	if len(kinds) == 0 {
		// A caller that names no kind has a bug; refusing loudly beats
		// letting every kind through.
		return catalog.Token{}, errors.New("auth: Bearer called without a token kind")
	}
	fail := func(reason string, attrs ...slog.Attr) (catalog.Token, error) {
		a.event(ctx, EventTokenFail, append([]slog.Attr{slog.String("reason", reason)}, attrs...)...)
		return catalog.Token{}, ErrUnauthenticated
	}
	raw, ok := cutScheme(header, "Bearer")
	if !ok {
		return fail(reasonMalformed)
	}
	p, err := parseToken(raw)
	if err != nil {
		return fail(reasonMalformed)
	}
	t, err := a.tokens.token(ctx, a.store, p.id)
	known := err == nil
	if err != nil && !errors.Is(err, catalog.ErrNotFound) {
		return catalog.Token{}, fmt.Errorf("auth: look up token %s: %w", p.id, err)
	}
	want := dummyTokenHash
	if known {
		want = t.Hash
	}
	match := subtle.ConstantTimeCompare(secretHash(p.secret), want) == 1
	// The event attributes are built only for a line that is written: a
	// sampled-out success allocates none.
	ids := func(more ...slog.Attr) []slog.Attr {
		return append([]slog.Attr{slog.String("token_id", p.id), slog.String("kind", string(p.kind))}, more...)
	}
	switch {
	case !known:
		return fail(reasonUnknown, ids()...)
	case t.Kind != p.kind:
		// The prefix is part of the credential: a real ID under another
		// kind's prefix is not a token this node issued.
		return fail(reasonUnknown, ids()...)
	case !match:
		return fail(reasonBadSecret, ids()...)
	case !t.Revoked.IsZero():
		return fail(reasonRevoked, ids()...)
	case !t.Live(a.now()):
		return fail(reasonExpired, ids()...)
	}
	for _, k := range kinds {
		if t.Kind == k {
			if a.successes.Allow() {
				a.event(ctx, EventTokenSuccess, ids(slog.String("tier", t.Tier))...)
			}
			return t, nil
		}
	}
	a.event(ctx, EventAuthzFail, ids(slog.String("tier", t.Tier), slog.String("reason", reasonWrongKind), slog.Any("want_kinds", kinds))...)
	return catalog.Token{}, ErrForbidden
}

// cutScheme returns the credential of an Authorization header value with
// the given scheme. Schemes are case-insensitive (RFC 9110, 11.1).
func cutScheme(header, scheme string) (string, bool) {
	if len(header) <= len(scheme)+1 || header[len(scheme)] != ' ' || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	cred := strings.TrimLeft(header[len(scheme)+1:], " ")
	return cred, cred != ""
}

// MachineID returns the hex HMAC-SHA256 of a raw machine ID under the
// node's key. Only this is stored, so a leaked database does not reveal
// the machines' own IDs.
func MachineID(key []byte, raw string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(raw))
	return hex.EncodeToString(m.Sum(nil))
}
