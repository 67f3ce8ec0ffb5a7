package sessionsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Protocol numbers the filter distinguishes.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// Conntrack status bits (include/uapi/linux/netfilter/nf_conntrack_common.h).
const (
	StatusExpected  = 1 << 0
	StatusSeenReply = 1 << 1
	StatusAssured   = 1 << 2
	StatusConfirmed = 1 << 3
	StatusSrcNAT    = 1 << 4
	StatusDstNAT    = 1 << 5
	StatusDying     = 1 << 9
)

// CopyStatus are the status bits a received copy may carry; a receiver
// clears the others (trust.go, TestStatusMasked). Per bit
// (nf_conntrack_common.h):
//
//	EXPECTED (0)       cleared: the kernel sets it itself for a copy created
//	                   with its master (CTA_TUPLE_MASTER, Flow.Master)
//	SEEN_REPLY (1)     kept: both directions seen (TCP established)
//	ASSURED (2)        kept: not evicted early; the kernel needs it on a copy
//	                   of an established flow
//	CONFIRMED (3)      kept: every copy is created confirmed (in the hash)
//	SRC_NAT, DST_NAT   cleared: the kernel sets them from CTA_NAT_SRC/DST,
//	 (4-5), *_NAT_DONE which the copy's tuples give; not settable directly
//	 (7-8)
//	SEQ_ADJUST (6)     cleared: the kernel sets it from CTA_SEQ_ADJ_ORIG/REPLY
//	                   (Flow.SeqAdj)
//	DYING (9)          cleared: never sent (a dying flow is not copied)
//	FIXED_TIMEOUT (10) cleared: a copy's timeout is refreshed by the sender
//	TEMPLATE (11)      cleared: templates are not flows
//	NAT_CLASH /        cleared: set by the kernel for its own entries only
//	 UNTRACKED (12)
//	HELPER (13)        cleared: a helper comes with CTA_HELP (Flow.Helper),
//	                   which Config.Helpers limits
//	OFFLOAD (14),      cleared: flowtable state of the sender's kernel
//	 HW_OFFLOAD (15)
//
// ctnetlink itself accepts only SEEN_REPLY, ASSURED and CONFIRMED at
// creation (kernel_linux.go writes nothing else either).
const CopyStatus = StatusSeenReply | StatusAssured | StatusConfirmed

// senderStatus are the bits a sender's kernel reports for a live flow it
// copies (EXPECTED for a related connection, the NAT bits, FIXED_TIMEOUT,
// NAT_CLASH, HELPER, OFFLOAD, HW_OFFLOAD): cleared from a copy without
// notice. A record with any other bit outside CopyStatus (DYING, TEMPLATE,
// an undefined bit) is no sender's: it is counted (status_masked).
const senderStatus = CopyStatus | 1<<0 | 1<<4 | 1<<5 | 1<<6 | 1<<7 | 1<<8 | 1<<10 | 1<<12 | 1<<13 | 1<<14 | 1<<15

// TCP conntrack states (enum tcp_conntrack).
const (
	TCPNone        = 0
	TCPSynSent     = 1
	TCPSynRecv     = 2
	TCPEstablished = 3
)

// Tuple is one direction of a flow. For ICMP, SrcPort carries the
// identifier and DstPort the type (high byte) and code (low byte).
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

// Key identifies a flow in a kernel table: its zone, protocol and
// original tuple.
type Key struct {
	Zone  uint16
	Proto uint8
	Orig  Tuple
}

// TCPInfo is the TCP state a flow carries (CTA_PROTOINFO_TCP).
type TCPInfo struct {
	State                   uint8
	WScaleOrig, WScaleReply uint8
	FlagsOrig, FlagsReply   uint16
}

