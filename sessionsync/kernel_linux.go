package sessionsync

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// Kernel is the kernel's connection-tracking table of the current network
// namespace, over ctnetlink: events and dumps through
// github.com/ti-mo/conntrack, and writes as batches of netlink messages
// encoded with its netfilter types on a socket of its own (one sendmsg
// carries up to kernelBatch creates; ti-mo sends one message per round
// trip and cannot send CTA_NAT_SRC/CTA_NAT_DST).
type Kernel struct {
	statMu sync.Mutex // dump (Count never waits for writes or a dump)
	dump   *conntrack.Conn
	dumps  dumpSocket // dumps, streamed (Dump)
	aside  dumpSocket // a renewal's dump, beside a bulk copy's (dumpAside)
	events *eventSocket
	quiet  atomic.Bool // events are read and dropped undecoded
	// decodedFast and decodedSlow count the events decoded on the fast
	// path and by ti-mo (TestKernelEventsDecodedFast).
	decodedFast, decodedSlow atomic.Uint64

	xmu sync.Mutex      // xc
	xc  *netfilter.Conn // expectation writes (rare: one query each)

	extMu   sync.Mutex
	extLost map[string]uint64 // ExtensionsLost

	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte
	rx  []byte
	w   nlw
}

// kernelBatch is the number of netlink messages written at once.
const kernelBatch = 256

var _ Table = (*Kernel)(nil)

