package configsync

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
)

// A stage builds the new directories of a batch aside: a directory the
// batch creates whose target does not exist yet (a "top") is made under a
// temporary name beside its target, the batch's directories and files
// below it are created inside it with their final names, and once the
// batch's files are durable the whole tree is renamed into place with one
// rename(2). Until then nothing of it is visible; after it, all of it:
// every path stays old (absent) or new across a crash. A full sync onto an
// empty tree thus renames a hundred directories instead of ten thousand
// files, and fsyncs a hundred fewer directories.
//
// A crash leaves the staging directories (tempPrefix names), which
// CleanTemp removes and Scan skips.
type stage struct {
	mu sync.Mutex
	// dirs: logical directory (a top or below one) → its file system path
	// inside the stage, for the directories already created there.
	dirs map[string]string
	// info: what a file created in each staged directory gets.
	info map[string]dirInfo
	// tops: logical top → its staging directory, in creation order.
	tops  []string
	stage map[string]string
	// done: the result of each top's commit, and of each staged directory
	// (by its top).
	done map[string]error
}

func newStage() *stage {
	return &stage{dirs: map[string]string{}, info: map[string]dirInfo{}, stage: map[string]string{}}
}

// stageWorthIt is how many files a new directory must receive in its
// batch before it is built aside: below it the rename of the tree saves
// nothing.
const stageWorthIt = 2

// planStage picks the directories of entries es (path order) to be built
// aside: directory entries whose target is missing, whose parent exists
// (or is staged itself), with at least stageWorthIt files below them in
// the batch. It creates nothing yet.
func (s *Store) planStage(es []Entry, st *stage) map[string]bool {
	filesBelow := map[string]int{}
	for _, e := range es {
		if e.Kind != KindFile {
			continue
		}
		for a := filepath.Dir(e.Path); a != "/" && a != "."; a = filepath.Dir(a) {
			filesBelow[a]++
		}
	}
	plan := map[string]bool{}
	for _, e := range es {
		if e.Kind != KindDir || filesBelow[e.Path] < stageWorthIt {
			continue
		}
		parent := filepath.Dir(e.Path)
		if plan[parent] || st.has(parent) {
			plan[e.Path] = true
			continue
		}
		if s.root(e.Path) == "" {
			continue
		}
		if _, err := os.Lstat(s.fsPath(e.Path)); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if fi, err := os.Lstat(s.fsPath(parent)); err != nil || !fi.IsDir() {
			continue
		}
		if s.checkPath(e.Path) != nil {
			continue
		}
		plan[e.Path] = true
	}
	return plan
}

// has reports whether logical directory d is staged.
func (st *stage) has(d string) bool {
	if st == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	_, ok := st.dirs[d]
	return ok
}

// any reports whether anything is staged.
func (st *stage) any() bool {
	if st == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.tops) > 0
}

