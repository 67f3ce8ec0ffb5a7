//go:build !linux

package configsync

import (
	"io/fs"
	"os"
	"path/filepath"
)

// dirInfo is empty off Linux, where ownership is not synchronized.
type dirInfo struct{}

func lookDir(dir string) (dirInfo, error) {
	_, err := os.Lstat(dir)
	return dirInfo{}, err
}

// createTemp writes data to a new temporary file in dir (writeTemp).
func createTemp(dir string, _ dirInfo, data []byte, perm fs.FileMode, uid, gid int, syncNow bool) (string, error) {
	// writeTemp creates its file beside the path it is given: any name in dir.
	return writeTemp(filepath.Join(dir, "file"), data, perm, uid, gid, syncNow)
}

// renameFile is os.Rename.
func renameFile(from, to string) error { return os.Rename(from, to) }

// loadRegular is not available here: Load reads the slow way.
func loadRegular(string, string) (Entry, []byte, bool) { return Entry{}, nil, false }
