package api_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/api"
)

// dashSession is a browser's state: its cookies and the CSRF token the
// page was handed.
type dashSession struct {
	csrf    string
	cookies map[string]string
}

func (d *dashSession) cookieHeader() string {
	var parts []string
	for k, v := range d.cookies {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, "; ")
}

func (d *dashSession) take(r response) {
	for _, c := range r.Cookies() {
		if c.MaxAge < 0 {
			delete(d.cookies, c.Name)
			continue
		}
		d.cookies[c.Name] = c.Value
	}
}

// dashOpen is a page opening: GET /v1/dashboard/session.
func (e *env) dashOpen() *dashSession {
	e.t.Helper()
	d := &dashSession{cookies: map[string]string{}}
	r := e.request(http.MethodGet, "/v1/dashboard/session", "", nil)
	var s struct{ CSRF string }
	e.want(r, http.StatusOK, &s)
	d.take(r)
	if s.CSRF == "" || d.cookies["patchmesh_csrf"] != s.CSRF {
		e.t.Fatalf("session: token %q, CSRF cookie %q; want the same token in both", s.CSRF, d.cookies["patchmesh_csrf"])
	}
	d.csrf = s.CSRF
	return d
}

func (e *env) dashLogin(d *dashSession) response {
	e.t.Helper()
	r := e.request(http.MethodPost, "/v1/dashboard/login", "", map[string]string{"user": adminUser, "password": adminPassword},
		"Cookie", d.cookieHeader(), "X-CSRF-Token", d.csrf, "Content-Type", "application/json")
	d.take(r)
	if mac := d.cookies["patchmesh_session"]; mac != "" {
		e.keep(mac)
	}
	var s struct{ CSRF string }
	if r.StatusCode == http.StatusOK && json.Unmarshal(r.body, &s) == nil {
		d.csrf = s.CSRF
	}
	return r
}

func TestDashboardLoginKeepsTheMacaroonInAStrictHttpOnlyCookie(t *testing.T) {
	e := newEnv(t)
	d := e.dashOpen()
	before := d.csrf
	r := e.dashLogin(d)
	e.want(r, http.StatusOK, nil)
	var session *http.Cookie
	for _, c := range r.Cookies() {
		if c.Name == "patchmesh_session" {
			session = c
		}
	}
	if session == nil || session.Value == "" {
		t.Fatalf("login set no session cookie: %v", r.Header["Set-Cookie"])
	}
	if !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/" || session.Secure {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/ and, without TLS, not Secure", session)
	}
	if d.csrf == before || d.cookies["patchmesh_csrf"] != d.csrf {
		t.Errorf("login kept the CSRF token of before the login (%q → %q, cookie %q); want a new one in both", before, d.csrf, d.cookies["patchmesh_csrf"])
	}
	var s struct {
		User          string
		Authenticated bool
	}
	e.want(e.request(http.MethodGet, "/v1/dashboard/session", "", nil, "Cookie", d.cookieHeader()), http.StatusOK, &s)
	if !s.Authenticated || s.User != adminUser {
		t.Errorf("session after login = %+v, want %s authenticated", s, adminUser)
	}
	e.want(e.request(http.MethodGet, "/v1/dashboard/snapshot", "", nil, "Cookie", d.cookieHeader()), http.StatusOK, nil)

	// Logout drops the cookie; the page then reads nothing.
	r = e.request(http.MethodPost, "/v1/dashboard/logout", "", nil, "Cookie", d.cookieHeader(), "X-CSRF-Token", d.csrf)
	e.want(r, http.StatusNoContent, nil)
	d.take(r)
	if _, ok := d.cookies["patchmesh_session"]; ok {
		t.Errorf("logout left the session cookie: %v", r.Header["Set-Cookie"])
	}
	e.want(e.request(http.MethodGet, "/v1/dashboard/snapshot", "", nil, "Cookie", d.cookieHeader()), http.StatusUnauthorized, nil)
}

