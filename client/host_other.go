//go:build !linux

package client

import "errors"

// Uname is only known on Linux, the one kernel patchmesh patches; elsewhere
// the kernel and arch must be given explicitly.
func Uname() (kernel, arch string, err error) {
	return "", "", errors.New("uname: kernel live patches are Linux-only; give the kernel and arch explicitly")
}
