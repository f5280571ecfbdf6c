package federation

import (
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/patchmesh/patchmesh/catalog"
)

// The wire format of the machine-facing answers that carry the hub's
// signatures (docs/api.md, "Client API"). A machine trusts none of a
// node's own fields: it verifies the envelopes against the hub keys it
// pins, and reads what it acts on out of the signed records.

// Offer is the body of GET /v1/client/patch.
type Offer struct {
	// Patch is the serving node's record of the patch: hints for display,
	// and the answer older clients read. Nothing the machine acts on comes
	// from here.
	catalog.Patch
	// Signed is the hub-signed patch.added or patch.promoted record that
	// put the patch on the machine's hub tier, as the node logged it; nil
	// when the node holds none (a patch published unsigned).
	Signed *Envelope `json:"signed,omitempty"`
	// Withdrawal is, when the machine said which patch it applied and that
	// patch is not the one offered, the hub-signed patch.withdrawn or
	// patch.removed record of the applied patch on the machine's tier: the
	// proof a machine needs before it accepts an older patch.
	Withdrawal *Envelope `json:"withdrawal,omitempty"`
	// Endorsements are hub key endorsements (see Endorsement), so that a
	// machine pinning an older hub key learns the one that signs now.
	Endorsements []Envelope `json:"endorsements,omitempty"`
	// Heartbeat is the newest hub heartbeat of the machine's tier the node
	// holds (TypeHeartbeat), so that a machine can tell a fresh offer from
	// a stale one; nil when the node holds none. The same envelope travels
	// in HeartbeatHeader, which the 404 "nothing to offer" answer carries
	// too.
	Heartbeat *Envelope `json:"heartbeat,omitempty"`
}

// HeartbeatHeader carries the heartbeat on every answer of GET
// /v1/client/patch, 404 included: EncodeHeartbeatHeader's form.
const HeartbeatHeader = "Patchmesh-Heartbeat"

// EncodeHeartbeatHeader is e as HeartbeatHeader carries it: the base64url
// (unpadded) record, a dot, and the base64url signature.
func EncodeHeartbeatHeader(e Envelope) string {
	return base64.RawURLEncoding.EncodeToString(e.Record) + "." + base64.RawURLEncoding.EncodeToString(e.Sig)
}

// maxHeartbeatHeader bounds the header a machine decodes; a real one is
// about 250 bytes.
const maxHeartbeatHeader = 2048

// DecodeHeartbeatHeader reads HeartbeatHeader's value. It checks only the
// form: the envelope is verified like any other (Verifier.VerifyHeartbeat).
func DecodeHeartbeatHeader(v string) (Envelope, error) {
	if len(v) > maxHeartbeatHeader {
		return Envelope{}, fmt.Errorf("%s: longer than %d bytes", HeartbeatHeader, maxHeartbeatHeader)
	}
	rec, sig, ok := strings.Cut(v, ".")
	if !ok {
		return Envelope{}, fmt.Errorf("%s: no signature part", HeartbeatHeader)
	}
	r, err := base64.RawURLEncoding.DecodeString(rec)
	if err != nil {
		return Envelope{}, fmt.Errorf("%s: record: %w", HeartbeatHeader, err)
	}
	s, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return Envelope{}, fmt.Errorf("%s: signature: %w", HeartbeatHeader, err)
	}
	return Envelope{Record: r, Sig: s}, nil
}

// Enrollment is what POST /v1/client/register adds to its answer for the
// machine to verify its tier by.
type Enrollment struct {
	// TokenRecord is the hub-signed token.added record of the enrollment
	// token the machine registered with; its Tier is the machine's hub
	// tier. Nil when the node holds none (a token made on this node, not at
	// the hub).
	TokenRecord *Envelope `json:"token_record,omitempty"`
	// Endorsements are as in Offer.
	Endorsements []Envelope `json:"endorsements,omitempty"`
}
