package configsync

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// dirInfo is what ApplyFiles learns once per directory of a batch: what a
// file created in it gets as its group.
type dirInfo struct {
	setgid bool // new files take the directory's group
	gid    int
	// acl: the directory has a default ACL, which replaces the umask for
	// the files created in it.
	acl bool
}

// lookDir describes directory d for createTemp, through its fd.
func lookDir(d *dirHandle) (dirInfo, error) {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return dirInfo{}, &fs.PathError{Op: "fstat", Path: d.path, Err: err}
	}
	di := dirInfo{setgid: st.Mode&unix.S_ISGID != 0, gid: int(st.Gid)}
	if n, err := unix.Fgetxattr(d.fd, "system.posix_acl_default", nil); err == nil && n > 0 {
		di.acl = true
	}
	return di, nil
}

// createTemp writes data to a new temporary file in directory d, with
// owner uid:gid (-1: any) and mode perm, fsynced if syncNow, and returns
// its name in d. It issues the fewest system calls the result allows: the
// mode is given at creation when the umask keeps it, the owner is set only
// when the created file would not already have it.
func createTemp(d *dirHandle, di dirInfo, data []byte, perm fs.FileMode, uid, gid int, syncNow bool) (tmp string, err error) {
	tmp = tempBase()
	return tmp, createFile(d, tmp, di, data, perm, uid, gid, syncNow)
}

// createFile is createTemp with the new file's name given: name must not
// exist in d (O_EXCL; O_NOFOLLOW: a planted symlink is not followed).
// ApplyFiles uses it for files in a staged directory, which get their
// final names at once.
func createFile(d *dirHandle, name string, di dirInfo, data []byte, perm fs.FileMode, uid, gid int, syncNow bool) error {
	mode := unixPerm(perm)
	ownUID, ownGID := processIDs()
	if di.setgid {
		ownGID = di.gid
	}
	needChown := (uid >= 0 && uid != ownUID) || (gid >= 0 && gid != ownGID)
	um, umOK := processUmask()
	// The mode at creation is the final one only if the umask keeps every
	// bit (and no default ACL replaces it), there are no special bits (chown would clear setuid/setgid; the
	// kernel may drop setgid at creation) and no chown follows.
	needChmod := !umOK || di.acl || mode&um != 0 || mode&^0o777 != 0 || needChown
	createMode := mode
	if needChmod {
		createMode = 0o600
	}
	tmp := filepath.Join(d.path, name)
	fd, err := retryEINTR(func() (int, error) {
		return unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, createMode)
	})
	if err != nil {
		return &fs.PathError{Op: "open", Path: tmp, Err: err}
	}
	fail := func(op string, e error) error {
		unix.Close(fd)
		unix.Unlinkat(d.fd, name, 0)
		return &fs.PathError{Op: op, Path: tmp, Err: e}
	}
	for b := data; len(b) > 0; {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fail("write", err)
		}
		if n == 0 {
			return fail("write", unix.EIO)
		}
		b = b[n:]
	}
	// chown before chmod: chown clears the setuid and setgid bits.
	if needChown {
		if _, err := retryEINTR(func() (int, error) { return 0, unix.Fchown(fd, uid, gid) }); err != nil {
			return fail("fchown", err)
		}
	}
	if needChmod {
		if _, err := retryEINTR(func() (int, error) { return 0, unix.Fchmod(fd, mode) }); err != nil {
			return fail("fchmod", err)
		}
	}
	if syncNow {
		if _, err := retryEINTR(func() (int, error) { return 0, unix.Fsync(fd) }); err != nil {
			return fail("fsync", err)
		}
	}
	if err := unix.Close(fd); err != nil {
		unix.Unlinkat(d.fd, name, 0)
		return &fs.PathError{Op: "close", Path: tmp, Err: err}
	}
	return nil
}

func boolBit(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

func retryEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if !errors.Is(err, unix.EINTR) {
			return n, err
		}
	}
}

var umaskOnce struct {
	sync.Once
	mask uint32
	ok   bool
}

// processUmask returns the process's umask, read once from
// /proc/self/status (reading it with umask(2) would change it for a
// moment under concurrent file creations); ok is false if unknown.
func processUmask() (uint32, bool) {
	umaskOnce.Do(func() {
		f, err := os.Open("/proc/self/status")
		if err != nil {
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, found := strings.CutPrefix(sc.Text(), "Umask:"); found {
				m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
				if err == nil {
					umaskOnce.mask, umaskOnce.ok = uint32(m), true
				}
				return
			}
		}
	})
	return umaskOnce.mask, umaskOnce.ok
}

var idsOnce struct {
	sync.Once
	uid, gid int
}

// processIDs returns the effective uid and gid, asked once (each is a
// system call).
func processIDs() (uid, gid int) {
	idsOnce.Do(func() { idsOnce.uid, idsOnce.gid = os.Geteuid(), os.Getegid() })
	return idsOnce.uid, idsOnce.gid
}

// loadRegular reads the regular file at logical path p, opened below its
// anchor without a symlink in any component (openFile), and returns its
// entry and content; ok is false for anything else (missing, a directory,
// a symlink, an error), which Load then looks at the slow way. The entry's
// digest covers exactly the returned bytes.
func (s *Store) loadRegular(p string) (e Entry, b []byte, ok bool) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	fd, err := s.openFile(p, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return Entry{}, nil, false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size < 0 {
		return Entry{}, nil, false
	}
	// Up to the size fstat gave, or less if the file shrank meanwhile; a
	// file growing while it is read is sent as far as it was read (its
	// digest matches), and the next scan sees the rest.
	b = make([]byte, st.Size)
	n := 0
	for n < len(b) {
		m, err := unix.Read(fd, b[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return Entry{}, nil, false
		}
		if m == 0 {
			break
		}
		n += m
	}
	b = b[:n]
	mode := statModeBits(st.Mode)
	return Entry{Path: p, Kind: KindFile, Mode: mode, UID: int(st.Uid), GID: int(st.Gid),
		Size: int64(n), SHA256: sha256.Sum256(b)}, b, true
}
