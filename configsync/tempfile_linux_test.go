package configsync

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestApplyFilesModesAndOwners: the files ApplyFiles creates (which skip
// fchmod and fchown when creation already gives the right result) end
// with exactly the mode and owner of their entry: modes the umask would
// cut, setuid/setgid/sticky, another owner, a setgid directory.
func TestApplyFilesModesAndOwners(t *testing.T) {
	root := t.TempDir()
	s, err := NewStore(root, []string{"/etc/app"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(root+"/etc/app/sgid", 0o755); err != nil {
		t.Fatal(err)
	}
	uid, gid := os.Geteuid(), os.Getegid()
	other := uid // only root may give a file away
	if uid == 0 {
		other = 4242
	}
	if err := os.Chown(root+"/etc/app/sgid", uid, other); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root+"/etc/app/sgid", 0o755|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		dir        string
		mode       uint32
		uid, gid   int
		wantGID    int // -1: gid
		wantUIDNow int // -1: uid
	}{
		{"plain", 0o644, uid, gid, -1, -1},
		{"plain", 0o666, uid, gid, -1, -1}, // cut by a 022 umask at creation
		{"plain", 0o400, uid, gid, -1, -1},
		{"plain", 0o4755, uid, gid, -1, -1},
		{"plain", 0o2755, uid, gid, -1, -1},
		{"plain", 0o1777, uid, gid, -1, -1},
		{"plain", 0o640, other, other, other, other},
		{"plain", 0o4750, other, other, other, other}, // chown clears setuid: chmod after it
		{"sgid", 0o644, uid, gid, -1, -1},             // the directory's group would win
		{"sgid", 0o644, uid, other, other, -1},
		{"plain", 0o644, -1, -1, -1, -1},
	}
	var es []Entry
	var cs [][]byte
	for i, c := range cases {
		b := []byte(fmt.Sprintf("file %d\n", i))
		es = append(es, Entry{Path: fmt.Sprintf("/etc/app/%s/f%02d", c.dir, i), Kind: KindFile, Mode: c.mode,
			UID: c.uid, GID: c.gid, Size: int64(len(b)), SHA256: sha256.Sum256(b)})
		cs = append(cs, b)
	}
	for _, workers := range []int{1, 4} {
		for _, e := range es {
			os.Remove(root + e.Path)
		}
		// Below and above flushPerFileBelow: fsync per file, one syncfs.
		for _, n := range []int{3, len(es)} {
			applied, errs, _ := s.ApplyFiles(es[:n], cs[:n], workers, nil)
			for i := 0; i < n; i++ {
				e, c := es[i], cases[i]
				if errs[i] != nil {
					t.Fatalf("%s: %v", e.Path, errs[i])
				}
				fi, err := os.Lstat(filepath.Join(root, e.Path))
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				wantUID, wantGID := uid, gid
				if c.wantUIDNow >= 0 {
					wantUID = c.wantUIDNow
				}
				if c.wantGID >= 0 {
					wantGID = c.wantGID
				}
				if c.dir == "sgid" && c.gid == gid {
					wantGID = gid
				}
				if got := unixMode(fi.Mode()); got != c.mode {
					t.Errorf("%s: mode %o, want %o (applied %v)", e.Path, got, c.mode, applied[i])
				}
				if int(st.Uid) != wantUID || int(st.Gid) != wantGID {
					t.Errorf("%s: owner %d:%d, want %d:%d", e.Path, st.Uid, st.Gid, wantUID, wantGID)
				}
			}
		}
	}
}

// TestLoadKinds: Load's fast path for regular files gives the entry a scan
// gives (mode with setuid, owner, size, digest), and everything else goes
// the slow way: a symlink is not followed, a FIFO is refused without
// waiting for a writer, a directory has no content.
func TestLoadKinds(t *testing.T) {
	root := t.TempDir()
	s, err := NewStore(root, []string{"/etc/app"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, root+"/etc/app/f", "some content\n", 0o644)
	if err := os.Chmod(root+"/etc/app/f", 0o4750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", root+"/etc/app/l"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(root+"/etc/app/fifo", 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(root+"/etc/app/d", 0o710); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p       string
		kind    EntryKind
		content string
	}{{"/etc/app/f", KindFile, "some content\n"}, {"/etc/app/l", KindSymlink, "f"}, {"/etc/app/d", KindDir, ""}} {
		e, b, err := s.Load(c.p)
		if err != nil {
			t.Fatalf("%s: %v", c.p, err)
		}
		want, err := s.stat(c.p)
		if err != nil {
			t.Fatal(err)
		}
		if !e.Same(want) || e.Kind != c.kind || string(b) != c.content {
			t.Errorf("%s: Load gives %+v %q, a scan %+v", c.p, e, b, want)
		}
	}
	if _, _, err := s.Load("/etc/app/fifo"); err == nil {
		t.Error("a FIFO loaded")
	}
	if _, _, err := s.Load("/etc/app/missing"); !os.IsNotExist(err) {
		t.Errorf("a missing file: %v", err)
	}
}
