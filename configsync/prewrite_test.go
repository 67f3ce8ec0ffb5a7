package configsync

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrewriteFiles: files written ahead are used by ApplyFiles (the
// targets get their content, no temporary file stays, nothing is visible
// before ApplyFiles), an entry that changed since is written again, and
// Discard removes what was not used.
func TestPrewriteFiles(t *testing.T) {
	root := t.TempDir()
	s, err := NewStore(root, []string{"/etc/app"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var es []Entry
	var cs [][]byte
	for i := 0; i < 20; i++ {
		c := []byte(fmt.Sprintf("file %d\n", i))
		es = append(es, Entry{Path: fmt.Sprintf("/etc/app/new%d/f%02d", i%2, i), Kind: KindFile, Mode: 0o640,
			UID: os.Getuid(), GID: os.Getgid(), Size: int64(len(c)), SHA256: sha256.Sum256(c)})
		cs = append(cs, c)
	}
	temps := func() (n int) {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && strings.HasPrefix(d.Name(), tempPrefix) {
				n++
			}
			return nil
		})
		return n
	}
	pre := s.PrewriteFiles(es, cs, 2)
	if n := temps(); n != len(es) {
		t.Fatalf("%d temporary files written ahead, want %d", n, len(es))
	}
	for _, e := range es {
		if _, err := os.Lstat(root + e.Path); !os.IsNotExist(err) {
			t.Fatalf("%s visible before ApplyFiles: %v", e.Path, err)
		}
	}
	// Entry 3 changed since it was written ahead: written again.
	c3 := []byte("changed\n")
	es[3].Size, es[3].SHA256, cs[3] = int64(len(c3)), sha256.Sum256(c3), c3
	applied, errs, times := s.ApplyFiles(es, cs, 2, pre)
	if times.Prewritten != len(es)-1 {
		t.Errorf("%d files used as written ahead, want %d", times.Prewritten, len(es)-1)
	}
	for i, e := range es {
		if errs[i] != nil || !applied[i] {
			t.Fatalf("%s: applied %v, %v", e.Path, applied[i], errs[i])
		}
		if b, err := os.ReadFile(root + e.Path); err != nil || string(b) != string(cs[i]) {
			t.Errorf("%s: %q, %v", e.Path, b, err)
		}
	}
	if n := temps(); n != 0 {
		t.Errorf("%d temporary files left", n)
	}
	pre = s.PrewriteFiles([]Entry{{Path: "/etc/app/x", Kind: KindFile, Size: 1, SHA256: sha256.Sum256([]byte("x")), UID: -1, GID: -1, Mode: 0o644}}, [][]byte{[]byte("x")}, 1)
	pre.Discard()
	if n := temps(); n != 0 {
		t.Errorf("%d temporary files left after Discard", n)
	}
}

// TestIndependentPushes: a push's files are written ahead only if the
// push before it touches none of their paths.
func TestIndependentPushes(t *testing.T) {
	push := func(deleted []string, es ...Entry) *syncMsg {
		return &syncMsg{kind: msgPush, hdr: syncHeader{Entries: es, Deleted: deleted}}
	}
	f := func(p string) Entry { return Entry{Path: p, Kind: KindFile} }
	d := func(p string) Entry { return Entry{Path: p, Kind: KindDir} }
	files := func(dir string, extra ...Entry) *syncMsg {
		m := push(nil, extra...)
		for i := 0; i < flushPerFileBelow; i++ {
			m.hdr.Entries = append(m.hdr.Entries, f(fmt.Sprintf("%s/f%d", dir, i)))
		}
		return m
	}
	cases := []struct {
		name    string
		m, next *syncMsg
		want    bool
	}{
		{"other directories", files("/a"), files("/b"), true},
		{"the same directory, pushed as a directory before", push(nil, d("/a"), f("/a/x")), files("/a"), true},
		{"a file pushed twice", push(nil, f("/b/f3")), files("/b"), false},
		{"below a path made a file", push(nil, f("/b")), files("/b"), false},
		{"below a deleted directory", push([]string{"/b"}), files("/b"), false},
		{"a file where the push before had a directory", push(nil, f("/b/f1/deep")), files("/b"), false},
		{"too small to be flushed as one", files("/a"), push(nil, f("/b/x")), false},
		{"not a push", &syncMsg{kind: msgPullResp}, files("/b"), false},
	}
	for _, c := range cases {
		if got := independentPushes(c.m, c.next); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
