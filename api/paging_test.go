package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// pages follows a listing's "next" from the first page, with limit per
// page, and returns every item's key (its field named by keyField) in
// order. Bounded: more pages than items means next does not move.
func (e *env) pages(path, list, keyField string, limit, items int) []string {
	e.t.Helper()
	var keys []string
	after := ""
	for range items + 2 {
		q := url.Values{"limit": {fmt.Sprint(limit)}}
		if after != "" {
			q.Set("after", after)
		}
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		var out map[string]json.RawMessage
		e.want(e.request(http.MethodGet, path+sep+q.Encode(), e.admin, nil), http.StatusOK, &out)
		var page []map[string]any
		if err := json.Unmarshal(out[list], &page); err != nil {
			e.t.Fatalf("%s: %v", path, err)
		}
		if len(page) > limit {
			e.t.Errorf("%s: a page of %d, want at most %d", path, len(page), limit)
		}
		for _, it := range page {
			keys = append(keys, fmt.Sprint(it[keyField]))
		}
		next, ok := out["next"]
		if !ok {
			return keys
		}
		if err := json.Unmarshal(next, &after); err != nil || after == "" {
			e.t.Fatalf("%s: next = %s, want a cursor", path, next)
		}
	}
	e.t.Fatalf("%s: more than %d pages for %d items", path, items+2, items)
	return nil
}

func TestListingsPage(t *testing.T) {
	e := newEnv(t)
	var digests []string
	for i := range 7 {
		digests = append(digests, e.upload(content(100+i, fmt.Sprint("page-", i)), fmt.Sprintf("9.%d", i)).Digest)
	}
	for i := range 5 {
		e.token("auth", "edge", fmt.Sprint("fleet-", i))
		e.machine("edge", fmt.Sprintf("paging-machine-%02d", i))
	}
	for _, tc := range []struct {
		path, list, key string
		items           int
	}{
		{"/v1/admin/patches", "patches", "digest", 7},
		{"/v1/admin/patches?kernel=" + testKernel, "patches", "digest", 7},
		{"/v1/admin/auth-tokens", "tokens", "id", 10}, // 5, and 1 per machine registered
		{"/v1/admin/machines", "machines", "id", 5},
		{"/v1/admin/storage", "blobs", "digest", 7},
	} {
		t.Run(tc.path, func(t *testing.T) {
			whole := e.pages(tc.path, tc.list, tc.key, 1000, tc.items)
			if len(whole) != tc.items {
				t.Fatalf("one page holds %d items, want %d", len(whole), tc.items)
			}
			for _, limit := range []int{1, 2, 3, tc.items} {
				if got := e.pages(tc.path, tc.list, tc.key, limit, tc.items); !slices.Equal(got, whole) {
					t.Errorf("pages of %d:\n got %v\nwant %v", limit, got, whole)
				}
			}
		})
	}

	// A cursor is the listing's own, passed as it came.
	var first struct {
		Next string `json:"next"`
	}
	e.want(e.request(http.MethodGet, "/v1/admin/machines?limit=1", e.admin, nil), http.StatusOK, &first)
	for _, bad := range []string{"nonsense", first.Next + "x", strings.Repeat("A", 3000)} {
		r := e.request(http.MethodGet, "/v1/admin/patches?after="+url.QueryEscape(bad), e.admin, nil)
		if r.StatusCode != 400 || r.errCode() != "invalid_input" || r.errField() != "after" {
			t.Errorf("patches after %.20q: %d %s, want 400 invalid_input after", bad, r.StatusCode, r.body)
		}
	}
	r := e.request(http.MethodGet, "/v1/admin/patches?after="+first.Next, e.admin, nil)
	if r.StatusCode != 400 || r.errField() != "after" {
		t.Errorf("patches after a machines cursor: %d %s, want 400 invalid_input after", r.StatusCode, r.body)
	}

	// A digest prefix narrows the listing to the digests that start with it.
	d := digests[3]
	for _, prefix := range []string{d[:15], d} {
		var out struct {
			Patches []struct{ Digest string }
		}
		e.want(e.request(http.MethodGet, "/v1/admin/patches?withdrawn=true&digest_prefix="+prefix, e.admin, nil), http.StatusOK, &out)
		if len(out.Patches) != 1 || out.Patches[0].Digest != d {
			t.Errorf("digest_prefix %s = %+v, want only %s", prefix, out.Patches, d)
		}
	}
	for _, bad := range []string{"abc", "sha256:", "sha256:XYZ", "sha256:" + strings.Repeat("a", 65)} {
		r := e.request(http.MethodGet, "/v1/admin/patches?digest_prefix="+url.QueryEscape(bad), e.admin, nil)
		if r.StatusCode != 400 || r.errField() != "digest_prefix" {
			t.Errorf("digest_prefix %q: %d %s, want 400 invalid_input digest_prefix", bad, r.StatusCode, r.body)
		}
	}
}

// A bad query parameter is a 400 naming the parameter, in the field and
// once at the head of the message: "limit: must be …", never "limit:
// limit: …".
func TestBadQueryParametersAreNamedOnce(t *testing.T) {
	e := newEnv(t)
	var hook struct{ ID string }
	e.want(e.request(http.MethodPost, "/v1/admin/webhooks", e.admin, map[string]any{
		"url": "https://hooks.example/pm", "events": []string{"node.down"}, "secret": "0123456789abcdef0123"}),
		http.StatusCreated, &hook)
	for _, c := range []struct{ path, field string }{
		{"/v1/dashboard/events?limit=0", "limit"},
		{"/v1/dashboard/events?limit=x", "limit"},
		{"/v1/admin/audit?limit=0", "limit"},
		{"/v1/admin/audit?since=yesterday", "since"},
		{"/v1/admin/audit?after=x", "after"},
		{"/v1/admin/patches?limit=0", "limit"},
		{"/v1/admin/patches?kernel=x", "kernel"},
		{"/v1/admin/patches?arch=x", "arch"},
		{"/v1/admin/patches?tier=No+Such", "tier"},
		{"/v1/admin/patches?version=x", "version"},
		{"/v1/admin/patches?digest_prefix=x", "digest_prefix"},
		{"/v1/admin/patches?withdrawn=maybe", "withdrawn"},
		{"/v1/admin/patches?after=x", "after"},
		{"/v1/admin/machines?state=x", "state"},
		{"/v1/admin/reports/machines?dc=-x", "dc"},
		{"/v1/admin/reports/machines?after=x", "after"},
		{"/v1/admin/reports/summary?limit=5", "limit"},
		{"/v1/admin/rollouts?tier=No+Such", "tier"},
		{"/v1/admin/webhooks/" + hook.ID + "/deliveries?limit=0", "limit"},
		{"/v1/admin/auth-tokens?limit=0", "limit"},
	} {
		r := e.request(http.MethodGet, c.path, e.admin, nil)
		msg := r.errMessage()
		rest, named := strings.CutPrefix(msg, c.field+": ")
		if r.StatusCode != http.StatusBadRequest || r.errField() != c.field || !named || strings.HasPrefix(rest, c.field+":") {
			t.Errorf("GET %s: %d field %q message %q; want 400 on %s, named once at the head of the message",
				c.path, r.StatusCode, r.errField(), msg, c.field)
		}
	}
}
