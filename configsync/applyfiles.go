package configsync

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// flushPerFileBelow is the batch size under which ApplyFiles fsyncs each
// file itself rather than flushing the file system once: for a handful of
// files (an incremental push) that is as quick and does not wait for other
// programs' dirty data.
const flushPerFileBelow = 8

// ApplyFiles applies the regular-file entries es (contents cs) as one
// batch, with up to workers in parallel, and reports for each entry whether
// it changed the file and why it failed. Every file stays old or new across
// a crash or power loss at any point:
//
//  1. each file is written to a temporary file beside it (content, fchown,
//     fchmod), skipping files that are already identical;
//  2. the temporary files are made durable: one syncfs(2) per file system
//     for a large batch (a single journal commit instead of one fsync per
//     file), an fsync of each file for a small one;
//  3. only then is each renamed over its target;
//  4. each directory a file was renamed into is fsynced once.
//
// A crash before 3 leaves temporary files that CleanTemp removes at the
// next start.
//
// pre, if not nil, holds temporary files PrewriteFiles already wrote for
// some of the entries (while the previous batch was applied); ApplyFiles
// uses them and removes those it does not use.
func (s *Store) ApplyFiles(es []Entry, cs [][]byte, workers int, pre *Prewritten) (applied []bool, errs []error, t BatchTimes) {
	return s.applyFiles(es, cs, workers, pre, nil)
}

// applyFiles is ApplyFiles with the batch's stage st (nil: none): files in
// a staged directory are written there with their final names, and the
// staged trees are renamed into place after the flush, instead of each
// file.
func (s *Store) applyFiles(es []Entry, cs [][]byte, workers int, pre *Prewritten, st *stage) (applied []bool, errs []error, t BatchTimes) {
	applied, errs = make([]bool, len(es)), make([]error, len(es))
	// tmps[i]: the temporary file of es[i], in the open directory its
	// target is renamed in (or, staged[i], the file itself with its final
	// name in a staged directory).
	tmps := make([]tempRef, len(es))
	staged := make([]bool, len(es))
	perFile := len(es) < flushPerFileBelow
	if perFile {
		// Files written ahead were not fsynced one by one.
		pre.Discard()
		pre = nil
	}
	dirs := newDirCache()
	defer dirs.close()
	defer pre.close()
	var prewritten atomic.Int64
	t0 := time.Now()
	parallel(len(es), workers, func(i int) {
		if tmp, inStage := pre.take(es[i]); tmp.d != nil {
			tmps[i], staged[i] = tmp, inStage
			prewritten.Add(1)
			return
		}
		if d, name, di, ok := st.stagedFile(es[i].Path); ok {
			if errs[i] = checkContent(es[i], cs[i]); errs[i] == nil {
				errs[i] = createFile(d, name, di, cs[i], fileMode(es[i].Mode), es[i].UID, es[i].GID, perFile)
				if errs[i] == nil {
					tmps[i], staged[i] = tempRef{d, name}, true
				}
			}
			return
		}
		tmps[i], errs[i] = s.prepareFile(es[i], cs[i], perFile, dirs)
	})
	pre.discardFiles()
	t1 := time.Now()
	t.Write, t.Prewritten = t1.Sub(t0), int(prewritten.Load())
	var written []int
	for i, t := range tmps {
		if t.d != nil && errs[i] == nil {
			written = append(written, i)
		}
	}
	if len(written) == 0 && !st.any() {
		return applied, errs, t
	}
	if err := s.flushTemps(tmps, written, workers, perFile, st); err != nil {
		for _, i := range written {
			tmps[i].remove()
			errs[i] = err
		}
		st.discard()
		return applied, errs, t
	}
	t2 := time.Now()
	t.Flush = t2.Sub(t1)
	// Rename within the open directory, and take the stat signature of
	// the result for noteFresh (the rename changed its ctime).
	fresh := make([]fs.FileInfo, len(es))
	parallel(len(written), workers, func(k int) {
		i := written[k]
		if staged[i] {
			return
		}
		tm := tmps[i]
		if err := renameAt(tm.d, tm.name, tm.d, filepath.Base(es[i].Path)); err != nil {
			tm.remove()
			errs[i] = err
			return
		}
		applied[i] = true
		fresh[i], _ = os.Lstat(s.fsPath(es[i].Path))
	})
	syncs := dirs.parents
	for _, d := range s.commitStage(st) {
		syncs[d] = true
	}
	for _, i := range written {
		if staged[i] {
			if errs[i] = st.result(es[i].Path); errs[i] == nil {
				applied[i] = true
				fresh[i], _ = os.Lstat(s.fsPath(es[i].Path))
			}
		}
	}
	if pre != nil {
		for d := range pre.dirs.parents {
			syncs[d] = true
		}
	}
	// The directories renamed into, fsynced through their open fds.
	handles := map[string]*dirHandle{}
	for _, i := range written {
		if applied[i] && !staged[i] {
			handles[tmps[i].d.path] = tmps[i].d
		}
	}
	var jobs []func() error
	for d := range syncs {
		if _, ok := handles[d]; !ok {
			jobs = append(jobs, func() error { return syncDir(d) })
		}
	}
	for _, h := range handles {
		jobs = append(jobs, func() error { return fsyncFd(h.fd, h.path) })
	}
	t3 := time.Now()
	t.Rename = t3.Sub(t2)
	dirErr := make([]error, len(jobs))
	parallel(len(jobs), workers, func(k int) { dirErr[k] = jobs[k]() })
	t.SyncDirs = time.Since(t3)
	if err := errors.Join(dirErr...); err != nil {
		for _, i := range written {
			if applied[i] && errs[i] == nil {
				errs[i] = err
			}
		}
	}
	s.noteFresh(es, fresh)
	return applied, errs, t
}

