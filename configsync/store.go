package configsync

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// ClusterPath is the pseudo-path under which the cluster: section of the
// configuration travels with the synchronized files.
const ClusterPath = "cluster:"

// tempPrefix starts the names of the temporary files of atomic writes;
// scans ignore such files and CleanTemp removes leftovers.
const tempPrefix = ".hagent-sync-"

// Digest is a SHA-256 digest; it marshals as lower-case hex.
type Digest [32]byte

// String returns the hex form.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// MarshalText implements encoding.TextMarshaler.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Digest) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != len(d) {
		return fmt.Errorf("configsync: digest must be %d hex digits", 2*len(d))
	}
	_, err := hex.Decode(d[:], b)
	return err
}

// EntryKind is the type of a manifest entry. The numeric values are part of
// the sync protocol: append only; zero is invalid.
type EntryKind uint8

// Entry kinds.
const (
	kindInvalid EntryKind = iota
	// KindFile is a regular file; its digest covers the content.
	KindFile
	// KindDir is a directory; its digest is zero.
	KindDir
	// KindSymlink is a symbolic link; its digest covers the target.
	KindSymlink
	// KindCluster is the cluster: section (path ClusterPath).
	KindCluster
	kindEnd
)

var kindNames = [...]string{"invalid", "file", "dir", "symlink", "cluster"}

