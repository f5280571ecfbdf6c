package federation

// Node identity: what lets a machine, or another node, tell an admitted
// node from any process that merely holds the gossip key. Three checks,
// each a pure function over bytes, so that the client can run them
// without importing node or api:
//
//   - VerifyAdmission: the hub signed a node.admitted record binding the
//     node's name to its key (the roster a node serves);
//   - VerifyHello: the node at this URL holds that key now (a signature
//     over a nonce the machine chose and the host it asked);
//   - VerifyCredential: a machine credential was issued by an admitted
//     node, for this tier, and is still valid.
//
// Every signature is domain-separated: each message starts with a fixed
// context line, so a signature made for one purpose (a hello) can never
// be passed off as another (a credential), and none of them as a record,
// which the node key never signs.

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// Sentinel errors of identity checks. Each one means: do not trust this
// node (or credential), and send it nothing.
var (
	// ErrNotAdmitted means the envelope is not the hub's admission of
	// the node named with the key given.
	ErrNotAdmitted = errors.New("node not admitted")
	// ErrBadHello means a node's hello does not prove it holds the key.
	ErrBadHello = errors.New("node hello does not verify")
	// ErrBadCredential means a machine credential is malformed, forged,
	// expired or issued by another node than it names.
	ErrBadCredential = errors.New("bad machine credential")
)

// VerifyAdmission opens e with v (the hub keys the caller pins) and checks
// that it is the hub's node.admitted record for the node called name with
// the public key pub. It returns the record, whose Tier the caller may
// compare with the tier it expects. The error wraps ErrNotAdmitted for a
// record of another kind, name or key, and the Verifier's errors
// (ErrUnknownKey, ErrBadSignature, ErrMalformedRecord) for one that does
// not verify.
//
// An admission proves the hub admitted the node at some time; a removal
// is a later record. Whether an admission is still current is for the
// roster's freshness (the hub's signed heartbeat) to bound.
func VerifyAdmission(v *Verifier, e Envelope, name string, pub ed25519.PublicKey) (Record, error) {
	r, err := v.Open(e)
	if err != nil {
		return Record{}, err
	}
	switch {
	case r.Type != catalog.EventNodeAdmitted || r.Node == nil:
		return Record{}, fmt.Errorf("%w: record is a %s event", ErrNotAdmitted, r.Type)
	case r.Node.Name != name:
		return Record{}, fmt.Errorf("%w: record admits %q, not %q", ErrNotAdmitted, r.Node.Name, name)
	case len(pub) != ed25519.PublicKeySize || r.Node.Key != FormatPublicKey(pub):
		return Record{}, fmt.Errorf("%w: %q is admitted with another key", ErrNotAdmitted, name)
	}
	return r, nil
}

// helloContext starts every hello message.
const helloContext = "patchmesh node hello v1\n"

// Nonce rules: the asker's random challenge, URL-safe so it travels in a
// query, long enough that a node cannot have signed it before.
const (
	MinNonceLen = 16
	MaxNonceLen = 128
)

var nonceRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ValidNonce checks a hello nonce: 16 to 128 characters of base64url.
func ValidNonce(nonce string) error {
	if len(nonce) < MinNonceLen || len(nonce) > MaxNonceLen || !nonceRE.MatchString(nonce) {
		return &catalog.InvalidError{Field: "nonce", Message: fmt.Sprintf("must be %d-%d characters of A-Z, a-z, 0-9, '-' or '_'", MinNonceLen, MaxNonceLen)}
	}
	return nil
}

// HelloMessage is what a node signs to answer a hello: the context line,
// the nonce and the host it was asked by (the Host header, as the machine
// sent it), each on its own line. Binding the host keeps a node from
// relaying a hello another node signed for another address.
func HelloMessage(nonce, host string) []byte {
	return []byte(helloContext + nonce + "\n" + host)
}

// Hello is a node's answer to GET /v1/client/hello: its name and key, the
// nonce it signed, and the signature over HelloMessage.
type Hello struct {
	Name  string `json:"name"`
	Key   string `json:"key"`
	KeyID string `json:"key_id"`
	Nonce string `json:"nonce"`
	// Sig is standard base64 in JSON.
	Sig []byte `json:"sig"`
}

// SignHello answers a hello for nonce asked by host, as the node called
// name with key priv.
func SignHello(priv ed25519.PrivateKey, name, nonce, host string) (Hello, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return Hello{}, fmt.Errorf("hello: private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	if err := ValidNonce(nonce); err != nil {
		return Hello{}, err
	}
	if err := validHost(host); err != nil {
		return Hello{}, err
	}
	pub := priv.Public().(ed25519.PublicKey)
	return Hello{
		Name: name, Key: FormatPublicKey(pub), KeyID: KeyID(pub), Nonce: nonce,
		Sig: ed25519.Sign(priv, HelloMessage(nonce, host)),
	}, nil
}

