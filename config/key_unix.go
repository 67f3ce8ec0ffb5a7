//go:build unix

package config

import (
	"io/fs"
	"os"
	"syscall"
)

// errLoop is what an O_NOFOLLOW open of a symbolic link fails with.
var errLoop error = syscall.ELOOP

// openNoFollow opens path read-only without following a symbolic link in
// its last component and without blocking on a FIFO.
func openNoFollow(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}

// fileOwner returns the uid that owns fi.
func fileOwner(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
