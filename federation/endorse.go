package federation

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// EndorsementKind marks an endorsement's bytes, so that they can never be
// taken for a Record (which has no such field and refuses unknown ones) nor
// a Record for an endorsement.
const EndorsementKind = "hub-key-endorsement"

// Endorsement says that the hub key Key vouches for the hub key Endorsed:
// records signed by Endorsed are the hub's as much as those signed by Key.
// A machine that pins Key learns the rotated key from it without trusting
// the node that hands it over, since only the holder of Key could sign it.
type Endorsement struct {
	// Kind is EndorsementKind.
	Kind string `json:"kind"`
	// V is the format version, FormatVersion.
	V int `json:"v"`
	// Key is the KeyID of the endorsing (signing) key.
	Key string `json:"key"`
	// Endorsed is the new key in its text form, "ed25519:…".
	Endorsed string `json:"endorsed"`
	// Time is when the endorsement was made.
	Time time.Time `json:"time"`
}

// endorsementPrefix starts an endorsement's text form.
const endorsementPrefix = "pmke_"

// Endorse signs an endorsement of newKey with priv, the key it rotates
// away from.
func Endorse(priv ed25519.PrivateKey, newKey ed25519.PublicKey, at time.Time) (Envelope, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return Envelope{}, fmt.Errorf("endorse: private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	if len(newKey) != ed25519.PublicKeySize {
		return Envelope{}, fmt.Errorf("endorse: public key is %d bytes, want %d", len(newKey), ed25519.PublicKeySize)
	}
	e := Endorsement{
		Kind: EndorsementKind, V: FormatVersion, Key: KeyID(priv.Public().(ed25519.PublicKey)),
		Endorsed: FormatPublicKey(newKey), Time: at.UTC(),
	}
	b, err := json.Marshal(e)
	if err != nil {
		return Envelope{}, fmt.Errorf("endorse: encode: %w", err)
	}
	return Envelope{Record: b, Sig: ed25519.Sign(priv, b)}, nil
}

// OpenEndorsement verifies an endorsement against v's keys and returns it
// with the endorsed key parsed. Errors wrap ErrUnknownKey, ErrBadSignature
// or ErrMalformedRecord as Open's do.
func (v *Verifier) OpenEndorsement(env Envelope) (Endorsement, ed25519.PublicKey, error) {
	if len(env.Record) > MaxRecordSize {
		return Endorsement{}, nil, fmt.Errorf("%w: endorsement of %d bytes", ErrMalformedRecord, len(env.Record))
	}
	var head struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(env.Record, &head); err != nil {
		return Endorsement{}, nil, fmt.Errorf("%w: %w", ErrMalformedRecord, err)
	}
	pub, ok := v.keys[head.Key]
	if !ok {
		return Endorsement{}, nil, fmt.Errorf("%w: key %q", ErrUnknownKey, head.Key)
	}
	if len(env.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, env.Record, env.Sig) {
		return Endorsement{}, nil, fmt.Errorf("%w: key %s", ErrBadSignature, head.Key)
	}
	dec := json.NewDecoder(bytes.NewReader(env.Record))
	dec.DisallowUnknownFields()
	var e Endorsement
	if err := dec.Decode(&e); err != nil {
		return Endorsement{}, nil, fmt.Errorf("%w: %w", ErrMalformedRecord, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Endorsement{}, nil, fmt.Errorf("%w: data after the endorsement", ErrMalformedRecord)
	}
	if e.Kind != EndorsementKind || e.V != FormatVersion || e.Key != head.Key || e.Time.IsZero() {
		return Endorsement{}, nil, fmt.Errorf("%w: not a version %d endorsement", ErrMalformedRecord, FormatVersion)
	}
	newKey, err := ParsePublicKey(e.Endorsed)
	if err != nil {
		return Endorsement{}, nil, fmt.Errorf("%w: %w", ErrMalformedRecord, err)
	}
	return e, newKey, nil
}

// Keys returns the keys v trusts, in their text form.
func (v *Verifier) Keys() []string {
	out := make([]string, 0, len(v.keys))
	for _, k := range v.keys {
		out = append(out, FormatPublicKey(k))
	}
	return out
}

// Trusts reports whether v holds the key with this ID.
func (v *Verifier) Trusts(id string) bool {
	_, ok := v.keys[id]
	return ok
}

// Add makes v trust pub as well. It is for building a verifier up (a
// machine adding an endorsed key), not for one in use: Add and Open must
// not run concurrently.
func (v *Verifier) Add(pub ed25519.PublicKey) {
	if len(pub) != ed25519.PublicKeySize {
		panic(fmt.Sprintf("federation.Verifier.Add: public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize))
	}
	v.keys[KeyID(pub)] = bytes.Clone(pub)
}

// FormatEndorsement is an endorsement's text form, as an operator copies it
// into node configs: "pmke_", the record and the signature, each unpadded
// URL-safe base64, joined by ".".
func FormatEndorsement(env Envelope) string {
	return endorsementPrefix + base64.RawURLEncoding.EncodeToString(env.Record) + "." +
		base64.RawURLEncoding.EncodeToString(env.Sig)
}

// ParseEndorsement reads the text form FormatEndorsement writes. It checks
// the form only; OpenEndorsement checks the signature.
func ParseEndorsement(s string) (Envelope, error) {
	rest, ok := strings.CutPrefix(s, endorsementPrefix)
	if !ok {
		return Envelope{}, fmt.Errorf("endorsement: must start with %q", endorsementPrefix)
	}
	rec, sig, ok := strings.Cut(rest, ".")
	if !ok {
		return Envelope{}, errors.New("endorsement: want record.signature")
	}
	r, err := base64.RawURLEncoding.DecodeString(rec)
	if err != nil {
		return Envelope{}, fmt.Errorf("endorsement record: %w", err)
	}
	g, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return Envelope{}, fmt.Errorf("endorsement signature: %w", err)
	}
	if len(r) == 0 || len(r) > MaxRecordSize || len(g) != ed25519.SignatureSize {
		return Envelope{}, errors.New("endorsement: record or signature of the wrong size")
	}
	return Envelope{Record: r, Sig: g}, nil
}
