package client

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/patchmesh/patchmesh/catalog"
)

func TestRunningKernel(t *testing.T) {
	tests := []struct {
		name                        string
		signature, release, version string
		want                        string
	}{
		{"Ubuntu with version_signature", "Ubuntu 5.15.0-107.117-generic 5.15.149\n", "5.15.0-107-generic", "#117-Ubuntu SMP Fri Apr 26 12:26:49 UTC 2024", "5.15.0-107.117-generic"},
		{"Ubuntu without version_signature", "", "5.15.0-107-generic", "#117-Ubuntu SMP Fri Apr 26 12:26:49 UTC 2024", "5.15.0-107.117-generic"},
		{"Ubuntu with a signature that disagrees", "Ubuntu 6.8.0-45.45-generic 6.8.12", "5.15.0-107-generic", "#117-Ubuntu SMP", "5.15.0-107-generic"},
		{"Debian", "", "6.1.0-18-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)", "6.1.0-18-amd64"},
		{"Fedora", "", "6.5.6-300.fc39.x86_64", "#1 SMP PREEMPT_DYNAMIC Fri Oct  6 19:57:21 UTC 2023", "6.5.6-300.fc39.x86_64"},
		{"RHEL", "", "5.14.0-362.8.1.el9_3.x86_64", "#1 SMP PREEMPT_DYNAMIC Tue Oct 3 11:12:36 EDT 2023", "5.14.0-362.8.1.el9_3.x86_64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := RunningKernel(tt.signature, tt.release, tt.version)
			if got != tt.want {
				t.Errorf("RunningKernel(%q, %q, %q) = %q, want %q", tt.signature, tt.release, tt.version, got, tt.want)
			}
			if err := catalog.ValidKernel(got); err != nil {
				t.Errorf("the kernel reported, %q, is refused by the server's rule: %v", got, err)
			}
		})
	}
}

// TestUnameOnThisMachine checks the default a client uses here: this
// machine's uname -r (or, on Ubuntu, its version_signature's release),
// which the server must accept.
func TestUnameOnThisMachine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("kernel releases are read on Linux only")
	}
	kernel, arch, err := Uname()
	if err != nil {
		t.Fatalf("Uname: %v", err)
	}
	r, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatalf("uname -r: %v", err)
	}
	v, err := exec.Command("uname", "-v").Output()
	if err != nil {
		t.Fatalf("uname -v: %v", err)
	}
	m, err := exec.Command("uname", "-m").Output()
	if err != nil {
		t.Fatalf("uname -m: %v", err)
	}
	sig, _ := os.ReadFile(VersionSignatureFile)
	want := RunningKernel(string(sig), strings.TrimSpace(string(r)), strings.TrimSpace(string(v)))
	if kernel != want {
		t.Errorf("Uname kernel = %q, want %q (uname -r %q)", kernel, want, strings.TrimSpace(string(r)))
	}
	if err := catalog.ValidKernel(kernel); err != nil {
		t.Errorf("this machine's kernel %q is refused: %v", kernel, err)
	}
	if a := strings.TrimSpace(string(m)); arch != a {
		t.Errorf("Uname arch = %q, want uname -m's %q", arch, a)
	}
}
