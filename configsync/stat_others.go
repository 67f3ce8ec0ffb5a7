//go:build !linux

package configsync

import (
	"errors"
	"io/fs"
	"os"
	"time"
)

// statKey is empty off Linux: digests are never cached there.
type statKey struct{}

func (statKey) changed() time.Time { return time.Time{} }

func statSignature(fs.FileInfo) (statKey, bool) { return statKey{}, false }

// fileOwner is unknown off Linux.
func fileOwner(fs.FileInfo) (uid, gid int) { return -1, -1 }

// chownFile is a no-op off Linux, where ownership is not synchronized.
func chownFile(*os.File, int, int) error { return nil }

func lchown(string, int, int) error { return nil }

// syncFileSystems is not available here: callers fsync each file.
func syncFileSystems(map[string]bool) error { return errors.ErrUnsupported }
