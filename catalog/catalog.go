// Package catalog owns patchmesh's domain: patches, tiers, tokens, machines
// and the change log, with the rules that every value must satisfy.
//
// It holds no state and does no I/O: persistence is the store package's job,
// serving is the api package's. Everything here is plain values and checks,
// so every layer above can share one definition of what is valid.
package catalog

import (
	"encoding/json"
	"errors"
	"time"
)

// Sentinel errors that callers branch on. Stores wrap them with context.
var (
	// ErrNotFound means the named record does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means the change collides with an existing record
	// (a duplicate name or digest, or a record still in use).
	ErrConflict = errors.New("conflict")
	// ErrRevoked means the record was revoked and the change it asks for
	// is refused for that reason (a revoked machine registering again).
	ErrRevoked = errors.New("revoked")
)

// Patch is one kernel live-patch file and what is known about it.
type Patch struct {
	// Digest is the content address of the file, "sha256:<64 hex>".
	Digest string `json:"digest"`
	// Kernel is the kernel release the patch applies to, as the machine
	// identifies its running kernel (ValidKernel's grammar): on Ubuntu
	// ABI.BUILD-FLAVOUR, e.g. "5.15.0-107.117-generic", elsewhere
	// `uname -r`, e.g. "6.1.0-18-amd64".
	Kernel string `json:"kernel"`
	// Arch is the machine architecture, e.g. "x86_64".
	Arch string `json:"arch"`
	// Version rises with every patch for one kernel, e.g. "107.1".
	Version string `json:"version"`
	// Size is the file's length in bytes.
	Size int64 `json:"size"`
	// CVEs lists the vulnerabilities the patch fixes.
	CVEs []string `json:"cves"`
	// Description is free text for operators.
	Description string `json:"description"`
	// Created is when the patch entered the catalog.
	Created time.Time `json:"created"`
	// Tiers are the tiers the patch is available on, in tier order.
	Tiers []string `json:"tiers"`
	// Withdrawn patches are kept for the record but offered to no one.
	Withdrawn bool `json:"withdrawn"`
}

// Tier is a named release channel. Tiers are ordered: a new patch lands on
// the first, and promotion moves it towards the last.
type Tier struct {
	Name     string    `json:"name"`
	Position int       `json:"position"`
	Created  time.Time `json:"created"`
}

// DefaultTiers are created by the first migration, in this order.
var DefaultTiers = []string{"edge", "beta", "candidate", "stable"}

// TokenKind says what a token lets its bearer do.
type TokenKind string

const (
	// TokenAuth lets a machine register on the token's tier.
	TokenAuth TokenKind = "auth"
	// TokenMachine is issued to a registered machine at registration.
	TokenMachine TokenKind = "machine"
	// TokenSync lets a downstream node pull the token's tier.
	TokenSync TokenKind = "sync"
)

// Token is the stored half of a bearer token. The secret itself is shown
// once at creation and never stored: only its SHA-256 is.
type Token struct {
	// ID is the public, non-secret part of the token, used to list and revoke.
	ID   string    `json:"id"`
	Kind TokenKind `json:"kind"`
	Tier string    `json:"tier"`
	// Name is the operator's label (or, for machine tokens, the machine ID).
	Name string `json:"name"`
	// Hash is SHA-256 of the secret part.
	Hash    []byte    `json:"-"`
	Created time.Time `json:"created"`
	// Expires is zero for a token that never expires.
	Expires time.Time `json:"expires,omitzero"`
	// Revoked is zero for a live token.
	Revoked time.Time `json:"revoked,omitzero"`
	// MachineID is set on machine tokens: the machine they were issued to.
	MachineID string `json:"machine_id,omitempty"`
	// RevokeMachines is set on a revoked enrollment (auth) token whose
	// revocation also revoked the machines registered with it, on every
	// node the hub's signed revocation reaches.
	RevokeMachines bool `json:"revoke_machines,omitempty"`
}

// Live reports whether the token may be used at now.
func (t Token) Live(now time.Time) bool {
	if !t.Revoked.IsZero() {
		return false
	}
	return t.Expires.IsZero() || now.Before(t.Expires)
}

// MachineState is what a machine last reported about its patch.
type MachineState string

// The states a client may report, as the seed server knows them.
const (
	StateApplied               MachineState = "applied"
	StateApplyFailed           MachineState = "apply-failed"
	StateUnapplied             MachineState = "unapplied"
	StateNeedsCheck            MachineState = "needs-check"
	StateNothingToApply        MachineState = "nothing-to-apply"
	StateUnknown               MachineState = "unknown"
	StateCheckFailed           MachineState = "check-failed"
	StateAppliedWithBug        MachineState = "applied-with-bug"
	StateKernelUpgradeRequired MachineState = "kernel-upgrade-required"
)

// MachineStates lists every valid MachineState.
var MachineStates = []MachineState{
	StateApplied, StateApplyFailed, StateUnapplied, StateNeedsCheck,
	StateNothingToApply, StateUnknown, StateCheckFailed, StateAppliedWithBug,
	StateKernelUpgradeRequired,
}

