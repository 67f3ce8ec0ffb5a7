package configsync

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// applyLoop applies pushes one at a time, in arrival order. When the next
// push arrives while one is applied and touches none of its paths, its
// files are written ahead meanwhile (Store.PrewriteFiles): the write of
// one batch overlaps the flush and renames of the previous.
func (s *Syncer) applyLoop(ctx context.Context) {
	var next *syncMsg
	for {
		m := next
		if m == nil {
			select {
			case <-ctx.Done():
				return
			case m = <-s.applyQ:
			}
		}
		done := make(chan struct{})
		got := make(chan *syncMsg, 1)
		go func() {
			select {
			case n := <-s.applyQ:
				// Written ahead only for the current primary: a push
				// from anyone else never reaches the disk.
				s.mu.Lock()
				fromPrimary := s.role == RoleSecondary && s.primary == n.from
				s.mu.Unlock()
				if fromPrimary && independentPushes(m, n) {
					n.preCh = make(chan *Prewritten, 1)
					go func() { n.preCh <- s.store.PrewriteFiles(n.hdr.Entries, n.contents(), prewriteWorkers) }()
				}
				got <- n
			case <-done:
				got <- nil
			case <-ctx.Done():
				got <- nil
			}
		}()
		s.applyPush(ctx, m)
		close(done)
		next = <-got
		if next != nil && next.preCh != nil {
			select {
			case next.pre = <-next.preCh:
			case <-ctx.Done():
				return // the temporary files go at the next start (CleanTemp)
			}
		}
	}
}

// prewriteWorkers write the next push's files ahead: one, beside the
// applyWorkers of the current push (see applyWorkers for why not more).
const prewriteWorkers = 1

// independentPushes reports whether next's files may be written ahead
// while m is applied: both are pushes, next is a batch large enough to be
// flushed as one (smaller ones fsync each file as it is written), and no
// file of next is a path of m, an ancestor of one, or below a path m
// deletes or makes a file or symlink.
func independentPushes(m, next *syncMsg) bool {
	if m.kind != msgPush || next.kind != msgPush {
		return false
	}
	if countFiles(next.hdr.Entries) < flushPerFileBelow || batchDirs(next.hdr.Entries) > maxBatchDirs {
		return false
	}
	touched := map[string]bool{} // m's paths and their ancestors
	notDir := map[string]bool{}  // m's paths that end up not being directories
	mark := func(p string, dir bool) {
		if !dir {
			notDir[p] = true
		}
		for a := p; a != "/" && a != "." && !touched[a]; a = filepath.Dir(a) {
			touched[a] = true
		}
	}
	for _, e := range m.hdr.Entries {
		mark(e.Path, e.Kind == KindDir)
	}
	for _, p := range m.hdr.Deleted {
		mark(p, false)
	}
	for _, e := range next.hdr.Entries {
		if e.Kind != KindFile {
			continue
		}
		if touched[e.Path] {
			return false
		}
		for a := filepath.Dir(e.Path); a != "/" && a != "."; a = filepath.Dir(a) {
			if notDir[a] {
				return false
			}
		}
	}
	return true
}

// pathOrder returns the indexes of es in path order (a directory before
// what it contains; equal paths keep their order).
func pathOrder(es []Entry) []int {
	order := make([]int, len(es))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(es[a].Path, es[b].Path) })
	return order
}

// countFiles counts the regular-file entries of es.
func countFiles(es []Entry) int {
	n := 0
	for _, e := range es {
		if e.Kind == KindFile {
			n++
		}
	}
	return n
}

func (s *Syncer) applyPush(ctx context.Context, m *syncMsg) {
	s.mu.Lock()
	role, primary := s.role, s.primary
	s.mu.Unlock()
	// A member that has just started may not know its primary yet when
	// the primary's first push arrives (the primary heard it first): give
	// its election a moment rather than reject a push it will want.
	for deadline := time.Now().Add(s.grace); role == RoleStarting && time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(5 * time.Millisecond)
		s.mu.Lock()
		role, primary = s.role, s.primary
		s.mu.Unlock()
	}
	ack := syncHeader{ID: m.hdr.ID}
	if role != RoleSecondary || primary != m.from {
		m.pre.Discard()
		s.log.Warn("rejecting push from a node that is not our primary", "peer", m.from, "role", role, "primary", primary)
		ack.Error = fmt.Sprintf("%s does not accept pushes from %s (role %s, primary %q)", s.cfg.Self, m.from, role, primary)
	} else {
		s.applying.Store(true)
		defer func() {
			s.applying.Store(false)
			if s.deferred.Swap(false) {
				kick(s.rescanCh)
			}
		}()
		t0 := time.Now()
		s.scanMu.Lock()
		s.log.Debug("applying push", "peer", m.from, "entries", len(m.hdr.Entries), "waited_for_scan", time.Since(t0))
		var drift []string
		if m.hdr.Repair {
			for _, e := range m.hdr.Entries {
				if _, err := os.Lstat(s.store.fsPath(e.Path)); err == nil && e.Kind != KindCluster {
					s.log.Warn("overwriting local drift", "path", e.Path, "primary", m.from)
					drift = append(drift, e.Path)
				}
			}
			for _, p := range m.hdr.Deleted {
				s.log.Warn("removing local drift", "path", p, "primary", m.from)
				drift = append(drift, p)
			}
		}
		if len(drift) > 0 {
			s.event("drift", "local edits overwritten by the primary %s: %s", m.from, strings.Join(drift, " "))
		}
		ran, errs := s.applyLocked(m.hdr.Entries, m.contents(), m.hdr.Deleted, true, m.pre)
		s.noteApply(errs)
		s.afterApplyLocked(m.hdr.Entries, m.hdr.Deleted, errs)
		s.mu.Lock()
		if len(errs) == 0 {
			// Only a tree that is all here takes the primary's generation
			// (as in pullFrom): a node that could not write the files must
			// not claim them, or it would win the generation rule with the
			// old ones when it becomes primary.
			s.gen = m.hdr.Gen
			s.publishLocked()
			s.saveStateLocked()
		}
		pm := s.member(m.from)
		pm.known, pm.gen, pm.lastSync = true, m.hdr.Gen, s.now()
		if m.hdr.Checksum != nil {
			pm.checksum = *m.hdr.Checksum
		}
		sum := s.checksum
		ack.Gen, ack.Checksum = s.gen, &sum
		s.mu.Unlock()
		s.scanMu.Unlock()
		ack.Commands = ran
		if len(errs) > 0 {
			ack.Error = errors.Join(errs...).Error()
		}
	}
	s.reply(ctx, m.from, msgPushAck, &ack, nil)
}

