package api_test

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/api"
)

// TestStrictEdgesAnswerInTheEnvelope: duplicate keys, bodies of another
// type, unclean paths, unknown paths and methods are all refused in the
// JSON error envelope, and a refused body changes nothing.
func TestStrictEdgesAnswerInTheEnvelope(t *testing.T) {
	e := newEnv(t)
	before := e.snapshot()
	cases := []struct {
		name, method, path, body, ctype string
		status                          int
		code                            string
	}{
		{"duplicate key", "POST", "/v1/admin/tiers", `{"name":"lab","name":"prod"}`, "application/json", 400, "bad_request"},
		{"duplicate key differing in case", "POST", "/v1/admin/tiers", `{"name":"lab","NAME":"prod"}`, "application/json", 400, "bad_request"},
		{"duplicate key nested", "POST", "/v1/admin/webhooks", `{"url":"https://h.example/","events":["node.down"],"secret":"0123456789abcdef0123","x":{"a":1,"a":2}}`, "application/json", 400, "bad_request"},
		{"text body", "POST", "/v1/admin/tiers", `{"name":"lab"}`, "text/plain", 415, "unsupported_media_type"},
		{"form body", "POST", "/v1/admin/tiers", `name=lab`, "application/x-www-form-urlencoded", 415, "unsupported_media_type"},
		{"malformed type", "POST", "/v1/admin/tiers", `{"name":"lab"}`, "application/", 415, "unsupported_media_type"},
		{"double slash", "GET", "/v1//admin/tiers", "", "", 404, "not_found"},
		{"leading double slash", "GET", "//v1/admin/tiers", "", "", 404, "not_found"},
		{"dot segment", "GET", "/v1/admin/./tiers", "", "", 404, "not_found"},
		{"dot-dot segment", "GET", "/v1/client/../admin/tiers", "", "", 404, "not_found"},
		{"unknown path", "GET", "/v1/nothing-here", "", "", 404, "not_found"},
		{"wrong method", "PUT", "/v1/admin/tiers", "", "", 405, "method_not_allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var hdr []string
			if c.ctype != "" {
				hdr = []string{"Content-Type", c.ctype}
			}
			var body any
			if c.body != "" {
				body = c.body
			}
			r := e.request(c.method, c.path, e.admin, body, hdr...)
			if r.StatusCode != c.status || r.errCode() != c.code || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
				t.Fatalf("want %d %s in the JSON envelope, got %d %q %s", c.status, c.code, r.StatusCode, r.Header.Get("Content-Type"), r.body)
			}
		})
	}
	e.unchanged("refused edges", before)
	// JSON with parameters is JSON.
	e.want(e.request("POST", "/v1/admin/tiers", e.admin, `{"name":"lab"}`, "Content-Type", "application/json; charset=utf-8"), http.StatusCreated, nil)
}

// TestMetricsToken: with a metrics token configured, /metrics answers only
// the scraper that sends it; the refusal is in the envelope and logged.
func TestMetricsToken(t *testing.T) {
	const token = "metrics-scrape-token-0123456789"
	e := newEnv(t, func(c *api.Config) { c.MetricsToken = token })
	e.keep(token)
	cases := []struct {
		name, authz string
		status      int
	}{
		{"none", "", 401},
		{"wrong", "Bearer not-the-metrics-token", 401},
		{"other scheme", "Basic " + token, 401},
		{"right", "Bearer " + token, 200},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.request("GET", "/metrics", c.authz, nil)
			if r.StatusCode != c.status {
				t.Fatalf("want %d, got %d %s", c.status, r.StatusCode, r.body)
			}
			if c.status == 401 && r.errCode() != "unauthorized" {
				t.Errorf("want the unauthorized envelope, got %s", r.body)
			}
		})
	}
	var events int
	for _, l := range e.logs.lines(t) {
		if l["event"] == "authn_token_fail" && l["kind"] == "metrics" {
			events++
		}
	}
	if events != 3 {
		t.Errorf("want 3 metrics refusals logged, got %d", events)
	}
}

// TestAdminNetworks: with admin networks configured, the admin API (login
// included) and the dashboard's endpoints refuse other clients with 403
// and a security event; client endpoints are unaffected.
func TestAdminNetworks(t *testing.T) {
	e := newEnv(t, func(c *api.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		c.AdminNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
	})
	cases := []struct {
		name, path, from string
		status           int
	}{
		{"admin from an admin network", "/v1/admin/tiers", "10.1.2.3", 200},
		{"admin from elsewhere", "/v1/admin/tiers", "203.0.113.9", 403},
		{"login from elsewhere", "/v1/admin/login", "203.0.113.9", 403},
		{"dashboard from elsewhere", "/v1/dashboard/session", "203.0.113.9", 403},
		{"client endpoint from elsewhere", "/v1/client/nodes", "203.0.113.9", 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method := "GET"
			if strings.HasSuffix(c.path, "/login") {
				method = "POST"
			}
			r := e.request(method, c.path, e.admin, nil, "X-Forwarded-For", c.from)
			if r.StatusCode != c.status {
				t.Fatalf("want %d, got %d %s", c.status, r.StatusCode, r.body)
			}
			if c.status == 403 && r.errCode() != "forbidden" {
				t.Errorf("want the forbidden envelope, got %s", r.body)
			}
		})
	}
	var events int
	for _, l := range e.logs.lines(t) {
		if l["event"] == "authz_fail" && l["reason"] == "admin_network" && l["client"] == "203.0.113.9" {
			events++
		}
	}
	if events != 3 {
		t.Errorf("want 3 admin_network refusals logged with the client, got %d", events)
	}
}
