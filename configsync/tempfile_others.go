//go:build !linux

package configsync

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Off Linux there is no openat2 and the package does not use the *at
// system calls: a dirHandle is a checked path, and each operation checks
// again that no component below the anchor is a symbolic link before it
// runs (a narrower window than Linux's, where none is left).

// dirInfo is empty off Linux, where ownership is not synchronized.
type dirInfo struct{}

const oDirectory = 0

func (d *dirHandle) close() {}

func lookDir(d *dirHandle) (dirInfo, error) {
	_, err := os.Lstat(d.path)
	return dirInfo{}, err
}

// checkNoSymlink refuses rel below anchor if a component is a symlink.
func checkNoSymlink(anchor, rel string) error {
	p := anchor
	for _, c := range splitRel(rel) {
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return errBelowSymlink
		}
	}
	return nil
}

func splitRel(rel string) []string {
	var out []string
	for rel != "" && rel != "." {
		dir, base := filepath.Split(rel)
		out = append([]string{base}, out...)
		rel = filepath.Clean(dir)
		if rel == "/" || rel == "." {
			break
		}
	}
	return out
}

func (s *Store) openParent(p string, create bool) (*dirHandle, string, []string, error) {
	anchor, rel, err := s.anchorOf(p)
	if err != nil {
		return nil, "", nil, err
	}
	relDir, base := filepath.Dir(rel), filepath.Base(rel)
	fp := filepath.Join(anchor, relDir)
	if create {
		if err := os.MkdirAll(anchor, 0o755); err != nil {
			return nil, "", nil, err
		}
		if relDir != "." {
			if err := os.MkdirAll(fp, 0o755); err != nil {
				return nil, "", nil, err
			}
		}
	}
	if relDir != "." {
		if err := checkNoSymlink(anchor, relDir); err != nil {
			if errors.Is(err, errBelowSymlink) {
				return nil, "", nil, fmt.Errorf("configsync: refusing %s: %w", p, err)
			}
			return nil, "", nil, err
		}
	}
	return &dirHandle{fd: -1, path: fp}, base, nil, nil
}

func (s *Store) openRead(p string) (*os.File, error) {
	d, base, _, err := s.openParent(p, false)
	if err != nil {
		return nil, err
	}
	fp := filepath.Join(d.path, base)
	if fi, err := os.Lstat(fp); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("configsync: %s is not a regular file", p)
	}
	return os.Open(fp)
}

// loadRegular is not available here: Load reads the slow way.
func (s *Store) loadRegular(string) (Entry, []byte, bool) { return Entry{}, nil, false }

func loadAt(d *dirHandle, p, name string) (Entry, []byte, error) {
	fp := filepath.Join(d.path, name)
	fi, err := os.Lstat(fp)
	if err != nil {
		return Entry{}, nil, err
	}
	e := Entry{Path: p, UID: -1, GID: -1}
	switch {
	case fi.Mode().IsRegular():
		f, err := os.Open(fp)
		if err != nil {
			return Entry{}, nil, err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			return Entry{}, nil, err
		}
		e.Kind, e.Mode, e.Size, e.SHA256 = KindFile, unixMode(fi.Mode()), int64(len(b)), sha256.Sum256(b)
		return e, b, nil
	case fi.IsDir():
		e.Kind, e.Mode = KindDir, unixMode(fi.Mode())
		return e, nil, nil
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(fp)
		if err != nil {
			return Entry{}, nil, err
		}
		e.Kind, e.Size, e.SHA256 = KindSymlink, int64(len(t)), sha256.Sum256([]byte(t))
		return e, []byte(t), nil
	}
	return Entry{}, nil, fmt.Errorf("configsync: %s is not a file, directory or symlink", p)
}

func createTemp(d *dirHandle, di dirInfo, data []byte, perm fs.FileMode, uid, gid int, syncNow bool) (string, error) {
	name := tempBase()
	return name, createFile(d, name, di, data, perm, uid, gid, syncNow)
}

func createFile(d *dirHandle, name string, _ dirInfo, data []byte, perm fs.FileMode, _, _ int, syncNow bool) error {
	fp := filepath.Join(d.path, name)
	f, err := os.OpenFile(fp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		if err = f.Chmod(perm); err == nil && syncNow {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(fp)
	}
	return err
}

func unixPerm(perm fs.FileMode) uint32 { return unixMode(perm) }

func mkdirAt(d *dirHandle, name string) (bool, error) {
	err := os.Mkdir(filepath.Join(d.path, name), 0o700)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	return false, err
}

func openDirAt(d *dirHandle, name string) (*dirHandle, error) {
	fp := filepath.Join(d.path, name)
	fi, err := os.Lstat(fp)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, &fs.PathError{Op: "open", Path: fp, Err: errBelowSymlink}
	}
	return &dirHandle{fd: -1, path: fp}, nil
}

func setFdAttrs(_ int, path string, mode uint32, _, _ int) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return &fs.PathError{Op: "chmod", Path: path, Err: errBelowSymlink}
	}
	return os.Chmod(path, fileMode(mode))
}

func setDirAttrs(d *dirHandle, name string, mode uint32, uid, gid int) error {
	return setFdAttrs(-1, filepath.Join(d.path, name), mode, uid, gid)
}

func symlinkAt(d *dirHandle, name, target string, _, _ int) error {
	tmp := tempBase()
	if err := os.Symlink(target, filepath.Join(d.path, tmp)); err != nil {
		return err
	}
	if err := renameAt(d, tmp, d, name); err != nil {
		unlinkAt(d, tmp)
		return err
	}
	return syncDir(d.path)
}

func renameAt(fd *dirHandle, from string, td *dirHandle, to string) error {
	return os.Rename(filepath.Join(fd.path, from), filepath.Join(td.path, to))
}

func unlinkAt(d *dirHandle, name string) { os.Remove(filepath.Join(d.path, name)) }

func fsyncFd(_ int, path string) error { return syncDir(path) }

func fsyncAt(d *dirHandle, name string) error {
	f, err := os.Open(filepath.Join(d.path, name))
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func lstatAt(d *dirHandle, name string) (fs.FileInfo, error) {
	return os.Lstat(filepath.Join(d.path, name))
}

// removeAllAt is os.RemoveAll, which does not follow symlinks below.
func removeAllAt(d *dirHandle, name string) error {
	return os.RemoveAll(filepath.Join(d.path, name))
}

func mergeDir(fp *dirHandle, fname string, tp *dirHandle, tname string) error {
	from, to := filepath.Join(fp.path, fname), filepath.Join(tp.path, tname)
	fi, err := os.Lstat(to)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return &fs.PathError{Op: "merge", Path: to, Err: errBelowSymlink}
	}
	des, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range des {
		src, dst := filepath.Join(from, e.Name()), filepath.Join(to, e.Name())
		if e.IsDir() {
			if dfi, err := os.Lstat(dst); err == nil && dfi.IsDir() {
				errs = append(errs, mergeDir(&dirHandle{path: from}, e.Name(), &dirHandle{path: to}, e.Name()))
				continue
			}
		}
		if err := os.Rename(src, dst); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		os.RemoveAll(from)
		return err
	}
	if err := os.Remove(from); err != nil {
		return err
	}
	return syncDir(to)
}
