package configsync

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// confineFixture is a store over root/etc/app with a directory outside
// the root holding a secret, and root/etc/app/link -> that directory.
type confineFixture struct {
	root, outside string
	s             *Store
}

func newConfineFixture(t *testing.T) *confineFixture {
	t.Helper()
	base := t.TempDir()
	f := &confineFixture{root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{f.root + "/etc/app/d", f.outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, f.outside+"/shadow", "secret\n", 0o600)
	if err := os.Symlink(f.outside, f.root+"/etc/app/link"); err != nil {
		t.Fatal(err)
	}
	s, err := NewStore(f.root, []string{"/etc/app"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.s = s
	return f
}

// outsideState lists the outside directory: names, modes, contents.
func (f *confineFixture) outsideState(t *testing.T) string {
	t.Helper()
	out := ""
	filepath.WalkDir(f.outside, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, _ := os.Lstat(p)
		b, _ := os.ReadFile(p)
		out += fmt.Sprintf("%s %v %x\n", p, fi.Mode(), sha256.Sum256(b))
		return nil
	})
	return out
}

// loop runs f over and over on a goroutine until the returned stop is
// called (and returns once f is no longer running).
func loop(f func()) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			default:
				f()
			}
		}
	}()
	return func() { close(quit); <-done }
}

// withWalk runs f with openat2 and with the fd walk that replaces it on
// kernels without it.
func withWalk(t *testing.T, f func(t *testing.T)) {
	t.Run("openat2", f)
	t.Run("walk", func(t *testing.T) {
		noOpenat2.Store(true)
		defer noOpenat2.Store(false)
		f(t)
	})
}

// TestLoadRefusesSymlinkedDir: a file below a symlinked directory is not
// served (Load answers pulls and pushes); the symlink itself is served as
// a symlink.
func TestLoadRefusesSymlinkedDir(t *testing.T) {
	withWalk(t, func(t *testing.T) {
		f := newConfineFixture(t)
		if e, b, err := f.s.Load("/etc/app/link/shadow"); err == nil {
			t.Fatalf("served %s through a symlinked directory: %q", e.Path, b)
		}
		e, b, err := f.s.Load("/etc/app/link")
		if err != nil || e.Kind != KindSymlink || string(b) != f.outside {
			t.Fatalf("Load(link) = %v %q %v, want the symlink itself", e, b, err)
		}
		// The sync path itself a symlink: its entries are not served.
		os.Rename(f.root+"/etc/app", f.root+"/etc/app.real")
		os.Symlink(f.outside, f.root+"/etc/app")
		if _, b, err := f.s.Load("/etc/app/shadow"); err == nil {
			t.Fatalf("served a file below a symlinked sync path: %q", b)
		}
	})
}

// TestApplyNotThroughSymlinkedDir: neither Apply nor ApplyFiles writes
// through a symlinked directory, and Remove does not delete through one.
func TestApplyNotThroughSymlinkedDir(t *testing.T) {
	withWalk(t, func(t *testing.T) {
		f := newConfineFixture(t)
		before := f.outsideState(t)
		if _, err := f.s.Apply(fileEntry("/etc/app/link/file", "x"), []byte("x")); err == nil {
			t.Error("Apply wrote through a symlinked directory")
		}
		if _, err := f.s.Apply(Entry{Path: "/etc/app/link/sub", Kind: KindDir, Mode: 0o777, UID: -1, GID: -1}, nil); err == nil {
			t.Error("Apply made a directory through a symlinked directory")
		}
		var es []Entry
		var cs [][]byte
		for i := range 10 {
			es = append(es, fileEntry(fmt.Sprintf("/etc/app/link/f%d", i), "y"))
			cs = append(cs, []byte("y"))
		}
		_, errs, _ := f.s.ApplyFiles(es, cs, 2, nil)
		for i, err := range errs {
			if err == nil {
				t.Errorf("ApplyFiles wrote %s through a symlinked directory", es[i].Path)
			}
		}
		if _, err := f.s.Remove("/etc/app/link/shadow"); err == nil {
			t.Error("Remove deleted through a symlinked directory")
		}
		if after := f.outsideState(t); after != before {
			t.Fatalf("outside changed:\n%s\nwas\n%s", after, before)
		}
	})
}

