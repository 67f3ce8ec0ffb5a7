// Package lab builds hagent failover labs out of Linux network namespaces,
// veth pairs and bridges, runs hagentd in them, and measures what a client
// sees. It serves the integration tests, the `make lab` demo and the
// benchmarks.
//
// A topology is data: a switch namespace holding the data bridge (br0) and,
// for more than two nodes or when asked, a heartbeat bridge (hb0); one
// namespace per node with its data interface port1 and heartbeat interfaces
// ha1 (and ha2); a client namespace with eth0 on the data bridge. Interface
// names are the same in every node, so every node can use the same
// configuration. Namespaces get a unique prefix and are always deleted by
// Close, which tests register with t.Cleanup.
package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hagent/hagent/internal/testutil"
	"github.com/vishvananda/netns"
)

// Addresses used by every lab.
const (
	ClusterIPv4 = "10.9.0.100"
	ClusterIPv6 = "2001:db8::100"
	ClientIPv4  = "10.9.0.10"
	ClientIPv6  = "2001:db8::10"
	EchoPort    = 7007
)

// Spec describes a topology.
type Spec struct {
	Nodes []string // node names, e.g. "node-a", "node-b"
	// HBLinks is the number of heartbeat interfaces per node (ha1, ha2…),
	// default 1. With two nodes each is a direct veth cable; with more
	// nodes each is a bridge (hb0, hb1…) in the switch namespace.
	HBLinks int
	// HBSwitch puts even two nodes' hb links on a bridge (so nft bridge
	// rules can drop heartbeats).
	HBSwitch bool
	// DataLinks is the number of data interfaces per node (port1, port2…)
	// on the data bridge, default 1.
	DataLinks int
	// WAN makes a firewall pair (firewall.go): port1 on the LAN bridge
	// br0 with the client, port2 on a WAN bridge br1 with a server
	// namespace (DataLinks is 2).
	WAN bool
	// RoutedHB replaces the hb links by a routed path: each node's "hbu"
	// (10.99.<index+1>.1/24) to a router namespace, so no L2 frame passes
	// between the nodes' heartbeat interfaces; the nodes use unicast_hb.
	RoutedHB bool
}

// UnicastAddr is node index i's unicast_hb address in a RoutedHB lab.
func UnicastAddr(i int) string { return fmt.Sprintf("10.99.%d.1", i+1) }

// Lab is a built topology.
type Lab struct {
	Prefix string
	Dir    string // scratch directory: configs, logs, sockets
	Spec   Spec
	Nodes  map[string]*Node
	Switch string // switch namespace
	Client string // client namespace
	Server string // server namespace (Spec.WAN)
	Router string // router namespace of a RoutedHB lab

	mu     sync.Mutex
	closed bool
	nss    []string
	echoes []func()
}

var counter atomic.Int32

// Logf receives progress lines; tests set it to t.Logf.
type Logf func(format string, args ...any)

// New builds the topology. On error everything built so far is removed.
func New(spec Spec) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("lab: needs iproute2 (ip)")
	}
	if spec.HBLinks == 0 {
		spec.HBLinks = 1
	}
	if spec.DataLinks == 0 {
		spec.DataLinks = 1
	}
	if spec.WAN {
		spec.DataLinks = 2
	}
	prefix := fmt.Sprintf("hl%d-%d", os.Getpid()%100000, counter.Add(1))
	dir, err := os.MkdirTemp("", prefix+"-")
	if err != nil {
		return nil, err
	}
	l := &Lab{Prefix: prefix, Dir: dir, Spec: spec, Nodes: map[string]*Node{},
		Switch: prefix + "-sw", Client: prefix + "-cl"}
	if err := l.build(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *Lab) addNS(name string) error {
	if err := ip("netns", "add", name); err != nil {
		return err
	}
	l.nss = append(l.nss, name)
	return ip("-n", name, "link", "set", "lo", "up")
}

