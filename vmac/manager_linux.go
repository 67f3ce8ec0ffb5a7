//go:build linux

package vmac

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// frameWriter is the part of an AF_PACKET socket the Manager uses; it is the
// seam between frame scheduling and the kernel.
type frameWriter interface {
	WriteTo(b []byte, addr net.Addr) (int, error)
	Close() error
}

// iface is one resolved data interface with everything Take needs ready.
type iface struct {
	name     string
	link     netlink.Link // only Attrs().Index and Name are used
	vmac     net.HardwareAddr
	perm     net.HardwareAddr
	addrs    []*netlink.Addr // cluster addresses, IPv6 with IFA_F_NODAD
	prefixes []netip.Prefix

	arpConn   frameWriter // nil when the interface has no IPv4 address
	ip6Conn   frameWriter // nil when the interface has no IPv6 address
	arpFrames [][]byte    // one gratuitous ARP per IPv4 address
	naFrames  [][]byte    // one unsolicited NA per IPv6 address

	restores uint64 // times Restore put something back (under Manager.mu)
}

// Manager owns the virtual MACs and cluster addresses of one vcluster's data
// interfaces on this node. Its methods may be called from any goroutine;
// they are serialized internally.
type Manager struct {
	cfg Config
	log hclog.Logger
	h   *netlink.Handle
	ns  netns.NsHandle // the namespace of h, which Guard watches

	mu     sync.Mutex // serializes netlink use, sends and the fields below
	ifs    []*iface
	owned  bool
	stop   chan struct{} // closed to cancel the running burst; nil if none
	closed bool
	// held mirrors owned for Guard's filter, which must not wait for mu
	// (a Take in progress) to drop a notification about a Manager that
	// holds nothing; Restore decides under mu.
	held atomic.Bool

	wg sync.WaitGroup // burst goroutines
}

// dropAll is a BPF program that accepts no packet: the Manager's sockets only
// send, so nothing should queue up on their receive side.
var dropAll = func() []bpf.RawInstruction {
	raw, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err != nil {
		panic(err)
	}
	return raw
}()

// NewManager validates cfg, resolves the data interfaces, records each
// interface's permanent MAC and opens the netlink handle and the AF_PACKET
// sockets used by Take, all in the network namespace of the calling thread.
//
// The permanent MAC of an interface is, in this order: the one remembered in
// the state file in cfg.StateDir; the kernel's IFLA_PERM_ADDRESS if it is
// non-zero; the current MAC if it is not the vMAC; else (the vMAC is set and
// nothing else is known, e.g. after a crash with a lost state file) a
// generated locally administered MAC, with a warning. The result is written
// back to the state file.
//
// Every announcement frame is built here, so Take only writes them. The
// Router flag of the neighbour advertisements follows the interface's IPv6
// forwarding setting at this time.
func NewManager(cfg Config) (*Manager, error) {
	cfg, macs, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, log: cfg.Logger.Named("vmac"), ns: netns.None()}
	ok := false
	defer func() {
		if !ok {
			m.closeResources()
		}
	}()

	m.h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("vmac: netlink: %w", err)
	}
	if m.ns, err = netns.Get(); err != nil {
		return nil, fmt.Errorf("vmac: network namespace: %w", err)
	}
	known, err := readState(cfg.StateDir)
	if err != nil {
		m.log.Warn("ignoring unreadable state file", "error", err)
		known = map[string]net.HardwareAddr{}
	}
	perms := map[string]net.HardwareAddr{}
	for _, ic := range cfg.Interfaces {
		link, err := m.h.LinkByName(ic.Name)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return nil, fmt.Errorf("vmac: data interface %q not found", ic.Name)
			}
			return nil, fmt.Errorf("vmac: data interface %q: %w", ic.Name, err)
		}
		attrs := link.Attrs()
		if attrs.EncapType != "ether" || len(attrs.HardwareAddr) != 6 {
			return nil, fmt.Errorf("vmac: data interface %q is not Ethernet (link type %s)", ic.Name, attrs.EncapType)
		}
		ifc := &iface{name: ic.Name, link: link, vmac: macs[ic.Name]}
		ifc.perm = m.permMAC(ifc, attrs, known[ic.Name])
		perms[ic.Name] = ifc.perm
		router := ipv6Forwarding(ic.Name)
		for _, p := range ic.Prefixes {
			a := p.Addr()
			bits := 128
			if a.Is4() {
				bits = 32
			}
			na := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}}
			var frame []byte
			if a.Is4() {
				frame, err = garpFrame(ifc.vmac, a)
				ifc.arpFrames = append(ifc.arpFrames, frame)
			} else {
				na.Flags = unix.IFA_F_NODAD
				frame, err = naFrame(ifc.vmac, a, router)
				ifc.naFrames = append(ifc.naFrames, frame)
			}
			if err != nil {
				return nil, fmt.Errorf("vmac: interface %s: %w", ic.Name, err)
			}
			ifc.addrs = append(ifc.addrs, na)
			ifc.prefixes = append(ifc.prefixes, p)
		}
		m.ifs = append(m.ifs, ifc) // before opening sockets, so a failure closes them
		ni := &net.Interface{Index: attrs.Index, Name: attrs.Name, HardwareAddr: attrs.HardwareAddr}
		if len(ifc.arpFrames) > 0 {
			c, err := packet.Listen(ni, packet.Raw, unix.ETH_P_ARP, &packet.Config{Filter: dropAll})
			if err != nil {
				return nil, fmt.Errorf("vmac: interface %s: ARP socket: %w", ic.Name, err)
			}
			ifc.arpConn = c
		}
		if len(ifc.naFrames) > 0 {
			c, err := packet.Listen(ni, packet.Raw, unix.ETH_P_IPV6, &packet.Config{Filter: dropAll})
			if err != nil {
				return nil, fmt.Errorf("vmac: interface %s: IPv6 socket: %w", ic.Name, err)
			}
			ifc.ip6Conn = c
		}
	}
	if err := writeState(cfg.StateDir, perms); err != nil {
		return nil, err
	}
	ok = true
	return m, nil
}

