// Package federation owns how patchmesh nodes cascade from the hub: the
// hub's signing key and the signed record format, the hub's per-tier
// heartbeats, node identity (node keys, admissions, hellos, machine
// credentials, the node TLS certificates and their pinning against the
// admissions, the signed join's token and MACs), the change feed's wire
// format, the sync loop that pulls, verifies and applies each link, which
// records a relay lists as pending while their blobs still arrive
// (cut-through), and the sync policy that depends on who is in the mesh
// (Mesh: failover health, the data centre's peer group and its designated
// fetcher, which member news starts a round), read through the small
// Membership interface. It does not own storage (store, blob), serving
// (api), blob transfer (replicate) or gossip itself (topology).
//
// # Signed records
//
// Patches enter the mesh at the hub only. The hub signs every event it
// originates — a new patch, a promotion, a withdrawal, a removal, and the
// creation or revocation of an enrollment token, so that machines can
// register at any node of their tier — as a Record, and every node below
// verifies it against the hub keys it pins.
//
// Exact bytes, not a canonical form. The hub encodes a Record once, with
// encoding/json of the fixed Record struct, and signs those bytes; the
// Envelope carries the bytes themselves next to the signature. Every node
// after that verifies and forwards the same bytes and never re-encodes them.
// So no two implementations, Go versions or field orders ever have to agree
// on a canonical encoding: there is nothing to canonicalise, the hub's
// encoding is the canonical one by definition. Verification reads only bytes
// already proven to come from the hub; Open decodes them strictly (unknown
// fields and trailing data refused) and checks the catalog's rules, so a
// record that verifies but would not have been signed by a correct hub is
// refused too.
//
// Per-tier contiguous sequences. Each Record carries the hub's own sequence
// number for its tier, TierSeq, inside the signature: 1, 2, 3… with no gaps.
// A downstream sees exactly one tier (its sync token's), so it can require
// each record to be last+1 (CheckSequence): a lower or equal number is a
// replay of an old event, a higher one means an event was withheld — for
// instance a withdrawal a relay would rather hide. Because the sequence is
// per tier, a tier's stream stays contiguous whatever happens on the other
// tiers. An event that concerns several tiers (withdrawing a patch that is on
// two tiers) is therefore signed once per tier, each record in its tier's
// sequence.
//
// What a relay can and cannot do. A relay stores and forwards envelopes and
// numbers them in its own change log, outside the signature, for its own
// downstreams' cursors. It cannot invent or alter a record (the signature
// fails), move a record to another tier (the tier is signed), replay an old
// one (TierSeq is not last+1) or silently drop one (the next record leaves a
// gap). It can still delay or stop forwarding altogether; the hub's signed
// heartbeat (heartbeat.go) bounds how long that goes unseen. Nor can it
// make a downstream pass a patch by: a feed entry marked skip is passed by
// only with the hub's signed withdrawal or removal that explains it.
//
// Fields of a Patch that are state rather than fact — the tiers it is on and
// whether it is withdrawn — are not signed: Sign zeroes them, Open refuses a
// record that carries them, and a downstream derives them from the sequence
// of events instead.
//
// # Node identity
//
// Every node has an ed25519 identity key (LoadOrCreateNodeKey, the same
// file rules as the hub key); its ID is KeyID. The hub admits a node by
// signing a node.admitted Record (NodeRecord: name, key, URLs) per tier,
// carried and verified like any other record. VerifyAdmission,
// VerifyHello and VerifyCredential are the checks a machine (or another
// node) runs before it trusts a node: the hub admitted this name with this
// key, the node at this address holds that key now, and a machine
// credential was issued by an admitted node. Each node-key signature is
// over a message starting with its own context line, so none can be
// passed off as another.
//
// # Keys
//
// The hub's key is ed25519, kept in a PEM PKCS#8 file of mode 0600 that
// LoadOrCreateKey makes on first start. Records name the key that signed
// them by KeyID, so a downstream can pin several keys at once: rotation pins
// the new public key on every downstream first, then switches the hub to the
// new private key. Dropping the old pin makes every record it signed
// unverifiable, including for a fresh downstream replaying a tier's history
// from the start, so the old pin stays until that history is re-signed; the
// full procedure belongs with the sync loop.
package federation
