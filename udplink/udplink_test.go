package udplink

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
)

// pair binds 127.0.0.1 and 127.0.0.2 on one free port.
func pair(t testing.TB, onForeign func(netip.AddrPort)) (*Link, *Link) {
	t.Helper()
	a1, a2 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	for try := 0; try < 20; try++ {
		probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(probe.LocalAddr().(*net.UDPAddr).Port)
		probe.Close()
		a, err := Listen(Config{Local: a1, Port: port, Peers: []netip.Addr{a1, a2}})
		if err != nil {
			continue
		}
		b, err := Listen(Config{Local: a2, Port: port, Peers: []netip.Addr{a1, a2}, OnForeign: onForeign})
		if err != nil {
			a.Close()
			continue
		}
		t.Cleanup(func() { a.Close(); b.Close() })
		return a, b
	}
	t.Fatal("no free port")
	return nil, nil
}

func TestLink(t *testing.T) {
	var foreign atomic.Int32
	a, b := pair(t, func(netip.AddrPort) { foreign.Add(1) })
	if a.Name() != "udp:127.0.0.1:"+itoa(a.LocalAddr().Port()) {
		t.Fatalf("name %q", a.Name())
	}
	if !bytes.Equal(a.HardwareAddr(), net.HardwareAddr{2, 0, 127, 0, 0, 1}) {
		t.Fatalf("hw %v", a.HardwareAddr())
	}
	// A datagram from an address that is not a peer is dropped first.
	stranger, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3)}, net.UDPAddrFromAddrPort(b.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	if _, err := stranger.Write([]byte("forged")); err != nil {
		t.Fatal(err)
	}
	if err := a.Send([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = b.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, from, err := b.Recv(buf)
	if err != nil || string(buf[:n]) != "hello" || !bytes.Equal(from, a.HardwareAddr()) {
		t.Fatalf("Recv = %q %v %v", buf[:n], from, err)
	}
	if b.Foreign() != 1 || foreign.Load() != 1 {
		t.Fatalf("foreign %d (callback %d), want 1", b.Foreign(), foreign.Load())
	}
	// a does not send to itself: nothing arrives on a.
	_ = a.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, _, err := a.Recv(buf); err == nil {
		t.Fatal("a received its own frame")
	}
	// Close unblocks Recv with heartbeat.ErrClosed.
	_ = b.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() { _, _, err := b.Recv(buf); done <- err }()
	time.Sleep(20 * time.Millisecond)
	b.Close()
	select {
	case err := <-done:
		if !errors.Is(err, heartbeat.ErrClosed) {
			t.Fatalf("Recv after Close: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock Recv")
	}
}

func TestListenErrors(t *testing.T) {
	for _, c := range []Config{
		{Local: netip.MustParseAddr("0.0.0.0"), Port: 1, Peers: []netip.Addr{netip.MustParseAddr("127.0.0.2")}},
		{Port: 1, Peers: []netip.Addr{netip.MustParseAddr("127.0.0.2")}},
		{Local: netip.MustParseAddr("127.0.0.1"), Peers: []netip.Addr{netip.MustParseAddr("127.0.0.2")}},
		{Local: netip.MustParseAddr("127.0.0.1"), Port: 1},
	} {
		if l, err := Listen(c); err == nil {
			l.Close()
			t.Errorf("Listen(%+v) accepted", c)
		}
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }
