package configsync

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hagent/hagent/internal/testutil"
)

func writeFile(t testing.TB, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func mustScan(t testing.TB, s *Store) Manifest {
	t.Helper()
	m, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestManifestChecksum checks the checksum is stable and sees every kind of
// change.
func TestManifestChecksum(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(t *testing.T, root string)
		same   bool
	}{
		{name: "nothing", mutate: func(*testing.T, string) {}, same: true},
		{name: "rewrite same content", mutate: func(t *testing.T, r string) { writeFile(t, r+"/etc/app/a.conf", "alpha\n", 0o644) }, same: true},
		{name: "content", mutate: func(t *testing.T, r string) { writeFile(t, r+"/etc/app/a.conf", "alpha2\n", 0o644) }},
		{name: "mode", mutate: func(t *testing.T, r string) { os.Chmod(r+"/etc/app/a.conf", 0o600) }},
		{name: "new file", mutate: func(t *testing.T, r string) { writeFile(t, r+"/etc/app/sub/c.conf", "c", 0o644) }},
		{name: "delete", mutate: func(t *testing.T, r string) { os.Remove(r + "/etc/nft.conf") }},
		{name: "symlink", mutate: func(t *testing.T, r string) { os.Symlink("a.conf", r+"/etc/app/link") }},
		{name: "temp file ignored", mutate: func(t *testing.T, r string) { writeFile(t, r+"/etc/app/"+tempPrefix+"x", "junk", 0o600) }, same: true},
		{name: "outside sync paths", mutate: func(t *testing.T, r string) { writeFile(t, r+"/etc/other.conf", "x", 0o644) }, same: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, root+"/etc/app/a.conf", "alpha\n", 0o644)
			writeFile(t, root+"/etc/app/b.conf", "beta\n", 0o640)
			writeFile(t, root+"/etc/nft.conf", "table inet x {}\n", 0o600)
			s, err := NewStore(root, []string{"/etc/nft.conf", "/etc/app"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			before := mustScan(t, s)
			if again := mustScan(t, s); again.Checksum() != before.Checksum() {
				t.Fatal("checksum changed between two scans of the same tree")
			}
			// Path order in the configuration does not matter.
			s2, _ := NewStore(root, []string{"/etc/app", "/etc/nft.conf"}, nil)
			if m := mustScan(t, s2); m.Checksum() != before.Checksum() {
				t.Fatal("checksum depends on the order of sync paths")
			}
			tt.mutate(t, root)
			after := mustScan(t, s)
			if got := after.Checksum() == before.Checksum(); got != tt.same {
				t.Fatalf("checksum unchanged = %v, want %v; diff %v", got, tt.same, Diff(before, after))
			}
			if tt.same != (len(Diff(before, after)) == 0) {
				t.Fatalf("Diff = %v, inconsistent with checksum", Diff(before, after))
			}
		})
	}
}

func TestDiff(t *testing.T) {
	f := func(p string, c byte) Entry {
		return Entry{Path: p, Kind: KindFile, Mode: 0o644, Size: 1, SHA256: sha256.Sum256([]byte{c})}
	}
	modeChanged := f("/b", 'b')
	modeChanged.Mode = 0o600
	tests := []struct {
		name       string
		have, want []Entry
		changes    string
	}{
		{name: "equal", have: []Entry{f("/a", 'a')}, want: []Entry{f("/a", 'a')}, changes: ""},
		{name: "new", have: nil, want: []Entry{f("/a", 'a')}, changes: "new /a"},
		{name: "deleted", have: []Entry{f("/a", 'a')}, want: nil, changes: "deleted /a"},
		{name: "content", have: []Entry{f("/a", 'a')}, want: []Entry{f("/a", 'x')}, changes: "modified /a"},
		{name: "mode", have: []Entry{f("/a", 'a'), f("/b", 'b')}, want: []Entry{f("/a", 'a'), modeChanged}, changes: "modified /b"},
		{name: "mixed", have: []Entry{f("/a", 'a'), f("/c", 'c'), f("/d", 'd')}, want: []Entry{f("/b", 'b'), f("/c", 'x'), f("/d", 'd'), f("/e", 'e')},
			changes: "deleted /a, new /b, modified /c, new /e"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, c := range Diff(NewManifest(tt.have), NewManifest(tt.want)) {
				got = append(got, c.Op.String()+" "+c.Path)
			}
			if s := strings.Join(got, ", "); s != tt.changes {
				t.Fatalf("Diff = %q, want %q", s, tt.changes)
			}
		})
	}
}