// Flow is one connection-tracking entry as sessionsync copies it.
type Flow struct {
	Proto   uint8
	Orig    Tuple
	Reply   Tuple
	Status  uint32
	Timeout uint32 // seconds left
	Mark    uint32
	Zone    uint16
	// Labels are the 128 conntrack label bits; nil when the flow has none.
	Labels []byte
	// TCP is the TCP state; nil for other protocols.
	TCP *TCPInfo
	// Helper is the name of the connection-tracking helper attached to
	// the flow ("ftp", "sip"; CTA_HELP), "" for none: a copy gets the same
	// helper at its creation, so the expectations it owns can be copied.
	Helper string
	// SeqAdj is the TCP sequence adjustment of the original ([0]) and the
	// reply ([1]) direction (CTA_SEQ_ADJ_ORIG/REPLY, the seqadj
	// extension); nil when the kernel reports none (IPS_SEQ_ADJUST clear).
	// A NAT helper that rewrites a payload to another length (FTP's PORT
	// with an address of another length) sets it, and every later packet
	// of the connection is translated by it: a copy without it breaks the
	// connection (TestSeqAdjCopied, TestFTPSeqAdjFailover).
	SeqAdj *[2]SeqAdj
	// SynProxy is the SYN proxy state (CTA_SYNPROXY); nil for none.
	SynProxy *SynProxy
	// SCTP is the SCTP state (CTA_PROTOINFO_SCTP); nil for other protocols.
	SCTP *SCTPInfo
	// DCCP is the DCCP state (CTA_PROTOINFO_DCCP); nil for other protocols
	// (and always on a kernel without DCCP tracking).
	DCCP *DCCPInfo
	// Master is the connection this one is related to (CTA_TUPLE_MASTER:
	// an FTP data connection's control connection), its protocol and
	// original tuple; its Zone is the flow's. nil for none. A copy is
	// created related to the receiver's copy of the master, which the
	// kernel requires to exist (Kernel.Apply creates it unrelated, and
	// counts it, when it does not).
	Master *Key
}

// SeqAdj is one direction's sequence adjustment (struct nf_ct_seqadj):
// sequence numbers before CorrectionPos move by OffsetBefore, the others
// by OffsetAfter.
type SeqAdj struct {
	CorrectionPos             uint32
	OffsetBefore, OffsetAfter int32
}

// SynProxy is the state of a connection the SYN proxy set up (struct
// nf_conn_synproxy): the initial sequence number, the timestamp and its
// offset.
type SynProxy struct {
	ISN, ITS, TSOff uint32
}

// SCTPInfo is an SCTP association's state and verification tags.
type SCTPInfo struct {
	State               uint8
	VTagOrig, VTagReply uint32
}

// DCCPInfo is a DCCP connection's state, role and handshake sequence.
type DCCPInfo struct {
	State, Role  uint8
	HandshakeSeq uint64
}

// Extended reports whether the flow carries a kernel extension a plain
// update may leave unapplied (seqadj, synproxy): ctnetlink updates them
// only on an entry that has the extension, and silently does nothing on
// one without it.
func (f *Flow) Extended() bool { return f.SeqAdj != nil || f.SynProxy != nil }

// Key returns the flow's key.
func (f Flow) Key() Key { return Key{Zone: f.Zone, Proto: f.Proto, Orig: f.Orig} }

// IPv6 reports whether the flow is an IPv6 flow.
func (f *Flow) IPv6() bool { return f.Orig.Src.Is6() && !f.Orig.Src.Is4In6() }

// NAT reports whether the flow is source- or destination-NATed: its reply
// tuple is not the mirror of its original tuple.
func (f *Flow) NAT() bool {
	return f.Reply.Dst != f.Orig.Src || f.Reply.Src != f.Orig.Dst ||
		(f.Proto != ProtoICMP && f.Proto != ProtoICMPv6 && (f.Reply.DstPort != f.Orig.SrcPort || f.Reply.SrcPort != f.Orig.DstPort))
}

// SrcNAT reports whether the flow's source is translated (SNAT,
// masquerade): the reply goes to another address or port than the
// original came from.
func (f *Flow) SrcNAT() bool {
	if f.Reply.Dst != f.Orig.Src {
		return true
	}
	return f.Proto != ProtoICMP && f.Proto != ProtoICMPv6 && f.Reply.DstPort != f.Orig.SrcPort
}

// DstNAT reports whether the flow's destination is translated (DNAT).
func (f *Flow) DstNAT() bool {
	if f.Reply.Src != f.Orig.Dst {
		return true
	}
	return f.Proto != ProtoICMP && f.Proto != ProtoICMPv6 && f.Reply.SrcPort != f.Orig.DstPort
}