// validHost refuses a host that could make two different (nonce, host)
// pairs sign the same bytes.
func validHost(host string) error {
	if host == "" || len(host) > 255 || strings.ContainsAny(host, "\n\r") {
		return &catalog.InvalidError{Field: "host", Message: "must be a host[:port] of 1-255 characters on one line"}
	}
	return nil
}

// VerifyHello checks that h proves the node holds pub: it answers the
// nonce the caller chose, for the host the caller asked by, signed by
// pub, and names pub as its key. The caller takes pub from an admission
// it verified (VerifyAdmission), never from h. The error wraps
// ErrBadHello.
func VerifyHello(h Hello, pub ed25519.PublicKey, nonce, host string) error {
	switch {
	case len(pub) != ed25519.PublicKeySize:
		return fmt.Errorf("%w: public key is %d bytes", ErrBadHello, len(pub))
	case validHost(host) != nil:
		return fmt.Errorf("%w: host %q cannot be signed", ErrBadHello, host)
	case h.Key != FormatPublicKey(pub):
		return fmt.Errorf("%w: the node answers with key %q, not the admitted one", ErrBadHello, h.Key)
	case h.Nonce != nonce:
		return fmt.Errorf("%w: the node signed another nonce", ErrBadHello)
	case len(h.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, HelloMessage(nonce, host), h.Sig):
		return fmt.Errorf("%w: signature does not verify for this nonce and host", ErrBadHello)
	}
	return nil
}

// Machine credentials.

// CredentialPrefix starts a machine credential's text form, so that it is
// told apart from the pm<k>_ tokens in an Authorization header.
const CredentialPrefix = "pmc_"

// credentialContext starts the bytes a credential's signature covers.
const credentialContext = "patchmesh machine credential v1\n"

// MaxCredentialLen bounds a credential's text form; a real one is about
// 400 bytes.
const MaxCredentialLen = 2048

// credentialEncoding is strict so that a credential has one text form.
var credentialEncoding = base64.RawURLEncoding.Strict()

// MachineStatement is what a node that registered a machine states about
// it, signed with that node's key: another node that admits the issuer
// registers the machine on its word, under the same ID, without the
// enrollment token and without ever seeing the raw machine ID.
type MachineStatement struct {
	V int `json:"v"`
	// Machine is the machine's ID at the issuer: hex HMAC-SHA256 of its
	// raw ID under the issuer's key.
	Machine string `json:"machine"`
	Tier    string `json:"tier"`
	// Issuer is the issuing node's name, IssuerKey its node key ID.
	Issuer    string    `json:"issuer"`
	IssuerKey string    `json:"issuer_key"`
	Issued    time.Time `json:"issued"`
	Expires   time.Time `json:"expires"`
	// EnrolledBy is the ID of the enrollment (auth) token the machine
	// registered with at its first contact, carried from credential to
	// credential, so that a node it registers at by credential records it
	// and the hub's revocation of that token with its machines reaches the
	// machine there too. omitempty keeps a credential without one as it
	// was; a node of an older release refuses a credential that carries
	// it (unknown field), so upgrade every node before the first.
	EnrolledBy string `json:"enrolled_by,omitempty"`
}

// Credential is a parsed machine credential: the statement and the exact
// bytes and signature it came in. Its fields are unverified until
// VerifyCredential accepts it.
type Credential struct {
	Statement MachineStatement
	raw, sig  []byte
}

var machineHexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func (st MachineStatement) validate() error {
	bad := func(field, msg string) error {
		return &catalog.InvalidError{Field: "credential." + field, Message: msg}
	}
	switch {
	case st.V != FormatVersion:
		return bad("v", fmt.Sprintf("format version %d, this node reads %d", st.V, FormatVersion))
	case !machineHexRE.MatchString(st.Machine):
		return bad("machine", "must be a machine ID of 64 lowercase hex digits")
	case catalog.ValidName("tier", st.Tier) != nil:
		return bad("tier", "must be a tier name")
	case catalog.ValidNodeName("issuer", st.Issuer) != nil:
		return bad("issuer", "must be a node name")
	case !keyIDRE.MatchString(st.IssuerKey):
		return bad("issuer_key", "must be a key ID of 16 lowercase hex digits")
	case st.Issued.IsZero() || !st.Expires.After(st.Issued):
		return bad("expires", "must be after issued, and both set")
	case st.EnrolledBy != "" && !tokenIDRE.MatchString(st.EnrolledBy):
		return bad("enrolled_by", "must be empty or a token ID of 16 lowercase hex digits")
	}
	return nil
}

