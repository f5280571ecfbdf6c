package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// The mesh key is the one key every node HMACs raw machine IDs under, so
// that a machine is one ID, and one row, wherever it registers or checks
// in. It is the hub's own machine-ID key. The hub states it in a signed
// statement that travels up no tier's sequence (a key is not a catalog
// change, and it concerns every tier alike): each downstream fetches it
// from its upstream on the sync link (GET /v1/sync/mesh-key, sync token),
// verifies it against its pinned hub keys, keeps it with the statement
// and serves the statement on, unchanged, to its own downstreams.
//
// The secret travels in the clear inside the link's TLS to holders of a
// sync token, who are nodes of the mesh. Only HMACs of raw IDs are ever
// stored or logged; a raw machine ID is a 128-bit random value
// (/etc/machine-id), so knowing the key does not let anyone invert them.

// meshKeyContext is signed ahead of a mesh key statement, so that its
// signature can never be taken for a record's or a credential's.
const meshKeyContext = "patchmesh mesh key v1\n"

// MeshKeyStatement is the hub's word on the mesh key.
type MeshKeyStatement struct {
	V int `json:"v"`
	// Key is the KeyID of the hub key that signed the statement.
	Key string `json:"key"`
	// ID names the secret (MeshKeyID), for logs and listings.
	ID     string    `json:"id"`
	Secret []byte    `json:"secret"`
	Issued time.Time `json:"issued"`
}

// MeshKeyID names a mesh key without revealing it: the first 16 hex
// digits of SHA-256 over a label and the key.
func MeshKeyID(secret []byte) string {
	h := sha256.New()
	h.Write([]byte("patchmesh mesh key id v1\n"))
	h.Write(secret)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ErrBadMeshKey means a mesh key statement is malformed or does not
// verify against the pinned hub keys.
var ErrBadMeshKey = errors.New("bad mesh key statement")

// SignMeshKey states secret as the mesh key, signed with the hub key
// priv, and returns it as a store.MeshKey ready to keep and serve.
func SignMeshKey(priv ed25519.PrivateKey, secret []byte, issued time.Time) (store.MeshKey, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return store.MeshKey{}, fmt.Errorf("mesh key: private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	if len(secret) < 16 {
		return store.MeshKey{}, fmt.Errorf("mesh key: secret is %d bytes, want at least 16", len(secret))
	}
	st := MeshKeyStatement{V: FormatVersion, Key: KeyID(priv.Public().(ed25519.PublicKey)),
		ID: MeshKeyID(secret), Secret: bytes.Clone(secret), Issued: issued.UTC().Truncate(time.Microsecond)}
	b, err := json.Marshal(st)
	if err != nil {
		return store.MeshKey{}, fmt.Errorf("mesh key: encode: %w", err)
	}
	return store.MeshKey{ID: st.ID, Secret: st.Secret, Record: b,
		Sig: ed25519.Sign(priv, append([]byte(meshKeyContext), b...)), Issued: st.Issued}, nil
}

// OpenMeshKey verifies a mesh key statement against the pinned hub keys
// and returns it as a store.MeshKey. The error wraps ErrBadMeshKey.
func (v *Verifier) OpenMeshKey(e Envelope) (store.MeshKey, error) {
	if len(e.Record) > MaxRecordSize {
		return store.MeshKey{}, fmt.Errorf("%w: %d bytes, limit %d", ErrBadMeshKey, len(e.Record), MaxRecordSize)
	}
	var head struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(e.Record, &head); err != nil {
		return store.MeshKey{}, fmt.Errorf("%w: %w", ErrBadMeshKey, err)
	}
	pub, ok := v.keys[head.Key]
	if !ok {
		return store.MeshKey{}, fmt.Errorf("%w: %w: key %q", ErrBadMeshKey, ErrUnknownKey, head.Key)
	}
	if len(e.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, append([]byte(meshKeyContext), e.Record...), e.Sig) {
		return store.MeshKey{}, fmt.Errorf("%w: %w: key %s", ErrBadMeshKey, ErrBadSignature, head.Key)
	}
	dec := json.NewDecoder(bytes.NewReader(e.Record))
	dec.DisallowUnknownFields()
	var st MeshKeyStatement
	if err := dec.Decode(&st); err != nil {
		return store.MeshKey{}, fmt.Errorf("%w: %w", ErrBadMeshKey, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return store.MeshKey{}, fmt.Errorf("%w: data after the statement", ErrBadMeshKey)
	}
	switch {
	case st.V != FormatVersion:
		return store.MeshKey{}, fmt.Errorf("%w: format version %d", ErrBadMeshKey, st.V)
	case st.Key != head.Key:
		return store.MeshKey{}, fmt.Errorf("%w: key read twice differs", ErrBadMeshKey)
	case len(st.Secret) < 16 || st.ID != MeshKeyID(st.Secret):
		return store.MeshKey{}, fmt.Errorf("%w: secret and ID do not match", ErrBadMeshKey)
	case st.Issued.IsZero():
		return store.MeshKey{}, fmt.Errorf("%w: no issue time", ErrBadMeshKey)
	}
	return store.MeshKey{ID: st.ID, Secret: st.Secret, Record: bytes.Clone(e.Record), Sig: bytes.Clone(e.Sig), Issued: st.Issued}, nil
}

// MeshKeyStore is what fetching the mesh key needs of the store.
type MeshKeyStore interface {
	MeshKey(ctx context.Context) (store.MeshKey, error)
	PutMeshKey(ctx context.Context, k store.MeshKey) error
}

// fetchMeshKey asks up for the mesh key statement, verifies it with v and
// keeps it. An upstream without one yet (404) is not an error: the next
// round asks again.
func fetchMeshKey(ctx context.Context, client *http.Client, st MeshKeyStore, v *Verifier, up Upstream) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, up.URL+"/v1/sync/mesh-key", nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+up.Token)
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("mesh key from %s: %w", up.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return false, nil
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("mesh key from %s: %s%s", up.URL, resp.Status, errorBody(resp.Body, up.Token))
	}
	var env Envelope
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4*MaxRecordSize)).Decode(&env); err != nil {
		return false, fmt.Errorf("mesh key from %s: %w", up.URL, err)
	}
	k, err := v.OpenMeshKey(env)
	if err != nil {
		return false, err
	}
	if err := st.PutMeshKey(ctx, k); err != nil && !errors.Is(err, catalog.ErrConflict) {
		return false, err
	}
	return true, nil
}

// ensureMeshKey fetches the mesh key through link l's upstream if this
// node holds none yet. A failure is logged, never fails the round: the
// catalog must sync whether or not the upstream is new enough to state it.
func (p *Puller) ensureMeshKey(ctx context.Context, l *linkState, up Upstream, v *Verifier) {
	if p.meshKey.Load() {
		return
	}
	mk := p.cfg.Store
	if _, err := mk.MeshKey(ctx); err == nil {
		p.meshKey.Store(true)
		return
	}
	got, err := fetchMeshKey(ctx, p.cfg.Client, mk, v, up)
	switch {
	case errors.Is(err, ErrBadMeshKey):
		l.rejected()
		p.securityEvent(ctx, l, up, "bad_mesh_key")
	case err != nil:
		p.cfg.Log.Warn("mesh key fetch failed", slog.String("tier", l.cfg.Tier), slog.String("upstream", up.URL), slog.String("error", err.Error()))
	case got:
		p.meshKey.Store(true)
		p.cfg.Log.Info("mesh key received", slog.String("tier", l.cfg.Tier), slog.String("upstream", up.URL))
	}
}
