package federation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
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
// did not sign. The key is fixed so that the committed seeds
// (testdata/fuzz/FuzzOpen), real records with their signatures, verify.
func FuzzOpen(f *testing.F) {
	pub := fixedPub
	v := NewVerifier(pub)
	for seq := int64(1); seq <= 3; seq++ {
		e := signedFor(f, testRecord(seq))
		f.Add(e.Record, e.Sig)
	}
	f.Fuzz(func(t *testing.T, rec, sig []byte) {
		if _, err := v.Open(Envelope{Record: rec, Sig: sig}); err == nil && !ed25519.Verify(pub, rec, sig) {
			t.Fatalf("Open accepted bytes the key did not sign")
		}
	})
}

func testToken() *TokenRecord {
	hash := sha256.Sum256([]byte("the secret part"))
	return &TokenRecord{
		ID:      "0123456789abcdef",
		Name:    "fleet-eu",
		Hash:    hash[:],
		Created: time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC),
		Expires: time.Date(2027, 11, 20, 8, 0, 0, 0, time.UTC),
	}
}

func testTokenRecord(typ catalog.EventType) Record {
	r := Record{Tier: "stable", TierSeq: 4, Type: typ, Time: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC), Token: testToken()}
	if typ == catalog.EventTokenRevoked {
		r.Token.Revoked = r.Time
	}
	return r
}

func TestSignOpenTokenRecordRoundTrip(t *testing.T) {
	priv := newKey(t)
	v := NewVerifier(priv.Public().(ed25519.PublicKey))
	east := time.FixedZone("UTC+3", 3*3600)
	for _, typ := range []catalog.EventType{catalog.EventTokenAdded, catalog.EventTokenRevoked} {
		in := testTokenRecord(typ)
		want := *in.Token
		// Times are signed in UTC whatever zone they come in.
		in.Token.Created = in.Token.Created.In(east)
		e, err := Sign(priv, in)
		if err != nil {
			t.Fatalf("Sign(%s): %v", typ, err)
		}
		if in.Token.Created.Location() != east {
			t.Errorf("Sign(%s) changed the caller's token", typ)
		}
		got, err := v.Open(e)
		if err != nil {
			t.Fatalf("Open of a freshly signed %s: %v", typ, err)
		}
		if got.Token == nil {
			t.Fatalf("Open of a %s: no token", typ)
		}
		g := *got.Token
		if g.ID != want.ID || g.Name != want.Name || !bytes.Equal(g.Hash, want.Hash) ||
			!g.Created.Equal(want.Created) || g.Created.Location() != time.UTC ||
			!g.Expires.Equal(want.Expires) || !g.Revoked.Equal(want.Revoked) {
			t.Errorf("Open of a %s: token\nwant %+v\ngot  %+v", typ, want, g)
		}
		if !patchIsZero(got.Patch) {
			t.Errorf("Open of a %s: want no patch, got %+v", typ, got.Patch)
		}
		ct := got.CatalogToken()
		if ct == nil || ct.Kind != catalog.TokenAuth || ct.Tier != "stable" || ct.ID != want.ID || !bytes.Equal(ct.Hash, want.Hash) ||
			!ct.Revoked.Equal(want.Revoked) {
			t.Errorf("CatalogToken of a %s: want auth token %s on stable, got %+v", typ, want.ID, ct)
		}
	}
	// A token that never expires leaves the field out.
	r := testTokenRecord(catalog.EventTokenAdded)
	r.Token.Expires = time.Time{}
	e, err := Sign(priv, r)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(e.Record, []byte(`"expires"`)) || bytes.Contains(e.Record, []byte(`"revoked"`)) {
		t.Errorf("token record with no expiry or revocation: want neither field, got %s", e.Record)
	}
	if got, err := v.Open(e); err != nil || !got.Token.Expires.IsZero() {
		t.Errorf("Open of a token that never expires: want zero Expires, got %+v (err %v)", got.Token, err)
	}
	if testRecord(1).CatalogToken() != nil {
		t.Error("CatalogToken of a patch record: want nil")
	}
}

func TestSignRefusesInvalidTokenRecords(t *testing.T) {
	priv := newKey(t)
	added := func() Record { return testTokenRecord(catalog.EventTokenAdded) }
	for name, r := range map[string]Record{
		"patch event carrying a token": func() Record { r := testRecord(1); r.Token = testToken(); return r }(),
		"tier event carrying a token": func() Record {
			return Record{Tier: "stable", TierSeq: 1, Type: catalog.EventTierAdded, Time: time.Now(), Token: testToken()}
		}(),
		"token event without a token":    func() Record { r := added(); r.Token = nil; return r }(),
		"token event carrying a patch":   func() Record { r := added(); r.Patch = testRecord(1).Patch; return r }(),
		"token ID in upper case":         func() Record { r := added(); r.Token.ID = "0123456789ABCDEF"; return r }(),
		"token ID too short":             func() Record { r := added(); r.Token.ID = "0123456789abcde"; return r }(),
		"token hash not a SHA-256":       func() Record { r := added(); r.Token.Hash = r.Token.Hash[:31]; return r }(),
		"token name invalid":             func() Record { r := added(); r.Token.Name = "Fleet EU"; return r }(),
		"token without a creation time":  func() Record { r := added(); r.Token.Created = time.Time{}; return r }(),
		"token.added of a revoked token": func() Record { r := added(); r.Token.Revoked = r.Time; return r }(),
		"token.revoked without a time": func() Record {
			r := testTokenRecord(catalog.EventTokenRevoked)
			r.Token.Revoked = time.Time{}
			return r
		}(),
	} {
		if _, err := Sign(priv, r); err == nil {
			t.Errorf("%s: Sign accepted an invalid record", name)
		}
	}
}

