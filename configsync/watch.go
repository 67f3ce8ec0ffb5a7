package configsync

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watch follows the sync paths with fsnotify (directories recursively, new
// ones as they appear) and asks for a rescan, debounced, on any change.
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
	// The first event of a burst arms the timer; later ones do not extend
	// it, so a file rewritten without pause is still pushed every Debounce.
	var armed atomic.Bool
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if strings.HasPrefix(filepath.Base(ev.Name), tempPrefix) || !s.store.Covers(s.store.logical(ev.Name)) {
				continue
			}
			if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				for d := range watched {
					if d == ev.Name || strings.HasPrefix(d, ev.Name+"/") {
						delete(watched, d)
					}
				}
			}
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
					addTree(ev.Name)
				}
			}
			if armed.CompareAndSwap(false, true) {
				time.AfterFunc(s.cfg.Debounce, func() {
					armed.Store(false)
					kick(s.rescanCh)
				})
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.log.Warn("file watcher error, rescanning", "error", err)
			kick(s.rescanCh)
		}
	}
}
