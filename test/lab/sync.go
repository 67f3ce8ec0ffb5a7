package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
)

// EtcNetns is where `ip netns exec NAME` looks for per-namespace files: it
// bind-mounts /etc/netns/NAME/X over /etc/X for every X there, in the
// private mount namespace of the command it runs.
const EtcNetns = "/etc/netns"

// SyncDir is a directory that every node of a lab sees at the same
// absolute path, /etc/<Name>, each node with a copy of its own: the copy
// lives at /etc/netns/<ns>/<Name> on the host and `ip netns exec` binds it
// over the mount point /etc/<Name> for hagentd and its on_change commands.
// The test process reads and writes a node's copy on the host (On).
//
// Beside it each node gets a node-local directory /etc/<Name>-local that
// is never synchronized: for on_change markers, and as the scratch
// directory of WriteFile's atomic writes (same file system as the copy).
//
// Create it before starting the nodes (the binds are made when hagentd
// starts) and Remove it after the lab is closed.
type SyncDir struct {
	Name  string // base name under /etc, unique per lab
	Path  string // /etc/<Name>: the path in the nodes' configuration
	Local string // /etc/<Name>-local: node-local, not synchronized

	lab     *Lab
	created []string // host paths to remove, in creation order
}

// NewSyncDir creates the mount points /etc/<prefix>-<name> and its -local
// sibling on the host and, for every node, empty copies of both (mode
// 0755) under /etc/netns/<ns>/.
func (l *Lab) NewSyncDir(name string) (*SyncDir, error) {
	base := l.Prefix + "-" + name
	d := &SyncDir{Name: base, Path: "/etc/" + base, Local: "/etc/" + base + "-local", lab: l}
	mk := func(p string) error {
		if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		d.created = append(d.created, p)
		return os.Chmod(p, 0o755)
	}
	if err := os.MkdirAll(EtcNetns, 0o755); err != nil {
		return nil, err
	}
	steps := []string{d.Path, d.Local}
	for _, n := range l.sortedNodes() {
		steps = append(steps, filepath.Join(EtcNetns, n.NS), d.On(n), d.LocalOn(n))
	}
	for _, p := range steps {
		if err := mk(p); err != nil {
			d.Remove()
			return nil, err
		}
	}
	return d, nil
}

func (l *Lab) sortedNodes() []*Node {
	var ns []*Node
	for _, n := range l.Nodes {
		ns = append(ns, n)
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i].Index < ns[j].Index })
	return ns
}

// On returns the host path of node n's copy of the directory.
func (d *SyncDir) On(n *Node) string { return filepath.Join(EtcNetns, n.NS, d.Name) }

// LocalOn returns the host path of node n's node-local directory.
func (d *SyncDir) LocalOn(n *Node) string { return filepath.Join(EtcNetns, n.NS, d.Name+"-local") }

// File returns the host path of rel inside node n's copy.
func (d *SyncDir) File(n *Node, rel string) string { return filepath.Join(d.On(n), rel) }

