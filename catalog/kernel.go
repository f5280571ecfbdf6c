package catalog

import (
	"regexp"
	"strings"
)

// MaxKernelLen is the longest kernel release accepted: Linux keeps the
// release in a 65-byte field (struct new_utsname), NUL included.
const MaxKernelLen = 64

// kernelRE is the grammar of a kernel release as `uname -r` prints it on
// real machines: MAJOR.MINOR.SUBLEVEL numbers (Linux prints SUBLEVEL
// even when it is 0), then optionally a
// separator (- + . _ ~) and the distribution's suffix of letters, digits
// and those separators. Examples it accepts:
//
//	5.15.0-107-generic              Ubuntu's uname -r (ABI-FLAVOUR)
//	5.15.0-107.117-generic          Ubuntu's /proc/version_signature (ABI.BUILD-FLAVOUR)
//	5.15.0-107.117~20.04.1-generic  an Ubuntu HWE kernel
//	6.1.0-18-amd64                  Debian
//	6.5.6-300.fc39.x86_64           Fedora
//	5.14.0-362.8.1.el9_3.x86_64     RHEL and its rebuilds
//	5.15.146.1-microsoft-standard-WSL2, 6.1.21-v8+, 6.9.0-rc1
var kernelRE = regexp.MustCompile(`^[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,6}([-+._~][A-Za-z0-9+._~-]*)?$`)

// ValidKernel checks a kernel release against the grammar of kernelRE,
// at most MaxKernelLen bytes and ending in a letter, a digit or '+'.
// It says nothing of which distribution printed it: patches are matched
// to machines by the exact release (see docs/api.md, "Kernel releases").
func ValidKernel(k string) error {
	if len(k) > MaxKernelLen || !kernelRE.MatchString(k) || !kernelEnd(k) {
		return invalid("kernel", "must be a kernel release as uname -r prints it: up to %d characters, numbers MAJOR.MINOR.SUBLEVEL then optionally letters, digits and - + . _ ~ (ending in a letter, digit or +), such as 5.15.0-107.117-generic, 6.1.0-18-amd64 or 6.5.6-300.fc39.x86_64", MaxKernelLen)
	}
	return nil
}

func kernelEnd(k string) bool {
	c := k[len(k)-1]
	return c == '+' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// UbuntuKernel turns what an Ubuntu machine exposes into the release
// patches are matched by, ABI.BUILD-FLAVOUR (5.15.0-107.117-generic).
//
// signature is the content of /proc/version_signature, e.g.
// "Ubuntu 5.15.0-107.117-generic 5.15.149"; when it is given, its second
// field is the answer, provided it is the same kernel as release (the
// `uname -r` form, 5.15.0-107-generic): same version and ABI, same flavour.
// Without a signature, the build comes from version (`uname -v`, e.g.
// "#117-Ubuntu SMP ..." or "#117~20.04.1-Ubuntu SMP ...").
//
// ok is false when neither source gives an Ubuntu release consistent with
// release; the caller then uses release as it is.
func UbuntuKernel(signature, release, version string) (kernel string, ok bool) {
	base, abi, flavour, found := splitUbuntuRelease(release)
	if !found {
		return "", false
	}
	if f := strings.Fields(signature); len(f) >= 2 && f[0] == "Ubuntu" {
		k := f[1]
		prefix := base + "-" + abi + "."
		if strings.HasPrefix(k, prefix) && strings.HasSuffix(k, "-"+flavour) && len(k) > len(prefix)+len(flavour)+1 && ValidKernel(k) == nil {
			return k, true
		}
		return "", false
	}
	// uname -v: "#117-Ubuntu SMP PREEMPT ..." or "#117~20.04.1-Ubuntu SMP ...".
	first, _, _ := strings.Cut(strings.TrimSpace(version), " ")
	build, isUbuntu := strings.CutSuffix(strings.TrimPrefix(first, "#"), "-Ubuntu")
	if !isUbuntu || !strings.HasPrefix(first, "#") || build == "" || build[0] < '0' || build[0] > '9' {
		return "", false
	}
	k := base + "-" + abi + "." + build + "-" + flavour
	if ValidKernel(k) != nil {
		return "", false
	}
	return k, true
}

// ubuntuReleaseRE is Ubuntu's `uname -r`: VERSION-ABI-FLAVOUR.
var ubuntuReleaseRE = regexp.MustCompile(`^([0-9]+\.[0-9]+\.[0-9]+)-([0-9]+)-([a-z][a-z0-9-]*)$`)

func splitUbuntuRelease(release string) (base, abi, flavour string, ok bool) {
	m := ubuntuReleaseRE.FindStringSubmatch(release)
	if m == nil {
		return "", "", "", false
	}
	return m[1], m[2], m[3], true
}
