package deferq

import (
	"encoding/binary"
	"net/netip"

	"github.com/hagent/hagent/sessionsync"
)

// CopyLen is how much of a queued packet the runner reads: an IPv4 header
// with the longest options (60) or an IPv6 header (40), and the first 20
// bytes of TCP or UDP.
const CopyLen = 80

// Timeouts (s) of a deferred flow's copy until the flow's confirm event
// sends the kernel's own: TCP's SYN_SENT and UDP's unreplied timeouts.
const (
	tcpSynSentTimeout = 120
	udpTimeout        = 30
)

// FlowOfPacket is the flow a packet that creates a new conntrack entry
// stands for: its addresses and ports are the entry's original tuple (at
// FORWARD the destination NAT is done: the rule matches no DNATed flow,
// `! --ctstate DNAT`), its reply tuple their mirror (source NAT comes
// later, at POSTROUTING: the engine replaces the copy when the confirm
// event shows it, sessionsync/defer.go). ok is false for what is not held:
// not IPv4/IPv6, not TCP or UDP, a TCP packet without SYN (a flow picked
// up mid-stream), a fragment, a header cut short. Zone 0 (a packet does
// not carry its entry's zone; a flow of another zone is held to defer).
//
// The kernel here is built without NFQA_CFG_F_CONNTRACK (the entry's
// attributes with the packet): the packet is all there is.
func FlowOfPacket(b []byte) (f sessionsync.Flow, ok bool) {
	if len(b) < 1 {
		return f, false
	}
	var l4 []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return f, false
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return f, false
		}
		if binary.BigEndian.Uint16(b[6:])&0x3fff != 0 { // MF or an offset: a fragment
			return f, false
		}
		f.Proto = b[9]
		f.Orig.Src = netip.AddrFrom4([4]byte(b[12:16]))
		f.Orig.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		l4 = b[ihl:]
	case 6:
		if len(b) < 40 {
			return f, false
		}
		f.Proto = b[6] // extension headers are not followed: not held
		f.Orig.Src = netip.AddrFrom16([16]byte(b[8:24]))
		f.Orig.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		if f.Orig.Src.Is4In6() || f.Orig.Dst.Is4In6() {
			return f, false
		}
		l4 = b[40:]
	default:
		return f, false
	}
	switch f.Proto {
	case sessionsync.ProtoTCP:
		if len(l4) < 14 || l4[13]&0x12 != 0x02 { // SYN without ACK
			return sessionsync.Flow{}, false
		}
		f.TCP = &sessionsync.TCPInfo{State: sessionsync.TCPSynSent}
		f.Timeout = tcpSynSentTimeout
	case sessionsync.ProtoUDP:
		if len(l4) < 8 {
			return sessionsync.Flow{}, false
		}
		f.Timeout = udpTimeout
	default:
		return sessionsync.Flow{}, false
	}
	f.Orig.SrcPort, f.Orig.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
	f.Reply = sessionsync.Tuple{Src: f.Orig.Dst, Dst: f.Orig.Src, SrcPort: f.Orig.DstPort, DstPort: f.Orig.SrcPort}
	return f, true
}
