package test

// The unicast heartbeat (cluster.unicast_hb) across a routed hop: the two
// nodes' heartbeat interfaces are in different subnets with a router
// namespace between them, so no L2 frame can pass.

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

func TestUnicastHeartbeat(t *testing.T) {
	l, d := newSyncLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}, RoutedHB: true})
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	pa, pb := syncParams(200, d, ""), syncParams(100, d, "")
	startPair(t, a, b, pa, pb)

	// Only the configured sockets: UDP on this node's address, ports 6065
	// (heartbeat) and 6066 (sync), no wildcard bind.
	checkSockets := func(n *lab.Node, hb, sync int) {
		t.Helper()
		out, err := lab.Exec(n.NS, "ss", "-H", "-a", "-n", "-u", "-p")
		if err != nil {
			t.Fatal(err)
		}
		var lines []string // hagentd's (the test's echo responder aside)
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.Contains(l, `"hagentd"`) {
				lines = append(lines, l)
			}
		}
		ss := strings.Join(lines, "\n")
		want := []string{fmt.Sprintf("%s:%d", lab.UnicastAddr(n.Index), hb), fmt.Sprintf("%s:%d", lab.UnicastAddr(n.Index), sync)}
		if len(lines) != 2 {
			t.Errorf("%s: UDP sockets:\n%s\nwant exactly %v", n.Name, ss, want)
		}
		for _, w := range want {
			if !strings.Contains(ss, w) {
				t.Errorf("%s: no UDP socket on %s:\n%s", n.Name, w, ss)
			}
		}
		exp, _ := n.Ctl("ha", "exposure")
		for _, w := range want {
			if !strings.Contains(exp, w) {
				t.Errorf("%s: ha exposure does not list %s:\n%s", n.Name, w, exp)
			}
		}
	}
	checkSockets(a, 6065, 6066)
	checkSockets(b, 6065, 6066)

	// Configuration sync works over it.
	if err := d.WriteFile(a, "app.conf", []byte("over udp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "synced to node-b", func() error { return treesEqual(d, a, b) })

	// Datagrams from an address that is not a peer: dropped before any
	// crypto, counted, nothing changes. The router is not a peer.
	before := status(t, b)
	err := lab.InNS(l.Router, func() error {
		c, err := net.Dial("udp", lab.UnicastAddr(b.Index)+":6065")
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < 20; i++ {
			if _, err := c.Write([]byte("HA forged heartbeat from a stranger")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "foreign datagrams counted", func() error {
		st := status(t, b)
		if len(st.HBDevs) != 1 || st.HBDevs[0].Foreign < 20 {
			return fmt.Errorf("hbdevs %+v", st.HBDevs)
		}
		if st.HBDevs[0].BadAuth != before.HBDevs[0].BadAuth || st.HBDevs[0].Dropped != before.HBDevs[0].Dropped {
			return fmt.Errorf("a foreign datagram reached the decoder: %+v", st.HBDevs[0])
		}
		return nil
	})
	consistently(t, 3*hbInterval, "roles unchanged", func() error { return agree("node-a", a, b) })
	if !strings.Contains(b.Tail(100), "not a unicast_hb peer") {
		t.Error("node-b did not log the foreign datagrams")
	}

	// Crash failover over the unicast path, outage measured.
	crashFailover(t, l, a, b, "crash failover over unicast_hb")

	// A port change (restart) leaves nothing on the old ports.
	if err := b.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.Revive(); err != nil {
		t.Fatal(err)
	}
	pa.UnicastPort, pb.UnicastPort = 7065, 7065
	startPair(t, a, b, pa, pb)
	checkSockets(a, 7065, 7066)
	checkSockets(b, 7065, 7066)
}
