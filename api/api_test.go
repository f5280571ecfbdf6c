package api_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/patchmesh/patchmesh/api"
	"github.com/patchmesh/patchmesh/blob"
	"github.com/patchmesh/patchmesh/catalog"
)

func TestRequestIDIsEchoedOrGenerated(t *testing.T) {
	e := newEnv(t)
	hexID := regexp.MustCompile(`^[0-9a-f]{24}$`)
	for _, tc := range []struct {
		name, sent string
		echoed     bool
	}{
		{"safe client ID is kept", "client-42.retry_1", true},
		{"no ID gets a fresh one", "", false},
		{"ID with a space is replaced", "bad id", false},
		{"ID with a newline is replaced", "a\u2028b", false},
		{"65-character ID is replaced", strings.Repeat("a", 65), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.sent != "" {
				hdr = []string{api.RequestIDHeader, tc.sent}
			}
			for _, path := range []string{"/debug/info", "/v1/admin/tiers"} { // a success and a 401
				r := e.request(http.MethodGet, path, "", nil, hdr...)
				got := r.Header.Get(api.RequestIDHeader)
				if tc.echoed && got != tc.sent {
					t.Errorf("GET %s: X-Request-ID %q, want the client's %q", path, got, tc.sent)
				}
				if !tc.echoed && !hexID.MatchString(got) {
					t.Errorf("GET %s: X-Request-ID %q, want a generated 24-hex ID", path, got)
				}
			}
		})
	}
}

func TestAccessLogLineHasRouteTemplateAndNoSecrets(t *testing.T) {
	e := newEnv(t)
	p := e.upload(content(100, "log"), "1.1")
	r := e.request(http.MethodGet, "/v1/admin/patches/"+p.Digest, e.admin, nil, api.RequestIDHeader, "trace-me")
	e.want(r, http.StatusOK, nil)
	var found map[string]any
	for _, l := range e.logs.lines(t) {
		if l["msg"] == "request" && l["request_id"] == "trace-me" {
			found = l
		}
	}
	if found == nil {
		t.Fatalf("no access log line with request_id trace-me; log:\n%s", e.logs.String())
	}
	want := map[string]any{"method": "GET", "route": "/v1/admin/patches/{digest}", "status": float64(200),
		"bytes": float64(len(r.body))}
	for k, v := range want {
		if found[k] != v {
			t.Errorf("access log %s = %v, want %v", k, found[k], v)
		}
	}
	if _, ok := found["duration"]; !ok {
		t.Errorf("access log line %v has no duration", found)
	}
	// authz_admin is logged by auth; through NewLogHandler it carries the
	// request ID and route too.
	var authz bool
	for _, l := range e.logs.lines(t) {
		if l["event"] == "authz_admin" && l["request_id"] == "trace-me" {
			authz = l["user"] == adminUser && l["route"] == "/v1/admin/patches/{digest}"
		}
	}
	if !authz {
		t.Errorf("no authz_admin event with user %q and route for request trace-me; log:\n%s", adminUser, e.logs.String())
	}
	if strings.Contains(e.logs.String(), "Macaroon ") || strings.Contains(e.logs.String(), "Authorization") {
		t.Errorf("log mentions the Authorization header; want it never logged")
	}
	if strings.Contains(e.logs.String(), "fixes things") {
		t.Errorf("log contains the upload's query; want query strings never logged")
	}
}

func TestUnknownPathIs404AndWrongMethodIs405(t *testing.T) {
	e := newEnv(t)
	r := e.request(http.MethodGet, "/v1/nope", e.admin, nil)
	if r.StatusCode != http.StatusNotFound || r.errCode() != "not_found" {
		t.Errorf("unknown path: %d %s, want 404 not_found", r.StatusCode, r.body)
	}
	r = e.request(http.MethodPut, "/v1/admin/tiers", e.admin, nil)
	if r.StatusCode != http.StatusMethodNotAllowed || r.errCode() != "method_not_allowed" {
		t.Errorf("PUT /v1/admin/tiers: %d %s, want 405 method_not_allowed", r.StatusCode, r.body)
	}
}

