package client

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/patchmesh/patchmesh/catalog"
)

// DefaultMachineIDFile is where the machine's ID is read by default.
const DefaultMachineIDFile = "/etc/machine-id"

// ReadMachineID reads and checks a machine ID file such as /etc/machine-id.
func ReadMachineID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("machine ID: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if err := catalog.ValidMachineID(id); err != nil {
		return "", fmt.Errorf("machine ID in %s: %w", path, err)
	}
	return id, nil
}

// readUptime returns the whole seconds in the first field of a
// /proc/uptime-style file, or 0 when it is missing or unreadable: uptime
// is informative and must not stop a check-in.
func readUptime(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0
	}
	f, err := strconv.ParseFloat(fields[0], 64)
	if err != nil || f < 0 || f > 1e12 {
		return 0
	}
	return int64(f)
}

// RunningKernel is the release a machine reports, from the content of
// /proc/version_signature (empty when absent) and `uname -r` and
// `uname -v`: Ubuntu's ABI.BUILD-FLAVOUR when those give it, else
// `uname -r` unchanged.
func RunningKernel(signature, release, version string) string {
	if k, ok := catalog.UbuntuKernel(signature, release, version); ok {
		return k
	}
	return release
}