// OpenKernel opens the ctnetlink sockets of the current network namespace.
func OpenKernel() (*Kernel, error) {
	d, err := conntrack.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("ctnetlink: %w", err)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("ctnetlink: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		d.Close()
		return nil, fmt.Errorf("ctnetlink bind: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	// The event socket is opened here, in the caller's network namespace
	// (Listen may run on any thread).
	ev, err := openEvents()
	if err != nil {
		unix.Close(fd)
		d.Close()
		return nil, fmt.Errorf("ctnetlink events: %w", err)
	}
	dfd, err := openDumpSocket()
	if err != nil {
		ev.Close()
		unix.Close(fd)
		d.Close()
		return nil, err
	}
	afd, err := openDumpSocket()
	if err != nil {
		unix.Close(dfd)
		ev.Close()
		unix.Close(fd)
		d.Close()
		return nil, err
	}
	xc, err := netfilter.Dial(nil)
	if err != nil {
		unix.Close(afd)
		unix.Close(dfd)
		ev.Close()
		unix.Close(fd)
		d.Close()
		return nil, fmt.Errorf("ctnetlink expectations: %w", err)
	}
	return &Kernel{dump: d, events: ev, fd: fd, dumps: dumpSocket{fd: dfd}, aside: dumpSocket{fd: afd}, xc: xc, rx: make([]byte, 1<<20)}, nil
}

// Close implements Table.
func (k *Kernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fd >= 0 {
		unix.Close(k.fd)
		k.fd = -1
	}
	k.events.Close()
	k.xmu.Lock()
	k.xc.Close()
	k.xmu.Unlock()
	k.dumps.close()
	k.aside.close()
	k.statMu.Lock()
	defer k.statMu.Unlock()
	return k.dump.Close()
}

// Count implements Table.
func (k *Kernel) Count() (int, error) {
	k.statMu.Lock()
	defer k.statMu.Unlock()
	st, err := k.dump.StatsGlobal()
	if err != nil {
		return 0, err
	}
	return int(st.Entries), nil
}

// Dump implements Table. It streams: fn sees each flow as its part of
// the dump arrives (decoded with ti-mo's Event.Unmarshal), so a bulk copy
// sends while the kernel is still dumping. fn must not call k.
func (k *Kernel) Dump(fn func(*Flow)) error { return k.dumps.dump(fn) }

// dumpAside is Dump on a socket of its own: a bulk copy holds Dump's for
// as long as it sends (a minute for 1 000 000 flows on the loaded lab
// machine), and a renewal that waited for it left the windows of the
// connections it is for stale all that time (TestSessionBenchMillion:
// "0 of 1000014 flows renewed in 1m3.7s (dump 1m3.7s)").
func (k *Kernel) dumpAside(fn func(*Flow)) error { return k.aside.dump(fn) }

// dumpSocket is a ctnetlink socket for streamed dumps, one at a time.
type dumpSocket struct {
	mu  sync.Mutex // the fields, for a whole dump
	fd  int
	seq uint32
	rx  []byte
}

// openDumpSocket opens a dump socket in the caller's network namespace.
func openDumpSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err == nil {
		if err = unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		return -1, fmt.Errorf("ctnetlink dump socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	return fd, nil
}

func (d *dumpSocket) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}

func (d *dumpSocket) dump(fn func(*Flow)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		return unix.EBADF
	}
	if d.rx == nil {
		d.rx = make([]byte, 1<<20)
	}
	d.seq++
	req := make([]byte, 0, 20)
	req = binary.NativeEndian.AppendUint32(req, 20)
	req = binary.NativeEndian.AppendUint16(req, uint16(netfilter.NFSubsysCTNetlink)<<8|ipctnlMsgCtGet)
	req = binary.NativeEndian.AppendUint16(req, uint16(netlink.Request|netlink.Dump))
	req = binary.NativeEndian.AppendUint32(req, d.seq)
	req = binary.NativeEndian.AppendUint32(req, 0)
	req = append(req, unix.AF_UNSPEC, 0, 0, 0)
	if err := unix.Sendto(d.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("ctnetlink dump: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(d.fd, d.rx, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("ctnetlink dump: %w", err)
		}
		done, err := nlSplit(d.rx[:n], func(m netlink.Message) (bool, error) {
			switch {
			case m.Header.Type == netlink.Done:
				return true, nil
			case m.Header.Type == netlink.Error:
				if len(m.Data) >= 4 {
					if code := int32(binary.NativeEndian.Uint32(m.Data)); code < 0 {
						return true, syscall.Errno(-code)
					}
				}
				return true, nil
			case m.Header.Sequence == d.seq:
				var ev conntrack.Event
				if ev.Unmarshal(m) == nil && ev.Flow != nil {
					if f, ok := fromTiMo(ev.Flow); ok {
						fn(&f)
					}
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("ctnetlink dump: %w", err)
		}
		if done {
			return nil
		}
	}
}

// nlSplit calls fn for each netlink message of b, a datagram read from a
// netlink socket, until fn reports done or an error; a length that does
// not fit is an error.
func nlSplit(b []byte, fn func(m netlink.Message) (done bool, err error)) (bool, error) {
	for len(b) >= nlmsgHdrLen {
		l := int(binary.NativeEndian.Uint32(b))
		if l < nlmsgHdrLen || l > len(b) {
			return false, fmt.Errorf("bad message length %d", l)
		}
		m := netlink.Message{Header: netlink.Header{Length: uint32(l),
			Type:     netlink.HeaderType(binary.NativeEndian.Uint16(b[4:])),
			Flags:    netlink.HeaderFlags(binary.NativeEndian.Uint16(b[6:])),
			Sequence: binary.NativeEndian.Uint32(b[8:]), PID: binary.NativeEndian.Uint32(b[12:])}, Data: b[nlmsgHdrLen:l]}
		if done, err := fn(m); done || err != nil {
			return done, err
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return false, nil
}

// get reads one flow of the table (IPCTNL_MSG_CT_GET by its original
// tuple); ok is false when it is not there (or cannot be read).
func (k *Kernel) get(key Key) (Flow, bool) {
	h := netfilter.Header{SubsystemID: netfilter.NFSubsysCTNetlink, MessageType: ipctnlMsgCtGet,
		Family: netfilter.ProtoIPv4, Flags: netlinkRequestAckFlags}
	if key.Orig.Src.Is6() {
		h.Family = netfilter.ProtoIPv6
	}
	attrs := []netfilter.Attribute{tupleAttr(ctaTupleOrig, key.Proto, key.Orig, key.Zone)}
	if key.Zone != 0 {
		attrs = append(attrs, netfilter.Attribute{Type: ctaZone, Data: u16(key.Zone)})
	}
	req, err := netfilter.MarshalNetlink(h, attrs)
	if err != nil {
		return Flow{}, false
	}
	k.xmu.Lock()
	msgs, err := k.xc.Query(req)
	k.xmu.Unlock()
	if err != nil || len(msgs) == 0 {
		return Flow{}, false
	}
	var ev conntrack.Event
	if ev.Unmarshal(msgs[0]) != nil || ev.Flow == nil {
		return Flow{}, false
	}
	return fromTiMo(ev.Flow)
}

// SetQuiet makes Listen drop events without decoding them, and leaves the
// event groups so that the kernel does not build them (a secondary needs
// none; its own creates would cost an event each). Leaving quiet, the
// groups are joined before the events count again; a failure to join
// ends Listen with the error (the engine reports it as a problem).
func (k *Kernel) SetQuiet(q bool) {
	if !q {
		k.events.subscribeOrFail(true)
	}
	k.quiet.Store(q)
	if q {
		k.events.subscribeOrFail(false)
	}
}

// fromTiMo converts a ti-mo flow; ok is false for what sessionsync does
// not carry (no tuples).
func fromTiMo(t *conntrack.Flow) (Flow, bool) {
	if !t.TupleOrig.IP.SourceAddress.IsValid() || !t.TupleReply.IP.SourceAddress.IsValid() {
		return Flow{}, false
	}
	conv := func(x conntrack.Tuple) Tuple {
		tu := Tuple{Src: x.IP.SourceAddress.Unmap(), Dst: x.IP.DestinationAddress.Unmap(),
			SrcPort: x.Proto.SourcePort, DstPort: x.Proto.DestinationPort}
		if x.Proto.Protocol == ProtoICMP || x.Proto.Protocol == ProtoICMPv6 {
			tu.SrcPort, tu.DstPort = x.Proto.ICMPID, uint16(x.Proto.ICMPType)<<8|uint16(x.Proto.ICMPCode)
		}
		return tu
	}
	f := Flow{Proto: t.TupleOrig.Proto.Protocol, Orig: conv(t.TupleOrig), Reply: conv(t.TupleReply),
		Status: uint32(t.Status), Timeout: t.Timeout, Mark: t.Mark, Zone: t.Zone}
	if f.Orig.Src.Is4() != f.Reply.Src.Is4() || f.Orig.Src.Is4() != f.Orig.Dst.Is4() {
		return Flow{}, false
	}
	if len(t.Labels) == 16 {
		for _, b := range t.Labels {
			if b != 0 {
				f.Labels = append([]byte(nil), t.Labels...)
				break
			}
		}
	}
	if p := t.ProtoInfo.TCP; p != nil {
		f.TCP = &TCPInfo{State: p.State, WScaleOrig: p.OriginalWindowScale, WScaleReply: p.ReplyWindowScale,
			FlagsOrig: p.OriginalFlags, FlagsReply: p.ReplyFlags}
	}
	if n := t.Helper.Name; n != "" && len(n) <= MaxHelperName {
		f.Helper = n
	}
	// The kernel reports both directions of the adjustment when
	// IPS_SEQ_ADJUST is set (ctnetlink_dump_ct_seq_adj); the data path
	// sets it only with a non-zero offset (nf_ct_seqadj_set), so all
	// zeros is none (an event that did not carry it: Listen reads it).
	o, r := t.SeqAdjOrig, t.SeqAdjReply
	if f.Status&statusSeqAdjust != 0 && (o != conntrack.SequenceAdjust{Direction: o.Direction} || r != conntrack.SequenceAdjust{Direction: r.Direction}) {
		f.SeqAdj = &[2]SeqAdj{
			{CorrectionPos: o.Position, OffsetBefore: int32(o.OffsetBefore), OffsetAfter: int32(o.OffsetAfter)},
			{CorrectionPos: r.Position, OffsetBefore: int32(r.OffsetBefore), OffsetAfter: int32(r.OffsetAfter)}}
	}
	// Every entry ctnetlink creates has the synproxy extension, dumped
	// as zeros: only a SYN proxy's is carried.
	if p := t.SynProxy; p != (conntrack.SynProxy{}) {
		f.SynProxy = &SynProxy{ISN: p.ISN, ITS: p.ITS, TSOff: p.TSOff}
	}
	if p := t.ProtoInfo.SCTP; p != nil {
		f.SCTP = &SCTPInfo{State: p.State, VTagOrig: p.VTagOriginal, VTagReply: p.VTagReply}
	}
	if p := t.ProtoInfo.DCCP; p != nil {
		f.DCCP = &DCCPInfo{State: p.State, Role: p.Role, HandshakeSeq: p.HandshakeSeq}
	}
	// The kernel reports the master of a related connection
	// (ctnetlink_dump_master, IPS_EXPECTED).
	if m := t.TupleMaster; m.IP.SourceAddress.IsValid() {
		mk := Key{Zone: f.Zone, Proto: m.Proto.Protocol, Orig: conv(m)}
		if mk.Orig.Src.Is4() == f.Orig.Src.Is4() && mk.Orig.Dst.Is4() == f.Orig.Src.Is4() {
			f.Master = &mk
		}
	}
	return f, true
}

// statusSeqAdjust is IPS_SEQ_ADJUST: the entry's seqadj extension holds
// an adjustment.
const statusSeqAdjust = 1 << 6

// ctnetlink attribute numbers not exported by ti-mo
// (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
const (
	ctaTupleOrig   = 1
	ctaTupleReply  = 2
	ctaStatus      = 3
	ctaProtoInfo   = 4
	ctaNATSrc      = 6
	ctaTimeout     = 7
	ctaMark        = 8
	ctaNATDst      = 13
	ctaZone        = 18
	ctaLabels      = 22
	ctaHelp        = 5
	ctaHelpName    = 1
	ctaTupleMaster = 14
	ctaSeqAdjOrig  = 15
	ctaSeqAdjReply = 16
	ctaSynProxy    = 24

	// A seqadj direction's and CTA_SYNPROXY's children are numbered 1-3
	// (CTA_SEQADJ_CORRECTION_POS, _OFFSET_BEFORE, _OFFSET_AFTER; ISN, ITS,
	// TSOFF): nlw.triple and flowAttrs write them.

	ctaProtoInfoDCCP    = 2
	ctaProtoInfoSCTP    = 3
	ctaSCTPState        = 1
	ctaSCTPVTagOrig     = 2
	ctaSCTPVTagReply    = 3
	ctaDCCPState        = 1
	ctaDCCPRole         = 2
	ctaDCCPHandshakeSeq = 3

	ctaTupleIP    = 1
	ctaTupleProto = 2
	ctaTupleZone  = 3

	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4

	ctaProtoNum      = 1
	ctaProtoSrcPort  = 2
	ctaProtoDstPort  = 3
	ctaProtoICMPID   = 4
	ctaProtoICMPType = 5
	ctaProtoICMPCode = 6
	ctaProtoICMP6ID  = 7
	ctaProtoICMP6Typ = 8
	ctaProtoICMP6Cod = 9

	ctaProtoInfoTCP        = 1
	ctaTCPState            = 1
	ctaTCPWScaleOrig       = 2
	ctaTCPWScaleReply      = 3
	ctaTCPFlagsOrig        = 4
	ctaTCPFlagsReply       = 5
	ctaNATv4MinIP          = 1
	ctaNATv4MaxIP          = 2
	ctaNATProto            = 3
	ctaNATv6MinIP          = 4
	ctaNATv6MaxIP          = 5
	ctaProtoNATPortMin     = 1
	ctaProtoNATPortMax     = 2
	ipctnlMsgCtNew         = 0
	ipctnlMsgCtGet         = 1
	ipctnlMsgCtDelete      = 2
	settableStatus         = CopyStatus
	nlmsgError             = 2
	nlmsgHdrLen            = 16
	netlinkRequestAckFlags = netlink.Request | netlink.Acknowledge
)

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func tupleAttr(typ uint16, proto uint8, t Tuple, zone uint16) netfilter.Attribute {
	ipa := netfilter.Attribute{Type: ctaTupleIP, Nested: true}
	if t.Src.Is4() {
		s, d := t.Src.As4(), t.Dst.As4()
		ipa.Children = []netfilter.Attribute{{Type: ctaIPv4Src, Data: s[:]}, {Type: ctaIPv4Dst, Data: d[:]}}
	} else {
		s, d := t.Src.As16(), t.Dst.As16()
		ipa.Children = []netfilter.Attribute{{Type: ctaIPv6Src, Data: s[:]}, {Type: ctaIPv6Dst, Data: d[:]}}
	}
	pa := netfilter.Attribute{Type: ctaTupleProto, Nested: true, Children: []netfilter.Attribute{{Type: ctaProtoNum, Data: []byte{proto}}}}
	switch proto {
	case ProtoICMP:
		pa.Children = append(pa.Children, netfilter.Attribute{Type: ctaProtoICMPID, Data: u16(t.SrcPort)},
			netfilter.Attribute{Type: ctaProtoICMPType, Data: []byte{byte(t.DstPort >> 8)}},
			netfilter.Attribute{Type: ctaProtoICMPCode, Data: []byte{byte(t.DstPort)}})
	case ProtoICMPv6:
		pa.Children = append(pa.Children, netfilter.Attribute{Type: ctaProtoICMP6ID, Data: u16(t.SrcPort)},
			netfilter.Attribute{Type: ctaProtoICMP6Typ, Data: []byte{byte(t.DstPort >> 8)}},
			netfilter.Attribute{Type: ctaProtoICMP6Cod, Data: []byte{byte(t.DstPort)}})
	default:
		pa.Children = append(pa.Children, netfilter.Attribute{Type: ctaProtoSrcPort, Data: u16(t.SrcPort)},
			netfilter.Attribute{Type: ctaProtoDstPort, Data: u16(t.DstPort)})
	}
	a := netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{ipa, pa}}
	if zone != 0 {
		a.Children = append(a.Children, netfilter.Attribute{Type: ctaTupleZone, Data: u16(zone)})
	}
	return a
}

// natAttr is CTA_NAT_SRC or CTA_NAT_DST: the single address (and port) the
// kernel maps the flow to, which makes its reply tuple the one copied.
func natAttr(typ uint16, proto uint8, addr netip.Addr, port uint16) netfilter.Attribute {
	a := netfilter.Attribute{Type: typ, Nested: true}
	if addr.Is4() {
		x := addr.As4()
		a.Children = []netfilter.Attribute{{Type: ctaNATv4MinIP, Data: x[:]}, {Type: ctaNATv4MaxIP, Data: x[:]}}
	} else {
		x := addr.As16()
		a.Children = []netfilter.Attribute{{Type: ctaNATv6MinIP, Data: x[:]}, {Type: ctaNATv6MaxIP, Data: x[:]}}
	}
	if proto != ProtoICMP && proto != ProtoICMPv6 {
		a.Children = append(a.Children, netfilter.Attribute{Type: ctaNATProto, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaProtoNATPortMin, Data: u16(port)}, {Type: ctaProtoNATPortMax, Data: u16(port)}}})
	}
	return a
}

// flowAttrs encodes a flow for IPCTNL_MSG_CT_NEW: create (with NAT) or
// update (without: the kernel refuses NAT changes of an existing entry).
func flowAttrs(f *Flow, create bool) []netfilter.Attribute {
	attrs := []netfilter.Attribute{tupleAttr(ctaTupleOrig, f.Proto, f.Orig, f.Zone)}
	if create {
		// The reply tuple of a NATed flow is given un-NATed, the mirror of
		// the original: the kernel's NAT setup (CTA_NAT_SRC/DST below)
		// computes the translated one and sets IPS_SRC_NAT/IPS_DST_NAT,
		// without which no packet is translated.
		reply := f.Reply
		if f.NAT() {
			reply = Tuple{Src: f.Orig.Dst, Dst: f.Orig.Src, SrcPort: f.Orig.DstPort, DstPort: f.Orig.SrcPort}
			if f.Proto == ProtoICMP || f.Proto == ProtoICMPv6 {
				reply.SrcPort, reply.DstPort = f.Reply.SrcPort, f.Reply.DstPort
			}
		}
		attrs = append(attrs, tupleAttr(ctaTupleReply, f.Proto, reply, f.Zone))
	}
	attrs = append(attrs,
		netfilter.Attribute{Type: ctaStatus, Data: u32(f.Status&settableStatus | StatusConfirmed)},
		netfilter.Attribute{Type: ctaTimeout, Data: u32(max(f.Timeout, 1))})
	if f.Mark != 0 || !create {
		attrs = append(attrs, netfilter.Attribute{Type: ctaMark, Data: u32(f.Mark)})
	}
	if f.Zone != 0 {
		attrs = append(attrs, netfilter.Attribute{Type: ctaZone, Data: u16(f.Zone)})
	}
	if len(f.Labels) == 16 {
		attrs = append(attrs, netfilter.Attribute{Type: ctaLabels, Data: f.Labels})
	}
	pi := netfilter.Attribute{Type: ctaProtoInfo, Nested: true}
	if t := f.TCP; t != nil {
		tcp := netfilter.Attribute{Type: ctaProtoInfoTCP, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaTCPState, Data: []byte{t.State}},
			{Type: ctaTCPWScaleOrig, Data: []byte{t.WScaleOrig}},
			{Type: ctaTCPWScaleReply, Data: []byte{t.WScaleReply}},
		}}
		if t.FlagsOrig != 0 || t.FlagsReply != 0 {
			// struct nf_ct_tcp_flags {flags, mask}: the kernel reports a
			// zero mask, and applies only the masked bits: set them all.
			fl := func(v uint16) []byte { return []byte{byte(v >> 8), byte(v >> 8)} }
			tcp.Children = append(tcp.Children,
				netfilter.Attribute{Type: ctaTCPFlagsOrig, Data: fl(t.FlagsOrig)},
				netfilter.Attribute{Type: ctaTCPFlagsReply, Data: fl(t.FlagsReply)})
		}
		pi.Children = append(pi.Children, tcp)
	}
	if s := f.SCTP; s != nil {
		pi.Children = append(pi.Children, netfilter.Attribute{Type: ctaProtoInfoSCTP, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaSCTPState, Data: []byte{s.State}},
			{Type: ctaSCTPVTagOrig, Data: u32(s.VTagOrig)},
			{Type: ctaSCTPVTagReply, Data: u32(s.VTagReply)}}})
	}
	if d := f.DCCP; d != nil {
		pi.Children = append(pi.Children, netfilter.Attribute{Type: ctaProtoInfoDCCP, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaDCCPState, Data: []byte{d.State}},
			{Type: ctaDCCPRole, Data: []byte{d.Role}},
			{Type: ctaDCCPHandshakeSeq, Data: binary.BigEndian.AppendUint64(nil, d.HandshakeSeq)}}})
	}
	if len(pi.Children) > 0 {
		attrs = append(attrs, pi)
	}
	triple := func(typ uint16, a, b, c uint32) netfilter.Attribute {
		return netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{
			{Type: 1, Data: u32(a)}, {Type: 2, Data: u32(b)}, {Type: 3, Data: u32(c)}}}
	}
	if s := f.SeqAdj; s != nil {
		for i, typ := range [2]uint16{ctaSeqAdjOrig, ctaSeqAdjReply} {
			attrs = append(attrs, triple(typ, s[i].CorrectionPos, uint32(s[i].OffsetBefore), uint32(s[i].OffsetAfter)))
		}
	}
	if p := f.SynProxy; p != nil {
		attrs = append(attrs, triple(ctaSynProxy, p.ISN, p.ITS, p.TSOff))
	}
	if create {
		if f.SrcNAT() {
			attrs = append(attrs, natAttr(ctaNATSrc, f.Proto, f.Reply.Dst, f.Reply.DstPort))
		}
		if f.DstNAT() {
			attrs = append(attrs, natAttr(ctaNATDst, f.Proto, f.Reply.Src, f.Reply.SrcPort))
		}
		if m := f.Master; m != nil {
			// CTA_TUPLE_MASTER: only at creation, looked up in the flow's
			// zone (ENOENT when the master is not there).
			attrs = append(attrs, tupleAttr(ctaTupleMaster, m.Proto, m.Orig, 0))
		}
		if f.Helper != "" {
			// CTA_HELP: the kernel attaches a helper only at creation.
			attrs = append(attrs, netfilter.Attribute{Type: ctaHelp, Nested: true, Children: []netfilter.Attribute{
				{Type: ctaHelpName, Data: append([]byte(f.Helper), 0)}}})
		}
	}
	return attrs
}

