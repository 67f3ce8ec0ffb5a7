package configsync

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
	// dirs: logical directory (a top or below one) → the open staged
	// directory, for the directories already created there: files and
	// directories below are created through it, never by path.
	dirs map[string]*dirHandle
	// info: what a file created in each staged directory gets.
	info map[string]dirInfo
	// tops: the logical tops in creation order; stage: each top's
	// temporary name in parent, the open directory its target goes in.
	tops   []string
	stage  map[string]string
	parent map[string]*dirHandle
	// parentOf: logical directory → the open handle its tops share.
	parentOf map[string]*dirHandle
	// done: the result of each top's commit, and of each staged directory
	// (by its top).
	done map[string]error
}

func newStage() *stage {
	return &stage{dirs: map[string]*dirHandle{}, info: map[string]dirInfo{}, stage: map[string]string{},
		parent: map[string]*dirHandle{}, parentOf: map[string]*dirHandle{}}
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

// lookup returns the open staged directory of logical directory d and
// what files created in it get; ok is false if d is not staged.
func (st *stage) lookup(d string) (h *dirHandle, di dirInfo, ok bool) {
	if st == nil {
		return nil, dirInfo{}, false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	h, ok = st.dirs[d]
	return h, st.info[d], ok
}

// stageDir creates directory entry e in the stage: a top under a temporary
// name beside its target, a directory below a staged one inside it, each
// through the open directory it goes in.
func (s *Store) stageDir(st *stage, e Entry) error {
	parent, top := (*dirHandle)(nil), false
	var name string
	if ph, _, ok := st.lookup(filepath.Dir(e.Path)); ok {
		parent, name = ph, filepath.Base(e.Path)
	} else {
		// The tops of one directory share its handle (one fd).
		dir := filepath.Dir(e.Path)
		st.mu.Lock()
		ph := st.parentOf[dir]
		st.mu.Unlock()
		if ph == nil {
			var err error
			if ph, _, _, err = s.openParent(e.Path, false); err != nil {
				return err
			}
			st.mu.Lock()
			st.parentOf[dir] = ph
			st.mu.Unlock()
		}
		parent, name, top = ph, tempBase(), true
	}
	h, err := makeDir(parent, name, e)
	if err != nil {
		if top {
			removeAllAt(parent, name)
		}
		return err
	}
	di, err := lookDir(h)
	if err != nil {
		h.close()
		if top {
			removeAllAt(parent, name)
		}
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.dirs[e.Path], st.info[e.Path] = h, di
	if top {
		st.tops = append(st.tops, e.Path)
		st.stage[e.Path], st.parent[e.Path] = name, parent
	}
	return nil
}

// makeDir creates directory name in d (or takes the one there) and sets
// the owner and mode of entry e through its fd, which it returns open.
func makeDir(d *dirHandle, name string, e Entry) (*dirHandle, error) {
	if _, err := mkdirAt(d, name); err != nil {
		return nil, err
	}
	h, err := openDirAt(d, name)
	if err != nil {
		return nil, err
	}
	if err := setFdAttrs(h.fd, h.path, unixPerm(fileMode(e.Mode)), e.UID, e.GID); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
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

// stagedFile returns the open staged directory of file p and p's name
// in it, and what it gets; ok is false if p's directory is not staged.
func (st *stage) stagedFile(p string) (d *dirHandle, name string, di dirInfo, ok bool) {
	d, di, ok = st.lookup(filepath.Dir(p))
	if !ok {
		return nil, "", dirInfo{}, false
	}
	return d, filepath.Base(p), di, true
}

// commitStage renames every top into place (their files must be durable by
// now) and returns the file system paths of the directories they went
// into, to be fsynced. A target that appeared meanwhile (another program,
// or a batch applied alongside) is merged into entry by entry. It closes
// the stage's directories.
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
		pd, name := st.parent[top], filepath.Base(top)
		err := renameAt(pd, st.stage[top], pd, name)
		if err != nil {
			err = mergeDir(pd, st.stage[top], pd, name)
		}
		st.done[top] = err
		if d := pd.path; !seen[d] {
			seen[d] = true
			parents = append(parents, d)
		}
		s.forget(top)
	}
	st.closeLocked()
	return parents
}

// closeLocked closes the stage's open directories; st.mu is held.
func (st *stage) closeLocked() {
	for _, h := range st.dirs {
		h.close()
	}
	for _, h := range st.parentOf {
		h.close()
	}
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

// discard removes what was staged and not committed, and closes the
// stage's directories.
func (st *stage) discard() {
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, top := range st.tops {
		if _, ok := st.done[top]; !ok {
			removeAllAt(st.parent[top], st.stage[top])
		}
	}
	st.closeLocked()
}

// stagedDirs lists every staged directory (for a flush without syncfs,
// which must fsync them).
func (st *stage) stagedDirs() []*dirHandle {
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]*dirHandle, 0, len(st.dirs))
	for _, h := range st.dirs {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b *dirHandle) int { return strings.Compare(a.path, b.path) })
	return out
}
