package configsync

import (
	"path/filepath"
	"slices"
	"strings"
)

// afterApplyLocked brings the manifest up to date after a push was
// applied (scanMu held): when everything applied, the tree is the old
// manifest with the pushed entries and deletions, computed without reading
// the tree again (a full sync of 10 000 files would otherwise scan the
// growing tree after every push); otherwise, or when the result could
// differ from a scan, it scans. Local edits made meanwhile are found by
// the scan the watcher asks for once the apply is done.
func (s *Syncer) afterApplyLocked(entries []Entry, deleted []string, errs []error) {
	if len(errs) == 0 {
		s.mu.Lock()
		cur := s.manifest
		s.mu.Unlock()
		if m, ok := s.store.manifestAfter(cur, entries, deleted); ok {
			s.mu.Lock()
			s.manifest, s.checksum, s.scannedFrom = m, m.Checksum(), 0
			s.publishLocked()
			s.mu.Unlock()
			return
		}
	}
	s.rescanLocked(true)
}

// manifestAfter returns the manifest a scan would give after entries and
// deleted were applied without error to a tree whose manifest was cur;
// ok is false when it cannot be sure (an unknown owner, a directory
// created on the way, a cluster section it cannot read).
func (s *Store) manifestAfter(cur Manifest, entries []Entry, deleted []string) (Manifest, bool) {
	// gone: paths whose descendants no longer exist (deleted, or now a
	// file or symlink).
	gone := make(map[string]bool, len(deleted))
	for _, p := range deleted {
		gone[p] = true
	}
	set := make(map[string]Entry, len(entries))
	for _, e := range entries {
		if e.Kind == KindCluster {
			if s.cluster == nil {
				return Manifest{}, false
			}
			b, err := s.cluster()
			if err != nil {
				return Manifest{}, false
			}
			set[ClusterPath] = clusterEntry(b)
			continue
		}
		if e.UID < 0 || e.GID < 0 || e.Mode&^0o7777 != 0 || (e.Kind == KindSymlink && e.Mode != 0) ||
			e.Kind < KindFile || e.Kind > KindSymlink || strings.HasPrefix(filepath.Base(e.Path), tempPrefix) {
			return Manifest{}, false
		}
		if e.Kind != KindDir {
			gone[e.Path] = true
		}
		set[e.Path] = e
	}
	under := func(p string) bool {
		for a := filepath.Dir(p); a != p && a != "/" && a != "."; p, a = a, filepath.Dir(a) {
			if gone[a] {
				return true
			}
		}
		return false
	}
	out := make([]Entry, 0, len(cur.Entries)+len(set))
	for _, e := range cur.Entries {
		if _, replaced := set[e.Path]; replaced || (gone[e.Path] && e.Path != ClusterPath) || under(e.Path) {
			continue
		}
		out = append(out, e)
	}
	for _, e := range set {
		out = append(out, e)
	}
	m := NewManifest(out)
	// Every pushed path's directory must be in the tree (or the path be a
	// sync path itself): a directory the apply created on the way has a
	// mode and owner only a scan knows.
	for p := range set {
		if p == ClusterPath || slices.Contains(s.roots, p) {
			continue
		}
		if d, ok := m.Get(filepath.Dir(p)); !ok || d.Kind != KindDir {
			return Manifest{}, false
		}
	}
	return m, true
}