// KernelError is the kernel's answer to one record.
type KernelError struct {
	Op    string
	Errno syscall.Errno
}

func (e *KernelError) Error() string { return fmt.Sprintf("ctnetlink %s: %v", e.Op, e.Errno) }

// Apply implements Table: upserts are created (with their NAT mapping);
// those that exist are updated in a second pass. OpReplace records that
// exist and OpRenew records are deleted and created in one sendmsg; an
// OpRenew whose flow had ended is deleted again.
func (k *Kernel) Apply(recs []Record) []error {
	errs := make([]error, len(recs))
	var retry, replace, noHelper, noMaster, renew, first []int
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := range recs {
		if recs[i].Op == OpRenew {
			renew = append(renew, i)
		} else if renew != nil {
			first = append(first, i)
		}
	}
	classify := func(x int, e syscall.Errno) {
		switch {
		case e == 0:
		case recs[x].Op == OpDelete && e == unix.ENOENT:
		case recs[x].Op == OpReplace && e == unix.EEXIST:
			replace = append(replace, x)
		case e == unix.EOPNOTSUPP && recs[x].Flow.Helper != "" && recs[x].Op != OpDelete:
			noHelper = append(noHelper, x)
		case (recs[x].Op == OpUpsert || recs[x].Op == OpReplace) && (e == unix.EEXIST || e == unix.EOPNOTSUPP):
			retry = append(retry, x)
		case (recs[x].Op == OpUpsert || recs[x].Op == OpReplace) && e == unix.ENOENT && recs[x].Flow.Master != nil:
			noMaster = append(noMaster, x)
		default:
			op := "create"
			if recs[x].Op == OpDelete {
				op = "delete"
			}
			errs[x] = &KernelError{Op: op, Errno: e}
		}
	}
	if renew == nil {
		for i := 0; i < len(recs); i += kernelBatch {
			j := min(i+kernelBatch, len(recs))
			for x, e := range k.exchange(recs, i, j, nil, true) {
				classify(i+x, e)
			}
		}
	} else {
		for i := 0; i < len(first); i += kernelBatch {
			idx := first[i:min(i+kernelBatch, len(first))]
			for n, e := range k.exchange(recs, 0, 0, idx, true) {
				classify(idx[n], e)
			}
		}
	}
	// Replacements: delete the existing entry and create the record's in
	// one sendmsg, pairwise (a packet between the two meets no entry for
	// microseconds; on a receiver, which forwards none of them, none does).
	var gone []Record // renewed flows that had ended: created by the pair, deleted again
	replace = append(replace, renew...)
	for i := 0; i < len(replace); i += kernelBatch / 2 {
		j := min(i+kernelBatch/2, len(replace))
		pair := make([]Record, 0, 2*(j-i))
		for _, x := range replace[i:j] {
			// Created unrelated: the master may be replaced in the same
			// batch, after it (a received copy's relation is counted lost;
			// a renewal's own entry had none to keep before either).
			cf := recs[x].Flow
			if cf.Master != nil {
				cf.Master = nil
				if recs[x].Op == OpReplace {
					k.noteExtLost("master")
				}
			}
			pair = append(pair, Record{Op: OpDelete, Flow: recs[x].Flow}, Record{Op: OpUpsert, Flow: cf})
		}
		res := k.exchange(pair, 0, len(pair), nil, true)
		for n, x := range replace[i:j] {
			del, cr := res[2*n], res[2*n+1]
			if recs[x].Op == OpRenew {
				switch {
				case del == unix.ENOENT && cr == 0:
					gone = append(gone, Record{Op: OpDelete, Flow: recs[x].Flow})
				case del == 0 && cr == unix.EEXIST:
					// Traffic created it again in between: it is fresh.
				case del == 0 && cr == 0, del == unix.ENOENT && cr == unix.EEXIST:
				default:
					errs[x] = &KernelError{Op: "renew", Errno: cmp.Or(cr, del)}
				}
				continue
			}
			switch {
			case cr == 0 && (del == 0 || del == unix.ENOENT):
			case cr == unix.EEXIST:
				retry = append(retry, x) // created again in between: update it
			case cr == unix.EOPNOTSUPP && recs[x].Flow.Helper != "":
				noHelper = append(noHelper, x)
			default:
				errs[x] = &KernelError{Op: "replace", Errno: cmp.Or(cr, del)}
			}
		}
	}
	for i := 0; i < len(gone); i += kernelBatch {
		k.exchange(gone, i, min(i+kernelBatch, len(gone)), nil, true)
	}
	// This kernel lacks the flow's helper (its module is not loaded): the
	// flow is created without it (it forwards, its expectations cannot be
	// copied). Counted by the caller through the expectations refused.
	if len(noHelper) > 0 {
		plain := make([]Record, len(noHelper))
		for n, x := range noHelper {
			plain[n] = recs[x]
			plain[n].Flow.Helper = ""
			if plain[n].Flow.Master != nil {
				plain[n].Flow.Master = nil
				k.noteExtLost("master")
			}
		}
		for i := 0; i < len(plain); i += kernelBatch {
			j := min(i+kernelBatch, len(plain))
			res := k.exchange(plain, i, j, nil, true)
			for n := i; n < j; n++ {
				x := noHelper[n]
				switch e := res[n-i]; {
				case e == 0:
				case e == unix.EEXIST:
					retry = append(retry, x)
				default:
					errs[x] = &KernelError{Op: "create", Errno: e}
				}
			}
		}
	}
	k.applyUnrelated(recs, noMaster, errs, &retry)
	var recheck []int
	for i := 0; i < len(retry); i += kernelBatch {
		j := min(i+kernelBatch, len(retry))
		res := k.exchange(recs, 0, 0, retry[i:j], false)
		for n, x := range retry[i:j] {
			switch e := res[n]; e {
			case 0:
				if recs[x].Flow.Extended() {
					recheck = append(recheck, x)
				}
			case unix.EBUSY:
				// The update would clear SEEN_REPLY or ASSURED, which the
				// kernel only lets be set: the entry is already further on
				// than this record (a bulk copy's newer state applied
				// before an older queued event). Nothing to do.
			default:
				errs[x] = &KernelError{Op: "update", Errno: e}
			}
		}
	}
	k.recheckExt(recs, recheck, errs)
	return errs
}