func TestDashboardRefusesRequestsThatFailTheCSRFCheck(t *testing.T) {
	tests := []struct {
		name, reason string
		hdr          func(d *dashSession) []string
	}{
		{"no token", "no_header", func(d *dashSession) []string { return []string{"Cookie", d.cookieHeader()} }},
		{"wrong token", "mismatch", func(d *dashSession) []string {
			return []string{"Cookie", d.cookieHeader(), "X-CSRF-Token", strings.Repeat("A", 43)}
		}},
		{"no cookie", "no_cookie", func(d *dashSession) []string { return []string{"X-CSRF-Token", d.csrf} }},
		{"another site's origin", "origin", func(d *dashSession) []string {
			return []string{"Cookie", d.cookieHeader(), "X-CSRF-Token", d.csrf, "Origin", "https://evil.example"}
		}},
		{"a cross-site fetch", "cross_site", func(d *dashSession) []string {
			return []string{"Cookie", d.cookieHeader(), "X-CSRF-Token", d.csrf, "Sec-Fetch-Site", "cross-site"}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			d := e.dashOpen()
			for _, path := range []string{"/v1/dashboard/login", "/v1/dashboard/logout"} {
				r := e.request(http.MethodPost, path, "", map[string]string{"user": adminUser, "password": adminPassword}, tc.hdr(d)...)
				e.want(r, http.StatusForbidden, nil)
				if r.errCode() != "forbidden" {
					t.Errorf("%s: error code %q, want forbidden", path, r.errCode())
				}
				for _, c := range r.Cookies() {
					if c.Name == "patchmesh_session" {
						t.Errorf("%s refused for CSRF but set the session cookie", path)
					}
				}
			}
			n := 0
			for _, l := range e.logs.lines(t) {
				if l["event"] == "csrf_fail" && l["reason"] == tc.reason {
					n++
				}
			}
			if n != 2 {
				t.Errorf("want 2 csrf_fail security events with reason %s, got %d", tc.reason, n)
			}
			// The same-origin page with its token gets in.
			e.want(e.dashLogin(d), http.StatusOK, nil)
		})
	}
}

func TestTheSessionCookieAuthorizesNothingOutsideTheDashboard(t *testing.T) {
	e := newEnv(t)
	d := e.dashOpen()
	e.want(e.dashLogin(d), http.StatusOK, nil)
	hdr := []string{"Cookie", d.cookieHeader(), "X-CSRF-Token", d.csrf, "Content-Type", "application/json"}
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, "/v1/admin/tiers", nil},
		{http.MethodPost, "/v1/admin/tiers", map[string]string{"name": "lab"}},
		{http.MethodGet, "/v1/topology", nil},
		{http.MethodGet, "/v1/sync/status", nil},
		{http.MethodPost, "/v1/admin/storage/refresh", nil},
	} {
		r := e.request(c.method, c.path, "", c.body, hdr...)
		if r.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s with the session cookie and CSRF token: status %d, want 401", c.method, c.path, r.StatusCode)
		}
	}
	var tiers struct{ Tiers []struct{ Name string } }
	e.want(e.request(http.MethodGet, "/v1/admin/tiers", e.admin, nil), http.StatusOK, &tiers)
	for _, tr := range tiers.Tiers {
		if tr.Name == "lab" {
			t.Error("a POST authorized by the cookie created a tier")
		}
	}
}

func TestDashboardReadsNeedALoginUnlessPublicReadIsOn(t *testing.T) {
	for _, public := range []bool{false, true} {
		e := newEnv(t, func(c *api.Config) { c.Dashboard.PublicRead = public })
		want := http.StatusUnauthorized
		if public {
			want = http.StatusOK
		}
		for _, path := range []string{"/v1/dashboard/snapshot", "/v1/dashboard/events?limit=1"} {
			r := e.request(http.MethodGet, path, "", nil)
			if r.StatusCode != want {
				t.Errorf("public_read %v: GET %s without login: status %d, want %d", public, path, r.StatusCode, want)
			}
		}
		var v api.DashboardView
		e.want(e.request(http.MethodGet, "/v1/dashboard/snapshot", e.admin, nil), http.StatusOK, &v)
		if v.User != adminUser {
			t.Errorf("public_read %v: snapshot with the admin macaroon names user %q, want %s", public, v.User, adminUser)
		}
		// POSTs stay closed whatever public_read says.
		r := e.request(http.MethodPost, "/v1/dashboard/logout", "", nil)
		if r.StatusCode != http.StatusForbidden {
			t.Errorf("public_read %v: logout without a CSRF token: status %d, want 403", public, r.StatusCode)
		}
	}
}

