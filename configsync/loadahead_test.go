package configsync

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"testing"
)

// TestReadAhead: the parallel readers give every path's Load result in
// the paths' order (a missing path as fs.ErrNotExist), with any window,
// and stop ends them early.
func TestReadAhead(t *testing.T) {
	root := t.TempDir()
	s, err := NewStore(root, []string{"/etc/app"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for i := 0; i < 300; i++ {
		p := fmt.Sprintf("/etc/app/d%d/f%03d", i%7, i)
		if i%50 != 49 {
			writeFile(t, filepath.Join(root, p), fmt.Sprintf("content %d", i), 0o644)
		}
		paths = append(paths, p)
	}
	for _, c := range []struct{ workers, window int }{{1, 1}, {4, 1}, {4, 16}, {8, 1000}} {
		next, stop := s.readAhead(paths, c.workers, c.window)
		for i, p := range paths {
			e, content, err, ok := next()
			if !ok {
				t.Fatalf("%+v: ended after %d paths", c, i)
			}
			we, wc, werr := s.Load(p)
			if !errors.Is(err, werr) && !(errors.Is(err, fs.ErrNotExist) && errors.Is(werr, fs.ErrNotExist)) {
				t.Fatalf("%+v: %s: error %v, Load gives %v", c, p, err, werr)
			}
			if err == nil && (!e.Same(we) || e.Path != p || string(content) != string(wc)) {
				t.Fatalf("%+v: %s: got %+v %q, Load gives %+v %q", c, p, e, content, we, wc)
			}
		}
		if _, _, _, ok := next(); ok {
			t.Errorf("%+v: a result after the last path", c)
		}
		stop()
	}
	next, stop := s.readAhead(paths, 4, 8)
	next()
	stop() // early: the readers return
	stop() // twice is harmless
}
