package syncbench

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

const (
	groupID    = 10
	hbInterval = 100 * time.Millisecond
	pollEvery  = time.Millisecond
	addrA      = "10.9.0.1/24" // rsync client side, on port1
	addrB      = "10.9.0.2/24" // sshd side
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// bench is the lab of one run: node-a primary, node-b secondary, one
// synchronized directory, sshd on node-b.
type bench struct {
	t    *testing.T
	l    *lab.Lab
	d    *lab.SyncDir
	a, b *lab.Node
	ssh  *lab.SSHD
	// trash holds what aside moved out of the way, removed at the end.
	trash  string
	trashN int
}

func (x *bench) params(priority int) lab.Params {
	return lab.Params{GroupID: groupID, Priority: priority, HBInterval: hbInterval, LostThreshold: 6,
		HelloHolddown: time.Second, ARPs: 1, ARPsInterval: time.Second, NoIPv6: true,
		// Production sync timings (period 60 s): only the change or the
		// joining node triggers a transfer.
		ClusterExtra: fmt.Sprintf("sync:\n  paths: [%s]\n", x.d.Path)}
}

func (x *bench) fatalf(format string, args ...any) {
	x.t.Helper()
	for _, n := range []*lab.Node{x.a, x.b} {
		x.t.Logf("---- %s: last lines of %s ----\n%s", n.Name, n.Log, n.Tail(30))
	}
	x.t.Fatalf(format, args...)
}

// inSync: both nodes report the same tree checksum and see each other in
// sync.
func inSync(nodes ...*lab.Node) error {
	sum := ""
	for _, n := range nodes {
		st, err := n.Status()
		if err != nil {
			return err
		}
		if st.Config.Checksum == "" {
			return fmt.Errorf("%s: no checksum", n.Name)
		}
		if sum == "" {
			sum = st.Config.Checksum
		} else if sum != st.Config.Checksum {
			return fmt.Errorf("%s has another checksum", n.Name)
		}
		if len(st.Members) != len(nodes) {
			return fmt.Errorf("%s lists %d members", n.Name, len(st.Members))
		}
		for _, m := range st.Members {
			if !m.ConfigInSync || !m.Alive {
				return fmt.Errorf("%s sees %s out of sync or lost", n.Name, m.Node)
			}
		}
	}
	return nil
}

func (x *bench) wait(timeout time.Duration, what string, cond func() error) {
	x.t.Helper()
	if err := lab.Eventually(timeout, cond); err != nil {
		x.fatalf("%s: %v", what, err)
	}
}

// pollFile waits until path has content want, polling every millisecond,
// and returns when it saw it.
func pollFile(path string, want []byte, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(path)
		now := time.Now()
		if err == nil && string(b) == string(want) {
			return now, nil
		}
		if now.After(deadline) {
			return now, fmt.Errorf("%s not updated within %v", path, timeout)
		}
		time.Sleep(pollEvery)
	}
}

// change returns the content of change i: a small config file.
func change(i int) []byte {
	return fmt.Appendf(nil, "# change %d\nlisten 10.9.0.100:%d\nworkers %d\nupdated %s\n",
		i, 8000+i, i%16, time.Now().Format(time.RFC3339Nano))
}