func TestAdminCredentialsRejected(t *testing.T) {
	e := newEnv(t)
	at, _ := e.token("auth", "edge", "fleet")
	for _, tc := range []struct {
		name, authz string
	}{
		{"no header", ""},
		{"bearer token", "Bearer " + at},
		{"garbage macaroon", "Macaroon bm90IGEgbWFjYXJvb24"},
		{"tampered macaroon", e.admin[:len(e.admin)-4] + "AAAA"},
		{"basic credentials", "Basic cm9vdDpjb3JyZWN0LWhvcnNlLWJhdHRlcnk="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshot()
			r := e.request(http.MethodPost, "/v1/admin/tiers", tc.authz, map[string]string{"name": "canary"})
			if r.StatusCode != http.StatusUnauthorized || r.errCode() != "unauthorized" {
				t.Errorf("status %d %s, want 401 unauthorized", r.StatusCode, r.body)
			}
			if got := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Macaroon") {
				t.Errorf("WWW-Authenticate %q, want the Macaroon scheme", got)
			}
			e.unchanged("a refused admin request", before)
		})
	}
}

func TestExpiredMacaroonIsRefused(t *testing.T) {
	e := newEnv(t)
	e.want(e.request(http.MethodGet, "/v1/admin/tiers", e.admin, nil), http.StatusOK, nil)
	e.clock.Advance(241 * time.Hour)
	r := e.request(http.MethodGet, "/v1/admin/tiers", e.admin, nil)
	if r.StatusCode != http.StatusUnauthorized {
		t.Errorf("macaroon after 241h: status %d, want 401", r.StatusCode)
	}
}

