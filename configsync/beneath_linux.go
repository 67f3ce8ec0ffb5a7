package configsync

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Confinement. Every read and write of a synchronized path is resolved
// relative to an open directory, its anchor: the directory the sync path
// that covers it lives in (/etc for /etc/app and for /etc/nft.conf). From
// the anchor down, no component may be a symbolic link: the kernel
// refuses one (openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), or, where
// it has no openat2, a walk opens one component at a time with
// O_NOFOLLOW|O_DIRECTORY. The final operation (create, rename, chmod,
// chown, mkdir, symlink, unlink, readlink) then works on the directory fd
// it got and a single name, or on the object's own fd, so a directory
// swapped for a symlink after the walk cannot redirect it: the fd still is
// the directory that was checked. A symlink that is itself a synchronized
// entry is read with readlinkat and replaced with renameat, never followed.
//
// The anchor and the path above it are the administrator's (they hold the
// configured sync path itself): they are opened normally.
// TestLoadRefusesSymlinkedDir, TestApplyNotThroughSymlinkedDir,
// TestApplySwappedDirNotFollowed and TestApplyDirChmodNotFollowed prove it.

// noOpenat2 is set once openat2 returned ENOSYS (a kernel before 5.6, or a
// seccomp filter that does not know it): the fd walk is used from then on.
// Tests set it to run the walk.
var noOpenat2 atomic.Bool

// resolveFlags: nothing may leave the anchor, no symlink in any component.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openAnchor opens the anchor directory (created with its parents if
// create and missing, as MkdirAll did before: it is the administrator's
// part of the path).
func openAnchor(anchor string, create bool) (int, error) {
	for try := 0; ; try++ {
		fd, err := retryEINTR(func() (int, error) {
			return unix.Open(anchor, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		})
		if err == nil {
			return fd, nil
		}
		if !create || try > 0 || !errors.Is(err, unix.ENOENT) {
			return -1, &fs.PathError{Op: "open", Path: anchor, Err: err}
		}
		if err := os.MkdirAll(anchor, 0o755); err != nil {
			return -1, err
		}
	}
}

// openBeneath opens rel (relative, clean, no "..") below directory dirfd
// with flags, refusing a symbolic link in any component, the last
// included (ELOOP; ENOTDIR from the walk for a symlink above the last).
func openBeneath(dirfd int, rel string, flags int) (int, error) {
	flags |= unix.O_CLOEXEC
	if rel == "" || rel == "." {
		return retryEINTR(func() (int, error) { return unix.Openat(dirfd, ".", flags, 0) })
	}
	if !noOpenat2.Load() {
		how := unix.OpenHow{Flags: uint64(flags), Resolve: resolveFlags}
		fd, err := retryEINTR(func() (int, error) { return unix.Openat2(dirfd, rel, &how) })
		if !errors.Is(err, unix.ENOSYS) {
			return fd, err
		}
		noOpenat2.Store(true)
	}
	return walkBeneath(dirfd, rel, flags, false)
}

// walkBeneath opens rel below dirfd one component at a time, each
// directory with O_NOFOLLOW|O_DIRECTORY, the last with flags|O_NOFOLLOW;
// with mkdir (rel is a directory), missing components are created (mode
// 0755, as MkdirAll).
func walkBeneath(dirfd int, rel string, flags int, mkdir bool) (int, error) {
	cur := dirfd
	closeCur := func() {
		if cur != dirfd {
			unix.Close(cur)
		}
	}
	parts := strings.Split(rel, "/")
	for i, c := range parts {
		if c == "" || c == "." || c == ".." {
			closeCur()
			return -1, unix.EINVAL
		}
		last := i == len(parts)-1
		fl := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if last {
			fl = flags | unix.O_NOFOLLOW | unix.O_CLOEXEC
		}
		next, err := retryEINTR(func() (int, error) { return unix.Openat(cur, c, fl, 0) })
		if errors.Is(err, unix.ENOENT) && mkdir {
			if err = unix.Mkdirat(cur, c, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				next, err = retryEINTR(func() (int, error) { return unix.Openat(cur, c, fl, 0) })
			}
		}
		closeCur()
		if err != nil {
			return -1, err
		}
		cur = next
	}
	return cur, nil
}

func (d *dirHandle) close() {
	if d != nil && d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}

// openParent opens the directory of logical path p (create: with the
// missing directories on the way, which created lists by file system
// path of their parents, to be fsynced) and returns it with p's last
// component. The directory is reached without a symlink in any
// component; what happens to the path afterwards cannot redirect the
// operations made through the handle.
func (s *Store) openParent(p string, create bool) (d *dirHandle, base string, created []string, err error) {
	anchor, rel, err := s.anchorOf(p)
	if err != nil {
		return nil, "", nil, err
	}
	afd, err := openAnchor(anchor, create)
	if err != nil {
		return nil, "", nil, err
	}
	relDir, base := filepath.Dir(rel), filepath.Base(rel)
	if relDir == "." {
		return &dirHandle{fd: afd, path: anchor}, base, nil, nil
	}
	defer unix.Close(afd)
	fp := filepath.Join(anchor, relDir)
	fd, err := openBeneath(afd, relDir, unix.O_RDONLY|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) && create {
		// Note which directories are missing (their parents get
		// fsynced), then create them with a walk that refuses symlinks.
		for a := relDir; a != "."; a = filepath.Dir(a) {
			if err := unix.Fstatat(afd, a, new(unix.Stat_t), unix.AT_SYMLINK_NOFOLLOW); err == nil {
				break
			}
			created = append(created, filepath.Join(anchor, filepath.Dir(a)))
		}
		fd, err = walkBeneath(afd, relDir, unix.O_RDONLY|unix.O_DIRECTORY, true)
	}
	if err != nil {
		return nil, "", nil, beneathError(p, fp, err)
	}
	return &dirHandle{fd: fd, path: fp}, base, created, nil
}

// beneathError turns the errors of a refused symlink into one that says
// so; ENOENT stays fs.ErrNotExist.
func beneathError(p, fp string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("configsync: refusing %s: %w", p, errBelowSymlink)
	}
	return &fs.PathError{Op: "open", Path: fp, Err: err}
}

