package federation

// Node-to-node TLS: one identity for everything a node does. A node's TLS
// certificate is self-signed over its node key (the key the hub admits),
// so its certificate identity is its key ID and nothing else: no CA, no
// names to check. Whether a peer is trusted is the hub's word, the
// admissions: the caller passes a PeerPins that says which key IDs hold a
// live admission now, and every handshake asks it.

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// ErrPeerCert means a peer's TLS certificate is not a node certificate:
// not exactly one certificate, not an ed25519 key, or a self-signature
// that does not verify.
var ErrPeerCert = errors.New("not a node certificate")

// ErrPeerNotPinned means a peer proved a node key that holds no live
// admission here (and is not otherwise pinned).
var ErrPeerNotPinned = errors.New("peer key not admitted")

// certLifetime is how long a node certificate claims to be valid. The
// certificate is made afresh at every start and carries no trust of its
// own (the admission does), so the dates only need to cover clocks that
// disagree and a long-running node.
const certLifetime = 10 * 365 * 24 * time.Hour

// NodeCertificate makes the TLS certificate a node presents to its peers,
// as server and as client: self-signed by priv, its subject the node's
// name and key ID. Only the key in it matters to a peer.
func NodeCertificate(priv ed25519.PrivateKey, name string, now time.Time) (tls.Certificate, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return tls.Certificate{}, fmt.Errorf("node certificate: private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	pub := priv.Public().(ed25519.PublicKey)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("node certificate: serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: KeyID(pub), Organization: []string{"patchmesh node " + name}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("node certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("node certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, nil
}

// PeerKey reads the node key out of a peer's certificate chain as the
// handshake delivered it. The TLS handshake has already proved the peer
// holds the private key of the leaf; PeerKey checks that the chain is one
// self-signed ed25519 certificate, so that the key is the node key and
// not, say, a CA's.
func PeerKey(certs []*x509.Certificate) (ed25519.PublicKey, error) {
	if len(certs) != 1 {
		return nil, fmt.Errorf("%w: %d certificates, want 1", ErrPeerCert, len(certs))
	}
	c := certs[0]
	pub, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: key is %T, not ed25519", ErrPeerCert, c.PublicKey)
	}
	// The signature over the certificate's own body under its own key
	// (CheckSignatureFrom would also want the issuer to be a CA).
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
		return nil, fmt.Errorf("%w: not self-signed by its key: %v", ErrPeerCert, err)
	}
	return pub, nil
}

// PeerPins decides which node keys a node talks to. Pinned is asked at
// every handshake, on both sides, with the peer's key ID.
type PeerPins interface {
	// Pinned reports whether the key ID holds a live admission here (or
	// is pinned by other means, such as a join).
	Pinned(keyID string) bool
	// Refused reports whether the key ID was admitted and then removed
	// with no live admission left: such a key is refused at the
	// handshake even where unknown keys may still get as far as the join.
	Refused(keyID string) bool
}

// PeerServerTLS is the TLS configuration of a node's peer listener: TLS
// 1.3 only, a client certificate required. A removed key fails the
// handshake; a key never admitted passes it, so that a new node can reach
// the join endpoints, and is refused by the handler everywhere else
// (PeerPins.Pinned, asked per request). refused is told of every key the
// handshake turns away, for the security log.
func PeerServerTLS(cert tls.Certificate, pins PeerPins, refused func(keyID string, err error)) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			pub, err := PeerKey(cs.PeerCertificates)
			if err != nil {
				refused("", err)
				return err
			}
			id := KeyID(pub)
			if pins.Refused(id) {
				err := fmt.Errorf("%w: node key %s was removed", ErrPeerNotPinned, id)
				refused(id, err)
				return err
			}
			return nil
		},
	}
}

// PeerClientTLS is the TLS configuration a node dials its peers with: TLS
// 1.3, its own certificate, and the server's key checked against pins
// instead of a CA (InsecureSkipVerify only turns off the CA chain check;
// VerifyConnection does the pinning, and a handshake with a server that
// is not pinned fails). want, when not empty, also requires the server to
// hold that exact key ID (the join pins the hub this way).
func PeerClientTLS(cert tls.Certificate, pins PeerPins, want string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			pub, err := PeerKey(cs.PeerCertificates)
			if err != nil {
				return err
			}
			id := KeyID(pub)
			switch {
			case want != "" && id != want:
				return fmt.Errorf("%w: the server holds key %s, not %s", ErrPeerNotPinned, id, want)
			case want == "" && (pins == nil || !pins.Pinned(id)):
				return fmt.Errorf("%w: the server's key %s holds no live admission here", ErrPeerNotPinned, id)
			}
			return nil
		},
	}
}