// inlineCode finds what the CSP forbids in the page: scripts without src,
// style elements and style attributes, event handler attributes.
var inlineCode = regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>\s*[^<\s]|<script>|<style|\sstyle=|\son[a-z]+=`)

func TestDashboardPageIsSelfContainedUnderAStrictCSP(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ path, ctype string }{
		{"/dashboard/", "text/html"}, {"/dashboard/app.js", "javascript"}, {"/dashboard/app.css", "text/css"},
	} {
		r := e.request(http.MethodGet, tc.path, "", nil)
		e.want(r, http.StatusOK, nil)
		csp := r.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe") {
			t.Errorf("%s: Content-Security-Policy %q, want default-src 'self' and nothing unsafe", tc.path, csp)
		}
		if !strings.Contains(r.Header.Get("Content-Type"), tc.ctype) {
			t.Errorf("%s: Content-Type %q, want %s", tc.path, r.Header.Get("Content-Type"), tc.ctype)
		}
		if r.Header.Get("X-Content-Type-Options") != "nosniff" || r.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: headers %v, want nosniff and DENY", tc.path, r.Header)
		}
		if tc.ctype == "text/html" {
			if m := inlineCode.FindString(string(r.body)); m != "" {
				t.Errorf("%s holds inline code the CSP would block: %q", tc.path, m)
			}
			if strings.Contains(string(r.body), "http://") || strings.Contains(string(r.body), "https://") {
				t.Errorf("%s names an outside address; every asset must come from the node", tc.path)
			}
		}
	}
	for _, path := range []string{"/dashboard/nothing.js", "/dashboard/..%2fapi.go", "/dashboard/.hidden"} {
		if r := e.request(http.MethodGet, path, "", nil); r.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", path, r.StatusCode)
		}
	}
}

func TestDashboardEventsStreamTheView(t *testing.T) {
	e := newEnv(t)
	p := e.upload(content(1000, "dash"), "107.1")
	r := e.request(http.MethodGet, "/v1/dashboard/events?limit=2", e.admin, nil)
	e.want(r, http.StatusOK, nil)
	if ct := r.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	var views []api.DashboardView
	sc := bufio.NewScanner(strings.NewReader(string(r.body)))
	sc.Buffer(nil, 1<<20)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if event != "view" {
				t.Errorf("data of event %q, want view", event)
			}
			var v api.DashboardView
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &v); err != nil {
				t.Fatalf("event data: %v", err)
			}
			views = append(views, v)
		}
	}
	if len(views) != 2 {
		t.Fatalf("limit=2 streamed %d views, want 2:\n%s", len(views), r.body)
	}
	v := views[1]
	if v.Node.Name != "node-a" || v.Topology.Self != "node-a" || len(v.Topology.Nodes) != 1 || v.Storage.Blobs != 1 {
		t.Errorf("view = %+v, want node-a alone with one blob", v)
	}
	if len(v.Patches) != 1 || v.Patches[0].Digest != p.Digest || v.Patches[0].Held != 1 || v.Patches[0].Expected != 1 ||
		v.Patches[0].Holders[0].State != "held" {
		t.Errorf("patches = %+v, want %s held by node-a, the one node expected", v.Patches, p.Digest)
	}
	if len(v.Unavailable) != 0 {
		t.Errorf("unavailable = %v, want none", v.Unavailable)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x"} {
		r := e.request(http.MethodGet, "/v1/dashboard/events?"+q, e.admin, nil)
		if r.StatusCode != http.StatusBadRequest || r.errField() != "limit" {
			t.Errorf("events?%s: status %d field %q, want 400 on limit", q, r.StatusCode, r.errField())
		}
	}
}

func TestDashboardCookiesAreSecureUnderTLS(t *testing.T) {
	e := newEnv(t)
	d := e.dashOpen()
	body := strings.NewReader(`{"user":"` + adminUser + `","password":"` + adminPassword + `"}`)
	// A request that reached the node over TLS, as the node's TLS listener
	// hands it to the handler.
	req := httptest.NewRequest(http.MethodPost, "https://node.example/v1/dashboard/login", body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Cookie", d.cookieHeader())
	req.Header.Set("X-CSRF-Token", d.csrf)
	req.Header.Set("Origin", "https://node.example")
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("login over TLS: status %d, want 200: %s", rec.Code, rec.Body)
	}
	n := 0
	for _, c := range rec.Result().Cookies() {
		if c.Name == "patchmesh_session" {
			e.keep(c.Value)
		}
		if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
			t.Errorf("cookie %s over TLS: %+v, want Secure, HttpOnly, SameSite=Strict", c.Name, c)
		}
		n++
	}
	if n != 2 {
		t.Errorf("login over TLS set %d cookies, want the session and a new CSRF token", n)
	}
	// Plain http from a TLS page's origin is another origin.
	req = httptest.NewRequest(http.MethodPost, "http://node.example/v1/dashboard/logout", nil)
	req.Header.Set("Cookie", d.cookieHeader())
	req.Header.Set("X-CSRF-Token", d.csrf)
	req.Header.Set("Origin", "https://node.example")
	rec = httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Errorf("logout over http with an https Origin: status %d, want 403", rec.Code)
	}
}
