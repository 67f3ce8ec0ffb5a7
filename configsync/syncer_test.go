package configsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/internal/testutil"
	"github.com/hagent/hagent/l2chan"
	"github.com/hashicorp/go-hclog"
)

// testNode is one cluster member of a syncer test: a channel on the shared
// in-memory segment s1, a temp dir standing for "/", and a Syncer.
type testNode struct {
	name    string
	root    string
	ch      *l2chan.Channel
	s       *Syncer
	cancel  context.CancelFunc
	done    chan error
	cluster *clusterBox
}

// clusterBox stands for the agent's cluster: section.
type clusterBox struct {
	mu      sync.Mutex
	data    []byte
	applied int
}

func (c *clusterBox) get() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.data...), nil
}

func (c *clusterBox) apply(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.data = append([]byte(nil), b...)
	c.applied++
	return nil
}

func (c *clusterBox) set(b string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.data = []byte(b)
}

type nodeOpt func(*SyncConfig)

// startNode starts a member named name. Sync paths are /etc/app (dir) and
// /etc/nft.conf (file); on_change commands append a line to
// <root>/ran-<name> so tests can count runs.
func startNode(t *testing.T, n *heartbeat.MemNetwork, name string, opts ...nodeOpt) *testNode {
	t.Helper()
	root := t.TempDir()
	os.MkdirAll(root+"/etc/app", 0o755)
	tn := &testNode{name: name, root: root, cluster: &clusterBox{data: []byte("group_id: 10\n")}}
	cc := l2chan.LabConfig()
	cc.Self, cc.GroupID, cc.Password, cc.Label = name, 10, []byte("lab-secret"), ChannelLabel
	cc.Links = []heartbeat.Link{n.Link("s1", name, "ha1")}
	cc.AdmitAll = true // no heartbeats in these tests to admit the peers
	ch, err := l2chan.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	tn.ch = ch
	cfg := LabSyncConfig()
	cfg.Self = name
	cfg.Root = root
	cfg.Paths = []string{"/etc/app", "/etc/nft.conf"}
	cfg.OnChange = map[string]string{
		"/etc/app":      "echo app >> " + root + "/ran-app",
		"/etc/nft.conf": "echo nft >> " + root + "/ran-nft",
	}
	cfg.Transport = tn.ch
	if os.Getenv("HAGENT_TEST_LOG") != "" {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: os.Stderr})
	}
	cfg.ClusterSection = tn.cluster.get
	cfg.ApplyCluster = tn.cluster.apply
	for _, o := range opts {
		o(&cfg)
	}
	s, err := NewSyncer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn.s = s
	ctx, cancel := context.WithCancel(context.Background())
	tn.cancel, tn.done = cancel, make(chan error, 1)
	go func() { tn.done <- s.Run(ctx) }()
	t.Cleanup(tn.stop)
	return tn
}

func (tn *testNode) stop() {
	if tn.cancel != nil {
		tn.cancel()
		<-tn.done
		tn.cancel = nil
	}
}

