package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/internal/testutil"
	"github.com/hagent/hagent/vmac"
)

// fakeNet records what the agent asks of the vMAC manager.
type fakeNet struct {
	mu                        sync.Mutex
	owned                     bool
	takes, releases, announce int
}

func (f *fakeNet) Take() (vmac.TakeReport, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.owned = true
	f.takes++
	t := time.Now()
	return vmac.TakeReport{Start: t, MACSet: t, AddrsAdded: t, FirstGARP: t}, nil
}
func (f *fakeNet) Announce() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.announce++
	return nil
}
func (f *fakeNet) Release() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.owned {
		f.releases++
	}
	f.owned = false
	return nil
}
func (f *fakeNet) Reset() error               { return nil }
func (f *fakeNet) Owned() bool                { f.mu.Lock(); defer f.mu.Unlock(); return f.owned }
func (f *fakeNet) Status() []vmac.IfaceStatus { return nil }
func (f *fakeNet) Close() error               { return nil }
func (f *fakeNet) counts() (bool, int, int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.owned, f.takes, f.releases, f.announce
}

// fakeLinks lets a test inject carrier changes.
type fakeLinks struct {
	mu sync.Mutex
	fn func(string, bool)
}

func (w *fakeLinks) watch(ctx context.Context, names []string, fn func(string, bool)) error {
	w.mu.Lock()
	w.fn = fn
	w.mu.Unlock()
	<-ctx.Done()
	return nil
}

func (w *fakeLinks) set(name string, up bool) bool {
	w.mu.Lock()
	fn := w.fn
	w.mu.Unlock()
	if fn == nil {
		return false
	}
	fn(name, up)
	return true
}

type testNode struct {
	name   string
	a      *Agent
	net    *fakeNet
	links  *fakeLinks
	cancel context.CancelFunc
	done   chan error
}

func testConfig(t *testing.T, name string, prio int, override bool) *config.Config {
	t.Helper()
	return testConfigLost(t, name, prio, override, 3)
}

// testKey is the group key of the test configurations: at least
// config.MinKeyLen bytes.
const testKey = "s3cret-s3cret-s3cret"

// testConfigLost is testConfig with another hb_lost_threshold (× 20 ms).
func testConfigLost(t *testing.T, name string, prio int, override bool, lost int) *config.Config {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte(testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf(`
control_socket: %s/sock
node: {name: %s, serial: SN-%s, priority: %d, override: %v}
cluster:
  group_id: 10
  password_file: %s
  hbdev: [{name: ha1, priority: 50}]
  hb_interval: 20ms
  hb_lost_threshold: %d
  hello_holddown: 200ms
  monitor: [port1]
  sync: {enabled: false}
`, dir, name, name, prio, override, key, lost)
	cfg, err := config.Parse(name+".yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startNode(t *testing.T, mem *heartbeat.MemNetwork, cfg *config.Config, opts ...func(*Options)) *testNode {
	t.Helper()
	n := &testNode{name: cfg.Node.Name, net: &fakeNet{}, links: &fakeLinks{}, done: make(chan error, 1)}
	o := Options{Config: cfg, Links: []heartbeat.Link{mem.Link("hb", cfg.Node.Name, "ha1")},
		Network: n.net, WatchLinks: n.links.watch}
	for _, f := range opts {
		f(&o)
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	n.a = a
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- a.Run(ctx) }()
	t.Cleanup(n.stop(t))
	return n
}

// stop returns a function that stops n and waits for it (idempotent).
func (n *testNode) stop(t *testing.T) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			n.cancel()
			select {
			case err := <-n.done:
				n.done <- err
			case <-time.After(5 * time.Second):
				t.Error("agent did not stop")
			}
		})
	}
}

func (n *testNode) status(t *testing.T) *control.Status {
	t.Helper()
	v, err := n.a.Handle(control.Request{Cmd: control.CmdStatus})
	if err != nil {
		t.Fatal(err)
	}
	return v.(*control.Status)
}

// eventually is testutil.Eventually under the name this package's tests
// use.
var eventually = testutil.Eventually[func() bool]

func TestAgentsElectAndFailOver(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	a := startNode(t, mem, testConfig(t, "a", 200, false))
	b := startNode(t, mem, testConfig(t, "b", 100, false))
	eventually(t, 3*time.Second, "a primary, b secondary", func() bool {
		return a.status(t).Role == "primary" && b.status(t).Role == "secondary" && b.status(t).Primary == "a"
	})
	if owned, _, _, _ := a.net.counts(); !owned {
		t.Fatal("primary does not hold the vMAC")
	}
	if owned, _, _, _ := b.net.counts(); owned {
		t.Fatal("secondary holds the vMAC")
	}
	st := b.status(t)
	if st.Primary != "a" || len(st.Members) != 2 || st.HBDevs[0].RX == 0 || st.HBDevs[0].TX == 0 {
		t.Fatalf("b status: %+v", st)
	}
	// Crash a: its link goes silent.
	mem.Isolate("a")
	start := time.Now()
	eventually(t, 2*time.Second, "b primary", func() bool { return b.status(t).Role == "primary" })
	took := time.Since(start)
	if floor := 60 * time.Millisecond; took < floor-20*time.Millisecond {
		t.Fatalf("b took over after %v, before the lost threshold %v", took, floor)
	}
	t.Logf("crash failover after %v (lost threshold 3 x 20ms)", took)
	eventually(t, time.Second, "history names the path", func() bool { return hasEvent(b, "lost", "lost: a, no heartbeat for 60ms (detected by heartbeat)") })
	if owned, _, _, _ := b.net.counts(); !owned {
		t.Fatal("new primary does not hold the vMAC")
	}
	// Heal: both primary for a moment, then exactly one (a wins on priority).
	mem.Recover("a")
	eventually(t, time.Second, "one primary", func() bool {
		oa, _, _, _ := a.net.counts()
		ob, _, _, _ := b.net.counts()
		return a.status(t).Role == "primary" && b.status(t).Role == "secondary" && oa && !ob
	})
}

