package api

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/gorilla/mux"
)

// The dashboard is a few static files embedded in the binary and a handful
// of /v1/dashboard endpoints. The page reads only those endpoints, and they
// carry the bodies of documented ones (GET /v1/topology, GET
// /v1/sync/status, the patch listing) plus what the node works out for the
// page (which nodes hold each patch), so that nothing it shows comes from
// undocumented data (docs/api.md, "Dashboard").
//
// A browser authenticates with the admin macaroon kept in an HttpOnly
// cookie. The cookie is accepted by the /v1/dashboard endpoints only: the
// GET reads, and POSTs that pass the CSRF check. The rest of the API never
// reads it, so a cookie cannot authorize anything else, cross-site or not.

//go:embed dashboard
var dashboardFiles embed.FS

// DashboardConfig tunes the web dashboard.
type DashboardConfig struct {
	// PublicRead lets visitors without a login read the dashboard's
	// view (topology, sync status, patches). Off by default: the view is
	// admin data.
	PublicRead bool
	// PeerClient asks other nodes whether they hold a patch's blob (HEAD
	// /v1/peer/blobs). Nil means a client with a short timeout.
	PeerClient *http.Client
}

// Cookie and header names.
const (
	sessionCookie = "patchmesh_session"
	csrfCookie    = "patchmesh_csrf"
	csrfHeader    = "X-CSRF-Token"
)

// Security events of the dashboard, besides those auth logs for the
// macaroon and the login.
const (
	eventCSRFFail        = "csrf_fail"
	eventDashboardLogout = "dashboard_logout"
)

// contentSecurityPolicy allows nothing from outside the node and no inline
// script or style: the page is self-contained.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// dashboardRoutes registers the page and its endpoints. The event stream
// goes on root, outside the governor: a stream lasts as long as the page is
// open and must not hold a request slot, and operators must see an
// overloaded node (it has its own cap, maxDashboardStreams).
func (s *server) dashboardRoutes(root *mux.Router) {
	// The node's bare address opens the dashboard too: it is where an
	// operator pointing a browser at a node will look first.
	root.Handle("/", methods{http.MethodGet: s.handle(s.dashboardAsset)})
	root.Handle("/dashboard/", methods{http.MethodGet: s.handle(s.dashboardAsset)})
	root.Handle("/dashboard/{file}", methods{http.MethodGet: s.handle(s.dashboardAsset)})
	root.Handle("/v1/dashboard/events", methods{http.MethodGet: s.handle(s.dashboardEvents)})
}

// dashboardAPIRoutes are the dashboard's short requests, under the
// governor like the rest of /v1.
func (s *server) dashboardAPIRoutes(v1 *mux.Router) {
	v1.Handle("/dashboard/session", methods{http.MethodGet: s.handle(s.dashboardSession)})
	v1.Handle("/dashboard/login", methods{http.MethodPost: s.handle(s.dashboardLogin)})
	v1.Handle("/dashboard/logout", methods{http.MethodPost: s.handle(s.dashboardLogout)})
	v1.Handle("/dashboard/snapshot", methods{http.MethodGet: s.handle(s.dashboardSnapshotGet)})
}

// dashboardAsset serves an embedded file with the page's security headers.
func (s *server) dashboardAsset(w http.ResponseWriter, r *http.Request) error {
	name := mux.Vars(r)["file"]
	if name == "" {
		name = "index.html"
	}
	if strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return notFound("no such dashboard file")
	}
	b, err := fs.ReadFile(dashboardFiles, "dashboard/"+name)
	if errors.Is(err, fs.ErrNotExist) {
		return notFound("no such dashboard file")
	}
	if err != nil {
		return err
	}
	h := w.Header()
	securityHeaders(h)
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	h.Set("Content-Type", ctype)
	// The files change with the binary: revalidate rather than keep a
	// stale page after an upgrade.
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	return nil
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}

// sessionBody is the answer of GET /v1/dashboard/session.
type sessionBody struct {
	// User is the admin the session cookie names; "" without a valid one.
	User          string `json:"user"`
	Authenticated bool   `json:"authenticated"`
	// PublicRead says the view may be read without logging in.
	PublicRead bool `json:"public_read"`
	// CSRF is the token to send as X-CSRF-Token with every POST of the
	// dashboard.
	CSRF string `json:"csrf"`
}