// Machine is a registered client and its last report.
type Machine struct {
	// ID is the hex HMAC-SHA256 of the machine's own ID: the raw machine ID
	// is never stored.
	ID            string       `json:"id"`
	Tier          string       `json:"tier"`
	Kernel        string       `json:"kernel"`
	Arch          string       `json:"arch"`
	State         MachineState `json:"state"`
	PatchVersion  string       `json:"patch_version"`
	ClientVersion string       `json:"client_version"`
	// UptimeSeconds is the machine's uptime at its last check-in.
	UptimeSeconds int64     `json:"uptime_seconds"`
	Registered    time.Time `json:"registered"`
	LastSeen      time.Time `json:"last_seen"`
	// EnrolledBy is the ID of the enrollment (auth) token the machine last
	// registered with at this node; empty when it registered with a
	// machine credential.
	EnrolledBy string `json:"enrolled_by,omitempty"`
	// Revoked is when an operator revoked the machine (or the enrollment
	// token that registered it, with its machines); zero while it may use
	// the node. A revoked machine may not register here again until it is
	// deleted.
	Revoked time.Time `json:"revoked,omitzero"`
}

// EventType names a kind of catalog change.
type EventType string

// The catalog changes that enter the change log.
const (
	EventPatchAdded     EventType = "patch.added"
	EventPatchPromoted  EventType = "patch.promoted"
	EventPatchWithdrawn EventType = "patch.withdrawn"
	EventPatchRemoved   EventType = "patch.removed"
	EventTierAdded      EventType = "tier.added"
	EventTierRemoved    EventType = "tier.removed"
	// Token events log the creation and revocation of enrollment (auth)
	// tokens, so the hub can replicate them to every node serving their
	// tier. Their Data is the Token, which never carries its Hash.
	EventTokenAdded   EventType = "token.added"
	EventTokenRevoked EventType = "token.revoked"
	// Node events log the hub admitting a node (its name, key and URLs)
	// on a tier, and taking that admission back, so that every node of
	// the tier can tell machines which nodes they may use. Their Data is
	// the Node.
	EventNodeAdmitted EventType = "node.admitted"
	EventNodeRemoved  EventType = "node.removed"
	// Machine events log the hub revoking a machine mesh-wide, and
	// deleting it there, which lifts that revocation. The hub seals one
	// on every tier, as a machine may register at any node of its tier
	// and the hub need not know which. Their Data is the
	// MachineRevocation.
	EventMachineRevoked EventType = "machine.revoked"
	EventMachineDeleted EventType = "machine.deleted"
)

// MachineRevocation is the hub's mesh-wide word on one machine ID: every
// node refuses the machine's tokens and its registration from Revoked
// until the hub lifts the revocation.
type MachineRevocation struct {
	// ID is the machine's ID as nodes store it (Machine.ID), the same at
	// every node of the mesh.
	ID string `json:"id"`
	// Revoked is when the hub revoked the machine.
	Revoked time.Time `json:"revoked"`
	// Lifted is when the hub deleted the machine after revoking it at
	// Revoked; zero while the revocation stands.
	Lifted time.Time `json:"lifted,omitzero"`
}

// Node is a patchmesh node the hub admitted: a name bound to a node key,
// with the URLs machines reach it at. A machine uses a node only while an
// admission of it, signed by the hub, is live for the machine's tier.
type Node struct {
	// Name is the node's name in the mesh (its node.name).
	Name string `json:"name"`
	// Key is the node's public key, "ed25519:<base64url>"; KeyID names it.
	Key string `json:"key"`
	// KeyID is the ID of Key, as records name keys (16 hex digits).
	KeyID string `json:"key_id"`
	// URLs are the node's API base URLs for machines (http or https).
	URLs []string `json:"urls"`
	// Tiers are the tiers the node is admitted on (live admissions).
	Tiers []string `json:"tiers"`
	// Admitted is when the hub admitted it.
	Admitted time.Time `json:"admitted"`
	// Removed is when the hub took the admission back; zero while live.
	Removed time.Time `json:"removed,omitzero"`
}

// MaxNodeURLs bounds the URLs one admission carries.
const MaxNodeURLs = 8

// Event is one entry of a node's change log. Seq is the node's own sequence
// number: it rises by one per event and is never reused.
type Event struct {
	Seq  int64     `json:"seq"`
	Type EventType `json:"type"`
	// Tier is the tier the event concerns: the tier a patch landed on or was
	// promoted to, withdrawn or removed from (one event per tier), or the
	// tier added or removed. Empty only for the withdrawal or removal of a
	// patch that was on no tier.
	Tier string `json:"tier,omitempty"`
	// Digest is the patch concerned, if any.
	Digest string `json:"digest,omitempty"`
	// Data is the event's record: for patch events the Patch as it stood
	// after the change.
	Data    json.RawMessage `json:"data,omitempty"`
	Created time.Time       `json:"created"`
}

// EventRolloutChanged logs a rollout plan's creation and every change of
// its state (a wave opened, halted, resumed, completed, aborted). Its Data
// is the Rollout as it stands after the change; on the hub it is sealed,
// so every node of the tier enforces the same signed state.
const EventRolloutChanged EventType = "rollout.changed"
