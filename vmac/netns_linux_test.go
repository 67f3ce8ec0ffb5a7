//go:build linux

package vmac

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hagent/hagent/internal/testutil"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Tests in this file build network namespaces and need root; they skip
// otherwise. Topology of newTopo:
//
//	ns node                    ns peer
//	port1 ------- veth ------- peer1
//	port2 ------- veth ------- peer2

var nsCounter atomic.Int32

func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root for network namespaces (run: sudo go test ./vmac)")
	}
}

// newNS creates a uniquely named network namespace that is deleted when the
// test ends, and returns a handle to it. The calling thread's namespace is
// left unchanged.
func newNS(tb testing.TB) netns.NsHandle {
	tb.Helper()
	name := fmt.Sprintf("vmact%d-%d", os.Getpid(), nsCounter.Add(1))
	var ns netns.NsHandle
	err := inThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		ns, err = netns.NewNamed(name) // also switches this thread into it
		if serr := netns.Set(orig); serr != nil {
			return errThreadTainted
		}
		return err
	})
	if err != nil {
		tb.Fatalf("create netns %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			tb.Errorf("delete netns %s: %v", name, err)
		}
	})
	return ns
}

// errThreadTainted means a thread could not be switched back to its
// namespace; inThread then leaves it locked so the runtime discards it.
var errThreadTainted = errors.New("thread left in a foreign network namespace")

// inThread runs fn on a locked OS thread in a goroutine of its own and
// returns its error.
func inThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := fn()
		if !errors.Is(err, errThreadTainted) {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// inNS runs fn with the thread in namespace ns, as the agent does when it
// builds its Manager.
func inNS(ns netns.NsHandle, fn func() error) error {
	return inThread(func() error {
		orig, err := netns.Get()
		if err != nil {
			return err
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			return err
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			return errThreadTainted
		}
		return ferr
	})
}

type topo struct {
	node, peer   netns.NsHandle
	nodeH, peerH *netlink.Handle
	origMAC      map[string]net.HardwareAddr // node side interfaces
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	needRoot(t)
	tp := &topo{node: newNS(t), peer: newNS(t), origMAC: map[string]net.HardwareAddr{}}
	var err error
	if tp.nodeH, err = netlink.NewHandleAt(tp.node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.nodeH.Close)
	if tp.peerH, err = netlink.NewHandleAt(tp.peer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.peerH.Close)
	for _, pair := range [][2]string{{"port1", "peer1"}, {"port2", "peer2"}} {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: pair[0]}, PeerName: pair[1], PeerNamespace: netlink.NsFd(tp.peer)}
		if err := tp.nodeH.LinkAdd(v); err != nil {
			t.Fatalf("add veth %v: %v", pair, err)
		}
		tp.setUp(t, tp.nodeH, pair[0], true)
		tp.setUp(t, tp.peerH, pair[1], true)
		tp.origMAC[pair[0]] = tp.mac(t, pair[0])
	}
	// A new veth drops what is sent until the kernel's linkwatch has
	// attached its qdisc (up to a second on a busy machine): wait for
	// operstate UP everywhere.
	deadline := time.Now().Add(5 * time.Second)
	for _, x := range []struct {
		h    *netlink.Handle
		name string
	}{{tp.nodeH, "port1"}, {tp.nodeH, "port2"}, {tp.peerH, "peer1"}, {tp.peerH, "peer2"}} {
		for {
			l, err := x.h.LinkByName(x.name)
			if err == nil && l.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not come up", x.name)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return tp
}

func (tp *topo) setUp(t *testing.T, h *netlink.Handle, name string, up bool) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if up {
		err = h.LinkSetUp(l)
	} else {
		err = h.LinkSetDown(l)
	}
	if err != nil {
		t.Fatalf("set %s up=%v: %v", name, up, err)
	}
}

// mac reads the current MAC of a node-side interface.
func (tp *topo) mac(t *testing.T, name string) net.HardwareAddr {
	t.Helper()
	l, err := tp.nodeH.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr
}

