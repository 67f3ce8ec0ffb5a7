package test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// TestMgmtInterface: two members with a management interface "mgmt" on a
// management bridge, whose client sits behind the gateway in another
// subnet, while each member's main routing table sends everything else
// to the data side. Each member's management address answers the client
// in every role: at the start (node-a primary, node-b secondary), with
// node-a crashed (node-b primary), after node-a returns (primary again by
// priority), after something deleted node-b's policy rule (put back),
// with node-a stopped gracefully (node-b primary; node-a's rules gone)
// and after it returns once more. All along the cluster address moves and the management
// addresses never do, and the mgmt interfaces keep their permanent MACs.
// The control: before hagentd runs, the same address on the same
// interface gets no answer (the reply leaves by the main table's default
// route): the routing hagentd installs is what makes it answer.
func TestMgmtInterface(t *testing.T) {
	l := newLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}})
	mc, err := l.BuildMgmt()
	if err != nil {
		t.Fatalf("management network: %v", err)
	}
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	nodes := []*lab.Node{a, b}
	perm := map[string]string{}
	for _, n := range nodes {
		// The main table's default route goes to the data side, as on a
		// firewall; nothing answers there.
		if err := lab.IP("-n", n.NS, "route", "add", "default", "via", "10.9.0.1", "dev", "port1", "onlink"); err != nil {
			t.Fatal(err)
		}
		mac, err := n.MAC("mgmt")
		if err != nil {
			t.Fatal(err)
		}
		perm[n.Name] = mac.String()
	}
	answers := func(n *lab.Node) error {
		addr := lab.MgmtAddr(n.Index)
		if out, err := lab.Exec(mc, "ping", "-c", "1", "-W", "1", addr); err != nil {
			return fmt.Errorf("%s's management address %s does not answer: %v %s", n.Name, addr, err, out)
		}
		return nil
	}
	// mgmtAddrs lists the 10.8.0.x addresses of n's interfaces.
	mgmtAddrs := func(n *lab.Node, ifname string) []string {
		as, _ := n.Addrs(ifname)
		var out []string
		for _, s := range as {
			if strings.HasPrefix(s, "10.8.0.") {
				out = append(out, s)
			}
		}
		return out
	}
	// steady checks what never changes: permanent MACs, each management
	// address on its own node's mgmt only, none on a data interface.
	steady := func(phase string) {
		t.Helper()
		for _, n := range nodes {
			mac, err := n.MAC("mgmt")
			if err != nil || mac.String() != perm[n.Name] {
				t.Fatalf("%s: %s's mgmt MAC is %v (%v), want the permanent %s", phase, n.Name, mac, err, perm[n.Name])
			}
			if got, want := mgmtAddrs(n, "mgmt"), []string{lab.MgmtAddr(n.Index) + "/24"}; !slices.Equal(got, want) {
				t.Fatalf("%s: %s's mgmt has %v, want %v", phase, n.Name, got, want)
			}
			if got := mgmtAddrs(n, "port1"); len(got) > 0 {
				t.Fatalf("%s: %s's port1 has management addresses %v", phase, n.Name, got)
			}
		}
	}
	both := func(phase string, who ...*lab.Node) {
		t.Helper()
		for _, n := range who {
			eventually(t, 10*time.Second, phase+": "+n.Name+" answers on its management address", func() error { return answers(n) })
		}
		steady(phase)
	}

	// Control: the address alone, without hagentd's routing.
	if err := lab.IP("-n", a.NS, "addr", "add", lab.MgmtAddr(0)+"/24", "dev", "mgmt"); err != nil {
		t.Fatal(err)
	}
	if err := a.SetLink("mgmt", true); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the gateway reaches node-a's mgmt on its subnet", func() error {
		_, err := lab.Exec(l.Switch, "ping", "-c", "1", "-W", "1", lab.MgmtAddr(0))
		return err
	})
	if err := answers(a); err == nil {
		t.Fatal("control: node-a's management address answers the client before hagentd routes it")
	}

	p := func(n *lab.Node, prio int) lab.Params {
		pp := params(prio, false)
		pp.Monitor = true
		pp.ClusterExtra = "mgmt_interface: mgmt\n"
		pp.NodeExtra = fmt.Sprintf("mgmt: {addresses: [%s/24], gateway: %s, table: 200}\n", lab.MgmtAddr(n.Index), lab.MgmtGateway)
		return pp
	}
	start(t, a, p(a, 200))
	start(t, b, p(b, 100))
	eventually(t, 10*time.Second, "initial election", func() error { return agree("node-a", a, b) })
	both("node-a primary", a, b)
	if !a.HasClusterAddr() || b.HasClusterAddr() {
		t.Fatalf("the cluster address is not on node-a alone")
	}
	st := status(t, a)
	if st.Mgmt == nil || st.Mgmt.Interface != "mgmt" || st.Mgmt.MAC != perm["node-a"] || !st.Mgmt.Routed {
		t.Fatalf("node-a's status: mgmt %+v", st.Mgmt)
	}
	if out, _ := a.Ctl("ha", "status"); !strings.Contains(out, "Management interface: mgmt "+perm["node-a"]) || !strings.Contains(out, "table 200, routed") {
		t.Fatalf("ha status does not show the management interface:\n%s", out)
	}
	if out, _ := a.Ctl("ha", "exposure"); !strings.Contains(out, "management interface mgmt") {
		t.Fatalf("ha exposure does not show the management interface:\n%s", out)
	}

	a.Crash()
	eventually(t, 10*time.Second, "node-b takes over from the crashed node-a", func() error { return agree("node-b", b) })
	both("node-a crashed, node-b primary", b)
	if !b.HasClusterAddr() {
		t.Fatal("the cluster address did not move to node-b")
	}

	if err := a.Revive(); err != nil {
		t.Fatal(err)
	}
	start(t, a, p(a, 200))
	// Within uptime_diff_margin of node-b, node-a's priority wins again.
	eventually(t, 15*time.Second, "node-a returns and takes back", func() error { return agree("node-a", a, b) })
	both("node-a back, primary again", a, b)

	// Something deletes node-b's rule: it is put back.
	if err := lab.IP("-n", b.NS, "rule", "del", "from", lab.MgmtAddr(1), "lookup", "200"); err != nil {
		t.Fatal(err)
	}
	both("node-b's rule deleted", b)
	if st := status(t, b); st.Mgmt == nil || st.Mgmt.Restores == 0 {
		t.Fatalf("node-b's status counts no restore: %+v", st.Mgmt)
	}

	if err := a.Stop(10 * time.Second); err != nil {
		t.Fatalf("graceful stop of node-a: %v", err)
	}
	eventually(t, 10*time.Second, "node-b takes over from the stopped node-a", func() error { return agree("node-b", b) })
	both("node-a stopped, node-b primary", b)
	if !b.HasClusterAddr() || a.HasClusterAddr() {
		t.Fatal("the cluster address did not move to node-b")
	}
	if out, err := lab.Exec(a.NS, "ip", "rule", "show"); err != nil || strings.Contains(out, "lookup 200") {
		t.Fatalf("node-a's policy rule outlived its hagentd: %v\n%s", err, out)
	}
	start(t, a, p(a, 200))
	eventually(t, 15*time.Second, "node-a returns and takes back", func() error { return agree("node-a", a, b) })
	both("node-a back again, primary", a, b)
	if !a.HasClusterAddr() || b.HasClusterAddr() {
		t.Fatalf("the cluster address is not on node-a alone at the end")
	}
}