// openFile opens logical path p for reading without following a symlink
// in any component (the last one included: ELOOP).
func (s *Store) openFile(p string, flags int) (int, error) {
	anchor, rel, err := s.anchorOf(p)
	if err != nil {
		return -1, err
	}
	afd, err := openAnchor(anchor, false)
	if err != nil {
		return -1, err
	}
	defer unix.Close(afd)
	return openBeneath(afd, rel, flags)
}

// mkdirAt creates directory name in d (0700 until its mode is set) and
// reports whether it created it; an existing directory is fine.
func mkdirAt(d *dirHandle, name string) (bool, error) {
	err := unix.Mkdirat(d.fd, name, 0o700)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, unix.EEXIST) {
		return false, nil
	}
	return false, &fs.PathError{Op: "mkdir", Path: filepath.Join(d.path, name), Err: err}
}

// setDirAttrs opens directory name in d without following a symlink and
// sets its owner (uid/gid -1: keep) and mode through the fd.
func setDirAttrs(d *dirHandle, name string, mode uint32, uid, gid int) error {
	fd, err := retryEINTR(func() (int, error) {
		return unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return &fs.PathError{Op: "open", Path: filepath.Join(d.path, name), Err: err}
	}
	defer unix.Close(fd)
	return setFdAttrs(fd, filepath.Join(d.path, name), mode, uid, gid)
}

// setFdAttrs sets owner (unless it has it already) then mode of fd:
// chown first, as it clears the setuid and setgid bits.
func setFdAttrs(fd int, path string, mode uint32, uid, gid int) error {
	if uid >= 0 || gid >= 0 {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return &fs.PathError{Op: "fstat", Path: path, Err: err}
		}
		if (uid >= 0 && int(st.Uid) != uid) || (gid >= 0 && int(st.Gid) != gid) {
			if err := unix.Fchown(fd, uid, gid); err != nil {
				return &fs.PathError{Op: "fchown", Path: path, Err: err}
			}
		}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return &fs.PathError{Op: "fchmod", Path: path, Err: err}
	}
	return nil
}

// unixPerm converts fs.FileMode permission and special bits to st_mode bits.
func unixPerm(perm fs.FileMode) uint32 {
	mode := uint32(perm.Perm())
	mode |= unix.S_ISUID * boolBit(perm&fs.ModeSetuid != 0)
	mode |= unix.S_ISGID * boolBit(perm&fs.ModeSetgid != 0)
	mode |= unix.S_ISVTX * boolBit(perm&fs.ModeSticky != 0)
	return mode
}