// applyUnrelated creates the related connections recs[idx] whose master
// was not in the table (ENOENT: ctnetlink_create_conntrack looks
// CTA_TUPLE_MASTER up): again, since a master that came later in recs
// exists now, and, for those whose master is still missing, without it
// (they forward the same; counted as "master" in ExtensionsLost). Those
// that exist meanwhile join retry (TestMasterCopied).
func (k *Kernel) applyUnrelated(recs []Record, idx []int, errs []error, retry *[]int) {
	var missing []int
	for i := 0; i < len(idx); i += kernelBatch {
		part := idx[i:min(i+kernelBatch, len(idx))]
		for n, e := range k.exchange(recs, 0, 0, part, true) {
			switch x := part[n]; e {
			case 0:
			case unix.ENOENT:
				missing = append(missing, x)
			case unix.EEXIST:
				*retry = append(*retry, x)
			default:
				errs[x] = &KernelError{Op: "create", Errno: e}
			}
		}
	}
	plain := make([]Record, len(missing))
	for n, x := range missing {
		plain[n] = recs[x]
		plain[n].Flow.Master = nil
	}
	for i := 0; i < len(plain); i += kernelBatch {
		j := min(i+kernelBatch, len(plain))
		for n, e := range k.exchange(plain, i, j, nil, true) {
			switch x := missing[i+n]; e {
			case 0:
				k.noteExtLost("master")
			case unix.EEXIST:
				*retry = append(*retry, x)
			default:
				errs[x] = &KernelError{Op: "create", Errno: e}
			}
		}
	}
}

