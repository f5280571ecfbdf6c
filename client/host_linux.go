package client

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Uname returns the running kernel's release and machine architecture as
// `uname -r` and `uname -m` print them.
func Uname() (kernel, arch string, err error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Machine[:]), nil
}