// String returns the kind's name.
func (k EntryKind) String() string {
	if k < kindEnd {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MarshalText implements encoding.TextMarshaler.
func (k EntryKind) MarshalText() ([]byte, error) {
	if k == kindInvalid || k >= kindEnd {
		return nil, fmt.Errorf("configsync: invalid entry kind %d", k)
	}
	return []byte(k.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *EntryKind) UnmarshalText(b []byte) error {
	for i := KindFile; i < kindEnd; i++ {
		if string(b) == kindNames[i] {
			*k = i
			return nil
		}
	}
	return fmt.Errorf("configsync: unknown entry kind %q", b)
}

// Entry describes one synchronized path.
type Entry struct {
	// Path is absolute and clean, or ClusterPath.
	Path string    `json:"path"`
	Kind EntryKind `json:"kind"`
	// Mode holds the Unix permission bits including setuid, setgid and
	// sticky (07777); 0 for symlinks and the cluster section.
	Mode uint32 `json:"mode"`
	// UID and GID are the owner; -1 when unknown.
	UID  int   `json:"uid"`
	GID  int   `json:"gid"`
	Size int64 `json:"size"`
	// SHA256 covers the content (file), the target (symlink) or is zero
	// (directory).
	SHA256 Digest `json:"sha256"`
}

// Same reports whether e and o describe identical state (content, mode,
// owner, kind).
func (e Entry) Same(o Entry) bool {
	return e.Path == o.Path && e.Kind == o.Kind && e.Mode == o.Mode && e.UID == o.UID &&
		e.GID == o.GID && e.Size == o.Size && e.SHA256 == o.SHA256
}

// fileMode converts the Unix permission bits to an fs.FileMode.
func fileMode(m uint32) fs.FileMode {
	fm := fs.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		fm |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= fs.ModeSticky
	}
	return fm
}

func unixMode(fm fs.FileMode) uint32 {
	m := uint32(fm.Perm())
	if fm&fs.ModeSetuid != 0 {
		m |= 0o4000
	}
	if fm&fs.ModeSetgid != 0 {
		m |= 0o2000
	}
	if fm&fs.ModeSticky != 0 {
		m |= 0o1000
	}
	return m
}

// Manifest is the state of all synchronized paths, sorted by path.
type Manifest struct {
	Entries []Entry `json:"entries"`
}

// NewManifest sorts entries into a Manifest; a later duplicate path wins.
func NewManifest(entries []Entry) Manifest {
	es := slices.Clone(entries)
	slices.SortStableFunc(es, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	out := es[:0]
	for _, e := range es {
		if n := len(out); n > 0 && out[n-1].Path == e.Path {
			out[n-1] = e
			continue
		}
		out = append(out, e)
	}
	return Manifest{Entries: out}
}

// Get returns the entry of path.
func (m Manifest) Get(path string) (Entry, bool) {
	i, ok := slices.BinarySearchFunc(m.Entries, path, func(e Entry, p string) int { return strings.Compare(e.Path, p) })
	if !ok {
		return Entry{}, false
	}
	return m.Entries[i], true
}

// Checksum is the whole-tree checksum: SHA-256 over "hagent-tree-v1\n" and,
// for every entry in path order, path, NUL, kind (1), mode (4), uid (4),
// gid (4), size (8) and the content digest (32), integers big endian.
func (m Manifest) Checksum() Digest {
	h := sha256.New()
	h.Write([]byte("hagent-tree-v1\n"))
	var b []byte
	for _, e := range m.Entries {
		b = append(b[:0], e.Path...)
		b = append(b, 0, byte(e.Kind))
		b = binary.BigEndian.AppendUint32(b, e.Mode)
		b = binary.BigEndian.AppendUint32(b, uint32(e.UID))
		b = binary.BigEndian.AppendUint32(b, uint32(e.GID))
		b = binary.BigEndian.AppendUint64(b, uint64(e.Size))
		b = append(b, e.SHA256[:]...)
		h.Write(b)
	}
	var d Digest
	h.Sum(d[:0])
	return d
}

// ChangeOp says how a path differs. The numeric values are part of the
// sync protocol: append only; zero is invalid.
type ChangeOp uint8

// Change operations.
const (
	_ ChangeOp = iota // the zero value is invalid
	// ChangeNew: the path exists only in the wanted manifest.
	ChangeNew
	// ChangeModified: the path exists in both with different state.
	ChangeModified
	// ChangeDeleted: the path exists only in the current manifest.
	ChangeDeleted
)

// String returns the operation's name.
func (o ChangeOp) String() string {
	switch o {
	case ChangeNew:
		return "new"
	case ChangeModified:
		return "modified"
	case ChangeDeleted:
		return "deleted"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Change is one path that differs between two manifests.
type Change struct {
	Path string
	Op   ChangeOp
	// Entry is the wanted state (zero for ChangeDeleted).
	Entry Entry
}

// Diff returns the changes that turn have into want, in path order.
func Diff(have, want Manifest) []Change {
	var out []Change
	i, j := 0, 0
	for i < len(have.Entries) || j < len(want.Entries) {
		switch {
		case j == len(want.Entries) || (i < len(have.Entries) && have.Entries[i].Path < want.Entries[j].Path):
			out = append(out, Change{Path: have.Entries[i].Path, Op: ChangeDeleted})
			i++
		case i == len(have.Entries) || want.Entries[j].Path < have.Entries[i].Path:
			out = append(out, Change{Path: want.Entries[j].Path, Op: ChangeNew, Entry: want.Entries[j]})
			j++
		default:
			if !have.Entries[i].Same(want.Entries[j]) {
				out = append(out, Change{Path: want.Entries[j].Path, Op: ChangeModified, Entry: want.Entries[j]})
			}
			i++
			j++
		}
	}
	return out
}

// Store reads and atomically writes the synchronized paths.
type Store struct {
	roots   []string
	prefix  string // file system location of "/" (empty: the real root)
	cluster func() ([]byte, error)

	mu    sync.Mutex
	cache map[string]hashCache
	now   func() time.Time
	// batch, when non-nil, collects the directories whose fsync Apply
	// deferred to EndBatch.
	batch map[string]bool
	// fresh holds the digests of files ApplyFiles just wrote, for the
	// scans of the next freshFor (see noteFresh).
	fresh map[string]freshEntry
	// beforeCommit, if set (tests), runs after a batch's files are
	// durable and before its staged directories are renamed into place.
	beforeCommit func()
	// afterResolve, if set (tests), runs after the directory of logical
	// path p was opened for a write and before anything is written in it:
	// TestApplySwappedDirNotFollowed swaps the directory for a symlink
	// there.
	afterResolve func(p string)
}

// BeginBatch starts a batch of Apply calls: each file is still written
// atomically (temp file, fsync, rename), but the fsync of its directory,
// which makes the rename durable, is done once per directory by EndBatch.
// A crash in between leaves every file old or new, never torn.
func (s *Store) BeginBatch() {
	s.mu.Lock()
	s.batch = map[string]bool{}
	s.mu.Unlock()
}

// EndBatch fsyncs every directory a file was renamed into since
// BeginBatch, and ends the batch.
func (s *Store) EndBatch() error {
	s.mu.Lock()
	dirs := s.batch
	s.batch = nil
	s.mu.Unlock()
	var errs []error
	for d := range dirs {
		if err := syncDir(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type hashCache struct {
	stat statKey
	sum  Digest
}

// NewStore returns a store for the given sync paths (absolute; files or
// directories, which are synchronized recursively) and, if cluster is not
// nil, the cluster: section it returns. If root is not empty, every path is
// looked up below root (as in a chroot) while manifests keep the paths as
// configured; tests and containers use this.
func NewStore(root string, paths []string, cluster func() ([]byte, error)) (*Store, error) {
	s := &Store{cluster: cluster, cache: map[string]hashCache{}, now: time.Now}
	if root != "" {
		if !filepath.IsAbs(root) {
			return nil, fmt.Errorf("configsync: root %q is not absolute", root)
		}
		if r := filepath.Clean(root); r != "/" {
			s.prefix = r
		}
	}
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("configsync: sync path %q is not absolute", p)
		}
		c := filepath.Clean(p)
		if c == "/" {
			return nil, errors.New("configsync: refusing to synchronize /")
		}
		if !slices.Contains(s.roots, c) {
			s.roots = append(s.roots, c)
		}
	}
	slices.Sort(s.roots)
	return s, nil
}

// Paths returns the configured sync paths, cleaned and sorted.
func (s *Store) Paths() []string { return slices.Clone(s.roots) }

// fsPath maps a logical path to the file system.
func (s *Store) fsPath(p string) string { return s.prefix + p }

// logical maps a file system path back to the logical path ("" if it is
// outside the root).
func (s *Store) logical(fp string) string {
	if s.prefix == "" {
		return fp
	}
	if l, ok := strings.CutPrefix(fp, s.prefix); ok && strings.HasPrefix(l, "/") {
		return l
	}
	return ""
}

// root returns the configured path covering p, or "".
func (s *Store) root(p string) string {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return ""
	}
	best := ""
	for _, r := range s.roots {
		if (p == r || strings.HasPrefix(p, r+"/")) && len(r) > len(best) {
			best = r
		}
	}
	return best
}

// Covers reports whether p is a clean absolute path at or below a sync path.
func (s *Store) Covers(p string) bool { return s.root(p) != "" }

// Scan builds the manifest of every sync path (missing paths have no
// entries) and of the cluster section. It fails rather than return a partial
// manifest, which would read as deletions.
func (s *Store) Scan() (Manifest, error) {
	var entries []Entry
	for _, r := range s.roots {
		err := filepath.WalkDir(s.fsPath(r), func(fp string, d fs.DirEntry, err error) error {
			p := s.logical(fp)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // vanished while walking
				}
				return err
			}
			if strings.HasPrefix(d.Name(), tempPrefix) {
				if d.IsDir() {
					return fs.SkipDir // a staged directory (see stage)
				}
				return nil
			}
			e, err := s.stat(p)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			if e.Kind != kindInvalid {
				entries = append(entries, e)
			}
			return nil
		})
		if err != nil {
			return Manifest{}, fmt.Errorf("configsync: scanning %s: %w", r, err)
		}
	}
	s.pruneFresh()
	s.pruneCache(entries)
	if s.cluster != nil {
		b, err := s.cluster()
		if err != nil {
			return Manifest{}, fmt.Errorf("configsync: cluster section: %w", err)
		}
		entries = append(entries, clusterEntry(b))
	}
	return NewManifest(entries), nil
}

// pruneCache drops the cached digests of paths a scan no longer found
// (deleted locally): the cache holds at most one entry per file of the
// tree.
func (s *Store) pruneCache(entries []Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cache) <= len(entries) {
		return
	}
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		seen[e.Path] = true
	}
	for p := range s.cache {
		if !seen[p] {
			delete(s.cache, p)
		}
	}
}

func clusterEntry(b []byte) Entry {
	return Entry{Path: ClusterPath, Kind: KindCluster, Size: int64(len(b)), SHA256: sha256.Sum256(b)}
}

// stat describes p, hashing a file unless its stat signature is cached.
// Sockets, devices and pipes have kind invalid and are skipped.
func (s *Store) stat(p string) (Entry, error) {
	fp := s.fsPath(p)
	fi, err := os.Lstat(fp)
	if err != nil {
		return Entry{}, err
	}
	uid, gid := fileOwner(fi)
	e := Entry{Path: p, UID: uid, GID: gid}
	switch {
	case fi.Mode().IsRegular():
		e.Kind, e.Mode, e.Size = KindFile, unixMode(fi.Mode()), fi.Size()
		key, cacheable := statSignature(fi)
		s.mu.Lock()
		c, ok := s.cache[p]
		if !ok {
			var f freshEntry
			f, ok = s.fresh[p]
			c = f.hashCache
		}
		s.mu.Unlock()
		if ok && cacheable && c.stat == key {
			e.SHA256 = c.sum
			return e, nil
		}
		sum, n, err := s.hashFile(p)
		if err != nil {
			return Entry{}, err
		}
		e.SHA256, e.Size = sum, n
		// Do not cache a file changed within the last second: a second
		// write in the same timestamp tick would go unnoticed.
		if cacheable && s.now().Sub(key.changed()) > time.Second {
			s.mu.Lock()
			s.cache[p] = hashCache{stat: key, sum: sum}
			s.mu.Unlock()
		}
	case fi.IsDir():
		e.Kind, e.Mode = KindDir, unixMode(fi.Mode())
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(fp)
		if err != nil {
			return Entry{}, err
		}
		e.Kind, e.Size, e.SHA256 = KindSymlink, int64(len(t)), sha256.Sum256([]byte(t))
	}
	return e, nil
}

// hashFile hashes the regular file at logical path p, opened below its
// anchor without a symlink in any component.
func (s *Store) hashFile(p string) (Digest, int64, error) {
	f, err := s.openRead(p)
	if err != nil {
		return Digest{}, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return Digest{}, 0, err
	}
	var d Digest
	h.Sum(d[:0])
	return d, n, nil
}

// Load returns the current entry of p and its content (file bytes, symlink
// target, cluster section); the entry's digest covers exactly the returned
// bytes. A missing path returns an error wrapping fs.ErrNotExist.
func (s *Store) Load(p string) (Entry, []byte, error) {
	if p == ClusterPath {
		if s.cluster == nil {
			return Entry{}, nil, fmt.Errorf("configsync: no cluster section: %w", fs.ErrNotExist)
		}
		b, err := s.cluster()
		if err != nil {
			return Entry{}, nil, err
		}
		return clusterEntry(b), b, nil
	}
	if !s.Covers(p) {
		return Entry{}, nil, fmt.Errorf("configsync: %s is not a sync path", p)
	}
	// Read below the anchor without following a symlink in any
	// component: a directory replaced by a link to /secret is refused,
	// not served (TestLoadRefusesSymlinkedDir).
	if e, b, ok := s.loadRegular(p); ok {
		return e, b, nil
	}
	d, base, _, err := s.openParent(p, false)
	if err != nil {
		return Entry{}, nil, err
	}
	defer d.close()
	return loadAt(d, p, base)
}

// checkPath refuses a path outside the sync paths or below a symlink inside
// them. It only plans (planStage): the writes themselves go through
// directory fds that refuse a symlink at the time of the write (openParent).
func (s *Store) checkPath(p string) error {
	r := s.root(p)
	if r == "" {
		return fmt.Errorf("configsync: %q is not below a sync path", p)
	}
	for a := filepath.Dir(p); len(a) >= len(r); a = filepath.Dir(a) {
		fi, err := os.Lstat(s.fsPath(a))
		if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("configsync: refusing to write %s below symlink %s", p, a)
		}
		if a == r {
			break
		}
	}
	return nil
}

