package agent

import (
	"sync"
	"testing"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/heartbeat"
)

// fakePeer is a member made of frames: a test sets its state, and a
// goroutine sends it every 20 ms (the test configs' hb_interval).
type fakePeer struct {
	mu    sync.Mutex
	f     heartbeat.Frame
	sent  int
	stop  chan struct{}
	done  chan struct{}
	link  heartbeat.Link
	codec *heartbeat.Codec
}

func startFakePeer(t *testing.T, mem *heartbeat.MemNetwork, f heartbeat.Frame) *fakePeer {
	t.Helper()
	p := &fakePeer{f: f, stop: make(chan struct{}), done: make(chan struct{}),
		link: mem.Link("hb", f.Node, "ha1"), codec: heartbeat.NewCodec([]byte(testKey), 10)}
	go func() {
		defer close(p.done)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			p.mu.Lock()
			p.f.Seq++
			b, err := p.codec.Append(nil, &p.f)
			p.sent++
			p.mu.Unlock()
			if err != nil {
				t.Error(err)
				return
			}
			_ = p.link.Send(b)
			select {
			case <-p.stop:
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(func() { close(p.stop); <-p.done })
	return p
}

// set changes the peer's state and returns after it has been sent in two
// more frames.
func (p *fakePeer) set(t *testing.T, fn func(*heartbeat.Frame)) {
	t.Helper()
	p.mu.Lock()
	fn(&p.f)
	n := p.sent
	p.mu.Unlock()
	eventually(t, 2*time.Second, "the peer sends its new state", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.sent >= n+2
	})
}

// TestAgentTakeoverCounts: the agent sends its takeover counts of both
// vclusters (TLVs 4 and 5) and feeds a peer's counts to the right
// vcluster's election: a count that changes while the peer stays
// secondary makes that vcluster's primary announce once.
func TestAgentTakeoverCounts(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	a := startVCNode(t, mem, "a", 200, 200)
	obs := mem.Link("hb", "observer", "ha1")
	t.Cleanup(func() { _ = obs.Close() })
	eventually(t, 5*time.Second, "a primary of both vclusters", func() bool { return a.net.Owned() && a.net2.Owned() })
	codec := heartbeat.NewCodec([]byte(testKey), 10)
	buf := make([]byte, 4096)
	eventually(t, 2*time.Second, "a's frame with both counts at 1", func() bool {
		_ = obs.(*heartbeat.MemLink).SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err := obs.Recv(buf)
		var f heartbeat.Frame
		if err != nil || codec.Decode(buf[:n], &f) != nil || f.Node != "a" {
			return false
		}
		return f.Takeovers == 1 && f.HasVC2 && f.VC2.Takeovers == 1
	})

	sec := uint8(cluster.RoleSecondary)
	p := startFakePeer(t, mem, heartbeat.Frame{GroupID: 10, VCluster: 1, Role: sec, Priority: 10, Flags: heartbeat.FlagOverride,
		Node: "p", Serial: "SN-p", Primary: "SN-a", Epoch: 1,
		HasVC2: true, VC2: heartbeat.VClusterState{VCluster: 2, Role: sec, Priority: 10, Flags: heartbeat.FlagOverride, Primary: "SN-a"}})
	// p is new: each vcluster announces on its first adverts.
	eventually(t, 3*time.Second, "a announces the new peer in both vclusters", func() bool {
		_, _, _, n1 := a.net.counts()
		_, _, _, n2 := a.net2.counts()
		return n1 >= 3 && n2 >= 3
	})
	p.set(t, func(*heartbeat.Frame) {})
	_, _, _, base1 := a.net.counts()
	_, _, _, base2 := a.net2.counts()
	if base1 != 3 || base2 != 3 {
		t.Fatalf("announces for a new peer: %d, %d; want 3 each", base1, base2)
	}

	// p held vcluster 1's vMAC unheard: its count says so.
	p.set(t, func(f *heartbeat.Frame) { f.Takeovers = 1 })
	// Then vcluster 2's: the sync point that all frames of count 1 were stepped.
	p.set(t, func(f *heartbeat.Frame) { f.VC2.Takeovers = 1 })
	eventually(t, 2*time.Second, "vcluster 2 announces", func() bool {
		_, _, _, n2 := a.net2.counts()
		return n2 > base2
	})
	_, _, _, n1 := a.net.counts()
	_, _, _, n2 := a.net2.counts()
	if n1 != base1+1 || n2 != base2+1 {
		t.Fatalf("announces after one change in each vcluster: %d, %d; want %d, %d", n1, n2, base1+1, base2+1)
	}
	if r1, r2 := roles(a.status(t)); r1 != "primary" || r2 != "primary" {
		t.Fatalf("a is %s/%s", r1, r2)
	}
}