// symlinkAt replaces name in d with a symlink to target, owned by uid:gid,
// atomically (a temporary link renamed over it), and fsyncs d.
func symlinkAt(d *dirHandle, name, target string, uid, gid int) error {
	tmp := tempBase()
	if err := unix.Symlinkat(target, d.fd, tmp); err != nil {
		return &fs.PathError{Op: "symlink", Path: filepath.Join(d.path, tmp), Err: err}
	}
	if uid >= 0 || gid >= 0 {
		if err := unix.Fchownat(d.fd, tmp, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			unix.Unlinkat(d.fd, tmp, 0)
			return &fs.PathError{Op: "lchown", Path: filepath.Join(d.path, tmp), Err: err}
		}
	}
	if err := renameAt(d, tmp, d, name); err != nil {
		unix.Unlinkat(d.fd, tmp, 0)
		return err
	}
	return fsyncFd(d.fd, d.path)
}

// renameAt renames from in fd to to in td with one renameat(2).
func renameAt(fd *dirHandle, from string, td *dirHandle, to string) error {
	if _, err := retryEINTR(func() (int, error) { return 0, unix.Renameat(fd.fd, from, td.fd, to) }); err != nil {
		return &os.LinkError{Op: "rename", Old: filepath.Join(fd.path, from), New: filepath.Join(td.path, to), Err: err}
	}
	return nil
}

func fsyncFd(fd int, path string) error {
	if _, err := retryEINTR(func() (int, error) { return 0, unix.Fsync(fd) }); err != nil && !errors.Is(err, unix.EINVAL) {
		return &fs.PathError{Op: "fsync", Path: path, Err: err}
	}
	return nil
}

// lstatAt describes name in d without following it.
func lstatAt(d *dirHandle, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return st, &fs.PathError{Op: "lstat", Path: filepath.Join(d.path, name), Err: err}
	}
	return st, nil
}

