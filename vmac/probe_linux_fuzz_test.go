package vmac

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/arp"
)

// FuzzIsReplyFrom fuzzes the decoder of what the pingserver's ARP socket
// receives (isReplyFrom): any frame from the segment, any target. It may
// not panic, and it says "reply from target" exactly when an independent
// reading of the bytes does: an Ethernet header, an ARP header whose
// operation is 2 (reply), a 4-byte protocol address and hardware
// addresses of the announced length, all present, and the sender protocol
// address equal to the target. A frame that claims more address bytes
// than it holds, or a 16-byte sender address (even v4-mapped), is not a
// reply from an IPv4 target.
func FuzzIsReplyFrom(f *testing.F) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	target := netip.MustParseAddr("10.77.0.1")
	frame := func(op arp.Operation, from netip.Addr) []byte {
		p, err := arp.NewPacket(op, mac, from, mac, netip.MustParseAddr("10.77.0.9"))
		if err != nil {
			f.Fatal(err)
		}
		b, err := p.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		eth := &layers.Ethernet{SrcMAC: mac, DstMAC: broadcastMAC, EthernetType: layers.EthernetTypeARP}
		out, err := serialize(eth, gopacket.Payload(b))
		if err != nil {
			f.Fatal(err)
		}
		return out
	}
	t4 := target.As4()
	reply := frame(arp.OperationReply, target)
	f.Add(reply, t4[:])                                                       // the peer's reply: true
	f.Add(frame(arp.OperationRequest, target), t4[:])                         // its request: false
	f.Add(frame(arp.OperationReply, netip.MustParseAddr("10.77.0.2")), t4[:]) // another address's reply: false
	f.Add(reply[:30], t4[:])                                                  // cut inside the addresses: false
	long := bytes.Clone(reply)
	long[18] = 0xff // hardware address length 255: more than the frame holds
	f.Add(long, t4[:])
	probe, err := probeFrame(mac, target)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(probe, t4[:]) // our own probe, looped back: false
	f.Fuzz(func(t *testing.T, b, tgt []byte) {
		if len(tgt) != 4 {
			return
		}
		target := netip.AddrFrom4([4]byte(tgt))
		got := isReplyFrom(b, target)
		if want := arpReplyFrom(b, target); got != want {
			t.Fatalf("isReplyFrom(%x, %v) = %v, want %v", b, target, got, want)
		}
	})
}

// arpReplyFrom is FuzzIsReplyFrom's reading of an Ethernet frame holding
// an ARP reply of target, straight from the bytes (RFC 826 layout).
func arpReplyFrom(b []byte, target netip.Addr) bool {
	const eth = 14
	if len(b) < eth+8 {
		return false
	}
	a := b[eth:]
	hl, pl := int(a[4]), int(a[5])
	if len(a) < 8+2*hl+2*pl || pl != 4 {
		return false
	}
	op := binary.BigEndian.Uint16(a[6:8])
	t4 := target.As4()
	return op == 2 && bytes.Equal(a[8+hl:8+hl+4], t4[:])
}
