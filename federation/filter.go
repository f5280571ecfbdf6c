package federation

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/patchmesh/patchmesh/catalog"
)

// Filter narrows which patches a link takes from its upstream. A zero
// field matches everything. A filtered-out patch's record is still logged
// (the tier's hub sequence must stay contiguous for this node's own
// downstreams), but its blob is not fetched and it never reaches the
// catalog.
type Filter struct {
	// Archs lists the architectures to take, e.g. x86_64, aarch64.
	Archs []string
	// Flavours lists the kernel flavours to take: the part of the
	// release after the ABI, e.g. generic, aws, azure.
	Flavours []string
	// MinKernel is the oldest kernel to take, as a release prefix of
	// numbers: "5.15", "5.15.0-100". Releases below it are skipped.
	MinKernel string
}

// Validate checks that MinKernel parses.
func (f Filter) Validate() error {
	if f.MinKernel == "" {
		return nil
	}
	if _, err := kernelNumbers(f.MinKernel); err != nil {
		return fmt.Errorf("min_kernel %q: %w", f.MinKernel, err)
	}
	return nil
}

// Match says whether the link takes p.
func (f Filter) Match(p catalog.Patch) bool {
	if len(f.Archs) > 0 && !slices.Contains(f.Archs, p.Arch) {
		return false
	}
	if len(f.Flavours) > 0 && !slices.Contains(f.Flavours, flavour(p.Kernel)) {
		return false
	}
	if f.MinKernel != "" {
		min, err := kernelNumbers(f.MinKernel)
		if err != nil {
			return false
		}
		if compareNumbers(leadingNumbers(p.Kernel), min) < 0 {
			return false
		}
	}
	return true
}

// flavour returns what follows the second '-' of a release such as
// 5.15.0-107.117-generic or 6.1.0-18-amd64 (Ubuntu's and Debian's forms);
// a release without one, such as Fedora's 6.5.6-300.fc39.x86_64, has none.
func flavour(kernel string) string {
	_, rest, _ := strings.Cut(kernel, "-")
	_, fl, _ := strings.Cut(rest, "-")
	return fl
}

// kernelNumbers reads "5.15.0-107.117" as [5 15 0 107 117].
func kernelNumbers(s string) ([]uint64, error) {
	parts := strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' })
	if len(parts) == 0 {
		return nil, fmt.Errorf("want numbers such as 5.15 or 5.15.0-100")
	}
	out := make([]uint64, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number; want numbers such as 5.15 or 5.15.0-100", p)
		}
		out[i] = n
	}
	return out, nil
}

// leadingNumbers reads the numbers a release starts with, up to its first
// field that is not one: 5.15.0-107.117-generic gives [5 15 0 107 117],
// 6.5.6-300.fc39.x86_64 gives [6 5 6 300].
func leadingNumbers(kernel string) []uint64 {
	var out []uint64
	for _, p := range strings.FieldsFunc(kernel, func(r rune) bool { return r == '.' || r == '-' }) {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			break
		}
		out = append(out, n)
	}
	return out
}

// compareNumbers compares a release to a prefix: only the prefix's
// length counts, so 5.15.0-107 is not below 5.15.
func compareNumbers(got, min []uint64) int {
	for i, m := range min {
		if i >= len(got) {
			return -1
		}
		if got[i] != m {
			if got[i] < m {
				return -1
			}
			return 1
		}
	}
	return 0
}
