package test

// Reboots and misconfigurations that used to split the cluster silently
// (issue 9): clock steps across restarts, cloned serials, a password
// mismatch, state in tmpfs.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"

	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/test/lab"
)

// skewedBinary builds hagentd with its clock off by offset (the
// main.clockOffset link-time variable, empty in every shipped build).
func skewedBinary(t *testing.T, offset string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "hagentd")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.clockOffset="+offset, "-o", out, "./cmd/hagentd")
	cmd.Dir = lab.RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building a hagentd with the clock %s: %v\n%s", offset, err, b)
	}
	return out
}

// capture records the heartbeats node `from` sends, as they arrive on
// ha1 of node `at`, to replay them later from `from`'s ha1.
type capture struct {
	conn   *packet.Conn // in at's namespace
	inject *packet.Conn // in from's namespace
	own    net.HardwareAddr
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
}

func startCapture(t *testing.T, at, from *lab.Node) *capture {
	t.Helper()
	c := &capture{done: make(chan struct{})}
	listen := func(n *lab.Node, conn **packet.Conn) {
		if err := lab.InNS(n.NS, func() error {
			ifi, err := net.InterfaceByName("ha1")
			if err != nil {
				return err
			}
			if n == from {
				c.own = ifi.HardwareAddr
			}
			*conn, err = packet.Listen(ifi, packet.Datagram, int(heartbeat.EtherTypeHA), nil)
			return err
		}); err != nil {
			t.Fatalf("capture on %s: %v", n.Name, err)
		}
	}
	listen(at, &c.conn)
	listen(from, &c.inject)
	go func() {
		defer close(c.done)
		buf := make([]byte, 2048)
		for {
			k, from, err := c.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if hw, ok := from.(*packet.Addr); !ok || !bytes.Equal(hw.HardwareAddr, c.own) {
				continue // not from `from`
			}
			c.mu.Lock()
			c.frames = append(c.frames, bytes.Clone(buf[:k]))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.conn.Close(); c.inject.Close(); <-c.done })
	return c
}

// take returns the frames captured so far and forgets them.
func (c *capture) take() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.frames
	c.frames = nil
	return f
}