// Apply makes path e.Path match e with the given content (file bytes or
// symlink target; nil for directories), atomically. It reports whether
// anything changed; an identical path is left alone. The cluster section
// cannot be applied here.
func (s *Store) Apply(e Entry, content []byte) (changed bool, err error) {
	if s.root(e.Path) == "" {
		return false, fmt.Errorf("configsync: %q is not below a sync path", e.Path)
	}
	if e.Kind == KindFile || e.Kind == KindSymlink {
		if sha256.Sum256(content) != e.SHA256 || int64(len(content)) != e.Size {
			return false, fmt.Errorf("configsync: content of %s does not match its digest", e.Path)
		}
	}
	// Every write below goes through d, the directory of e.Path reached
	// without a symlink; a component swapped for one later cannot redirect
	// it (TestApplySwappedDirNotFollowed).
	d, base, created, err := s.openParent(e.Path, true)
	if err != nil {
		return false, err
	}
	defer d.close()
	s.syncLater(created...)
	if s.afterResolve != nil {
		s.afterResolve(e.Path)
	}
	cur, err := s.stat(e.Path)
	switch {
	case err == nil && cur.Same(e):
		return false, nil
	case err == nil && cur.Kind != e.Kind && (cur.Kind == KindDir || e.Kind == KindDir):
		if err := removeAllAt(d, base); err != nil {
			return false, err
		}
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return false, err
	}
	switch e.Kind {
	case KindFile:
		var di dirInfo
		var tmp string
		if di, err = lookDir(d); err == nil {
			tmp, err = createTemp(d, di, content, fileMode(e.Mode), e.UID, e.GID, true)
		}
		if err == nil {
			if err = renameAt(d, tmp, d, base); err != nil {
				unlinkAt(d, tmp)
			} else if !s.syncLater(d.path) {
				err = fsyncFd(d.fd, d.path)
			}
		}
	case KindSymlink:
		err = symlinkAt(d, base, string(content), e.UID, e.GID)
	case KindDir:
		var made bool
		if made, err = mkdirAt(d, base); err == nil {
			// Owner and mode through the directory's own fd, opened
			// without following a symlink planted meanwhile
			// (TestApplyDirChmodNotFollowed).
			err = setDirAttrs(d, base, unixPerm(fileMode(e.Mode)), e.UID, e.GID)
		}
		if err == nil && made && !s.syncLater(d.path) {
			// The new directory's entry in its parent is durable once
			// the parent is fsynced: once per batch.
			err = fsyncFd(d.fd, d.path)
		}
	default:
		err = fmt.Errorf("configsync: cannot apply %s entry %s", e.Kind, e.Path)
	}
	if err != nil {
		return false, err
	}
	if e.Kind == KindFile && cur.Kind != KindDir {
		// Nothing cached below a path that was not a directory: drop just
		// its own entry (a scan of the whole cache per file is quadratic
		// in a 10 000-file sync).
		s.mu.Lock()
		delete(s.cache, e.Path)
		s.mu.Unlock()
	} else {
		s.forget(e.Path)
	}
	return true, nil
}

