package api

import (
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"time"

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

// Scopes of a machine revocation or deletion, as the answer names them.
const (
	// scopeMesh: the hub's, signed on every tier, reaching every node.
	scopeMesh = "mesh"
	// scopeNode: this node's only (and the nodes sharing its database).
	scopeNode = "node"
)

// machineRevocation is the answer to POST /v1/admin/machines/{id}/revoke.
type machineRevocation struct {
	ID    string `json:"id"`
	Scope string `json:"scope"`
	// Revoked is when the machine was revoked (the first time, if it was
	// revoked before).
	Revoked time.Time `json:"revoked"`
	// Tiers are the tiers whose feeds carry the hub's signed revocation;
	// empty for a revocation of this node only.
	Tiers []string `json:"tiers"`
	// Machine is the machine as registered here; absent if it never
	// registered here (the hub revokes IDs it has not seen).
	Machine *catalog.Machine `json:"machine,omitempty"`
	// Note tells the operator how far the revocation reaches.
	Note string `json:"note"`
}

// revokeMachine revokes a machine and its machine tokens: its next
// request is refused, and it may not register again until deleted. At
// the hub the revocation is signed on every tier and every node refuses
// the machine; elsewhere it is this node's only, and the answer says so.
func (s *server) revokeMachine(w http.ResponseWriter, r *http.Request, user string) error {
	id, err := pathVar(r, "id", validStoredMachineID)
	if err != nil {
		return err
	}
	out, err := s.store.RevokeMachine(r.Context(), id, s.now())
	if err != nil {
		return err
	}
	a := machineRevocation{ID: id, Scope: scopeNode, Tiers: []string{}, Machine: out.Machine}
	if out.Mesh {
		a.Scope, a.Revoked, a.Tiers = scopeMesh, out.Revocation.Revoked, out.Tiers
		a.Note = "revoked at every node of the mesh as the hub's signed revocation reaches it: its tokens are refused, " +
			"and it may not register anywhere until deleted at the hub"
	} else {
		a.Revoked = out.Machine.Revoked
		a.Note = "revoked at this node only: revoke it at the hub to refuse it at every node, " +
			"as a machine credential lets it register at the other nodes of its tier"
	}
	tier := ""
	if out.Machine != nil {
		tier = out.Machine.Tier
	}
	s.securityEvent(r, auth.EventMachineRevoked, slog.String("machine_id", id), slog.String("tier", tier),
		slog.String("scope", a.Scope), slog.String("user", user))
	writeJSON(w, http.StatusOK, a)
	return nil
}

// machineDeletion is the answer to DELETE /v1/admin/machines/{id}.
type machineDeletion struct {
	ID    string `json:"id"`
	Scope string `json:"scope"`
	// Forgotten says a machine registered here was forgotten.
	Forgotten bool `json:"forgotten"`
	// Lifted says the deletion lifted the hub's revocation of the machine
	// (on the hub only), on Tiers.
	Lifted bool     `json:"lifted"`
	Tiers  []string `json:"tiers"`
	Note   string   `json:"note"`
}

// deleteMachine forgets a machine and deletes its machine tokens; it may
// register again, with an enrollment token or a credential. At the hub it
// also lifts the hub's revocation of the machine at every node; elsewhere
// a revocation made at the hub still refuses it, and the answer says so.
func (s *server) deleteMachine(w http.ResponseWriter, r *http.Request, user string) error {
	id, err := pathVar(r, "id", validStoredMachineID)
	if err != nil {
		return err
	}
	out, err := s.store.DeleteMachine(r.Context(), id)
	if err != nil {
		return err
	}
	a := machineDeletion{ID: id, Scope: scopeNode, Forgotten: out.Forgotten, Tiers: []string{},
		Note: "forgotten at this node: it may register here again"}
	if out.Lifted != nil {
		a.Scope, a.Lifted, a.Tiers = scopeMesh, true, out.Tiers
		a.Note = "the hub's revocation is lifted at every node as its signed deletion reaches it: the machine may register anywhere again"
	} else if rev, err := s.store.MachineRevocation(r.Context(), id); err == nil && rev.Lifted.IsZero() {
		a.Note = "forgotten at this node, but the hub revoked it: it may not register until deleted at the hub"
	} else if err != nil && !errors.Is(err, catalog.ErrNotFound) {
		return err
	}
	s.securityEvent(r, auth.EventMachineDeleted, slog.String("machine_id", id), slog.String("scope", a.Scope),
		slog.Bool("lifted", a.Lifted), slog.String("user", user))
	writeJSON(w, http.StatusOK, a)
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
