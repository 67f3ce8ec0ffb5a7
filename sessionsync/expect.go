package sessionsync

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
)

// Expect is one connection-tracking expectation as sessionsync copies it:
// a connection a helper (FTP, SIP, …) of its master flow expects, such as
// an FTP data connection announced on the control connection. The kernel
// matches a new connection against Tuple, its source masked by MaskSrc
// and MaskSrcPort (the destination always exactly), and tracks it as
// RELATED to the master.
type Expect struct {
	// Master is the master flow's key (its zone, protocol and original
	// tuple); the copy's master must exist with the same helper.
	Master Key
	// Proto and Tuple are the expected connection's protocol and tuple.
	Proto uint8
	Tuple Tuple
	// MaskSrc and MaskSrcPort mask the expected source address and port
	// (zero: any).
	MaskSrc     netip.Addr
	MaskSrcPort uint16
	// Timeout is the seconds left.
	Timeout uint32
	// Helper is the name of the helper that created it ("ftp").
	Helper string
	// Class and Flags are the helper's expectation class and the
	// NF_CT_EXPECT_* flags.
	Class, Flags uint32
	// Fn names the function the kernel runs when the expected connection
	// arrives ("nat-follow-master"), "" for none.
	Fn string
	// NAT, when set, is where the expected connection is NATed to (the
	// saved address and port) in direction NATDir.
	NAT     bool
	NATDir  uint8
	NATAddr netip.Addr
	NATPort uint16
}

// Key returns the expectation's key: the zone (its master's), protocol and
// the expected tuple.
func (e *Expect) Key() Key { return Key{Zone: e.Master.Zone, Proto: e.Proto, Orig: e.Tuple} }

// IPv6 reports whether the expectation is an IPv6 one.
func (e *Expect) IPv6() bool { return e.Tuple.Src.Is6() && !e.Tuple.Src.Is4In6() }

func (e *Expect) String() string {
	return fmt.Sprintf("expectation proto %d %s:%d -> %s:%d of master %s:%d -> %s:%d (%s)", e.Proto, e.Tuple.Src, e.Tuple.SrcPort, e.Tuple.Dst, e.Tuple.DstPort,
		e.Master.Orig.Src, e.Master.Orig.SrcPort, e.Master.Orig.Dst, e.Master.Orig.DstPort, e.Helper)
}

// An expectation record:
//
//	op|0x80(1) flags(1: 1 IPv6, 2 NAT) master proto(1) proto(1) zone(2)
//	timeout(4) class(4) exp flags(4)
//	master src,dst (4 or 16 each) master sport,dport (2 each)
//	tuple src,dst tuple sport,dport
//	mask src, mask sport(2)
//	[nat dir(1) nat addr nat port(2)]
//	helper length(1) helper, fn length(1) fn
const (
	expFlagIPv6 = 1
	expFlagNAT  = 2
	expFixed    = 1 + 1 + 1 + 1 + 2 + 4 + 4 + 4
	// maxFnName bounds CTA_EXPECT_FN (the kernel's names are short).
	maxFnName = 63
)

func expectLen(e *Expect) int {
	alen := 4
	if e.IPv6() {
		alen = 16
	}
	n := expFixed + 2*(2*alen+4) + alen + 2 + 2 + len(e.Helper) + len(e.Fn)
	if e.NAT {
		n += 1 + alen + 2
	}
	return n
}

func appendExpect(b []byte, r *Record) ([]byte, error) {
	e := r.Expect
	v6 := e.IPv6()
	addrs := []netip.Addr{e.Master.Orig.Src, e.Master.Orig.Dst, e.Tuple.Src, e.Tuple.Dst}
	if !e.MaskSrc.IsValid() {
		return nil, fmt.Errorf("sessionsync: %s: no source mask", e)
	}
	addrs = append(addrs, e.MaskSrc)
	if e.NAT {
		addrs = append(addrs, e.NATAddr)
	}
	for _, a := range addrs {
		if !a.IsValid() || (a.Is6() && !a.Is4In6()) != v6 {
			return nil, fmt.Errorf("sessionsync: %s: addresses of mixed or no family", e)
		}
	}
	if r.Op != OpUpsert && r.Op != OpDelete {
		return nil, fmt.Errorf("sessionsync: invalid expectation op %d", r.Op)
	}
	if e.Helper == "" || len(e.Helper) > MaxHelperName || len(e.Fn) > maxFnName {
		return nil, fmt.Errorf("sessionsync: %s: helper %q or function %q empty or too long", e, e.Helper, e.Fn)
	}
	var flags byte
	if v6 {
		flags |= expFlagIPv6
	}
	if e.NAT {
		flags |= expFlagNAT
	}
	b = append(b, byte(r.Op)|opExpect, flags, e.Master.Proto, e.Proto)
	b = binary.BigEndian.AppendUint16(b, e.Master.Zone)
	b = binary.BigEndian.AppendUint32(b, e.Timeout)
	b = binary.BigEndian.AppendUint32(b, e.Class)
	b = binary.BigEndian.AppendUint32(b, e.Flags)
	for _, t := range []*Tuple{&e.Master.Orig, &e.Tuple} {
		b = appendAddr(b, t.Src, v6)
		b = appendAddr(b, t.Dst, v6)
		b = binary.BigEndian.AppendUint16(b, t.SrcPort)
		b = binary.BigEndian.AppendUint16(b, t.DstPort)
	}
	b = appendAddr(b, e.MaskSrc, v6)
	b = binary.BigEndian.AppendUint16(b, e.MaskSrcPort)
	if e.NAT {
		b = append(b, e.NATDir)
		b = appendAddr(b, e.NATAddr, v6)
		b = binary.BigEndian.AppendUint16(b, e.NATPort)
	}
	b = append(b, byte(len(e.Helper)))
	b = append(b, e.Helper...)
	b = append(b, byte(len(e.Fn)))
	b = append(b, e.Fn...)
	return b, nil
}