func TestLoginMintsMacaroonOnlyForTheRightPassword(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name       string
		user, pass string
		basic      bool
		status     int
	}{
		{"right password", adminUser, adminPassword, true, 200},
		{"wrong password", adminUser, "wrong-password-123", true, 401},
		{"unknown user", "nobody", adminPassword, true, 401},
		{"no credentials", "", "", false, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/admin/login", nil)
			if tc.basic {
				req.SetBasicAuth(tc.user, tc.pass)
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("WWW-Authenticate %q, want Basic", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

func TestTiersAddListRemoveAndRefuseBadInput(t *testing.T) {
	e := newEnv(t)
	var created catalog.Tier
	e.want(e.request(http.MethodPost, "/v1/admin/tiers", e.admin, map[string]string{"name": "canary"}), http.StatusCreated, &created)
	if created.Name != "canary" || created.Position != 5 {
		t.Errorf("created %+v, want canary at position 5", created)
	}
	var list struct{ Tiers []catalog.Tier }
	e.want(e.request(http.MethodGet, "/v1/admin/tiers", e.admin, nil), http.StatusOK, &list)
	var names []string
	for _, tr := range list.Tiers {
		names = append(names, tr.Name)
	}
	if got := strings.Join(names, ","); got != "edge,beta,candidate,stable,canary" {
		t.Errorf("tiers %s, want edge,beta,candidate,stable,canary", got)
	}
	e.token("auth", "canary", "uses-canary")

	for _, tc := range []struct {
		name         string
		method, path string
		body         any
		status       int
		code, field  string
	}{
		{"duplicate", "POST", "/v1/admin/tiers", map[string]string{"name": "edge"}, 409, "conflict", ""},
		{"invalid name", "POST", "/v1/admin/tiers", map[string]string{"name": "Bad Name"}, 400, "invalid_input", "name"},
		{"unknown field", "POST", "/v1/admin/tiers", `{"name":"x","colour":"red"}`, 400, "bad_request", ""},
		{"malformed JSON", "POST", "/v1/admin/tiers", `{"name":`, 400, "bad_request", ""},
		{"trailing data", "POST", "/v1/admin/tiers", `{"name":"x"} {"name":"y"}`, 400, "bad_request", ""},
		{"missing body", "POST", "/v1/admin/tiers", nil, 400, "bad_request", ""},
		{"oversized body", "POST", "/v1/admin/tiers", `{"name":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "too_large", ""},
		{"remove tier in use", "DELETE", "/v1/admin/tiers/canary", nil, 409, "conflict", ""},
		{"remove unknown tier", "DELETE", "/v1/admin/tiers/nope", nil, 404, "not_found", ""},
		{"remove invalid name", "DELETE", "/v1/admin/tiers/BAD", nil, 400, "invalid_input", "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshot()
			r := e.request(tc.method, tc.path, e.admin, tc.body)
			if r.StatusCode != tc.status || r.errCode() != tc.code || r.errField() != tc.field {
				t.Errorf("%d %s, want %d %s field %q", r.StatusCode, r.body, tc.status, tc.code, tc.field)
			}
			e.unchanged(tc.name, before)
		})
	}

	e.want(e.request(http.MethodPost, "/v1/admin/tiers", e.admin, map[string]string{"name": "spare"}), http.StatusCreated, nil)
	e.want(e.request(http.MethodDelete, "/v1/admin/tiers/spare", e.admin, nil), http.StatusNoContent, nil)
}

func TestTokensShownOnceAndRevokedOnlyThroughTheirKind(t *testing.T) {
	e := newEnv(t)
	for _, kind := range []string{"auth", "sync"} {
		t.Run(kind, func(t *testing.T) {
			var out struct {
				Token string        `json:"token"`
				Info  catalog.Token `json:"info"`
			}
			until := e.clock.Now().Add(48 * time.Hour)
			e.want(e.request(http.MethodPost, "/v1/admin/"+kind+"-tokens", e.admin,
				map[string]any{"tier": "beta", "name": "dc-east", "valid_until": until}), http.StatusCreated, &out)
			e.keep(out.Token)
			prefix := "pm" + kind[:1] + "_" + out.Info.ID + "_"
			if !strings.HasPrefix(out.Token, prefix) || out.Info.Tier != "beta" || out.Info.Name != "dc-east" ||
				string(out.Info.Kind) != kind || !out.Info.Expires.Equal(until) {
				t.Errorf("created %q %+v, want token %s… on beta named dc-east expiring %v", out.Token, out.Info, prefix, until)
			}
			r := e.request(http.MethodGet, "/v1/admin/"+kind+"-tokens", e.admin, nil)
			var list struct{ Tokens []map[string]any }
			e.want(r, http.StatusOK, &list)
			if len(list.Tokens) != 1 || list.Tokens[0]["id"] != out.Info.ID {
				t.Errorf("list %s, want the one token %s", r.body, out.Info.ID)
			}
			if strings.Contains(string(r.body), out.Token[len(prefix):]) || strings.Contains(string(r.body), "hash") {
				t.Errorf("token list %s shows the secret or its hash", r.body)
			}
			var created bool
			for _, l := range e.logs.lines(t) {
				if l["event"] == "token_created" && l["token_id"] == out.Info.ID {
					created = l["kind"] == kind && l["tier"] == "beta" && l["name"] == "dc-east"
				}
			}
			if !created {
				t.Errorf("no token_created event with id, kind, tier and name for %s", out.Info.ID)
			}

			other := "sync"
			if kind == "sync" {
				other = "auth"
			}
			for _, tc := range []struct {
				name, path  string
				body        any
				status      int
				code, field string
			}{
				{"past valid_until", "/v1/admin/" + kind + "-tokens", map[string]any{"tier": "beta", "name": "x", "valid_until": e.clock.Now().Add(-time.Minute)}, 400, "invalid_input", "valid_until"},
				{"unknown tier", "/v1/admin/" + kind + "-tokens", map[string]any{"tier": "nope", "name": "x"}, 400, "invalid_input", "tier"},
				{"invalid name", "/v1/admin/" + kind + "-tokens", map[string]any{"tier": "beta", "name": ""}, 400, "invalid_input", "name"},
				{"revoke through the other kind's endpoint", "/v1/admin/" + other + "-tokens/" + out.Info.ID, nil, 404, "not_found", ""},
				{"revoke unknown", "/v1/admin/" + kind + "-tokens/0123456789abcdef", nil, 404, "not_found", ""},
				{"revoke malformed id", "/v1/admin/" + kind + "-tokens/XYZ", nil, 400, "invalid_input", "id"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					before := e.snapshot()
					method := http.MethodPost
					if tc.body == nil {
						method = http.MethodDelete
					}
					r := e.request(method, tc.path, e.admin, tc.body)
					if r.StatusCode != tc.status || r.errCode() != tc.code || r.errField() != tc.field {
						t.Errorf("%d %s, want %d %s field %q", r.StatusCode, r.body, tc.status, tc.code, tc.field)
					}
					e.unchanged(tc.name, before)
				})
			}

			e.want(e.request(http.MethodDelete, "/v1/admin/"+kind+"-tokens/"+out.Info.ID, e.admin, nil), http.StatusNoContent, nil)
			tok, err := e.store.Token(context.Background(), out.Info.ID)
			if err != nil || tok.Revoked.IsZero() {
				t.Errorf("after revoke: token %+v, %v; want it revoked", tok, err)
			}
			if !strings.Contains(e.logs.String(), `"event":"token_revoked","token_id":"`+out.Info.ID) {
				t.Errorf("no token_revoked event for %s", out.Info.ID)
			}
		})
	}
}

func TestUploadVerifiesBeforeStoringAndPatchesAreManaged(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.Limits.MaxUploadBytes = 4096 })
	ctx := context.Background()
	file := content(1000, "patch-1")
	p := e.upload(file, "107.1")
	if p.Digest != digestOf(file) || p.Size != 1000 || p.Kernel != testKernel || len(p.CVEs) != 2 ||
		strings.Join(p.Tiers, ",") != "edge" || p.Description != "fixes things" {
		t.Errorf("uploaded %+v, want the file's digest, size 1000, 2 CVEs, on edge", p)
	}
	if info, err := e.blobs.Stat(ctx, blob.Digest(p.Digest)); err != nil || info.Size != 1000 {
		t.Errorf("blob after upload: %+v, %v; want 1000 bytes", info, err)
	}

	other := content(2000, "patch-2")
	big := content(5000, "too-big")
	for _, tc := range []struct {
		name        string
		path        string
		body        []byte
		status      int
		code, field string
	}{
		{"bad digest", uploadPath("sha256:xyz", testKernel, "107.2"), other, 400, "invalid_input", "digest"},
		{"bad kernel", uploadPath(digestOf(other), "5.15", "107.2"), other, 400, "invalid_input", "kernel"},
		{"bad version", uploadPath(digestOf(other), testKernel, "v2"), other, 400, "invalid_input", "version"},
		{"bad CVE", strings.Replace(uploadPath(digestOf(other), testKernel, "107.2"), "CVE-2024-1086", "CVE-1", 1), other, 400, "invalid_input", "cves"},
		{"digest mismatch", uploadPath(digestOf(file[:999]), testKernel, "107.2"), other, 422, "digest_mismatch", ""},
		{"duplicate digest, other version", uploadPath(p.Digest, testKernel, "107.2"), file, 409, "conflict", ""},
		{"duplicate digest, other arch", strings.Replace(uploadPath(p.Digest, testKernel, "107.1"), "arch="+testArch, "arch=aarch64", 1), file, 409, "conflict", ""},
		{"repeat with another size", uploadPath(p.Digest, testKernel, "107.1") + "&size=999", file[:999], 400, "invalid_input", "size"},
		{"duplicate version", uploadPath(digestOf(other), testKernel, "107.1"), other, 409, "conflict", ""},
		{"declared size differs", uploadPath(digestOf(other), testKernel, "107.2") + "&size=1999", other, 400, "invalid_input", "size"},
		{"empty file", uploadPath(digestOf(nil), testKernel, "107.2"), nil, 400, "invalid_input", "size"},
		{"oversized upload", uploadPath(digestOf(big), testKernel, "107.2"), big, 413, "too_large", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshot()
			r := e.request(http.MethodPost, tc.path, e.admin, tc.body)
			if r.StatusCode != tc.status || r.errCode() != tc.code || r.errField() != tc.field {
				t.Errorf("%d %s, want %d %s field %q", r.StatusCode, r.body, tc.status, tc.code, tc.field)
			}
			e.unchanged(tc.name, before)
			if tc.code != "conflict" {
				for _, d := range []string{digestOf(tc.body), digestOf(other), digestOf(big)} {
					if _, err := e.blobs.Stat(ctx, blob.Digest(d)); !errors.Is(err, blob.ErrNotFound) {
						t.Errorf("blob %s after a refused upload: Stat err %v, want ErrNotFound", d, err)
					}
					if _, err := e.store.Patch(ctx, d); !errors.Is(err, catalog.ErrNotFound) {
						t.Errorf("patch %s after a refused upload: err %v, want ErrNotFound", d, err)
					}
				}
			}
		})
	}
	// An upload of unknown length (chunked) over the limit is cut off too.
	t.Run("oversized chunked upload", func(t *testing.T) {
		before := e.snapshot()
		r := e.request(http.MethodPost, uploadPath(digestOf(big), testKernel, "107.2"), e.admin, io.MultiReader(strings.NewReader(string(big))))
		if r.StatusCode != 413 || r.errCode() != "too_large" {
			t.Errorf("%d %s, want 413 too_large", r.StatusCode, r.body)
		}
		e.unchanged("oversized chunked upload", before)
	})
	// The same file under the same metadata again is a repeat: 200 and the
	// record as it stands, nothing changed.
	t.Run("identical re-upload", func(t *testing.T) {
		before := e.snapshot()
		var again catalog.Patch
		e.want(e.request(http.MethodPost, uploadPath(p.Digest, testKernel, "107.1"), e.admin, file), http.StatusOK, &again)
		if again.Digest != p.Digest || again.Version != p.Version || !again.Created.Equal(p.Created) {
			t.Errorf("re-upload answered %+v, want the existing record %+v", again, p)
		}
		e.unchanged("identical re-upload", before)
	})
	// The duplicate's blob is the existing patch's and must survive.
	if _, err := e.blobs.Stat(ctx, blob.Digest(p.Digest)); err != nil {
		t.Errorf("blob of the existing patch after a duplicate upload: %v, want it kept", err)
	}

	p2 := e.upload(other, "107.2")
	var show catalog.Patch
	e.want(e.request(http.MethodGet, "/v1/admin/patches/"+p2.Digest, e.admin, nil), http.StatusOK, &show)
	if show.Digest != p2.Digest || show.Version != "107.2" {
		t.Errorf("show %+v, want %s at 107.2", show, p2.Digest)
	}
	r := e.request(http.MethodGet, "/v1/admin/patches/sha256:nope", e.admin, nil)
	if r.StatusCode != 400 || r.errField() != "digest" {
		t.Errorf("show bad digest: %d %s, want 400 invalid_input digest", r.StatusCode, r.body)
	}
	r = e.request(http.MethodGet, "/v1/admin/patches/"+digestOf([]byte("none")), e.admin, nil)
	if r.StatusCode != 404 || r.errCode() != "not_found" {
		t.Errorf("show unknown digest: %d %s, want 404 not_found", r.StatusCode, r.body)
	}

	var promoted struct{ Patches []catalog.Patch }
	e.want(e.request(http.MethodPost, "/v1/admin/patches/107.1/promote", e.admin, map[string]string{"tier": "beta"}), http.StatusOK, &promoted)
	if len(promoted.Patches) != 1 || strings.Join(promoted.Patches[0].Tiers, ",") != "edge,beta" {
		t.Errorf("promote by version: %+v, want 107.1 on edge,beta", promoted.Patches)
	}
	e.want(e.request(http.MethodPost, "/v1/admin/patches/"+p2.Digest+"/promote", e.admin, map[string]string{"tier": "candidate"}), http.StatusOK, &promoted)
	if len(promoted.Patches) != 1 || strings.Join(promoted.Patches[0].Tiers, ",") != "edge,candidate" {
		t.Errorf("promote by digest: %+v, want 107.2 on edge,candidate", promoted.Patches)
	}
	var all struct{ Promoted int }
	e.want(e.request(http.MethodPost, "/v1/admin/promote-all", e.admin, map[string]string{"from": "edge", "to": "stable"}), http.StatusOK, &all)
	if all.Promoted != 2 {
		t.Errorf("promote-all edge→stable promoted %d, want 2", all.Promoted)
	}
	for _, tc := range []struct {
		name, path  string
		body        any
		status      int
		code, field string
	}{
		{"promote to unknown tier", "/v1/admin/patches/107.1/promote", map[string]string{"tier": "nope"}, 400, "invalid_input", "tier"},
		{"promote bad ref", "/v1/admin/patches/latest/promote", map[string]string{"tier": "beta"}, 400, "invalid_input", "ref"},
		{"promote unknown version", "/v1/admin/patches/9.9/promote", map[string]string{"tier": "beta"}, 404, "not_found", ""},
		{"promote unknown digest", "/v1/admin/patches/" + digestOf([]byte("x")) + "/promote", map[string]string{"tier": "beta"}, 404, "not_found", ""},
		{"promote-all same tier", "/v1/admin/promote-all", map[string]string{"from": "edge", "to": "edge"}, 400, "invalid_input", "to"},
		{"promote-all unknown tier", "/v1/admin/promote-all", map[string]string{"from": "edge", "to": "nope"}, 400, "invalid_input", "to"},
		{"withdraw unknown", "/v1/admin/patches/" + digestOf([]byte("x")) + "/withdraw", nil, 404, "not_found", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshot()
			r := e.request(http.MethodPost, tc.path, e.admin, tc.body)
			if r.StatusCode != tc.status || r.errCode() != tc.code || r.errField() != tc.field {
				t.Errorf("%d %s, want %d %s field %q", r.StatusCode, r.body, tc.status, tc.code, tc.field)
			}
			e.unchanged(tc.name, before)
		})
	}

	var wd catalog.Patch
	e.want(e.request(http.MethodPost, "/v1/admin/patches/"+p.Digest+"/withdraw", e.admin, nil), http.StatusOK, &wd)
	if !wd.Withdrawn {
		t.Errorf("withdraw answered %+v, want withdrawn", wd)
	}
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"", 1},
		{"?withdrawn=true", 2},
		{"?version=107.2", 1},
		{"?tier=candidate", 1},
		{"?kernel=" + testKernel + "&arch=" + testArch + "&withdrawn=true&limit=1", 1},
		{"?arch=aarch64", 0},
	} {
		var list struct{ Patches []catalog.Patch }
		e.want(e.request(http.MethodGet, "/v1/admin/patches"+tc.query, e.admin, nil), http.StatusOK, &list)
		if len(list.Patches) != tc.want {
			t.Errorf("list %s: %d patches, want %d", tc.query, len(list.Patches), tc.want)
		}
	}
	for _, q := range []string{"?kernel=x", "?arch=mips", "?tier=BAD", "?version=a", "?withdrawn=maybe", "?limit=0", "?limit=100000"} {
		r := e.request(http.MethodGet, "/v1/admin/patches"+q, e.admin, nil)
		if r.StatusCode != 400 || r.errCode() != "invalid_input" {
			t.Errorf("list %s: %d %s, want 400 invalid_input", q, r.StatusCode, r.body)
		}
	}

	e.want(e.request(http.MethodDelete, "/v1/admin/patches/"+p.Digest, e.admin, nil), http.StatusNoContent, nil)
	if _, err := e.blobs.Stat(ctx, blob.Digest(p.Digest)); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("blob after patch removal: %v, want ErrNotFound", err)
	}
	r = e.request(http.MethodDelete, "/v1/admin/patches/"+p.Digest, e.admin, nil)
	if r.StatusCode != 404 {
		t.Errorf("second removal: %d, want 404", r.StatusCode)
	}
}

