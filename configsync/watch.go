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

// burstGap is the quiet time after which a file event starts a new burst.
const burstGap = 5 * time.Millisecond

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
	// The first event of a burst (after a quiet burstGap, or Debounce/4
	// if shorter) that names a complete change (a file renamed or moved
	// into place, removed, its mode or owner changed, a new non-empty
	// file) rescans at once; the rest of the burst is coalesced into one
	// more rescan at most every Debounce. An in-place write (or a new,
	// still empty file) waits for Debounce: the writer may not be done.
	// Later events do not extend the window, so a file rewritten without
	// pause is still pushed every Debounce.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed, dirty := false, false
	var last time.Time // the previous event
	for {
		select {
		case <-ctx.Done():
			return
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
			first := now.Sub(last) > min(s.cfg.Debounce/4, burstGap) // a gap: a new burst
			last = now
			if first && complete {
				kick(s.rescanCh)
			} else {
				dirty = true
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
