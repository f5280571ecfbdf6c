//go:build !unix

package fsblob

import "os"

// openRead opens a committed blob for reading.
func openRead(p string) (*os.File, error) { return os.Open(p) }
