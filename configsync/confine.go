package configsync

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// errBelowSymlink is returned for a path with a symbolic link in a
// component above its last.
var errBelowSymlink = errors.New("a path component is a symbolic link")

// anchorOf returns the file system path of the anchor of logical path p
// and p relative to it; p must be covered by a sync path.
func (s *Store) anchorOf(p string) (anchor, rel string, err error) {
	r := s.root(p)
	if r == "" {
		return "", "", fmt.Errorf("configsync: %q is not below a sync path", p)
	}
	parent := filepath.Dir(r)
	rel = strings.TrimPrefix(p[len(parent):], "/")
	return filepath.Dir(s.fsPath(r)), rel, nil
}

// dirHandle is an open directory below an anchor, found without a
// symlink; path is its file system path (messages, fsync by syncfs).
type dirHandle struct {
	fd   int
	path string
}
