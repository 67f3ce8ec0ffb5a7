package test

// Session pickup through short tenures (hagent issue 14): a firewall trio
// as the chaos campaign builds it (three members, override, the monitored
// LAN port, masquerade, nf_conntrack_tcp_loose=0, ct state invalid drop),
// long-lived connections through it, and a fault after which another
// member held the primary role for a moment only. Every connection must
// survive, and every secondary must still hold a copy of every flow.

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// diagRules count, on every node, the packets conntrack finds invalid on
// input and forwarded, and the TCP resets the node's own stack sends
// (logged when a test fails).
const diagRules = `table inet diag {
	chain diagin { type filter hook input priority -10; policy accept; ct state invalid counter; }
	chain diagfwd { type filter hook forward priority -10; policy accept; ct state invalid counter; }
	chain diagout { type filter hook output priority -10; policy accept; tcp flags & rst == rst counter; }
}
`

// pickupTrio starts the campaign's trio (priorities 200, 150, 100,
// override, port1 monitored, 100 ms × 6) with session pickup and waits for
// node-a to be primary.
func pickupTrio(t *testing.T) (*lab.Lab, []*lab.Node) {
	t.Helper()
	l := newLab(t, lab.Spec{Nodes: []string{"node-a", "node-b", "node-c"}, WAN: true})
	if err := l.SetupFirewall(); err != nil {
		t.Fatal(err)
	}
	nodes := []*lab.Node{l.Nodes["node-a"], l.Nodes["node-b"], l.Nodes["node-c"]}
	for i, n := range nodes {
		if err := nftLoad(n.NS, diagRules); err != nil {
			t.Fatal(err)
		}
		p := lab.Params{GroupID: groupID, Priority: 200 - 50*i, Override: true, Monitor: true,
			HBInterval: hbInterval, LostThreshold: lostThreshold, HelloHolddown: time.Second,
			ARPs: 2, ARPsInterval: 8 * time.Second, NoIPv6: true,
			ClusterExtra: "session_pickup: {enabled: true}\nsync: {enabled: false}"}
		start(t, n, p)
	}
	eventually(t, 15*time.Second, "initial election", func() error { return agree("node-a", nodes...) })
	return l, nodes
}

func nftLoad(ns, script string) error {
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", ns, err, out)
	}
	return nil
}

// diagCounts returns a node's diag counters.
func diagCounts(n *lab.Node) string {
	out, err := lab.Exec(n.NS, "nft", "list", "table", "inet", "diag")
	if err != nil {
		return err.Error()
	}
	var c []string
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "packets "); i >= 0 {
			c = append(c, strings.TrimSpace(line[i:]))
		}
	}
	if len(c) != 3 {
		return fmt.Sprintf("counters %q", c)
	}
	return fmt.Sprintf("invalid on input: %s; invalid forwarded: %s; resets sent: %s", c[0], c[1], c[2])
}