// TestApplySwappedDirNotFollowed: a directory of the tree swapped for a
// symlink to a directory outside after it was resolved for a write (the
// afterResolve seam), and, racing, while batches are applied, never gets
// a file written outside.
func TestApplySwappedDirNotFollowed(t *testing.T) {
	withWalk(t, func(t *testing.T) {
		f := newConfineFixture(t)
		before := f.outsideState(t)
		d, parked := f.root+"/etc/app/d", f.root+"/etc/app/parked"
		swap := func() {
			os.Rename(d, parked)
			os.Symlink(f.outside, d)
		}
		unswap := func() {
			os.Remove(d)
			os.Rename(parked, d)
		}
		f.s.afterResolve = func(string) { swap() }
		f.s.Apply(fileEntry("/etc/app/d/one", "1"), []byte("1"))
		unswap()
		var es []Entry
		var cs [][]byte
		for i := range 10 { // a batch flushed as one
			es = append(es, fileEntry(fmt.Sprintf("/etc/app/d/f%d", i), "z"))
			cs = append(cs, []byte("z"))
		}
		var once sync.Once
		f.s.afterResolve = func(string) { once.Do(swap) }
		f.s.ApplyFiles(es, cs, 2, nil)
		unswap()
		f.s.afterResolve = nil
		if after := f.outsideState(t); after != before {
			t.Fatalf("a write went through the swapped directory:\n%s", after)
		}
		// Racing: the swap at any moment.
		stop := loop(func() { swap(); unswap() })
		for n := range 100 {
			var es []Entry
			var cs [][]byte
			for i := range 4 { // fsynced one by one, no syncfs
				c := fmt.Sprintf("%d-%d", n, i)
				es = append(es, fileEntry(fmt.Sprintf("/etc/app/d/f%d", i), c))
				cs = append(cs, []byte(c))
			}
			f.s.ApplyFiles(es, cs, 2, nil)
			f.s.Apply(es[0], cs[0])
		}
		stop()
		if after := f.outsideState(t); after != before {
			t.Fatalf("a write went through the swapped directory:\n%s", after)
		}
	})
}

// TestApplyDirChmodNotFollowed: the mode and owner of a synchronized
// directory are set through its own fd: a symlink planted in its place
// (racing the apply) never passes the chmod to the directory it points to.
func TestApplyDirChmodNotFollowed(t *testing.T) {
	withWalk(t, func(t *testing.T) {
		f := newConfineFixture(t)
		os.Chmod(f.outside, 0o755)
		sub := f.root + "/etc/app/sub"
		stop := loop(func() {
			os.RemoveAll(sub)
			os.Symlink(f.outside, sub)
		})
		for n := range 2000 {
			f.s.Apply(Entry{Path: "/etc/app/sub", Kind: KindDir, Mode: 0o700 + uint32(n%2)*0o77, UID: -1, GID: -1}, nil)
		}
		stop()
		fi, err := os.Stat(f.outside)
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Fatalf("outside directory mode %v (%v), want 0755: a chmod followed the planted symlink", fi.Mode(), err)
		}
	})
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(des)
}

// TestManyDirsChunked: a push whose files lie in more directories than a
// batch holds open is applied in chunks, with at most maxBatchDirs
// directory fds open, and completely.
func TestManyDirsChunked(t *testing.T) {
	defer func(n int) { maxBatchDirs = n }(maxBatchDirs)
	maxBatchDirs = 4
	root := t.TempDir()
	os.MkdirAll(root+"/etc/app", 0o755)
	s := offlineSyncer(t, root, "/etc/app")
	var es []Entry
	var cs [][]byte
	for d := range 40 {
		es = append(es, Entry{Path: fmt.Sprintf("/etc/app/d%02d", d), Kind: KindDir, Mode: 0o755, UID: -1, GID: -1})
		cs = append(cs, nil)
		for f := range 3 {
			c := fmt.Sprintf("%d/%d", d, f)
			es = append(es, fileEntry(fmt.Sprintf("/etc/app/d%02d/f%d", d, f), c))
			cs = append(cs, []byte(c))
		}
	}
	base, most := openFDs(t), 0
	count := func() { most = max(most, openFDs(t)-base) }
	s.store.afterResolve = func(string) { count() }
	s.store.beforeCommit = count // a stage holds its directories open until then
	s.scanMu.Lock()
	_, errs := s.applyLocked(es, cs, nil, false, nil)
	s.scanMu.Unlock()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for i, e := range es {
		if e.Kind == KindFile {
			if b, err := os.ReadFile(root + e.Path); err != nil || string(b) != string(cs[i]) {
				t.Fatalf("%s: %q %v", e.Path, b, err)
			}
		}
	}
	// maxBatchDirs directories, plus the anchor and /proc/self/fd while
	// counted, plus what the runtime opens.
	if most > maxBatchDirs+4 {
		t.Fatalf("%d fds open during the batch, want at most %d", most, maxBatchDirs+4)
	}
	t.Logf("at most %d fds open with maxBatchDirs %d", most, maxBatchDirs)
}
