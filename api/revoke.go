package api

import (
	"log/slog"
	"net/http"
	"regexp"

	"github.com/gorilla/mux"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
)

// revocationRoutes are the admin endpoints that take access back: a
// node's machine tokens, its machines, and an admin's sessions. Enrollment
// and sync tokens are revoked at their own collections (adminRoutes).
func (s *server) revocationRoutes(a *mux.Router) {
	a.Handle("/machine-tokens", methods{http.MethodGet: s.asAdmin(s.listTokens(catalog.TokenMachine))})
	a.Handle("/machine-tokens/{id}", methods{http.MethodDelete: s.asAdmin(s.revokeToken(catalog.TokenMachine))})
	a.Handle("/machines/{id}", methods{http.MethodDelete: s.asAdmin(s.deleteMachine)})
	a.Handle("/machines/{id}/revoke", methods{http.MethodPost: s.asAdmin(s.revokeMachine)})
	a.Handle("/sessions/{user}", methods{http.MethodDelete: s.asAdmin(s.revokeSessions)})
}

// machineIDRE is a stored machine ID: the hex HMAC-SHA256 of the
// machine's own ID (auth.MachineID).
var machineIDRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func validStoredMachineID(id string) error {
	if !machineIDRE.MatchString(id) {
		return invalid("id", "must be a machine ID as listed: 64 lowercase hex digits")
	}
	return nil
}

// revokeMachine revokes a machine and its machine tokens: its next
// request is refused, and it may not register here again until deleted.
func (s *server) revokeMachine(w http.ResponseWriter, r *http.Request, user string) error {
	id, err := pathVar(r, "id", validStoredMachineID)
	if err != nil {
		return err
	}
	m, err := s.store.RevokeMachine(r.Context(), id, s.now())
	if err != nil {
		return err
	}
	s.securityEvent(r, auth.EventMachineRevoked, slog.String("machine_id", id), slog.String("tier", m.Tier),
		slog.String("user", user))
	writeJSON(w, http.StatusOK, m)
	return nil
}

// deleteMachine forgets a machine and deletes its machine tokens; it may
// register again, with an enrollment token or a credential.
func (s *server) deleteMachine(w http.ResponseWriter, r *http.Request, user string) error {
	id, err := pathVar(r, "id", validStoredMachineID)
	if err != nil {
		return err
	}
	if err := s.store.DeleteMachine(r.Context(), id); err != nil {
		return err
	}
	s.securityEvent(r, auth.EventMachineDeleted, slog.String("machine_id", id), slog.String("user", user))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// revokeSessions refuses every macaroon minted for an admin until now, on
// every node sharing this store (logout everywhere). The admin logs in
// again to get a new one; an operator ending their own sessions ends the
// one this request came with too.
func (s *server) revokeSessions(w http.ResponseWriter, r *http.Request, user string) error {
	name, err := pathVar(r, "user", func(n string) error { return catalog.ValidName("user", n) })
	if err != nil {
		return err
	}
	known, err := s.auth.IsAdmin(r.Context(), name)
	if err != nil {
		return err
	}
	if !known {
		return notFound("no admin named " + name)
	}
	if err := s.store.RevokeAdminSessions(r.Context(), name, s.now()); err != nil {
		return err
	}
	s.securityEvent(r, auth.EventSessionsRevoked, slog.String("admin", name), slog.String("user", user))
	w.WriteHeader(http.StatusNoContent)
	return nil
}
