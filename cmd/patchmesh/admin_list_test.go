package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/catalog"
)

// patchRequests counts the listing requests the node has seen.
func (n *testNode) listRequests(path string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, r := range n.requests {
		if r.Method == http.MethodGet && r.URL.Path == path {
			c++
		}
	}
	return c
}

func TestAdminListsFollowEveryPage(t *testing.T) {
	saved := listPage
	listPage = 2
	t.Cleanup(func() { listPage = saved })
	n := newTestNode(t)
	n.login()
	var digests []string
	for i := range 5 {
		path, d := writePatchFile(t, []byte(fmt.Sprint("paged patch ", i)))
		n.mustAdmin("patches", "upload", path, "--kernel", nodeKernel, "--arch", nodeArch, "--version", fmt.Sprintf("3.%d", i))
		digests = append(digests, d)
	}
	for i := range 3 {
		n.mustAdmin("auth-tokens", "add", "edge", fmt.Sprint("fleet-", i))
	}

	for _, tc := range []struct {
		args  []string
		path  string
		key   string
		items int
	}{
		{[]string{"patches", "list"}, "/v1/admin/patches", "patches", 5},
		{[]string{"storage", "list"}, "/v1/admin/storage", "blobs", 5},
		{[]string{"auth-tokens", "list"}, "/v1/admin/auth-tokens", "tokens", 3},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			before := n.listRequests(tc.path)
			r := n.mustAdmin(append(tc.args, "--output", "json")...)
			var out map[string][]json.RawMessage
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
				t.Fatalf("--output json: %v\n%s", err, r.stdout)
			}
			if len(out[tc.key]) != tc.items || len(out) != 1 {
				t.Errorf("listed %d %s (keys %d), want all %d and no next", len(out[tc.key]), tc.key, len(out), tc.items)
			}
			if pages, want := n.listRequests(tc.path)-before, tc.items/2+1; pages != want {
				t.Errorf("%d requests, want %d pages of 2", pages, want)
			}
			text := n.mustAdmin(tc.args...)
			if lines := strings.Count(strings.TrimSpace(text.stdout), "\n"); lines != tc.items {
				t.Errorf("text lists %d rows, want %d:\n%s", lines, tc.items, text.stdout)
			}
		})
	}

	// --limit stops early and says where to go on; --after goes on.
	r := n.mustAdmin("patches", "list", "--limit", "3", "--output", "json")
	var first struct {
		Patches []catalog.Patch `json:"patches"`
		Next    string          `json:"next"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &first); err != nil || len(first.Patches) != 3 || first.Next == "" {
		t.Fatalf("patches list --limit 3 = %s (%v), want 3 patches and next", r.stdout, err)
	}
	text := n.mustAdmin("patches", "list", "--limit", "3")
	if !strings.Contains(text.stderr, "--after "+first.Next) {
		t.Errorf("text listing stopped by --limit: stderr %q, want how to go on", text.stderr)
	}
	r = n.mustAdmin("patches", "list", "--after", first.Next, "--output", "json")
	var rest struct {
		Patches []catalog.Patch `json:"patches"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rest); err != nil || len(rest.Patches) != 2 {
		t.Fatalf("patches list --after = %s (%v), want the other 2", r.stdout, err)
	}
	seen := map[string]bool{}
	for _, p := range append(first.Patches, rest.Patches...) {
		seen[p.Digest] = true
	}
	for _, d := range digests {
		if !seen[d] {
			t.Errorf("%s missing from the two listings", d)
		}
	}
}

func TestAdminDigestPrefixes(t *testing.T) {
	n := newTestNode(t)
	n.login()
	path, d := writePatchFile(t, []byte("a patch known by its prefix"))
	n.mustAdmin("patches", "upload", path, "--kernel", nodeKernel, "--arch", nodeArch, "--version", "4.1")
	hex := strings.TrimPrefix(d, "sha256:")

	for _, ref := range []string{hex[:8], "sha256:" + hex[:8], hex[:20], d} {
		r := n.mustAdmin("patches", "show", ref, "--output", "json")
		var p catalog.Patch
		if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || p.Digest != d {
			t.Errorf("patches show %s = %s (%v), want %s", ref, r.stdout, err, d)
		}
	}

	// Two records whose digests share 12 hex digits: a file could hardly
	// be made to, so they are recorded directly in the node's store.
	shared := "abcdef012345"
	for _, v := range []string{"4.2", "4.3"} {
		p := catalog.Patch{Digest: "sha256:" + shared + strings.Repeat(v[2:], 52), Kernel: nodeKernel, Arch: nodeArch, Version: v, Size: 1}
		if _, err := n.store.AddPatch(t.Context(), p); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args []string
		want int
		says string
	}{
		{[]string{"patches", "show", shared[:8]}, exitUsage, "ambiguous: 2 patches"},
		{[]string{"patches", "withdraw", "sha256:" + shared}, exitUsage, "ambiguous: 2 patches"},
		{[]string{"patches", "show", "1234567"}, exitUsage, "at least 8"},
		{[]string{"patches", "show", "ABCDEF01"}, exitUsage, "not a digest"},
		{[]string{"patches", "remove", "0000000000"}, exitNotFound, "no patch's digest starts with"},
		{[]string{"patches", "promote", shared[:8], "beta"}, exitUsage, "ambiguous"},
	} {
		r := n.admin("", tc.args...)
		if r.code != tc.want || !strings.Contains(r.stderr, tc.says) {
			t.Errorf("%v: exit %d, stderr %q; want %d saying %q", tc.args, r.code, r.stderr, tc.want, tc.says)
		}
	}
	// One more digit tells them apart, for every command taking a digest.
	one := "sha256:" + shared + "2"
	n.mustAdmin("patches", "promote", one, "beta")
	if r := n.mustAdmin("patches", "show", one[7:], "--output", "json"); !strings.Contains(r.stdout, `"beta"`) {
		t.Errorf("promote by prefix did not reach the patch: %s", r.stdout)
	}
	n.mustAdmin("patches", "withdraw", one)
	n.mustAdmin("patches", "remove", one[7:])
	if r := n.admin("", "patches", "show", one); r.code != exitNotFound {
		t.Errorf("show after remove by prefix: exit %d, want %d", r.code, exitNotFound)
	}
	// A version is still a version for promote.
	if r := n.mustAdmin("patches", "promote", "4.1", "beta", "--output", "json"); !strings.Contains(r.stdout, d) {
		t.Errorf("promote 4.1 = %s, want %s", r.stdout, d)
	}
}