// tempRef is a file written by a batch: name in the open directory d.
type tempRef struct {
	d    *dirHandle
	name string
}

func (t tempRef) remove() {
	if t.d != nil {
		unlinkAt(t.d, t.name)
	}
}

// dirCache remembers, for one ApplyFiles batch, the directories already
// opened (without a symlink on the way from the anchor, created if
// missing) and what a file created in each gets: each is opened once per
// batch, not once per file, and stays open until the batch is done, so
// its files are created and renamed through the directory that was
// checked whatever happens to its path meanwhile.
type dirCache struct {
	mu sync.Mutex
	m  map[string]dirResult // sync path, NUL, logical directory → result
	// parents: file system paths of the directories in which a directory
	// was created, to be fsynced.
	parents map[string]bool
}

func newDirCache() *dirCache {
	return &dirCache{m: map[string]dirResult{}, parents: map[string]bool{}}
}

type dirResult struct {
	d    *dirHandle
	info dirInfo
	err  error
}

// close closes the batch's directories.
func (c *dirCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.m {
		r.d.close()
	}
}

// prepareDir opens (creating it if missing) the directory of logical
// path p once per batch.
func (s *Store) prepareDir(p string, c *dirCache) (*dirHandle, dirInfo, error) {
	dir := filepath.Dir(p)
	// The directory is reached from the anchor of the sync path that
	// covers p: two files of one directory may be covered by different
	// ones.
	key := s.root(p) + "\x00" + dir
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.m[key]; ok {
		return r.d, r.info, r.err
	}
	// Held across the open: two workers asking for one directory share
	// one handle.
	var r dirResult
	var created []string
	if r.d, _, created, r.err = s.openParent(p, true); r.err == nil {
		r.info, r.err = lookDir(r.d)
	}
	// The directories created here become durable when their parents
	// are fsynced (ApplyFiles, with the directories renamed into).
	for _, d := range created {
		c.parents[d] = true
	}
	c.m[key] = r
	return r.d, r.info, r.err
}

// maxBatchDirs bounds the directories a batch holds open (dirCache, the
// stage's directories and the parents of its tops: one fd each until its
// renames are done, so at most 3 × 512 fds per batch, twice that with the
// next batch written ahead; far below the 20 000+ a daemon may open). A
// push whose entries name more (a tree of many directories with few
// files each) is applied without a stage and without writing ahead, its
// files in chunks of at most maxBatchDirs directories
// (applyFilesChunked): each file is still old or new, each chunk flushed
// as one. A variable for TestManyDirsChunked.
var maxBatchDirs = 512

// batchDirs counts the directories a batch of entries opens: the parents
// of its files and its directory entries.
func batchDirs(es []Entry) int {
	dirs := map[string]bool{}
	for _, e := range es {
		switch e.Kind {
		case KindFile:
			dirs[filepath.Dir(e.Path)] = true
		case KindDir:
			dirs[e.Path] = true
		}
	}
	return len(dirs)
}

// applyFilesChunked is applyFiles (no stage, nothing written ahead) over
// consecutive chunks of es that each name at most maxBatchDirs
// directories.
func (s *Store) applyFilesChunked(es []Entry, cs [][]byte, workers int) (applied []bool, errs []error, t BatchTimes) {
	applied, errs = make([]bool, len(es)), make([]error, len(es))
	for start := 0; start < len(es); {
		dirs := map[string]bool{}
		end := start
		for ; end < len(es); end++ {
			d := filepath.Dir(es[end].Path)
			if !dirs[d] && len(dirs) == maxBatchDirs {
				break
			}
			dirs[d] = true
		}
		a, e, ct := s.applyFiles(es[start:end], cs[start:end], workers, nil, nil)
		copy(applied[start:], a)
		copy(errs[start:], e)
		t.Write, t.Flush, t.Rename, t.SyncDirs = t.Write+ct.Write, t.Flush+ct.Flush, t.Rename+ct.Rename, t.SyncDirs+ct.SyncDirs
		start = end
	}
	return applied, errs, t
}

