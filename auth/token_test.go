package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/catalog"
)

var tokenRE = regexp.MustCompile(`^pm[ams]_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$`)

func TestNewTokenMakesParseableTokenWithHashOfSecret(t *testing.T) {
	for _, kind := range []catalog.TokenKind{catalog.TokenAuth, catalog.TokenMachine, catalog.TokenSync} {
		t.Run(string(kind), func(t *testing.T) {
			secret, tok, err := NewToken(kind)
			if err != nil {
				t.Fatalf("NewToken(%q): %v", kind, err)
			}
			if !tokenRE.MatchString(secret) {
				t.Fatalf("token %q does not match %s", secret, tokenRE)
			}
			if want := "pm" + string(kindLetters[kind]) + "_"; !strings.HasPrefix(secret, want) {
				t.Errorf("token prefix: want %q, got %q", want, secret[:4])
			}
			if tok.Kind != kind {
				t.Errorf("Kind: want %q, got %q", kind, tok.Kind)
			}
			p, err := parseToken(secret)
			if err != nil {
				t.Fatalf("parseToken(NewToken()): %v", err)
			}
			if p.kind != kind || p.id != tok.ID {
				t.Errorf("parsed kind/id: want %q/%q, got %q/%q", kind, tok.ID, p.kind, p.id)
			}
			sum := sha256.Sum256([]byte(secret[len(secret)-tokenSecretLen:]))
			if !bytes.Equal(tok.Hash, sum[:]) {
				t.Errorf("Hash: want SHA-256 of the secret part %x, got %x", sum, tok.Hash)
			}
			raw, err := base64.RawURLEncoding.DecodeString(p.secret)
			if err != nil || len(raw) != 32 {
				t.Errorf("secret part: want 32 bytes of base64url, got %d bytes, err %v", len(raw), err)
			}
			if strings.Contains(secret, string(tok.Hash)) {
				t.Errorf("token string contains its stored hash")
			}
		})
	}
}

func TestNewTokenIsRandom(t *testing.T) {
	seenID := map[string]bool{}
	seenSecret := map[string]bool{}
	for i := 0; i < 100; i++ {
		s, tok, err := NewToken(catalog.TokenSync)
		if err != nil {
			t.Fatal(err)
		}
		if seenID[tok.ID] || seenSecret[s[21:]] {
			t.Fatalf("token %d repeats an earlier ID or secret", i)
		}
		seenID[tok.ID], seenSecret[s[21:]] = true, true
	}
}

func TestNewTokenRefusesUnknownKind(t *testing.T) {
	if s, _, err := NewToken("admin"); err == nil {
		t.Fatalf("NewToken(\"admin\"): want an error, got token %q", s)
	}
}

func TestParseTokenRefusesMalformed(t *testing.T) {
	good, _, err := NewToken(catalog.TokenMachine)
	if err != nil {
		t.Fatal(err)
	}
	// A secret whose last character carries non-zero padding bits: it
	// decodes leniently but has a second spelling, so strict parsing refuses it.
	nonCanonical := good[:len(good)-1] + "B"
	if strings.HasSuffix(good, "B") {
		nonCanonical = good[:len(good)-1] + "C"
	}
	cases := []struct{ name, token string }{
		{"empty", ""},
		{"short", good[:len(good)-1]},
		{"long", good + "A"},
		{"unknown kind letter", "pmx" + good[3:]},
		{"wrong magic", "xm" + good[2:]},
		{"upper-case id", good[:4] + strings.ToUpper("abcdefabcdefabcd") + good[20:]},
		{"non-hex id", good[:4] + "zzzzzzzzzzzzzzzz" + good[20:]},
		{"missing separator", good[:20] + "-" + good[21:]},
		{"bad base64 secret", good[:21] + strings.Repeat("*", 43)},
		{"non-canonical secret", nonCanonical},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if p, err := parseToken(c.token); err == nil {
				t.Errorf("parseToken(%q): want an error, got %+v", c.token, p)
			}
		})
	}
}

func TestCutScheme(t *testing.T) {
	cases := []struct {
		header, scheme, want string
		ok                   bool
	}{
		{"Bearer abc", "Bearer", "abc", true},
		{"bearer abc", "Bearer", "abc", true},
		{"BEARER   abc", "Bearer", "abc", true},
		{"Bearer", "Bearer", "", false},
		{"Bearer ", "Bearer", "", false},
		{"Bearerabc", "Bearer", "", false},
		{"Basic abc", "Bearer", "", false},
		{"Macaroon m", "Bearer", "", false},
		{"", "Macaroon", "", false},
	}
	for _, c := range cases {
		got, ok := cutScheme(c.header, c.scheme)
		if got != c.want || ok != c.ok {
			t.Errorf("cutScheme(%q, %q): want %q, %v; got %q, %v", c.header, c.scheme, c.want, c.ok, got, ok)
		}
	}
}

func TestMachineIDIsKeyedHexHMAC(t *testing.T) {
	const raw = "4c4c4544004d3510804bb4c04f4e4d32"
	k1, k2 := []byte("key one"), []byte("key two")
	a, b, c := MachineID(k1, raw), MachineID(k1, raw), MachineID(k2, raw)
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(a) {
		t.Fatalf("MachineID: want 64 lowercase hex digits, got %q", a)
	}
	if a != b {
		t.Errorf("MachineID is not deterministic: %q then %q", a, b)
	}
	if a == c {
		t.Errorf("MachineID does not depend on the key: %q under both", a)
	}
	if MachineID(k1, raw+"x") == a {
		t.Errorf("MachineID does not depend on the raw ID")
	}
	if strings.Contains(a, raw) {
		t.Errorf("MachineID %q contains the raw ID", a)
	}
}
