package sessionsync

import (
	"encoding/binary"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
)

// The event decoder's fast path.
//
// Every conntrack event the sender reads was decoded by ti-mo's
// Event.Unmarshal: an attribute decoder per nesting level, a Flow with
// every field the kernel may send, 40 allocations and ~1.9 KB per event
// (BenchmarkEventDecode). decodeEvent reads the attributes a record needs
// straight from the message into a conntrack.Flow on the stack and hands
// it to fromTiMo, the conversion both paths share. It takes only the
// shape the kernel sends for a plain flow (tuples, status, timeout, mark,
// zone, labels, TCP state, SYN proxy); anything else (a helper, a master,
// sequence adjustments, SCTP or DCCP state, counters, timestamps,
// an attribute seen twice, a length out of place) goes to ti-mo, whose
// result is then the answer. FuzzEventDecode holds the two to the same
// result whenever the fast path answers.

// ctnetlink attribute numbers read or skipped by the fast path
// (nfnetlink_conntrack.h), beside those of kernel_linux.go.
const (
	ctaUse        = 11
	ctaID         = 12
	ctaSecMark    = 17
	ctaMarkMask   = 21
	ctaLabelsMask = 23
	ctaStatusMask = 26

	nlaTypeMask = 0x3fff
)

// nlAttrs walks the netlink attributes of b: fn gets each one's type
// (flags masked off), whether it is nested, and its payload. ok is false
// when a length does not fit or fn refuses.
func nlAttrs(b []byte, fn func(typ uint16, nested bool, data []byte) bool) bool {
	for len(b) > 0 {
		if len(b) < 4 {
			return false
		}
		l := int(binary.NativeEndian.Uint16(b))
		t := binary.NativeEndian.Uint16(b[2:])
		if l < 4 || l > len(b) {
			return false
		}
		if !fn(t&nlaTypeMask, t&nlaNested != 0, b[4:l]) {
			return false
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return true
}

// decodeEvent decodes a conntrack (not expectation) event message. ok is
// false when the fast path does not take it: decode it with ti-mo.
func decodeEvent(m netlink.Message) (f Flow, typ EventType, valid, ok bool) {
	if len(m.Data) < 4 || netfilter.SubsystemID(uint16(m.Header.Type)>>8) != netfilter.NFSubsysCTNetlink {
		return Flow{}, 0, false, false
	}
	switch uint16(m.Header.Type) & 0xff {
	case ipctnlMsgCtNew:
		typ = EventUpdate
		if m.Header.Flags&(netlink.Create|netlink.Excl) != 0 {
			typ = EventNew
		}
	case ipctnlMsgCtDelete:
		typ = EventDestroy
	default:
		return Flow{}, 0, false, false
	}
	var (
		cf   conntrack.Flow
		tcp  conntrack.ProtoInfoTCP
		seen uint32 // top-level attributes seen (types below 32)
	)
	ok = nlAttrs(m.Data[4:], func(t uint16, nested bool, d []byte) bool {
		if t >= 32 || seen&(1<<t) != 0 {
			return false
		}
		seen |= 1 << t
		switch t {
		case ctaTupleOrig:
			return nested && decodeTuple(d, &cf.TupleOrig)
		case ctaTupleReply:
			return nested && decodeTuple(d, &cf.TupleReply)
		case ctaStatus:
			return u32Attr(d, (*uint32)(&cf.Status))
		case ctaTimeout:
			return u32Attr(d, &cf.Timeout)
		case ctaMark:
			return u32Attr(d, &cf.Mark)
		case ctaZone:
			return u16Attr(d, &cf.Zone)
		case ctaUse, ctaID:
			var x uint32
			return u32Attr(d, &x)
		case ctaLabels:
			cf.Labels = d
			return true
		case ctaProtoInfo:
			if !nested || !decodeProtoInfoTCP(d, &tcp) {
				return false
			}
			cf.ProtoInfo.TCP = &tcp
			return true
		case ctaSynProxy:
			// Every entry ctnetlink creates has the extension (zeros).
			return nested && decodeSynProxy(d, &cf.SynProxy)
		case ctaNATSrc, ctaNATDst, ctaSecMark, ctaMarkMask, ctaLabelsMask, ctaStatusMask:
			return true // not read by ti-mo either
		}
		return false
	})
	if !ok {
		return Flow{}, 0, false, false
	}
	f, valid = fromTiMo(&cf)
	return f, typ, valid, true
}

// decodeTuple reads CTA_TUPLE_IP (one source, one destination),
// CTA_TUPLE_PROTO and CTA_TUPLE_ZONE, each at most once.
func decodeTuple(b []byte, t *conntrack.Tuple) bool {
	var seen, n uint8
	ok := nlAttrs(b, func(typ uint16, _ bool, d []byte) bool {
		n++
		if typ > 3 || typ == 0 || seen&(1<<typ) != 0 {
			return false
		}
		seen |= 1 << typ
		switch typ {
		case ctaTupleIP:
			return decodeIPTuple(d, &t.IP)
		case ctaTupleProto:
			return decodeProtoTuple(d, &t.Proto)
		default:
			return u16Attr(d, &t.Zone)
		}
	})
	return ok && n >= 2
}

func decodeIPTuple(b []byte, t *conntrack.IPTuple) bool {
	var src, dst bool
	ok := nlAttrs(b, func(typ uint16, _ bool, d []byte) bool {
		a, ok := netip.AddrFromSlice(d)
		if !ok {
			return false
		}
		switch {
		case (typ == 1 || typ == 3) && !src:
			t.SourceAddress, src = a, true
		case (typ == 2 || typ == 4) && !dst:
			t.DestinationAddress, dst = a, true
		default:
			return false
		}
		return true
	})
	return ok && src && dst
}

func decodeProtoTuple(b []byte, t *conntrack.ProtoTuple) bool {
	var seen uint16
	ok := nlAttrs(b, func(typ uint16, _ bool, d []byte) bool {
		if typ == 0 || typ > 9 || seen&(1<<typ) != 0 {
			return false
		}
		seen |= 1 << typ
		switch typ {
		case 1: // CTA_PROTO_NUM
			if !u8Attr(d, &t.Protocol) {
				return false
			}
			t.ICMPv4, t.ICMPv6 = t.Protocol == ProtoICMP, t.Protocol == ProtoICMPv6
			return true
		case 2:
			return u16Attr(d, &t.SourcePort)
		case 3:
			return u16Attr(d, &t.DestinationPort)
		case 4, 7: // ICMP and ICMPv6 id
			return seen&(1<<4|1<<7) != 1<<4|1<<7 && u16Attr(d, &t.ICMPID)
		case 5, 8: // type
			return seen&(1<<5|1<<8) != 1<<5|1<<8 && u8Attr(d, &t.ICMPType)
		default: // 6, 9: code
			return seen&(1<<6|1<<9) != 1<<6|1<<9 && u8Attr(d, &t.ICMPCode)
		}
	})
	return ok && seen != 0
}

// decodeProtoInfoTCP reads a CTA_PROTOINFO holding CTA_PROTOINFO_TCP
// alone; other protocols' state goes to ti-mo.
func decodeProtoInfoTCP(b []byte, p *conntrack.ProtoInfoTCP) bool {
	n := 0
	ok := nlAttrs(b, func(typ uint16, _ bool, d []byte) bool {
		n++
		if typ != 1 || n > 1 { // CTA_PROTOINFO_TCP
			return false
		}
		var seen uint8
		return nlAttrs(d, func(typ uint16, _ bool, d []byte) bool {
			if typ == 0 || typ > 5 || seen&(1<<typ) != 0 {
				return false
			}
			seen |= 1 << typ
			switch typ {
			case 1:
				return u8Attr(d, &p.State)
			case 2:
				return u8Attr(d, &p.OriginalWindowScale)
			case 3:
				return u8Attr(d, &p.ReplyWindowScale)
			case 4:
				return u16Attr(d, &p.OriginalFlags)
			default:
				return u16Attr(d, &p.ReplyFlags)
			}
		}) && seen != 0
	})
	return ok && n == 1
}

// decodeSynProxy reads CTA_SYNPROXY: ISN, ITS, TSOFF, each at most once.
func decodeSynProxy(b []byte, p *conntrack.SynProxy) bool {
	var seen uint8
	return nlAttrs(b, func(typ uint16, _ bool, d []byte) bool {
		if typ == 0 || typ > 3 || seen&(1<<typ) != 0 {
			return false
		}
		seen |= 1 << typ
		switch typ {
		case 1:
			return u32Attr(d, &p.ISN)
		case 2:
			return u32Attr(d, &p.ITS)
		default:
			return u32Attr(d, &p.TSOff)
		}
	}) && seen != 0
}

func u8Attr(d []byte, v *uint8) bool {
	if len(d) != 1 {
		return false
	}
	*v = d[0]
	return true
}

func u16Attr(d []byte, v *uint16) bool {
	if len(d) != 2 {
		return false
	}
	*v = binary.BigEndian.Uint16(d)
	return true
}

func u32Attr(d []byte, v *uint32) bool {
	if len(d) != 4 {
		return false
	}
	*v = binary.BigEndian.Uint32(d)
	return true
}
