// Package store persists a node's metadata: the catalog, the change log,
// tokens, machines, admin users and macaroon root keys.
//
// Store is the one interface every backend implements; the storetest
// package holds the contract suite each backend must pass. Backends live in
// subpackages (store/sqlstore serves both PostgreSQL and the embedded
// SQLite default). Blob bytes are not here: that is the blob package.
//
// Every method that changes the catalog appends its event(s) to the change
// log in the same transaction, so the log and the catalog can never disagree,
// even across a crash.
package store

import (
	"context"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// PatchFilter narrows a patch listing. Zero fields match everything.
type PatchFilter struct {
	Kernel  string
	Arch    string
	Tier    string
	Version string
	// DigestPrefix keeps patches whose digest starts with it
	// ("sha256:3f2a9c1e").
	DigestPrefix string
	// IncludeWithdrawn lists withdrawn patches too.
	IncludeWithdrawn bool
	// Limit caps the result; 0 means the store's default (1000).
	Limit int
	// After resumes a listing after this patch (the last of the previous
	// page); nil starts at the beginning.
	After *PatchCursor
}

// PatchCursor is a patch's place in the patch listing, which is ordered
// by version (newest first), then kernel, arch and digest, all descending.
type PatchCursor struct {
	Version, Kernel, Arch, Digest string
}

// PatchCursorOf is p's place in the listing.
func PatchCursorOf(p catalog.Patch) *PatchCursor {
	return &PatchCursor{Version: p.Version, Kernel: p.Kernel, Arch: p.Arch, Digest: p.Digest}
}

// MachineFilter narrows a machine listing. Zero fields match everything.
type MachineFilter struct {
	Tier   string
	Kernel string
	State  catalog.MachineState
	// Limit caps the result; 0 means the store's default (1000).
	Limit int
	// After resumes a listing after this machine; nil starts at the
	// beginning.
	After *MachineCursor
}

// MachineCursor is a machine's place in the machine listing: most recently
// seen first, then by ID, descending.
type MachineCursor struct {
	LastSeen time.Time
	ID       string
}

// TokenFilter selects one kind of token, a page at a time.
type TokenFilter struct {
	Kind catalog.TokenKind
	// Limit caps the result; 0 means the store's default (1000).
	Limit int
	// After resumes a listing after this token; nil starts at the
	// beginning.
	After *TokenCursor
}

// TokenCursor is a token's place in the token listing: newest first, then
// by ID, descending.
type TokenCursor struct {
	Created time.Time
	ID      string
}

// RootKey is a macaroon root key. A key mints macaroons until MintUntil and
// is kept to verify them until Expires, then purged.
type RootKey struct {
	ID        string
	Key       []byte
	Created   time.Time
	MintUntil time.Time
	Expires   time.Time
}

// AdminUser is an administrator created by the node itself (the first-start
// admin). Admins from the config file are not stored.
type AdminUser struct {
	Name    string
	Hash    []byte // bcrypt
	Created time.Time
}

// Store is a node's metadata persistence. Methods return errors wrapping
// catalog.ErrNotFound or catalog.ErrConflict where those apply.
type Store interface {
	// Tiers returns every tier in order.
	Tiers(ctx context.Context) ([]catalog.Tier, error)
	// AddTier appends a tier after the last one. ErrConflict if it exists.
	AddTier(ctx context.Context, name string) (catalog.Tier, error)
	// RemoveTier deletes an empty tier. ErrConflict while live tokens or
	// machines belong to it; patches lose their availability on it.
	RemoveTier(ctx context.Context, name string) error

	// AddPatch records a new patch, available on the first tier.
	// ErrConflict if its digest, or its (kernel, arch, version), exists.
	AddPatch(ctx context.Context, p catalog.Patch) (catalog.Patch, error)
	// Patch returns the patch with this digest, withdrawn or not.
	Patch(ctx context.Context, digest string) (catalog.Patch, error)
	// Patches lists patches matching f, newest version first. A listing
	// is paged by index: f.After resumes it where a page ended.
	Patches(ctx context.Context, f PatchFilter) ([]catalog.Patch, error)
	// Newest returns the highest-versioned patch for kernel and arch that is
	// available on tier and not withdrawn. ErrNotFound if there is none.
	Newest(ctx context.Context, tier, kernel, arch string) (catalog.Patch, error)
	// Promote makes the patch available on tier. Promoting to a tier the
	// patch is already on changes nothing and appends no event.
	Promote(ctx context.Context, digest, tier string) (catalog.Patch, error)
	// PromoteAll makes every live patch on from available on to, and
	// returns how many patches changed.
	PromoteAll(ctx context.Context, from, to string) (int, error)
	// Withdraw stops offering the patch on every tier; the record stays.
	// It logs one event per tier the patch is on, in tier order (one with
	// no tier if it is on none), so that every tier's feed is complete.
	Withdraw(ctx context.Context, digest string) (catalog.Patch, error)
	// RemovePatch deletes the patch record, logging one event per tier it
	// was on, in tier order (one with no tier if it was on none).
	RemovePatch(ctx context.Context, digest string) error

	// AddToken stores a new token. ErrConflict if its ID exists;
	// ErrNotFound if its tier does not exist. An enrollment (auth) token
	// is a catalog change: it is logged, and sealed on a hub, so that it
	// reaches every node of its tier.
	AddToken(ctx context.Context, t catalog.Token) error
	// Token returns a token by ID, revoked or not.
	Token(ctx context.Context, id string) (catalog.Token, error)
	// Tokens lists tokens of one kind, newest first, a page at a time.
	Tokens(ctx context.Context, f TokenFilter) ([]catalog.Token, error)
	// RevokeToken marks a token revoked at the given time; for an
	// enrollment token it is a logged (and on a hub, sealed) change.
	RevokeToken(ctx context.Context, kind catalog.TokenKind, id string, at time.Time) error

	// RegisterMachine records (or re-records) a machine with a new machine
	// token, revoking any earlier machine token of the same machine, all in
	// one transaction.
	RegisterMachine(ctx context.Context, m catalog.Machine, t catalog.Token) error
	// Machine returns a machine by its (hashed) ID.
	Machine(ctx context.Context, id string) (catalog.Machine, error)
	// CheckIn stores a machine's report: kernel, arch, state, versions,
	// uptime and LastSeen. ErrNotFound if the machine is not registered.
	CheckIn(ctx context.Context, m catalog.Machine) error
	// Machines lists machines matching f, most recently seen first, a
	// page at a time (f.After).
	Machines(ctx context.Context, f MachineFilter) ([]catalog.Machine, error)

	// Events returns up to limit change-log events with Seq > after, in order.
	Events(ctx context.Context, after int64, limit int) ([]catalog.Event, error)
	// Head returns the highest Seq in the change log, 0 when it is empty.
	Head(ctx context.Context) (int64, error)

	// AddRootKey stores a new macaroon root key.
	AddRootKey(ctx context.Context, k RootKey) error
	// RootKey returns a root key by ID, expired or not.
	RootKey(ctx context.Context, id string) (RootKey, error)
	// MintingRootKey returns the newest key whose MintUntil is after now.
	// ErrNotFound when none is.
	MintingRootKey(ctx context.Context, now time.Time) (RootKey, error)
	// PurgeRootKeys deletes keys whose Expires is at or before now.
	PurgeRootKeys(ctx context.Context, now time.Time) (int, error)

	// AdminUser returns a stored admin by name.
	AdminUser(ctx context.Context, name string) (AdminUser, error)
	// AdminUsers lists stored admins.
	AdminUsers(ctx context.Context) ([]AdminUser, error)
	// AddAdminUser stores an admin. ErrConflict if the name exists.
	AddAdminUser(ctx context.Context, u AdminUser) error

	// Secret returns the node's named secret, creating it from gen on first
	// use. Concurrent first uses agree on one value. Used for the machine-ID
	// HMAC key, so that nodes sharing one database agree on it.
	Secret(ctx context.Context, name string, gen func() ([]byte, error)) ([]byte, error)

	Syncer
	Roster
	Rollouts
	Auditor
	Webhooks
	Fleet
	Revocations

	// Ping checks that the backend answers.
	Ping(ctx context.Context) error
	// Close releases the backend's resources.
	Close() error
}

// Admission is one live admission of a node on a tier, with the hub's
// signed node.admitted record of it.
type Admission struct {
	// Node is the admitted node; its Tiers holds the admission's tier.
	Node catalog.Node
	// Record and Sig are the hub's bytes and signature, as they travel
	// (federation.Envelope); nil for an admission that was never sealed.
	Record []byte
	Sig    []byte
}

// Roster is the part of Store that keeps the nodes the hub admitted. A
// node's admission is a catalog change per tier, like an enrollment
// token: logged, sealed on the hub in the tier's sequence, and applied on
// every downstream by ApplySynced.
type Roster interface {
	// AdmitNode admits n on each of n.Tiers, in that order, logging one
	// node.admitted event per tier (sealed on a hub). A zero Admitted
	// means now. A name live already under the same key and URLs is
	// admitted on the tiers of n.Tiers it lacks; ErrConflict if it lacks
	// none, or is live under another key or URLs (UpdateNode changes
	// URLs); ErrNotFound if a tier does not exist. It returns the node
	// as stored.
	AdmitNode(ctx context.Context, n catalog.Node) (catalog.Node, error)
	// UpdateNode gives the live admission of n.Name n's URLs on every
	// tier it is live on, and admits it on the tiers of n.Tiers it lacks,
	// logging a fresh node.admitted event per tier and nothing else: a
	// downstream replaces the admission as each arrives and never holds
	// the node removed in between. ErrNotFound if n.Name has no live
	// admission; ErrConflict if it is live under another key (a key is
	// changed by removal and a new admission) or nothing would change.
	// It returns the node as stored, Tiers being every tier it is now
	// live on.
	UpdateNode(ctx context.Context, n catalog.Node) (catalog.Node, error)
	// RemoveNode takes back every live admission of the node called
	// name, at at, logging one node.removed event per tier in tier order.
	// ErrNotFound if it has none.
	RemoveNode(ctx context.Context, name string, at time.Time) error
	// Nodes lists every node ever admitted here, by name: Tiers holds the
	// tiers it is live on, in tier order; a node live on none has Removed
	// set.
	Nodes(ctx context.Context) ([]catalog.Node, error)
	// Admissions lists the live admissions on tier, by name.
	Admissions(ctx context.Context, tier string) ([]Admission, error)
}
