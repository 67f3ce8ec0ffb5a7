package test

// Configuration sync (docs/configsync.md) end to end: every node has its own copy of
// the synchronized directory at the same absolute path (lab.SyncDir binds
// /etc/netns/<ns>/<dir> over /etc/<dir> for hagentd), and the test reads
// and writes the copies on the host.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/test/lab"
)

// syncPeriod is sync.period in these tests: the periodic compare that
// repairs drift.
const syncPeriod = 2 * time.Second

// newSyncLab builds a lab with a synchronized directory, removed (after the
// lab is closed) when the test ends.
func newSyncLab(t *testing.T, spec lab.Spec) (*lab.Lab, *lab.SyncDir) {
	t.Helper()
	l := newLab(t, spec)
	d, err := l.NewSyncDir("sync")
	if err != nil {
		t.Fatalf("sync dir: %v", err)
	}
	// Runs before newLab's cleanups (LIFO): the nodes must be gone before
	// their directories are removed, so close the lab first (idempotent).
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range sortedNames(l) {
				t.Logf("---- %s: last lines of %s ----\n%s", name, l.Nodes[name].Log, l.Nodes[name].Tail(40))
			}
		}
		l.Close()
		if err := d.Remove(); err != nil {
			t.Errorf("removing the sync directories: %v", err)
		}
	})
	return l, d
}

// onChangeCmd copies app.conf as the node sees it into its node-local
// directory and counts the runs there: proof that the command ran on that
// node, after the file was applied.
func onChangeCmd(d *lab.SyncDir) string {
	return fmt.Sprintf("cp %s/app.conf %s/seen.conf; echo ran >> %s/runs", d.Path, d.Local, d.Local)
}

// syncParams are params with sync of d every syncPeriod and the on_change
// command (none when empty).
func syncParams(priority int, d *lab.SyncDir, onChange string) lab.Params {
	p := params(priority, false)
	p.ClusterExtra = fmt.Sprintf("sync:\n  paths: [%s]\n  period: %s\n", d.Path, syncPeriod)
	if onChange != "" {
		p.ClusterExtra += fmt.Sprintf("  on_change: {%q: %q}\n", d.Path, onChange)
	}
	return p
}

// startPair starts a (priority 200) then b (100) and waits until a is
// primary for both.
func startPair(t *testing.T, a, b *lab.Node, pa, pb lab.Params) {
	t.Helper()
	start(t, a, pa)
	start(t, b, pb)
	eventually(t, 10*time.Second, "election", func() error { return agree(a.Name, a, b) })
}

// sameChecksum checks that every node reports the same tree checksum for
// itself and sees every other member in sync.
func sameChecksum(nodes ...*lab.Node) error {
	sum := ""
	for _, n := range nodes {
		st, err := n.Status()
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		if !st.Config.SyncOn || st.Config.Checksum == "" {
			return fmt.Errorf("%s: sync not running: %+v", n.Name, st.Config)
		}
		if sum == "" {
			sum = st.Config.Checksum
		} else if st.Config.Checksum != sum {
			return fmt.Errorf("%s has checksum %.12s, %s has %.12s", n.Name, st.Config.Checksum, nodes[0].Name, sum)
		}
		for _, m := range st.Members {
			if !m.ConfigInSync {
				return fmt.Errorf("%s sees %s out of sync (checksum %.12s)", n.Name, m.Node, m.ConfigSum)
			}
		}
	}
	return nil
}

// treesEqual compares the nodes' copies on the host.
func treesEqual(d *lab.SyncDir, a, b *lab.Node) error { return lab.CompareTrees(d.On(a), d.On(b)) }

// checksums runs `agentctl ha checksum --json` on n.
func checksums(t *testing.T, n *lab.Node) *control.Checksums {
	t.Helper()
	out, err := n.Ctl("ha", "checksum", "--json")
	if err != nil {
		t.Fatalf("ha checksum on %s: %v: %s", n.Name, err, out)
	}
	var c control.Checksums
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("ha checksum --json on %s: %v: %s", n.Name, err, out)
	}
	return &c
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%v", err)
	}
	return string(b)
}

// fileIs is a poll condition: the file at p has content want.
func fileIs(p, want string) func() error {
	return func() error {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if string(b) != want {
			return fmt.Errorf("%s is %q, want %q", p, trunc(string(b)), trunc(want))
		}
		return nil
	}
}

func trunc(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

// An edit on the primary reaches the secondary at once and its on_change
// runs there; an edit on the secondary (drift) is overwritten by the next
// periodic sync (or the heartbeat checksum repair, whichever comes first),
// logged as drift, and on_change runs again.
func TestSyncEdits(t *testing.T) {
	l, d := newSyncLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}})
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	for _, n := range []*lab.Node{a, b} {
		if err := os.WriteFile(d.File(n, "app.conf"), []byte("version 0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := onChangeCmd(d)
	startPair(t, a, b, syncParams(200, d, cmd), syncParams(100, d, cmd))
	eventually(t, 10*time.Second, "initial sync", func() error { return sameChecksum(a, b) })

	runs := func(t *testing.T, n *lab.Node) int {
		return strings.Count(readFile(t, filepath.Join(d.LocalOn(n), "runs")), "ran\n")
	}
	type edit struct {
		name    string
		on      *lab.Node // where the file is edited
		content string
		want    string        // the content both nodes end with
		within  time.Duration // bound from the edit to the secondary's copy
		drift   bool          // the secondary's history records drift
	}
	for _, tc := range []edit{
		{name: "primary edit reaches the secondary", on: a, content: "version 1 from the primary\n",
			want: "version 1 from the primary\n", within: 3 * time.Second},
		{name: "second primary edit", on: a, content: "version 2 from the primary\nwith two lines\n",
			want: "version 2 from the primary\nwith two lines\n", within: 3 * time.Second},
		{name: "secondary drift is repaired", on: b, content: "local edit on the secondary\n",
			want: "version 2 from the primary\nwith two lines\n", within: 2*syncPeriod + 4*time.Second, drift: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runsBefore := runs(t, b)
			t0 := time.Now()
			if err := d.WriteFile(tc.on, "app.conf", []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.drift {
				// The local edit is visible first; then the primary's
				// version comes back.
				if got := readFile(t, d.File(b, "app.conf")); got != tc.content && got != tc.want {
					t.Fatalf("secondary's copy is %q right after the edit", got)
				}
			}
			poll(t, tc.within, time.Millisecond, "secondary's copy", fileIs(d.File(b, "app.conf"), tc.want))
			t.Logf("measured %s: %v until the secondary's copy was right", tc.name, time.Since(t0).Round(time.Millisecond))
			if got := readFile(t, d.File(a, "app.conf")); got != tc.want {
				t.Fatalf("primary's copy is %q, want %q", got, tc.want)
			}
			eventually(t, 5*time.Second, "on_change on the secondary", func() error {
				if err := fileIs(filepath.Join(d.LocalOn(b), "seen.conf"), tc.want)(); err != nil {
					return err
				}
				if n := runs(t, b); n != runsBefore+1 {
					return fmt.Errorf("on_change ran %d times since the edit, want 1", n-runsBefore)
				}
				return nil
			})
			eventually(t, 5*time.Second, "checksums agree", func() error { return sameChecksum(a, b) })
			if err := treesEqual(d, a, b); err != nil {
				t.Fatal(err)
			}
			if tc.drift {
				out, err := b.Ctl("ha", "history")
				if err != nil {
					t.Fatalf("ha history: %v: %s", err, out)
				}
				if !strings.Contains(out, "overwritten by the primary") || !strings.Contains(out, d.Path+"/app.conf") {
					t.Fatalf("the secondary's history does not record the overwritten drift of app.conf:\n%s", out)
				}
			}
		})
	}
	if n := runs(t, a); n != 0 {
		t.Errorf("on_change ran %d times on the primary, want 0 (it runs where files are applied)", n)
	}
}

// A node that joins with an empty directory gets the whole tree: files in
// nested directories, modes, a symlink; `ha checksum --json` on both nodes
// shows one tree checksum.
func TestSyncNewNodeJoins(t *testing.T) {
	l, d := newSyncLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}})
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	tree := lab.TreeSpec{Files: 300, Bytes: 600 << 10, Dirs: 7, Version: 1}
	if err := tree.Write(d.On(a)); err != nil {
		t.Fatal(err)
	}
	extra := []struct {
		rel  string
		data string
		mode fs.FileMode
	}{
		{"app.conf", "listen 8080\n", 0o644},
		{"secret.key", "not for the world\n", 0o600},
		{"bin/reload.sh", "#!/bin/sh\nexit 0\n", 0o755},
		{"deep/er/still/x.conf", "x\n", 0o640},
		{"empty", "", 0o644},
	}
	for _, e := range extra {
		p := d.File(a, e.rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(e.data), e.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, e.mode); err != nil { // umask
			t.Fatal(err)
		}
	}
	if err := os.Chmod(d.File(a, "deep/er"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("app.conf", d.File(a, "current.conf")); err != nil {
		t.Fatal(err)
	}

	startAlone(t, a, syncParams(200, d, ""))
	t0 := time.Now()
	start(t, b, syncParams(100, d, ""))
	eventually(t, 30*time.Second, "the new node has the tree", func() error {
		if err := sameChecksum(a, b); err != nil {
			return err
		}
		return treesEqual(d, a, b)
	})
	t.Logf("measured join of a %d-file tree: %v from start to in sync", tree.Files+len(extra)+1, time.Since(t0).Round(time.Millisecond))

	ca, cb := checksums(t, a), checksums(t, b)
	trees := map[string]string{}
	for _, c := range []struct {
		from string
		cs   *control.Checksums
	}{{"node-a", ca}, {"node-b", cb}} {
		if len(c.cs.Members) != 2 {
			t.Fatalf("ha checksum on %s lists %d members, want 2: %+v", c.from, len(c.cs.Members), c.cs.Members)
		}
		for _, m := range c.cs.Members {
			if m.Tree == "" || !m.InSync {
				t.Errorf("ha checksum on %s: member %s tree %q in_sync %v", c.from, m.Node, m.Tree, m.InSync)
			}
			trees[c.from+" sees "+m.Node] = m.Tree
		}
	}
	var first string
	for k, v := range trees {
		if first == "" {
			first = v
		}
		if v != first {
			t.Fatalf("tree checksums differ: %v (%s)", trees, k)
		}
	}
	if st := status(t, a); st.Config.Checksum != first {
		t.Fatalf("status checksum %s differs from ha checksum %s", st.Config.Checksum, first)
	}
}

// 10 000 files / 50 MiB reach a node that joins with an empty directory;
// the checksums and the trees match.
func TestSyncFullTree10k(t *testing.T) {
	l, d := newSyncLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}})
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	tree := lab.TreeSpec{Files: 10000, Bytes: 50 << 20, Dirs: 100, Version: 1}
	if err := tree.Write(d.On(a)); err != nil {
		t.Fatal(err)
	}
	startAlone(t, a, syncParams(200, d, ""))
	t0 := time.Now()
	start(t, b, syncParams(100, d, ""))
	poll(t, 120*time.Second, 20*time.Millisecond, "full sync of 10 000 files", func() error { return sameChecksum(a, b) })
	took := time.Since(t0)
	t.Logf("measured full sync of %d files / %d MiB: %v from the new node's start, %.1f MiB/s, %.0f files/s",
		tree.Files, tree.Bytes>>20, took.Round(time.Millisecond), float64(tree.Bytes)/(1<<20)/took.Seconds(), float64(tree.Files)/took.Seconds())
	if err := treesEqual(d, a, b); err != nil {
		t.Fatal(err)
	}
	ca, cb := checksums(t, a), checksums(t, b)
	if len(ca.Members) != 2 || len(cb.Members) != 2 || ca.Members[0].Tree != cb.Members[0].Tree {
		t.Fatalf("ha checksum disagrees: %+v vs %+v", ca.Members, cb.Members)
	}
}