// addrs returns the global addresses of a node-side interface and whether
// any of them is tentative (still doing DAD).
func (tp *topo) addrs(t *testing.T, name string) (map[netip.Prefix]bool, bool) {
	t.Helper()
	l, err := tp.nodeH.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	list, err := tp.nodeH.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.Prefix]bool{}
	tentative := false
	for _, a := range list {
		ip, _ := netip.AddrFromSlice(a.IP)
		ip = ip.Unmap()
		if ip.IsLinkLocalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		out[netip.PrefixFrom(ip, ones)] = true
		if a.Flags&unix.IFA_F_TENTATIVE != 0 {
			tentative = true
		}
	}
	return out, tentative
}

// newManager builds a Manager inside the node namespace.
func (tp *topo) newManager(t *testing.T, cfg Config) (*Manager, error) {
	t.Helper()
	var m *Manager
	err := inNS(tp.node, func() error {
		var err error
		m, err = NewManager(cfg)
		return err
	})
	if m != nil {
		t.Cleanup(func() { _ = m.Close() })
	}
	return m, err
}

// capture records every frame received on a peer-side interface.
type capture struct {
	mu     sync.Mutex
	frames [][]byte
	conn   *packet.Conn
	done   chan struct{}
}

func (tp *topo) capture(t *testing.T, name string) *capture {
	t.Helper()
	l, err := tp.peerH.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	c := &capture{done: make(chan struct{})}
	err = inNS(tp.peer, func() error {
		var err error
		c.conn, err = packet.Listen(&net.Interface{Index: l.Attrs().Index, Name: name}, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		t.Fatalf("capture on %s: %v", name, err)
	}
	go func() {
		defer close(c.done)
		buf := make([]byte, 2048)
		for {
			n, _, err := c.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.frames = append(c.frames, append([]byte(nil), buf[:n]...))
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		c.conn.Close()
		<-c.done
	})
	return c
}

// garps counts captured gratuitous ARPs for ip from mac.
func (c *capture) garps(mac net.HardwareAddr, ip netip.Addr) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, f := range c.frames {
		eth, a := decodeGARP(f)
		if a == nil {
			continue
		}
		sip, _ := netip.AddrFromSlice(a.SourceProtAddress)
		tip, _ := netip.AddrFromSlice(a.DstProtAddress)
		if bytes.Equal(a.SourceHwAddress, mac) && bytes.Equal(eth.SrcMAC, mac) &&
			sip == ip && tip == ip && eth.DstMAC.String() == "ff:ff:ff:ff:ff:ff" {
			n++
		}
	}
	return n
}

// nas counts captured unsolicited NAs for ip carrying mac, and returns one.
func (c *capture) nas(mac net.HardwareAddr, ip netip.Addr) (int, decodedNA) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	var last decodedNA
	for _, f := range c.frames {
		d, ok := decodeNA(f)
		if !ok || d.na.TargetAddress != ip || !d.na.Override || d.na.Solicited ||
			!bytes.Equal(d.tlla, mac) || !bytes.Equal(d.eth.SrcMAC, mac) || d.ip6.HopLimit != 255 {
			continue
		}
		n++
		last = d
	}
	return n, last
}

