package catalog

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// InvalidError says which field of an input broke which rule. It wraps no
// other error: the API turns it into a 400 with the field named.
type InvalidError struct {
	Field   string
	Message string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Message }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// Limits on free-form fields. They bound what one request can make a node
// store, and keep rows small enough for the check-in path to stay fast.
const (
	MaxNameLen        = 64
	MaxDescriptionLen = 4096
	MaxCVEs           = 256
)

var (
	digestRE  = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	versionRE = regexp.MustCompile(`^[0-9]{1,9}(\.[0-9]{1,9}){0,3}$`)
	cveRE     = regexp.MustCompile(`^CVE-[0-9]{4}-[0-9]{4,9}$`)
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	// A machine ID as /etc/machine-id holds it, or any opaque 16–128 char ID.
	machineIDRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{16,128}$`)
	clientVerRE = regexp.MustCompile(`^[A-Za-z0-9.+_-]{1,64}$`)
	// A node name as node.name allows it.
	nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	// An ed25519 public key in its text form: 32 bytes are 43 characters
	// of unpadded URL-safe base64.
	nodeKeyRE   = regexp.MustCompile(`^ed25519:[A-Za-z0-9_-]{43}$`)
	nodeKeyIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

// MaxNodeURLLen bounds one URL of a node admission.
const MaxNodeURLLen = 512

// Architectures patchmesh serves, named as `uname -m` prints them.
var Architectures = []string{"x86_64", "aarch64", "s390x", "ppc64le", "riscv64"}

// ValidDigest checks a content address.
func ValidDigest(d string) error {
	if !digestRE.MatchString(d) {
		return invalid("digest", "must be sha256: followed by 64 lowercase hex digits")
	}
	return nil
}

// ValidArch checks an architecture name.
func ValidArch(a string) error {
	if !slices.Contains(Architectures, a) {
		return invalid("arch", "must be one of %s", strings.Join(Architectures, ", "))
	}
	return nil
}

// ValidVersion checks a patch version: dot-separated numbers, e.g. 107.1.
func ValidVersion(v string) error {
	if !versionRE.MatchString(v) {
		return invalid("version", "must be up to four dot-separated numbers, such as 107.1")
	}
	return nil
}

// ValidName checks a tier or token name.
func ValidName(field, n string) error {
	if !nameRE.MatchString(n) {
		return invalid(field, "must be 1-%d characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit", MaxNameLen)
	}
	return nil
}

// ValidMachineID checks a raw machine ID before it is hashed.
func ValidMachineID(id string) error {
	if !machineIDRE.MatchString(id) {
		return invalid("machine_id", "must be 16-128 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'")
	}
	return nil
}

// ValidState checks a reported machine state.
func ValidState(s MachineState) error {
	if !slices.Contains(MachineStates, s) {
		names := make([]string, len(MachineStates))
		for i, st := range MachineStates {
			names[i] = string(st)
		}
		return invalid("state", "must be one of %s", strings.Join(names, ", "))
	}
	return nil
}

// ValidClientVersion checks the version string a client reports.
func ValidClientVersion(v string) error {
	if !clientVerRE.MatchString(v) {
		return invalid("client_version", "must be 1-64 characters of A-Z, a-z, 0-9, '.', '+', '_' or '-'")
	}
	return nil
}

// Validate checks every field a patch is created with. Created and Tiers are
// set by the store, so they are not checked here.
func (p Patch) Validate() error {
	if err := ValidDigest(p.Digest); err != nil {
		return err
	}
	if err := ValidKernel(p.Kernel); err != nil {
		return err
	}
	if err := ValidArch(p.Arch); err != nil {
		return err
	}
	if err := ValidVersion(p.Version); err != nil {
		return err
	}
	if p.Size <= 0 {
		return invalid("size", "must be positive")
	}
	if len(p.CVEs) > MaxCVEs {
		return invalid("cves", "at most %d CVEs per patch", MaxCVEs)
	}
	for _, c := range p.CVEs {
		if !cveRE.MatchString(c) {
			return invalid("cves", "%q is not a CVE ID such as CVE-2024-1086", c)
		}
	}
	if len(p.Description) > MaxDescriptionLen {
		return invalid("description", "at most %d bytes", MaxDescriptionLen)
	}
	if strings.ContainsFunc(p.Description, func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' }) {
		return invalid("description", "must not contain control characters")
	}
	return nil
}

// VersionKey turns a version into a string whose byte order is the numeric
// order of versions ("9.1" < "107.1"), so stores can ORDER BY it and index it.
// It assumes v passed ValidVersion.
func VersionKey(v string) string {
	var b strings.Builder
	for i, part := range strings.Split(v, ".") {
		if i > 0 {
			b.WriteByte('.')
		}
		n, _ := strconv.ParseUint(part, 10, 64)
		fmt.Fprintf(&b, "%010d", n)
	}
	return b.String()
}

// ValidNodeName checks a node's name as node.name allows it.
func ValidNodeName(field, n string) error {
	if !nodeNameRE.MatchString(n) {
		return invalid(field, "must be 1-63 characters of A-Z, a-z, 0-9, '.', '_' or '-', starting with a letter or digit")
	}
	return nil
}

// ValidNodeURL checks a URL machines are to reach a node at: an absolute
// http or https URL with a host and nothing a base URL does not need.
func ValidNodeURL(field, u string) error {
	p, err := url.Parse(u)
	if err != nil || len(u) > MaxNodeURLLen || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" ||
		p.User != nil || p.RawQuery != "" || p.Fragment != "" {
		return invalid(field, "must be an http(s) base URL of at most %d characters, without credentials, query or fragment", MaxNodeURLLen)
	}
	return nil
}

// Validate checks a node admission: name, key and key ID in their forms,
// and 1 to MaxNodeURLs distinct URLs. That KeyID is the ID of Key is the
// federation package's to check; catalog does not derive key IDs.
func (n Node) Validate() error {
	if err := ValidNodeName("name", n.Name); err != nil {
		return err
	}
	if !nodeKeyRE.MatchString(n.Key) {
		return invalid("key", `must be an ed25519 public key, "ed25519:" and 43 characters of base64url`)
	}
	if !nodeKeyIDRE.MatchString(n.KeyID) {
		return invalid("key_id", "must be a key ID of 16 lowercase hex digits")
	}
	if len(n.URLs) == 0 || len(n.URLs) > MaxNodeURLs {
		return invalid("urls", "must list 1 to %d URLs", MaxNodeURLs)
	}
	for i, u := range n.URLs {
		if err := ValidNodeURL(fmt.Sprintf("urls[%d]", i), u); err != nil {
			return err
		}
		if slices.Contains(n.URLs[:i], u) {
			return invalid(fmt.Sprintf("urls[%d]", i), "is listed twice")
		}
	}
	return nil
}
