package federation

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Sentinel errors that the sync loop branches on. Every one of them means
// the record must not be applied; the first three also mean someone between
// the hub and here is lying, and deserve a security event.
var (
	// ErrBadSignature means the signature does not verify over the record
	// bytes with the key the record names.
	ErrBadSignature = errors.New("bad record signature")
	// ErrUnknownKey means the record names a key this node does not pin.
	ErrUnknownKey = errors.New("record signed by an unpinned key")
	// ErrMalformedRecord means the record bytes are not a valid record,
	// whether or not the signature over them verifies.
	ErrMalformedRecord = errors.New("malformed record")
	// ErrReplay means the record's tier sequence is not past the last one
	// applied.
	ErrReplay = errors.New("replayed record")
	// ErrGap means records between the last applied one and this one are
	// missing.
	ErrGap = errors.New("gap in record sequence")
	// ErrWrongTier means a record or heartbeat of another hub tier came on
	// a link for this one.
	ErrWrongTier = errors.New("record of another hub tier")
)

// FormatVersion is the Record format Sign writes and Open accepts.
const FormatVersion = 1

// MaxRecordSize bounds the record bytes Open will look at. The largest valid
// record (256 CVEs, a 4 KiB description) is well under it; the bound keeps a
// hostile relay from making a node hash and parse megabytes per event.
const MaxRecordSize = 64 << 10

// Record is one event the hub originates, as it signs it.
type Record struct {
	// V is the format version, FormatVersion.
	V int `json:"v"`
	// Key is the KeyID of the signing key.
	Key string `json:"key"`
	// Tier is the hub tier the event concerns.
	Tier string `json:"tier"`
	// TierSeq is the hub's sequence number for Tier: 1, 2, 3… with no gaps,
	// so a downstream detects a replay (≤ last) or a withheld event (a gap).
	TierSeq int64             `json:"tier_seq"`
	Type    catalog.EventType `json:"type"`
	// Patch is the patch as the hub knows it, for patch events; zero for
	// tier and token events. Its Tiers and Withdrawn are state, not signed
	// facts, and are always zero.
	Patch catalog.Patch `json:"patch"`
	// Token is the enrollment token of a token event; nil for every other
	// event. omitempty keeps patch records byte for byte what they were
	// before tokens replicated, so records signed then still verify and
	// decode, and a hub re-signing history writes the same bytes.
	Token *TokenRecord `json:"token,omitempty"`
	// Node is the node of a node event (node.admitted, node.removed); nil
	// for every other event, and then absent from the bytes, as Token is.
	Node *NodeRecord `json:"node,omitempty"`
	// Rollout is the rollout plan and its state after the change, for
	// rollout.changed events; nil, and absent from the bytes, otherwise.
	// Its Tier is the record's Tier.
	Rollout *catalog.Rollout `json:"rollout,omitempty"`
	// Machine is the machine a machine event (machine.revoked,
	// machine.deleted) concerns; nil, and absent from the bytes, for
	// every other event.
	Machine *MachineRecord `json:"machine,omitempty"`
	// Time is when the hub made the change.
	Time time.Time `json:"time"`
}

// TokenRecord is an enrollment (auth) token as the hub signs it, so that
// every node serving the token's tier accepts it for registration. Only
// the secret's hash travels: a node can check the token, never mint it.
// The token's tier is the record's Tier; its kind is always auth, as sync
// and machine tokens belong to the node that issued them.
type TokenRecord struct {
	// ID is the token's public ID, 16 lowercase hex digits.
	ID   string `json:"id"`
	Name string `json:"name"`
	// Hash is SHA-256 of the token's secret part.
	Hash    []byte    `json:"hash"`
	Created time.Time `json:"created"`
	// Expires is zero for a token that never expires.
	Expires time.Time `json:"expires,omitzero"`
	// Revoked is when the hub revoked the token: set on token.revoked
	// events, zero on token.added ones.
	Revoked time.Time `json:"revoked,omitzero"`
	// RevokeMachines, on a token.revoked event, tells every node to revoke
	// the machines registered there with the token. omitempty keeps every
	// other record's bytes as they were; a node of an older release
	// refuses a record that carries it (unknown field), so upgrade the
	// downstreams before revoking a token's machines at the hub.
	RevokeMachines bool `json:"revoke_machines,omitempty"`
}

