package api_test

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/auth"
)

// TestLoginThrottleAnswers429AndNamesTheClient: failed logins from one
// client (named by a trusted proxy's X-Forwarded-For) are delayed with 429,
// Retry-After and the JSON envelope, while an admin elsewhere still logs
// in; the client's address is on the request log and the security events,
// and the typed unknown name is not logged.
func TestLoginThrottleAnswers429AndNamesTheClient(t *testing.T) {
	hash, err := auth.HashPassword(adminPassword, 4)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *api.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		c.Auth = auth.New(c.Store, auth.Config{
			Admins: []auth.Admin{{Name: adminUser, PasswordHash: hash}}, BcryptCost: 4,
			Login: auth.LoginLimits{FreeFailures: 1, LockoutAfter: 3, Delay: time.Hour, MaxDelay: time.Hour},
		}, c.Log)
	})
	const attacker, typed = "203.0.113.5", "mallory-typed-this"
	login := func(user, pass, from string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/admin/login", nil)
		req.SetBasicAuth(user, pass)
		req.Header.Set("X-Forwarded-For", from)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	steps := []struct {
		name, user, pass, from string
		status                 int
		retryAfter             string
	}{
		{"first failure", typed, "wrong-password-1", attacker, 401, ""},
		{"second failure sets a delay", typed, "wrong-password-2", attacker, 401, ""},
		{"delayed", typed, "wrong-password-3", attacker, 429, "3600"},
		{"the right password from the delayed client", adminUser, adminPassword, attacker, 429, "3600"},
		{"an admin elsewhere", adminUser, adminPassword, "198.51.100.2", 200, ""},
	}
	for _, s := range steps {
		resp := login(s.user, s.pass, s.from)
		if resp.StatusCode != s.status || resp.Header.Get("Retry-After") != s.retryAfter {
			t.Fatalf("%s: want %d with Retry-After %q, got %d with %q", s.name, s.status, s.retryAfter,
				resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	r := e.request(http.MethodPost, "/v1/admin/login", "", nil, "Authorization", "Basic bWFsbG9yeTp4eHh4", "X-Forwarded-For", attacker)
	if r.StatusCode != http.StatusTooManyRequests || r.errCode() != "too_many_requests" {
		t.Fatalf("want 429 too_many_requests in the envelope, got %d %s", r.StatusCode, r.body)
	}
	var events, requests int
	for _, l := range e.logs.lines(t) {
		if l["client"] != attacker {
			continue
		}
		switch l["msg"] {
		case "security event":
			events++
		case "request":
			requests++
		}
	}
	if events < 5 || requests < 5 {
		t.Errorf("want the attacker's address on >=5 security events and request lines, got %d and %d", events, requests)
	}
	if strings.Contains(e.logs.String(), typed) {
		t.Errorf("the typed unknown user name reached the log")
	}
}
