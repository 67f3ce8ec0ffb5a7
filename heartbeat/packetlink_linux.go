//go:build linux

package heartbeat

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/hagent/hagent/cluster"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Socket options of heartbeat sockets.
const (
	// socketPriority is TC_PRIO_CONTROL: heartbeats go to the highest band
	// of the default qdisc, ahead of bulk traffic on a shared hbdev.
	socketPriority = 7
	// rcvBuf and sndBuf size the socket buffers. A heartbeat is a few
	// hundred bytes (about 1 KiB of kernel accounting each); 256 KiB per
	// peer of the largest cluster (3.75 MiB for 15 peers) absorbs a
	// scheduling stall of the receiver of 2.5 s with every peer at 10 ms.
	// It is an upper bound of the kernel's accounting, not an allocation.
	rcvBuf = (cluster.MaxMembers - 1) * 256 << 10
	sndBuf = 256 << 10
)

// DialLink opens a heartbeat link on interface ifname: an AF_PACKET socket
// in datagram (cooked) mode bound to etherType on that interface, in the
// network namespace of the calling thread (callers may
// runtime.LockOSThread and netns.Set around DialLink; the socket stays in
// that namespace afterwards). Send broadcasts to ff:ff:ff:ff:ff:ff without
// ever waiting for buffer space; Recv drops frames whose source MAC is the
// interface's own. The socket has SO_PRIORITY 7 (TC_PRIO_CONTROL).
//
// The returned Link also implements SetReadDeadline(time.Time) error.
func DialLink(ifname string, etherType uint16) (Link, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("heartbeat: hbdev %s: %w", ifname, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("heartbeat: hbdev %s: not an Ethernet interface", ifname)
	}
	c, err := packet.Listen(ifi, packet.Datagram, int(etherType), nil)
	if err != nil {
		return nil, fmt.Errorf("heartbeat: hbdev %s: %w", ifname, err)
	}
	raw, err := c.SyscallConn()
	if err == nil {
		err = setSockopts(raw)
	}
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("heartbeat: hbdev %s: %w", ifname, err)
	}
	var be [2]byte
	binary.BigEndian.PutUint16(be[:], etherType)
	conn := &afPacketConn{
		Conn:    c,
		raw:     raw,
		ifindex: ifi.Index,
		proto:   binary.NativeEndian.Uint16(be[:]),
	}
	hw := append(net.HardwareAddr(nil), ifi.HardwareAddr...)
	return newPacketLink(ifname, hw, conn), nil
}

// setSockopts applies the heartbeat socket options.
func setSockopts(raw syscall.RawConn) error {
	var serr error
	err := raw.Control(func(fd uintptr) {
		s := int(fd)
		if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_PRIORITY, socketPriority); serr != nil {
			serr = os.NewSyscallError("setsockopt SO_PRIORITY", serr)
			return
		}
		// The FORCE variants pass rmem_max/wmem_max with CAP_NET_ADMIN;
		// without it, take what the plain options give.
		if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf) != nil {
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
		}
		if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sndBuf) != nil {
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUF, sndBuf)
		}
		// Linux >= 4.20: do not even queue frames sent from this host;
		// older kernels rely on the source MAC check in Recv.
		_ = unix.SetsockoptInt(s, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// afPacketConn is a packet.Conn whose WriteTo never waits for socket buffer
// space: a full buffer is reported as EAGAIN (the Link contract).
type afPacketConn struct {
	*packet.Conn
	raw     syscall.RawConn
	ifindex int
	proto   uint16 // Ethertype in network byte order, as sll_protocol wants
}

// WriteTo sends b to the hardware address in addr (a *packet.Addr).
func (c *afPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	pa, ok := addr.(*packet.Addr)
	if !ok || len(pa.HardwareAddr) > 8 {
		return 0, fmt.Errorf("heartbeat: invalid destination %v", addr)
	}
	sa := &unix.SockaddrLinklayer{
		Ifindex:  c.ifindex,
		Protocol: c.proto,
		Halen:    uint8(len(pa.HardwareAddr)),
	}
	copy(sa.Addr[:], pa.HardwareAddr)
	var serr error
	err := c.raw.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b, unix.MSG_DONTWAIT, sa)
		return true // one attempt: never wait for the socket to drain
	})
	if err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, os.NewSyscallError("sendto", serr)
	}
	return len(b), nil
}
