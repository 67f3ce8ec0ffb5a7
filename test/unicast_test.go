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
	// (heartbeat) and 6066 (sync), no wildcard bind; no session socket
	// while session pickup is off.
	checkSockets(t, a, 6065, 6066)
	checkSockets(t, b, 6065, 6066)

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
	checkSockets(t, a, 7065, 7066)
	checkSockets(t, b, 7065, 7066)
}

// checkSockets checks that hagentd on n has exactly the UDP sockets
// ports on its unicast_hb address (the test's echo responder aside), and
// that `ha exposure` lists them.
func checkSockets(t *testing.T, n *lab.Node, ports ...int) {
	t.Helper()
	out, err := lab.Exec(n.NS, "ss", "-H", "-a", "-n", "-u", "-p")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.Contains(l, `"hagentd"`) {
			lines = append(lines, l)
		}
	}
	ss := strings.Join(lines, "\n")
	var want []string
	for _, p := range ports {
		want = append(want, fmt.Sprintf("%s:%d", lab.UnicastAddr(n.Index), p))
	}
	if len(lines) != len(want) {
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

// TestUnicastSessionPickup: session pickup over unicast_hb alone (no
// hbdev, no sync_dev; the session channel on UDP 6067 across the routed
// hop): connections through the firewall pair survive a crash of the
// primary, and a port change moves the session socket too.
func TestUnicastSessionPickup(t *testing.T) {
	const n = 200
	l := newLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}, RoutedHB: true, WAN: true})
	if err := l.SetupFirewall(); err != nil {
		t.Fatal(err)
	}
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	ps := map[*lab.Node]lab.Params{}
	for _, x := range []struct {
		n    *lab.Node
		prio int
	}{{a, 200}, {b, 100}} {
		p := params(x.prio, false)
		p.HBInterval, p.LostThreshold = 100*time.Millisecond, 3
		p.Monitor, p.NoIPv6 = true, true
		p.ClusterExtra = fmt.Sprintf(sessionExtra, true)
		ps[x.n] = p
		start(t, x.n, p)
	}
	eventually(t, 10*time.Second, "initial election", func() error { return agree("node-a", a, b) })
	checkSockets(t, a, 6065, 6067) // sync is off in sessionExtra: no 6066
	checkSockets(t, b, 6065, 6067)

	r, took := pickupFailover(t, l, a, b, n, true, func(a *lab.Node) error { a.Crash(); return nil })
	t.Logf("measured: crash failover over unicast_hb with session pickup on UDP (%d connections, took over after %v): %s", n, took.Round(time.Millisecond), r)
	checkSurvived(t, b, r, n)

	// A port change (restart): nothing stays on the old session port.
	if err := b.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.Revive(); err != nil {
		t.Fatal(err)
	}
	pa, pb := ps[a], ps[b]
	pa.UnicastPort, pb.UnicastPort = 7065, 7065
	startPair(t, a, b, pa, pb)
	checkSockets(t, a, 7065, 7067)
	checkSockets(t, b, 7065, 7067)
}