// tenure runs the trio with n old connections (and young ones, opened
// young before the fault), applies fault, waits for node-a to be primary
// again, and checks 4 s later that every connection echoes and every
// secondary holds a copy of every flow.
func tenure(t *testing.T, n, young int, fault func(t *testing.T, nodes []*lab.Node)) {
	l, nodes := pickupTrio(t)
	load, err := lab.StartTCPLoad(l, n, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	eventually(t, 20*time.Second, "the flows are copied", func() error {
		for _, m := range nodes[1:] {
			if s := sessionsOf(t, m); s.LocalFlows < n {
				return fmt.Errorf("%s holds %d flows, want >= %d", m.Name, s.LocalFlows, n)
			}
		}
		return nil
	})
	var yl *lab.TCPLoad
	if young > 0 {
		if yl, err = lab.StartTCPLoadPort(l, young, 100*time.Millisecond, lab.LoadPort+10); err != nil {
			t.Fatal(err)
		}
		defer yl.Stop()
	}
	time.Sleep(2 * time.Second)
	if r := load.Report(time.Second); r.Errors > 0 || r.Stalled > 0 {
		t.Fatalf("before the fault: %s", r)
	}
	load.ResetStalls()
	fault(t, nodes)
	eventually(t, 10*time.Second, "node-a primary again", func() error { return agree("node-a", nodes...) })
	time.Sleep(4 * time.Second)
	r := load.Report(time.Second)
	broke := r.Resets + r.Errors + r.Stalled
	msg := fmt.Sprintf("%d connections: %s", n, r)
	if yl != nil {
		yr := yl.Report(time.Second)
		broke += yr.Resets + yr.Errors + yr.Stalled
		msg += fmt.Sprintf("; %d young ones: %s", young, yr)
	}
	var flows []string
	for _, m := range nodes {
		flows = append(flows, fmt.Sprintf("%s %d", m.Name, sessionsOf(t, m).LocalFlows))
	}
	t.Logf("measured: %s; flows held: %s", msg, strings.Join(flows, ", "))
	if broke != 0 {
		t.Errorf("connections broke: %s", msg)
	}
	for _, m := range nodes[1:] {
		if got := sessionsOf(t, m).LocalFlows; got < n+young {
			t.Errorf("%s holds %d flows, want >= %d: the next failover loses the others", m.Name, got, n+young)
		}
	}
	if t.Failed() || os.Getenv("HAGENT_PICKUP_LOG") != "" {
		for _, m := range nodes {
			t.Logf("%s: %s", m.Name, diagCounts(m))
			hist, _ := m.Ctl("ha", "history")
			t.Logf("%s history:\n%s", m.Name, hist)
		}
	}
}

// TestPickupFrozenPrimary: the primary is SIGSTOPped for a bit more than
// the detection time; node-b takes over for a moment and lets go when
// node-a wakes (override, higher priority), node-a having held the vMAC
// throughout. The packets node-b forwarded left node-a's own entries out
// of window: every connection stalled (200 of 200, old and opened 2 s
// before alike) until node-a renewed them.
func TestPickupFrozenPrimary(t *testing.T) {
	tenure(t, 150, 50, func(t *testing.T, nodes []*lab.Node) {
		a := nodes[0]
		if err := a.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(hbInterval*lostThreshold + 100*time.Millisecond)
		if err := a.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPickupShortDemotion: the primary steps down (ha failover set) and
// takes the role back (unset) as soon as node-b holds it, before node-b's
// bulk copy can have replaced node-a's entries: the removal of the
// cluster address made the kernel delete node-a's own masqueraded
// entries, so node-a came back without them, and its bulk copy, empty,
// swept the copies of the others.
func TestPickupShortDemotion(t *testing.T) {
	tenure(t, 200, 0, func(t *testing.T, nodes []*lab.Node) {
		a, b := nodes[0], nodes[1]
		mustCtl(a, "ha", "failover", "set")
		poll(t, 5*time.Second, 5*time.Millisecond, "node-b takes over", func() error {
			if r := b.Role(); r != "primary" {
				return fmt.Errorf("node-b is %q", r)
			}
			return nil
		})
		mustCtl(a, "ha", "failover", "unset")
	})
}

// TestPickupShortTenureFlap: the primary's monitored LAN port goes down
// for 1.2 s (the campaign's data flap), node-b takes over, node-a takes
// the role back when its port returns.
func TestPickupShortTenureFlap(t *testing.T) {
	tenure(t, 200, 0, func(t *testing.T, nodes []*lab.Node) {
		a, b := nodes[0], nodes[1]
		t0 := time.Now()
		if err := a.SetLink("port1", false); err != nil {
			t.Fatal(err)
		}
		poll(t, 5*time.Second, 10*time.Millisecond, "node-b takes over", func() error {
			if r := b.Role(); r != "primary" {
				return fmt.Errorf("node-b is %q", r)
			}
			return nil
		})
		time.Sleep(time.Until(t0.Add(1200 * time.Millisecond)))
		if err := a.SetLink("port1", true); err != nil {
			t.Fatal(err)
		}
	})
}
