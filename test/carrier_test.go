package test

// Carrier detection on direct heartbeat cables (hbdev direct: true): a dead
// peer behind a direct cable is lost when the cable loses carrier, not
// after hb_interval × hb_lost_threshold.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hagent/hagent/test/lab"
)

// carrierParams are FGCP's default timers (200 ms × 6 = 1.2 s detection).
func carrierParams(priority int, direct bool) lab.Params {
	p := params(priority, false)
	p.HBInterval, p.LostThreshold = 200*time.Millisecond, 6
	p.Direct = direct
	return p
}

func startCarrierPair(t *testing.T, a, b *lab.Node, direct bool) {
	t.Helper()
	startPair(t, a, b, carrierParams(200, direct), carrierParams(100, direct))
}

// TestCarrierCrash: the primary dies (links down, SIGKILL). With direct
// hbdevs the client's outage stays below 10 ms; without (the control) the
// survivor still waits for the lost threshold.
func TestCarrierCrash(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			l, a, b := twoNodes(t)
			startCarrierPair(t, a, b, direct)
			p := startProbeEvery(t, l, time.Millisecond)
			crashed := time.Now()
			a.Crash()
			eventually(t, 5*time.Second, "node-b takes over", func() error {
				if r := b.Role(); r != "primary" {
					return fmt.Errorf("node-b is %q", r)
				}
				return nil
			})
			out := p.outage(t, fmt.Sprintf("crash, direct=%v, 200ms x 6", direct), crashed)
			m, _ := member(status(t, b), "node-a")
			hist, _ := b.Ctl("ha", "history")
			if direct {
				if out >= 10*time.Millisecond {
					t.Errorf("outage %v, want < 10ms", out)
				}
				if m.LostBy != "carrier" || m.LostWhy != "carrier down on ha1" {
					t.Errorf("node-a in node-b's view: lost_by %q, lost_why %q", m.LostBy, m.LostWhy)
				}
				if !strings.Contains(hist, "lost: node-a, carrier down on ha1") {
					t.Errorf("history does not name the carrier:\n%s", hist)
				}
			} else {
				if out < 900*time.Millisecond {
					t.Errorf("outage %v without direct hbdevs: the threshold (1.2s) was not waited for", out)
				}
				if m.LostBy != "heartbeat" {
					t.Errorf("node-a in node-b's view: lost_by %q, want heartbeat", m.LostBy)
				}
			}
			if err := owns(b); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestCarrierOneOfTwo: two direct hbdevs, one loses carrier: the peer is
// still heard on the other, nothing fails over.
func TestCarrierOneOfTwo(t *testing.T) {
	l := newLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}, HBLinks: 2})
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	startCarrierPair(t, a, b, true)
	if err := a.SetLink("ha1", false); err != nil {
		t.Fatal(err)
	}
	consistently(t, 2*time.Second, "no failover with ha2 alive", func() error { return agree("node-a", a, b) })
	for _, n := range []*lab.Node{a, b} {
		st := status(t, n)
		for _, m := range st.Members {
			if !m.Alive {
				t.Errorf("%s sees %s lost (%s)", n.Name, m.Node, m.LostWhy)
			}
		}
	}
}

// flap takes ha1 of n down and up again with netlink, down for d.
func flap(t *testing.T, n *lab.Node, d time.Duration) time.Duration {
	t.Helper()
	var took time.Duration
	err := lab.InNS(n.NS, func() error {
		link, err := netlink.LinkByName("ha1")
		if err != nil {
			return err
		}
		begin := time.Now()
		if err := netlink.LinkSetDown(link); err != nil {
			return err
		}
		if d > 0 {
			time.Sleep(d)
		}
		err = netlink.LinkSetUp(link)
		took = time.Since(begin)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return took
}

// TestCarrierFlap: a flap shorter than the debounce (default 4ms) changes
// no role; a longer one fails over (both primary: each side lost the
// other's carrier, as with a pulled cable), and once the link is back
// there is one primary within one interval.
func TestCarrierFlap(t *testing.T) {
	_, a, b := twoNodes(t)
	startCarrierPair(t, a, b, true)
	// Longer than a carrier sample (every 2ms), so it is likely seen,
	// shorter than the debounce.
	short := flap(t, a, 1500*time.Microsecond)
	t.Logf("short flap: ha1 down for %v", short)
	if short >= 4*time.Millisecond {
		t.Skipf("the flap took %v, not below the 4ms debounce (machine too slow)", short)
	}
	consistently(t, time.Second, "no role change after a short flap", func() error { return agree("node-a", a, b) })
	for _, n := range []*lab.Node{a, b} {
		if hist, _ := n.Ctl("ha", "history"); strings.Contains(hist, "carrier down") {
			t.Errorf("%s counted a %v flap:\n%s", n.Name, short, hist)
		}
	}

	// Longer than the debounce, shorter than the lost threshold.
	var upAt time.Time
	err := lab.InNS(a.NS, func() error {
		link, err := netlink.LinkByName("ha1")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetDown(link); err != nil {
			return err
		}
		if err := lab.EventuallyEvery(2*time.Second, 2*time.Millisecond, func() error {
			if r := b.Role(); r != "primary" {
				return fmt.Errorf("node-b is %q", r)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("no failover while the carrier is down: %w", err)
		}
		err = netlink.LinkSetUp(link)
		upAt = time.Now()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, 3*time.Second, 5*time.Millisecond, "one primary after the link returns", func() error { return agree("node-a", a, b) })
	took := time.Since(upAt)
	t.Logf("one primary %v after the link came back (hb_interval 200ms)", took.Round(time.Millisecond))
	// One interval, plus the veth's carrier coming up and the polling.
	if took > 200*time.Millisecond+100*time.Millisecond {
		t.Errorf("one primary only %v after the link returned, want within one interval", took)
	}
}
