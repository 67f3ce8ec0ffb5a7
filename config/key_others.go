//go:build !unix

package config

import (
	"errors"
	"io/fs"
	"os"
)

// errLoop is never returned where there is no O_NOFOLLOW.
var errLoop = errors.New("symbolic link")

// openNoFollow opens path read-only; the Lstat check stands in for
// O_NOFOLLOW (racy, but hagentd runs on Linux only).
func openNoFollow(path string) (*os.File, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		return nil, &fs.PathError{Op: "open", Path: path, Err: errLoop}
	}
	return os.Open(path)
}

// fileOwner is unknown here.
func fileOwner(fs.FileInfo) (int, bool) { return 0, false }