// Connectionless reports whether the flow is UDP or ICMP.
func (f *Flow) Connectionless() bool {
	return f.Proto == ProtoUDP || f.Proto == ProtoICMP || f.Proto == ProtoICMPv6
}

func (f *Flow) String() string {
	return fmt.Sprintf("proto %d %s:%d -> %s:%d zone %d", f.Proto, f.Orig.Src, f.Orig.SrcPort, f.Orig.Dst, f.Orig.DstPort, f.Zone)
}

// Op is what a record does.
type Op uint8

// Record operations. The numeric values are part of the protocol.
const (
	OpInvalid Op = 0
	OpUpsert  Op = 1 // create the flow, or update it when it exists
	OpDelete  Op = 2 // delete the flow (its key)
	// OpReplace is local to a Table, never on the wire: create the flow;
	// when it exists, delete it and create it afresh. A receiver uses it
	// for flows its table holds as its own (created by its own traffic):
	// ctnetlink cannot update what such an entry carries besides the
	// record (the masquerade interface that makes the kernel delete it
	// when an address goes, window tracking), so it becomes a plain copy.
	OpReplace Op = 3
	// OpRenew is local to a Table, never on the wire: when the flow
	// exists, delete it and create it afresh; when it does not (it ended
	// meanwhile), leave it gone. Engine.Renew uses it for the flows a
	// primary forwards: a fresh entry picks its TCP window up from the
	// next packet.
	OpRenew Op = 4
)

// Record is one operation on one flow, or, when Expect is set, on one
// expectation (Op is then OpUpsert or OpDelete, Flow unused).
type Record struct {
	Op     Op
	Flow   Flow
	Expect *Expect
}

// Kind is the kind of a message.
type Kind uint8

// Message kinds. The numeric values are part of the protocol.
const (
	KindInvalid   Kind = 0
	KindStream    Kind = 1 // records of the live stream
	KindBulkBegin Kind = 2 // a bulk copy starts (no records)
	KindBulk      Kind = 3 // records of a bulk copy
	KindBulkEnd   Kind = 4 // the bulk copy is complete (Count = flows in it)
	// A verify request and its answer (verify.go; Message does not
	// decode them). A peer that predates them counts them as malformed.
	KindVerifyRequest Kind = 5
	KindVerifyReply   Kind = 6
)

// Message is one message of the session channel.
//
// Layout (big endian):
//
//	0       2       3      4        8              16       20
//	+-------+-------+------+--------+--------------+--------+---------
//	| "SS"  | vers  | kind | gen    | oldest (ns)  | count  | records…
//	+-------+-------+------+--------+--------------+--------+---------
//
// A record:
//
//	op(1) proto(1) flags(1: 1 IPv6, 2 labels, 4 TCP) zone(2) status(4)
//	timeout(4) mark(4) orig src,dst (4 or 16 each) orig sport,dport (2 each)
//	reply src,dst reply sport,dport [labels(16)]
//	[tcp state(1) wscale orig(1) wscale reply(1) flags orig(2) flags reply(2)]
//	[helper length(1) helper name]            (flags 8)
//	[extensions length(2) extension…]          (flags 16)
//
// An extension is type(1) length(1) value, in ascending type order, each
// type at most once, every one known (the encoding stays canonical):
//
//	1 seqadj original: correction position(4) offset before(4) offset after(4)
//	2 seqadj reply:    the same
//	3 synproxy:        isn(4) its(4) tsoff(4)
//	4 SCTP:            state(1) vtag original(4) vtag reply(4)
//	5 DCCP:            state(1) role(1) handshake sequence(8)
//	6 master:          proto(1) src, dst (the flow's family) sport(2) dport(2)
//
// A record without extensions is encoded as before they existed; a
// receiver that predates them refuses a record that has one (flags 16
// unknown: malformed, counted).
//
// A delete record carries the same fields (only the key is used). An
// expectation record has the op's high bit set (0x81 upsert, 0x82
// delete); its layout is in expect.go.
type Message struct {
	Kind Kind
	// Gen is the sender's bulk generation the message belongs to.
	Gen uint32
	// Oldest is the sender's clock (unix nanoseconds) at the oldest event
	// in the message, for the replication lag; 0 when unknown.
	Oldest int64
	// Count is the number of flows of a bulk copy (KindBulkEnd).
	Count   uint32
	Records []Record
}

