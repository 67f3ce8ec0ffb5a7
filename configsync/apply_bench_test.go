package configsync

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkApplyFullTree applies a full sync of 10 000 files / 50 MiB in
// 100 directories onto an empty tree, as a secondary does for the pushes
// of a joining member (write, flush, rename, the rescan after the push),
// in b.TempDir's file system.
func BenchmarkApplyFullTree(b *testing.B) {
	const files, dirs, size = 10000, 100, 50 << 20 / 10000
	var entries []Entry
	var contents [][]byte
	for d := 0; d < dirs; d++ {
		entries = append(entries, Entry{Path: fmt.Sprintf("/big/d%03d", d), Kind: KindDir, Mode: 0o755})
		contents = append(contents, nil)
	}
	for i := 0; i < files; i++ {
		c := make([]byte, size)
		for j := range c {
			c[j] = byte('a' + (i+j)%26)
		}
		entries = append(entries, Entry{Path: fmt.Sprintf("/big/d%03d/f%05d.conf", i%dirs, i), Kind: KindFile,
			Mode: 0o644, UID: os.Getuid(), GID: os.Getgid(), Size: size, SHA256: sha256.Sum256(c)})
		contents = append(contents, c)
	}
	b.SetBytes(int64(files * size))
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		root := b.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "big"), 0o755); err != nil {
			b.Fatal(err)
		}
		s := offlineSyncer(b, root, "/big")
		b.StartTimer()
		t0 := time.Now()
		s.scanMu.Lock()
		_, errs := s.applyLocked(entries, contents, nil, false, nil)
		t1 := time.Now()
		s.rescanLocked(true)
		s.scanMu.Unlock()
		if len(errs) > 0 {
			b.Fatal(errs[0])
		}
		b.ReportMetric(t1.Sub(t0).Seconds(), "apply-s")
		b.ReportMetric(time.Since(t1).Seconds(), "rescan-s")
	}
}

// BenchmarkStatus10k: Status (with this node's path list) and Summary
// (what `ha status` takes, twice per call) of a syncer holding 10 000
// synchronized paths.
func BenchmarkStatus10k(b *testing.B) {
	s := offlineSyncer(b, b.TempDir(), "/big")
	var es []Entry
	for i := 0; i < 10000; i++ {
		es = append(es, Entry{Path: fmt.Sprintf("/big/d%03d/f%05d.conf", i%100, i), Kind: KindFile, Mode: 0o644, Size: 5242})
	}
	s.mu.Lock()
	s.manifest = NewManifest(es)
	s.mu.Unlock()
	b.Run("Status", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			s.Status()
		}
	})
	b.Run("Summary", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			s.Summary()
		}
	})
}