// NodeRecord is a node the hub admits on the record's tier: its name,
// bound to its node key, and the URLs machines reach it at. A node.removed
// record carries the same name and key with Removed set. It is what a
// machine checks a node against before it sends that node any credential
// (VerifyAdmission, then VerifyHello).
type NodeRecord struct {
	Name string `json:"name"`
	// Key is the node's public key, "ed25519:<base64url>" (FormatPublicKey).
	Key  string   `json:"key"`
	URLs []string `json:"urls"`
	// Admitted is when the hub admitted the node.
	Admitted time.Time `json:"admitted"`
	// Removed is set on node.removed records, zero on node.admitted ones.
	Removed time.Time `json:"removed,omitzero"`
}

// MachineRecord is a machine the hub revoked mesh-wide: every node of
// the record's tier (the hub seals one on every tier) refuses its tokens
// and its registration. A machine.deleted record carries the same ID and
// revocation time with Lifted set: the hub lifted that revocation.
type MachineRecord struct {
	// ID is the machine's ID as nodes store it, 64 lowercase hex digits:
	// an HMAC under the mesh key, the same at every node.
	ID string `json:"id"`
	// Revoked is when the hub revoked the machine.
	Revoked time.Time `json:"revoked"`
	// Lifted is set on machine.deleted records, zero on machine.revoked
	// ones.
	Lifted time.Time `json:"lifted,omitzero"`
}

// CatalogMachine returns the machine revocation r carries as the store
// keeps it, or nil if r carries none: what a SyncedEvent's Machine is.
func (r Record) CatalogMachine() *catalog.MachineRevocation {
	if r.Machine == nil {
		return nil
	}
	return &catalog.MachineRevocation{ID: r.Machine.ID, Revoked: r.Machine.Revoked, Lifted: r.Machine.Lifted}
}

// CatalogNode returns the node r carries as the store keeps it, admitted
// on r's hub tier, or nil if r carries none: what a SyncedEvent's Node is.
func (r Record) CatalogNode() *catalog.Node {
	if r.Node == nil {
		return nil
	}
	n := &catalog.Node{
		Name: r.Node.Name, Key: r.Node.Key, URLs: append([]string(nil), r.Node.URLs...),
		Tiers: []string{r.Tier}, Admitted: r.Node.Admitted, Removed: r.Node.Removed,
	}
	if pub, err := ParsePublicKey(r.Node.Key); err == nil {
		n.KeyID = KeyID(pub)
	}
	return n
}

// CatalogToken returns the token r carries as the store keeps it, an auth
// token of r's hub tier, or nil if r carries none: what a SyncedEvent's
// Token is.
func (r Record) CatalogToken() *catalog.Token {
	if r.Token == nil {
		return nil
	}
	return &catalog.Token{
		ID: r.Token.ID, Kind: catalog.TokenAuth, Tier: r.Tier, Name: r.Token.Name,
		Hash: bytes.Clone(r.Token.Hash), Created: r.Token.Created,
		Expires: r.Token.Expires, Revoked: r.Token.Revoked, RevokeMachines: r.Token.RevokeMachines,
	}
}

// Envelope is a record as it travels: the exact bytes the hub signed, and
// the signature over them. Relays pass it on unchanged. In JSON both fields
// are standard base64.
type Envelope struct {
	Record []byte `json:"record"`
	Sig    []byte `json:"sig"`
}

