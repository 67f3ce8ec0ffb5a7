package configsync

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stageFixture is a secondary's syncer on a tree /t holding /t/old, and
// a push that creates /t/n (0750) and /t/n/sub (0700) with 12 files, and
// changes /t/old.
type stageFixture struct {
	root string
	s    *Syncer
	es   []Entry
	cs   [][]byte
}

func newStageFixture(t *testing.T) *stageFixture {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "t"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "t/old"), "old", 0o644)
	f := &stageFixture{root: root, s: offlineSyncer(t, root, "/t")}
	uid, gid := os.Getuid(), os.Getgid()
	add := func(e Entry, c []byte) { f.es, f.cs = append(f.es, e), append(f.cs, c) }
	add(Entry{Path: "/t/n", Kind: KindDir, Mode: 0o750, UID: uid, GID: gid}, nil)
	add(Entry{Path: "/t/n/sub", Kind: KindDir, Mode: 0o700, UID: uid, GID: gid}, nil)
	for i := 0; i < 12; i++ {
		dir := "/t/n"
		if i%2 == 1 {
			dir = "/t/n/sub"
		}
		c := []byte(fmt.Sprintf("content %d\n", i))
		add(Entry{Path: fmt.Sprintf("%s/f%02d", dir, i), Kind: KindFile, Mode: 0o640, UID: uid, GID: gid,
			Size: int64(len(c)), SHA256: sha256.Sum256(c)}, c)
	}
	c := []byte("new old\n")
	add(Entry{Path: "/t/old", Kind: KindFile, Mode: 0o644, UID: uid, GID: gid, Size: int64(len(c)), SHA256: sha256.Sum256(c)}, c)
	return f
}

// apply applies the push as a secondary does (applyLocked and the
// manifest update after it), with pre written ahead or nil.
func (f *stageFixture) apply(t *testing.T, pre *Prewritten) {
	t.Helper()
	s := f.s
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	_, errs := s.applyLocked(f.es, f.cs, nil, false, pre)
	if len(errs) > 0 {
		t.Fatalf("apply: %v", errs)
	}
	s.afterApplyLocked(f.es, nil, errs)
}

// check verifies the tree against the push: every file's content and
// mode, the directories' modes, no temporary file or staged directory
// left, and the syncer's manifest equal to a scan.
func (f *stageFixture) check(t *testing.T) {
	t.Helper()
	for i, e := range f.es {
		fi, err := os.Lstat(f.root + e.Path)
		if err != nil {
			t.Fatalf("%s: %v", e.Path, err)
		}
		if got := uint32(fi.Mode().Perm()); got != e.Mode {
			t.Errorf("%s: mode %o, want %o", e.Path, got, e.Mode)
		}
		if e.Kind == KindFile {
			if b, err := os.ReadFile(f.root + e.Path); err != nil || string(b) != string(f.cs[i]) {
				t.Errorf("%s: %q, %v", e.Path, b, err)
			}
		}
	}
	assertNoTemp(t, f.root)
	want, err := f.s.store.Scan()
	if err != nil {
		t.Fatal(err)
	}
	f.s.mu.Lock()
	got := f.s.manifest
	f.s.mu.Unlock()
	if d := Diff(want, got); len(d) > 0 || len(got.Entries) != len(want.Entries) {
		t.Errorf("manifest after the apply differs from a scan: %+v", d)
	}
}

// staged lists the staging directories in dir (file system path).
func staged(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range des {
		if d.IsDir() && strings.HasPrefix(d.Name(), tempPrefix) {
			out = append(out, d.Name())
		}
	}
	return out
}

