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
	// revoked machine keeps the first time. ErrNotFound if it is not
	// registered here.
	// It returns the machine as it stands after.
	RevokeMachine(ctx context.Context, id string, at time.Time) (catalog.Machine, error)
	// DeleteMachine forgets the machine and deletes its machine tokens;
	// it may register again. ErrNotFound if it is not registered here.
	DeleteMachine(ctx context.Context, id string) error
	// RevokeAdminSessions refuses, from now on, every admin macaroon
	// minted for user at or before at (logout everywhere). A later call
	// moves the bound forward, never back.
	RevokeAdminSessions(ctx context.Context, user string, at time.Time) error
	// AdminSessionsNotBefore is the bound RevokeAdminSessions set for
	// user: macaroons minted at or before it are refused. Zero if none.
	AdminSessionsNotBefore(ctx context.Context, user string) (time.Time, error)
}
