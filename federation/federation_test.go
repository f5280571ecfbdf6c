package federation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

func TestLoadOrCreateKeyCreatesOnceWithMode0600(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "hub.key")
	k1, created, err := LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first use: want a created key, got created=%v err=%v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := st.Mode().Perm(); m != 0o600 {
		t.Errorf("key file mode: want 0600, got %o", m)
	}
	if d, _ := os.Stat(filepath.Dir(path)); d.Mode().Perm() != 0o700 {
		t.Errorf("key dir mode: want 0700, got %o", d.Mode().Perm())
	}
	k2, created, err := LoadOrCreateKey(path)
	if err != nil || created {
		t.Fatalf("second use: want the stored key, got created=%v err=%v", created, err)
	}
	if !k1.Equal(k2) {
		t.Error("second use returned a different key")
	}
}

func TestLoadOrCreateKeyRefusesReadableKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.key")
	if _, _, err := LoadOrCreateKey(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(path); !errors.Is(err, ErrKeyFileMode) {
		t.Errorf("0644 key file: want ErrKeyFileMode, got %v", err)
	}
}

func TestPublicKeyFormatRoundTripAndRejects(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	s := FormatPublicKey(pub)
	got, err := ParsePublicKey(s)
	if err != nil || !bytes.Equal(got, pub) {
		t.Fatalf("round trip of %s: got %x, %v", s, got, err)
	}
	for _, bad := range []string{"", "ed25519:", "rsa:" + s[len("ed25519:"):], s[:len(s)-2], s + "AA", strings.ToUpper(s)} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q): want an error, got none", bad)
		}
	}
	if id := KeyID(pub); len(id) != 16 {
		t.Errorf("KeyID: want 16 hex digits, got %q", id)
	}
}

func testRecord(seq int64) Record {
	return Record{
		Tier:    "stable",
		TierSeq: seq,
		Type:    catalog.EventPatchAdded,
		Time:    time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
		Patch: catalog.Patch{
			Digest:  "sha256:" + strings.Repeat("ab", 32),
			Kernel:  "5.15.0-107.117-generic",
			Arch:    "x86_64",
			Version: "107.1",
			Size:    1024,
			CVEs:    []string{"CVE-2024-1086"},
			Created: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC),
		},
	}
}

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func TestSignOpenRoundTrip(t *testing.T) {
	priv := newKey(t)
	in := testRecord(1)
	in.Patch.Tiers = []string{"edge"} // state, not a signed fact: dropped
	e, err := Sign(priv, in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewVerifier(priv.Public().(ed25519.PublicKey)).Open(e)
	if err != nil {
		t.Fatalf("Open of a freshly signed record: %v", err)
	}
	if got.Patch.Digest != in.Patch.Digest || got.TierSeq != 1 || got.Tier != "stable" || got.Key != KeyID(priv.Public().(ed25519.PublicKey)) {
		t.Errorf("opened record differs: %+v", got)
	}
	if len(got.Patch.Tiers) != 0 {
		t.Errorf("signed record carries tiers %v: want none", got.Patch.Tiers)
	}
}

func TestSignRefusesInvalidRecord(t *testing.T) {
	priv := newKey(t)
	for name, edit := range map[string]func(*Record){
		"zero tier seq": func(r *Record) { r.TierSeq = 0 },
		"bad tier":      func(r *Record) { r.Tier = "Stable!" },
		"bad kernel":    func(r *Record) { r.Patch.Kernel = "linux" },
		"unknown type":  func(r *Record) { r.Type = "patch.renamed" },
		"no time":       func(r *Record) { r.Time = time.Time{} },
	} {
		r := testRecord(1)
		edit(&r)
		if _, err := Sign(priv, r); err == nil {
			t.Errorf("%s: Sign accepted an invalid record", name)
		}
	}
}

// Every single-byte change to the record or the signature must be refused.
func TestOpenRefusesEveryByteFlip(t *testing.T) {
	priv := newKey(t)
	v := NewVerifier(priv.Public().(ed25519.PublicKey))
	e, err := Sign(priv, testRecord(3))
	if err != nil {
		t.Fatal(err)
	}
	for i := range e.Record {
		bad := Envelope{Record: bytes.Clone(e.Record), Sig: e.Sig}
		bad.Record[i] ^= 0x01
		if _, err := v.Open(bad); err == nil {
			t.Fatalf("record byte %d flipped: Open accepted it", i)
		}
	}
	for i := range e.Sig {
		bad := Envelope{Record: e.Record, Sig: bytes.Clone(e.Sig)}
		bad.Sig[i] ^= 0x01
		if _, err := v.Open(bad); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("signature byte %d flipped: want ErrBadSignature, got %v", i, err)
		}
	}
}

func TestOpenRefusesUnpinnedKey(t *testing.T) {
	e, err := Sign(newKey(t), testRecord(1))
	if err != nil {
		t.Fatal(err)
	}
	other := newKey(t)
	if _, err := NewVerifier(other.Public().(ed25519.PublicKey)).Open(e); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("record by an unpinned key: want ErrUnknownKey, got %v", err)
	}
}

// A record the hub's key signed but that breaks the format is still refused:
// an unknown field, trailing data, or a field that breaks the catalog's rules.
func TestOpenRefusesSignedButMalformedRecords(t *testing.T) {
	priv := newKey(t)
	v := NewVerifier(priv.Public().(ed25519.PublicKey))
	good, err := Sign(priv, testRecord(1))
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(good.Record, &fields); err != nil {
		t.Fatal(err)
	}
	withExtra := map[string]any{}
	for k, val := range fields {
		withExtra[k] = val
	}
	withExtra["injected"] = true
	extra, _ := json.Marshal(withExtra)
	fields["tier_seq"] = 0
	zeroSeq, _ := json.Marshal(fields)
	cases := map[string][]byte{
		"unknown field": extra,
		"trailing data": append(bytes.Clone(good.Record), []byte(` {}`)...),
		"tier_seq 0":    zeroSeq,
	}
	for name, rec := range cases {
		e := Envelope{Record: rec, Sig: ed25519.Sign(priv, rec)}
		if _, err := v.Open(e); !errors.Is(err, ErrMalformedRecord) {
			t.Errorf("%s: want ErrMalformedRecord, got %v", name, err)
		}
	}
}

func TestCheckSequence(t *testing.T) {
	tests := []struct {
		last, seq int64
		want      error
	}{
		{0, 1, nil},
		{4, 5, nil},
		{4, 4, ErrReplay},
		{4, 2, ErrReplay},
		{4, 6, ErrGap},
	}
	for _, tt := range tests {
		err := CheckSequence(tt.last, testRecord(tt.seq))
		if (tt.want == nil && err != nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("last %d, record %d: want %v, got %v", tt.last, tt.seq, tt.want, err)
		}
	}
}

// FuzzOpen: Open never panics, and never accepts bytes that the pinned key
// did not sign.
func FuzzOpen(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub := priv.Public().(ed25519.PublicKey)
	v := NewVerifier(pub)
	for seq := int64(1); seq <= 3; seq++ {
		e, err := Sign(priv, testRecord(seq))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(e.Record, e.Sig)
	}
	f.Fuzz(func(t *testing.T, rec, sig []byte) {
		if _, err := v.Open(Envelope{Record: rec, Sig: sig}); err == nil && !ed25519.Verify(pub, rec, sig) {
			t.Fatalf("Open accepted bytes the key did not sign")
		}
	})
}