// noteExtLost counts a flow applied without an extension it carried.
func (k *Kernel) noteExtLost(ext string) {
	k.extMu.Lock()
	if k.extLost == nil {
		k.extLost = map[string]uint64{}
	}
	k.extLost[ext]++
	k.extMu.Unlock()
}

// ExtensionsLost returns, by extension ("seqadj", "synproxy", "master"),
// the received flows applied without one they carried: a related
// connection whose master this table lacks is created unrelated; a
// seqadj or synproxy extension that could not be recreated is also an
// ExtError. Session status shows it (extensions_not_recreated).
func (k *Kernel) ExtensionsLost() map[string]uint64 {
	k.extMu.Lock()
	defer k.extMu.Unlock()
	if len(k.extLost) == 0 {
		return nil
	}
	out := make(map[string]uint64, len(k.extLost))
	for e, n := range k.extLost {
		out[e] = n
	}
	return out
}

// ExtError is a flow applied without an extension it carries: the entry
// it updated lacks the extension and could not be replaced by a copy
// that has it. Counted by reason (Status.ErrorReasons), which names the
// extension.
type ExtError struct {
	Ext string // "seqadj", "synproxy"
	Why string // the kernel's answer
}

func (e *ExtError) Error() string { return fmt.Sprintf("%s not recreated: %s", e.Ext, e.Why) }