func decodeExpect(b []byte, r *Record) (int, error) {
	if len(b) < expFixed {
		return 0, io.ErrUnexpectedEOF
	}
	r.Op = Op(b[0] &^ opExpect)
	if r.Op != OpUpsert && r.Op != OpDelete {
		return 0, fmt.Errorf("%w: expectation op %d", ErrMalformed, b[0])
	}
	flags := b[1]
	if flags&^(expFlagIPv6|expFlagNAT) != 0 {
		return 0, fmt.Errorf("%w: expectation flags %#x", ErrMalformed, flags)
	}
	e := &Expect{}
	r.Expect, r.Flow = e, Flow{}
	e.Master.Proto, e.Proto = b[2], b[3]
	e.Master.Zone = binary.BigEndian.Uint16(b[4:])
	e.Timeout = binary.BigEndian.Uint32(b[6:])
	e.Class = binary.BigEndian.Uint32(b[10:])
	e.Flags = binary.BigEndian.Uint32(b[14:])
	alen := 4
	if flags&expFlagIPv6 != 0 {
		alen = 16
	}
	need := expFixed + 2*(2*alen+4) + alen + 2
	if flags&expFlagNAT != 0 {
		need += 1 + alen + 2
	}
	if len(b) < need {
		return 0, io.ErrUnexpectedEOF
	}
	p := expFixed
	var addrs []netip.Addr
	addr := func() netip.Addr {
		a := readAddr(b, &p, alen)
		addrs = append(addrs, a)
		return a
	}
	u16 := func() uint16 { v := binary.BigEndian.Uint16(b[p:]); p += 2; return v }
	for _, t := range []*Tuple{&e.Master.Orig, &e.Tuple} {
		t.Src = addr()
		t.Dst = addr()
		t.SrcPort = u16()
		t.DstPort = u16()
	}
	e.MaskSrc = addr()
	e.MaskSrcPort = u16()
	if flags&expFlagNAT != 0 {
		e.NAT = true
		e.NATDir = b[p]
		p++
		e.NATAddr = addr()
		e.NATPort = u16()
	}
	if alen == 16 {
		for _, a := range addrs {
			if a.Is4In6() {
				return 0, fmt.Errorf("%w: IPv4-mapped address in an IPv6 expectation", ErrMalformed)
			}
		}
	}
	var err error
	var n int
	if e.Helper, n, err = decodeName(b[p:]); err != nil {
		return 0, err
	}
	p += n
	if e.Helper == "" || len(e.Helper) > MaxHelperName {
		return 0, fmt.Errorf("%w: expectation helper name of %d bytes", ErrMalformed, len(e.Helper))
	}
	if e.Fn, n, err = decodeName(b[p:]); err != nil {
		return 0, err
	}
	p += n
	return p, nil
}

// decodeName reads a length-prefixed name (a helper or function name).
func decodeName(b []byte) (string, int, error) {
	if len(b) < 1 {
		return "", 0, io.ErrUnexpectedEOF
	}
	n := int(b[0])
	if n > maxFnName {
		return "", 0, fmt.Errorf("%w: name of %d bytes", ErrMalformed, n)
	}
	if len(b) < 1+n {
		return "", 0, io.ErrUnexpectedEOF
	}
	for _, c := range b[1 : 1+n] {
		if c < 0x21 || c > 0x7e {
			return "", 0, fmt.Errorf("%w: name with byte %#x", ErrMalformed, c)
		}
	}
	return string(b[1 : 1+n]), 1 + n, nil
}
