package configsync

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/hagent/hagent/l2chan"
)

// TestManifestAfterApply applies pushes that create, modify, delete and
// change the kind of paths, and checks that the manifest computed without
// a scan (afterApplyLocked) is exactly what a scan of the tree gives; and
// that a push whose result it cannot know (a directory created on the way)
// falls back to a scan.
func TestManifestAfterApply(t *testing.T) {
	root := t.TempDir()
	uid, gid := os.Getuid(), os.Getgid()
	file := func(p, content string, mode uint32) (Entry, []byte) {
		c := []byte(content)
		return Entry{Path: p, Kind: KindFile, Mode: mode, UID: uid, GID: gid, Size: int64(len(c)), SHA256: sha256.Sum256(c)}, c
	}
	dir := func(p string, mode uint32) (Entry, []byte) {
		return Entry{Path: p, Kind: KindDir, Mode: mode, UID: uid, GID: gid}, nil
	}
	link := func(p, target string) (Entry, []byte) {
		c := []byte(target)
		return Entry{Path: p, Kind: KindSymlink, UID: uid, GID: gid, Size: int64(len(c)), SHA256: sha256.Sum256(c)}, c
	}
	for _, d := range []string{"t/a", "t/b/deep"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(root, "t/a/x"), "old x", 0o644)
	writeFile(t, filepath.Join(root, "t/b/y"), "y", 0o644)
	writeFile(t, filepath.Join(root, "t/b/deep/z"), "z", 0o644)
	writeFile(t, filepath.Join(root, "t/c"), "c", 0o644)
	if err := os.Symlink("a/x", filepath.Join(root, "t/l")); err != nil {
		t.Fatal(err)
	}
	s := offlineSyncer(t, root, "/t")
	type push struct {
		name    string
		entries []func() (Entry, []byte)
		deleted []string
		scans   bool // the result cannot be known without a scan
	}
	pushes := []push{
		{name: "new, modified, kind changes, deletion", entries: []func() (Entry, []byte){
			func() (Entry, []byte) { return dir("/t/d", 0o750) },
			func() (Entry, []byte) { return file("/t/d/n", "new", 0o600) },
			func() (Entry, []byte) { return file("/t/a/x", "new x", 0o640) },
			func() (Entry, []byte) { return file("/t/b", "b is a file now", 0o644) },
			func() (Entry, []byte) { return dir("/t/c", 0o700) },
			func() (Entry, []byte) { return file("/t/c/w", "w", 0o644) },
			func() (Entry, []byte) { return link("/t/m", "d/n") },
			func() (Entry, []byte) { return dir("/t/a", 0o711) },
		}, deleted: []string{"/t/l"}},
		{name: "a directory deleted with what it holds, a symlink replaced", entries: []func() (Entry, []byte){
			func() (Entry, []byte) { return link("/t/m", "a/x") },
		}, deleted: []string{"/t/d"}},
		{name: "a file in a directory the push does not name", entries: []func() (Entry, []byte){
			func() (Entry, []byte) { return file("/t/new/dir/f", "f", 0o644) },
		}, scans: true},
	}
	for _, p := range pushes {
		var es []Entry
		var cs [][]byte
		for _, f := range p.entries {
			e, c := f()
			es, cs = append(es, e), append(cs, c)
		}
		s.scanMu.Lock()
		s.mu.Lock()
		before := s.manifest
		s.mu.Unlock()
		_, errs := s.applyLocked(es, cs, p.deleted, false, nil)
		if len(errs) > 0 {
			t.Fatalf("%s: %v", p.name, errs)
		}
		_, ok := s.store.manifestAfter(before, es, p.deleted)
		s.afterApplyLocked(es, p.deleted, errs)
		s.mu.Lock()
		got, sum := s.manifest, s.checksum
		s.mu.Unlock()
		s.scanMu.Unlock()
		if ok == p.scans {
			t.Errorf("%s: computed without a scan = %v, want %v", p.name, ok, !p.scans)
		}
		want, err := s.store.Scan()
		if err != nil {
			t.Fatal(err)
		}
		if d := Diff(want, got); len(d) > 0 || len(got.Entries) != len(want.Entries) {
			t.Errorf("%s: manifest after the apply differs from a scan: %+v\ngot  %+v\nwant %+v", p.name, d, got.Entries, want.Entries)
		}
		if sum != want.Checksum() {
			t.Errorf("%s: checksum %s, a scan gives %s", p.name, sum, want.Checksum())
		}
	}
}

// offlineSyncer is a syncer "b" over root's sync path p whose transport
// never delivers anything: for tests and benchmarks that call its apply
// and scan directly.
func offlineSyncer(tb testing.TB, root, p string) *Syncer {
	tb.Helper()
	cfg := LabSyncConfig()
	cfg.Self, cfg.Root, cfg.Paths = "b", root, []string{p}
	cfg.Transport = &silentTransport{msgs: make(chan l2chan.Message)}
	s, err := NewSyncer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
