package test

// Session pickup through short tenures (hagent issue 14): a firewall trio
// as the chaos campaign builds it (three members, override, the monitored
// LAN port, masquerade, nf_conntrack_tcp_loose=0), long-lived connections
// through it, and a fault that lets another member hold the primary role
// for a moment only.

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hagent/hagent/sessionsync"
	"github.com/hagent/hagent/test/lab"
)

// diagRules count, on every node, the packets conntrack finds invalid and
// the TCP resets the node's own stack sends.
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

// diagCounts returns a node's diag counters: invalid on input, invalid
// forwarded, resets sent.
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
	return fmt.Sprintf("input invalid %v", c)
}

// waitCopies waits until every secondary holds at least n flows.
func waitCopies(t *testing.T, n int, nodes ...*lab.Node) {
	t.Helper()
	eventually(t, 20*time.Second, "the flows are copied", func() error {
		for _, m := range nodes {
			if s := sessionsOf(t, m); s.LocalFlows < n {
				return fmt.Errorf("%s holds %d flows, want >= %d", m.Name, s.LocalFlows, n)
			}
		}
		return nil
	})
}

func logHistories(t *testing.T, nodes []*lab.Node, since time.Time) {
	for _, n := range nodes {
		t.Logf("%s: %s", n.Name, diagCounts(n))
		hist, _ := n.Ctl("ha", "history")
		lines := strings.Split(hist, "\n")
		if len(lines) > 25 {
			lines = lines[len(lines)-25:]
		}
		t.Logf("%s history:\n%s", n.Name, strings.Join(lines, "\n"))
	}
}

// TestPickupShortTenureFlap: the primary's monitored LAN port goes down
// for 1.2 s, node-b takes over, node-a takes the role back when its port
// returns; every connection through the trio must survive.
func TestPickupShortTenureFlap(t *testing.T) {
	l, nodes := pickupTrio(t)
	a, b := nodes[0], nodes[1]
	const n = 200
	load, err := lab.StartTCPLoad(l, n, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	waitCopies(t, n, nodes[1], nodes[2])
	time.Sleep(time.Second)
	if r := load.Report(time.Second); r.Errors > 0 || r.Stalled > 0 {
		t.Fatalf("before the fault: %s", r)
	}
	load.ResetStalls()
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
	eventually(t, 10*time.Second, "node-a takes the role back", func() error { return agree("node-a", nodes...) })
	time.Sleep(4 * time.Second)
	r := load.Report(time.Second)
	t.Logf("measured: 1.2 s flap of the primary's monitored port, %d connections: %s", n, r)
	if r.Resets != 0 || r.Errors != 0 || r.Stalled != 0 {
		t.Errorf("connections broke: %s", r)
		logHistories(t, nodes, t0)
	} else if os.Getenv("HAGENT_PICKUP_LOG") != "" {
		logHistories(t, nodes, t0)
	}
}

// TestPickupFrozenPrimaryYoung: connections opened 2 s before the
// primary is SIGSTOPped for a bit more than the detection time must
// survive its wake-up, as must the older ones.
func TestPickupFrozenPrimaryYoung(t *testing.T) {
	l, nodes := pickupTrio(t)
	a := nodes[0]
	const n, young = 150, 50
	load, err := lab.StartTCPLoad(l, n, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	waitCopies(t, n, nodes[1], nodes[2])
	yl, err := lab.StartTCPLoadPort(l, young, 200*time.Millisecond, lab.LoadPort+10)
	if err != nil {
		t.Fatal(err)
	}
	defer yl.Stop()
	time.Sleep(2 * time.Second)
	if r := load.Report(time.Second); r.Errors > 0 || r.Stalled > 0 {
		t.Fatalf("before the fault: %s", r)
	}
	load.ResetStalls()
	yl.ResetStalls()
	t0 := time.Now()
	if err := a.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	if err := a.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "node-a primary again", func() error { return agree("node-a", nodes...) })
	if os.Getenv("HAGENT_EXP_RENEW") != "" {
		time.Sleep(500 * time.Millisecond)
		fl, err := a.Flows()
		if err != nil {
			t.Fatal(err)
		}
		var recs []sessionsync.Record
		for _, f := range fl {
			if f.Proto == sessionsync.ProtoTCP {
				recs = append(recs, sessionsync.Record{Op: sessionsync.OpReplace, Flow: f})
			}
		}
		t.Logf("renewing %d flows: %v", len(recs), a.ApplyFlows(recs))
	}
	time.Sleep(4 * time.Second)
	r, yr := load.Report(time.Second), yl.Report(time.Second)
	t.Logf("measured: 700 ms SIGSTOP of the primary: old %s; young %s", r, yr)
	if r.Resets+r.Errors+r.Stalled+yr.Resets+yr.Errors+yr.Stalled != 0 {
		t.Errorf("connections broke: old %s; young %s", r, yr)
		logHistories(t, nodes, t0)
	}
}

// TestPickupShortDemotion: the primary steps down (ha failover set) and
// comes back (unset) a moment later, before the new primary's bulk copy
// can have replaced its own entries.
func TestPickupShortDemotion(t *testing.T) {
	l, nodes := pickupTrio(t)
	a, b := nodes[0], nodes[1]
	const n = 200
	load, err := lab.StartTCPLoad(l, n, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	waitCopies(t, n, nodes[1], nodes[2])
	time.Sleep(time.Second)
	load.ResetStalls()
	t0 := time.Now()
	mustCtl(a, "ha", "failover", "set")
	poll(t, 5*time.Second, 5*time.Millisecond, "node-b takes over", func() error {
		if r := b.Role(); r != "primary" {
			return fmt.Errorf("node-b is %q", r)
		}
		return nil
	})
	if d, err := time.ParseDuration(os.Getenv("HAGENT_DEMOTION")); err == nil {
		time.Sleep(d)
	}
	mustCtl(a, "ha", "failover", "unset")
	eventually(t, 10*time.Second, "node-a takes the role back", func() error { return agree("node-a", nodes...) })
	time.Sleep(4 * time.Second)
	r := load.Report(time.Second)
	t.Logf("measured: short demotion of the primary, %d connections: %s; %s", n, r, flowCounts(t, nodes))
	if r.Resets != 0 || r.Errors != 0 || r.Stalled != 0 {
		t.Errorf("connections broke: %s", r)
	}
	checkCopies(t, n, nodes[1:]...)
	if t.Failed() || os.Getenv("HAGENT_PICKUP_LOG") != "" {
		logHistories(t, nodes, t0)
	}
}

// flowCounts says how many flows each node's table holds.
func flowCounts(t *testing.T, nodes []*lab.Node) string {
	var out []string
	for _, n := range nodes {
		out = append(out, fmt.Sprintf("%s %d flows", n.Name, sessionsOf(t, n).LocalFlows))
	}
	return strings.Join(out, ", ")
}

// checkCopies fails t unless every given secondary holds copies of at
// least n flows (the next failover would find them).
func checkCopies(t *testing.T, n int, nodes ...*lab.Node) {
	t.Helper()
	for _, m := range nodes {
		if got := sessionsOf(t, m).LocalFlows; got < n {
			t.Errorf("%s holds %d flows, want >= %d: the next failover loses the others", m.Name, got, n)
		}
	}
}