// BatchTimes is where the time of an ApplyFiles batch went.
type BatchTimes struct {
	Write    time.Duration // temporary files: create, write, fchown, fchmod
	Flush    time.Duration // syncfs (or the fsync of each file)
	Rename   time.Duration // the renames over the targets
	SyncDirs time.Duration // the fsync of each directory
	// Prewritten is how many files had been written ahead (PrewriteFiles).
	Prewritten int
}

// prepareFile checks entry e and its content and writes them to a
// temporary file beside the target, fsynced if syncNow; it returns the
// temporary file's name, or "" if the file is already identical. dirs
// holds the directories of the batch already checked.
func (s *Store) prepareFile(e Entry, content []byte, syncNow bool, dirs *dirCache) (tempRef, error) {
	if s.root(e.Path) == "" {
		return tempRef{}, fmt.Errorf("configsync: %q is not below a sync path", e.Path)
	}
	if err := checkContent(e, content); err != nil {
		return tempRef{}, err
	}
	d, di, err := s.prepareDir(e.Path, dirs)
	if err != nil {
		return tempRef{}, err
	}
	if s.afterResolve != nil {
		s.afterResolve(e.Path)
	}
	cur, err := s.stat(e.Path)
	switch {
	case err == nil && cur.Same(e):
		return tempRef{}, nil
	case err == nil && cur.Kind == KindDir:
		if err := removeAllAt(d, filepath.Base(e.Path)); err != nil {
			return tempRef{}, err
		}
		s.forget(e.Path)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return tempRef{}, err
	}
	name, err := createTemp(d, di, content, fileMode(e.Mode), e.UID, e.GID, syncNow)
	if err != nil {
		return tempRef{}, err
	}
	return tempRef{d, name}, nil
}

// checkContent refuses a regular-file entry whose content does not match
// its size and digest.
func checkContent(e Entry, content []byte) error {
	if e.Kind != KindFile {
		return fmt.Errorf("configsync: %s entry %s is not a file", e.Kind, e.Path)
	}
	if int64(len(content)) != e.Size || sha256.Sum256(content) != e.SHA256 {
		return fmt.Errorf("configsync: content of %s does not match its digest", e.Path)
	}
	return nil
}

// writeTemp writes data to a new temporary file beside path, with its
// owner and mode, and returns its name.
func writeTemp(path string, data []byte, perm fs.FileMode, uid, gid int, syncNow bool) (tmp string, err error) {
	tmp = tempName(filepath.Dir(path))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return "", err
	}
	// chown before chmod: chown clears the setuid and setgid bits.
	if err = chownFile(f, uid, gid); err != nil {
		return "", err
	}
	if err = f.Chmod(perm); err != nil {
		return "", err
	}
	if syncNow {
		if err = f.Sync(); err != nil {
			return "", err
		}
	}
	return tmp, f.Close()
}

// flushTemps makes the temporary files tmps[i], i in idx, durable: one
// syncfs per file system they are on, or, where syncfs is not available,
// an fsync of each.
//
// perFile: the files were fsynced as they were written; only the staged
// directories (st) are left to fsync, so that their entries are durable
// before they are renamed into place.
func (s *Store) flushTemps(tmps []tempRef, idx []int, workers int, perFile bool, st *stage) error {
	stagedDirs := st.stagedDirs()
	syncEach := func(jobs []func() error) error {
		errs := make([]error, len(jobs))
		parallel(len(jobs), workers, func(k int) { errs[k] = jobs[k]() })
		return errors.Join(errs...)
	}
	var dirJobs []func() error
	for _, h := range stagedDirs {
		dirJobs = append(dirJobs, func() error { return fsyncFd(h.fd, h.path) })
	}
	if perFile {
		return syncEach(dirJobs)
	}
	dirs := map[string]bool{}
	for _, i := range idx {
		dirs[tmps[i].d.path] = true
	}
	for _, h := range stagedDirs {
		dirs[h.path] = true
	}
	if err := syncFileSystems(dirs); err == nil {
		return nil
	} else if !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	files := make([]func() error, len(idx))
	for k, i := range idx {
		t := tmps[i]
		files[k] = func() error { return fsyncAt(t.d, t.name) }
	}
	return syncEach(append(files, dirJobs...))
}

