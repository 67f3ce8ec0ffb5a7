package heartbeat

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/mdlayher/packet"
)

// fakeConn is a frameConn fed from a channel, for testing packetLink
// without root.
type fakeConn struct {
	in     chan fakeRead
	sent   chan fakeWrite
	closed chan struct{}
}

type fakeRead struct {
	payload []byte
	from    net.Addr
}

type fakeWrite struct {
	payload []byte
	to      net.Addr
}

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan fakeRead, 8), sent: make(chan fakeWrite, 8), closed: make(chan struct{})}
}

func (c *fakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case r := <-c.in:
		return copy(b, r.payload), r.from, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.sent <- fakeWrite{append([]byte(nil), b...), addr}
	return len(b), nil
}

func (c *fakeConn) SetReadDeadline(time.Time) error { return nil }
func (c *fakeConn) Close() error                    { close(c.closed); return nil }

func TestPacketLink(t *testing.T) {
	own := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	peer := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	fc := newFakeConn()
	l := newPacketLink("ha1", own, fc)
	if l.Name() != "ha1" || !bytes.Equal(l.HardwareAddr(), own) {
		t.Fatalf("Name %q, HardwareAddr %v", l.Name(), l.HardwareAddr())
	}

	if err := l.Send([]byte("hb")); err != nil {
		t.Fatal(err)
	}
	w := <-fc.sent
	if pa, ok := w.to.(*packet.Addr); !ok || !bytes.Equal(pa.HardwareAddr, Broadcast) || string(w.payload) != "hb" {
		t.Errorf("sent %q to %v, want broadcast", w.payload, w.to)
	}

	// Own frames (looped back by the kernel or another socket) are skipped.
	fc.in <- fakeRead{[]byte("echo"), &packet.Addr{HardwareAddr: own}}
	fc.in <- fakeRead{[]byte("peer"), &packet.Addr{HardwareAddr: peer}}
	buf := make([]byte, 16)
	n, from, err := l.Recv(buf)
	if err != nil || string(buf[:n]) != "peer" || !bytes.Equal(from, peer) {
		t.Errorf("Recv = %q from %v, %v; want peer's frame", buf[:n], from, err)
	}
	if l.echoes.Load() != 1 {
		t.Errorf("echoes = %d, want 1", l.echoes.Load())
	}

	errc := make(chan error, 1)
	go func() {
		_, _, err := l.Recv(buf)
		errc <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Recv after Close = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Recv")
	}
	if err := l.Send([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close = %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}