// Version is the protocol version of Message.
const Version = 1

const (
	headerLen = 20
	flagIPv6  = 1
	flagLabel = 2
	flagTCP   = 4
	flagHelp  = 8
	flagExt   = 16
	// opExpect marks an expectation record on the wire.
	opExpect = 0x80
	// MaxHelperName is the longest helper name (NF_CT_HELPER_NAME_LEN - 1).
	MaxHelperName = 15
)

// Errors of UnmarshalBinary.
var (
	ErrBadMagic   = errors.New("sessionsync: not a session message")
	ErrBadVersion = errors.New("sessionsync: unknown protocol version")
	ErrMalformed  = errors.New("sessionsync: malformed record")
)

func recordLen(f *Flow) int {
	n := 1 + 1 + 1 + 2 + 4 + 4 + 4 + 8
	if f.IPv6() {
		n += 4 * 16
	} else {
		n += 4 * 4
	}
	if len(f.Labels) > 0 {
		n += 16
	}
	if f.TCP != nil {
		n += 7
	}
	if f.Helper != "" {
		n += 1 + len(f.Helper)
	}
	if e := extLen(f); e > 0 {
		n += 2 + e
	}
	return n
}

// Extension types of a record (see Message).
const (
	extSeqAdjOrig  = 1
	extSeqAdjReply = 2
	extSynProxy    = 3
	extSCTP        = 4
	extDCCP        = 5
	extMaster      = 6 // its size depends on the family (masterSize)
)

// extSize is the value length of each extension type.
var extSize = [...]int{extSeqAdjOrig: 12, extSeqAdjReply: 12, extSynProxy: 12, extSCTP: 9, extDCCP: 10, extMaster: 0}

// masterSize is the size of a master extension for addresses of alen bytes.
func masterSize(alen int) int { return 1 + 2*alen + 4 }

// extLen is the length of a flow's extensions (0: none).
func extLen(f *Flow) int {
	n := 0
	if f.SeqAdj != nil {
		n += 2 * (2 + 12)
	}
	if f.SynProxy != nil {
		n += 2 + 12
	}
	if f.SCTP != nil {
		n += 2 + 9
	}
	if f.DCCP != nil {
		n += 2 + 10
	}
	if f.Master != nil {
		alen := 4
		if f.IPv6() {
			alen = 16
		}
		n += 2 + masterSize(alen)
	}
	return n
}

func appendExt(b []byte, f *Flow) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(extLen(f)))
	if s := f.SeqAdj; s != nil {
		for i, typ := range []byte{extSeqAdjOrig, extSeqAdjReply} {
			b = append(b, typ, 12)
			b = binary.BigEndian.AppendUint32(b, s[i].CorrectionPos)
			b = binary.BigEndian.AppendUint32(b, uint32(s[i].OffsetBefore))
			b = binary.BigEndian.AppendUint32(b, uint32(s[i].OffsetAfter))
		}
	}
	if p := f.SynProxy; p != nil {
		b = append(b, extSynProxy, 12)
		b = binary.BigEndian.AppendUint32(b, p.ISN)
		b = binary.BigEndian.AppendUint32(b, p.ITS)
		b = binary.BigEndian.AppendUint32(b, p.TSOff)
	}
	if s := f.SCTP; s != nil {
		b = append(b, extSCTP, 9, s.State)
		b = binary.BigEndian.AppendUint32(b, s.VTagOrig)
		b = binary.BigEndian.AppendUint32(b, s.VTagReply)
	}
	if d := f.DCCP; d != nil {
		b = append(b, extDCCP, 10, d.State, d.Role)
		b = binary.BigEndian.AppendUint64(b, d.HandshakeSeq)
	}
	if m := f.Master; m != nil {
		v6 := f.IPv6()
		alen := 4
		if v6 {
			alen = 16
		}
		b = append(b, extMaster, byte(masterSize(alen)), m.Proto)
		b = appendAddr(b, m.Orig.Src, v6)
		b = appendAddr(b, m.Orig.Dst, v6)
		b = binary.BigEndian.AppendUint16(b, m.Orig.SrcPort)
		b = binary.BigEndian.AppendUint16(b, m.Orig.DstPort)
	}
	return b
}

// decodeExt reads a record's extensions (b is exactly their bytes;
// addresses of alen bytes). Unknown, repeated, out-of-order, wrongly
// sized or missing halves (seqadj comes in both directions) are
// malformed.
func decodeExt(b []byte, f *Flow, alen int) error {
	last := 0
	var sa [2]SeqAdj
	nsa := 0
	for len(b) > 0 {
		if len(b) < 2 {
			return fmt.Errorf("%w: extension header cut", ErrMalformed)
		}
		typ, l := int(b[0]), int(b[1])
		size := 0
		if typ > 0 && typ < len(extSize) {
			size = extSize[typ]
		}
		if typ == extMaster {
			size = masterSize(alen)
		}
		if typ <= last || size == 0 || size != l || len(b) < 2+l {
			return fmt.Errorf("%w: extension %d of %d bytes", ErrMalformed, typ, l)
		}
		last = typ
		v := b[2 : 2+l]
		switch typ {
		case extSeqAdjOrig, extSeqAdjReply:
			sa[typ-extSeqAdjOrig] = SeqAdj{CorrectionPos: binary.BigEndian.Uint32(v),
				OffsetBefore: int32(binary.BigEndian.Uint32(v[4:])), OffsetAfter: int32(binary.BigEndian.Uint32(v[8:]))}
			nsa++
		case extSynProxy:
			f.SynProxy = &SynProxy{ISN: binary.BigEndian.Uint32(v), ITS: binary.BigEndian.Uint32(v[4:]), TSOff: binary.BigEndian.Uint32(v[8:])}
		case extSCTP:
			f.SCTP = &SCTPInfo{State: v[0], VTagOrig: binary.BigEndian.Uint32(v[1:]), VTagReply: binary.BigEndian.Uint32(v[5:])}
		case extDCCP:
			f.DCCP = &DCCPInfo{State: v[0], Role: v[1], HandshakeSeq: binary.BigEndian.Uint64(v[2:])}
		case extMaster:
			p := 1
			m := &Key{Zone: f.Zone, Proto: v[0]}
			m.Orig.Src = readAddr(v, &p, alen)
			m.Orig.Dst = readAddr(v, &p, alen)
			m.Orig.SrcPort, m.Orig.DstPort = binary.BigEndian.Uint16(v[p:]), binary.BigEndian.Uint16(v[p+2:])
			if m.Orig.Src.Is4In6() || m.Orig.Dst.Is4In6() {
				return fmt.Errorf("%w: IPv4-mapped master address in an IPv6 record", ErrMalformed)
			}
			f.Master = m
		}
		b = b[2+l:]
	}
	switch nsa {
	case 2:
		f.SeqAdj = &sa
	case 1:
		return fmt.Errorf("%w: sequence adjustment of one direction only", ErrMalformed)
	}
	if last == 0 {
		return fmt.Errorf("%w: empty extensions", ErrMalformed)
	}
	return nil
}