// rsync runs rsync in node-a's namespace (without `ip netns exec`, whose
// mount setup would be charged to rsync; the source is the host path) and
// returns its error with the output.
func (x *bench) rsync(args ...string) error {
	return lab.InNS(x.a.NS, func() error {
		out, err := exec.Command("rsync", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("rsync %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	})
}

func TestSyncBench(t *testing.T) {
	if os.Getenv("HAGENT_BENCH") != "1" {
		t.Skip("set HAGENT_BENCH=1 (make bench) to run the sync benchmark")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	for _, b := range []string{"hagentd", "agentctl"} {
		if _, err := os.Stat(lab.Bin(b)); err != nil {
			t.Skipf("%s not built (%v): run `make bench`", b, err)
		}
	}
	if err := lab.EnsureRsync(); err != nil {
		t.Fatalf("rsync/sshd: %v", err)
	}
	changes := envInt("HAGENT_SYNC_BENCH_CHANGES", 200)
	reps := envInt("HAGENT_SYNC_BENCH_REPS", 3)
	tree := lab.TreeSpec{Files: 10000, Bytes: 50 << 20, Dirs: 100, Version: 1}

	l, err := lab.New(lab.Spec{Nodes: []string{"node-a", "node-b"}})
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(l.Close)
	d, err := l.NewSyncDir("bench")
	if err != nil {
		t.Fatalf("sync dir: %v", err)
	}
	x := &bench{t: t, l: l, d: d, a: l.Nodes["node-a"], b: l.Nodes["node-b"]}
	t.Cleanup(func() {
		if x.ssh != nil {
			x.ssh.Stop()
		}
		l.Close()
		if err := d.Remove(); err != nil {
			t.Errorf("removing the sync directories: %v", err)
		}
	})

	rep := &Report{Date: time.Now().UTC().Format(time.RFC3339), Host: hostInfo(), Files: tree.Files, Bytes: tree.Bytes, Changes: changes}

	// Setup: the same app.conf on both nodes, an empty big/ on node-a.
	for _, n := range []*lab.Node{x.a, x.b} {
		if err := os.WriteFile(d.File(n, "app.conf"), change(0), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(d.File(x.a, "big"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(d.File(x.b, "big"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*lab.Node{x.a, x.b} {
		if err := os.Chmod(d.File(n, "big"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.a.Start(x.params(200)); err != nil {
		x.fatalf("start node-a: %v", err)
	}
	if err := x.b.Start(x.params(100)); err != nil {
		x.fatalf("start node-b: %v", err)
	}
	x.wait(15*time.Second, "election and initial sync", func() error {
		if r := x.a.Role(); r != "primary" {
			return fmt.Errorf("node-a is %q", r)
		}
		return inSync(x.a, x.b)
	})

	// 1. hagent latency, for the three ways a file is written: renamed in
	// from elsewhere, renamed over the target from a temporary file beside
	// it (vim, ansible, puppet, install), rewritten in place.
	const common = " on the primary → the secondary's copy has the new content (polled every 1 ms); includes inotify, the rescan, transfer, fsync'd atomic write"
	for _, w := range []struct {
		how   string
		write func(content []byte) error
	}{
		{"atomic replace of app.conf (~100 B) from a temporary file outside the synced tree" + common,
			func(c []byte) error { return d.WriteFile(x.a, "app.conf", c, 0o644) }},
		{"rename-write: a temporary file beside app.conf, written, renamed over it" + common,
			func(c []byte) error { return writeAtomic(filepath.Dir(d.File(x.a, "app.conf")), "app.conf", c) }},
		{"in-place write of app.conf (truncate and write; waits for the 20 ms debounce, the writer may not be done)" + common,
			func(c []byte) error { return os.WriteFile(d.File(x.a, "app.conf"), c, 0o644) }},
	} {
		hl := Latency{System: "hagent", How: w.how}
		for i := 1; i <= changes; i++ {
			content := change(len(rep.Latency)*changes + i)
			t0 := time.Now()
			if err := w.write(content); err != nil {
				t.Fatal(err)
			}
			seen, err := pollFile(d.File(x.b, "app.conf"), content, 10*time.Second)
			if err != nil {
				hl.Errors = append(hl.Errors, fmt.Sprintf("change %d: %v", i, err))
				continue
			}
			hl.Samples = append(hl.Samples, float64(seen.Sub(t0))/float64(time.Millisecond))
			time.Sleep(5 * time.Millisecond) // let the push-ack come back
		}
		x.wait(10*time.Second, "in sync after the changes", func() error { return inSync(x.a, x.b) })
		t.Logf("measured: hagent latency (%s): p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d samples)", w.how[:strings.Index(w.how, " on the primary")], hl.P50(), hl.P99(), hl.Max(), len(hl.Samples))
		rep.Latency = append(rep.Latency, hl)
	}

	// 2. rsync latency, between the node-local directories (not synced by
	// hagent), over port1.
	if err := x.a.AddAddr("port1", addrA); err != nil {
		t.Fatal(err)
	}
	x.ssh, err = x.b.StartSSHD(addrB)
	if err != nil {
		x.fatalf("sshd: %v", err)
	}
	dst := "root@" + x.ssh.Addr + ":"
	for _, variant := range []struct {
		name string
		mux  bool
	}{{"rsync over ssh", false}, {"rsync over ssh, multiplexed", true}} {
		rl := Latency{System: variant.name, How: "atomic replace of the same file on node-a → `rsync -a -I FILE root@node-b:FILE` returned (content checked); rsync is told which file changed; -I because its size+mtime quick check (1 s resolution) skips a same-size change within the same second"}
		if variant.mux {
			rl.How += "; ssh reuses one master connection (ControlMaster), as a warm lsyncd-style setup would"
		} else {
			rl.How += "; a new ssh connection (key exchange, ed25519 auth) per change"
		}
		src := filepath.Join(d.LocalOn(x.a), "rs")
		if err := os.MkdirAll(filepath.Join(d.LocalOn(x.b), "rs"), 0o755); err != nil {
			t.Fatal(err)
		}
		sshCmd := x.ssh.SSHCommand(variant.mux)
		if variant.mux { // bring the master up outside the measurement
			if err := x.rsync("-a", "-e", sshCmd, d.File(x.a, "app.conf"), dst+d.Local+"/rs/warmup"); err != nil {
				x.fatalf("%v", err)
			}
		}
		for i := 1; i <= changes; i++ {
			content := change(i)
			t0 := time.Now()
			if err := writeAtomic(src, "app.conf", content); err != nil {
				t.Fatal(err)
			}
			err := x.rsync("-a", "-I", "-e", sshCmd, filepath.Join(src, "app.conf"), dst+d.Local+"/rs/app.conf")
			took := time.Since(t0)
			if err == nil {
				var got []byte
				got, err = os.ReadFile(filepath.Join(d.LocalOn(x.b), "rs", "app.conf"))
				if err == nil && string(got) != string(content) {
					err = errors.New("node-b's copy does not have the new content after rsync returned")
				}
			}
			if err != nil {
				rl.Errors = append(rl.Errors, fmt.Sprintf("change %d: %v", i, err))
				continue
			}
			rl.Samples = append(rl.Samples, float64(took)/float64(time.Millisecond))
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("%s latency: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d samples)", rl.System, rl.P50(), rl.P99(), rl.Max(), len(rl.Samples))
		rep.Latency = append(rep.Latency, rl)
	}

	// The latency runs above replaced files a thousand times (every
	// replaced inode is freed): let the file system forget them before the
	// full syncs create 10 000 files each (see aside).
	settleFS(t)

	// 3. hagent full sync: node-b joins with an empty directory while
	// node-a holds the tree.
	if err := os.Remove(d.File(x.a, "app.conf")); err != nil {
		t.Fatal(err)
	}
	srcTree := filepath.Join(d.LocalOn(x.a), "big")
	if err := tree.Write(srcTree); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(srcTree, 0o755); err != nil {
		t.Fatal(err)
	}
	hf := FullSync{System: "hagent", How: "node-b (empty directory) starts while node-a holds the tree → both report the same tree checksum (status polled every 5 ms); includes hagentd's start and the first heartbeat, the manifest exchange, transfer over ha1 and the atomic, fsync'd writes"}
	for r := 0; r < reps; r++ {
		if err := x.b.Stop(10 * time.Second); err != nil {
			t.Logf("stopping node-b: %v", err)
		}
		x.wait(10*time.Second, "node-a loses node-b", func() error {
			st, err := x.a.Status()
			if err != nil {
				return err
			}
			for _, m := range st.Members {
				if m.Node == "node-b" && m.Alive {
					return errors.New("node-b still alive")
				}
			}
			return nil
		})
		if err := x.aside(d.On(x.b)); err != nil {
			t.Fatal(err)
		}
		if r == 0 {
			before := checksum(x.a)
			if err := lab.ExchangeDirs(srcTree, d.File(x.a, "big")); err != nil {
				t.Fatal(err)
			}
			// node-a alone rescans the new tree; wait until its checksum
			// changed and settled.
			last, stable := "", 0
			x.wait(60*time.Second, "node-a scanned the tree", func() error {
				sum := checksum(x.a)
				if sum == before {
					return errors.New("not rescanned yet")
				}
				if sum != last {
					last, stable = sum, 0
					return errors.New("changing")
				}
				if stable++; stable < 20 {
					return errors.New("settling")
				}
				return nil
			})
		}
		t0 := time.Now()
		if err := x.b.Start(x.params(100)); err != nil {
			x.fatalf("start node-b: %v", err)
		}
		deadline := time.Now().Add(5 * time.Minute)
		for inSync(x.a, x.b) != nil {
			if time.Now().After(deadline) {
				x.fatalf("full sync did not complete within 5 minutes")
			}
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(t0)
		if err := lab.CompareTrees(d.On(x.a), d.On(x.b)); err != nil {
			hf.Errors = append(hf.Errors, err.Error())
			continue
		}
		hf.RunsS = append(hf.RunsS, took.Seconds())
		t.Logf("hagent full sync %d: %.2f s; node-b's batches:\n%s", r+1, took.Seconds(), appliedLines(x.b))
		keepLogs(t, fmt.Sprintf("fullsync-%d", r+1), t0, x.a, x.b)
	}
	rep.Full = append(rep.Full, hf)

	// 4. rsync full copy of the same tree onto an empty directory.
	for _, variant := range []struct {
		name  string
		extra []string
		how   string
	}{
		{"rsync -a over ssh", nil, "`rsync -a --delete node-a:big/ root@node-b:EMPTY/` (new ssh connection) until it returned; rsync does not fsync"},
		{"rsync -a --fsync over ssh", []string{"--fsync"}, "the same with --fsync: every file fsync'd, as hagent does"},
	} {
		rf := FullSync{System: variant.name, How: variant.how}
		for r := 0; r < reps; r++ {
			dstDir := filepath.Join(d.LocalOn(x.b), "full")
			if err := x.aside(dstDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			if err := os.RemoveAll(dstDir); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(dstDir, 0o755); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"-a", "--delete"}, variant.extra...)
			args = append(args, "-e", x.ssh.SSHCommand(false), d.File(x.a, "big")+"/", dst+d.Local+"/full/")
			t0 := time.Now()
			err := x.rsync(args...)
			took := time.Since(t0)
			if err == nil {
				err = lab.CompareTrees(d.File(x.a, "big"), dstDir)
			}
			if err != nil {
				rf.Errors = append(rf.Errors, err.Error())
				continue
			}
			rf.RunsS = append(rf.RunsS, took.Seconds())
			t.Logf("%s full copy %d: %.2f s", variant.name, r+1, took.Seconds())
		}
		rep.Full = append(rep.Full, rf)
	}

	rep.Notes = append(rep.Notes,
		"same lab, same run: two network namespaces; hagent's sync channel runs on the ha1 veth (raw 0x8893 frames, AES-256-GCM), rsync/ssh on port1 through the data bridge (TCP)",
		"hagent's latency includes detecting the change (inotify + 20 ms debounce); rsync's does not (it is told which file, at once)",
		fmt.Sprintf("full-sync tree: %d files in %d directories, %d bytes each (generated text)", tree.Files, tree.Dirs, tree.Bytes/int64(tree.Files)))
	var md strings.Builder
	rep.Markdown(&md)
	fmt.Println(md.String())
	out := filepath.Join(lab.RepoRoot(), "bench-results")
	if err := rep.Write(out); err != nil {
		t.Fatalf("writing results: %v", err)
	}
	t.Logf("wrote %s/sync.md and sync.json", out)
	for _, l := range rep.Latency {
		if len(l.Samples) == 0 {
			t.Errorf("%s: no latency samples: %v", l.System, l.Errors)
		}
	}
	for _, f := range rep.Full {
		if len(f.RunsS) == 0 {
			t.Errorf("%s: no full-sync run succeeded: %v", f.System, f.Errors)
		}
	}
}

// aside empties dir by moving its entries into a trash directory on the
// same file system, removed only when the benchmark ends. Deleting 10 000
// files right before a measured run slows the run's file creations by
// seconds on an ext4 without journal (this lab's disk): its inode
// allocator skips every inode freed within vm.dirty_expire_centisecs
// (30 s), reading its inode table block each time (perf: ~50 % of the
// writer's CPU in recently_deleted). A secondary that joins empty has
// deleted nothing; every system measured here gets the same treatment.
func (x *bench) aside(dir string) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if x.trash == "" {
		x.trash = filepath.Join(filepath.Dir(x.d.Path), "."+filepath.Base(x.d.Path)+"-trash")
		if err := os.MkdirAll(x.trash, 0o700); err != nil {
			return err
		}
		x.t.Cleanup(func() { os.RemoveAll(x.trash) })
	}
	for i, de := range des {
		x.trashN++
		if err := os.Rename(filepath.Join(dir, de.Name()), filepath.Join(x.trash, fmt.Sprintf("%d-%d", x.trashN, i))); err != nil {
			return err
		}
	}
	return nil
}

// appliedLines returns the "applied synchronized paths" lines of n's log
// since its last start: where each batch's time went.
func appliedLines(n *lab.Node) string {
	b, err := os.ReadFile(n.Log)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "hagentd: starting:") {
			out = out[:0]
		}
		if strings.Contains(l, "applied synchronized paths:") {
			out = append(out, "    "+l)
		}
	}
	return strings.Join(out, "\n")
}

// settleFS waits until inodes freed so far no longer count as recently
// deleted for ext4 without a journal (fs/ext4/ialloc.c recently_deleted:
// 60 s after the deletion once the inode table block is written back,
// which vm.dirty_expire_centisecs (30 s by default) and the flusher's 5 s
// period bound; 360 s while it is dirty), so that no full-sync run pays for
// the deletions of an earlier phase or of the previous benchmark's cleanup.
func settleFS(t *testing.T) {
	cs := 3000
	if b, err := os.ReadFile("/proc/sys/vm/dirty_expire_centisecs"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			cs = v
		}
	}
	d := max(time.Duration(cs)*10*time.Millisecond+6*time.Second, 61*time.Second)
	t.Logf("waiting %v (ext4's recently-deleted inodes) before the full syncs", d)
	time.Sleep(d)
}

// checksum returns n's tree checksum ("" when it does not answer).
func checksum(n *lab.Node) string {
	st, err := n.Status()
	if err != nil {
		return ""
	}
	return st.Config.Checksum
}

// writeAtomic replaces dir/name (temporary file in dir, rename).
func writeAtomic(dir, name string, data []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}

// hostInfo describes the machine: kernel, CPUs, tool versions.
func hostInfo() string {
	parts := []string{fmt.Sprintf("%d CPUs", runtime.NumCPU())}
	if out, err := exec.Command("uname", "-sr").Output(); err == nil {
		parts = append(parts, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("rsync", "--version").Output(); err == nil {
		parts = append(parts, strings.SplitN(string(out), "\n", 2)[0])
	}
	if out, err := exec.Command("ssh", "-V").CombinedOutput(); err == nil {
		parts = append(parts, strings.TrimSpace(string(out)))
	}
	return strings.Join(parts, ", ")
}

// keepLogs copies what each node logged since t0 (hagentd's debug log)
// to bench-results/NAME-NODE.log: the timeline of a run.
func keepLogs(t *testing.T, name string, t0 time.Time, nodes ...*lab.Node) {
	dir := filepath.Join(lab.RepoRoot(), "bench-results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Log(err)
		return
	}
	since := t0.UTC().Add(-time.Millisecond).Format("2006-01-02T15:04:05.000Z")
	for _, n := range nodes {
		b, err := os.ReadFile(n.Log)
		if err != nil {
			t.Log(err)
			continue
		}
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if len(l) >= len(since) && l[:len(since)] >= since {
				out = append(out, l)
			}
		}
		out = append(out, "")
		if err := os.WriteFile(filepath.Join(dir, name+"-"+n.Name+".log"), []byte(strings.Join(out, "\n")), 0o644); err != nil {
			t.Log(err)
		}
	}
}