// A hub that signs what it should not (here, a patch event that carries a
// token) still has its record refused downstream.
func TestOpenRefusesPatchRecordCarryingAToken(t *testing.T) {
	priv := newKey(t)
	v := NewVerifier(priv.Public().(ed25519.PublicKey))
	r := testRecord(1)
	r.V, r.Key = FormatVersion, KeyID(priv.Public().(ed25519.PublicKey))
	r.Token = testToken()
	rec, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Open(Envelope{Record: rec, Sig: ed25519.Sign(priv, rec)}); !errors.Is(err, ErrMalformedRecord) {
		t.Errorf("signed patch record carrying a token: want ErrMalformedRecord, got %v", err)
	}
}

// oldRecord and oldSig are a record and signature made by Sign before
// records could carry tokens, with the key from oldKeySeed. They are bytes
// fixed here, not made by today's code, so a change to the format that
// breaks records already in every node's log fails this test.
const (
	oldKeySeed = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
	oldRecord  = `{"v":1,"key":"cd8fa86afd6bf20d","tier":"stable","tier_seq":7,"type":"patch.promoted","patch":{"digest":"sha256:abababababababababababababababababababababababababababababababab","kernel":"5.15.0-107.117-generic","arch":"x86_64","version":"107.1","size":1024,"cves":["CVE-2024-1086"],"description":"old format","created":"2026-11-23T09:00:00Z","tiers":null,"withdrawn":false},"time":"2026-11-23T10:00:00Z"}`
	oldSig     = "oABt0tgDIA4l1pdP6xrymcwtPvVlMmAHZt1GvWzWiVqkT/lLUAg1tMHGyysopwEdwlCNIWfuJNkFkc3ponvoDg=="
)

func TestOpenReadsRecordsSignedBeforeTokens(t *testing.T) {
	priv := ed25519.NewKeyFromSeed([]byte(oldKeySeed))
	sig, err := base64.StdEncoding.DecodeString(oldSig)
	if err != nil {
		t.Fatal(err)
	}
	old := Envelope{Record: []byte(oldRecord), Sig: sig}
	got, err := NewVerifier(priv.Public().(ed25519.PublicKey)).Open(old)
	if err != nil {
		t.Fatalf("Open of a record signed before tokens: %v", err)
	}
	if got.Token != nil || got.Type != catalog.EventPatchPromoted || got.TierSeq != 7 ||
		got.Patch.Description != "old format" || !got.Time.Equal(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("Open of a record signed before tokens: got %+v", got)
	}
	// Signing the same event today writes the same bytes, so a hub that
	// re-signs its history does not change a record any node holds.
	again, err := Sign(priv, got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Record, old.Record) || !bytes.Equal(again.Sig, old.Sig) {
		t.Errorf("re-signing a record signed before tokens:\nwant %s\ngot  %s", old.Record, again.Record)
	}
}

func TestSealerSealsTokenEvents(t *testing.T) {
	priv := newKey(t)
	tok := testToken()
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	ct := &catalog.Token{ID: tok.ID, Kind: catalog.TokenAuth, Tier: "stable", Name: tok.Name, Hash: tok.Hash,
		Created: tok.Created, Expires: tok.Expires, Revoked: at}
	rec, sig, err := Sealer{Key: priv}.Seal(store.SealRequest{
		Tier: "stable", TierSeq: 9, Type: catalog.EventTokenRevoked, Token: ct, At: at})
	if err != nil {
		t.Fatalf("Seal of a token.revoked: %v", err)
	}
	got, err := NewVerifier(priv.Public().(ed25519.PublicKey)).Open(Envelope{Record: rec, Sig: sig})
	if err != nil {
		t.Fatalf("Open of a sealed token.revoked: %v", err)
	}
	if got.TierSeq != 9 || got.Token == nil || got.Token.ID != tok.ID || !bytes.Equal(got.Token.Hash, tok.Hash) || !got.Token.Revoked.Equal(at) {
		t.Errorf("sealed token.revoked: got %+v, token %+v", got, got.Token)
	}
	// A patch seal with a token is refused, as Sign refuses it.
	if _, _, err := (Sealer{Key: priv}).Seal(store.SealRequest{
		Tier: "stable", TierSeq: 10, Type: catalog.EventPatchAdded, Patch: testRecord(1).Patch, Token: ct, At: at}); err == nil {
		t.Error("Seal of a patch event carrying a token: want an error, got nil")
	}
}
