package topology

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
)

// peerLabel is what the peer token is an HMAC of. Versioned, so that a
// later scheme can be derived from the same keys without the two colliding.
const peerLabel = "patchmesh peer blob v1"

// PeerTokenPrefix starts every peer token, so that a log line or a metric
// can tell it from a machine or sync token without reading it.
const PeerTokenPrefix = "pmp_"

// PeerToken derives, from one gossip key, the bearer token mesh nodes use to
// fetch blobs from each other (GET /v1/peer/blobs/{digest}). Holding the
// gossip keyring is what makes a node a member of the mesh, so a credential
// derived from it needs no issuing, storing or revoking of its own: it
// rotates with the keyring. The HMAC keeps the key itself off the wire.
func PeerToken(key []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(peerLabel))
	return PeerTokenPrefix + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// PeerTokens returns the peer token of every key in the keyring now, the
// primary's first. A node sends the first and accepts any of them, so that
// peer fetches keep working through a key rotation (InstallKey, UseKey,
// RemoveKey) just as gossip does.
func (t *Topology) PeerTokens() []string {
	keys := t.keyring.GetKeys()
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = PeerToken(k)
	}
	return out
}
