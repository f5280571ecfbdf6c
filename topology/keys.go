package topology

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
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

// InstallKey adds k to the keyring, to decrypt with. It is the first step of
// a rotation and must be done on every node before any node uses k.
func (t *Topology) InstallKey(k []byte) error {
	if err := t.keyring.AddKey(k); err != nil {
		return fmt.Errorf("topology: install gossip key: %w", err)
	}
	return nil
}

// UseKey makes the installed key k the primary: this node encrypts with it
// from now on.
func (t *Topology) UseKey(k []byte) error {
	if err := t.keyring.UseKey(k); err != nil {
		return fmt.Errorf("topology: use gossip key: %w", err)
	}
	return nil
}

// RemoveKey removes k from the keyring. The primary key cannot be removed;
// removing a key that is not installed does nothing.
func (t *Topology) RemoveKey(k []byte) error {
	if err := t.keyring.RemoveKey(k); err != nil {
		return fmt.Errorf("topology: remove gossip key: %w", err)
	}
	return nil
}