// extMissing names the extension of want that got lacks ("" none).
func extMissing(got, want *Flow) string {
	if want.SeqAdj != nil && (got.SeqAdj == nil || *got.SeqAdj != *want.SeqAdj) {
		return "seqadj"
	}
	if want.SynProxy != nil && (got.SynProxy == nil || *got.SynProxy != *want.SynProxy) {
		return "synproxy"
	}
	return ""
}

// recheckExt reads back the entries recs[idx] updated with a seqadj or
// synproxy extension. ctnetlink_change_seq_adj and
// ctnetlink_change_synproxy do nothing, and report success, on an entry
// without the extension; ctnetlink_create_conntrack adds both to every
// entry it creates, the data path only to one with a NAT helper
// (nf_nat_setup_info) or a SYN proxy. An entry that lacks it (this
// node's own, created by its traffic) is replaced by a fresh copy, which
// has it; one that still lacks it is an ExtError (TestSeqAdjUpdate).
func (k *Kernel) recheckExt(recs []Record, idx []int, errs []error) {
	var replace []int
	for _, x := range idx {
		if g, ok := k.get(recs[x].Flow.Key()); !ok || extMissing(&g, &recs[x].Flow) != "" {
			replace = append(replace, x)
		}
	}
	for i := 0; i < len(replace); i += kernelBatch / 2 {
		part := replace[i:min(i+kernelBatch/2, len(replace))]
		pair := make([]Record, 0, 2*len(part))
		for _, x := range part {
			pair = append(pair, Record{Op: OpDelete, Flow: recs[x].Flow}, Record{Op: OpUpsert, Flow: recs[x].Flow})
		}
		res := k.exchange(pair, 0, len(pair), nil, true)
		for n, x := range part {
			want := &recs[x].Flow
			g, ok := k.get(want.Key())
			missing := "seqadj"
			if ok {
				missing = extMissing(&g, want)
			}
			if missing == "" {
				continue
			}
			why := "entry without the extension, replacement lacks it too"
			if e := res[2*n+1]; e != 0 {
				why = "entry without the extension, replacement refused: " + e.Error()
			}
			errs[x] = &ExtError{Ext: missing, Why: why}
			k.noteExtLost(missing)
		}
	}
}