// steady checks that count stays at want for d (polled, no bare sleep).
func steady(t *testing.T, d time.Duration, what string, want int, count func() int) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if got := count(); got != want {
			t.Fatalf("%s: got %d, want %d", what, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var (
	v4a = netip.MustParsePrefix("10.9.0.100/24")
	v6a = netip.MustParsePrefix("2001:db8::100/64")
	v4b = netip.MustParsePrefix("10.9.1.100/24")
)

func testConfig(t *testing.T, arps int, interval time.Duration) Config {
	return Config{
		GroupID:  10,
		VCluster: 1,
		// Deliberately unsorted: port1 must get index 0.
		Interfaces: []Interface{
			{Name: "port2", Prefixes: []netip.Prefix{v4b}},
			{Name: "port1", Prefixes: []netip.Prefix{v4a, v6a}},
		},
		ARPs:        arps,
		ARPInterval: interval,
		StateDir:    t.TempDir(),
	}
}

func TestTakeRelease(t *testing.T) {
	tp := newTopo(t)
	const interval = 150 * time.Millisecond
	m, err := tp.newManager(t, testConfig(t, 3, interval))
	if err != nil {
		t.Fatal(err)
	}
	vmac1, _ := MAC(10, 1, 0)
	vmac2, _ := MAC(10, 1, 1)
	cap1 := tp.capture(t, "peer1")
	cap2 := tp.capture(t, "peer2")

	if m.Owned() {
		t.Fatal("owned before Take")
	}
	rep, err := m.Take()
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	t.Logf("Take: MAC set after %v, addresses after %v, first GARP after %v",
		rep.MACSet.Sub(rep.Start), rep.AddrsAdded.Sub(rep.Start), rep.FirstGARP.Sub(rep.Start))
	if !(rep.Start.Before(rep.MACSet) || rep.Start.Equal(rep.MACSet)) ||
		rep.AddrsAdded.Before(rep.MACSet) || rep.FirstGARP.Before(rep.AddrsAdded) {
		t.Errorf("report timestamps out of order: %+v", rep)
	}
	// The target is < 5 ms; the bound is generous for a loaded 2-core box
	// running with -race.
	if d := rep.FirstGARP.Sub(rep.Start); d > 250*time.Millisecond {
		t.Errorf("first GARP %v after the decision", d)
	}
	if !m.Owned() {
		t.Error("not owned after Take")
	}

	// The kernel shows the vMACs and the addresses, IPv6 not tentative.
	if got := tp.mac(t, "port1"); !bytes.Equal(got, vmac1) {
		t.Errorf("port1 MAC %v, want %v", got, vmac1)
	}
	if got := tp.mac(t, "port2"); !bytes.Equal(got, vmac2) {
		t.Errorf("port2 MAC %v, want %v", got, vmac2)
	}
	addrs, tentative := tp.addrs(t, "port1")
	if !addrs[v4a] || !addrs[v6a] || tentative {
		t.Errorf("port1 addresses %v (tentative %v), want %v and %v", addrs, tentative, v4a, v6a)
	}
	if addrs, _ := tp.addrs(t, "port2"); !addrs[v4b] {
		t.Errorf("port2 addresses %v, want %v", addrs, v4b)
	}

	// Exactly ARPs gratuitous ARPs per address, then silence.
	garps1 := func() int { return cap1.garps(vmac1, v4a.Addr()) }
	garps2 := func() int { return cap2.garps(vmac2, v4b.Addr()) }
	testutil.Eventually(t, 5*time.Second, "3 GARPs on peer1", func() bool { return garps1() >= 3 && garps2() >= 3 })
	steady(t, 3*interval, "GARPs on peer1 after the burst", 3, garps1)
	if n := garps2(); n != 3 {
		t.Errorf("GARPs on peer2: %d, want 3", n)
	}
	if n := cap1.garps(vmac1, v4b.Addr()); n != 0 {
		t.Errorf("port2's address announced on port1 %d times", n)
	}
	n, na := cap1.nas(vmac1, v6a.Addr())
	t.Logf("peer1 saw %d unsolicited NAs for %v", n, v6a.Addr())
	if n < 3 {
		t.Errorf("unsolicited NAs on peer1: %d, want at least 3", n)
	} else {
		if na.ip6.DstIP.String() != "ff02::1" || na.eth.DstMAC.String() != "33:33:00:00:00:01" || !na.checksum {
			t.Errorf("NA to %v / %v, checksum ok %v", na.ip6.DstIP, na.eth.DstMAC, na.checksum)
		}
	}

	st := m.Status()
	if len(st) != 2 || st[0].Name != "port1" || !st[0].Owned || len(st[0].Addresses) != 2 ||
		!bytes.Equal(st[0].PermMAC, tp.origMAC["port1"]) || !bytes.Equal(st[0].VMAC, vmac1) {
		t.Errorf("Status = %+v", st)
	}

	// Announce sends one more round at once.
	if err := m.Announce(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 2*time.Second, "4th GARP after Announce", func() bool { return garps1() == 4 })

	// Take again restarts the burst (idempotent on MAC and addresses).
	if _, err := m.Take(); err != nil {
		t.Fatalf("second Take: %v", err)
	}
	testutil.Eventually(t, 2*time.Second, "GARP after second Take", func() bool { return garps1() >= 5 })

	// Release cancels the burst, removes the addresses, restores the MACs.
	for i := 0; i < 2; i++ {
		if err := m.Release(); err != nil {
			t.Fatalf("Release #%d: %v", i+1, err)
		}
	}
	if m.Owned() {
		t.Error("owned after Release")
	}
	for _, name := range []string{"port1", "port2"} {
		if got := tp.mac(t, name); !bytes.Equal(got, tp.origMAC[name]) {
			t.Errorf("%s MAC %v after Release, want %v", name, got, tp.origMAC[name])
		}
		if addrs, _ := tp.addrs(t, name); len(addrs) != 0 {
			t.Errorf("%s addresses after Release: %v", name, addrs)
		}
	}
	after := garps1()
	steady(t, 3*interval, "GARPs after Release", after, garps1)
	if after > 6 {
		t.Errorf("%d GARPs, second burst was not cancelled promptly", after)
	}
	if err := m.Announce(); !errors.Is(err, ErrNotOwned) {
		t.Errorf("Announce after Release: %v, want ErrNotOwned", err)
	}
	if st := m.Status(); st[0].Owned || len(st[0].Addresses) != 0 {
		t.Errorf("Status after Release = %+v", st)
	}
}

func TestResetAfterCrash(t *testing.T) {
	tp := newTopo(t)
	cfg := testConfig(t, 1, time.Second)
	vmac1, _ := MAC(10, 1, 0)

	// A primary takes over and crashes: no Release, vMAC and addresses stay.
	m1, err := tp.newManager(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m1.Take(); err != nil {
		t.Fatal(err)
	}
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}
	if got := tp.mac(t, "port1"); !bytes.Equal(got, vmac1) {
		t.Fatalf("port1 MAC %v after crash, want vMAC", got)
	}

	// The restarted agent learns the permanent MAC from the state file (a
	// veth has no IFLA_PERM_ADDRESS and its current MAC is the vMAC).
	m2, err := tp.newManager(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st := m2.Status(); !bytes.Equal(st[0].PermMAC, tp.origMAC["port1"]) || !st[0].Owned {
		t.Fatalf("after restart Status = %+v, want perm %v and vMAC set", st, tp.origMAC["port1"])
	}
	if m2.Owned() {
		t.Error("a new Manager must not claim ownership")
	}
	if err := m2.Reset(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"port1", "port2"} {
		if got := tp.mac(t, name); !bytes.Equal(got, tp.origMAC[name]) {
			t.Errorf("%s MAC %v after Reset, want %v", name, got, tp.origMAC[name])
		}
		if addrs, _ := tp.addrs(t, name); len(addrs) != 0 {
			t.Errorf("%s addresses after Reset: %v", name, addrs)
		}
	}
	// Reset on a clean node is harmless.
	if err := m2.Reset(); err != nil {
		t.Fatal(err)
	}

	// Crash again and lose the state file: a generated locally administered
	// unicast MAC is used and remembered.
	if _, err := m2.Take(); err != nil {
		t.Fatal(err)
	}
	_ = m2.Close()
	cfg.StateDir = t.TempDir()
	m3, err := tp.newManager(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	gen := m3.Status()[0].PermMAC
	if len(gen) != 6 || gen[0]&0x02 == 0 || gen[0]&0x01 != 0 || bytes.Equal(gen, vmac1) {
		t.Fatalf("generated permanent MAC %v is not a locally administered unicast MAC", gen)
	}
	if err := m3.Reset(); err != nil {
		t.Fatal(err)
	}
	if got := tp.mac(t, "port1"); !bytes.Equal(got, gen) {
		t.Errorf("port1 MAC %v after Reset, want generated %v", got, gen)
	}
	known, err := readState(cfg.StateDir)
	if err != nil || !bytes.Equal(known["port1"], gen) {
		t.Errorf("state file holds %v (%v), want port1 %v", known, err, gen)
	}
}

func TestNewManagerErrors(t *testing.T) {
	tp := newTopo(t)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "missing interface", want: `"nope0" not found`,
			cfg: Config{GroupID: 1, VCluster: 1, Interfaces: []Interface{{Name: "port1"}, {Name: "nope0"}}}},
		{name: "not ethernet", want: `"lo" is not Ethernet`,
			cfg: Config{GroupID: 1, VCluster: 1, Interfaces: []Interface{{Name: "lo"}}}},
		{name: "too many", want: "at most 16",
			cfg: Config{GroupID: 1, VCluster: 1, Interfaces: make([]Interface, 17)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.StateDir = t.TempDir()
			_, err := tp.newManager(t, tt.cfg)
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.want)) {
				t.Fatalf("NewManager error %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func BenchmarkTake(b *testing.B) {
	needRoot(b)
	tp := &topo{node: newNS(b), peer: newNS(b)}
	h, err := netlink.NewHandleAt(tp.node)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "port1"}, PeerName: "peer1", PeerNamespace: netlink.NsFd(tp.peer)}
	if err := h.LinkAdd(v); err != nil {
		b.Fatal(err)
	}
	l, _ := h.LinkByName("port1")
	_ = h.LinkSetUp(l)
	var m *Manager
	err = inNS(tp.node, func() error {
		var err error
		m, err = NewManager(Config{GroupID: 10, VCluster: 1, ARPs: 1, StateDir: b.TempDir(),
			Interfaces: []Interface{{Name: "port1", Prefixes: []netip.Prefix{v4a, v6a}}}})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	var worst time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rep, err := m.Take()
		if err != nil {
			b.Fatal(err)
		}
		worst = max(worst, rep.FirstGARP.Sub(rep.Start))
		b.StopTimer()
		if err := m.Release(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(worst.Microseconds()), "worst-µs-to-first-GARP")
}

// lockThread locks the goroutine to its thread without ever unlocking, so
// the runtime discards the thread (and its namespace) when the goroutine ends.
func lockThread() { runtime.LockOSThread() }

// TestTakeAfterLinkFlap: a data link that went down and up since the
// manager opened its sockets must not fail the next Take (the sockets hold
// a pending ENETDOWN); a link that is down while taking over costs the
// announcement, not the takeover.
func TestTakeAfterLinkFlap(t *testing.T) {
	tp := newTopo(t)
	m, err := tp.newManager(t, testConfig(t, 1, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	vmac1, _ := MAC(10, 1, 0)
	cap1 := tp.capture(t, "peer1")
	tp.setUp(t, tp.nodeH, "port1", false)
	rep, err := m.Take()
	if err != nil {
		t.Fatalf("Take with port1 down: %v", err)
	}
	if rep.AnnounceErr == nil {
		t.Error("Take with port1 down reported no announcement error")
	}
	if err := m.Release(); err != nil {
		t.Fatal(err)
	}
	tp.setUp(t, tp.nodeH, "port1", true)
	time.Sleep(50 * time.Millisecond) // let the veth carrier come back
	rep, err = m.Take()
	if err != nil || rep.AnnounceErr != nil {
		t.Fatalf("Take after the flap: %v / %v", err, rep.AnnounceErr)
	}
	testutil.Eventually(t, time.Second, "GARP after the flap", func() bool { return cap1.garps(vmac1, v4a.Addr()) >= 1 })
}