func (l *Lab) build() error {
	sw := l.Switch
	if err := l.addNS(sw); err != nil {
		return err
	}
	steps := [][]string{
		{"-n", sw, "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0", "mcast_snooping", "0"},
		{"-n", sw, "link", "set", "br0", "up"},
	}
	if l.Spec.WAN {
		steps = append(steps,
			[]string{"-n", sw, "link", "add", "br1", "type", "bridge", "forward_delay", "0", "stp_state", "0", "mcast_snooping", "0"},
			[]string{"-n", sw, "link", "set", "br1", "up"})
	}
	hbBridge := (len(l.Spec.Nodes) > 2 || l.Spec.HBSwitch) && !l.Spec.RoutedHB
	if hbBridge {
		for h := 0; h < l.Spec.HBLinks; h++ {
			br := fmt.Sprintf("hb%d", h)
			steps = append(steps,
				[]string{"-n", sw, "link", "add", br, "type", "bridge", "forward_delay", "0", "stp_state", "0", "mcast_snooping", "0"},
				[]string{"-n", sw, "link", "set", br, "up"})
		}
	}
	if err := ipAll(steps); err != nil {
		return err
	}
	for i, name := range l.Spec.Nodes {
		ns := fmt.Sprintf("%s-n%d", l.Prefix, i)
		if err := l.addNS(ns); err != nil {
			return err
		}
		n := &Node{lab: l, Name: name, NS: ns, Index: i,
			Socket: filepath.Join(l.Dir, name, "hagent.sock"), StateDir: filepath.Join(l.Dir, name, "state"),
			RunDir: filepath.Join(l.Dir, name, "run")}
		for _, d := range []string{n.StateDir, n.RunDir} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return err
			}
		}
		l.Nodes[name] = n
		var st [][]string
		for d := 1; d <= l.Spec.DataLinks; d++ {
			port := fmt.Sprintf("port%d", d)
			peer := fmt.Sprintf("n%dp%d", i, d)
			st = append(st,
				[]string{"link", "add", port, "netns", ns, "type", "veth", "peer", "name", peer, "netns", sw},
				[]string{"-n", sw, "link", "set", peer, "master", l.bridgeOf(d)},
				[]string{"-n", sw, "link", "set", peer, "up"},
				[]string{"-n", ns, "link", "set", port, "up"})
		}
		if hbBridge {
			for h := 0; h < l.Spec.HBLinks; h++ {
				hb := fmt.Sprintf("ha%d", h+1)
				peer := fmt.Sprintf("n%dh%d", i, h+1)
				st = append(st,
					[]string{"link", "add", hb, "netns", ns, "type", "veth", "peer", "name", peer, "netns", sw},
					[]string{"-n", sw, "link", "set", peer, "master", fmt.Sprintf("hb%d", h)},
					[]string{"-n", sw, "link", "set", peer, "up"},
					[]string{"-n", ns, "link", "set", hb, "up"})
			}
		}
		if err := ipAll(st); err != nil {
			return err
		}
	}
	if l.Spec.RoutedHB {
		if err := l.buildRouted(); err != nil {
			return err
		}
	}
	if !hbBridge && len(l.Spec.Nodes) == 2 && !l.Spec.RoutedHB {
		a, b := l.Nodes[l.Spec.Nodes[0]], l.Nodes[l.Spec.Nodes[1]]
		var st [][]string
		for h := 1; h <= l.Spec.HBLinks; h++ {
			hb := fmt.Sprintf("ha%d", h)
			st = append(st,
				[]string{"link", "add", hb, "netns", a.NS, "type", "veth", "peer", "name", hb, "netns", b.NS},
				[]string{"-n", a.NS, "link", "set", hb, "up"},
				[]string{"-n", b.NS, "link", "set", hb, "up"})
		}
		if err := ipAll(st); err != nil {
			return err
		}
	}
	cl := l.Client
	if err := l.addNS(cl); err != nil {
		return err
	}
	if l.Spec.WAN {
		if err := l.buildWAN(); err != nil {
			return err
		}
	}
	if err := ipAll([][]string{
		{"link", "add", "eth0", "netns", cl, "type", "veth", "peer", "name", "cl0", "netns", sw},
		{"-n", sw, "link", "set", "cl0", "master", "br0"},
		{"-n", sw, "link", "set", "cl0", "up"},
		{"-n", cl, "addr", "add", ClientIPv4 + "/24", "dev", "eth0"},
		{"-n", cl, "addr", "add", ClientIPv6 + "/64", "dev", "eth0", "nodad"},
		{"-n", cl, "link", "set", "eth0", "up"},
	}); err != nil {
		return err
	}
	return l.waitUp()
}

