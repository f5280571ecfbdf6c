package federation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

func TestEndorsementRoundTripsAndIsNoRecord(t *testing.T) {
	oldPub, oldPriv, _ := ed25519.GenerateKey(rand.Reader)
	newPub, _, _ := ed25519.GenerateKey(rand.Reader)
	env, err := Endorse(oldPriv, newPub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseEndorsement(FormatEndorsement(env))
	if err != nil {
		t.Fatalf("ParseEndorsement(FormatEndorsement): %v", err)
	}
	v := NewVerifier(oldPub)
	e, got, err := v.OpenEndorsement(parsed)
	if err != nil || !got.Equal(newPub) || e.Key != KeyID(oldPub) {
		t.Fatalf("OpenEndorsement = %+v, %v; want the new key endorsed by the old", e, err)
	}
	if _, err := v.Open(env); !errors.Is(err, ErrMalformedRecord) {
		t.Errorf("an endorsement opened as a record: %v, want ErrMalformedRecord", err)
	}
	rec, err := Sign(oldPriv, Record{Tier: "edge", TierSeq: 1, Type: catalog.EventTierAdded, Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.OpenEndorsement(rec); !errors.Is(err, ErrMalformedRecord) {
		t.Errorf("a record opened as an endorsement: %v, want ErrMalformedRecord", err)
	}
	if _, _, err := NewVerifier(newPub).OpenEndorsement(env); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("an endorsement checked against the new key only: %v, want ErrUnknownKey", err)
	}
	tampered := Envelope{Record: append([]byte{}, env.Record...), Sig: env.Sig}
	i := bytes.Index(tampered.Record, []byte(`"endorsed":"ed25519:`))
	tampered.Record[i+len(`"endorsed":"ed25519:`)+3] ^= 1 // another key, still JSON
	if _, _, err := v.OpenEndorsement(tampered); !errors.Is(err, ErrBadSignature) {
		t.Errorf("a tampered endorsement: %v, want ErrBadSignature", err)
	}
	for _, s := range []string{"", "pmke_", "pmke_abc", "pmke_!!.!!", "xyz_" + FormatEndorsement(env)[5:]} {
		if _, err := ParseEndorsement(s); err == nil {
			t.Errorf("ParseEndorsement(%q) accepted it", s)
		}
	}
}
