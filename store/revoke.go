package store

import (
	"context"
	"time"

	"github.com/patchmesh/patchmesh/catalog"
)

// Revocations is the part of Store that takes access back: machines,
// the machines an enrollment token registered, and admin sessions. Every
// method takes effect in one transaction, so a credential it refuses is
// refused by the next request that reads the store; a cache of verified
// credentials must drop what these methods change (every one of them
// writes tokens.revoked_us, deletes a token, or revokes sessions).
type Revocations interface {
	// RevokeEnrollment revokes the enrollment (auth) token id at at, as
	// RevokeToken does, and with machines also every machine registered
	// here with it (RevokeMachine), in one transaction. The token's
	// revocation records machines (catalog.Token.RevokeMachines), so the
	// hub's signed token.revoked record makes every node revoke the
	// machines it registered with the token too. Revoking a revoked token
	// with machines, when its revocation did not take them, takes them
	// now and logs the revocation again. It returns the IDs of the
	// machines revoked here. ErrNotFound if there is no such auth token.
	RevokeEnrollment(ctx context.Context, id string, at time.Time, machines bool) ([]string, error)
	// RevokeMachine revokes the machine and every live machine token of
	// it at at. The machine stays listed, revoked, and RegisterMachine
	// refuses it (catalog.ErrRevoked) until it is deleted. Revoking a
	// revoked machine keeps the first time.
	//
	// On the hub (a store with a Sealer) the revocation is mesh-wide: it
	// is recorded by ID whether or not the machine registered here, and
	// sealed as a machine.revoked event on every tier, in the same
	// transaction, so that every node refuses the machine's tokens and
	// its registration by enrollment token or credential. Revoking again
	// seals it again (reaching tiers added since), keeping the first time.
	// Off the hub it is this node's alone, and ErrNotFound if the machine
	// is not registered here.
	RevokeMachine(ctx context.Context, id string, at time.Time) (MachineRevoked, error)
	// DeleteMachine forgets the machine and deletes its machine tokens;
	// it may register here again unless a hub revocation still stands.
	// On the hub, deleting a machine revoked there also lifts that
	// revocation, with a machine.deleted event on every tier that makes
	// every node forget the machine it revoked, so that it may register
	// anywhere again. ErrNotFound if there is nothing to delete: no
	// machine registered here, nor (on the hub) a standing revocation.
	DeleteMachine(ctx context.Context, id string) (MachineDeleted, error)
	// MachineRevocation is the hub's word on machine ID as this node
	// holds it; ErrNotFound if it holds none.
	MachineRevocation(ctx context.Context, id string) (catalog.MachineRevocation, error)
	// RevokeAdminSessions refuses, from now on, every admin macaroon
	// minted for user at or before at (logout everywhere). A later call
	// moves the bound forward, never back.
	RevokeAdminSessions(ctx context.Context, user string, at time.Time) error
	// AdminSessionsNotBefore is the bound RevokeAdminSessions set for
	// user: macaroons minted at or before it are refused. Zero if none.
	AdminSessionsNotBefore(ctx context.Context, user string) (time.Time, error)
}

// MachineRevoked is what RevokeMachine did.
type MachineRevoked struct {
	// Machine is the machine as registered here after the revocation;
	// nil if it is not (only on the hub, which revokes IDs it never saw).
	Machine *catalog.Machine
	// Mesh says the revocation is the hub's and travels the feed; false
	// when it is this node's only.
	Mesh bool
	// Revocation is the mesh-wide revocation as recorded; zero off the
	// hub.
	Revocation catalog.MachineRevocation
	// Tiers are the tiers whose feeds carry it, in order; none off the
	// hub.
	Tiers []string
}

// MachineDeleted is what DeleteMachine did.
type MachineDeleted struct {
	// Forgotten says a machine registered here was forgotten.
	Forgotten bool
	// Lifted is the hub revocation the deletion lifted, on every tier
	// (Tiers); nil if it lifted none.
	Lifted *catalog.MachineRevocation
	Tiers  []string
}
