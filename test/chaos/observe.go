package chaos

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hagent/hagent/test/lab"
)

// The observer trusts nothing an agent says about itself: it reads the
// MAC of every node's port1 over netlink, the gratuitous ARPs that enter
// the data switch, and what the client's probe and connections saw.

// macWatch follows port1's MAC on one node: every link event of the
// node's namespace triggers a fresh read (so an event is never stale), and
// a poll every pollEvery catches an event the subscription lost.
type macWatch struct {
	node string
	vmac string
	h    *netlink.Handle
	ns   netns.NsHandle
	rec  *Record
	mu   sync.Mutex
}

const pollEvery = 50 * time.Millisecond

func newMACWatch(n *lab.Node, vmac string, rec *Record) (*macWatch, error) {
	ns, err := netns.GetFromName(n.NS)
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, err
	}
	return &macWatch{node: n.Name, vmac: vmac, h: h, ns: ns, rec: rec}, nil
}

// read reads port1 now and records what it carries.
func (w *macWatch) read() (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	l, err := w.h.LinkByName("port1")
	if err != nil {
		return false, err
	}
	held := l.Attrs().HardwareAddr.String() == w.vmac
	w.rec.hold(w.node, held, time.Now())
	return held, nil
}

func (w *macWatch) run(ctx context.Context, logf func(string, ...any)) {
	defer w.h.Close()
	defer w.ns.Close()
	go func() {
		for ctx.Err() == nil {
			ch := make(chan netlink.LinkUpdate, 64)
			done := make(chan struct{})
			failed := make(chan struct{}, 1)
			err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
				Namespace:     &w.ns,
				ErrorCallback: func(error) { failed <- struct{}{} },
			})
			if err != nil {
				logf("observer: link subscription on %s: %v", w.node, err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			func() {
				defer close(done)
				for {
					select {
					case <-ctx.Done():
						return
					case <-failed:
						return
					case u, ok := <-ch:
						if !ok {
							return
						}
						if u.Attrs().Name == "port1" {
							_, _ = w.read()
						}
					}
				}
			}()
		}
	}()
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	reported := false
	for {
		if _, err := w.read(); err != nil && !reported {
			logf("observer: reading port1 of %s: %v", w.node, err)
			reported = true
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// garpSniff records the gratuitous ARPs for the cluster address that enter
// the data switch from each node's LAN port (n<i>p1 in the switch
// namespace), and the TCP resets entering from its LAN and WAN ports.
func garpSniff(ctx context.Context, l *lab.Lab, nodes []*lab.Node, vmac string, rec *Record) error {
	hw, _ := net.ParseMAC(vmac)
	ip := net.ParseIP(lab.ClusterIPv4).To4()
	for _, n := range nodes {
		for d, side := range []string{"lan", "wan"} {
			if side == "wan" && l.Server == "" {
				continue
			}
			fd, err := sniffPort(l, fmt.Sprintf("n%dp%d", n.Index, d+1))
			if err != nil {
				return err
			}
			go sniffLoop(ctx, fd, n.Name, side, hw, ip, rec)
		}
	}
	return nil
}

// sniffPort opens a packet socket on a switch port that sees ARP and TCP
// resets entering the switch from it.
func sniffPort(l *lab.Lab, port string) (int, error) {
	var fd int
	err := lab.InNS(l.Switch, func() error {
		ifi, err := net.InterfaceByName(port)
		if err != nil {
			return err
		}
		// ETH_P_ALL: a bridge port's rx handler takes the frame
		// before protocol-specific packet sockets see it; a socket
		// filter keeps only ARP.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		// Jumps are relative to the next instruction.
		arpOnly := []unix.SockFilter{ // ARP, or IPv4 TCP with RST set (no IP options)
			{Code: 0x28, K: 12},                  // ldh [12]
			{Code: 0x15, Jt: 5, Jf: 0, K: 0x806}, // jeq #0x806 → accept
			{Code: 0x15, Jt: 0, Jf: 5, K: 0x800}, // jeq #0x800 else drop
			{Code: 0x30, K: 23},                  // ldb [23] (IP protocol)
			{Code: 0x15, Jt: 0, Jf: 3, K: 6},     // jeq #6 (TCP) else drop
			{Code: 0x30, K: 47},                  // ldb [47] (TCP flags)
			{Code: 0x45, Jt: 0, Jf: 1, K: 0x04},  // jset #RST: accept, else drop
			{Code: 0x06, K: 0xffff},              // ret #65535
			{Code: 0x06, K: 0},                   // ret #0
		}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(arpOnly)), Filter: &arpOnly[0]}); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.Timeval{Usec: 100000}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		return -1, fmt.Errorf("GARP capture on %s: %w", port, err)
	}
	return fd, nil
}

// sniffLoop records what enters the switch from one node's port.
func sniffLoop(ctx context.Context, fd int, name, side string, hw net.HardwareAddr, ip net.IP, rec *Record) {
	defer unix.Close(fd)
	buf := make([]byte, 256)
	for ctx.Err() == nil {
		k, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue // timeout: look at ctx
		}
		if sa, ok := from.(*unix.SockaddrLinklayer); ok && sa.Pkttype == unix.PACKET_OUTGOING {
			continue // towards the node, not from it
		}
		if k >= 54 && buf[12] == 0x08 && buf[13] == 0x00 && buf[23] == 6 && buf[47]&0x04 != 0 {
			// A reset from the node (Ethernet 14 + IPv4 20 + TCP): the
			// client's port is the destination on the LAN, the
			// (masqueraded) source on the WAN.
			port := int(buf[36])<<8 | int(buf[37])
			if side == "wan" {
				port = int(buf[34])<<8 | int(buf[35])
			}
			rec.addRST(RST{At: time.Now(), Node: name, Side: side, Port: port})
			continue
		}
		// Ethernet (14) + ARP: op 20:22, sha 22:28, spa 28:32, tpa 38:42.
		if side != "lan" || k < 42 || buf[12] != 0x08 || buf[13] != 0x06 {
			continue
		}
		if string(buf[22:28]) == string(hw) && net.IP(buf[28:32]).Equal(ip) && net.IP(buf[38:42]).Equal(ip) {
			rec.addGARP(GARP{At: time.Now(), Node: name})
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// stallMin is the delay that counts as a machine stall.
const stallMin = 100 * time.Millisecond

// stallProbe measures the machine beside the cluster: every 20 ms it
// changes the MAC of a spare veth in the switch namespace (the same rtnl
// path as a takeover or a release) and notes how late a 10 ms sleep of
// this process wakes up. Stalls of at least stallMin are recorded: the
// other engineers' tests on this 2-core machine create and delete
// namespaces, which holds rtnl for up to seconds.
func stallProbe(ctx context.Context, l *lab.Lab, rec *Record) error {
	if err := lab.IP("-n", l.Switch, "link", "add", "stall0", "type", "veth", "peer", "name", "stall1"); err != nil {
		return err
	}
	ns, err := netns.GetFromName(l.Switch)
	if err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(ns)
	ns.Close()
	if err != nil {
		return err
	}
	link, err := h.LinkByName("stall0")
	if err != nil {
		h.Close()
		return err
	}
	macs := []net.HardwareAddr{{0x02, 0, 0, 0, 0, 1}, {0x02, 0, 0, 0, 0, 2}}
	note := func(what string, from time.Time) {
		if to := time.Now(); to.Sub(from) >= stallMin {
			rec.mu.Lock()
			rec.Stalls = append(rec.Stalls, Stall{Span: Span{From: from, To: to}, What: what})
			rec.mu.Unlock()
		}
	}
	go func() {
		defer h.Close()
		for i := 0; ctx.Err() == nil; i++ {
			t0 := time.Now()
			_ = h.LinkSetHardwareAddr(link, macs[i%2])
			note("netlink", t0)
			sleep(ctx, 20*time.Millisecond)
		}
	}()
	go func() {
		for ctx.Err() == nil {
			t0 := time.Now()
			time.Sleep(10 * time.Millisecond)
			if late := time.Since(t0) - 10*time.Millisecond; late >= stallMin {
				rec.mu.Lock()
				rec.Stalls = append(rec.Stalls, Stall{Span: Span{From: t0.Add(10 * time.Millisecond), To: time.Now()}, What: "scheduler"})
				rec.mu.Unlock()
			}
		}
	}()
	return nil
}
