package topology

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/memberlist"
)

// ErrNoKeys is returned by Start when the Config has no gossip key: the mesh
// never gossips in plaintext.
var ErrNoKeys = errors.New("topology: no gossip key")

// ParseKeys parses a keyring written as base64 (standard encoding) keys
// separated by commas or newlines, as in PATCHMESH_GOSSIP_KEYS or a keyring
// file. The first key is the primary. Blank entries are skipped; each key
// must be 16, 24 or 32 bytes.
func ParseKeys(s string) ([][]byte, error) {
	var keys [][]byte
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' })
	for i, f := range fields {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(f)
		if err != nil {
			// Never echo the text: it is, or is close to, a secret.
			return nil, fmt.Errorf("topology: gossip key %d: not valid base64", i+1)
		}
		if err := memberlist.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("topology: gossip key %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, ErrNoKeys
	}
	return keys, nil
}

// NewKey returns a new random 32-byte gossip key (AES-256).
func NewKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("topology: new gossip key: %w", err)
	}
	return k, nil
}

// InstallKey adds k to the keyring of the named pools, every pool when
// none is named, to decrypt with. It is the first step of a rotation and
// must be done on every node of a pool before any node uses k there.
func (t *Topology) InstallKey(k []byte, pools ...string) error {
	return t.eachKeyring(pools, func(r *memberlist.Keyring) error { return r.AddKey(k) }, "install")
}

// UseKey makes the installed key k the primary of the named pools (every
// pool when none is named): this node encrypts with it there from now on.
func (t *Topology) UseKey(k []byte, pools ...string) error {
	return t.eachKeyring(pools, func(r *memberlist.Keyring) error { return r.UseKey(k) }, "use")
}

// RemoveKey removes k from the keyring of the named pools (every pool when
// none is named). The primary key cannot be removed; removing a key that
// is not installed does nothing.
func (t *Topology) RemoveKey(k []byte, pools ...string) error {
	return t.eachKeyring(pools, func(r *memberlist.Keyring) error { return r.RemoveKey(k) }, "remove")
}

// eachKeyring applies do to the keyrings of the named pools, all pools when
// none is named, after checking every name: a typo changes nothing.
func (t *Topology) eachKeyring(names []string, do func(*memberlist.Keyring) error, verb string) error {
	var rings []*pool
	for _, p := range t.pools {
		if len(names) == 0 || slices.Contains(names, p.name) {
			rings = append(rings, p)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(rings, func(p *pool) bool { return p.name == n }) {
			return fmt.Errorf("topology: %s gossip key: %w: %q", verb, ErrNoPool, n)
		}
	}
	for _, p := range rings {
		if err := do(p.keyring); err != nil {
			return fmt.Errorf("topology: %s gossip key in pool %s: %w", verb, p.name, err)
		}
	}
	return nil
}
