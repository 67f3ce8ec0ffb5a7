package configsync

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkLoad reads 1 000 files of 5 KiB one by one as the primary does
// for a push (Store.Load: below the anchor, no symlink followed).
func BenchmarkLoad(b *testing.B) {
	root := b.TempDir()
	var paths []string
	for i := range 1000 {
		p := fmt.Sprintf("/big/d%02d/f%04d", i%10, i)
		os.MkdirAll(filepath.Dir(root+p), 0o755)
		os.WriteFile(root+p, make([]byte, 5<<10), 0o644)
		paths = append(paths, p)
	}
	s, err := NewStore(root, []string{"/big"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(paths)) * 5 << 10)
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range paths {
			if _, _, err := s.Load(p); err != nil {
				b.Fatal(err)
			}
		}
	}
}
