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

// renameDir is os.Rename.
func renameDir(from, to string) error { return os.Rename(from, to) }

// renameFile is os.Rename.
func renameFile(from, to string) error { return os.Rename(from, to) }

// loadRegular is not available here: Load reads the slow way.
func loadRegular(string, string) (Entry, []byte, bool) { return Entry{}, nil, false }

// createFile writes data to the new file path (writeTemp, then a rename).
func createFile(path string, _ dirInfo, data []byte, perm fs.FileMode, uid, gid int, syncNow bool) (string, error) {
	tmp, err := writeTemp(path, data, perm, uid, gid, syncNow)
	if err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return path, nil
}
