package agent

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/heartbeat"
)

// fakePoll lets a test set the carrier of direct hbdevs.
type fakePoll struct{ fakeLinks }

func (p *fakePoll) poll(ctx context.Context, names []string, every, debounce time.Duration, fn func(string, bool)) error {
	return p.watch(ctx, names, fn)
}

func TestCarrierLoss(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	ca := testConfigLost(t, "a", 200, false, 50) // 50 × 20ms = 1s threshold
	cb := testConfigLost(t, "b", 100, false, 50)
	ca.Cluster.HBDevs[0].Direct, cb.Cluster.HBDevs[0].Direct = true, true
	cb.Cluster.CarrierDebounce = 30 * time.Millisecond
	a := startNode(t, mem, ca)
	pb := &fakePoll{}
	b := startNode(t, mem, cb, func(o *Options) { o.PollCarrier = pb.poll })
	eventually(t, 3*time.Second, "a primary", func() bool {
		return a.status(t).Role == "primary" && b.status(t).Role == "secondary"
	})
	eventually(t, time.Second, "poller running", func() bool { return pb.set("ha1", true) })
	eventually(t, time.Second, "watcher running", func() bool { return b.links.set("ha1", true) })

	// A carrier flap reported by the link watcher (not debounced by the
	// poll) shorter than the debounce: nothing.
	b.links.set("ha1", false)
	time.Sleep(5 * time.Millisecond)
	b.links.set("ha1", true)
	time.Sleep(100 * time.Millisecond)
	if st := b.status(t); st.Role != "secondary" || !alive(st, "a") {
		t.Fatalf("after a 5ms flap (debounce 30ms): role %s, a alive %v", st.Role, alive(st, "a"))
	}
	// A watcher loss that lasts: lost after the debounce.
	mem.Isolate("a")
	start := time.Now()
	b.links.set("ha1", false)
	eventually(t, 500*time.Millisecond, "b primary by carrier (watcher)", func() bool { return b.status(t).Role == "primary" })
	if took := time.Since(start); took < 30*time.Millisecond {
		t.Fatalf("took over after %v, before the debounce", took)
	}
	mem.Recover("a")
	b.links.set("ha1", true)
	eventually(t, 2*time.Second, "a primary again", func() bool {
		sa, sb := a.status(t), b.status(t)
		return sa.Role == "primary" && sb.Role == "secondary" && alive(sb, "a")
	})

	// a dies, the carrier poll reports the (already debounced) loss: lost
	// at once, not after the 1s threshold.
	mem.Isolate("a")
	start = time.Now()
	pb.set("ha1", false)
	eventually(t, 500*time.Millisecond, "b primary by carrier", func() bool { return b.status(t).Role == "primary" })
	t.Logf("b primary %v after the polled carrier loss (threshold 1s)", time.Since(start).Round(time.Millisecond))
	m := member(b.status(t), "a")
	if m == nil || m.LostBy != "carrier" || m.LostWhy != "carrier down on ha1" {
		t.Fatalf("a in b's view: %+v", m)
	}
	if !hasEvent(b, "lost", "lost: a, carrier down on ha1") || !strings.Contains(b.status(t).Reason, "lost: a, carrier down on ha1") {
		t.Fatalf("history or reason without the carrier: %q", b.status(t).Reason)
	}
	// a is back: its heartbeat undoes the loss; one primary (a, priority).
	mem.Recover("a")
	pb.set("ha1", true)
	eventually(t, 2*time.Second, "a primary again", func() bool {
		sa, sb := a.status(t), b.status(t)
		return sa.Role == "primary" && sb.Role == "secondary" && alive(sb, "a")
	})
}

// slowLink delivers every frame of its link d late (in order): the copy of
// each heartbeat on it always comes after the one on the other hbdev, as a
// duplicate.
type slowLink struct {
	heartbeat.Link
	d time.Duration
}

func (l slowLink) Recv(buf []byte) (int, net.HardwareAddr, error) {
	n, from, err := l.Link.Recv(buf)
	time.Sleep(l.d)
	return n, from, err
}

// TestCarrierHeardOnSecondHBDev: a peer heard on two direct hbdevs is not
// lost when the carrier of one goes, also when every heartbeat comes
// first on that one (the other hbdev's copies are duplicates of the replay
// guard, and must still count as heard there).
func TestCarrierHeardOnSecondHBDev(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	two := func(c *config.Config) {
		c.Cluster.HBDevs = []config.HBDev{{Name: "ha1", Priority: 50, Direct: true}, {Name: "ha2", Priority: 40, Direct: true}}
		c.Cluster.CarrierDebounce = 10 * time.Millisecond
	}
	ca := testConfigLost(t, "a", 200, false, 50) // 1 s threshold
	cb := testConfigLost(t, "b", 100, false, 50)
	two(ca)
	two(cb)
	links := func(node string, slow bool) func(*Options) {
		return func(o *Options) {
			var l2 heartbeat.Link = mem.Link("hb2", node, "ha2")
			if slow {
				l2 = slowLink{l2, 3 * time.Millisecond}
			}
			o.Links = []heartbeat.Link{mem.Link("hb1", node, "ha1"), l2}
		}
	}
	a := startNode(t, mem, ca, links("a", false))
	pb := &fakePoll{}
	b := startNode(t, mem, cb, links("b", true), func(o *Options) { o.PollCarrier = pb.poll })
	eventually(t, 3*time.Second, "a primary", func() bool {
		return a.status(t).Role == "primary" && b.status(t).Role == "secondary"
	})
	eventually(t, time.Second, "poller running", func() bool { return pb.set("ha1", true) && pb.set("ha2", true) })
	time.Sleep(200 * time.Millisecond) // heard on both for a while
	mem.Cut("hb1")
	pb.set("ha1", false)
	time.Sleep(300 * time.Millisecond) // well past the debounce
	if st := b.status(t); st.Role != "secondary" || !alive(st, "a") || hasEvent(b, "lost", "lost: a") {
		t.Fatalf("ha1's carrier went with ha2 still carrying a's heartbeats: b is %s, a alive %v, lost in the history %v (%s)", st.Role, alive(st, "a"), hasEvent(b, "lost", "lost: a"), st.Reason)
	}
	// Both gone: lost by carrier at once. The slow link first delivers
	// what it read before the cut (a frame cannot come in after the
	// carrier is gone); delivered after the loss, that frame brought a
	// back whenever the cut fell within 3 ms after one of a's heartbeats.
	mem.Cut("hb2")
	time.Sleep(20 * time.Millisecond)
	pb.set("ha2", false)
	eventually(t, 500*time.Millisecond, "b primary by carrier", func() bool { return b.status(t).Role == "primary" })
	if m := member(b.status(t), "a"); m == nil || m.LostBy != "carrier" {
		t.Fatalf("a in b's view: %+v", m)
	}
}