func TestAgentGracefulStopHandsOver(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	// Lost threshold 10 × 20 ms = 200 ms: a hand-over well below it did not
	// wait for a's heartbeats to stop.
	a := startNode(t, mem, testConfigLost(t, "a", 200, false, 10))
	b := startNode(t, mem, testConfigLost(t, "b", 100, false, 10))
	eventually(t, 3*time.Second, "a primary", func() bool {
		return a.status(t).Role == "primary" && b.status(t).Role == "secondary"
	})
	start := time.Now()
	a.cancel()
	select {
	case err := <-a.done:
		a.done <- err
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a did not stop")
	}
	eventually(t, time.Second, "b primary", func() bool { return b.status(t).Role == "primary" })
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("hand-over took %v; it should not wait for the lost threshold (200ms)", d)
	}
	if owned, _, rel, _ := a.net.counts(); owned || rel != 1 {
		t.Fatalf("a after stop: owned %v releases %d", owned, rel)
	}
	// a's last frame (released, leaving) reaches b just after b's claim.
	eventually(t, 500*time.Millisecond, "b re-announces after a released", func() bool {
		_, _, _, ann := b.net.counts()
		return ann > 0
	})
	eventually(t, 500*time.Millisecond, "b forgets a at once", func() bool { return len(b.status(t).Members) == 1 })
}

func TestAgentFailoverSetAndLinkFailover(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	a := startNode(t, mem, testConfig(t, "a", 200, false))
	b := startNode(t, mem, testConfig(t, "b", 100, false))
	eventually(t, 3*time.Second, "a primary", func() bool { return a.status(t).Role == "primary" })
	v, err := a.a.Handle(control.Request{Cmd: control.CmdFailoverSet})
	if err != nil || !v.(control.FailoverStatus).Set {
		t.Fatalf("failover set: %v %v", v, err)
	}
	eventually(t, time.Second, "b primary", func() bool {
		return b.status(t).Role == "primary" && a.status(t).Role == "secondary"
	})
	if _, err := a.a.Handle(control.Request{Cmd: control.CmdFailoverUnset}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "a primary again", func() bool {
		return a.status(t).Role == "primary" && b.status(t).Role == "secondary"
	})

	// a's monitored link goes down: b takes over at once.
	eventually(t, time.Second, "watcher", func() bool { return a.links.set("port1", false) })
	eventually(t, time.Second, "b primary after link failure", func() bool {
		return b.status(t).Role == "primary" && a.status(t).Role == "secondary"
	})
	for _, m := range b.status(t).Members {
		if m.Node == "a" && (m.MonitorUp != 0 || m.MonitorTotal != 1) {
			t.Fatalf("a's member entry: %+v", m)
		}
	}
	h, _ := a.a.Handle(control.Request{Cmd: control.CmdHistory})
	found := false
	for _, e := range h.([]Event) {
		if e.Kind == "link" {
			found = true
		}
	}
	if !found {
		t.Fatal("history lacks the link event")
	}
}

// TestBadFramesCounted: forged, foreign-group and garbage frames are
// dropped and counted, never acted upon.
func TestBadFramesCounted(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	a := startNode(t, mem, testConfig(t, "a", 200, false))
	eventually(t, 3*time.Second, "a primary", func() bool { return a.status(t).Role == "primary" })
	evil := mem.Link("hb", "evil", "eth0")
	send := func(c *heartbeat.Codec, f heartbeat.Frame) {
		b, err := c.Append(nil, &f)
		if err != nil {
			t.Fatal(err)
		}
		if err := evil.Send(b); err != nil {
			t.Fatal(err)
		}
	}
	f := heartbeat.Frame{GroupID: 10, VCluster: 1, Role: uint8(cluster.RolePrimary), Priority: 255, Node: "evil", Serial: "ZZZ", Epoch: 1, Seq: 1}
	send(heartbeat.NewCodec([]byte("wrong"), 10), f)
	f.GroupID = 11
	send(heartbeat.NewCodec([]byte(testKey), 11), f)
	_ = evil.Send([]byte("garbage"))
	eventually(t, time.Second, "counters", func() bool {
		h := a.status(t).HBDevs[0]
		return h.BadAuth == 1 && h.Dropped == 2
	})
	st := a.status(t)
	if st.Role != "primary" || len(st.Members) != 1 {
		t.Fatalf("bad frames changed the cluster: %+v", st)
	}
	// A replayed valid frame is dropped as a replay.
	good := heartbeat.NewCodec([]byte(testKey), 10)
	f.GroupID, f.Seq, f.Priority, f.Epoch = 10, 100, 1, 5
	b, _ := good.Append(nil, &f)
	_ = evil.Send(b)
	f.Seq = 1 // older than the window (100-64)
	b, _ = good.Append(nil, &f)
	_ = evil.Send(b)
	eventually(t, time.Second, "replay counted", func() bool { return a.status(t).HBDevs[0].Replay == 1 })
}