func (tn *testNode) read(p string) string {
	b, err := os.ReadFile(tn.root + p)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// write replaces p the way editors do (write elsewhere, rename), so a scan
// never sees a half-written file.
func (tn *testNode) write(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	staging := tn.root + "/staging" + p
	writeFile(t, staging, content, mode)
	os.MkdirAll(filepath.Dir(tn.root+p), 0o755)
	if err := os.Rename(staging, tn.root+p); err != nil {
		t.Fatal(err)
	}
}

// runs counts the on_change runs recorded in <root>/ran-<what>.
func (tn *testNode) runs(what string) int {
	b, _ := os.ReadFile(tn.root + "/ran-" + what)
	return strings.Count(string(b), "\n")
}

// pair starts a primary node-a and a secondary node-b.
func pair(t *testing.T, loss float64, opts ...nodeOpt) (*heartbeat.MemNetwork, *testNode, *testNode) {
	n := heartbeat.NewMemNetworkSeed(11)
	n.SetLoss("s1", int(loss*100))
	a := startNode(t, n, "node-a", opts...)
	b := startNode(t, n, "node-b", opts...)
	b.s.SetRole(false, []string{"node-a"})
	a.s.SetRole(true, []string{"node-b"})
	return n, a, b
}

func inSync(a, b *testNode) func() bool {
	return func() bool { return a.s.Checksum() == b.s.Checksum() }
}

// TestSyncIncremental: a change on the primary reaches the secondary with
// mode kept, the on_change command runs, the generation follows.
func TestSyncIncremental(t *testing.T) {
	tests := []struct {
		name string
		loss float64
	}{{"clean", 0}, {"lossy", 0.2}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, a, b := pair(t, tt.loss, func(c *SyncConfig) { c.Period = time.Hour })
			testutil.Eventually(t, 10*time.Second, "initial sync", inSync(a, b))
			gen0 := a.s.Generation()

			a.write(t, "/etc/nft.conf", "table inet filter {}\n", 0o640)
			testutil.Eventually(t, 10*time.Second, "nft.conf on node-b", func() bool {
				return b.read("/etc/nft.conf") == "table inet filter {}\n"
			})
			testutil.Eventually(t, 10*time.Second, "on_change ran on node-b", func() bool { return b.runs("nft") == 1 })
			fi, err := os.Stat(b.root + "/etc/nft.conf")
			if err != nil || fi.Mode().Perm() != 0o640 {
				t.Fatalf("mode on node-b = %v (%v), want 0640", fi.Mode(), err)
			}
			if a.runs("nft") != 0 {
				t.Error("on_change ran on the primary")
			}
			if g := a.s.Generation(); g <= gen0 {
				t.Errorf("generation %d not incremented from %d", g, gen0)
			}

			// A new subdirectory is watched too.
			os.MkdirAll(a.root+"/etc/app/conf.d", 0o750)
			a.write(t, "/etc/app/conf.d/10-x.conf", "x=1\n", 0o600)
			testutil.Eventually(t, 10*time.Second, "new subdirectory file on node-b", func() bool {
				return b.read("/etc/app/conf.d/10-x.conf") == "x=1\n"
			})
			testutil.Eventually(t, 10*time.Second, "trees equal", inSync(a, b))
			testutil.Eventually(t, 5*time.Second, "generations equal", func() bool { return a.s.Generation() == b.s.Generation() })
			testutil.Eventually(t, 5*time.Second, "primary status in sync", func() bool {
				st := a.s.Status()
				return st.InSync && len(st.Members) == 2 && st.Members[1].InSync && st.Members[1].Node == "node-b"
			})
			st := a.s.Status()
			if _, err := json.Marshal(st); err != nil {
				t.Fatalf("status does not marshal: %v", err)
			}
			assertNoTemp(t, b.root)
		})
	}
}

// TestSyncDeletion: removing a file on the primary removes it on the
// secondary and runs its command.
func TestSyncDeletion(t *testing.T) {
	_, a, b := pair(t, 0, func(c *SyncConfig) { c.Period = time.Hour })
	a.write(t, "/etc/app/old.conf", "old", 0o644)
	testutil.Eventually(t, 10*time.Second, "file on node-b", func() bool { return b.read("/etc/app/old.conf") == "old" })
	testutil.Eventually(t, 5*time.Second, "on_change for the new file", func() bool { return b.runs("app") == 1 })
	runs := b.runs("app")
	os.Remove(a.root + "/etc/app/old.conf")
	testutil.Eventually(t, 10*time.Second, "file gone on node-b", func() bool {
		_, err := os.Stat(b.root + "/etc/app/old.conf")
		return os.IsNotExist(err)
	})
	testutil.Eventually(t, 5*time.Second, "on_change after deletion", func() bool { return b.runs("app") == runs+1 })
	testutil.Eventually(t, 5*time.Second, "in sync", inSync(a, b))
}