// TestStoreApply applies entries from one tree to another and checks
// content, mode and owner are kept and nothing temporary is left.
func TestStoreApply(t *testing.T) {
	uid, gid := os.Getuid(), os.Getgid()
	if os.Geteuid() == 0 {
		uid, gid = 1234, 5678 // root can give files away
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, src string)
	}{
		{name: "plain file", setup: func(t *testing.T, src string) { writeFile(t, src+"/etc/app/a.conf", "hello\n", 0o640) }},
		{name: "setuid and empty", setup: func(t *testing.T, src string) { writeFile(t, src+"/etc/app/bin", "", 0o4755) }},
		{name: "nested dirs", setup: func(t *testing.T, src string) {
			writeFile(t, src+"/etc/app/x/y/z.conf", "deep", 0o600)
			os.Chmod(src+"/etc/app/x", 0o750)
		}},
		{name: "symlink", setup: func(t *testing.T, src string) {
			writeFile(t, src+"/etc/app/real", "r", 0o644)
			os.Symlink("real", src+"/etc/app/alias")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := t.TempDir(), t.TempDir()
			os.MkdirAll(src+"/etc/app", 0o755)
			tt.setup(t, src)
			if os.Geteuid() == 0 {
				filepath.WalkDir(src+"/etc/app", func(p string, d fs.DirEntry, err error) error {
					return os.Lchown(p, uid, gid)
				})
			}
			from, _ := NewStore(src, []string{"/etc/app"}, nil)
			to, _ := NewStore(dst, []string{"/etc/app"}, nil)
			want := mustScan(t, from)
			for _, c := range Diff(mustScan(t, to), want) {
				_, content, err := from.Load(c.Path)
				if err != nil {
					t.Fatal(err)
				}
				changed, err := to.Apply(c.Entry, content)
				if err != nil || !changed {
					t.Fatalf("Apply(%s) = %v, %v", c.Path, changed, err)
				}
			}
			got := mustScan(t, to)
			if d := Diff(got, want); len(d) != 0 {
				t.Fatalf("trees differ after apply: %v", d)
			}
			for _, e := range got.Entries {
				if e.Kind != KindSymlink && (e.UID != uid || e.GID != gid) {
					t.Errorf("%s owned by %d:%d, want %d:%d", e.Path, e.UID, e.GID, uid, gid)
				}
			}
			// Applying again changes nothing.
			for _, e := range want.Entries {
				_, content, _ := from.Load(e.Path)
				if changed, err := to.Apply(e, content); err != nil || changed {
					t.Fatalf("second Apply(%s) = %v, %v; want no change", e.Path, changed, err)
				}
			}
			assertNoTemp(t, dst)
		})
	}
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tempPrefix) {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

func TestStoreRefuses(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(root+"/etc/app", 0o755)
	os.MkdirAll(root+"/secret", 0o755)
	os.Symlink(root+"/secret", root+"/etc/app/escape")
	s, _ := NewStore(root, []string{"/etc/app"}, nil)
	content := []byte("x")
	tests := []struct {
		name string
		e    Entry
		data []byte
	}{
		{name: "outside", e: Entry{Path: "/etc/shadow", Kind: KindFile, Size: 1, SHA256: sha256.Sum256(content)}, data: content},
		{name: "dot-dot", e: Entry{Path: "/etc/app/../shadow", Kind: KindFile, Size: 1, SHA256: sha256.Sum256(content)}, data: content},
		{name: "below symlink", e: Entry{Path: "/etc/app/escape/x", Kind: KindFile, Size: 1, SHA256: sha256.Sum256(content)}, data: content},
		{name: "bad digest", e: Entry{Path: "/etc/app/x", Kind: KindFile, Size: 1, SHA256: sha256.Sum256([]byte("y"))}, data: content},
		{name: "cluster", e: Entry{Path: ClusterPath, Kind: KindCluster, Size: 1, SHA256: sha256.Sum256(content)}, data: content},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Apply(tt.e, tt.data); err == nil {
				t.Fatal("Apply succeeded, want error")
			}
		})
	}
	if _, err := os.Stat(root + "/secret/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("write escaped through the symlink")
	}
}

func TestStoreRemove(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root+"/etc/app/d/f", "f", 0o644)
	s, _ := NewStore(root, []string{"/etc/app"}, nil)
	for _, p := range []string{"/etc/app/d/f", "/etc/app/d"} {
		if ch, err := s.Remove(p); err != nil || !ch {
			t.Fatalf("Remove(%s) = %v, %v", p, ch, err)
		}
	}
	if ch, err := s.Remove("/etc/app/d"); err != nil || ch {
		t.Fatalf("second Remove = %v, %v; want false, nil", ch, err)
	}
	if m := mustScan(t, s); len(m.Entries) != 1 {
		t.Fatalf("entries after removal: %v", m.Entries)
	}
}

// TestAtomicWriteSurvivesKill SIGKILLs a process that keeps rewriting a
// file and checks that readers only ever see a complete version.
func TestAtomicWriteSurvivesKill(t *testing.T) {
	if os.Getenv("HAGENT_ATOMIC_WRITER") != "" {
		return // the helper runs in TestAtomicWriterHelper
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "big.conf")
	const size = 4 << 20
	cmd := exec.Command(os.Args[0], "-test.run=^TestAtomicWriterHelper$")
	cmd.Env = append(os.Environ(), "HAGENT_ATOMIC_WRITER="+target)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	testutil.Eventually(t, 10*time.Second, "writer created the file", func() bool {
		_, err := os.Stat(target)
		return err == nil
	})
	check := func() {
		b, err := os.ReadFile(target)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != size || !bytes.Equal(b, bytes.Repeat(b[:1], size)) {
			t.Fatalf("torn file: %d bytes, first %q", len(b), b[:min(len(b), 1)])
		}
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		check()
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	check()
	s, _ := NewStore("", []string{target}, nil)
	if _, err := s.CleanTemp(); err != nil {
		t.Fatal(err)
	}
	assertNoTemp(t, dir)
}

// TestAtomicWriterHelper is the writer process of
// TestAtomicWriteSurvivesKill; it does nothing in a normal test run.
func TestAtomicWriterHelper(t *testing.T) {
	target := os.Getenv("HAGENT_ATOMIC_WRITER")
	if target == "" {
		t.Skip("helper process only")
	}
	for i := 0; ; i++ {
		data := bytes.Repeat([]byte{'a' + byte(i%26)}, 4<<20)
		if err := WriteFileAtomic(target, data, 0o644, -1, -1); err != nil {
			t.Fatal(err)
		}
	}
}