// Sign encodes r and signs the encoding with priv. It sets r's V and Key,
// zeroes the patch's Tiers and Withdrawn, writes times in UTC, and refuses a
// record that breaks the catalog's rules, so that the hub never signs a
// record its downstreams would refuse.
func Sign(priv ed25519.PrivateKey, r Record) (Envelope, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return Envelope{}, fmt.Errorf("sign: private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	r.V = FormatVersion
	r.Key = KeyID(priv.Public().(ed25519.PublicKey))
	r.Patch.Tiers = nil
	r.Patch.Withdrawn = false
	r.Time = r.Time.UTC()
	if !r.Patch.Created.IsZero() {
		r.Patch.Created = r.Patch.Created.UTC()
	}
	if r.Token != nil {
		// A copy, so signing never changes the caller's token.
		tok := *r.Token
		tok.Created = utc(tok.Created)
		tok.Expires = utc(tok.Expires)
		tok.Revoked = utc(tok.Revoked)
		r.Token = &tok
	}
	if r.Node != nil {
		n := *r.Node
		n.URLs = append([]string(nil), n.URLs...)
		n.Admitted = utc(n.Admitted)
		n.Removed = utc(n.Removed)
		r.Node = &n
	}
	if r.Machine != nil {
		m := *r.Machine
		m.Revoked, m.Lifted = utc(m.Revoked), utc(m.Lifted)
		r.Machine = &m
	}
	if r.Rollout != nil {
		ro := *r.Rollout
		ro.Waves = append([]catalog.Wave(nil), ro.Waves...)
		ro.Opened = make([]time.Time, len(r.Rollout.Opened))
		for i, t := range r.Rollout.Opened {
			ro.Opened[i] = utc(t)
		}
		ro.Created, ro.Updated = utc(ro.Created), utc(ro.Updated)
		r.Rollout = &ro
	}
	if err := r.validate(); err != nil {
		return Envelope{}, fmt.Errorf("sign: %w", err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return Envelope{}, fmt.Errorf("sign: encode: %w", err)
	}
	if len(b) > MaxRecordSize {
		return Envelope{}, fmt.Errorf("sign: record is %d bytes, limit %d", len(b), MaxRecordSize)
	}
	return Envelope{Record: b, Sig: ed25519.Sign(priv, b)}, nil
}

// utc returns t in UTC, and the zero time as it is.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC()
}

// Verifier checks envelopes against the hub keys a node pins.
type Verifier struct {
	keys map[string]ed25519.PublicKey // by KeyID
}

// NewVerifier returns a Verifier that trusts exactly the given keys. Each
// must be ed25519.PublicKeySize bytes, as ParsePublicKey returns them; any
// other length is a programming error and panics.
func NewVerifier(pub ...ed25519.PublicKey) *Verifier {
	v := &Verifier{keys: make(map[string]ed25519.PublicKey, len(pub))}
	for _, p := range pub {
		if len(p) != ed25519.PublicKeySize {
			panic(fmt.Sprintf("federation.NewVerifier: public key is %d bytes, want %d", len(p), ed25519.PublicKeySize))
		}
		v.keys[KeyID(p)] = bytes.Clone(p)
	}
	return v
}

// Open verifies e and returns the record it carries. The error wraps
// ErrUnknownKey if the record names a key v does not pin, ErrBadSignature if
// the signature fails, and ErrMalformedRecord if the bytes are not a valid
// record.
//
// A heartbeat is not a log record: Open refuses one (ErrMalformedRecord),
// so that a relay cannot slip one into a feed page; VerifyHeartbeat reads
// them.
func (v *Verifier) Open(e Envelope) (Record, error) {
	r, err := v.open(e)
	if err != nil {
		return Record{}, err
	}
	if r.Type == TypeHeartbeat {
		return Record{}, fmt.Errorf("%w: a heartbeat is not a log record", ErrMalformedRecord)
	}
	return r, nil
}

// open verifies e and decodes its record, of any type.
func (v *Verifier) open(e Envelope) (Record, error) {
	if len(e.Record) > MaxRecordSize {
		return Record{}, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformedRecord, len(e.Record), MaxRecordSize)
	}
	// The key must be read before the signature can be checked, so this one
	// field is read from unverified bytes. Nothing else is until they verify.
	var head struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(e.Record, &head); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrMalformedRecord, err)
	}
	pub, ok := v.keys[head.Key]
	if !ok {
		return Record{}, fmt.Errorf("%w: key %q", ErrUnknownKey, head.Key)
	}
	if len(e.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, e.Record, e.Sig) {
		return Record{}, fmt.Errorf("%w: key %s", ErrBadSignature, head.Key)
	}
	r, err := decodeRecord(e.Record)
	if err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrMalformedRecord, err)
	}
	if r.Key != head.Key {
		// Cannot happen with encoding/json reading the same bytes twice;
		// checked so a change of decoder can never split the two readings.
		return Record{}, fmt.Errorf("%w: key read twice differs", ErrMalformedRecord)
	}
	if err := r.validate(); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrMalformedRecord, err)
	}
	return r, nil
}

// decodeRecord reads exactly one Record from b, refusing fields the format
// does not have and anything after the record: a hub never writes either,
// so their presence means the bytes were not made by Sign.
func decodeRecord(b []byte) (Record, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var r Record
	if err := dec.Decode(&r); err != nil {
		return Record{}, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Record{}, errors.New("data after the record")
	}
	return r, nil
}

// CheckSequence says whether r is the next record of its tier after the one
// numbered last: a record at or below last is a replay (ErrReplay), one past
// last+1 means records were withheld (ErrGap).
func CheckSequence(last int64, r Record) error {
	switch {
	case r.TierSeq <= last:
		return fmt.Errorf("%w: tier %s record %d, last applied %d", ErrReplay, r.Tier, r.TierSeq, last)
	case r.TierSeq > last+1:
		return fmt.Errorf("%w: tier %s record %d, want %d", ErrGap, r.Tier, r.TierSeq, last+1)
	}
	return nil
}

var keyIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// tokenIDRE is the form of a token ID as auth.NewToken makes it.
var tokenIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// validate checks r against the catalog's rules. Patch events carry a valid
// patch and no token; token events a valid token and no patch; tier events
// neither.
func (r Record) validate() error {
	if r.V != FormatVersion {
		return invalid("v", "format version %d, this node reads %d", r.V, FormatVersion)
	}
	if !keyIDRE.MatchString(r.Key) {
		return invalid("key", "must be a key ID of 16 lowercase hex digits")
	}
	if err := catalog.ValidName("tier", r.Tier); err != nil {
		return err
	}
	if r.Type == TypeHeartbeat {
		return r.validateHeartbeat()
	}
	if r.TierSeq < 1 {
		return invalid("tier_seq", "must be at least 1, got %d", r.TierSeq)
	}
	if r.Time.IsZero() {
		return invalid("time", "must be set")
	}
	if len(r.Patch.Tiers) != 0 || r.Patch.Withdrawn {
		return invalid("patch", "tiers and withdrawn are not signed and must be empty")
	}
	if r.Node != nil && r.Type != catalog.EventNodeAdmitted && r.Type != catalog.EventNodeRemoved {
		return invalid("node", "must be absent for a %s event", r.Type)
	}
	if r.Rollout != nil && r.Type != catalog.EventRolloutChanged {
		return invalid("rollout", "must be absent for a %s event", r.Type)
	}
	if r.Machine != nil && r.Type != catalog.EventMachineRevoked && r.Type != catalog.EventMachineDeleted {
		return invalid("machine", "must be absent for a %s event", r.Type)
	}
	switch r.Type {
	case catalog.EventMachineRevoked, catalog.EventMachineDeleted:
		if r.Token != nil || r.Node != nil || r.Rollout != nil || !patchIsZero(r.Patch) {
			return invalid("machine", "a %s event carries a machine only", r.Type)
		}
		if r.Machine == nil {
			return invalid("machine", "must be set for a %s event", r.Type)
		}
		return r.Machine.validate(r.Type)
	case catalog.EventRolloutChanged:
		if r.Token != nil || r.Node != nil || !patchIsZero(r.Patch) {
			return invalid("rollout", "a %s event carries a rollout only", r.Type)
		}
		if r.Rollout == nil {
			return invalid("rollout", "must be set for a %s event", r.Type)
		}
		if r.Rollout.Tier != r.Tier {
			return invalid("rollout.tier", "is %q, the record's tier is %q", r.Rollout.Tier, r.Tier)
		}
		if err := r.Rollout.Validate(); err != nil {
			var ie *catalog.InvalidError
			if errors.As(err, &ie) {
				return invalid("rollout."+ie.Field, "%s", ie.Message)
			}
			return err
		}
		return nil
	case catalog.EventNodeAdmitted, catalog.EventNodeRemoved:
		if r.Token != nil {
			return invalid("token", "must be absent for a %s event", r.Type)
		}
		if !patchIsZero(r.Patch) {
			return invalid("patch", "must be empty for a %s event", r.Type)
		}
		if r.Node == nil {
			return invalid("node", "must be set for a %s event", r.Type)
		}
		return r.Node.validate(r.Type)
	case catalog.EventPatchAdded, catalog.EventPatchPromoted,
		catalog.EventPatchWithdrawn, catalog.EventPatchRemoved:
		if r.Token != nil {
			return invalid("token", "must be absent for a %s event", r.Type)
		}
		return r.Patch.Validate()
	case catalog.EventTierAdded, catalog.EventTierRemoved:
		if r.Token != nil {
			return invalid("token", "must be absent for a %s event", r.Type)
		}
		if !patchIsZero(r.Patch) {
			return invalid("patch", "must be empty for a %s event", r.Type)
		}
		return nil
	case catalog.EventTokenAdded, catalog.EventTokenRevoked:
		if !patchIsZero(r.Patch) {
			return invalid("patch", "must be empty for a %s event", r.Type)
		}
		if r.Token == nil {
			return invalid("token", "must be set for a %s event", r.Type)
		}
		return r.Token.validate(r.Type)
	default:
		return invalid("type", "unknown event type %q", r.Type)
	}
}