// TestSyncRepairsDrift: local edits on the secondary are overwritten, by
// the periodic compare, by a heartbeat-reported mismatch, or by SyncNow.
func TestSyncRepairsDrift(t *testing.T) {
	tests := []struct {
		name   string
		period time.Duration
		repair func(t *testing.T, a, b *testNode)
	}{
		{name: "periodic", period: 300 * time.Millisecond, repair: func(*testing.T, *testNode, *testNode) {}},
		{name: "heartbeat checksum", period: time.Hour, repair: func(t *testing.T, a, b *testNode) {
			b.s.Rescan()
			testutil.Eventually(t, 5*time.Second, "drift seen on node-b", func() bool { return a.s.Checksum() != b.s.Checksum() })
			// Heartbeats keep reporting the mismatch.
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
						a.s.NotePeerChecksum("node-b", b.s.Checksum(), b.s.Generation())
					}
				}
			}()
			testutil.Eventually(t, 10*time.Second, "repaired", func() bool { return b.read("/etc/nft.conf") == "good\n" })
		}},
		{name: "SyncNow on primary", period: time.Hour, repair: func(t *testing.T, a, b *testNode) {
			if err := a.s.SyncNow(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := b.read("/etc/nft.conf"); got != "good\n" {
				t.Fatalf("after SyncNow node-b has %q", got)
			}
		}},
		{name: "SyncNow on secondary", period: time.Hour, repair: func(t *testing.T, a, b *testNode) {
			if err := b.s.SyncNow(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := b.read("/etc/nft.conf"); got != "good\n" {
				t.Fatalf("after SyncNow node-b has %q", got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, a, b := pair(t, 0, func(c *SyncConfig) { c.Period = tt.period })
			a.write(t, "/etc/nft.conf", "good\n", 0o644)
			testutil.Eventually(t, 10*time.Second, "initial content", func() bool { return b.read("/etc/nft.conf") == "good\n" })
			testutil.Eventually(t, 5*time.Second, "in sync", inSync(a, b))
			runs := b.runs("nft")
			b.write(t, "/etc/nft.conf", "evil\n", 0o666)
			tt.repair(t, a, b)
			testutil.Eventually(t, 10*time.Second, "drift repaired", func() bool { return b.read("/etc/nft.conf") == "good\n" })
			testutil.Eventually(t, 10*time.Second, "in sync", inSync(a, b))
			fi, _ := os.Stat(b.root + "/etc/nft.conf")
			if fi.Mode().Perm() != 0o644 {
				t.Errorf("mode after repair %v, want 0644", fi.Mode())
			}
			if b.runs("nft") != runs+1 {
				t.Errorf("on_change ran %d times for the repair, want 1", b.runs("nft")-runs)
			}
		})
	}
}

// TestSyncOnChangeFailure: a failing command is shown in the status of
// both nodes and is not run again until the content changes.
func TestSyncOnChangeFailure(t *testing.T) {
	var root string
	_, a, b := pair(t, 0, func(c *SyncConfig) {
		c.Period = 200 * time.Millisecond
		c.OnChange["/etc/nft.conf"] = "echo run >> " + c.Root + "/ran-nft; echo 'nft: syntax error' >&2; exit 3"
		root = c.Root
	})
	_ = root
	a.write(t, "/etc/nft.conf", "broken\n", 0o644)
	testutil.Eventually(t, 10*time.Second, "command ran", func() bool { return b.runs("nft") == 1 })
	testutil.Eventually(t, 5*time.Second, "failure in node-b status", func() bool {
		for _, c := range b.s.Status().OnChange {
			if strings.Contains(c.Command, "ran-nft") && !c.OK && c.ExitCode == 3 && strings.Contains(c.StderrTail, "syntax error") {
				return true
			}
		}
		return false
	})
	testutil.Eventually(t, 5*time.Second, "failure in primary's member status", func() bool {
		for _, m := range a.s.Status().Members {
			if m.Node == "node-b" && len(m.OnChange) == 1 && m.OnChange[0].ExitCode == 3 {
				return true
			}
		}
		return false
	})
	// Several periods and a drift back to the same content: no rerun.
	b.write(t, "/etc/nft.conf", "local edit\n", 0o644)
	testutil.Eventually(t, 10*time.Second, "drift repaired", func() bool { return b.read("/etc/nft.conf") == "broken\n" })
	time.Sleep(4 * LabSyncConfig().Period / 5)
	if n := b.runs("nft"); n != 1 {
		t.Fatalf("failing command ran %d times for the same content, want 1", n)
	}
	// New content: it runs again.
	a.write(t, "/etc/nft.conf", "fixed\n", 0o644)
	testutil.Eventually(t, 10*time.Second, "rerun for new content", func() bool { return b.runs("nft") == 2 })
}

// TestSyncCluster: the cluster: section travels as a pseudo-path.
func TestSyncCluster(t *testing.T) {
	_, a, b := pair(t, 0, func(c *SyncConfig) { c.Period = time.Hour })
	a.cluster.set("group_id: 10\nhb_interval: 100ms\n")
	a.s.Rescan()
	testutil.Eventually(t, 10*time.Second, "cluster section applied on node-b", func() bool {
		d, _ := b.cluster.get()
		return string(d) == "group_id: 10\nhb_interval: 100ms\n"
	})
	testutil.Eventually(t, 5*time.Second, "checksums equal", inSync(a, b))
	found := false
	for _, p := range b.s.Status().Members[0].Paths {
		found = found || p.Path == ClusterPath
	}
	if !found {
		t.Error("cluster: pseudo-path missing from status")
	}
}

// TestSyncRejectsNonPrimary: a secondary accepts pushes only from its
// primary, and shows its tree (manifest) only to it.
func TestSyncRejectsNonPrimary(t *testing.T) {
	n := heartbeat.NewMemNetworkSeed(12)
	a := startNode(t, n, "node-a", func(c *SyncConfig) { c.Period = time.Hour })
	b := startNode(t, n, "node-b", func(c *SyncConfig) { c.Period = time.Hour })
	b.s.SetRole(false, []string{"node-c"})
	a.write(t, "/etc/nft.conf", "intruder\n", 0o644)
	a.s.SetRole(true, []string{"node-b"})
	testutil.Eventually(t, 10*time.Second, "rejection reported", func() bool {
		for _, m := range a.s.Status().Members {
			if m.Node == "node-b" && (strings.Contains(m.LastError, "does not accept") || strings.Contains(m.LastError, "only to its primary")) {
				return true
			}
		}
		return false
	})
	if got := b.read("/etc/nft.conf"); !strings.HasPrefix(got, "<") {
		t.Fatalf("node-b accepted a push from a non-primary: %q", got)
	}
}

// TestSyncGenerationRule: a node that becomes primary pulls a newer tree
// from a member instead of pushing its older one over it.
func TestSyncGenerationRule(t *testing.T) {
	n, a, b := pair(t, 0, func(c *SyncConfig) { c.Period = time.Hour })
	a.write(t, "/etc/nft.conf", "v1\n", 0o644)
	testutil.Eventually(t, 10*time.Second, "v1 on node-b", func() bool { return b.read("/etc/nft.conf") == "v1\n" })
	testutil.Eventually(t, 5*time.Second, "in sync", inSync(a, b))

	// node-b is cut off while node-a changes the tree.
	n.Cut("s1")
	genB := b.s.Generation()
	a.write(t, "/etc/nft.conf", "v2\n", 0o644)
	a.write(t, "/etc/app/new.conf", "new\n", 0o644)
	testutil.Eventually(t, 5*time.Second, "node-a generation moves on", func() bool { return a.s.Generation() > genB })

	// Roles swap before the link returns.
	a.s.SetRole(false, []string{"node-b"})
	b.s.SetRole(true, []string{"node-a"})
	time.Sleep(100 * time.Millisecond)
	n.Heal("s1")

	testutil.Eventually(t, 10*time.Second, "node-b pulled v2", func() bool { return b.read("/etc/nft.conf") == "v2\n" })
	testutil.Eventually(t, 10*time.Second, "node-b has the new file", func() bool { return b.read("/etc/app/new.conf") == "new\n" })
	testutil.Eventually(t, 10*time.Second, "in sync", inSync(a, b))
	if got := a.read("/etc/nft.conf"); got != "v2\n" {
		t.Fatalf("node-a's newer tree was overwritten: %q", got)
	}
	if ga, gb := a.s.Generation(), b.s.Generation(); gb < ga {
		t.Fatalf("new primary generation %d < member's %d", gb, ga)
	}
	// The new primary now pushes its changes.
	b.write(t, "/etc/nft.conf", "v3\n", 0o644)
	testutil.Eventually(t, 10*time.Second, "v3 on node-a", func() bool { return a.read("/etc/nft.conf") == "v3\n" })
}

// TestSyncStateFile: the generation survives a restart.
func TestSyncStateFile(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "sync.state")
	n := heartbeat.NewMemNetworkSeed(13)
	a := startNode(t, n, "node-a", func(c *SyncConfig) { c.StateFile = state; c.Period = time.Hour })
	a.s.SetRole(true, nil)
	testutil.Eventually(t, 5*time.Second, "catch-up over", func() bool {
		a.write(t, "/etc/nft.conf", time.Now().String(), 0o644)
		return a.s.Generation() > 0
	})
	// Read the generation once stopped: a write of the loop above may
	// still be pending (debounced) and move it.
	a.stop()
	gen := a.s.Generation()
	s, err := NewSyncer(SyncConfig{Self: "node-a", Transport: a.ch, StateFile: state, Root: a.root, Paths: []string{"/etc/nft.conf"}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Generation() != gen {
		t.Fatalf("generation after restart %d, want %d", s.Generation(), gen)
	}

	// A corrupt or unreadable state file starts at generation 0, never a
	// refusal to start.
	if err := os.WriteFile(state, []byte("{corrupt"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "a-directory")
	if err := os.Mkdir(unreadable, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{state, unreadable} {
		s, err := NewSyncer(SyncConfig{Self: "node-a", Transport: a.ch, StateFile: f, Root: a.root, Paths: []string{"/etc/nft.conf"}})
		if err != nil {
			t.Fatalf("state file %s: %v", f, err)
		}
		if s.Generation() != 0 {
			t.Fatalf("state file %s: generation %d, want 0", f, s.Generation())
		}
	}
}

// TestPeerRestartedEndsWaits: a request to a member that restarted fails
// at once with ErrPeerRestarted instead of waiting RequestTimeout.
func TestPeerRestartedEndsWaits(t *testing.T) {
	tr := &silentTransport{msgs: make(chan l2chan.Message)}
	cfg := LabSyncConfig()
	cfg.Self, cfg.Transport, cfg.Root = "a", tr, t.TempDir()
	cfg.RequestTimeout = time.Minute
	s, err := NewSyncer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.request(context.Background(), "b", msgGenReq, &syncHeader{}, nil)
		done <- err
	}()
	deadline := time.Now().Add(2 * time.Second)
	for {
		s.pendMu.Lock()
		n := len(s.pending)
		s.pendMu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("request never pending")
		}
		time.Sleep(time.Millisecond)
	}
	s.PeerRestarted("c") // another member: no effect
	select {
	case err := <-done:
		t.Fatalf("request to b ended by c's restart: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	s.PeerRestarted("b")
	select {
	case err := <-done:
		if !errors.Is(err, ErrPeerRestarted) {
			t.Fatalf("err = %v, want ErrPeerRestarted", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("request still waiting after PeerRestarted")
	}
}

// silentTransport accepts every message and never answers.
type silentTransport struct{ msgs chan l2chan.Message }

func (s *silentTransport) Send(ctx context.Context, peer string, msg []byte) error { return nil }
func (s *silentTransport) Recv() <-chan l2chan.Message                             { return s.msgs }

// TestSyncFirstEventAtOnce: a file renamed into place is pushed at once,
// not after the debounce (an hour here: a push waiting for it never comes).
func TestSyncFirstEventAtOnce(t *testing.T) {
	_, a, b := pair(t, 0, func(c *SyncConfig) { c.Period, c.Debounce = time.Hour, time.Hour })
	testutil.Eventually(t, 10*time.Second, "initial sync", inSync(a, b))
	for i, content := range []string{"first\n", "second\n"} {
		a.write(t, "/etc/nft.conf", content, 0o644)
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("change %d on node-b without waiting for the debounce", i+1), func() bool {
			return b.read("/etc/nft.conf") == content
		})
		time.Sleep(10 * time.Millisecond) // a quiet gap: the next change starts a burst
	}
}

// TestWatchRenameOverTargetAtOnce: a change written the way editors and
// configuration tools write it (a temporary file beside the target,
// written, then renamed over the target) is pushed at once, though the
// rename is not the first event of its burst (the temporary file's
// creation and write are). The debounce is an hour: a push waiting for it
// never comes.
func TestWatchRenameOverTargetAtOnce(t *testing.T) {
	_, a, b := pair(t, 0, func(c *SyncConfig) { c.Period, c.Debounce = time.Hour, time.Hour })
	a.write(t, "/etc/app/app.conf", "v0\n", 0o644)
	testutil.Eventually(t, 10*time.Second, "initial sync", func() bool { return b.read("/etc/app/app.conf") == "v0\n" })
	for i, content := range []string{"v1\n", "v2\n", "v3\n"} {
		time.Sleep(20 * time.Millisecond)
		tmp, err := os.CreateTemp(a.root+"/etc/app", ".app.conf.tmp-*") // as ansible and install do
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tmp.WriteString(content); err != nil {
			t.Fatal(err)
		}
		if err := tmp.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp.Name(), a.root+"/etc/app/app.conf"); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("rename-write %d on node-b without waiting for the debounce", i+1), func() bool {
			return b.read("/etc/app/app.conf") == content
		})
	}
}

// TestWatchBurstCoalesces: a burst of 1000 changes, rename-writes and
// in-place writes in turn, is pushed in fewer generations than changes
// (at most one rescan at once per maxKickGap, the rest coalesced) and
// ends in sync, the last in-place write included (only the coalescing
// rescan after Debounce pushes it).
func TestWatchBurstCoalesces(t *testing.T) {
	_, a, b := pair(t, 0, func(c *SyncConfig) { c.Period = time.Hour })
	testutil.Eventually(t, 10*time.Second, "initial sync", inSync(a, b))
	gen0 := a.s.Status().Generation
	const changes = 1000
	start := time.Now()
	for i := range changes {
		target := fmt.Sprintf("%s/etc/app/f%d.conf", a.root, i%50)
		if i%2 == 1 { // in place: only the coalescing pushes these
			if err := os.WriteFile(target, fmt.Appendf(nil, "change %d\n", i), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		tmp, err := os.CreateTemp(a.root+"/etc/app", ".tmp-*")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(tmp, "change %d\n", i)
		tmp.Close()
		if err := os.Rename(tmp.Name(), target); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	// The burst's tail: an in-place write after a pause, so that no
	// rescan asked for at once can see it: only the coalescing one does.
	time.Sleep(50 * time.Millisecond)
	if err := os.WriteFile(a.root+"/etc/app/f0.conf", []byte("tail\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the burst's tail on node-b", func() bool { return b.read("/etc/app/f0.conf") == "tail\n" })
	testutil.Eventually(t, 20*time.Second, "in sync after the burst", inSync(a, b))
	if got := b.read("/etc/app/f49.conf"); got != fmt.Sprintf("change %d\n", changes-1) {
		t.Fatalf("node-b's f49.conf is %q after the burst", got)
	}
	pushes := a.s.Status().Generation - gen0
	t.Logf("measured: %d changes in %v pushed in %d generations", changes, took.Round(time.Millisecond), pushes)
	// One rescan at once per maxKickGap and one per Debounce at most:
	// however slow the loop, fewer than one push per two changes unless
	// a change took longer than maxKickGap/2 to write.
	if limit := max(changes/4, int(took/maxKickGap)+int(took/(10*time.Millisecond))+2); int(pushes) > limit {
		t.Fatalf("%d changes pushed in %d generations, want at most %d: not coalesced", changes, pushes, limit)
	}
}

// TestWatchCompleteWithinGap: a complete change that comes within
// maxKickGap of one rescanned at once (here a new file, then a
// rename-write right after it) is rescanned when the gap is over, not
// after the debounce (an hour here).
func TestWatchCompleteWithinGap(t *testing.T) {
	_, a, b := pair(t, 0, func(c *SyncConfig) { c.Period, c.Debounce = time.Hour, time.Hour })
	a.write(t, "/etc/app/app.conf", "v0\n", 0o644)
	testutil.Eventually(t, 10*time.Second, "initial sync", func() bool { return b.read("/etc/app/app.conf") == "v0\n" })
	for i := range 3 {
		time.Sleep(20 * time.Millisecond)
		first, second := fmt.Sprintf("first %d\n", i), fmt.Sprintf("second %d\n", i)
		a.write(t, fmt.Sprintf("/etc/app/other-%d.conf", i), first, 0o644) // rescanned at once
		a.write(t, "/etc/app/app.conf", second, 0o644)                     // within the gap
		testutil.Eventually(t, 10*time.Second, fmt.Sprintf("change %d's second file on node-b", i), func() bool {
			return b.read("/etc/app/app.conf") == second
		})
	}
}
