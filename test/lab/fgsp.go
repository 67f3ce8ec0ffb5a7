package lab

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/hagent/hagent/sessionsync"
)

// The FGSP topology (cluster.mode fgsp) on a Spec.WAN lab: no cluster
// address; node i has its own addresses on port1 (LAN, 10.9.0.<i+1>) and
// port2 (WAN, 10.9.2.<i+1>), and the client's and the server's routes
// choose which member each direction goes through (RouteVia), as an
// upstream router's ECMP or routing would.

// FGSPLANAddr and FGSPWANAddr are node index i's own addresses.
func FGSPLANAddr(i int) string { return fmt.Sprintf("10.9.0.%d", i+1) }

// FGSPWANAddr is node index i's own WAN address.
func FGSPWANAddr(i int) string { return fmt.Sprintf("10.9.2.%d", i+1) }

// FGSPRuleset is the strict stateful ruleset of the FGSP lab: the forward
// chain drops ct state invalid, accepts established/related, and accepts
// new connections only from the LAN; no NAT (each member has addresses
// of its own, a masquerade address would differ per member).
const FGSPRuleset = `flush ruleset
table inet filter {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state invalid counter drop
		ct state established,related accept
		iifname "port1" oifname "port2" ct state new accept
		counter
	}
}
`

// SetupFGSP gives every node its own addresses, forwarding,
// nf_conntrack_tcp_loose=0, rp_filter off (the two directions of a flow
// may use different members) and FGSPRuleset; extra sysctls (key=value)
// follow. Both directions go through the first node until RouteVia moves
// them.
func (l *Lab) SetupFGSP(extra ...string) error {
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("lab: needs nftables (nft)")
	}
	// Node index 9 would get .10, the client's LAN and the server's WAN
	// address.
	if len(l.Nodes) > 9 {
		return fmt.Errorf("lab: the FGSP addresses take at most 9 nodes, not %d", len(l.Nodes))
	}
	for _, n := range l.Nodes {
		if err := ipAll([][]string{
			{"-n", n.NS, "addr", "add", FGSPLANAddr(n.Index) + "/24", "dev", "port1"},
			{"-n", n.NS, "addr", "add", FGSPWANAddr(n.Index) + "/24", "dev", "port2"},
		}); err != nil {
			return err
		}
		cmd := exec.Command("ip", "netns", "exec", n.NS, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(FGSPRuleset)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nft on %s: %v: %s", n.Name, err, out)
		}
		kvs := []string{"net.ipv4.ip_forward=1", "net.netfilter.nf_conntrack_tcp_loose=0",
			"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
			"net.ipv4.conf.port1.rp_filter=0", "net.ipv4.conf.port2.rp_filter=0"}
		for _, kv := range append(kvs, extra...) {
			if _, err := Exec(n.NS, "sysctl", "-q", "-w", kv); err != nil {
				return err
			}
		}
	}
	first := l.Nodes[l.Spec.Nodes[0]]
	return l.RouteVia(first, first)
}

// RouteVia sends the client's traffic to the server through up (its
// default route) and the server's replies through down.
func (l *Lab) RouteVia(up, down *Node) error {
	if _, err := Exec(l.Client, "ip", "route", "replace", "default", "via", FGSPLANAddr(up.Index)); err != nil {
		return err
	}
	_, err := Exec(l.Server, "ip", "route", "replace", "10.9.0.0/24", "via", FGSPWANAddr(down.Index))
	return err
}

// FGSPConfig is Config for mode fgsp: the same file without the
// interfaces section (config rejects it in this mode) and with
// `mode: fgsp`.
func (n *Node) FGSPConfig(p Params) (string, error) {
	cfg, err := n.Config(p)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	skip := false
	for _, line := range strings.SplitAfter(cfg, "\n") {
		switch {
		case line == "  interfaces:\n":
			skip = true
			continue
		case skip && strings.HasPrefix(line, "    "):
			continue
		}
		skip = false
		b.WriteString(line)
		if strings.HasPrefix(line, "  group_id:") {
			b.WriteString("  mode: fgsp\n")
		}
	}
	return b.String(), nil
}

// StartFGSP starts hagentd with FGSPConfig.
func (n *Node) StartFGSP(p Params) error {
	cfg, err := n.FGSPConfig(p)
	if err != nil {
		return err
	}
	return n.StartYAML(cfg)
}

// StartTCPLoadParallel is StartTCPLoadPort with the connections dialled
// at once, each within timeout (an asymmetric handshake can wait for
// retransmissions). It returns the load of the connections that opened
// (nil when none did) and the errors of those that did not.
func StartTCPLoadParallel(l *Lab, n int, every, timeout time.Duration, port int) (*TCPLoad, []error, error) {
	t, err := listenTCPLoad(l, every, port)
	if err != nil {
		return nil, nil, err
	}
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = InNS(l.Client, func() error {
				d := net.Dialer{Timeout: timeout}
				c, err := d.Dial("tcp4", net.JoinHostPort(ServerIPv4, fmt.Sprint(port)))
				conns[i] = c
				return err
			})
		}()
	}
	wg.Wait()
	var failed []error
	for i, c := range conns {
		if errs[i] != nil {
			failed = append(failed, fmt.Errorf("connection %d: %w", i, errs[i]))
			continue
		}
		t.conns = append(t.conns, &loadConn{id: uint32(i), connHealth: connHealth{c: c}})
	}
	t.run()
	return t, failed, nil
}

// Echoed is the number of connections that got at least one echo.
func (t *TCPLoad) Echoed() int {
	n := 0
	for _, c := range t.conns {
		if c.echoes.Load() > 0 {
			n++
		}
	}
	return n
}

// FlowCount is the number of flows in a node's kernel table.
func (n *Node) FlowCount() (int, error) {
	var c int
	err := InNS(n.NS, func() error {
		k, err := sessionsync.OpenKernel()
		if err != nil {
			return err
		}
		defer k.Close()
		c, err = k.Count()
		return err
	})
	return c, err
}

// LinkUp reports whether a node's interface is administratively up.
func (n *Node) LinkUp(ifname string) (bool, error) {
	var up bool
	err := InNS(n.NS, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		up = ifi.Flags&net.FlagUp != 0
		return nil
	})
	return up, err
}

// WatchNew calls fn with the arrival time of every new-flow event of a
// node's kernel table until ctx is done (the benchmarks' "flow present"
// clock: one process, one clock for every node).
func (n *Node) WatchNew(ctx context.Context, fn func(f *sessionsync.Flow, at time.Time)) error {
	var k *sessionsync.Kernel
	if err := InNS(n.NS, func() error {
		var err error
		k, err = sessionsync.OpenKernel()
		return err
	}); err != nil {
		return err
	}
	go func() {
		defer k.Close()
		_ = k.Listen(ctx, func(ev sessionsync.Event) {
			if ev.Type == sessionsync.EventNew {
				fn(&ev.Flow, time.Now())
			}
		})
	}()
	return nil
}

// WaitOperUp waits until a node's interface is operationally up (after a
// test set it up again: a new carrier drops frames until the kernel's
// linkwatch attaches the qdisc, up to a second on a busy machine).
func (n *Node) WaitOperUp(ifname string) error {
	return Eventually(10*time.Second, func() error {
		out, err := Exec(n.NS, "ip", "-o", "link", "show", "dev", ifname)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "state UP") {
			return fmt.Errorf("%s: %s not operationally up", n.Name, ifname)
		}
		return nil
	})
}