// IssueCredential signs st with the issuing node's key priv and returns
// its text form: CredentialPrefix, then the statement's JSON and the
// signature, each base64url, joined by a dot. It sets V and IssuerKey.
func IssueCredential(priv ed25519.PrivateKey, st MachineStatement) (string, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("credential: private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	st.V = FormatVersion
	st.IssuerKey = KeyID(priv.Public().(ed25519.PublicKey))
	st.Issued, st.Expires = st.Issued.UTC(), st.Expires.UTC()
	if err := st.validate(); err != nil {
		return "", fmt.Errorf("credential: %w", err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return "", fmt.Errorf("credential: encode: %w", err)
	}
	sig := ed25519.Sign(priv, credentialMessage(b))
	return CredentialPrefix + credentialEncoding.EncodeToString(b) + "." + credentialEncoding.EncodeToString(sig), nil
}

func credentialMessage(statement []byte) []byte {
	return append([]byte(credentialContext), statement...)
}

// IsCredential reports whether s has a machine credential's prefix, so a
// caller can route it to ParseCredential rather than to token checks.
func IsCredential(s string) bool { return strings.HasPrefix(s, CredentialPrefix) }

// ParseCredential reads a credential's text form without verifying it, so
// the caller can look up the issuer's admitted key; nothing in it may be
// acted on before VerifyCredential. The error wraps ErrBadCredential.
func ParseCredential(s string) (Credential, error) {
	if len(s) > MaxCredentialLen {
		return Credential{}, fmt.Errorf("%w: longer than %d bytes", ErrBadCredential, MaxCredentialLen)
	}
	body, ok := strings.CutPrefix(s, CredentialPrefix)
	if !ok {
		return Credential{}, fmt.Errorf("%w: must start with %q", ErrBadCredential, CredentialPrefix)
	}
	stText, sigText, ok := strings.Cut(body, ".")
	if !ok {
		return Credential{}, fmt.Errorf("%w: no signature part", ErrBadCredential)
	}
	raw, err := credentialEncoding.DecodeString(stText)
	if err != nil {
		return Credential{}, fmt.Errorf("%w: statement is not base64url", ErrBadCredential)
	}
	sig, err := credentialEncoding.DecodeString(sigText)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Credential{}, fmt.Errorf("%w: signature is not %d bytes of base64url", ErrBadCredential, ed25519.SignatureSize)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var st MachineStatement
	if err := dec.Decode(&st); err != nil {
		return Credential{}, fmt.Errorf("%w: statement: %w", ErrBadCredential, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Credential{}, fmt.Errorf("%w: data after the statement", ErrBadCredential)
	}
	if err := st.validate(); err != nil {
		return Credential{}, fmt.Errorf("%w: %w", ErrBadCredential, err)
	}
	return Credential{Statement: st, raw: raw, sig: sig}, nil
}

// MaxClockSkew is how far in the future a credential's issue time may lie,
// for clocks of two nodes that disagree a little.
const MaxClockSkew = 5 * time.Minute

// VerifyCredential checks c against the issuer's node key pub, which the
// caller takes from the issuer's admission on the credential's tier (its
// roster), never from the credential: the signature, that pub is the key
// the statement names, and that now lies between issue (less
// MaxClockSkew) and expiry. The error wraps ErrBadCredential.
func VerifyCredential(c Credential, pub ed25519.PublicKey, now time.Time) error {
	st := c.Statement
	switch {
	case len(pub) != ed25519.PublicKeySize || KeyID(pub) != st.IssuerKey:
		return fmt.Errorf("%w: issued under key %s, not the issuer's admitted key", ErrBadCredential, st.IssuerKey)
	case len(c.sig) != ed25519.SignatureSize || !ed25519.Verify(pub, credentialMessage(c.raw), c.sig):
		return fmt.Errorf("%w: signature does not verify", ErrBadCredential)
	case !now.Before(st.Expires):
		return fmt.Errorf("%w: expired at %s", ErrBadCredential, st.Expires.Format(time.RFC3339))
	case st.Issued.After(now.Add(MaxClockSkew)):
		return fmt.Errorf("%w: issued in the future (%s)", ErrBadCredential, st.Issued.Format(time.RFC3339))
	}
	return nil
}