// AppendBinary appends the encoding of m to b.
func (m *Message) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, 'S', 'S', Version, byte(m.Kind))
	b = binary.BigEndian.AppendUint32(b, m.Gen)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Oldest))
	count := m.Count
	if m.Kind != KindBulkEnd {
		count = uint32(len(m.Records))
	}
	b = binary.BigEndian.AppendUint32(b, count)
	for i := range m.Records {
		var err error
		if b, err = appendRecord(b, &m.Records[i]); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// MarshalBinary encodes m.
func (m *Message) MarshalBinary() ([]byte, error) {
	n := headerLen
	for i := range m.Records {
		if e := m.Records[i].Expect; e != nil {
			n += expectLen(e)
			continue
		}
		n += recordLen(&m.Records[i].Flow)
	}
	return m.AppendBinary(make([]byte, 0, n))
}

func appendAddr(b []byte, a netip.Addr, v6 bool) []byte {
	if v6 {
		x := a.As16()
		return append(b, x[:]...)
	}
	x := a.As4()
	return append(b, x[:]...)
}

func appendRecord(b []byte, r *Record) ([]byte, error) {
	if r.Expect != nil {
		return appendExpect(b, r)
	}
	f := &r.Flow
	v6 := f.IPv6()
	addrs := []netip.Addr{f.Orig.Src, f.Orig.Dst, f.Reply.Src, f.Reply.Dst}
	if m := f.Master; m != nil {
		addrs = append(addrs, m.Orig.Src, m.Orig.Dst)
	}
	for _, a := range addrs {
		if !a.IsValid() || (a.Is6() && !a.Is4In6()) != v6 {
			return nil, fmt.Errorf("sessionsync: flow %s: addresses of mixed or no family", f)
		}
	}
	if r.Op != OpUpsert && r.Op != OpDelete {
		return nil, fmt.Errorf("sessionsync: invalid record op %d", r.Op)
	}
	if len(f.Labels) != 0 && len(f.Labels) != 16 {
		return nil, fmt.Errorf("sessionsync: flow %s: labels of %d bytes, want 16", f, len(f.Labels))
	}
	if len(f.Helper) > MaxHelperName {
		return nil, fmt.Errorf("sessionsync: flow %s: helper name %q longer than %d bytes", f, f.Helper, MaxHelperName)
	}
	var flags byte
	if v6 {
		flags |= flagIPv6
	}
	if len(f.Labels) > 0 {
		flags |= flagLabel
	}
	if f.TCP != nil {
		flags |= flagTCP
	}
	if f.Helper != "" {
		flags |= flagHelp
	}
	if extLen(f) > 0 {
		flags |= flagExt
	}
	b = append(b, byte(r.Op), f.Proto, flags)
	b = binary.BigEndian.AppendUint16(b, f.Zone)
	b = binary.BigEndian.AppendUint32(b, f.Status)
	b = binary.BigEndian.AppendUint32(b, f.Timeout)
	b = binary.BigEndian.AppendUint32(b, f.Mark)
	for _, t := range []*Tuple{&f.Orig, &f.Reply} {
		b = appendAddr(b, t.Src, v6)
		b = appendAddr(b, t.Dst, v6)
		b = binary.BigEndian.AppendUint16(b, t.SrcPort)
		b = binary.BigEndian.AppendUint16(b, t.DstPort)
	}
	if len(f.Labels) > 0 {
		b = append(b, f.Labels...)
	}
	if t := f.TCP; t != nil {
		b = append(b, t.State, t.WScaleOrig, t.WScaleReply)
		b = binary.BigEndian.AppendUint16(b, t.FlagsOrig)
		b = binary.BigEndian.AppendUint16(b, t.FlagsReply)
	}
	if f.Helper != "" {
		b = append(b, byte(len(f.Helper)))
		b = append(b, f.Helper...)
	}
	if flags&flagExt != 0 {
		b = appendExt(b, f)
	}
	return b, nil
}

// UnmarshalBinary decodes a message. Short input returns
// io.ErrUnexpectedEOF; Records are appended to m.Records[:0].
func (m *Message) UnmarshalBinary(b []byte) error {
	if len(b) < headerLen {
		return io.ErrUnexpectedEOF
	}
	if b[0] != 'S' || b[1] != 'S' {
		return ErrBadMagic
	}
	if b[2] != Version {
		return fmt.Errorf("%w %d", ErrBadVersion, b[2])
	}
	m.Kind = Kind(b[3])
	if m.Kind < KindStream || m.Kind > KindBulkEnd {
		return fmt.Errorf("sessionsync: unknown message kind %d", b[3])
	}
	m.Gen = binary.BigEndian.Uint32(b[4:])
	m.Oldest = int64(binary.BigEndian.Uint64(b[8:]))
	count := binary.BigEndian.Uint32(b[16:])
	m.Count = 0
	m.Records = m.Records[:0]
	b = b[headerLen:]
	switch m.Kind {
	case KindBulkEnd:
		m.Count = count
		if len(b) != 0 {
			return ErrMalformed
		}
		return nil
	case KindBulkBegin:
		if len(b) != 0 || count != 0 {
			return ErrMalformed
		}
		return nil
	}
	// A record is at least 41 bytes: a count larger than the input allows
	// is malformed, and no allocation is made for it.
	if uint64(count)*41 > uint64(len(b)) {
		return io.ErrUnexpectedEOF
	}
	if cap(m.Records) < int(count) {
		m.Records = make([]Record, 0, count)
	}
	for i := uint32(0); i < count; i++ {
		var r Record
		n, err := decodeRecord(b, &r)
		if err != nil {
			return err
		}
		m.Records = append(m.Records, r)
		b = b[n:]
	}
	if len(b) != 0 {
		return ErrMalformed
	}
	return nil
}

// readAddr reads an address of alen (4 or 16) bytes at b[*p] and
// advances *p; the caller checked the length.
func readAddr(b []byte, p *int, alen int) netip.Addr {
	var a netip.Addr
	if alen == 16 {
		a = netip.AddrFrom16([16]byte(b[*p : *p+16]))
	} else {
		a = netip.AddrFrom4([4]byte(b[*p : *p+4]))
	}
	*p += alen
	return a
}

func decodeRecord(b []byte, r *Record) (int, error) {
	if len(b) < 19 {
		return 0, io.ErrUnexpectedEOF
	}
	if b[0]&opExpect != 0 {
		return decodeExpect(b, r)
	}
	r.Op = Op(b[0])
	if r.Op != OpUpsert && r.Op != OpDelete {
		return 0, fmt.Errorf("%w: op %d", ErrMalformed, b[0])
	}
	f := &r.Flow
	f.Proto = b[1]
	flags := b[2]
	if flags&^(flagIPv6|flagLabel|flagTCP|flagHelp|flagExt) != 0 {
		return 0, fmt.Errorf("%w: flags %#x", ErrMalformed, flags)
	}
	f.Zone = binary.BigEndian.Uint16(b[3:])
	f.Status = binary.BigEndian.Uint32(b[5:])
	f.Timeout = binary.BigEndian.Uint32(b[9:])
	f.Mark = binary.BigEndian.Uint32(b[13:])
	alen := 4
	if flags&flagIPv6 != 0 {
		alen = 16
	}
	need := 17 + 2*(2*alen+4)
	if flags&flagLabel != 0 {
		need += 16
	}
	if flags&flagTCP != 0 {
		need += 7
	}
	if len(b) < need {
		return 0, io.ErrUnexpectedEOF
	}
	p := 17
	addr := func() netip.Addr { return readAddr(b, &p, alen) }
	for _, t := range []*Tuple{&f.Orig, &f.Reply} {
		t.Src = addr()
		t.Dst = addr()
		t.SrcPort = binary.BigEndian.Uint16(b[p:])
		t.DstPort = binary.BigEndian.Uint16(b[p+2:])
		p += 4
	}
	if alen == 16 {
		// An IPv4-mapped address would re-encode as IPv4: not canonical.
		for _, a := range []netip.Addr{f.Orig.Src, f.Orig.Dst, f.Reply.Src, f.Reply.Dst} {
			if a.Is4In6() {
				return 0, fmt.Errorf("%w: IPv4-mapped address in an IPv6 record", ErrMalformed)
			}
		}
	}
	if flags&flagLabel != 0 {
		f.Labels = append([]byte(nil), b[p:p+16]...)
		p += 16
	}
	if flags&flagTCP != 0 {
		f.TCP = &TCPInfo{State: b[p], WScaleOrig: b[p+1], WScaleReply: b[p+2],
			FlagsOrig: binary.BigEndian.Uint16(b[p+3:]), FlagsReply: binary.BigEndian.Uint16(b[p+5:])}
		p += 7
	}
	if flags&flagHelp != 0 {
		name, n, err := decodeName(b[p:])
		if err != nil {
			return 0, err
		}
		if name == "" || len(name) > MaxHelperName {
			return 0, fmt.Errorf("%w: helper name of %d bytes", ErrMalformed, len(name))
		}
		f.Helper = name
		p += n
	}
	if flags&flagExt != 0 {
		if len(b) < p+2 {
			return 0, io.ErrUnexpectedEOF
		}
		n := int(binary.BigEndian.Uint16(b[p:]))
		p += 2
		if len(b) < p+n {
			return 0, io.ErrUnexpectedEOF
		}
		if err := decodeExt(b[p:p+n], f, alen); err != nil {
			return 0, err
		}
		p += n
	}
	return p, nil
}
