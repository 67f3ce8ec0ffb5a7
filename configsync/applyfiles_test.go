package configsync

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestApplyFiles applies batches below and above flushPerFileBelow (an
// fsync per file, or one syncfs) and checks content, mode, what counts as
// changed, that a bad entry fails alone, and that no temporary file stays.
func TestApplyFiles(t *testing.T) {
	tests := []struct {
		name    string
		files   int
		corrupt int // index of an entry whose content does not match its digest (-1: none)
		present int // index of an entry already on disk, identical (-1: none)
	}{
		{name: "small batch, fsync per file", files: 3, corrupt: -1, present: -1},
		{name: "large batch, one syncfs", files: 40, corrupt: -1, present: -1},
		{name: "large batch with a bad digest", files: 40, corrupt: 7, present: -1},
		{name: "large batch, one file already there", files: 40, corrupt: -1, present: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			s, err := NewStore(root, []string{"/etc/app"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var es []Entry
			var cs [][]byte
			for i := 0; i < tt.files; i++ {
				c := []byte(fmt.Sprintf("file %d\n", i))
				e := Entry{Path: fmt.Sprintf("/etc/app/d%d/f%02d.conf", i%3, i), Kind: KindFile, Mode: 0o640,
					UID: -1, GID: -1, Size: int64(len(c)), SHA256: sha256.Sum256(c)}
				if i == tt.present {
					writeFile(t, root+e.Path, string(c), 0o640)
					cur, err := s.stat(e.Path)
					if err != nil {
						t.Fatal(err)
					}
					e.UID, e.GID = cur.UID, cur.GID
				}
				if i == tt.corrupt {
					c = []byte("tampered")
					e.Size = int64(len(c))
				}
				es, cs = append(es, e), append(cs, c)
			}
			applied, errs, _ := s.ApplyFiles(es, cs, 4, nil)
			for i, e := range es {
				switch {
				case i == tt.corrupt:
					if errs[i] == nil || applied[i] {
						t.Errorf("%s: bad digest applied (err %v)", e.Path, errs[i])
					}
					if _, err := os.Lstat(root + e.Path); !os.IsNotExist(err) {
						t.Errorf("%s: exists after a refused write", e.Path)
					}
					continue
				case errs[i] != nil:
					t.Fatalf("%s: %v", e.Path, errs[i])
				case applied[i] == (i == tt.present):
					t.Errorf("%s: applied = %v", e.Path, applied[i])
				}
				b, err := os.ReadFile(root + e.Path)
				if err != nil || string(b) != string(cs[i]) {
					t.Errorf("%s: content %q, %v", e.Path, b, err)
				}
				if fi, err := os.Stat(root + e.Path); err != nil || fi.Mode().Perm() != 0o640 {
					t.Errorf("%s: mode %v, %v", e.Path, fi.Mode(), err)
				}
			}
			filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err == nil && strings.HasPrefix(d.Name(), tempPrefix) {
					t.Errorf("temporary file left: %s", p)
				}
				return nil
			})
		})
	}
}
