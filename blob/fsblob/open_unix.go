//go:build unix

package fsblob

import (
	"io/fs"
	"os"
	"syscall"
)

// openRead opens a committed blob for reading. It skips os.Open's attempt
// to add the file to the runtime's network poller, which on Linux costs
// four system calls per open (fcntl to set O_NONBLOCK and two to clear it
// again, around an epoll_ctl that a regular file always fails) on every
// download. A regular file is read (or sent with sendfile) in blocking
// mode either way.
func openRead(p string) (*os.File, error) {
	for {
		fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: p, Err: err}
		}
		return os.NewFile(uintptr(fd), p), nil
	}
}
