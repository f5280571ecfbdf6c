package api_test

import (
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/catalog"
)

// TestRealKernelReleasesAreServedByExactRelease uploads a patch for each
// release real machines report, registers a machine on each, and checks
// that every machine is offered its own kernel's patch and no other: the
// match is by exact release.
func TestRealKernelReleasesAreServedByExactRelease(t *testing.T) {
	out, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatalf("uname -r: %v", err)
	}
	releases := []string{
		"5.15.0-107.117-generic",      // Ubuntu, /proc/version_signature
		"5.15.0-107-generic",          // Ubuntu, uname -r alone
		"6.1.0-18-amd64",              // Debian
		"6.5.6-300.fc39.x86_64",       // Fedora
		"5.14.0-362.8.1.el9_3.x86_64", // RHEL
		strings.TrimSpace(string(out)),
	}
	e := newEnv(t)
	patches := map[string]catalog.Patch{}
	for i, k := range releases {
		if _, dup := patches[k]; dup {
			continue
		}
		b := content(200, "kernel-"+k)
		var p catalog.Patch
		e.want(e.request(http.MethodPost, uploadPath(digestOf(b), k, "1."+string(rune('0'+i))), e.admin, b), http.StatusCreated, &p)
		if p.Kernel != k {
			t.Errorf("uploaded for %q, stored kernel %q", k, p.Kernel)
		}
		patches[k] = p
	}
	at, _ := e.token("auth", "edge", "fleet")
	for i, k := range releases {
		reg := map[string]any{"machine_id": "machine-0000000000000" + string(rune('a'+i)), "kernel": k, "arch": testArch, "client_version": "0.1.0"}
		var r struct {
			MachineToken string          `json:"machine_token"`
			Machine      catalog.Machine `json:"machine"`
		}
		e.want(e.request(http.MethodPost, "/v1/client/register", "Bearer "+at, reg), http.StatusCreated, &r)
		mt := "Bearer " + e.keep(r.MachineToken)
		if r.Machine.Kernel != k {
			t.Errorf("registered on %q, machine record says %q", k, r.Machine.Kernel)
		}
		var got catalog.Patch
		e.want(e.request(http.MethodGet, "/v1/client/patch?"+url.Values{"kernel": {k}, "arch": {testArch}}.Encode(), mt, nil), http.StatusOK, &got)
		if got.Digest != patches[k].Digest || got.Kernel != k {
			t.Errorf("machine on %q was offered %s for %q, want %s", k, got.Digest, got.Kernel, patches[k].Digest)
		}
		checkin := map[string]any{"state": "applied", "kernel": k, "arch": testArch, "patch_version": got.Version, "client_version": "0.1.0"}
		e.want(e.request(http.MethodPost, "/v1/client/checkin", mt, checkin), http.StatusOK, nil)
	}
	var list struct{ Patches []catalog.Patch }
	e.want(e.request(http.MethodGet, "/v1/admin/patches?"+url.Values{"kernel": {"6.1.0-18-amd64"}}.Encode(), e.admin, nil), http.StatusOK, &list)
	if len(list.Patches) != 1 || list.Patches[0].Kernel != "6.1.0-18-amd64" {
		t.Errorf("patches listed for 6.1.0-18-amd64: %+v, want exactly its one", list.Patches)
	}
}

func TestMalformedKernelReleasesAreRefusedEverywhere(t *testing.T) {
	e := newEnv(t)
	mt := e.machine("edge", "0123456789abcdef0123")
	at, _ := e.token("auth", "edge", "fleet-b")
	for _, k := range []string{"", "generic", "5.15.0 generic", "5.15.0-107-generic\n", strings.Repeat("5", 65), "5.15.0-" + strings.Repeat("a", 60)} {
		before := e.snapshot()
		b := content(100, "bad-"+k)
		for _, r := range []response{
			e.request(http.MethodPost, uploadPath(digestOf(b), k, "9.9"), e.admin, b),
			e.request(http.MethodPost, "/v1/client/register", "Bearer "+at,
				map[string]any{"machine_id": "fedcba9876543210fedc", "kernel": k, "arch": testArch, "client_version": "0.1.0"}),
			e.request(http.MethodGet, "/v1/client/patch?"+url.Values{"kernel": {k}, "arch": {testArch}}.Encode(), mt, nil),
			e.request(http.MethodPost, "/v1/client/checkin", mt, map[string]any{"state": "unapplied", "kernel": k, "arch": testArch, "patch_version": "", "client_version": "0.1.0"}),
		} {
			if r.StatusCode != http.StatusBadRequest || r.errCode() != "invalid_input" || r.errField() != "kernel" {
				t.Errorf("%s %s with kernel %q: %d %s, want 400 invalid_input on kernel", r.Request.Method, r.Request.URL.Path, k, r.StatusCode, r.body)
			}
		}
		e.unchanged("kernel "+k, before)
	}
}