// noteFresh remembers the digests of the files just written, for the
// scans of the next freshFor (stats: each file's Lstat after its rename,
// nil if not applied): their content is known, so neither the scan
// after the batch nor those the watcher asks for while more batches arrive
// read them again. The regular cache refuses a file changed within the
// last second (a second write in the same timestamp tick would go
// unnoticed); a fresh entry is likewise matched by the file's stat, and
// dropped after freshFor, so the first scan after that reads the file.
func (s *Store) noteFresh(es []Entry, stats []fs.FileInfo) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fresh == nil {
		s.fresh = map[string]freshEntry{}
	}
	for i, e := range es {
		if stats[i] == nil {
			continue
		}
		if key, ok := statSignature(stats[i]); ok {
			s.fresh[e.Path] = freshEntry{hashCache{stat: key, sum: e.SHA256}, now}
		}
	}
}

// freshFor is how long a digest noted by noteFresh is used.
const freshFor = 2 * time.Second

type freshEntry struct {
	hashCache
	at time.Time
}

// pruneFresh drops the fresh digests older than freshFor.
func (s *Store) pruneFresh() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, f := range s.fresh {
		if time.Since(f.at) > freshFor {
			delete(s.fresh, p)
		}
	}
}

// parallel calls fn(0..n-1) on up to workers goroutines.
func parallel(n, workers int, fn func(i int)) {
	if n == 0 {
		return
	}
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < min(max(workers, 1), n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// Prewritten holds temporary files written ahead for the entries of a
// batch (PrewriteFiles), not yet renamed, and the new directories staged
// for it: nothing visible changed.
type Prewritten struct {
	mu   sync.Mutex
	tmps map[string]prewrittenFile // logical path → its temporary file
	dirs *dirCache
	// stage holds the batch's new directories, built aside, with the
	// files written into them (prewrittenFile.staged).
	stage *stage
}

type prewrittenFile struct {
	e   Entry
	tmp tempRef
	// staged: tmp is the file's final name inside a staged directory.
	staged bool
}

// take returns the file written ahead for e (and forgets it), or "" if
// there is none for exactly this entry; staged tells that it is inside a
// staged directory, with its final name.
func (p *Prewritten) take(e Entry) (tmp tempRef, staged bool) {
	if p == nil {
		return tempRef{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	f, ok := p.tmps[e.Path]
	if !ok || !f.e.Same(e) {
		return tempRef{}, false
	}
	delete(p.tmps, e.Path)
	return f.tmp, f.staged
}

// takeStage returns the staged directories (nil if none) for the batch to
// commit; Discard no longer removes them.
func (p *Prewritten) takeStage() *stage {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.stage
	p.stage = nil
	return st
}

// discardFiles removes the temporary files not taken.
func (p *Prewritten) discardFiles() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, f := range p.tmps {
		f.tmp.remove()
		delete(p.tmps, k)
	}
}

// close closes the directories the files were written in (after
// ApplyFiles renamed them, or after Discard).
func (p *Prewritten) close() {
	if p != nil {
		p.dirs.close()
	}
}

// Discard removes the temporary files not taken and the staged
// directories not taken (the batch will not be applied).
func (p *Prewritten) Discard() {
	p.discardFiles()
	p.takeStage().discard()
	p.close()
}

// PrewriteFiles writes the temporary files of the regular-file entries of
// a batch ahead, while the previous batch is still being applied (the
// caller makes sure the two batches touch no common path, see
// independentPushes): only entries whose target is missing or a regular
// file with other content or attributes, in a directory that exists or
// can be created; everything else is left to ApplyFiles. New directories
// of the batch with files in it are staged (see stage), the files in them
// written with their final names. A crash leaves temporary files and
// staged directories only (CleanTemp).
func (s *Store) PrewriteFiles(es []Entry, cs [][]byte, workers int) *Prewritten {
	dirs := newDirCache()
	p := &Prewritten{tmps: map[string]prewrittenFile{}, dirs: dirs, stage: newStage()}
	s.stageDirs(p.stage, es, pathOrder(es))
	parallel(len(es), workers, func(i int) {
		e := es[i]
		if e.Kind != KindFile || s.root(e.Path) == "" || checkContent(e, cs[i]) != nil {
			return
		}
		if d, name, di, ok := p.stage.stagedFile(e.Path); ok {
			if err := createFile(d, name, di, cs[i], fileMode(e.Mode), e.UID, e.GID, false); err == nil {
				p.mu.Lock()
				p.tmps[e.Path] = prewrittenFile{e, tempRef{d, name}, true}
				p.mu.Unlock()
			}
			return
		}
		d, di, err := s.prepareDir(e.Path, dirs)
		if err != nil {
			return
		}
		cur, err := s.stat(e.Path)
		if (err == nil && (cur.Kind != KindFile || cur.Same(e))) || (err != nil && !errors.Is(err, fs.ErrNotExist)) {
			return
		}
		name, err := createTemp(d, di, cs[i], fileMode(e.Mode), e.UID, e.GID, false)
		if err != nil {
			return
		}
		p.mu.Lock()
		p.tmps[e.Path] = prewrittenFile{e: e, tmp: tempRef{d, name}}
		p.mu.Unlock()
	})
	return p
}