// permMAC picks the MAC to restore on release, see NewManager.
func (m *Manager) permMAC(ifc *iface, attrs *netlink.LinkAttrs, remembered net.HardwareAddr) net.HardwareAddr {
	usable := func(mac net.HardwareAddr) bool {
		return len(mac) == 6 && !isZero(mac) && !bytes.Equal(mac, ifc.vmac) && mac[0]&1 == 0
	}
	switch {
	case usable(remembered):
		return remembered
	case usable(attrs.PermHWAddr):
		return attrs.PermHWAddr
	case usable(attrs.HardwareAddr):
		return attrs.HardwareAddr
	}
	gen := make(net.HardwareAddr, 6)
	_, _ = rand.Read(gen)
	gen[0] = gen[0]&^0x01 | 0x02 // unicast, locally administered
	m.log.Warn("permanent MAC unknown (vMAC already set, no state, no IFLA_PERM_ADDRESS); generated one",
		"interface", ifc.name, "vmac", ifc.vmac.String(), "generated", gen.String())
	return gen
}

func isZero(mac net.HardwareAddr) bool {
	for _, b := range mac {
		if b != 0 {
			return false
		}
	}
	return true
}

// ipv6Forwarding reports whether IPv6 forwarding is on for the interface in
// the calling thread's network namespace.
func ipv6Forwarding(name string) bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + name + "/forwarding")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// Take makes this node hold the virtual MACs: for every interface it sets the
// vMAC (a live change; only if the driver refuses with EBUSY is the link
// taken down, changed and brought up again), then adds the cluster addresses
// (IPv6 without DAD), then sends the first gratuitous ARP per IPv4 address
// and unsolicited NA per IPv6 address. A goroutine sends the remaining
// ARPs-1 rounds every ARPInterval, until done or cancelled by Release, Take
// or Close.
//
// Take never sleeps. It is idempotent: a MAC or address already in place is
// fine, and a second Take restarts the burst. A failure on one interface does
// not stop the others; the errors are joined. Even on error the Manager counts
// as owning the vMACs, so that Release cleans up.
func (m *Manager) Take() (TakeReport, error) {
	rep := TakeReport{Start: time.Now()}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return rep, errors.New("vmac: manager closed")
	}
	m.cancelBurstLocked()
	m.owned = true
	m.held.Store(true)

	var errs []error
	for _, ifc := range m.ifs {
		if err := m.setMAC(ifc, ifc.vmac); err != nil {
			errs = append(errs, fmt.Errorf("vmac: %s: set vMAC %s: %w", ifc.name, ifc.vmac, err))
		}
	}
	rep.MACSet = time.Now()
	for _, ifc := range m.ifs {
		for _, a := range ifc.addrs {
			if err := m.h.AddrReplace(ifc.link, a); err != nil {
				errs = append(errs, fmt.Errorf("vmac: %s: add %s: %w", ifc.name, a.IPNet, err))
			}
		}
	}
	rep.AddrsAdded = time.Now()
	first, aerr := m.sendRoundLocked()
	rep.FirstGARP = first
	if aerr != nil {
		// The vMACs and addresses are in place: this node serves. A frame
		// that could not go out (the link is down) is not a failed
		// takeover; the burst and later announcements try again.
		rep.AnnounceErr = aerr
		m.log.Warn("could not send every announcement", "error", aerr)
	}

	if m.cfg.ARPs > 1 {
		stop := make(chan struct{})
		m.stop = stop
		m.wg.Add(1)
		go m.burst(stop, m.cfg.ARPs-1)
	}
	m.log.Info("took virtual MACs", "interfaces", len(m.ifs),
		"first_garp_after", rep.FirstGARP.Sub(rep.Start), "errors", len(errs))
	return rep, errors.Join(errs...)
}

