package configsync

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// maxKickGap bounds the time between two rescans asked for at once.
const maxKickGap = 5 * time.Millisecond

// watch follows the sync paths with fsnotify (directories recursively, new
// ones as they appear) and asks for a rescan on any change: at once for
// the first of a burst, then coalesced.
// Without a watcher the periodic scan still finds every change.
func (s *Syncer) watch(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("file watcher unavailable, relying on the periodic scan", "error", err)
		return
	}
	defer w.Close()
	watched := map[string]bool{}
	add := func(dir string) {
		if watched[dir] {
			return
		}
		if err := w.Add(dir); err == nil {
			watched[dir] = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("cannot watch directory", "dir", dir, "error", err)
		}
	}
	addTree := func(root string) {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				add(p)
			}
			return nil
		})
	}
	for _, r := range s.store.roots {
		add(filepath.Dir(s.store.fsPath(r))) // a file root is replaced by rename: watch its directory
		addTree(s.store.fsPath(r))
	}
	// From now on every change makes an event (manifestCurrent).
	s.lastEvent.Store(time.Now().UnixNano())
	s.watchSince.Store(time.Now().UnixNano())
	defer s.watchSince.Store(0)
	// An event that names a complete change (a file renamed or moved into
	// place, removed, its mode or owner changed, a new non-empty file)
	// rescans at once, or when kickGap has passed since the last rescan
	// asked for at once; everything else is coalesced into one more
	// rescan at most every Debounce. An in-place write (or a new, still empty file)
	// waits for Debounce: the writer may not be done.
	//
	// "At once" is not only for the first event of a burst: an editor or
	// a configuration tool writes a temporary file beside the target and
	// renames it over the target (vim, ansible, puppet, install), and the
	// temporary file's creation and writes come first, so the rename that
	// completes the change is never a burst's first event
	// (TestWatchRenameOverTargetAtOnce: it waited the whole Debounce).
	// A burst of many complete changes still costs at most one rescan
	// per kickGap and one per Debounce (and rescans asked for while one
	// runs are one). Later events do not extend the window, so a file
	// rewritten without pause is still pushed every Debounce.
	kickGap := min(s.cfg.Debounce/4, maxKickGap)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// soon: a complete change within kickGap of the last rescan asked for
	// at once is rescanned when the gap is over, not after Debounce (a
	// temporary file created with its content counts as complete, and
	// the rename over the target came a few microseconds after it: 1 %
	// of rename-writes waited the debounce, TestWatchCompleteWithinGap).
	soon := time.NewTimer(time.Hour)
	soon.Stop()
	armed, dirty, soonArmed := false, false, false
	var lastKick time.Time // the last rescan asked for at once
	for {
		select {
		case <-ctx.Done():
			return
		case <-soon.C:
			soonArmed = false
			lastKick = time.Now()
			kick(s.rescanCh)
		case <-timer.C:
			armed = false
			if dirty {
				dirty = false
				kick(s.rescanCh)
			}
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if strings.HasPrefix(filepath.Base(ev.Name), tempPrefix) || !s.store.Covers(s.store.logical(ev.Name)) {
				continue
			}
			s.lastEvent.Store(time.Now().UnixNano())
			if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				for d := range watched {
					if d == ev.Name || strings.HasPrefix(d, ev.Name+"/") {
						delete(watched, d)
					}
				}
			}
			complete := ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) || ev.Has(fsnotify.Chmod)
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Lstat(ev.Name); err == nil {
					if fi.IsDir() {
						addTree(ev.Name)
					}
					complete = complete || !fi.Mode().IsRegular() || fi.Size() > 0
				}
			}
			if ev.Has(fsnotify.Write) {
				complete = false
			}
			now := time.Now()
			switch {
			case !complete:
				dirty = true
			case now.Sub(lastKick) >= kickGap:
				lastKick = now
				kick(s.rescanCh)
			case !soonArmed:
				soonArmed = true
				soon.Reset(kickGap - now.Sub(lastKick))
			}
			if !armed {
				armed = true
				timer.Reset(s.cfg.Debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.lastEvent.Store(time.Now().UnixNano())
			s.log.Warn("file watcher error, rescanning", "error", err)
			kick(s.rescanCh)
		}
	}
}
