package client

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// VersionSignatureFile is where Ubuntu kernels expose their full release,
// ABI.BUILD-FLAVOUR, which `uname -r` leaves out.
const VersionSignatureFile = "/proc/version_signature"

// Uname returns the running kernel's release, as patches are matched by
// it, and the machine architecture as `uname -m` prints it.
//
// The release is Ubuntu's ABI.BUILD-FLAVOUR (5.15.0-107.117-generic) from
// /proc/version_signature, or built from `uname -r` and `uname -v` when
// that file is missing; on every other distribution it is `uname -r`.
// See catalog.UbuntuKernel.
func Uname() (kernel, arch string, err error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", "", fmt.Errorf("uname: %w", err)
	}
	sig, err := os.ReadFile(VersionSignatureFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("kernel release: %w", err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	return RunningKernel(string(sig), release, unix.ByteSliceToString(u.Version[:])),
		unix.ByteSliceToString(u.Machine[:]), nil
}