// replay sends frames again from `from`'s ha1.
func (c *capture) replay(t *testing.T, frames [][]byte) {
	t.Helper()
	bcast := &packet.Addr{HardwareAddr: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	for _, f := range frames {
		if _, err := c.inject.WriteTo(f, bcast); err != nil {
			t.Fatalf("replay: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestClockStepRestart restarts node-b with its clock an hour behind, with
// its state kept and then lost, then an hour ahead, then normal: node-a
// hears every run of node-b within an interval, configuration sync to it
// works again, and replayed heartbeats of node-b's earlier runs are
// dropped as replays without changing anything.
func TestClockStepRestart(t *testing.T) {
	l, d := newSyncLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}})
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	behind, ahead := skewedBinary(t, "-1h"), skewedBinary(t, "1h")
	pa, pb := syncParams(200, d, ""), syncParams(100, d, "")
	startPair(t, a, b, pa, pb)
	capB := startCapture(t, a, b)
	time.Sleep(5 * hbInterval)

	var old [][]byte
	restart := func(name, bin string, keepState bool) time.Duration {
		t.Helper()
		old = append(old, capB.take()...)
		if err := b.Stop(10 * time.Second); err != nil {
			t.Fatalf("%s: stopping node-b: %v", name, err)
		}
		if !keepState {
			if err := os.RemoveAll(b.StateDir); err != nil {
				t.Fatal(err)
			}
		}
		b.Binary = bin
		start(t, b, pb)
		begin := time.Now()
		poll(t, 5*time.Second, 5*time.Millisecond, name+": node-a hears node-b", func() error {
			m, ok := member(status(t, a), "node-b")
			if !ok || !m.Alive {
				return fmt.Errorf("node-b not alive at node-a: %+v", m)
			}
			return nil
		})
		took := time.Since(begin)
		st := status(t, b)
		if skew := time.Since(st.StartedAt); bin != "" && (skew < 50*time.Minute && skew > -50*time.Minute) {
			t.Fatalf("%s: node-b started at %v: the clock of this build is not off", name, st.StartedAt)
		}
		t.Logf("%s: node-a hears node-b %v after its control socket answered (hb_interval %v); epoch %d", name, took.Round(time.Millisecond), hbInterval, st.Epoch)
		if took > 2*hbInterval {
			t.Errorf("%s: node-a heard node-b only after %v, want within an interval (%v) plus slack", name, took, hbInterval)
		}
		eventually(t, 10*time.Second, name+": roles", func() error { return agree("node-a", a, b) })
		// Configuration sync to node-b works.
		content := []byte(name + "\n")
		if err := d.WriteFile(a, "app.conf", content, 0o644); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, name+": synced to node-b", func() error {
			got, err := os.ReadFile(filepath.Join(d.On(b), "app.conf"))
			if err != nil || !bytes.Equal(got, content) {
				return fmt.Errorf("node-b has %q (%v)", got, err)
			}
			return nil
		})
		// Replayed frames of every earlier run change nothing.
		if len(old) == 0 {
			t.Fatalf("%s: nothing captured of node-b's earlier runs", name)
		}
		before := status(t, a).HBDevs[0].Replay
		capB.replay(t, old)
		eventually(t, 3*time.Second, name+": replays dropped", func() error {
			if got := status(t, a).HBDevs[0].Replay - before; got < uint64(len(old)) {
				return fmt.Errorf("node-a counted %d replays of %d", got, len(old))
			}
			return nil
		})
		consistently(t, 3*hbInterval, name+": roles after the replay", func() error { return agree("node-a", a, b) })
		t.Logf("%s: %d frames of earlier runs replayed, all dropped as replays", name, len(old))
		return took
	}
	restart("clock 1h behind, state kept", behind, true)
	restart("clock 1h behind, state lost", behind, false)
	if !strings.Contains(b.Tail(400), "a peer knows a later epoch of this node") {
		t.Error("node-b's log does not say its epoch was raised")
	}
	restart("clock 1h ahead", ahead, true)
	restart("clock normal again", "", true)
}

// TestDuplicateSerial runs two nodes with one serial (VMs cloned from one
// template): never both holding the vMAC for more than two intervals,
// health ERROR on both, and the log names the conflict.
func TestDuplicateSerial(t *testing.T) {
	_, a, b := twoNodes(t)
	pa, pb := params(100, false), params(100, false)
	pa.Serial, pb.Serial = "HAGT0A0B0C0D0E0F", "HAGT0A0B0C0D0E0F"
	start(t, a, pa)
	start(t, b, pb)
	var both, longest time.Duration
	var since time.Time
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		oa, errA := holdsVMAC(a)
		ob, errB := holdsVMAC(b)
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		now := time.Now()
		if oa && ob {
			if since.IsZero() {
				since = now
			}
			both = now.Sub(since)
			longest = max(longest, both)
		} else {
			since = time.Time{}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("both nodes held the vMAC for at most %v (bound 2 × %v)", longest, hbInterval)
	if longest > 2*hbInterval {
		t.Errorf("both nodes held the vMAC for %v", longest)
	}
	oa, _ := holdsVMAC(a)
	ob, _ := holdsVMAC(b)
	if oa == ob {
		t.Errorf("vMAC on node-a %v, node-b %v: want exactly one", oa, ob)
	}
	for _, n := range []*lab.Node{a, b} {
		st := status(t, n)
		if st.Health != "ERROR" || !strings.Contains(strings.Join(st.Problems, "\n"), "serial conflict") {
			t.Errorf("%s: health %s, problems %q", n.Name, st.Health, st.Problems)
		}
		other := "node-b"
		if n == b {
			other = "node-a"
		}
		if log := n.Tail(200); !strings.Contains(log, "serial conflict: "+other) || !strings.Contains(log, "on ha1") {
			t.Errorf("%s's log does not name the conflict with %s on ha1", n.Name, other)
		}
		out, _ := n.Ctl("ha", "status")
		if !strings.Contains(out, "HA Health Status: ERROR") || !strings.Contains(out, "serial conflict") {
			t.Errorf("%s: ha status:\n%s", n.Name, out)
		}
	}
}

// TestPasswordMismatch: nodes with different key files report health
// ERROR with the reason on both within a few intervals.
func TestPasswordMismatch(t *testing.T) {
	l, a, b := twoNodes(t)
	pa, pb := params(200, false), params(100, false)
	pa.KeyFile, pb.KeyFile = filepath.Join(l.Dir, "key-a"), filepath.Join(l.Dir, "key-b")
	pb.Password = "not-the-lab-secret"
	start(t, a, pa)
	start(t, b, pb)
	begin := time.Now()
	for _, n := range []*lab.Node{a, b} {
		poll(t, 5*time.Second, 10*time.Millisecond, n.Name+": health ERROR", func() error {
			st := status(t, n)
			if st.Health != "ERROR" || !strings.Contains(strings.Join(st.Problems, "\n"), "fail authentication (password mismatch?)") {
				return fmt.Errorf("health %s, problems %q", st.Health, st.Problems)
			}
			return nil
		})
		t.Logf("%s reports the mismatch %v after both started", n.Name, time.Since(begin).Round(time.Millisecond))
		if !strings.Contains(n.Tail(200), "fail authentication (password mismatch?)") {
			t.Errorf("%s: no log line", n.Name)
		}
		hist, _ := n.Ctl("ha", "history")
		if !strings.Contains(hist, "fail authentication") {
			t.Errorf("%s: no history entry:\n%s", n.Name, hist)
		}
	}
	if d := time.Since(begin); d > 10*hbInterval {
		t.Errorf("reported after %v, want within a few intervals", d)
	}
}

// TestStateSurvivesRestart restarts hagentd with an empty run directory
// (a reboot clears /run): the epoch and the sync generation come back from
// the state directory.
func TestStateSurvivesRestart(t *testing.T) {
	l, d := newSyncLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}})
	a := l.Nodes["node-a"] // alone: node-b stays down
	p := syncParams(200, d, "")
	start(t, a, p)
	eventually(t, 10*time.Second, "primary", func() error {
		if r := a.Role(); r != "primary" {
			return fmt.Errorf("role %s", r)
		}
		return nil
	})
	if err := d.WriteFile(a, "app.conf", []byte("v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "generation moves", func() error {
		if g := status(t, a).Config.Generation; g == 0 {
			return fmt.Errorf("generation %d", g)
		}
		return nil
	})
	before := status(t, a)
	if before.Epoch == 0 {
		t.Fatal("status has no epoch")
	}
	if err := a.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(a.RunDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(a.RunDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"agent-state.json", "sync-state.json"} {
		if _, err := os.Stat(filepath.Join(a.StateDir, f)); err != nil {
			t.Errorf("state dir: %v", err)
		}
	}
	start(t, a, p)
	after := status(t, a)
	if after.Epoch <= before.Epoch {
		t.Errorf("epoch %d after the restart, was %d", after.Epoch, before.Epoch)
	}
	if after.Config.Generation < before.Config.Generation {
		t.Errorf("generation %d after the restart, was %d", after.Config.Generation, before.Config.Generation)
	}
	t.Logf("epoch %d → %d, generation %d → %d", before.Epoch, after.Epoch, before.Config.Generation, after.Config.Generation)
}