// startingGrace is how long a push that arrives before this node's role
// is decided waits for it.
const startingGrace = 2 * time.Second

// applyLocked writes entries and deletions atomically, then runs the
// on_change commands of what changed (if runCommands). scanMu is held. pre
// holds files written ahead, or is nil. It returns the command runs and
// the errors.
func (s *Syncer) applyLocked(entries []Entry, contents [][]byte, deleted []string, runCommands bool, pre *Prewritten) ([]CommandStatus, []error) {
	var errs []error
	changed := map[string]Digest{} // path → new digest (zero: deleted)
	order := pathOrder(entries)    // directories before what they contain
	var cluster []byte
	haveCluster := false
	s.store.BeginBatch()
	// Directories, symlinks and the cluster section in path order (a
	// directory before what it contains), then the regular files as one
	// batch (Store.ApplyFiles: written in parallel, flushed together, then
	// renamed), each still old or new across a crash.
	var files []int
	applied := make([]bool, len(entries))
	applyErr := make([]error, len(entries))
	// New directories are built aside and renamed into place with their
	// files (see stage), for a batch large enough to be flushed as one.
	manyDirs := batchDirs(entries) > maxBatchDirs
	if manyDirs {
		// Too many directories to hold open at once: no stage, nothing
		// written ahead; the files go in chunks (below).
		pre.Discard()
		pre = nil
	}
	st := pre.takeStage()
	var staged map[int]bool
	if countFiles(entries) >= flushPerFileBelow && !manyDirs {
		if st == nil {
			st = newStage()
		}
		staged = s.store.stageDirs(st, entries, order)
	} else {
		st.discard()
		st = nil
	}
	for _, i := range order {
		e := entries[i]
		if e.Kind == KindCluster || e.Path == ClusterPath {
			if e.Kind != KindCluster || e.Path != ClusterPath || sha256.Sum256(contents[i]) != e.SHA256 {
				errs = append(errs, errors.New("configsync: malformed cluster section entry"))
				continue
			}
			cluster, haveCluster = contents[i], true
			continue
		}
		if e.Kind == KindFile {
			files = append(files, i)
			continue
		}
		if staged[i] {
			continue // its result comes with the files'
		}
		applied[i], applyErr[i] = s.store.Apply(e, contents[i])
	}
	fileEntries, fileContents := make([]Entry, len(files)), make([][]byte, len(files))
	for k, i := range files {
		fileEntries[k], fileContents[k] = entries[i], contents[i]
	}
	var fileApplied []bool
	var fileErrs []error
	var times BatchTimes
	if manyDirs {
		fileApplied, fileErrs, times = s.store.applyFilesChunked(fileEntries, fileContents, applyWorkers())
	} else {
		fileApplied, fileErrs, times = s.store.applyFiles(fileEntries, fileContents, applyWorkers(), pre, st)
	}
	for k, i := range files {
		applied[i], applyErr[i] = fileApplied[k], fileErrs[k]
	}
	for i := range staged {
		applyErr[i] = st.result(entries[i].Path)
		applied[i] = applyErr[i] == nil
	}
	for _, i := range order {
		e := entries[i]
		if err := applyErr[i]; err != nil {
			s.log.Error("applying synchronized path failed", "path", e.Path, "error", err)
			errs = append(errs, err)
			continue
		}
		if applied[i] {
			s.log.Debug("applied synchronized path", "path", e.Path, "kind", e.Kind, "sha256", e.SHA256)
			changed[e.Path] = e.SHA256
		}
	}
	if err := s.store.EndBatch(); err != nil {
		errs = append(errs, err)
	}
	if len(changed) > 0 {
		s.log.Info("applied synchronized paths", "count", len(changed), "files", len(files), "staged_dirs", len(staged),
			"write", times.Write, "written_ahead", times.Prewritten, "flush", times.Flush, "rename", times.Rename, "sync_dirs", times.SyncDirs)
	}
	dels := slices.Clone(deleted)
	slices.Sort(dels)
	slices.Reverse(dels) // contents before their directory
	for _, p := range dels {
		ch, err := s.store.Remove(p)
		if err != nil {
			s.log.Error("removing synchronized path failed", "path", p, "error", err)
			errs = append(errs, err)
			continue
		}
		if ch {
			s.log.Info("removed synchronized path", "path", p)
			changed[p] = Digest{}
		}
	}
	var ran []CommandStatus
	if haveCluster && s.cfg.ApplyCluster != nil {
		var cur []byte
		err := errors.New("no local cluster section")
		if s.store.cluster != nil {
			cur, err = s.store.cluster()
		}
		if err != nil || sha256.Sum256(cur) != sha256.Sum256(cluster) {
			start := s.now()
			err := s.cfg.ApplyCluster(cluster)
			st := CommandStatus{Command: "ApplyCluster", Paths: []string{ClusterPath}, LastRun: start,
				Duration: s.now().Sub(start), OK: err == nil, contentKey: sha256.Sum256(cluster)}
			if err != nil {
				st.Error = err.Error()
				st.ExitCode = -1
				errs = append(errs, fmt.Errorf("applying cluster section: %w", err))
				s.log.Error("applying the cluster section failed", "error", err)
			} else {
				s.log.Info("applied the cluster section")
			}
			s.recordCommand(st)
			ran = append(ran, st)
		}
	}
	if runCommands {
		ran = append(ran, s.runOnChange(changed)...)
	}
	return ran, errs
}

