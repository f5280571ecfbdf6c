package auth

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"gopkg.in/macaroon.v2"
)

var (
	testKey   = []byte("0123456789abcdef0123456789abcdef")
	testKeyID = "00112233445566778899aabbccddeeff"
	t0        = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
)

// reencode decodes an encoded macaroon, lets change alter it, and encodes
// it again: what a holder (or an attacker) can do.
func reencode(t *testing.T, enc string, change func(m *macaroon.Macaroon)) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		t.Fatal(err)
	}
	var m macaroon.Macaroon
	if err := m.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	change(&m)
	out, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(out)
}

func encodeRaw(t *testing.T, m *macaroon.Macaroon) string {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// checkMacaroon runs what Admin runs on the credential, minus the store.
func checkMacaroon(enc string, key []byte, now time.Time) (string, error) {
	m, keyID, err := decodeMacaroon(enc)
	if err != nil {
		return "", err
	}
	if keyID != testKeyID {
		return "", refuse(reasonUnknownKey)
	}
	return verifyMacaroon(m, key, now)
}

func TestMacaroonVerifies(t *testing.T) {
	exp := t0.Add(240 * time.Hour)
	enc, err := mintMacaroon(testKey, testKeyID, "alice", exp)
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(enc, "+/=") {
		t.Errorf("macaroon %q is not raw base64url", enc)
	}
	user, err := checkMacaroon(enc, testKey, t0)
	if err != nil || user != "alice" {
		t.Fatalf("verify fresh macaroon: want alice, nil; got %q, %v", user, err)
	}
	user, err = checkMacaroon(enc, testKey, exp.Add(-time.Second))
	if err != nil || user != "alice" {
		t.Fatalf("verify one second before expiry: want alice, nil; got %q, %v", user, err)
	}
}

func TestMacaroonRefused(t *testing.T) {
	exp := t0.Add(240 * time.Hour)
	good, err := mintMacaroon(testKey, testKeyID, "alice", exp)
	if err != nil {
		t.Fatal(err)
	}
	addCaveat := func(c string) func(*macaroon.Macaroon) {
		return func(m *macaroon.Macaroon) {
			if err := m.AddFirstPartyCaveat([]byte(c)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A macaroon minted by someone who does not hold the key, with the
	// right ID and caveats.
	forged, err := mintMacaroon([]byte("not the key, not the key, not it"), testKeyID, "alice", exp)
	if err != nil {
		t.Fatal(err)
	}
	noUser, err := macaroon.New(testKey, []byte(macaroonIDPrefix+testKeyID), macaroonLocation, macaroon.V2)
	if err != nil {
		t.Fatal(err)
	}
	noDeadline := noUser.Clone()
	addCaveat(caveatTimeBefore + exp.Format(time.RFC3339))(noUser)
	addCaveat(caveatUser + "alice")(noDeadline)
	v1, err := macaroon.New(testKey, []byte(macaroonIDPrefix+testKeyID), macaroonLocation, macaroon.V1)
	if err != nil {
		t.Fatal(err)
	}
	addCaveat(caveatTimeBefore + exp.Format(time.RFC3339))(v1)
	addCaveat(caveatUser + "alice")(v1)
	goodBytes, _ := base64.RawURLEncoding.DecodeString(good)

	cases := []struct {
		name   string
		enc    string
		now    time.Time
		reason string
	}{
		{"expired at its deadline", good, exp, reasonExpired},
		{"expired 241h later", good, t0.Add(241 * time.Hour), reasonExpired},
		{"unknown caveat", reencode(t, good, addCaveat("admin true")), t0, reasonBadCaveat},
		{"second user caveat", reencode(t, good, addCaveat("user alice")), t0, reasonBadCaveat},
		{"other user added", reencode(t, good, addCaveat("user bob")), t0, reasonBadCaveat},
		{"unparsable deadline", reencode(t, good, addCaveat("time-before tomorrow")), t0, reasonBadCaveat},
		{"added deadline passed", reencode(t, good, addCaveat(caveatTimeBefore+t0.Format(time.RFC3339))), t0, reasonExpired},
		{"third-party caveat", reencode(t, good, func(m *macaroon.Macaroon) {
			if err := m.AddThirdPartyCaveat([]byte("0123456789abcdef0123456789abcdef"), []byte("elsewhere"), "https://elsewhere"); err != nil {
				t.Fatal(err)
			}
		}), t0, reasonBadSignature},
		{"no deadline", encodeRaw(t, noDeadline), t0, reasonBadCaveat},
		{"no user", encodeRaw(t, noUser), t0, reasonBadCaveat},
		{"forged signature", forged, t0, reasonBadSignature},
		{"verified with another key", good, t0, reasonBadSignature},
		{"flipped signature byte", func() string {
			b := append([]byte(nil), goodBytes...)
			b[len(b)-1] ^= 1
			return base64.RawURLEncoding.EncodeToString(b)
		}(), t0, reasonBadSignature},
		{"caveat text changed", func() string {
			s := strings.Replace(string(goodBytes), "user alice", "user alicf", 1)
			return base64.RawURLEncoding.EncodeToString([]byte(s))
		}(), t0, reasonBadSignature},
		{"trailing bytes", base64.RawURLEncoding.EncodeToString(append(append([]byte(nil), goodBytes...), 0)), t0, reasonMalformed},
		{"padded base64", good + strings.Repeat("=", (4-len(good)%4)%4) + "=", t0, reasonMalformed},
		{"standard base64", base64.StdEncoding.EncodeToString(goodBytes) + "+", t0, reasonMalformed},
		{"V1 macaroon", encodeRaw(t, v1), t0, reasonMalformed},
		{"not a macaroon", base64.RawURLEncoding.EncodeToString([]byte("hello")), t0, reasonMalformed},
		{"empty", "", t0, reasonMalformed},
		{"huge", strings.Repeat("A", maxMacaroonEncoded+1), t0, reasonMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key := testKey
			if c.name == "verified with another key" {
				key = []byte("another key, another key, anothe")
			}
			user, err := checkMacaroon(c.enc, key, c.now)
			var e *errMacaroon
			if !errors.As(err, &e) {
				t.Fatalf("want refusal %q, got user %q, err %v", c.reason, user, err)
			}
			if e.reason != c.reason {
				t.Errorf("reason: want %q, got %q", c.reason, e.reason)
			}
		})
	}
}

func TestMacaroonTighterDeadlineStillVerifies(t *testing.T) {
	// Attenuation is what macaroons are for: a holder may shorten its own
	// macaroon's life and it keeps working until then.
	good, err := mintMacaroon(testKey, testKeyID, "alice", t0.Add(240*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	short := reencode(t, good, func(m *macaroon.Macaroon) {
		if err := m.AddFirstPartyCaveat([]byte(caveatTimeBefore + t0.Add(time.Hour).Format(time.RFC3339))); err != nil {
			t.Fatal(err)
		}
	})
	if user, err := checkMacaroon(short, testKey, t0); err != nil || user != "alice" {
		t.Errorf("before the tighter deadline: want alice, nil; got %q, %v", user, err)
	}
	if _, err := checkMacaroon(short, testKey, t0.Add(time.Hour)); err == nil {
		t.Errorf("at the tighter deadline: want refusal, got none")
	}
}

func TestDecodeMacaroonRefusesBadKeyID(t *testing.T) {
	for _, id := range []string{"", "pm1 ", "pm1 short", "pm1 00112233445566778899AABBCCDDEEFF", "pm2 " + testKeyID, testKeyID} {
		m, err := macaroon.New(testKey, []byte(id), macaroonLocation, macaroon.V2)
		if err != nil {
			t.Fatal(err)
		}
		if _, keyID, err := decodeMacaroon(encodeRaw(t, m)); err == nil {
			t.Errorf("macaroon id %q: want refusal, got key ID %q", id, keyID)
		}
	}
}

type macaroonT = macaroon.Macaroon
