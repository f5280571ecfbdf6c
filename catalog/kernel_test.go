package catalog

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func TestValidKernelAcceptsRealReleases(t *testing.T) {
	// Each printed by a real machine's uname -r or /proc/version_signature.
	for _, k := range []string{
		"5.15.0-107-generic",                 // Ubuntu 22.04 uname -r
		"5.15.0-107.117-generic",             // Ubuntu 22.04 /proc/version_signature
		"5.15.0-107.117~20.04.1-generic",     // Ubuntu 20.04 HWE /proc/version_signature
		"6.8.0-1008-aws",                     // Ubuntu cloud flavour
		"6.8.0-45.45-lowlatency",             // Ubuntu lowlatency
		"6.1.0-18-amd64",                     // Debian 12
		"6.1.0-18-cloud-arm64",               // Debian 12 cloud image
		"6.5.6-300.fc39.x86_64",              // Fedora 39
		"5.14.0-362.8.1.el9_3.x86_64",        // RHEL 9.3, Rocky, Alma
		"4.18.0-513.5.1.el8_9.x86_64",        // RHEL 8.9
		"5.14.21-150500.55.39-default",       // SUSE Linux Enterprise 15 SP5
		"6.7.4-arch1-1",                      // Arch Linux
		"5.15.146.1-microsoft-standard-WSL2", // WSL2
		"6.1.21-v8+",                         // Raspberry Pi OS
		"6.9.0-rc1",                          // mainline release candidate
	} {
		if err := ValidKernel(k); err != nil {
			t.Errorf("ValidKernel(%q): want valid, got %v", k, err)
		}
	}
}

func TestValidKernelAcceptsThisMachine(t *testing.T) {
	out, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatalf("uname -r: %v", err)
	}
	k := strings.TrimSpace(string(out))
	if err := ValidKernel(k); err != nil {
		t.Errorf("ValidKernel(%q), this machine's uname -r: want valid, got %v", k, err)
	}
}

func TestValidKernelRejectsMalformedReleases(t *testing.T) {
	for _, k := range []string{
		"",
		"5",
		"5.15",
		"generic",
		"v5.15.0",
		"5.15.0 generic",
		"5.15.0-107-generic\n",
		"../../etc/passwd",
		"5.15.0/../x",
		"5.15.0-107-generic;rm",
		"5.15.0-107-generic-",
		"5.15.0-ü",
		"12345.1.0",
		"5.15.0-" + strings.Repeat("a", MaxKernelLen-6), // one byte over
	} {
		err := ValidKernel(k)
		var ie *InvalidError
		if !errors.As(err, &ie) || ie.Field != "kernel" {
			t.Errorf("ValidKernel(%q): want an invalid kernel error, got %v", k, err)
		}
	}
	if k := "5.15.0-" + strings.Repeat("a", MaxKernelLen-7); ValidKernel(k) != nil {
		t.Errorf("ValidKernel of %d bytes: want valid, got %v", len(k), ValidKernel(k))
	}
}

func TestUbuntuKernel(t *testing.T) {
	tests := []struct {
		name                       string
		signature, release, uversn string
		want                       string // "" means not an Ubuntu release
	}{
		{"version signature", "Ubuntu 5.15.0-107.117-generic 5.15.149\n", "5.15.0-107-generic", "#117-Ubuntu SMP Fri Apr 26 12:26:49 UTC 2024", "5.15.0-107.117-generic"},
		{"HWE signature", "Ubuntu 5.15.0-107.117~20.04.1-generic 5.15.149", "5.15.0-107-generic", "#117~20.04.1-Ubuntu SMP", "5.15.0-107.117~20.04.1-generic"},
		{"aws flavour", "Ubuntu 6.8.0-1008.8-aws 6.8.1", "6.8.0-1008-aws", "#8-Ubuntu SMP", "6.8.0-1008.8-aws"},
		{"no signature, uname -v", "", "5.15.0-107-generic", "#117-Ubuntu SMP Fri Apr 26 12:26:49 UTC 2024", "5.15.0-107.117-generic"},
		{"no signature, HWE uname -v", "", "5.15.0-107-generic", "#117~20.04.1-Ubuntu SMP PREEMPT", "5.15.0-107.117~20.04.1-generic"},
		{"signature of another kernel", "Ubuntu 5.15.0-106.116-generic 5.15.148", "5.15.0-107-generic", "#117-Ubuntu SMP", ""},
		{"signature of another flavour", "Ubuntu 5.15.0-107.117-lowlatency 5.15.149", "5.15.0-107-generic", "#117-Ubuntu SMP", ""},
		{"Debian", "", "6.1.0-18-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)", ""},
		{"Fedora", "", "6.5.6-300.fc39.x86_64", "#1 SMP PREEMPT_DYNAMIC Fri Oct  6 19:57:21 UTC 2023", ""},
		{"mainline", "", "6.18.44-custom", "#1 SMP PREEMPT_DYNAMIC @0", ""},
		{"Ubuntu-looking uname -v without a build", "", "5.15.0-107-generic", "#-Ubuntu SMP", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := UbuntuKernel(tt.signature, tt.release, tt.uversn)
			if ok != (tt.want != "") || got != tt.want {
				t.Errorf("UbuntuKernel(%q, %q, %q) = %q, %v; want %q", tt.signature, tt.release, tt.uversn, got, ok, tt.want)
			}
		})
	}
}