// commandFor returns the on_change command of path p: its own, or the one
// of the nearest configured directory above it.
func (s *Syncer) commandFor(p string) string {
	best, cmd := "", ""
	for k, c := range s.cfg.OnChange {
		if (p == k || strings.HasPrefix(p, k+"/")) && len(k) > len(best) {
			best, cmd = k, c
		}
	}
	return cmd
}

// runOnChange runs each affected command once. A command that failed is not
// run again until the content it covers changes.
func (s *Syncer) runOnChange(changed map[string]Digest) []CommandStatus {
	paths := make([]string, 0, len(changed))
	for p := range changed {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	byCmd := map[string][]string{}
	var cmds []string
	for _, p := range paths {
		c := s.commandFor(p)
		if c == "" {
			continue
		}
		if byCmd[c] == nil {
			cmds = append(cmds, c)
		}
		byCmd[c] = append(byCmd[c], p)
	}
	var ran []CommandStatus
	for _, c := range cmds {
		h := sha256.New()
		for _, p := range byCmd[c] {
			d := changed[p]
			h.Write([]byte(p))
			h.Write(d[:])
		}
		var key Digest
		h.Sum(key[:0])
		s.mu.Lock()
		prev := s.commands[c]
		s.mu.Unlock()
		if prev != nil && !prev.OK && prev.contentKey == key {
			s.log.Warn("not rerunning a failed on_change command for unchanged content", "command", c, "paths", byCmd[c])
			continue
		}
		start := s.now()
		t0 := time.Now()
		exit, tail, err := runShell(context.Background(), c, s.cfg.OnChangeTimeout)
		st := CommandStatus{Command: c, Paths: byCmd[c], LastRun: start, Duration: time.Since(t0),
			ExitCode: exit, OK: err == nil, StderrTail: tail, contentKey: key}
		if err != nil {
			st.Error = err.Error()
			s.log.Error("on_change command failed", "command", c, "paths", byCmd[c], "exit", exit, "error", err, "stderr", tail)
			s.event("on_change", "on_change %q for %s failed (exit %d, %v): %s", c, strings.Join(byCmd[c], " "), exit, err, strings.TrimSpace(tail))
		} else {
			st.StderrTail = ""
			s.log.Info("on_change command ran", "command", c, "paths", byCmd[c], "duration", st.Duration)
			s.event("on_change", "on_change %q for %s ran in %s", c, strings.Join(byCmd[c], " "), st.Duration.Round(time.Millisecond))
		}
		s.recordCommand(st)
		ran = append(ran, st)
	}
	return ran
}

func (s *Syncer) recordCommand(st CommandStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commands[st.Command] = &st
}

// noteApply remembers whether applying what the primary sent failed (a
// full disk, a read-only file system): shown in status until an apply
// succeeds, and in the history when it starts and stops failing.
func (s *Syncer) noteApply(errs []error) {
	cur := ""
	if len(errs) > 0 {
		cur = errors.Join(errs...).Error()
	}
	s.mu.Lock()
	prev := s.applyErr
	s.applyErr = cur
	s.mu.Unlock()
	switch {
	case cur != "" && prev == "":
		s.event("apply", "cannot apply the primary's files: %s", cur)
	case cur == "" && prev != "":
		s.event("apply", "applying the primary's files works again")
	}
}