func TestClientRegisterStatusPatchCheckInAndRefusals(t *testing.T) {
	e := newEnv(t, func(c *api.Config) { c.Limits.MaxBodyBytes = 1024 })
	at, atInfo := e.token("auth", "beta", "fleet-a")
	authz := "Bearer " + at

	var reg struct {
		MachineToken string          `json:"machine_token"`
		Tier         string          `json:"tier"`
		Machine      catalog.Machine `json:"machine"`
	}
	e.want(e.request(http.MethodPost, "/v1/client/register", authz, registration("0123456789abcdef0123")), http.StatusCreated, &reg)
	e.keep(reg.MachineToken)
	if !strings.HasPrefix(reg.MachineToken, "pmm_") || reg.Tier != "beta" || reg.Machine.Tier != "beta" ||
		reg.Machine.Kernel != testKernel || len(reg.Machine.ID) != 64 || strings.Contains(reg.Machine.ID, "0123456789abcdef0123") {
		t.Errorf("register answered %+v, want a pmm_ token on beta and a hashed machine ID", reg)
	}
	mt := "Bearer " + reg.MachineToken
	if !strings.Contains(e.logs.String(), `"event":"machine_registered"`) {
		t.Errorf("no machine_registered event")
	}

	var m catalog.Machine
	e.want(e.request(http.MethodGet, "/v1/client/status", mt, nil), http.StatusOK, &m)
	if m.ID != reg.Machine.ID || m.State != catalog.StateUnknown {
		t.Errorf("status %+v, want machine %s in state unknown", m, reg.Machine.ID)
	}

	patchQ := "/v1/client/patch?kernel=" + testKernel + "&arch=" + testArch
	r := e.request(http.MethodGet, patchQ, mt, nil)
	if r.StatusCode != 404 || r.errCode() != "not_found" {
		t.Errorf("patch with none on the tier: %d %s, want 404 not_found", r.StatusCode, r.body)
	}
	p1 := e.upload(content(300, "one"), "107.1")
	r = e.request(http.MethodGet, patchQ, mt, nil)
	if r.StatusCode != 404 {
		t.Errorf("patch only on edge asked from beta: %d %s, want 404", r.StatusCode, r.body)
	}
	e.want(e.request(http.MethodPost, "/v1/admin/patches/"+p1.Digest+"/promote", e.admin, map[string]string{"tier": "beta"}), http.StatusOK, nil)
	p2 := e.upload(content(300, "two"), "107.10")
	e.want(e.request(http.MethodPost, "/v1/admin/patches/"+p2.Digest+"/promote", e.admin, map[string]string{"tier": "beta"}), http.StatusOK, nil)
	var newest catalog.Patch
	e.want(e.request(http.MethodGet, patchQ, mt, nil), http.StatusOK, &newest)
	if newest.Digest != p2.Digest {
		t.Errorf("newest on beta is %s (%s), want 107.10 %s", newest.Digest, newest.Version, p2.Digest)
	}

	checkin := map[string]any{"state": "applied", "kernel": testKernel, "arch": testArch,
		"patch_version": "107.10", "client_version": "0.2.0", "uptime_seconds": 123}
	e.clock.Advance(time.Minute)
	e.want(e.request(http.MethodPost, "/v1/client/checkin", mt, checkin), http.StatusOK, &m)
	if m.State != catalog.StateApplied || m.PatchVersion != "107.10" || m.UptimeSeconds != 123 ||
		m.ClientVersion != "0.2.0" || !m.LastSeen.Equal(e.clock.Now()) {
		t.Errorf("after check-in %+v, want applied 107.10 uptime 123 seen at %v", m, e.clock.Now())
	}
	nothing := map[string]any{"state": "nothing-to-apply", "kernel": testKernel, "arch": testArch,
		"patch_version": "", "client_version": "0.2.0", "uptime_seconds": 0}
	e.want(e.request(http.MethodPost, "/v1/client/checkin", mt, nothing), http.StatusOK, nil)

	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for kk, vv := range checkin {
			c[kk] = vv
		}
		c[k] = v
		return c
	}
	for _, tc := range []struct {
		name, method, path, authz string
		body                      any
		status                    int
		code, field               string
	}{
		{"register without token", "POST", "/v1/client/register", "", registration("0123456789abcdef0123"), 401, "unauthorized", ""},
		{"register with machine token", "POST", "/v1/client/register", mt, registration("0123456789abcdef0123"), 403, "forbidden", ""},
		{"register with bad machine ID", "POST", "/v1/client/register", authz, registration("short"), 400, "invalid_input", "machine_id"},
		{"register with bad arch", "POST", "/v1/client/register", authz, map[string]any{"machine_id": "0123456789abcdef0123", "kernel": testKernel, "arch": "vax", "client_version": "1"}, 400, "invalid_input", "arch"},
		{"status with auth token", "GET", "/v1/client/status", authz, nil, 403, "forbidden", ""},
		{"status with malformed token", "GET", "/v1/client/status", "Bearer pmm_nothex_secret", nil, 401, "unauthorized", ""},
		{"status with unknown token", "GET", "/v1/client/status", "Bearer pmm_0123456789abcdef_" + strings.Repeat("A", 43), nil, 401, "unauthorized", ""},
		{"status with wrong secret", "GET", "/v1/client/status", mt[:len(mt)-3] + "AAA", nil, 401, "unauthorized", ""},
		{"status with macaroon", "GET", "/v1/client/status", e.admin, nil, 401, "unauthorized", ""},
		{"patch without kernel", "GET", "/v1/client/patch?arch=" + testArch, mt, nil, 400, "invalid_input", "kernel"},
		{"patch with bad arch", "GET", "/v1/client/patch?kernel=" + testKernel + "&arch=i386", mt, nil, 400, "invalid_input", "arch"},
		{"checkin bad state", "POST", "/v1/client/checkin", mt, with("state", "happy"), 400, "invalid_input", "state"},
		{"checkin bad kernel", "POST", "/v1/client/checkin", mt, with("kernel", "linux"), 400, "invalid_input", "kernel"},
		{"checkin bad patch version", "POST", "/v1/client/checkin", mt, with("patch_version", "x"), 400, "invalid_input", "patch_version"},
		{"checkin bad client version", "POST", "/v1/client/checkin", mt, with("client_version", "a b"), 400, "invalid_input", "client_version"},
		{"checkin negative uptime", "POST", "/v1/client/checkin", mt, with("uptime_seconds", -1), 400, "invalid_input", "uptime_seconds"},
		{"checkin unknown field", "POST", "/v1/client/checkin", mt, with("colour", "red"), 400, "bad_request", ""},
		{"checkin wrong type", "POST", "/v1/client/checkin", mt, with("uptime_seconds", "long"), 400, "bad_request", ""},
		{"checkin malformed JSON", "POST", "/v1/client/checkin", mt, `{"state":`, 400, "bad_request", ""},
		{"checkin oversized body", "POST", "/v1/client/checkin", mt, with("client_version", strings.Repeat("a", 2000)), 413, "too_large", ""},
		{"checkin with auth token", "POST", "/v1/client/checkin", authz, checkin, 403, "forbidden", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshot()
			seen, _ := e.store.Machine(context.Background(), reg.Machine.ID)
			r := e.request(tc.method, tc.path, tc.authz, tc.body)
			if r.StatusCode != tc.status || r.errCode() != tc.code || r.errField() != tc.field {
				t.Errorf("%d %s, want %d %s field %q", r.StatusCode, r.body, tc.status, tc.code, tc.field)
			}
			if tc.status == 401 && !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate %q, want Bearer", r.Header.Get("WWW-Authenticate"))
			}
			e.unchanged(tc.name, before)
			if after, _ := e.store.Machine(context.Background(), reg.Machine.ID); after != seen {
				t.Errorf("machine changed: before %+v, after %+v", seen, after)
			}
		})
	}

	// Registering again replaces the machine token; the old one stops working.
	var again struct {
		MachineToken string `json:"machine_token"`
	}
	e.want(e.request(http.MethodPost, "/v1/client/register", authz, registration("0123456789abcdef0123")), http.StatusCreated, &again)
	e.keep(again.MachineToken)
	if r := e.request(http.MethodGet, "/v1/client/status", mt, nil); r.StatusCode != 401 {
		t.Errorf("old machine token after re-registration: %d, want 401", r.StatusCode)
	}
	e.want(e.request(http.MethodGet, "/v1/client/status", "Bearer "+again.MachineToken, nil), http.StatusOK, nil)

	// Revoked and expired auth tokens no longer register.
	e.want(e.request(http.MethodDelete, "/v1/admin/auth-tokens/"+atInfo.ID, e.admin, nil), http.StatusNoContent, nil)
	if r := e.request(http.MethodPost, "/v1/client/register", authz, registration("fedcba9876543210fedc")); r.StatusCode != 401 {
		t.Errorf("register with a revoked auth token: %d %s, want 401", r.StatusCode, r.body)
	}
	var exp struct {
		Token string `json:"token"`
	}
	e.want(e.request(http.MethodPost, "/v1/admin/auth-tokens", e.admin,
		map[string]any{"tier": "beta", "name": "short", "valid_until": e.clock.Now().Add(time.Hour)}), http.StatusCreated, &exp)
	e.keep(exp.Token)
	e.clock.Advance(2 * time.Hour)
	before := e.snapshot()
	if r := e.request(http.MethodPost, "/v1/client/register", "Bearer "+exp.Token, registration("fedcba9876543210fedc")); r.StatusCode != 401 {
		t.Errorf("register with an expired auth token: %d %s, want 401", r.StatusCode, r.body)
	}
	e.unchanged("register with an expired auth token", before)

	var ms struct{ Machines []catalog.Machine }
	e.want(e.request(http.MethodGet, "/v1/admin/machines?tier=beta&state=nothing-to-apply&kernel="+testKernel, e.admin, nil), http.StatusOK, &ms)
	if len(ms.Machines) != 0 { // re-registration reset the state to unknown
		t.Errorf("machines in nothing-to-apply: %d, want 0", len(ms.Machines))
	}
	e.want(e.request(http.MethodGet, "/v1/admin/machines?tier=beta&state=unknown&limit=10", e.admin, nil), http.StatusOK, &ms)
	if len(ms.Machines) != 1 {
		t.Errorf("machines on beta in state unknown: %d, want 1", len(ms.Machines))
	}
	if r := e.request(http.MethodGet, "/v1/admin/machines?state=happy", e.admin, nil); r.StatusCode != 400 || r.errField() != "state" {
		t.Errorf("machines with bad state filter: %d %s, want 400 field state", r.StatusCode, r.body)
	}
}

