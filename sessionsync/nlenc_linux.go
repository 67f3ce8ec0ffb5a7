package sessionsync

import (
	"encoding/binary"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/netfilter"
)

// nlw appends netlink messages and attributes to a buffer without
// allocating: the receiver's hot path (a bulk copy is 100 000 creates).
// Its output is byte for byte what flowAttrs and netfilter.MarshalNetlink
// give (TestFastEncoderMatchesNetfilter); those stay the reference.
type nlw struct{ b []byte }

const nlaNested = 0x8000

func (w *nlw) attr(typ uint16, data []byte) {
	n := 4 + len(data)
	w.b = binary.NativeEndian.AppendUint16(w.b, uint16(n))
	w.b = binary.NativeEndian.AppendUint16(w.b, typ)
	w.b = append(w.b, data...)
	for ; n%4 != 0; n++ {
		w.b = append(w.b, 0)
	}
}

func (w *nlw) u8(typ uint16, v uint8)   { w.attr(typ, []byte{v}) }
func (w *nlw) u16(typ uint16, v uint16) { w.attr(typ, []byte{byte(v >> 8), byte(v)}) }
func (w *nlw) u32(typ uint16, v uint32) {
	w.attr(typ, []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// triple writes a nest of three u32 attributes numbered 1, 2 and 3: a
// seqadj direction (CTA_SEQADJ_CORRECTION_POS, _OFFSET_BEFORE,
// _OFFSET_AFTER) or CTA_SYNPROXY (ISN, ITS, TSOFF).
func (w *nlw) triple(typ uint16, a, b, c uint32) {
	o := w.begin(typ)
	w.u32(1, a)
	w.u32(2, b)
	w.u32(3, c)
	w.end(o)
}

func (w *nlw) begin(typ uint16) int {
	off := len(w.b)
	w.b = append(w.b, 0, 0, 0, 0)
	binary.NativeEndian.PutUint16(w.b[off+2:], typ|nlaNested)
	return off
}

func (w *nlw) end(off int) { binary.NativeEndian.PutUint16(w.b[off:], uint16(len(w.b)-off)) }

func (w *nlw) tuple(typ uint16, proto uint8, t Tuple, zone uint16) {
	o := w.begin(typ)
	ip := w.begin(ctaTupleIP)
	if t.Src.Is4() {
		s, d := t.Src.As4(), t.Dst.As4()
		w.attr(ctaIPv4Src, s[:])
		w.attr(ctaIPv4Dst, d[:])
	} else {
		s, d := t.Src.As16(), t.Dst.As16()
		w.attr(ctaIPv6Src, s[:])
		w.attr(ctaIPv6Dst, d[:])
	}
	w.end(ip)
	p := w.begin(ctaTupleProto)
	w.u8(ctaProtoNum, proto)
	switch proto {
	case ProtoICMP:
		w.u16(ctaProtoICMPID, t.SrcPort)
		w.u8(ctaProtoICMPType, byte(t.DstPort>>8))
		w.u8(ctaProtoICMPCode, byte(t.DstPort))
	case ProtoICMPv6:
		w.u16(ctaProtoICMP6ID, t.SrcPort)
		w.u8(ctaProtoICMP6Typ, byte(t.DstPort>>8))
		w.u8(ctaProtoICMP6Cod, byte(t.DstPort))
	default:
		w.u16(ctaProtoSrcPort, t.SrcPort)
		w.u16(ctaProtoDstPort, t.DstPort)
	}
	w.end(p)
	if zone != 0 {
		w.u16(ctaTupleZone, zone)
	}
	w.end(o)
}

func (w *nlw) nat(typ uint16, proto uint8, addr [16]byte, v4 bool, port uint16) {
	o := w.begin(typ)
	if v4 {
		w.attr(ctaNATv4MinIP, addr[12:])
		w.attr(ctaNATv4MaxIP, addr[12:])
	} else {
		w.attr(ctaNATv6MinIP, addr[:])
		w.attr(ctaNATv6MaxIP, addr[:])
	}
	if proto != ProtoICMP && proto != ProtoICMPv6 {
		p := w.begin(ctaNATProto)
		w.u16(ctaProtoNATPortMin, port)
		w.u16(ctaProtoNATPortMax, port)
		w.end(p)
	}
	w.end(o)
}

// message appends one IPCTNL_MSG_CT_NEW (create or update) or
// IPCTNL_MSG_CT_DELETE for r with sequence number seq.
func (w *nlw) message(r *Record, create bool, seq uint32) {
	f := &r.Flow
	start := len(w.b)
	typ := uint16(netfilter.NFSubsysCTNetlink)<<8 | ipctnlMsgCtNew
	flags := netlink.Request | netlink.Acknowledge
	if r.Op == OpDelete {
		typ = uint16(netfilter.NFSubsysCTNetlink)<<8 | ipctnlMsgCtDelete
	} else if create {
		flags |= netlink.Create | netlink.Excl
	}
	w.b = binary.NativeEndian.AppendUint32(w.b, 0) // length, below
	w.b = binary.NativeEndian.AppendUint16(w.b, typ)
	w.b = binary.NativeEndian.AppendUint16(w.b, uint16(flags))
	w.b = binary.NativeEndian.AppendUint32(w.b, seq)
	w.b = binary.NativeEndian.AppendUint32(w.b, 0)
	fam := uint8(netfilter.ProtoIPv4)
	if f.IPv6() {
		fam = uint8(netfilter.ProtoIPv6)
	}
	w.b = append(w.b, fam, 0, 0, 0) // nfgenmsg: family, version 0, res_id 0
	w.tuple(ctaTupleOrig, f.Proto, f.Orig, f.Zone)
	if r.Op == OpDelete {
		if f.Zone != 0 {
			w.u16(ctaZone, f.Zone)
		}
	} else {
		if create {
			reply := f.Reply
			if f.NAT() {
				reply = Tuple{Src: f.Orig.Dst, Dst: f.Orig.Src, SrcPort: f.Orig.DstPort, DstPort: f.Orig.SrcPort}
				if f.Proto == ProtoICMP || f.Proto == ProtoICMPv6 {
					reply.SrcPort, reply.DstPort = f.Reply.SrcPort, f.Reply.DstPort
				}
			}
			w.tuple(ctaTupleReply, f.Proto, reply, f.Zone)
		}
		w.u32(ctaStatus, f.Status&settableStatus|StatusConfirmed)
		w.u32(ctaTimeout, max(f.Timeout, 1))
		if f.Mark != 0 || !create {
			w.u32(ctaMark, f.Mark)
		}
		if f.Zone != 0 {
			w.u16(ctaZone, f.Zone)
		}
		if len(f.Labels) == 16 {
			w.attr(ctaLabels, f.Labels)
		}
		if f.TCP != nil || f.SCTP != nil || f.DCCP != nil {
			pi := w.begin(ctaProtoInfo)
			if t := f.TCP; t != nil {
				tcp := w.begin(ctaProtoInfoTCP)
				w.u8(ctaTCPState, t.State)
				w.u8(ctaTCPWScaleOrig, t.WScaleOrig)
				w.u8(ctaTCPWScaleReply, t.WScaleReply)
				if t.FlagsOrig != 0 || t.FlagsReply != 0 {
					w.attr(ctaTCPFlagsOrig, []byte{byte(t.FlagsOrig >> 8), byte(t.FlagsOrig >> 8)})
					w.attr(ctaTCPFlagsReply, []byte{byte(t.FlagsReply >> 8), byte(t.FlagsReply >> 8)})
				}
				w.end(tcp)
			}
			if s := f.SCTP; s != nil {
				o := w.begin(ctaProtoInfoSCTP)
				w.u8(ctaSCTPState, s.State)
				w.u32(ctaSCTPVTagOrig, s.VTagOrig)
				w.u32(ctaSCTPVTagReply, s.VTagReply)
				w.end(o)
			}
			if d := f.DCCP; d != nil {
				o := w.begin(ctaProtoInfoDCCP)
				w.u8(ctaDCCPState, d.State)
				w.u8(ctaDCCPRole, d.Role)
				var x [8]byte
				binary.BigEndian.PutUint64(x[:], d.HandshakeSeq)
				w.attr(ctaDCCPHandshakeSeq, x[:])
				w.end(o)
			}
			w.end(pi)
		}
		// The seqadj and synproxy extensions: ctnetlink_create_conntrack
		// adds both to every entry it creates and then applies these
		// (ctnetlink_change_seq_adj sets IPS_SEQ_ADJUST); an update
		// applies them only to an entry that has the extension
		// (Kernel.Apply checks that it did).
		if s := f.SeqAdj; s != nil {
			for i, typ := range [2]uint16{ctaSeqAdjOrig, ctaSeqAdjReply} {
				w.triple(typ, s[i].CorrectionPos, uint32(s[i].OffsetBefore), uint32(s[i].OffsetAfter))
			}
		}
		if p := f.SynProxy; p != nil {
			w.triple(ctaSynProxy, p.ISN, p.ITS, p.TSOff)
		}
		if create {
			v4 := f.Orig.Src.Is4()
			if f.SrcNAT() {
				w.nat(ctaNATSrc, f.Proto, f.Reply.Dst.As16(), v4, f.Reply.DstPort)
			}
			if f.DstNAT() {
				w.nat(ctaNATDst, f.Proto, f.Reply.Src.As16(), v4, f.Reply.SrcPort)
			}
			if m := f.Master; m != nil {
				w.tuple(ctaTupleMaster, m.Proto, m.Orig, 0)
			}
			if f.Helper != "" {
				h := w.begin(ctaHelp)
				w.b = binary.NativeEndian.AppendUint16(w.b, uint16(4+len(f.Helper)+1))
				w.b = binary.NativeEndian.AppendUint16(w.b, ctaHelpName)
				w.b = append(w.b, f.Helper...)
				w.b = append(w.b, 0)
				for n := 4 + len(f.Helper) + 1; n%4 != 0; n++ {
					w.b = append(w.b, 0)
				}
				w.end(h)
			}
		}
	}
	binary.NativeEndian.PutUint32(w.b[start:], uint32(len(w.b)-start))
}
