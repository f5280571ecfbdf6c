package federation

import (
	"testing"

	"github.com/patchmesh/patchmesh/catalog"
)

func TestFilterMatch(t *testing.T) {
	p := func(kernel, arch string) catalog.Patch { return catalog.Patch{Kernel: kernel, Arch: arch} }
	tests := []struct {
		name string
		f    Filter
		p    catalog.Patch
		want bool
	}{
		{"zero filter takes all", Filter{}, p("5.15.0-107.117-generic", "x86_64"), true},
		{"arch listed", Filter{Archs: []string{"x86_64"}}, p("5.15.0-107.117-generic", "x86_64"), true},
		{"arch not listed", Filter{Archs: []string{"aarch64"}}, p("5.15.0-107.117-generic", "x86_64"), false},
		{"flavour listed", Filter{Flavours: []string{"aws", "generic"}}, p("5.15.0-107.117-generic", "x86_64"), true},
		{"flavour not listed", Filter{Flavours: []string{"aws"}}, p("5.15.0-107.117-generic", "x86_64"), false},
		{"kernel at minimum prefix", Filter{MinKernel: "5.15"}, p("5.15.0-107.117-generic", "x86_64"), true},
		{"kernel above minimum", Filter{MinKernel: "5.4"}, p("5.15.0-107.117-generic", "x86_64"), true},
		{"kernel below minimum", Filter{MinKernel: "6.1"}, p("5.15.0-107.117-generic", "x86_64"), false},
		{"ABI below minimum", Filter{MinKernel: "5.15.0-108"}, p("5.15.0-107.117-generic", "x86_64"), false},
		{"ABI at minimum", Filter{MinKernel: "5.15.0-107"}, p("5.15.0-107.117-generic", "x86_64"), true},
		{"numeric, not text, order", Filter{MinKernel: "5.9"}, p("5.15.0-1.1-generic", "x86_64"), true},
		{"Debian flavour", Filter{Flavours: []string{"amd64"}}, p("6.1.0-18-amd64", "x86_64"), true},
		{"Debian release at minimum ABI", Filter{MinKernel: "6.1.0-18"}, p("6.1.0-18-amd64", "x86_64"), true},
		{"Fedora release above minimum", Filter{MinKernel: "6.5.6-300"}, p("6.5.6-300.fc39.x86_64", "x86_64"), true},
		{"RHEL release below minimum", Filter{MinKernel: "5.15"}, p("5.14.0-362.8.1.el9_3.x86_64", "x86_64"), false},
		{"Fedora release has no flavour", Filter{Flavours: []string{"generic"}}, p("6.5.6-300.fc39.x86_64", "x86_64"), false},
		{"Ubuntu HWE release above minimum", Filter{MinKernel: "5.15.0-100"}, p("5.15.0-107.117~20.04.1-generic", "x86_64"), true},
		{"all must hold", Filter{Archs: []string{"x86_64"}, Flavours: []string{"aws"}}, p("5.15.0-107.117-generic", "x86_64"), false},
	}
	for _, tt := range tests {
		if got := tt.f.Match(tt.p); got != tt.want {
			t.Errorf("%s: Match(%s %s) with %+v: want %v, got %v", tt.name, tt.p.Kernel, tt.p.Arch, tt.f, tt.want, got)
		}
	}
}

func TestFilterValidate(t *testing.T) {
	for _, ok := range []string{"", "5", "5.15", "5.15.0-100"} {
		if err := (Filter{MinKernel: ok}).Validate(); err != nil {
			t.Errorf("min kernel %q: want valid, got %v", ok, err)
		}
	}
	for _, bad := range []string{"five", "5.x", "-", "5.15-generic"} {
		if err := (Filter{MinKernel: bad}).Validate(); err == nil {
			t.Errorf("min kernel %q: want an error, got none", bad)
		}
	}
}
