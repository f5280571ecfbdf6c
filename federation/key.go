package federation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrKeyFileMode means a key file is open to group or others. The key is
// refused rather than used, so a leaked key never goes on signing unnoticed.
var ErrKeyFileMode = errors.New("key file is accessible by group or others")

const pemType = "PRIVATE KEY"

// LoadOrCreateKey returns the hub's signing key kept at path, creating it if
// the file does not exist; created says which happened.
//
// A new key file gets mode 0600 and, if the directory is missing, a 0700
// directory. An existing directory is left as it is: it may be shared, and
// the file's own mode protects the key. A key file that group or others may
// read or write is refused with ErrKeyFileMode.
func LoadOrCreateKey(path string) (key ed25519.PrivateKey, created bool, err error) {
	return loadOrCreate(path, "hub key")
}

// LoadOrCreateNodeKey returns the node's identity key kept at path,
// creating it if the file does not exist, with the same file rules as
// LoadOrCreateKey. A node's ID in the mesh is KeyID of its public half:
// the hub admits a node by that key, machines check its hello and the
// credentials it issues against it.
func LoadOrCreateNodeKey(path string) (key ed25519.PrivateKey, created bool, err error) {
	return loadOrCreate(path, "node key")
}

// loadOrCreate loads or makes the key at path; what names it in errors.
func loadOrCreate(path, what string) (key ed25519.PrivateKey, created bool, err error) {
	key, err = loadKey(path, what)
	if err == nil {
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	key, err = createKey(path, what)
	if errors.Is(err, fs.ErrExist) {
		// Another process made the key between our look and our write:
		// theirs is the key now.
		key, err = loadKey(path, what)
		return key, false, err
	}
	if err != nil {
		return nil, false, err
	}
	return key, true, nil
}

func loadKey(path, what string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	// Stat the open file, not the path, so the mode checked is the mode of
	// the bytes read.
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s: not a regular file", what, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s %s has mode %04o: %w; run chmod 600 on it, and replace the key if others may have read it", what, path, perm, ErrKeyFileMode)
	}
	// A PEM PKCS#8 ed25519 key is about 120 bytes; anything much larger is
	// not a key file.
	const maxKeyFile = 4096
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("%s %s: larger than a key file", what, path)
	}
	key, err := parseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return key, nil
}

func parseKey(data []byte) (ed25519.PrivateKey, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != pemType {
		return nil, fmt.Errorf("not a PEM %q block", pemType)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("data after the PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS#8: %w", err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want ed25519", k)
	}
	return key, nil
}

// createKey writes a new key to a temporary file in path's directory, syncs
// it, and links it into place. A link, unlike a rename, never replaces a key
// another process wrote meanwhile: it fails with fs.ErrExist instead.
func createKey(path, what string) (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("%s: generate: %w", what, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%s: encode: %w", what, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der})

	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	// CreateTemp makes the file 0600, so the key is never readable by others,
	// not even for a moment.
	tmp, err := os.CreateTemp(dir, ".key-*")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("%s: write: %w", what, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("%s: sync: %w", what, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return key, nil
}

// syncDir makes the new directory entry durable, so a crash after
// LoadOrCreateKey returns cannot lose a key that has already signed records.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

const pubPrefix = "ed25519:"

// pubEncoding is strict so that each key has exactly one string form.
var pubEncoding = base64.RawURLEncoding.Strict()

// FormatPublicKey returns the string form of a public key, as operators pin
// it: "ed25519:" and the 32 key bytes in unpadded URL-safe base64.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return pubPrefix + pubEncoding.EncodeToString(pub)
}

// ParsePublicKey parses the form FormatPublicKey writes.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	rest, ok := strings.CutPrefix(s, pubPrefix)
	if !ok {
		return nil, fmt.Errorf("public key %q: must start with %q", s, pubPrefix)
	}
	b, err := pubEncoding.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("public key %q: not unpadded URL-safe base64: %w", s, err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key %q: %d bytes, want %d", s, len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// KeyID names a public key in records: the first 16 hex digits of the
// SHA-256 of its bytes. Short enough to log, long enough that two keys a
// downstream pins never collide by chance.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}