// encode builds the message of r with ti-mo's netfilter types: the
// reference the fast encoder (nlw) is tested against.
func (k *Kernel) encode(r *Record, create bool) netlink.Message {
	f := &r.Flow
	h := netfilter.Header{SubsystemID: netfilter.NFSubsysCTNetlink, Family: netfilter.ProtoIPv4, Flags: netlinkRequestAckFlags}
	if f.IPv6() {
		h.Family = netfilter.ProtoIPv6
	}
	var attrs []netfilter.Attribute
	if r.Op == OpDelete {
		h.MessageType = ipctnlMsgCtDelete
		attrs = []netfilter.Attribute{tupleAttr(ctaTupleOrig, f.Proto, f.Orig, f.Zone)}
		if f.Zone != 0 {
			attrs = append(attrs, netfilter.Attribute{Type: ctaZone, Data: u16(f.Zone)})
		}
	} else {
		h.MessageType = ipctnlMsgCtNew
		if create {
			h.Flags |= netlink.Create | netlink.Excl
		}
		attrs = flowAttrs(f, create)
	}
	m, err := netfilter.MarshalNetlink(h, attrs)
	if err != nil {
		// Only an attribute larger than 64 KiB fails; none of ours is.
		panic(err)
	}
	return m
}

// exchange writes recs[from:to] (or recs[idx...] when idx is set) in one
// sendmsg and returns each one's errno (0: ok).
func (k *Kernel) exchange(recs []Record, from, to int, idx []int, create bool) []syscall.Errno {
	n := to - from
	if idx != nil {
		n = len(idx)
	}
	res := make([]syscall.Errno, n)
	if k.fd < 0 {
		for i := range res {
			res[i] = unix.EBADF
		}
		return res
	}
	base := k.seq + 1
	k.w.b = k.w.b[:0]
	for i := 0; i < n; i++ {
		x := from + i
		if idx != nil {
			x = idx[i]
		}
		k.seq++
		k.w.message(&recs[x], create, k.seq)
	}
	k.buf = k.w.b
	msgs := res // one result per message
	pending := len(msgs)
	if err := unix.Sendto(k.fd, k.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		e, _ := err.(syscall.Errno)
		if e == 0 {
			e = unix.EIO
		}
		for i := range res {
			res[i] = e
		}
		return res
	}
	got := make([]bool, len(msgs))
	for pending > 0 {
		n, _, err := unix.Recvfrom(k.fd, k.rx, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// ENOBUFS: acknowledgments were lost; the kernel did the
			// work, we cannot tell the outcome of the rest.
			for i := range res {
				if !got[i] {
					res[i] = err.(syscall.Errno)
				}
			}
			return res
		}
		b := k.rx[:n]
		for len(b) >= nlmsgHdrLen {
			l := int(binary.NativeEndian.Uint32(b))
			if l < nlmsgHdrLen || l > len(b) {
				break
			}
			typ := binary.NativeEndian.Uint16(b[4:])
			seq := binary.NativeEndian.Uint32(b[8:])
			if typ == nlmsgError && l >= nlmsgHdrLen+4 {
				i := int(seq - base)
				if i >= 0 && i < len(msgs) && !got[i] {
					got[i] = true
					pending--
					if code := int32(binary.NativeEndian.Uint32(b[16:])); code < 0 {
						res[i] = syscall.Errno(-code)
					}
				}
			}
			if a := (l + 3) &^ 3; a < len(b) {
				b = b[a:]
			} else {
				b = nil
			}
		}
	}
	return res
}