// removeAllAt removes name in d and, for a directory, everything in it,
// through directory fds opened with O_NOFOLLOW: a symlink met on the way
// is removed, never followed. A missing name is no error.
func removeAllAt(d *dirHandle, name string) error {
	err := unix.Unlinkat(d.fd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return &fs.PathError{Op: "unlink", Path: filepath.Join(d.path, name), Err: err}
	}
	fd, err := retryEINTR(func() (int, error) {
		return unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return &fs.PathError{Op: "open", Path: filepath.Join(d.path, name), Err: err}
	}
	sub := &dirHandle{fd: fd, path: filepath.Join(d.path, name)}
	defer sub.close()
	names, rerr := readNames(sub)
	var errs []error
	if rerr != nil {
		errs = append(errs, rerr)
	}
	for _, n := range names {
		if err := removeAllAt(sub, n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := unix.Unlinkat(d.fd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return &fs.PathError{Op: "rmdir", Path: sub.path, Err: err}
	}
	return nil
}

// openRead opens the regular file at logical path p for reading below
// its anchor, without a symlink in any component.
func (s *Store) openRead(p string) (*os.File, error) {
	fd, err := s.openFile(p, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: s.fsPath(p), Err: err}
	}
	return os.NewFile(uintptr(fd), s.fsPath(p)), nil
}

func unlinkAt(d *dirHandle, name string) { unix.Unlinkat(d.fd, name, 0) }

// openDirAt opens directory name in d without following a symlink.
func openDirAt(d *dirHandle, name string) (*dirHandle, error) {
	fp := filepath.Join(d.path, name)
	fd, err := retryEINTR(func() (int, error) {
		return unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: fp, Err: err}
	}
	return &dirHandle{fd: fd, path: fp}, nil
}

// statModeBits returns the permission and special bits of st_mode as an
// Entry's Mode (Linux's S_ISUID, S_ISGID, S_ISVTX are 04000, 02000,
// 01000).
func statModeBits(m uint32) uint32 { return m & 0o7777 }

// loadAt is Load's slow way for name in d (logical path p): a directory,
// a symlink (read with readlinkat, never followed), or a regular file
// read through its own fd.
func loadAt(d *dirHandle, p, name string) (Entry, []byte, error) {
	st, err := lstatAt(d, name)
	if err != nil {
		return Entry{}, nil, err
	}
	e := Entry{Path: p, UID: int(st.Uid), GID: int(st.Gid)}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		fd, err := retryEINTR(func() (int, error) {
			return unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		})
		if err != nil {
			return Entry{}, nil, &fs.PathError{Op: "open", Path: filepath.Join(d.path, name), Err: err}
		}
		f := os.NewFile(uintptr(fd), filepath.Join(d.path, name))
		defer f.Close()
		var fst unix.Stat_t
		if err := unix.Fstat(fd, &fst); err != nil || fst.Mode&unix.S_IFMT != unix.S_IFREG {
			return Entry{}, nil, fmt.Errorf("configsync: %s changed while read", p)
		}
		b, err := io.ReadAll(f)
		if err != nil {
			return Entry{}, nil, err
		}
		e.Kind, e.Mode, e.Size, e.SHA256 = KindFile, statModeBits(fst.Mode), int64(len(b)), sha256.Sum256(b)
		e.UID, e.GID = int(fst.Uid), int(fst.Gid)
		return e, b, nil
	case unix.S_IFDIR:
		e.Kind, e.Mode = KindDir, statModeBits(st.Mode)
		return e, nil, nil
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(d.fd, name, buf)
		if err != nil {
			return Entry{}, nil, &fs.PathError{Op: "readlink", Path: filepath.Join(d.path, name), Err: err}
		}
		t := buf[:n:n]
		e.Kind, e.Size, e.SHA256 = KindSymlink, int64(n), sha256.Sum256(t)
		return e, t, nil
	}
	return Entry{}, nil, fmt.Errorf("configsync: %s is not a file, directory or symlink", p)
}

// mergeDir moves the contents of staged directory fname in fp into the
// existing directory tname in tp, entry by entry (each still old or new:
// its content is durable already), gives it the staged directory's owner
// and mode, then removes the staged one. Everything goes through
// directory fds opened without following a symlink.
func mergeDir(fp *dirHandle, fname string, tp *dirHandle, tname string) error {
	to, err := openDirAt(tp, tname)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return &fs.PathError{Op: "merge", Path: filepath.Join(tp.path, tname), Err: unix.ENOTDIR}
		}
		return err
	}
	defer to.close()
	from, err := openDirAt(fp, fname)
	if err != nil {
		return err
	}
	defer from.close()
	var sst unix.Stat_t
	if err := unix.Fstat(from.fd, &sst); err != nil {
		return &fs.PathError{Op: "fstat", Path: from.path, Err: err}
	}
	if err := setFdAttrs(to.fd, to.path, sst.Mode&0o7777, int(sst.Uid), int(sst.Gid)); err != nil {
		return err
	}
	names, err := readNames(from)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		st, err := lstatAt(from, n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if dst, err := lstatAt(to, n); err == nil && dst.Mode&unix.S_IFMT == unix.S_IFDIR {
				errs = append(errs, mergeDir(from, n, to, n))
				continue
			}
		}
		if err := renameAt(from, n, to, n); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		removeAllAt(fp, fname)
		return err
	}
	if err := unix.Unlinkat(fp.fd, fname, unix.AT_REMOVEDIR); err != nil {
		return &fs.PathError{Op: "rmdir", Path: from.path, Err: err}
	}
	return fsyncFd(to.fd, to.path)
}

// readNames lists the names in directory d (a dup of its fd is read, d
// stays open).
func readNames(d *dirHandle) ([]string, error) {
	fd, err := unix.Dup(d.fd)
	if err != nil {
		return nil, &fs.PathError{Op: "dup", Path: d.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), d.path)
	defer f.Close()
	return f.Readdirnames(-1)
}

// fsyncAt fsyncs the regular file name in d (opened without following a
// symlink and without blocking on a FIFO).
func fsyncAt(d *dirHandle, name string) error {
	fd, err := retryEINTR(func() (int, error) {
		return unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return &fs.PathError{Op: "open", Path: filepath.Join(d.path, name), Err: err}
	}
	defer unix.Close(fd)
	return fsyncFd(fd, filepath.Join(d.path, name))
}

const oDirectory = unix.O_DIRECTORY
