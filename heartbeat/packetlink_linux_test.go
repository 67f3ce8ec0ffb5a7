//go:build linux

package heartbeat

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

var nsCounter atomic.Int32

// vethNetns creates a fresh network namespace holding an up veth pair
// hb0 <-> hb1 and returns its name. It is deleted in t.Cleanup.
func vethNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, AF_PACKET); run the tests as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
	name := fmt.Sprintf("hbtest-%d-%d", os.Getpid(), nsCounter.Add(1))
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v\n%s", name, err, out)
		}
	})
	run("-n", name, "link", "add", "hb0", "type", "veth", "peer", "name", "hb1")
	run("-n", name, "link", "set", "hb0", "up")
	run("-n", name, "link", "set", "hb1", "up")
	// Until the kernel's linkwatch has run (up to a second when other
	// links change on the machine), a new veth has no qdisc and drops
	// what is sent: wait for operstate UP on both ends.
	deadline := time.Now().Add(5 * time.Second)
	for _, dev := range []string{"hb0", "hb1"} {
		for {
			out, _ := exec.Command("ip", "-n", name, "-o", "link", "show", dev).CombinedOutput()
			if strings.Contains(string(out), "state UP") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not come up: %s", dev, out)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return name
}

// inNetns runs fn on a thread switched into the named namespace.
func inNetns(t *testing.T, name string, fn func()) {
	t.Helper()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // the thread would stay in the test namespace
		}
	}()
	fn()
}

