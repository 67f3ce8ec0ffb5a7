package configsync

import (
	"io/fs"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// statKey is the part of a file's stat that changes whenever its content
// may have: a cached digest is valid while the key is unchanged.
type statKey struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // ns
}

func (k statKey) changed() time.Time { return time.Unix(0, max(k.mtime, k.ctime)) }

func statSignature(fi fs.FileInfo) (statKey, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return statKey{}, false
	}
	return statKey{
		dev: uint64(st.Dev), ino: st.Ino, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
	}, true
}

func fileOwner(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}

// chownFile sets the owner of f unless it already has it (so a non-root
// agent can still write files it owns); -1 keeps a value.
func chownFile(f *os.File, uid, gid int) error {
	if uid < 0 && gid < 0 {
		return nil
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if u, g := fileOwner(fi); (uid < 0 || u == uid) && (gid < 0 || g == gid) {
		return nil
	}
	return f.Chown(uid, gid)
}

func lchown(path string, uid, gid int) error {
	if uid < 0 && gid < 0 {
		return nil
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if u, g := fileOwner(fi); (uid < 0 || u == uid) && (gid < 0 || g == gid) {
		return nil
	}
	return os.Lchown(path, uid, gid)
}

// syncFileSystems flushes, with one syncfs(2) each, every file system the
// directories dirs are on.
func syncFileSystems(dirs map[string]bool) error {
	done := map[uint64]bool{}
	for d := range dirs {
		// O_DIRECTORY: whatever replaced a directory, the open neither
		// blocks (a FIFO) nor writes.
		f, err := os.OpenFile(d, os.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			return err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		key, _ := statSignature(fi)
		if !done[key.dev] {
			done[key.dev] = true
			if err := unix.Syncfs(int(f.Fd())); err != nil {
				f.Close()
				return os.NewSyscallError("syncfs", err)
			}
		}
		f.Close()
	}
	return nil
}
