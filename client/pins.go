package client

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/federation"
)

// ErrNoPins means the machine pins no hub key, so it can verify nothing a
// node offers. It is never worked around by trusting the first key a node
// names: the operator pins the key at registration.
var ErrNoPins = errors.New("no hub key pinned: register again with --hub-key ed25519:… " +
	"(patchmesh admin hub-key at the hub prints it; or set PATCHMESH_HUB_KEY)")

// maxEndorsementRounds bounds how long a chain of rotations a machine
// follows in one go; each round can add every key endorsed by the keys
// known after the round before.
const maxEndorsementRounds = 8

// Pins are the hub keys a machine trusts: those the operator gave at
// registration, and those a trusted key endorsed since. Anything a node
// hands the machine is checked against them; a node's own word counts for
// nothing. Other checks of signed material (a node roster, a heartbeat)
// use the same Pins through Open.
type Pins struct {
	v    *federation.Verifier
	keys []string // text forms, in the order pinned
}

// NewPins parses keys ("ed25519:…"). ErrNoPins if there is none.
func NewPins(keys []string) (*Pins, error) {
	if len(keys) == 0 {
		return nil, ErrNoPins
	}
	p := &Pins{v: federation.NewVerifier()}
	for _, k := range keys {
		pub, err := federation.ParsePublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("hub key: %w", err)
		}
		p.add(pub)
	}
	return p, nil
}

func (p *Pins) add(pub ed25519.PublicKey) bool {
	s := federation.FormatPublicKey(pub)
	if slices.Contains(p.keys, s) {
		return false
	}
	p.v.Add(pub)
	p.keys = append(p.keys, s)
	return true
}

// Pins returns the hub keys s pins, for verifying anything a node relays
// to the machine. ErrNoPins if it pins none.
func (s State) Pins() (*Pins, error) { return NewPins(s.HubKeys) }

// Keys returns the pinned keys in their text form, as the state keeps them.
func (p *Pins) Keys() []string { return slices.Clone(p.keys) }

// Open verifies a hub-signed record against the pins.
func (p *Pins) Open(env federation.Envelope) (federation.Record, error) {
	return p.v.Open(env)
}

// Endorse pins every key that a pinned key endorses in envs, following
// chains of rotations (old → new → newer) up to a bound, and returns the
// keys it added. Endorsements signed by keys not pinned, or that do not
// verify, are ignored: a node may hand over anything, and only the hub's
// own keys can extend the pins.
func (p *Pins) Endorse(envs []federation.Envelope) []string {
	var added []string
	for range maxEndorsementRounds {
		grew := false
		for _, env := range envs {
			_, pub, err := p.v.OpenEndorsement(env)
			if err != nil {
				continue
			}
			if p.add(pub) {
				added = append(added, federation.FormatPublicKey(pub))
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	return added
}

// tokenParts splits an enrollment token pm<k>_<16 hex ID>_<secret> into
// its ID and the SHA-256 of its secret part, which is what the hub signs
// of a token (auth.NewToken's format; the client does not import the
// server-side auth package for one split).
func tokenParts(token string) (id string, hash [sha256.Size]byte, err error) {
	const prefix, idLen = len("pma_"), 16
	if len(token) <= prefix+idLen+1 || token[prefix+idLen] != '_' {
		return "", hash, errors.New("malformed enrollment token")
	}
	return token[prefix : prefix+idLen], sha256.Sum256([]byte(token[prefix+idLen+1:])), nil
}

// verifyEnrollment checks the hub-signed record of the enrollment token a
// machine registered with and returns the hub tier it names: the
// machine's tier as the hub made it, not as the node says.
func verifyEnrollment(p *Pins, token string, env federation.Envelope) (string, error) {
	rec, err := p.Open(env)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrEnrollmentUnverified, err)
	}
	id, hash, err := tokenParts(token)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrEnrollmentUnverified, err)
	}
	switch {
	case rec.Type != catalog.EventTokenAdded || rec.Token == nil:
		return "", fmt.Errorf("%w: the record is a %s, not a token.added", ErrEnrollmentUnverified, rec.Type)
	case rec.Token.ID != id || subtle.ConstantTimeCompare(rec.Token.Hash, hash[:]) != 1:
		return "", fmt.Errorf("%w: the record is of another token (%s)", ErrEnrollmentUnverified, rec.Token.ID)
	}
	return rec.Tier, nil
}

// ErrEnrollmentUnverified means the node's proof of the machine's tier (the
// hub-signed record of its enrollment token) is missing or does not hold.
var ErrEnrollmentUnverified = errors.New("the machine's hub tier could not be verified")