// dashboardSession tells the page who it is and hands it the CSRF token,
// setting the CSRF cookie the token must match.
func (s *server) dashboardSession(w http.ResponseWriter, r *http.Request) error {
	token := ""
	if c, err := r.Cookie(csrfCookie); err == nil && validCSRFToken(c.Value) {
		token = c.Value
	} else {
		var err error
		if token, err = s.setCSRF(w, r); err != nil {
			return err
		}
	}
	body := sessionBody{PublicRead: s.dashCfg.PublicRead, CSRF: token}
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		if user, err := s.cookieAdmin(r, c.Value); err == nil {
			body.User, body.Authenticated = user, true
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, body)
	return nil
}

// setCSRF sets a fresh CSRF cookie and returns its token.
func (s *server) setCSRF(w http.ResponseWriter, r *http.Request) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{
		Name: csrfCookie, Value: token, Path: "/",
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	return token, nil
}

func validCSRFToken(t string) bool {
	b, err := base64.RawURLEncoding.DecodeString(t)
	return err == nil && len(b) == 32
}

// checkCSRF refuses a state-changing dashboard request unless it comes
// from the node's own page: the X-CSRF-Token header must equal the CSRF
// cookie (which another site can neither read nor set, and which a
// cross-site request does not carry, SameSite=Strict), and the browser's
// Origin and Sec-Fetch-Site, when sent, must name this origin.
func (s *server) checkCSRF(r *http.Request) error {
	reason := ""
	switch site := r.Header.Get("Sec-Fetch-Site"); {
	case site != "" && site != "same-origin":
		reason = "cross_site"
	case !sameOrigin(r):
		reason = "origin"
	default:
		c, err := r.Cookie(csrfCookie)
		h := r.Header.Get(csrfHeader)
		switch {
		case err != nil || c.Value == "":
			reason = "no_cookie"
		case h == "":
			reason = "no_header"
		case subtle.ConstantTimeCompare([]byte(c.Value), []byte(h)) != 1:
			reason = "mismatch"
		}
	}
	if reason == "" {
		return nil
	}
	s.securityEvent(r, eventCSRFFail, slog.String("reason", reason))
	return &httpError{http.StatusForbidden, codeForbidden, "CSRF check failed: reload the dashboard and try again"}
}

// sameOrigin says the request's Origin, if any, is this node as the
// browser reached it.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true // not a browser's cross-origin request; the token decides
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return u.Scheme == scheme && strings.EqualFold(u.Host, r.Host)
}

type loginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// dashboardLogin checks the CSRF token, then the admin's password as POST
// /v1/admin/login does, and keeps the macaroon in an HttpOnly cookie the
// page's script cannot read. The CSRF token is replaced, so a token known
// before the login is worth nothing after it.
func (s *server) dashboardLogin(w http.ResponseWriter, r *http.Request) error {
	if err := s.checkCSRF(r); err != nil {
		return err
	}
	var req loginRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	start := time.Now()
	mac, expires, err := s.auth.Login(r.Context(), req.User, req.Password)
	s.metrics.observeAuth(kindLogin, authOutcome(err), time.Since(start))
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: mac, Path: "/", Expires: expires,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	token, err := s.setCSRF(w, r)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, sessionBody{User: req.User, Authenticated: true, PublicRead: s.dashCfg.PublicRead, CSRF: token})
	return nil
}

// dashboardLogout checks the CSRF token and drops the session cookie. The
// macaroon itself stays valid until it expires, as every macaroon does;
// the browser no longer holds it.
func (s *server) dashboardLogout(w http.ResponseWriter, r *http.Request) error {
	if err := s.checkCSRF(r); err != nil {
		return err
	}
	attrs := []slog.Attr{}
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		if user, err := s.cookieAdmin(r, c.Value); err == nil {
			attrs = append(attrs, slog.String("user", user))
		}
	}
	s.securityEvent(r, eventDashboardLogout, attrs...)
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// cookieAdmin checks a session cookie's macaroon as the Authorization
// header's would be checked; auth logs the decision.
func (s *server) cookieAdmin(r *http.Request, mac string) (string, error) {
	start := time.Now()
	user, err := s.auth.Admin(r.Context(), "Macaroon "+mac)
	s.metrics.observeAuth(kindAdmin, authOutcome(err), time.Since(start))
	return user, err
}

// dashboardViewer authorizes a dashboard read: an admin macaroon in the
// Authorization header or the session cookie, or nobody when public reads
// are on. It answers the admin's name, "" for an anonymous reader.
func (s *server) dashboardViewer(r *http.Request) (string, error) {
	if r.Header.Get("Authorization") != "" {
		return s.admin(r)
	}
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		user, err := s.cookieAdmin(r, c.Value)
		if err == nil || !s.dashCfg.PublicRead {
			return user, err
		}
	}
	if s.dashCfg.PublicRead {
		return "", nil
	}
	// No credential: s.admin logs the refusal as every other one is.
	return s.admin(r)
}