// syncLater adds directories (file system paths) to the batch's fsyncs
// and reports whether a batch is open; without one, it fsyncs those
// directories now and reports false.
func (s *Store) syncLater(dirs ...string) bool {
	s.mu.Lock()
	batch := s.batch
	if batch != nil {
		for _, d := range dirs {
			batch[d] = true
		}
	}
	s.mu.Unlock()
	if batch == nil {
		for _, d := range dirs {
			_ = syncDir(d)
		}
	}
	return batch != nil
}

// Remove deletes path p (a directory with everything in it) and syncs its
// directory. It reports whether something was there.
func (s *Store) Remove(p string) (bool, error) {
	if s.root(p) == "" {
		return false, fmt.Errorf("configsync: %q is not below a sync path", p)
	}
	d, base, _, err := s.openParent(p, false)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer d.close()
	if _, err := lstatAt(d, base); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err := removeAllAt(d, base); err != nil {
		return false, err
	}
	s.forget(p)
	return true, fsyncFd(d.fd, d.path)
}

func (s *Store) forget(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.cache {
		if k == p || strings.HasPrefix(k, p+"/") {
			delete(s.cache, k)
		}
	}
}

// CleanTemp removes temporary files and staged directories left by an
// interrupted atomic write (for example after SIGKILL) next to and below
// the sync paths.
func (s *Store) CleanTemp() (removed int, err error) {
	seen := map[string]bool{}
	var errs []error
	clean := func(dir string) {
		if seen[dir] {
			return
		}
		seen[dir] = true
		des, err := os.ReadDir(dir)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			return
		}
		for _, d := range des {
			if strings.HasPrefix(d.Name(), tempPrefix) {
				// RemoveAll: a staged directory holds a tree.
				if err := os.RemoveAll(filepath.Join(dir, d.Name())); err != nil {
					errs = append(errs, err)
				} else {
					removed++
				}
			}
		}
	}
	for _, r := range s.roots {
		clean(filepath.Dir(s.fsPath(r)))
		_ = filepath.WalkDir(s.fsPath(r), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				clean(p)
			}
			return nil
		})
	}
	return removed, errors.Join(errs...)
}

func tempName(dir string) string { return filepath.Join(dir, tempBase()) }

// tempBase returns a new temporary file name.
func tempBase() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return tempPrefix + hex.EncodeToString(b[:])
}

// WriteFileAtomic replaces path with data so that a reader sees either the
// old or the new file, never a torn one, even if the process dies midway:
// it writes a temporary file in the same directory, sets owner (uid/gid -1
// keeps the current one) and mode, fsyncs it, renames it over path and
// fsyncs the directory.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode, uid, gid int) error {
	return writeFileAtomic(path, data, perm, uid, gid, true)
}

// writeFileAtomic is WriteFileAtomic; with syncDirNow false the caller
// fsyncs the directory later (a batch).
func writeFileAtomic(path string, data []byte, perm fs.FileMode, uid, gid int, syncDirNow bool) error {
	tmp, err := writeTemp(path, data, perm, uid, gid, true)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	if !syncDirNow {
		return nil
	}
	return syncDir(filepath.Dir(path))
}

// syncDir fsyncs directory dir, opened with O_DIRECTORY: a FIFO or file
// put in its place is refused, not waited for.
func syncDir(dir string) error {
	d, err := os.OpenFile(dir, os.O_RDONLY|oDirectory, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return err
	}
	return nil
}