func dialIn(t *testing.T, ns, ifname string, et uint16) Link {
	t.Helper()
	var (
		l   Link
		err error
	)
	inNetns(t, ns, func() { l, err = DialLink(ifname, et) })
	if err != nil {
		t.Fatalf("DialLink(%s): %v", ifname, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestDialLinkVeth(t *testing.T) {
	ns := vethNetns(t)
	a := dialIn(t, ns, "hb0", EtherTypeHA)
	a2 := dialIn(t, ns, "hb0", EtherTypeHA) // a second socket on the sender's interface
	b := dialIn(t, ns, "hb1", EtherTypeHA)
	bHC := dialIn(t, ns, "hb1", EtherTypeHC)
	if bytes.Equal(a.HardwareAddr(), b.HardwareAddr()) || len(a.HardwareAddr()) != 6 {
		t.Fatalf("MACs %v %v", a.HardwareAddr(), b.HardwareAddr())
	}

	// Option check: SO_PRIORITY is TC_PRIO_CONTROL.
	raw := a.(*packetLink).conn.(*afPacketConn).raw
	var prio int
	var gerr error
	if err := raw.Control(func(fd uintptr) { prio, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PRIORITY) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	if prio != 7 {
		t.Errorf("SO_PRIORITY = %d, want 7", prio)
	}

	c := NewCodec(testPassword, testGroup)
	f := testFrame()
	for seq := range uint64(3) {
		f.Seq = seq
		wire := mustAppend(t, c, f)
		if err := a.Send(wire); err != nil {
			t.Fatalf("Send: %v", err)
		}
		got, from, err := recvTimeout(t, b, 5*time.Second)
		if err != nil {
			t.Fatalf("seq %d: Recv: %v", seq, err)
		}
		if !bytes.Equal(from, a.HardwareAddr()) {
			t.Errorf("from %v, want %v", from, a.HardwareAddr())
		}
		var g Frame
		if err := c.Decode(got, &g); err != nil || g != f {
			t.Errorf("seq %d: Decode = %v, %+v", seq, err, g)
		}
	}
	// The other direction.
	if err := b.Send([]byte("reply-from-b-000000000000000000000000000000000000000000")); err != nil {
		t.Fatal(err)
	}
	if _, from, err := recvTimeout(t, a, 5*time.Second); err != nil || !bytes.Equal(from, b.HardwareAddr()) {
		t.Errorf("a: Recv from %v, %v", from, err)
	}
	// Own frames are not echoed, not even to a's second socket, which the
	// kernel would hand them as outgoing packets: its first frame is b's
	// reply, sent after a's three heartbeats, and then nothing.
	if got, from, err := recvTimeout(t, a2, 5*time.Second); err != nil || !bytes.Equal(from, b.HardwareAddr()) {
		t.Errorf("a2 received %q from %v, %v; want b's reply", got, from, err)
	}
	if got, _, err := recvTimeout(t, a2, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a2 received %q, %v; want nothing", got, err)
	}
	if got, _, err := recvTimeout(t, a, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a received %q, %v; want nothing (own frames)", got, err)
	}
	// A frame arriving with a's own source MAC (a hairpinning switch, a
	// loop) is dropped by the MAC check: inject one from hb1 with a raw
	// socket, then a genuine one; a must return the genuine one.
	var (
		inj *packet.Conn
		err error
	)
	inNetns(t, ns, func() {
		ifi, ierr := net.InterfaceByName("hb1")
		if ierr != nil {
			t.Error(ierr)
			return
		}
		inj, err = packet.Listen(ifi, packet.Raw, int(EtherTypeHA), nil)
	})
	if err != nil || inj == nil {
		t.Fatalf("raw socket: %v", err)
	}
	defer inj.Close()
	for _, src := range []net.HardwareAddr{a.HardwareAddr(), b.HardwareAddr()} {
		eth := ethernetFrame(t, EtherTypeHA, []byte("injected-frame-padding-padding-padding-padding-padding"))
		copy(eth[6:12], src)
		if _, err := inj.WriteTo(eth, &packet.Addr{HardwareAddr: a.HardwareAddr()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, from, err := recvTimeout(t, a, 5*time.Second); err != nil || !bytes.Equal(from, b.HardwareAddr()) {
		t.Errorf("a: Recv from %v, %v; want the frame from b's MAC", from, err)
	}
	if n := a.(*packetLink).echoes.Load(); n != 1 {
		t.Errorf("a dropped %d own-MAC frames, want 1", n)
	}

	// Ethertype binding: the 0x8891 socket saw none of the 0x8890 frames.
	if got, _, err := recvTimeout(t, bHC, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("0x8891 link received %q, %v", got, err)
	}

	// Close unblocks a pending Recv.
	errc := make(chan error, 1)
	_ = b.(deadliner).SetReadDeadline(time.Time{})
	go func() {
		_, _, err := b.Recv(make([]byte, 64))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	b.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Recv after Close = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Recv")
	}
}

// TestDialLinkCapture checks the frame on the wire with gopacket: broadcast
// destination, Ethertype, and the Heartbeat layer.
func TestDialLinkCapture(t *testing.T) {
	ns := vethNetns(t)
	a := dialIn(t, ns, "hb0", EtherTypeHC)
	var (
		capConn *packet.Conn
		err     error
	)
	inNetns(t, ns, func() {
		ifi, ierr := net.InterfaceByName("hb1")
		if ierr != nil {
			err = ierr
			return
		}
		capConn, err = packet.Listen(ifi, packet.Raw, int(EtherTypeHC), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer capConn.Close()

	c := NewCodec(nil, testGroup)
	f := testFrame()
	// A veth pair just brought up may drop the first frames (the carrier
	// comes up a moment later): send until one arrives.
	buf := make([]byte, 2048)
	var n int
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := a.Send(mustAppend(t, c, f)); err != nil {
			t.Fatal(err)
		}
		_ = capConn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, _, err = capConn.ReadFrom(buf); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	pkt := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if eth == nil {
		t.Fatalf("no Ethernet layer: %v", pkt)
	}
	if !bytes.Equal(eth.DstMAC, Broadcast) || !bytes.Equal(eth.SrcMAC, a.HardwareAddr()) || uint16(eth.EthernetType) != EtherTypeHC {
		t.Errorf("Ethernet header %v > %v type %v", eth.SrcMAC, eth.DstMAC, eth.EthernetType)
	}
	hb, _ := pkt.Layer(LayerTypeHeartbeat).(*Heartbeat)
	if hb == nil {
		t.Fatalf("no heartbeat layer: %v", pkt)
	}
	want := f
	want.Flags |= FlagUnauthenticated
	if hb.Frame != want {
		t.Errorf("captured frame %+v", hb.Frame)
	}
}

func TestDialLinkErrors(t *testing.T) {
	if _, err := DialLink("hb-does-not-exist", EtherTypeHA); err == nil {
		t.Error("DialLink on a missing interface succeeded")
	}
}