// SIGKILL of the secondary's agent while it applies a big sync leaves
// every file old or new, never torn, and no temporary file under a real
// name; restarted, the node removes the temporary files and catches up.
func TestSyncKillDuringApply(t *testing.T) {
	l, d := newSyncLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}})
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	v1 := lab.TreeSpec{Files: 3000, Bytes: 24 << 20, Dirs: 30, Version: 1}
	v2 := v1
	v2.Version, v2.Bytes = 2, 30<<20 // other sizes too: a torn file matches neither
	for _, n := range []*lab.Node{a, b} {
		if err := v1.Write(filepath.Join(d.On(n), "t")); err != nil {
			t.Fatal(err)
		}
	}
	// Version 2, swapped in at once below: one rescan, one push of every
	// file, applied in path order.
	if err := v2.Write(filepath.Join(d.LocalOn(a), "t")); err != nil {
		t.Fatal(err)
	}
	startPair(t, a, b, syncParams(200, d, ""), syncParams(100, d, ""))
	eventually(t, 20*time.Second, "initial sync", func() error { return sameChecksum(a, b) })

	file := func(i int) string { return d.File(b, filepath.Join("t", v1.TreeFile(i))) }
	if err := lab.ExchangeDirs(filepath.Join(d.LocalOn(a), "t"), filepath.Join(d.On(a), "t")); err != nil {
		t.Fatal(err)
	}
	// Kill once about half is applied: file i is the first of directory
	// i (i < Dirs), the last file is the last in path order.
	mid, last := v1.Dirs/2, v1.Files-1
	poll(t, 60*time.Second, time.Millisecond, "the secondary is half-way", func() error {
		if fileIs(file(mid), string(v2.Content(mid)))() != nil {
			return errors.New("the middle file is not applied yet")
		}
		if fileIs(file(last), string(v1.Content(last)))() != nil {
			return errors.New("the last file is applied already: too late to interrupt")
		}
		return nil
	})
	b.Kill()

	var old, nw int
	for i := 0; i < v1.Files; i++ {
		got, err := os.ReadFile(file(i))
		if err != nil {
			t.Fatalf("after the kill: %v", err)
		}
		switch {
		case bytes.Equal(got, v1.Content(i)):
			old++
		case bytes.Equal(got, v2.Content(i)):
			nw++
		default:
			t.Fatalf("%s is torn: %d bytes, neither version 1 (%d) nor 2 (%d): %q",
				v1.TreeFile(i), len(got), v1.Size(i), v2.Size(i), trunc(string(got)))
		}
	}
	temps := tempFiles(t, d.On(b))
	expected := map[string]bool{}
	for i := 0; i < v1.Files; i++ {
		expected[filepath.Join("t", v1.TreeFile(i))] = true
	}
	err := filepath.WalkDir(d.On(b), func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(d.On(b), p)
		if !expected[rel] && !strings.HasPrefix(de.Name(), ".hagent-sync-") {
			return fmt.Errorf("unexpected file %s after the kill", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("measured after SIGKILL mid-apply: %d files old, %d new, %d temporary files left", old, nw, len(temps))
	if nw == 0 || old == 0 {
		t.Fatalf("the kill did not land mid-sync (%d old, %d new)", old, nw)
	}

	// Restart at once, as systemd's Restart=on-failure does: within the
	// lost threshold, so the primary learns of the restart only from the
	// new heartbeat epoch, and must not keep waiting for the killed
	// process's reply (RequestTimeout is 60 s; the catch-up bound is 20 s).
	restarted := time.Now()
	start(t, b, syncParams(100, d, ""))
	eventually(t, 20*time.Second, "the restarted secondary catches up", func() error {
		if err := sameChecksum(a, b); err != nil {
			return err
		}
		return treesEqual(d, a, b)
	})
	t.Logf("measured: a secondary restarted mid-sync caught up %v after the restart", time.Since(restarted).Round(time.Millisecond))
	if temps := tempFiles(t, d.On(b)); len(temps) != 0 {
		t.Fatalf("temporary files left after the restart: %v", temps)
	}
	for _, i := range []int{0, mid, last} {
		if err := fileIs(file(i), string(v2.Content(i)))(); err != nil {
			t.Fatal(err)
		}
	}
}

// SIGKILL of a new secondary's agent during a full sync onto an empty
// tree, whose new directories are built aside and renamed into place
// (configsync's stage): every file that is visible is complete, nothing
// but temporary names is left besides them, and restarted, the node
// removes the staged directories and catches up.
func TestSyncKillDuringFullSync(t *testing.T) {
	l, d := newSyncLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}})
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	tree := lab.TreeSpec{Files: 4000, Bytes: 32 << 20, Dirs: 40, Version: 1}
	if err := tree.Write(filepath.Join(d.On(a), "t")); err != nil {
		t.Fatal(err)
	}
	startAlone(t, a, syncParams(200, d, ""))
	start(t, b, syncParams(100, d, ""))
	file := func(i int) string { return d.File(b, filepath.Join("t", tree.TreeFile(i))) }
	// Kill once some files are in and the last one is not.
	first, last := 0, tree.Files-1
	poll(t, 60*time.Second, time.Millisecond, "the full sync is under way", func() error {
		if _, err := os.Lstat(file(first)); err != nil {
			return errors.New("nothing applied yet")
		}
		if _, err := os.Lstat(file(last)); err == nil {
			t.Fatal("the full sync completed before the kill could land")
		}
		return nil
	})
	b.Kill()

	present := 0
	for i := 0; i < tree.Files; i++ {
		got, err := os.ReadFile(file(i))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatalf("after the kill: %v", err)
		}
		if !bytes.Equal(got, tree.Content(i)) {
			t.Fatalf("%s is torn: %d bytes, want %d: %q", tree.TreeFile(i), len(got), tree.Size(i), trunc(string(got)))
		}
		present++
	}
	expected := map[string]bool{}
	for i := 0; i < tree.Files; i++ {
		expected[filepath.Join("t", tree.TreeFile(i))] = true
	}
	staged := 0
	err := filepath.WalkDir(d.On(b), func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(de.Name(), ".hagent-sync-") {
			if de.IsDir() {
				staged++
				return fs.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(d.On(b), p)
		if !de.IsDir() && !expected[rel] {
			return fmt.Errorf("unexpected file %s after the kill", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("measured after SIGKILL mid-full-sync: %d of %d files present (each complete), %d staged directories left", present, tree.Files, staged)
	if present == 0 || present == tree.Files {
		t.Fatalf("the kill did not land mid-sync (%d of %d files)", present, tree.Files)
	}

	start(t, b, syncParams(100, d, ""))
	eventually(t, 30*time.Second, "the restarted secondary catches up", func() error {
		if err := sameChecksum(a, b); err != nil {
			return err
		}
		return treesEqual(d, a, b)
	})
	if temps := tempFiles(t, d.On(b)); len(temps) != 0 {
		t.Fatalf("temporary files or staged directories left after the restart: %v", temps)
	}
}

// tempFiles lists the atomic-write temporaries below root.
func tempFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(de.Name(), ".hagent-sync-") {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Cutting the preferred hbdev (ha1) in the middle of a transfer: the sync
// completes over ha2.
func TestSyncHBDevCut(t *testing.T) {
	l, d := newSyncLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}, HBLinks: 2})
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	tree := lab.TreeSpec{Files: 2000, Bytes: 40 << 20, Dirs: 20, Version: 1}
	if err := tree.Write(d.On(a)); err != nil {
		t.Fatal(err)
	}
	startAlone(t, a, syncParams(200, d, ""))
	tx := func(ifname string) uint64 {
		_, v, err := a.LinkStats(ifname)
		if err != nil {
			t.Fatalf("stats of %s: %v", ifname, err)
		}
		return v
	}
	ha1Start := tx("ha1")
	start(t, b, syncParams(100, d, ""))
	const cutAfter = 2 << 20
	poll(t, 30*time.Second, time.Millisecond, "transfer under way on ha1", func() error {
		if sent := tx("ha1") - ha1Start; sent < cutAfter {
			return fmt.Errorf("%d bytes sent on ha1", sent)
		}
		return nil
	})
	if err := a.SetLink("ha1", false); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	ha1Cut, ha2Cut := tx("ha1"), tx("ha2")
	if sameChecksum(a, b) == nil {
		t.Fatal("the sync was complete before the cut")
	}
	eventually(t, 60*time.Second, "the sync completes over ha2", func() error { return sameChecksum(a, b) })
	t.Logf("measured completion after cutting ha1: %v; %.1f MiB on ha1 before the cut, %.1f MiB on ha2 after it",
		time.Since(t0).Round(time.Millisecond), float64(ha1Cut-ha1Start)/(1<<20), float64(tx("ha2")-ha2Cut)/(1<<20))
	if err := treesEqual(d, a, b); err != nil {
		t.Fatal(err)
	}
	if sent := tx("ha2") - ha2Cut; sent < 1<<20 {
		t.Fatalf("only %d bytes went over ha2 after the cut: the rest of the sync did not move there", sent)
	}
	if err := agree("node-a", a, b); err != nil {
		t.Fatalf("cutting one of two hbdevs must not change roles: %v", err)
	}
}

// startAlone starts n and waits until it is primary on its own (before a
// second node joins).
func startAlone(t *testing.T, n *lab.Node, p lab.Params) {
	t.Helper()
	start(t, n, p)
	eventually(t, 10*time.Second, n.Name+" primary alone", func() error {
		if r := n.Role(); r != "primary" {
			return fmt.Errorf("%s is %q", n.Name, r)
		}
		return nil
	})
}