// waitUp waits until every veth end of the lab that is set up is
// operationally up. A new veth drops what is sent until the kernel's
// linkwatch attaches its qdisc, which on a busy machine (other labs
// changing links) takes up to a second: long enough for two nodes with a
// short hello_holddown to start without hearing each other.
func (l *Lab) waitUp() error {
	return Eventually(10*time.Second, func() error {
		for _, ns := range l.nss {
			out, err := Exec(ns, "ip", "-o", "link", "show")
			if err != nil {
				return err
			}
			for _, line := range strings.Split(out, "\n") {
				f := strings.Fields(line)
				if len(f) < 2 || !strings.Contains(f[1], "@") || !strings.Contains(line, ",UP") {
					continue // not a veth, or not set up
				}
				if !strings.Contains(line, "state UP") {
					return fmt.Errorf("%s: %s not up yet", ns, strings.TrimSuffix(f[1], ":"))
				}
			}
		}
		return nil
	})
}

// Close stops every node and deletes every namespace and the scratch
// directory (kept when keepDir is set in the environment as HAGENT_KEEP_LAB).
func (l *Lab) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	for _, n := range l.Nodes {
		n.Kill()
	}
	for _, stop := range l.echoes {
		stop()
	}
	for i := len(l.nss) - 1; i >= 0; i-- {
		_ = ip("netns", "del", l.nss[i])
	}
	if os.Getenv("HAGENT_KEEP_LAB") == "" {
		os.RemoveAll(l.Dir)
	}
}

// Exec runs a command inside a namespace and returns its combined output.
func Exec(ns string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %v: %s", strings.Join(args, " "), ns, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// IP runs `ip ARGS…` and returns an error with its output on failure.
func IP(args ...string) error { return ip(args...) }

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func ipAll(steps [][]string) error {
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// InNS runs fn on a thread inside the named namespace. Sockets fn opens
// stay in that namespace after it returns.
func InNS(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("namespace %s: %w", name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread()
		} // else: leave the thread locked; it exits with this goroutine
		errc <- ferr
	}()
	return <-errc
}

// Eventually polls cond every 10 ms until it returns nil or timeout passes,
// and returns the last error.
func Eventually(timeout time.Duration, cond func() error) error {
	return EventuallyEvery(timeout, 10*time.Millisecond, cond)
}

// EventuallyEvery is Eventually with a polling period of its own.
func EventuallyEvery(timeout, every time.Duration, cond func() error) error {
	return testutil.Poll(timeout, every, cond)
}

// buildRouted adds the router namespace and each node's hbu link to it.
func (l *Lab) buildRouted() error {
	l.Router = l.Prefix + "-rt"
	if err := l.addNS(l.Router); err != nil {
		return err
	}
	steps := [][]string{}
	for _, n := range l.sortedNodes() {
		r := fmt.Sprintf("r%d", n.Index)
		net3 := fmt.Sprintf("10.99.%d", n.Index+1)
		steps = append(steps,
			[]string{"link", "add", "hbu", "netns", n.NS, "type", "veth", "peer", "name", r, "netns", l.Router},
			[]string{"-n", n.NS, "addr", "add", UnicastAddr(n.Index) + "/24", "dev", "hbu"},
			[]string{"-n", n.NS, "link", "set", "hbu", "up"},
			[]string{"-n", n.NS, "route", "add", "10.99.0.0/16", "via", net3 + ".254"},
			[]string{"-n", l.Router, "addr", "add", net3 + ".254/24", "dev", r},
			[]string{"-n", l.Router, "link", "set", r, "up"})
	}
	if err := ipAll(steps); err != nil {
		return err
	}
	_, err := Exec(l.Router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	return err
}