// TestStagedNewTree: a push that creates directories builds them aside:
// when its files are durable (just before the commit) neither /t/n nor
// any of its files is visible, one staging directory holds the whole
// tree with the files under their final names; after the apply the tree
// is complete, with the directories' modes, and nothing temporary is
// left.
func TestStagedNewTree(t *testing.T) {
	f := newStageFixture(t)
	hooked := false
	f.s.store.beforeCommit = func() {
		hooked = true
		if _, err := os.Lstat(filepath.Join(f.root, "t/n")); !os.IsNotExist(err) {
			t.Errorf("/t/n visible before the commit: %v", err)
		}
		st := staged(t, filepath.Join(f.root, "t"))
		if len(st) != 1 {
			t.Fatalf("staging directories in /t: %v, want one", st)
		}
		for _, e := range f.es {
			if rest, ok := strings.CutPrefix(e.Path, "/t/n/"); ok && e.Kind == KindFile {
				if _, err := os.Lstat(filepath.Join(f.root, "t", st[0], rest)); err != nil {
					t.Errorf("%s not staged under its final name: %v", e.Path, err)
				}
			}
		}
	}
	f.apply(t, nil)
	if !hooked {
		t.Fatal("nothing was staged")
	}
	f.check(t)
}

// TestStagedWrittenAhead: the next push's new directories are staged by
// PrewriteFiles (nothing visible), and the push's apply commits them.
func TestStagedWrittenAhead(t *testing.T) {
	f := newStageFixture(t)
	pre := f.s.store.PrewriteFiles(f.es, f.cs, 2)
	if _, err := os.Lstat(filepath.Join(f.root, "t/n")); !os.IsNotExist(err) {
		t.Fatalf("/t/n visible after PrewriteFiles: %v", err)
	}
	if st := staged(t, filepath.Join(f.root, "t")); len(st) != 1 {
		t.Fatalf("staging directories after PrewriteFiles: %v, want one", st)
	}
	f.apply(t, pre)
	f.check(t)
}

// TestStagedMergesIntoTarget: a directory that appears at the target
// while the push is staged (another program, or a push applied alongside)
// receives the staged files one by one; what it held stays.
func TestStagedMergesIntoTarget(t *testing.T) {
	f := newStageFixture(t)
	f.s.store.beforeCommit = func() {
		if err := os.MkdirAll(filepath.Join(f.root, "t/n/sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(f.root, "t/n/sub/local"), "local", 0o644)
	}
	f.s.scanMu.Lock()
	_, errs := f.s.applyLocked(f.es, f.cs, nil, false, nil)
	f.s.scanMu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("apply: %v", errs)
	}
	if b, err := os.ReadFile(filepath.Join(f.root, "t/n/sub/local")); err != nil || string(b) != "local" {
		t.Errorf("the target's own file: %q, %v", b, err)
	}
	f.s.rescan()
	f.check(t)
}

// TestStagedLeftoversCleaned: a crash before the commit leaves a staging
// directory; Scan does not see into it and CleanTemp removes it.
func TestStagedLeftoversCleaned(t *testing.T) {
	f := newStageFixture(t)
	pre := f.s.store.PrewriteFiles(f.es, f.cs, 1)
	_ = pre // the process dies here: nothing discards it
	m, err := f.s.store.Scan()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range m.Entries {
		if strings.HasPrefix(e.Path, "/t/n") || strings.Contains(e.Path, tempPrefix) {
			t.Errorf("scan lists %s", e.Path)
		}
	}
	if n, err := f.s.store.CleanTemp(); err != nil || n != 2 {
		t.Errorf("CleanTemp removed %d, %v; want 2: the staging directory and /t/old's temporary file", n, err)
	}
	assertNoTemp(t, f.root)
}

// TestStagedDiscard: a push that is rejected discards what was staged
// for it.
func TestStagedDiscard(t *testing.T) {
	f := newStageFixture(t)
	pre := f.s.store.PrewriteFiles(f.es, f.cs, 1)
	pre.Discard()
	if st := staged(t, filepath.Join(f.root, "t")); len(st) != 0 {
		t.Errorf("staging directories after Discard: %v", st)
	}
	assertNoTemp(t, f.root)
}
