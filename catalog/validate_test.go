package catalog

import (
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

func validPatch() Patch {
	return Patch{
		Digest:  "sha256:" + strings.Repeat("ab", 32),
		Kernel:  "5.15.0-107.117-generic",
		Arch:    "x86_64",
		Version: "107.1",
		Size:    1,
		CVEs:    []string{"CVE-2024-1086"},
	}
}

func TestPatchValidateNamesTheBrokenField(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Patch)
		field string // "" means valid
	}{
		{"valid", func(*Patch) {}, ""},
		{"uppercase digest", func(p *Patch) { p.Digest = "sha256:" + strings.Repeat("AB", 32) }, "digest"},
		{"short digest", func(p *Patch) { p.Digest = "sha256:abc" }, "digest"},
		{"other algorithm", func(p *Patch) { p.Digest = "md5:" + strings.Repeat("ab", 32) }, "digest"},
		{"kernel without flavour", func(p *Patch) { p.Kernel = "5.15.0-107.117" }, ""},
		{"kernel with space", func(p *Patch) { p.Kernel = "5.15.0-107 generic" }, "kernel"},
		{"kernel with path", func(p *Patch) { p.Kernel = "../../etc/passwd" }, "kernel"},
		{"lowlatency kernel", func(p *Patch) { p.Kernel = "6.8.0-45.45-lowlatency" }, ""},
		{"unknown arch", func(p *Patch) { p.Arch = "i386" }, "arch"},
		{"version with letters", func(p *Patch) { p.Version = "107.1a" }, "version"},
		{"version with five parts", func(p *Patch) { p.Version = "1.2.3.4.5" }, "version"},
		{"zero size", func(p *Patch) { p.Size = 0 }, "size"},
		{"bad CVE", func(p *Patch) { p.CVEs = []string{"CVE-24-1"} }, "cves"},
		{"too many CVEs", func(p *Patch) { p.CVEs = slices.Repeat([]string{"CVE-2024-1086"}, MaxCVEs+1) }, "cves"},
		{"long description", func(p *Patch) { p.Description = strings.Repeat("x", MaxDescriptionLen+1) }, "description"},
		{"control character", func(p *Patch) { p.Description = "fix\x1b[2J" }, "description"},
		{"newline allowed", func(p *Patch) { p.Description = "line one\nline two" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validPatch()
			tt.edit(&p)
			err := p.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			var ie *InvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("want *InvalidError on %s, got %v", tt.field, err)
			}
			if ie.Field != tt.field {
				t.Errorf("want field %q, got %q (%v)", tt.field, ie.Field, err)
			}
		})
	}
}

func TestNameMachineIDStateAndClientVersionRules(t *testing.T) {
	tests := []struct {
		what string
		err  error
		ok   bool
	}{
		{"tier name", ValidName("tier", "dc-east.1"), true},
		{"uppercase name", ValidName("tier", "Stable"), false},
		{"name starting with dash", ValidName("tier", "-x"), false},
		{"name of 65 chars", ValidName("tier", strings.Repeat("a", 65)), false},
		{"machine-id file", ValidMachineID("0123456789abcdef0123456789abcdef"), true},
		{"short machine id", ValidMachineID("abc"), false},
		{"machine id with space", ValidMachineID("0123456789abcdef 0123456789abcdef"), false},
		{"known state", ValidState(StateApplied), true},
		{"unknown state", ValidState("patched"), false},
		{"client version", ValidClientVersion("1.2.3+dev"), true},
		{"empty client version", ValidClientVersion(""), false},
	}
	for _, tt := range tests {
		if (tt.err == nil) != tt.ok {
			t.Errorf("%s: want ok=%v, got %v", tt.what, tt.ok, tt.err)
		}
	}
}

func TestVersionKeyOrdersNumerically(t *testing.T) {
	want := []string{"1", "9.1", "9.10", "107.1", "107.1.1", "107.2", "107.10", "1000"}
	got := slices.Clone(want)
	slices.Reverse(got)
	sort.Slice(got, func(i, j int) bool { return VersionKey(got[i]) < VersionKey(got[j]) })
	if !slices.Equal(got, want) {
		t.Errorf("ordered by VersionKey: want %v, got %v", want, got)
	}
}

func TestTokenLive(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		tok  Token
		want bool
	}{
		{"no expiry", Token{}, true},
		{"expires later", Token{Expires: now.Add(time.Second)}, true},
		{"expires now", Token{Expires: now}, false},
		{"revoked", Token{Revoked: now.Add(-time.Hour)}, false},
	}
	for _, tt := range tests {
		if got := tt.tok.Live(now); got != tt.want {
			t.Errorf("%s: want Live=%v, got %v", tt.name, tt.want, got)
		}
	}
}