// burst sends rounds more announcement rounds, one every ARPInterval, unless
// stop is closed first.
func (m *Manager) burst(stop chan struct{}, rounds int) {
	defer m.wg.Done()
	t := time.NewTicker(m.cfg.ARPInterval)
	defer t.Stop()
	for i := 0; i < rounds; i++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		m.mu.Lock()
		select {
		case <-stop:
			// Cancelled while waiting for the lock.
			m.mu.Unlock()
			return
		default:
		}
		if _, err := m.sendRoundLocked(); err != nil {
			m.log.Warn("gratuitous ARP round failed", "round", i+2, "error", err)
		}
		m.mu.Unlock()
	}
}

// cancelBurstLocked stops the running burst, if any. It does not wait: the
// burst goroutine re-checks its stop channel under m.mu before sending.
func (m *Manager) cancelBurstLocked() {
	if m.stop != nil {
		close(m.stop)
		m.stop = nil
	}
}

// sendRoundLocked writes one gratuitous ARP per IPv4 address and one
// unsolicited NA per IPv6 address and returns when the first one was written.
func (m *Manager) sendRoundLocked() (time.Time, error) {
	var first time.Time
	var errs []error
	send := func(ifc *iface, c frameWriter, frames [][]byte, dst net.HardwareAddr) {
		for _, f := range frames {
			_, err := c.WriteTo(f, &packet.Addr{HardwareAddr: dst})
			if errors.Is(err, unix.ENETDOWN) {
				// A link flap leaves a pending ENETDOWN on a packet socket
				// opened earlier; the failed write consumed it: try again.
				_, err = c.WriteTo(f, &packet.Addr{HardwareAddr: dst})
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("vmac: %s: send announcement: %w", ifc.name, err))
				continue
			}
			if first.IsZero() {
				first = time.Now()
			}
		}
	}
	for _, ifc := range m.ifs {
		send(ifc, ifc.arpConn, ifc.arpFrames, broadcastMAC)
		send(ifc, ifc.ip6Conn, ifc.naFrames, allNodesMAC)
	}
	return first, errors.Join(errs...)
}

// setMAC sets the interface's MAC to mac, live if the driver allows it and
// with a down/set/up cycle if it answers EBUSY.
func (m *Manager) setMAC(ifc *iface, mac net.HardwareAddr) error {
	err := m.h.LinkSetHardwareAddr(ifc.link, mac)
	if !errors.Is(err, unix.EBUSY) {
		return err
	}
	if cur, cerr := m.currentMAC(ifc); cerr == nil && bytes.Equal(cur, mac) {
		return nil
	}
	m.log.Debug("live MAC change refused, cycling the link", "interface", ifc.name)
	if err := m.h.LinkSetDown(ifc.link); err != nil {
		return err
	}
	err = m.h.LinkSetHardwareAddr(ifc.link, mac)
	if uerr := m.h.LinkSetUp(ifc.link); err == nil {
		err = uerr
	}
	return err
}

