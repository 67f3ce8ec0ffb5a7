package deferq

import (
	"net/netip"
	"testing"

	"github.com/hagent/hagent/sessionsync"
)

func ipv4(proto byte, l4 []byte) []byte {
	h := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 10, 9, 0, 1, 10, 9, 2, 2}
	return append(h, l4...)
}

func ipv6(proto byte, l4 []byte) []byte {
	h := make([]byte, 40)
	h[0], h[6] = 0x60, proto
	copy(h[8:], netip.MustParseAddr("2001:db8::1").AsSlice())
	copy(h[24:], netip.MustParseAddr("2001:db8::2").AsSlice())
	return append(h, l4...)
}

// tcp is a TCP header's first 14 bytes, ports 1234 → 80, with flags.
func tcp(flags byte) []byte {
	return []byte{0x04, 0xd2, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags}
}

// TestFlowOfPacket: a new flow's packet gives the flow's original tuple
// and its mirror; what cannot stand for a new flow is not held.
func TestFlowOfPacket(t *testing.T) {
	udp := []byte{0x30, 0x39, 0, 53, 0, 8, 0, 0}
	for _, tt := range []struct {
		name string
		pkt  []byte
		ok   bool
		want string
	}{
		{"tcp syn", ipv4(6, tcp(0x02)), true, "10.9.0.1:1234 → 10.9.2.2:80"},
		{"tcp syn v6", ipv6(6, tcp(0x02)), true, "[2001:db8::1]:1234 → [2001:db8::2]:80"},
		{"udp", ipv4(17, udp), true, "10.9.0.1:12345 → 10.9.2.2:53"},
		{"tcp syn-ack", ipv4(6, tcp(0x12)), false, ""},
		{"tcp ack (mid-stream)", ipv4(6, tcp(0x10)), false, ""},
		{"icmp", ipv4(1, []byte{8, 0, 0, 0, 0, 1, 0, 1}), false, ""},
		{"fragment", func() []byte { p := ipv4(17, udp); p[6] = 0x20; return p }(), false, ""},
		{"short tcp", ipv4(6, tcp(0x02)[:10]), false, ""},
		{"short ip", ipv4(6, nil)[:12], false, ""},
		{"bad ihl", func() []byte { p := ipv4(6, tcp(2)); p[0] = 0x4f; return p }(), false, ""},
		{"not ip", []byte{0x20, 0, 0}, false, ""},
		{"empty", nil, false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, ok := FlowOfPacket(tt.pkt)
			if ok != tt.ok {
				t.Fatalf("ok %v, want %v (%+v)", ok, tt.ok, f)
			}
			if !ok {
				return
			}
			got := netip.AddrPortFrom(f.Orig.Src, f.Orig.SrcPort).String() + " → " + netip.AddrPortFrom(f.Orig.Dst, f.Orig.DstPort).String()
			if got != tt.want {
				t.Errorf("flow %s, want %s", got, tt.want)
			}
			if f.NAT() || f.Reply.Src != f.Orig.Dst || f.Reply.SrcPort != f.Orig.DstPort {
				t.Errorf("reply %+v is not the mirror of %+v", f.Reply, f.Orig)
			}
			if f.Proto == sessionsync.ProtoTCP && (f.TCP == nil || f.TCP.State != sessionsync.TCPSynSent) {
				t.Errorf("TCP state %+v, want SYN_SENT", f.TCP)
			}
		})
	}
}

// FuzzFlowOfPacket: any bytes (the packet comes from the network) give
// no panic, and a flow only for a first TCP SYN or a UDP datagram, whose
// reply tuple mirrors the original and whose addresses are the header's.
func FuzzFlowOfPacket(f *testing.F) {
	f.Add(ipv4(6, tcp(0x02)))
	f.Add(ipv4(17, []byte{0, 53, 0, 53, 0, 8, 0, 0}))
	f.Add(ipv6(6, tcp(0x02)))
	f.Add(ipv6(6, tcp(0x12)))
	f.Add([]byte{0x4f})
	f.Fuzz(func(t *testing.T, b []byte) {
		fl, ok := FlowOfPacket(b)
		if !ok {
			return
		}
		if fl.Proto != sessionsync.ProtoTCP && fl.Proto != sessionsync.ProtoUDP {
			t.Fatalf("a flow of protocol %d", fl.Proto)
		}
		if fl.Reply.Src != fl.Orig.Dst || fl.Reply.Dst != fl.Orig.Src || fl.Reply.SrcPort != fl.Orig.DstPort || fl.Reply.DstPort != fl.Orig.SrcPort {
			t.Fatalf("reply %+v does not mirror %+v", fl.Reply, fl.Orig)
		}
		var src, dst netip.Addr
		if b[0]>>4 == 4 {
			src, dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		} else {
			src, dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		}
		if fl.Orig.Src != src || fl.Orig.Dst != dst {
			t.Fatalf("addresses %v → %v, the header says %v → %v", fl.Orig.Src, fl.Orig.Dst, src, dst)
		}
		if fl.Proto == sessionsync.ProtoTCP && (fl.TCP == nil || fl.TCP.State != sessionsync.TCPSynSent) {
			t.Fatalf("a TCP flow not in SYN_SENT: %+v", fl.TCP)
		}
	})
}
