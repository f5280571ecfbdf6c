package federation

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/url"
	"slices"
)

// RosterNode is one admitted node as GET /v1/client/roster and GET
// /v1/client/nodes list it: where to reach it, its key, and the hub's
// signed admission. Everything but Admission is the serving node's word
// until Verify has checked it against the admission.
type RosterNode struct {
	Name string `json:"name"`
	// DC and Role are gossip's unsigned word (nodes list only), hints for
	// ranking.
	DC   string `json:"dc,omitempty"`
	Role string `json:"role,omitempty"`
	// URL is where to reach the node, one of URLs.
	URL   string   `json:"url"`
	URLs  []string `json:"urls"`
	Key   string   `json:"key"`
	KeyID string   `json:"key_id"`
	// Admission is the hub's node.admitted record; nil for an admission
	// that was never sealed, which Verify refuses.
	Admission *Envelope `json:"admission,omitempty"`
}

// RosterResponse is the answer of GET /v1/client/roster.
type RosterResponse struct {
	// Tier is the tier asked for; empty for every tier.
	Tier  string       `json:"tier"`
	Nodes []RosterNode `json:"nodes"`
	// Endorsements are as in Offer: a machine pinning an older hub key
	// learns the one that signed the admissions.
	Endorsements []Envelope `json:"endorsements,omitempty"`
}

// Verify checks n against the hub keys v pins: its admission verifies
// (VerifyAdmission), and its name, key, key ID and URL are the ones the
// hub signed. It returns the node's public key, the one to check the
// node's hello and credentials with, and the admission record, whose Tier
// the caller compares with the hub tier it expects. The error wraps
// ErrNotAdmitted, or the Verifier's errors.
func (n RosterNode) Verify(v *Verifier) (ed25519.PublicKey, Record, error) {
	if n.Admission == nil {
		return nil, Record{}, fmt.Errorf("%w: %s is listed without the hub's admission", ErrNotAdmitted, n.Name)
	}
	pub, err := ParsePublicKey(n.Key)
	if err != nil {
		return nil, Record{}, fmt.Errorf("%w: %s: %w", ErrNotAdmitted, n.Name, err)
	}
	r, err := VerifyAdmission(v, *n.Admission, n.Name, pub)
	if err != nil {
		return nil, Record{}, err
	}
	switch {
	case n.KeyID != KeyID(pub):
		return nil, Record{}, fmt.Errorf("%w: %s is listed with key ID %s, its key's is %s", ErrNotAdmitted, n.Name, n.KeyID, KeyID(pub))
	case !slices.Contains(r.Node.URLs, n.URL):
		return nil, Record{}, fmt.Errorf("%w: %s is listed at %s, which the hub did not admit", ErrNotAdmitted, n.Name, n.URL)
	}
	return pub, r, nil
}

// NewNonce returns a fresh random hello nonce: 32 bytes, base64url.
func NewNonce() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("hello nonce: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// HelloHost is the Host a request to the base URL u carries, as Go's HTTP
// client sends it (host, and port when the URL names one): what a node
// signs in its hello, and so what VerifyHello must be given.
func HelloHost(u string) (string, error) {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return "", fmt.Errorf("hello host of %q: not an absolute URL", u)
	}
	return p.Host, nil
}