// WriteFile replaces rel in node n's copy atomically (written in the
// node-local directory, then renamed into place), creating parent
// directories, so that hagentd never scans a half-written file.
func (d *SyncDir) WriteFile(n *Node, rel string, data []byte, perm fs.FileMode) error {
	dst := d.File(n, rel)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(d.LocalOn(n), ".write-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// Empty removes everything inside node n's copy (the directory stays).
func (d *SyncDir) Empty(n *Node) error {
	des, err := os.ReadDir(d.On(n))
	if err != nil {
		return err
	}
	var errs []error
	for _, de := range des {
		errs = append(errs, os.RemoveAll(filepath.Join(d.On(n), de.Name())))
	}
	return errors.Join(errs...)
}

// Remove deletes every copy, the mount points, and /etc/netns/<ns> and
// /etc/netns when they are left empty. Call it after the nodes stopped
// (Lab.Close): a running hagentd keeps its bind mounts.
func (d *SyncDir) Remove() error {
	var errs []error
	for i := len(d.created) - 1; i >= 0; i-- {
		p := d.created[i]
		if filepath.Dir(p) == EtcNetns {
			_ = os.Remove(p) // the namespace's directory, if nothing else is in it
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	d.created = nil
	_ = os.Remove(EtcNetns) // only when empty: others may use it
	return errors.Join(errs...)
}

// CompareTrees compares two directory trees: the same names, kinds,
// permission bits, file contents and symlink targets. It returns the first
// differences found (at most 10), nil when identical.
func CompareTrees(a, b string) error {
	ea, err := treeEntries(a)
	if err != nil {
		return err
	}
	eb, err := treeEntries(b)
	if err != nil {
		return err
	}
	var diffs []string
	add := func(format string, args ...any) {
		if len(diffs) < 10 {
			diffs = append(diffs, fmt.Sprintf(format, args...))
		}
	}
	for rel, x := range ea {
		y, ok := eb[rel]
		switch {
		case !ok:
			add("%s: only in %s", rel, a)
		case x.mode != y.mode:
			add("%s: mode %v vs %v", rel, x.mode, y.mode)
		case !bytes.Equal(x.content, y.content):
			add("%s: content differs (%d vs %d bytes)", rel, len(x.content), len(y.content))
		}
	}
	for rel := range eb {
		if _, ok := ea[rel]; !ok {
			add("%s: only in %s", rel, b)
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	return fmt.Errorf("trees %s and %s differ: %s", a, b, strings.Join(diffs, "; "))
}

type treeEntry struct {
	mode    fs.FileMode
	content []byte // file bytes or symlink target
}

func treeEntries(root string) (map[string]treeEntry, error) {
	out := map[string]treeEntry{}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := de.Info()
		if err != nil {
			return err
		}
		e := treeEntry{mode: fi.Mode()}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e.content = []byte(t)
		case fi.Mode().IsRegular():
			if e.content, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		out[rel] = e
		return nil
	})
	return out, err
}

// TreeSpec describes a generated tree of regular files for sync tests.
type TreeSpec struct {
	Files   int   // number of files
	Bytes   int64 // total content size, spread evenly
	Dirs    int   // files are spread over this many subdirectories (0: 1)
	Version int   // content version: the same file differs between versions
}

// TreeFile returns the relative path of file i of a generated tree.
func (s TreeSpec) TreeFile(i int) string {
	dirs := max(s.Dirs, 1)
	return fmt.Sprintf("d%03d/f%05d.conf", i%dirs, i)
}

// Size returns the size of file i.
func (s TreeSpec) Size(i int) int {
	size := s.Bytes / int64(max(s.Files, 1))
	if int64(i) < s.Bytes%int64(max(s.Files, 1)) {
		size++
	}
	return int(size)
}

// Content returns the content of file i: a header naming the file and the
// version, then filler derived from both, so that every version of every
// file is distinct and a torn mix of two versions matches neither.
func (s TreeSpec) Content(i int) []byte {
	size := s.Size(i)
	b := make([]byte, 0, size)
	b = fmt.Appendf(b, "# file %d version %d\n", i, s.Version)
	x := uint32(i)*2654435761 + uint32(s.Version)*40503 + 1
	for len(b) < size {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b = append(b, 'a'+byte(x%26))
		if len(b)%64 == 63 {
			b = append(b, '\n')
		}
	}
	return b[:size]
}

// Write writes the tree below root (plain writes: for trees written
// before hagentd starts; use SyncDir.WriteFile under a running node).
func (s TreeSpec) Write(root string) error {
	for i := 0; i < s.Files; i++ {
		p := filepath.Join(root, s.TreeFile(i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, s.Content(i), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// LinkStats returns the received and transmitted bytes of an interface of
// the node.
func (n *Node) LinkStats(ifname string) (rx, tx uint64, err error) {
	err = InNS(n.NS, func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		st := l.Attrs().Statistics
		if st == nil {
			return fmt.Errorf("%s: no statistics", ifname)
		}
		rx, tx = st.RxBytes, st.TxBytes
		return nil
	})
	return rx, tx, err
}

// AddAddr adds an address (CIDR) to an interface of the node.
func (n *Node) AddAddr(ifname, cidr string) error {
	return ip("-n", n.NS, "addr", "replace", cidr, "dev", ifname)
}
