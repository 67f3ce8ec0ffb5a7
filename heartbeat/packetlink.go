package heartbeat

import (
	"bytes"
	"net"
	"sync/atomic"
	"time"

	"github.com/mdlayher/packet"
)

// Broadcast is the Ethernet broadcast address that heartbeats are sent to.
var Broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// frameConn is the part of a packet socket that packetLink uses: the seam
// between DialLink, which opens a real AF_PACKET socket, and unit tests,
// which inject fakes. Source addresses are *packet.Addr.
type frameConn interface {
	ReadFrom(b []byte) (int, net.Addr, error)
	WriteTo(b []byte, addr net.Addr) (int, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// packetLink is a Link over a frameConn: it broadcasts on Send and drops
// received frames whose source is its own MAC address.
type packetLink struct {
	name   string
	hw     net.HardwareAddr
	conn   frameConn
	bcast  net.Addr
	closed atomic.Bool
	echoes atomic.Uint64 // own frames dropped
}

// newPacketLink returns a Link named name, with MAC hw, over conn.
func newPacketLink(name string, hw net.HardwareAddr, conn frameConn) *packetLink {
	return &packetLink{
		name:  name,
		hw:    hw,
		conn:  conn,
		bcast: &packet.Addr{HardwareAddr: Broadcast},
	}
}

func (l *packetLink) Name() string                   { return l.name }
func (l *packetLink) HardwareAddr() net.HardwareAddr { return l.hw }

func (l *packetLink) Send(payload []byte) error {
	if l.closed.Load() {
		return ErrClosed
	}
	_, err := l.conn.WriteTo(payload, l.bcast)
	return l.mapErr(err)
}

func (l *packetLink) Recv(buf []byte) (int, net.HardwareAddr, error) {
	for {
		n, addr, err := l.conn.ReadFrom(buf)
		if err != nil {
			return 0, nil, l.mapErr(err)
		}
		pa, ok := addr.(*packet.Addr)
		if !ok {
			continue
		}
		if bytes.Equal(pa.HardwareAddr, l.hw) {
			l.echoes.Add(1)
			continue
		}
		return n, pa.HardwareAddr, nil
	}
}

// SetReadDeadline sets the deadline for pending and future Recv calls.
// Past it, Recv returns an error satisfying
// errors.Is(err, os.ErrDeadlineExceeded).
func (l *packetLink) SetReadDeadline(t time.Time) error {
	return l.mapErr(l.conn.SetReadDeadline(t))
}

func (l *packetLink) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	return l.conn.Close()
}

// mapErr reports any error after Close as ErrClosed.
func (l *packetLink) mapErr(err error) error {
	if err != nil && l.closed.Load() {
		return ErrClosed
	}
	return err
}