// validate checks a token of an event of type typ: a revocation says when,
// an addition carries a live token.
func (t TokenRecord) validate(typ catalog.EventType) error {
	if !tokenIDRE.MatchString(t.ID) {
		return invalid("token.id", "must be a token ID of 16 lowercase hex digits")
	}
	if err := catalog.ValidName("token.name", t.Name); err != nil {
		return err
	}
	if len(t.Hash) != sha256.Size {
		return invalid("token.hash", "must be a SHA-256 (%d bytes), got %d", sha256.Size, len(t.Hash))
	}
	if t.Created.IsZero() {
		return invalid("token.created", "must be set")
	}
	switch revoked := !t.Revoked.IsZero(); {
	case typ == catalog.EventTokenRevoked && !revoked:
		return invalid("token.revoked", "must be set for a %s event", typ)
	case typ == catalog.EventTokenAdded && revoked:
		return invalid("token.revoked", "must be empty for a %s event", typ)
	case typ == catalog.EventTokenAdded && t.RevokeMachines:
		return invalid("token.revoke_machines", "must be empty for a %s event", typ)
	}
	return nil
}

// validate checks the machine of an event of type typ: a stored machine
// ID, and a lift only on a deletion.
func (m MachineRecord) validate(typ catalog.EventType) error {
	if !machineIDRE.MatchString(m.ID) {
		return invalid("machine.id", "must be a machine ID of 64 lowercase hex digits")
	}
	if m.Revoked.IsZero() {
		return invalid("machine.revoked", "must be set")
	}
	switch lifted := !m.Lifted.IsZero(); {
	case typ == catalog.EventMachineDeleted && !lifted:
		return invalid("machine.lifted", "must be set for a %s event", typ)
	case typ == catalog.EventMachineRevoked && lifted:
		return invalid("machine.lifted", "must be empty for a %s event", typ)
	case lifted && m.Lifted.Before(m.Revoked):
		return invalid("machine.lifted", "must not be before the revocation it lifts")
	}
	return nil
}

// validate checks the node of an event of type typ: a real key, URLs a
// machine may use, and a removal that says when.
func (n NodeRecord) validate(typ catalog.EventType) error {
	pub, err := ParsePublicKey(n.Key)
	if err != nil {
		return invalid("node.key", "%v", err)
	}
	if n.Admitted.IsZero() {
		return invalid("node.admitted", "must be set")
	}
	c := catalog.Node{Name: n.Name, Key: n.Key, KeyID: KeyID(pub), URLs: n.URLs}
	if err := c.Validate(); err != nil {
		var ie *catalog.InvalidError
		if errors.As(err, &ie) {
			return invalid("node."+ie.Field, "%s", ie.Message)
		}
		return err
	}
	switch removed := !n.Removed.IsZero(); {
	case typ == catalog.EventNodeRemoved && !removed:
		return invalid("node.removed", "must be set for a %s event", typ)
	case typ == catalog.EventNodeAdmitted && removed:
		return invalid("node.removed", "must be empty for a %s event", typ)
	}
	return nil
}

// patchIsZero reports whether p carries nothing. An empty list counts as
// none, as JSON may write it either way; reflection keeps a field added to
// Patch later from slipping past.
func patchIsZero(p catalog.Patch) bool {
	if len(p.CVEs) == 0 {
		p.CVEs = nil
	}
	if len(p.Tiers) == 0 {
		p.Tiers = nil
	}
	return reflect.ValueOf(p).IsZero()
}

func invalid(field, format string, args ...any) error {
	return &catalog.InvalidError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Sealer signs a hub's events as they are stored: it is the store.Sealer
// a hub's store is opened with.
type Sealer struct {
	Key ed25519.PrivateKey
}

var _ store.Sealer = Sealer{}

// Seal signs one event, numbered e.TierSeq in its tier's sequence.
func (s Sealer) Seal(e store.SealRequest) (record, sig []byte, err error) {
	r := Record{Tier: e.Tier, TierSeq: e.TierSeq, Type: e.Type, Patch: e.Patch, Time: e.At}
	if t := e.Token; t != nil {
		r.Token = &TokenRecord{ID: t.ID, Name: t.Name, Hash: t.Hash, Created: t.Created, Expires: t.Expires, Revoked: t.Revoked}
		if !t.Revoked.IsZero() {
			r.Token.RevokeMachines = t.RevokeMachines
		}
	}
	if n := e.Node; n != nil {
		r.Node = &NodeRecord{Name: n.Name, Key: n.Key, URLs: n.URLs, Admitted: n.Admitted, Removed: n.Removed}
	}
	r.Rollout = e.Rollout
	if m := e.Machine; m != nil {
		r.Machine = &MachineRecord{ID: m.ID, Revoked: m.Revoked, Lifted: m.Lifted}
	}
	env, err := Sign(s.Key, r)
	if err != nil {
		return nil, nil, err
	}
	return env.Record, env.Sig, nil
}
