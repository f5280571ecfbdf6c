package auth

import "context"

// Security event codes of revocations. Each is logged by the api once the
// store has committed the revocation, so the event never names a
// revocation that did not happen.
const (
	// An operator revoked a machine: its machine tokens are refused from
	// the next request, and it may not register again until deleted.
	EventMachineRevoked = "machine_revoked"
	// An operator deleted a machine: its tokens are gone, it may register
	// again.
	EventMachineDeleted = "machine_deleted"
	// An operator ended every session (macaroon) of an admin.
	EventSessionsRevoked = "admin_sessions_revoked"
)

// IsAdmin reports whether name is an admin, configured or stored: whose
// sessions an operator may revoke.
func (a *Authenticator) IsAdmin(ctx context.Context, name string) (bool, error) {
	_, ok, err := a.adminHash(ctx, name)
	return ok, err
}
