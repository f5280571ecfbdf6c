package api_test

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/api"
)

// TestRoutesMatchHandler checks api.Routes against a real handler from
// api.New: every listed path exists there (a method it does not list
// answers 405 with Allow naming exactly the listed ones, and HEAD with
// GET), and the list holds
// the endpoints docs/api.md documents.
func TestRoutesMatchHandler(t *testing.T) {
	routes, err := api.Routes()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	vars := regexp.MustCompile(`\{[^}]+\}`)
	seen := map[string]bool{}
	for _, r := range routes {
		if seen[r.Path] {
			t.Errorf("route %s listed twice", r.Path)
		}
		seen[r.Path] = true
		if len(r.Methods) == 0 || !slices.IsSorted(r.Methods) {
			t.Errorf("route %s: want sorted methods, got %v", r.Path, r.Methods)
		}
		if slices.Contains(r.Methods, http.MethodPut) {
			t.Fatalf("route %s serves PUT, the method this test probes with as no route serves it", r.Path)
		}
		// A variable's value does not matter: methods are checked first.
		path := vars.ReplaceAllString(r.Path, "x")
		resp := e.request(http.MethodPut, path, e.admin, nil)
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("PUT %s: want 405, got %d %s", path, resp.StatusCode, resp.body)
			continue
		}
		// HEAD is served wherever GET is, as its answer without the body.
		allow := slices.Clone(r.Methods)
		if slices.Contains(allow, http.MethodGet) && !slices.Contains(allow, http.MethodHead) {
			allow = append(allow, http.MethodHead)
			slices.Sort(allow)
		}
		if got, want := resp.Header.Get("Allow"), strings.Join(allow, ", "); got != want {
			t.Errorf("PUT %s: want Allow %q as Routes lists, HEAD with GET, got %q", path, want, got)
		}
	}
	for _, want := range []string{
		"/metrics", "/debug/info", "/debug/status", "/v1/admin/login", "/v1/admin/patches/{ref}/promote",
		"/v1/client/checkin", "/v1/sync/feed", "/v1/topology", "/v1/blobs/{digest}", "/v1/peer/blobs/{digest}",
	} {
		if !seen[want] {
			t.Errorf("Routes lacks %s; got %v", want, routes)
		}
	}
}

// HEAD answers where GET does, as GET would and with no body: health
// checks and `curl -I` send it.
func TestHeadAnswersAsGet(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/", "/dashboard/", "/debug/info", "/metrics", "/v1/admin/tiers", "/v1/admin/nosuch"} {
		get := e.request(http.MethodGet, path, e.admin, nil)
		head := e.request(http.MethodHead, path, e.admin, nil)
		if head.StatusCode != get.StatusCode || len(head.body) != 0 || head.Header.Get("Content-Type") != get.Header.Get("Content-Type") {
			t.Errorf("HEAD %s: %d %q with %d bytes; want GET's %d %q and no body", path,
				head.StatusCode, head.Header.Get("Content-Type"), len(head.body), get.StatusCode, get.Header.Get("Content-Type"))
		}
	}
}