func TestDebugInfoAndStatusReportHealth(t *testing.T) {
	e := newEnv(t)
	e.clock.Advance(90 * time.Second)
	var info struct {
		Version       string `json:"version"`
		UptimeSeconds int64  `json:"uptime_seconds"`
		Role, Node    string
	}
	e.want(e.request(http.MethodGet, "/debug/info", "", nil), http.StatusOK, &info)
	if info.Version != "1.2.3" || info.UptimeSeconds != 90 || info.Role != "hub" || info.Node != "node-a" {
		t.Errorf("debug/info %+v, want version 1.2.3, uptime 90, role hub, node node-a", info)
	}
	var st struct {
		Store, Blobs struct {
			OK    bool
			Error string
		}
	}
	e.want(e.request(http.MethodGet, "/debug/status", "", nil), http.StatusOK, &st)
	if !st.Store.OK || !st.Blobs.OK {
		t.Errorf("debug/status %+v, want both ok", st)
	}
	e.store.Close()
	r := e.request(http.MethodGet, "/debug/status", "", nil)
	e.want(r, http.StatusServiceUnavailable, &st)
	if st.Store.OK || !st.Blobs.OK || !strings.Contains(st.Store.Error, r.Header.Get(api.RequestIDHeader)) {
		t.Errorf("debug/status with the store closed: %+v, want store down (naming the request ID), blobs ok", st)
	}
	if strings.Contains(string(r.body), "sql") {
		t.Errorf("debug/status shows the store's error text %s; want it only in the log", r.body)
	}
	// A store failure is a 500 that shows only the request ID.
	r = e.request(http.MethodGet, "/v1/admin/tiers", e.admin, nil)
	if r.StatusCode != 500 || r.errCode() != "internal" || strings.Contains(string(r.body), "sql") {
		t.Errorf("request with the store closed: %d %s, want 500 internal without details", r.StatusCode, r.body)
	}
}