func (m *Manager) currentMAC(ifc *iface) (net.HardwareAddr, error) {
	l, err := m.h.LinkByIndex(ifc.link.Attrs().Index)
	if err != nil {
		return nil, err
	}
	return l.Attrs().HardwareAddr, nil
}

// Announce sends one extra round of gratuitous ARPs and unsolicited NAs at
// once, for example when another node has just released the vMAC and the
// switch must relearn its port. It returns ErrNotOwned if the Manager does
// not hold the vMACs.
func (m *Manager) Announce() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("vmac: manager closed")
	}
	if !m.owned {
		return ErrNotOwned
	}
	_, err := m.sendRoundLocked()
	return err
}

// Release stops the announcement burst, removes the cluster addresses and
// restores each interface's permanent MAC (only where the vMAC is set, so a
// MAC changed by someone else is left alone). It is idempotent.
func (m *Manager) Release() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("vmac: manager closed")
	}
	err := m.releaseLocked()
	m.log.Info("released virtual MACs", "error", err)
	return err
}

// Reset makes sure this node holds nothing, as after a crash of a previous
// primary: it removes the cluster addresses and restores the permanent MAC of
// every interface whose MAC is the vMAC.
func (m *Manager) Reset() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("vmac: manager closed")
	}
	for _, ifc := range m.ifs {
		if cur, err := m.currentMAC(ifc); err == nil && bytes.Equal(cur, ifc.vmac) {
			m.log.Warn("found leftover vMAC, restoring the permanent MAC",
				"interface", ifc.name, "vmac", ifc.vmac.String(), "perm", ifc.perm.String())
		}
	}
	return m.releaseLocked()
}

func (m *Manager) releaseLocked() error {
	m.cancelBurstLocked()
	m.owned = false
	m.held.Store(false)
	var errs []error
	for _, ifc := range m.ifs {
		for _, a := range ifc.addrs {
			err := m.h.AddrDel(ifc.link, a)
			if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("vmac: %s: remove %s: %w", ifc.name, a.IPNet, err))
			}
		}
		cur, err := m.currentMAC(ifc)
		if err != nil {
			errs = append(errs, fmt.Errorf("vmac: %s: %w", ifc.name, err))
			continue
		}
		if !bytes.Equal(cur, ifc.vmac) {
			continue
		}
		if err := m.setMAC(ifc, ifc.perm); err != nil {
			errs = append(errs, fmt.Errorf("vmac: %s: restore MAC %s: %w", ifc.name, ifc.perm, err))
		}
	}
	return errors.Join(errs...)
}

// Owned reports whether the Manager holds the vMACs: true after Take until
// the next Release or Reset.
func (m *Manager) Owned() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.owned
}

// Status reads the current MAC and cluster addresses of every interface from
// the kernel. An interface that cannot be read is reported with Owned false
// and no addresses.
func (m *Manager) Status() []IfaceStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]IfaceStatus, 0, len(m.ifs))
	for _, ifc := range m.ifs {
		st := IfaceStatus{
			Name:    ifc.name,
			VMAC:    append(net.HardwareAddr(nil), ifc.vmac...),
			PermMAC: append(net.HardwareAddr(nil), ifc.perm...),
		}
		if m.closed {
			out = append(out, st)
			continue
		}
		st.Restores = ifc.restores
		if cur, err := m.currentMAC(ifc); err == nil {
			st.Owned = bytes.Equal(cur, ifc.vmac)
		}
		if present, err := m.h.AddrList(ifc.link, netlink.FAMILY_ALL); err == nil {
			for i, a := range ifc.addrs {
				if hasAddr(present, a) {
					st.Addresses = append(st.Addresses, ifc.prefixes[i])
				}
			}
		}
		out = append(out, st)
	}
	return out
}

// Close stops the announcement burst and closes the sockets and the netlink
// handle. It does not release the vMACs or addresses. It is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.cancelBurstLocked()
	m.mu.Unlock()
	m.wg.Wait()
	return m.closeResources()
}

func (m *Manager) closeResources() error {
	var errs []error
	for _, ifc := range m.ifs {
		for _, c := range []frameWriter{ifc.arpConn, ifc.ip6Conn} {
			if c != nil {
				if err := c.Close(); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if m.h != nil {
		m.h.Close()
	}
	if m.ns.IsOpen() {
		m.ns.Close()
	}
	return errors.Join(errs...)
}
