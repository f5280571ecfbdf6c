package api

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/patchmesh/patchmesh/auth"
	"github.com/patchmesh/patchmesh/catalog"
	"github.com/patchmesh/patchmesh/store"
)

// Credential kinds of the auth metrics beyond the token kinds.
const (
	kindAdmin   = "admin"
	kindLogin   = "login"
	kindUnknown = "unknown"
)

func authOutcome(err error) string {
	switch {
	case err == nil:
		return authOK
	case errors.Is(err, auth.ErrUnauthenticated):
		return authUnauthenticated
	case errors.Is(err, auth.ErrForbidden):
		return authForbidden
	case errors.Is(err, auth.ErrThrottled), errors.Is(err, auth.ErrBusy):
		return authThrottled
	}
	return authError
}

// bearer authenticates the request's bearer token, which must be one of
// kinds, and records the decision's metrics. auth logs the event.
func (s *server) bearer(r *http.Request, kinds ...catalog.TokenKind) (catalog.Token, error) {
	start := time.Now()
	h := r.Header.Get("Authorization")
	t, err := s.auth.Bearer(r.Context(), h, kinds...)
	kind := string(t.Kind)
	if err != nil {
		kind = claimedKind(h, kinds)
	}
	if err == nil && t.Kind == catalog.TokenSync && s.peer != nil && PeerFrom(r.Context()) == "" {
		// With a peer listener, a tier is fed only to an admitted node:
		// the sync token authorizes the tier, the certificate the node.
		s.securityEvent(r, auth.EventAuthzFail, slog.String("token_id", t.ID), slog.String("kind", kind),
			slog.String("reason", "sync_token_off_peer_listener"))
		t, err = catalog.Token{}, auth.ErrForbidden
	}
	s.metrics.observeAuth(kind, authOutcome(err), time.Since(start))
	return t, err
}

// claimedKind names the kind a refused bearer token claimed by its prefix,
// so that the metrics say what was tried; the label set stays bounded.
func claimedKind(header string, want []catalog.TokenKind) string {
	_, tok, _ := strings.Cut(header, " ")
	tok = strings.TrimLeft(tok, " ")
	if len(tok) > 4 && tok[:2] == "pm" && tok[3] == '_' {
		switch tok[2] {
		case 'a':
			return string(catalog.TokenAuth)
		case 'm':
			return string(catalog.TokenMachine)
		case 's':
			return string(catalog.TokenSync)
		}
	}
	if len(want) == 1 {
		return string(want[0])
	}
	return kindUnknown
}

// admin authenticates the request's admin macaroon. auth logs authz_admin
// with the user; the route and request ID come from the request's context
// through NewLogHandler.
func (s *server) admin(r *http.Request) (string, error) {
	user, _, err := s.adminCredential(r)
	return user, err
}

func (s *server) adminCredential(r *http.Request) (user, tokenID string, err error) {
	start := time.Now()
	user, tokenID, err = s.auth.AdminCredential(r.Context(), r.Header.Get("Authorization"))
	s.metrics.observeAuth(kindAdmin, authOutcome(err), time.Since(start))
	return user, tokenID, err
}

// adminHandler is an admin endpoint: it runs only for an authenticated
// admin, whose name it receives.
type adminHandler func(w http.ResponseWriter, r *http.Request, user string) error

// A request that may change something (any method but GET and HEAD) runs
// under a context carrying its store.Actor, so that every change the store
// commits for it is audited in the change's own transaction.
func (s *server) asAdmin(h adminHandler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		user, tokenID, err := s.adminCredential(r)
		if err != nil {
			return err
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			r = r.WithContext(store.WithActor(r.Context(), actor(r, user, tokenID)))
		}
		return h(w, r, user)
	})
}

// actor describes who asks for an admin change, for the audit trail.
func actor(r *http.Request, user, tokenID string) store.Actor {
	client, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		client = r.RemoteAddr
	}
	action := r.Method + " " + r.URL.Path
	if ri := infoFrom(r.Context()); ri != nil && ri.route != "" {
		action = r.Method + " " + ri.route
	}
	return store.Actor{User: user, TokenID: tokenID, RequestID: RequestID(r.Context()),
		Client: client, Action: action, Target: r.URL.Path}
}

// securityEvent logs a security event through the api's logger, which
// adds the request ID and route.
func (s *server) securityEvent(r *http.Request, code string, attrs ...slog.Attr) {
	auth.SecurityEvent(r.Context(), s.log, code, attrs...)
}
