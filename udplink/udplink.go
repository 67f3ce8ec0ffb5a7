// Package udplink carries hagent's frames in UDP datagrams between
// configured peer addresses: the transport of the unicast heartbeat
// (FGCP's unicast-hb) for VMs and clouds, where raw Ethertypes do not pass
// (overlay networks, cloud VPCs, some hypervisor switches).
//
// A Link implements heartbeat.Link, so the heartbeat and the reliable
// channels (l2chan) run over it unchanged: the frames, their
// authentication, encryption and replay rules are the same as on an hbdev.
// A Link is bound to one local address and port only, never to a wildcard
// address, sends every frame to each peer, and drops any datagram whose
// source address is not a configured peer before it reaches a decoder (no
// crypto is spent on it); such datagrams are counted and reported through
// Config.OnForeign, which the caller rate-limits.
package udplink

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hagent/hagent/heartbeat"
)

// Default ports (FGCP's).
const (
	// DefaultHeartbeatPort carries heartbeats.
	DefaultHeartbeatPort = 6065
	// DefaultSyncPort carries the configuration-sync channel.
	DefaultSyncPort = 6066
	// DefaultSessionPort carries the session-sync channel.
	DefaultSessionPort = 6067
)

// Config configures a Link.
type Config struct {
	// Name names the link in status and logs ("" gives "udp:ADDR:PORT").
	Name string
	// Local is the address to bind (it must be configured on this node);
	// Port the UDP port, the same on every member.
	Local netip.Addr
	Port  uint16
	// Peers are the other members' addresses: frames go to each, and only
	// datagrams from them are accepted.
	Peers []netip.Addr
	// OnForeign, if set, is called for each datagram from an address that
	// is not a peer (from the receiving goroutine: it must not block).
	OnForeign func(from netip.AddrPort)
}

// Link is one UDP socket bound to Config.Local:Config.Port.
type Link struct {
	cfg     Config
	conn    *net.UDPConn
	peers   []netip.AddrPort
	hw      net.HardwareAddr
	foreign atomic.Uint64
}

var _ heartbeat.Link = (*Link)(nil)

// Listen binds cfg.Local:cfg.Port.
func Listen(cfg Config) (*Link, error) {
	if !cfg.Local.IsValid() || cfg.Local.IsUnspecified() {
		return nil, fmt.Errorf("udplink: local address %v: a unicast address of this node is required", cfg.Local)
	}
	if cfg.Port == 0 {
		return nil, errors.New("udplink: port 0")
	}
	if len(cfg.Peers) == 0 {
		return nil, errors.New("udplink: no peer")
	}
	local := cfg.Local.Unmap()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, cfg.Port)))
	if err != nil {
		return nil, fmt.Errorf("udplink: %w", err)
	}
	l := &Link{cfg: cfg, conn: conn, hw: HardwareAddr(local)}
	for _, p := range cfg.Peers {
		p = p.Unmap()
		if p == local {
			continue
		}
		l.peers = append(l.peers, netip.AddrPortFrom(p, cfg.Port))
	}
	if l.cfg.Name == "" {
		l.cfg.Name = "udp:" + netip.AddrPortFrom(local, cfg.Port).String()
	}
	return l, nil
}

// HardwareAddr returns the 6-byte stand-in for a MAC that a Link reports
// for addr: 02:00 and the IPv4 address, or 02:01 and the last four bytes
// of an IPv6 address (locally administered, so it never equals a NIC's).
func HardwareAddr(addr netip.Addr) net.HardwareAddr {
	addr = addr.Unmap()
	if addr.Is4() {
		a := addr.As4()
		return net.HardwareAddr{0x02, 0x00, a[0], a[1], a[2], a[3]}
	}
	a := addr.As16()
	return net.HardwareAddr{0x02, 0x01, a[12], a[13], a[14], a[15]}
}

// Name returns the link's name.
func (l *Link) Name() string { return l.cfg.Name }

// HardwareAddr returns the stand-in MAC of the local address.
func (l *Link) HardwareAddr() net.HardwareAddr { return l.hw }

// LocalAddr is the bound address and port.
func (l *Link) LocalAddr() netip.AddrPort { return l.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// Foreign returns the number of datagrams dropped for coming from an
// address that is not a peer.
func (l *Link) Foreign() uint64 { return l.foreign.Load() }

// Send sends payload to every peer. It fails only if no peer could be
// sent to.
func (l *Link) Send(payload []byte) error {
	var first error
	sent := 0
	for _, p := range l.peers {
		if _, err := l.conn.WriteToUDPAddrPort(payload, p); err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		sent++
	}
	if sent == 0 && first != nil {
		return first
	}
	return nil
}

// Recv receives the next datagram from a peer into buf and returns its
// length and the stand-in MAC of the peer's address. Datagrams from other
// addresses are dropped (counted, OnForeign) without being returned.
func (l *Link) Recv(buf []byte) (int, net.HardwareAddr, error) {
	for {
		n, from, err := l.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return 0, nil, heartbeat.ErrClosed
			}
			return 0, nil, err
		}
		src := from.Addr().Unmap()
		if !slices.ContainsFunc(l.peers, func(p netip.AddrPort) bool { return p.Addr() == src }) {
			l.foreign.Add(1)
			if l.cfg.OnForeign != nil {
				l.cfg.OnForeign(from)
			}
			continue
		}
		return n, HardwareAddr(src), nil
	}
}

// SetReadDeadline sets the deadline of Recv.
func (l *Link) SetReadDeadline(t time.Time) error { return l.conn.SetReadDeadline(t) }

// Close closes the socket and unblocks Recv.
func (l *Link) Close() error { return l.conn.Close() }