// lookup returns the staged file system path of logical directory d and
// what files created in it get; ok is false if d is not staged.
func (st *stage) lookup(d string) (fp string, di dirInfo, ok bool) {
	if st == nil {
		return "", dirInfo{}, false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	fp, ok = st.dirs[d]
	return fp, st.info[d], ok
}

// stageDir creates directory entry e in the stage: a top under a temporary
// name beside its target, a directory below a staged one inside it.
func (s *Store) stageDir(st *stage, e Entry) error {
	parent := filepath.Dir(e.Path)
	var fp string
	top := false
	if pfp, _, ok := st.lookup(parent); ok {
		fp = filepath.Join(pfp, filepath.Base(e.Path))
	} else {
		fp, top = tempName(s.fsPath(parent)), true
	}
	if _, err := applyDir(fp, fileMode(e.Mode), e.UID, e.GID); err != nil {
		if top {
			os.Remove(fp)
		}
		return err
	}
	di, err := lookDir(fp)
	if err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.dirs[e.Path], st.info[e.Path] = fp, di
	if top {
		st.tops = append(st.tops, e.Path)
		st.stage[e.Path] = fp
	}
	return nil
}

// stageDirs creates the planned directories of es (path order) in st and
// returns the indexes of the entries now staged: their result is known
// after commitStage (stage.result).
func (s *Store) stageDirs(st *stage, es []Entry, order []int) map[int]bool {
	plan := s.planStage(es, st)
	handled := map[int]bool{}
	for _, i := range order {
		e := es[i]
		if e.Kind != KindDir {
			continue
		}
		if st.has(e.Path) {
			handled[i] = true // staged ahead (PrewriteFiles)
			continue
		}
		if !plan[e.Path] {
			continue
		}
		if p := filepath.Dir(e.Path); plan[p] && !st.has(p) {
			// Its parent's staging failed: leave it to Apply.
			continue
		}
		if s.stageDir(st, e) == nil {
			handled[i] = true
		}
		// Else Apply creates it in place (and reports what fails).
	}
	return handled
}

// stagedFile returns the final file system path of file p inside the
// stage, and what it gets; ok is false if p's directory is not staged.
func (st *stage) stagedFile(p string) (fp string, di dirInfo, ok bool) {
	dir, di, ok := st.lookup(filepath.Dir(p))
	if !ok {
		return "", dirInfo{}, false
	}
	return filepath.Join(dir, filepath.Base(p)), di, true
}

// commitStage renames every top into place (their files must be durable by
// now) and returns the file system paths of the directories they went
// into, to be fsynced. A target that appeared meanwhile (another program,
// or a batch applied alongside) is merged into entry by entry.
func (s *Store) commitStage(st *stage) (parents []string) {
	if st == nil {
		return nil
	}
	if s.beforeCommit != nil {
		s.beforeCommit()
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.done = map[string]error{}
	seen := map[string]bool{}
	for _, top := range st.tops {
		fp := s.fsPath(top)
		err := renameDir(st.stage[top], fp)
		if err != nil {
			err = mergeDir(st.stage[top], fp)
		}
		st.done[top] = err
		if d := filepath.Dir(fp); !seen[d] {
			seen[d] = true
			parents = append(parents, d)
		}
		s.forget(top)
	}
	return parents
}

// result is the outcome of staged logical path p after commit: nil once
// its top is in place.
func (st *stage) result(p string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	for a := p; a != "/" && a != "."; a = filepath.Dir(a) {
		if err, ok := st.done[a]; ok {
			return err
		}
	}
	return errors.New("configsync: staged directory was not committed")
}

// discard removes what was staged and not committed.
func (st *stage) discard() {
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, top := range st.tops {
		if _, ok := st.done[top]; !ok {
			os.RemoveAll(st.stage[top])
		}
	}
}

// mergeDir moves the contents of staged directory from into the existing
// directory to, entry by entry (each still old or new: its content is
// durable already), gives to the staged directory's owner and mode, then
// removes from.
func mergeDir(from, to string) error {
	fi, err := os.Lstat(to)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return &fs.PathError{Op: "merge", Path: to, Err: syscall.ENOTDIR}
	}
	sfi, err := os.Lstat(from)
	if err != nil {
		return err
	}
	uid, gid := fileOwner(sfi)
	if err := lchown(to, uid, gid); err != nil {
		return err
	}
	if err := os.Chmod(to, sfi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return err
	}
	des, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range des {
		src, dst := filepath.Join(from, d.Name()), filepath.Join(to, d.Name())
		if d.IsDir() {
			if dfi, err := os.Lstat(dst); err == nil && dfi.IsDir() {
				errs = append(errs, mergeDir(src, dst))
				continue
			}
			if err := renameDir(src, dst); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := renameFile(src, dst); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		os.RemoveAll(from)
		return err
	}
	if err := os.Remove(from); err != nil {
		return err
	}
	return syncDir(to)
}

// stagedDirs lists the file system paths of every staged directory (for
// a flush without syncfs, which must fsync them).
func (st *stage) stagedDirs() []string {
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]string, 0, len(st.dirs))
	for _, fp := range st.dirs {
		out = append(out, fp)
	}
	slices.Sort(out)
	return out
}
