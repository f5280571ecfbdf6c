package catalog

import (
	"strings"
	"testing"
)

// FuzzValidKernel: ValidKernel never panics, and what it accepts is
// bounded and free of the bytes a path, a log line or a query could be
// broken by.
func FuzzValidKernel(f *testing.F) {
	for _, k := range []string{"5.15.0-107.117-generic", "6.8.0-45.45-generic", "5.14.0-427.13.1.el9_4.x86_64",
		"6.1.0-18-amd64", "", "5.15", "../../etc/passwd", "5.15.0-107-generic\n"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, k string) {
		if ValidKernel(k) != nil {
			return
		}
		if len(k) > 256 || strings.ContainsAny(k, "/\\ \t\r\n\x00\"'") {
			t.Fatalf("ValidKernel accepted %q", k)
		}
	})
}
