package sessionsync

import (
	"errors"
	"net/netip"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

var _ ExpectTable = (*Kernel)(nil)

// ctnetlink expectation attributes (nfnetlink_conntrack.h, enum
// ctattr_expect), messages (enum cntl_msg_types) and the NAT nest.
const (
	ctaExpectMaster   = 1
	ctaExpectTuple    = 2
	ctaExpectMask     = 3
	ctaExpectTimeout  = 4
	ctaExpectHelpName = 6
	ctaExpectZone     = 7
	ctaExpectFlags    = 8
	ctaExpectClass    = 9
	ctaExpectNAT      = 10
	ctaExpectFN       = 11
	ctaExpectNATDir   = 1
	ctaExpectNATTuple = 2

	ipctnlMsgExpNew    = 0
	ipctnlMsgExpDelete = 2
)

// fromTiMoExpect converts a ti-mo expectation; ok is false for what
// sessionsync does not carry.
func fromTiMoExpect(x *conntrack.Expect) (Expect, bool) {
	conv := func(t conntrack.Tuple) Tuple {
		return Tuple{Src: t.IP.SourceAddress.Unmap(), Dst: t.IP.DestinationAddress.Unmap(),
			SrcPort: t.Proto.SourcePort, DstPort: t.Proto.DestinationPort}
	}
	e := Expect{
		Master:  Key{Zone: x.Zone, Proto: x.TupleMaster.Proto.Protocol, Orig: conv(x.TupleMaster)},
		Proto:   x.Tuple.Proto.Protocol,
		Tuple:   conv(x.Tuple),
		MaskSrc: x.Mask.IP.SourceAddress.Unmap(), MaskSrcPort: x.Mask.Proto.SourcePort,
		Timeout: x.Timeout, Helper: x.HelpName, Class: x.Class, Flags: x.Flags, Fn: x.Function,
	}
	if a := x.NAT.Tuple.IP.SourceAddress; a.IsValid() {
		e.NAT, e.NATAddr, e.NATPort = true, a.Unmap(), x.NAT.Tuple.Proto.SourcePort
		if x.NAT.Direction {
			e.NATDir = 1
		}
	}
	v4 := e.Tuple.Src.Is4()
	for _, a := range []netip.Addr{e.Tuple.Src, e.Tuple.Dst, e.Master.Orig.Src, e.Master.Orig.Dst, e.MaskSrc} {
		if !a.IsValid() || a.Is4() != v4 {
			return Expect{}, false
		}
	}
	if e.NAT && e.NATAddr.Is4() != v4 {
		return Expect{}, false
	}
	if e.Helper == "" || len(e.Helper) > MaxHelperName || len(e.Fn) > maxFnName {
		return Expect{}, false
	}
	return e, true
}

// DumpExpect implements ExpectTable.
func (k *Kernel) DumpExpect(fn func(*Expect)) error {
	k.statMu.Lock()
	xs, err := k.dump.DumpExpect()
	k.statMu.Unlock()
	if err != nil {
		return err
	}
	for i := range xs {
		if e, ok := fromTiMoExpect(&xs[i]); ok {
			fn(&e)
		}
	}
	return nil
}

// expectAttrs builds an expectation's attributes with ti-mo's netfilter
// types (ti-mo's own CreateExpect marshals what it decodes, not what the
// kernel needs: the mask's destination and the NAT tuple's).
func expectAttrs(x *Expect, create bool) []netfilter.Attribute {
	if !create {
		a := []netfilter.Attribute{tupleAttr(ctaExpectTuple, x.Proto, x.Tuple, 0)}
		if x.Master.Zone != 0 {
			a = append(a, netfilter.Attribute{Type: ctaExpectZone, Data: u16(x.Master.Zone)})
		}
		return a
	}
	ones := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	if !x.Tuple.Src.Is4() {
		ones = netip.AddrFrom16([16]byte{0: 0xff, 1: 0xff, 2: 0xff, 3: 0xff, 4: 0xff, 5: 0xff, 6: 0xff, 7: 0xff,
			8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff})
	}
	attrs := []netfilter.Attribute{
		tupleAttr(ctaExpectMaster, x.Master.Proto, x.Master.Orig, 0),
		tupleAttr(ctaExpectTuple, x.Proto, x.Tuple, 0),
		tupleAttr(ctaExpectMask, x.Proto, Tuple{Src: x.MaskSrc, Dst: ones, SrcPort: x.MaskSrcPort, DstPort: 0xffff}, 0),
		{Type: ctaExpectTimeout, Data: u32(max(x.Timeout, 1))},
		{Type: ctaExpectHelpName, Data: append([]byte(x.Helper), 0)},
		{Type: ctaExpectFlags, Data: u32(x.Flags)},
		{Type: ctaExpectClass, Data: u32(x.Class)},
	}
	if x.Master.Zone != 0 {
		attrs = append(attrs, netfilter.Attribute{Type: ctaExpectZone, Data: u16(x.Master.Zone)})
	}
	if x.NAT {
		attrs = append(attrs, netfilter.Attribute{Type: ctaExpectNAT, Nested: true, Children: []netfilter.Attribute{
			{Type: ctaExpectNATDir, Data: u32(uint32(x.NATDir))},
			tupleAttr(ctaExpectNATTuple, x.Proto, Tuple{Src: x.NATAddr, Dst: x.Tuple.Dst, SrcPort: x.NATPort, DstPort: x.Tuple.DstPort}, 0),
		}})
	}
	if x.Fn != "" {
		attrs = append(attrs, netfilter.Attribute{Type: ctaExpectFN, Data: append([]byte(x.Fn), 0)})
	}
	return attrs
}

// ApplyExpect implements ExpectTable: one query per record (expectations
// are few). An upsert of an existing expectation refreshes its timeout; a
// delete of a missing one is not an error.
func (k *Kernel) ApplyExpect(recs []Record) []error {
	errs := make([]error, len(recs))
	k.xmu.Lock()
	defer k.xmu.Unlock()
	for i := range recs {
		x := recs[i].Expect
		if x == nil {
			errs[i] = ErrMalformed
			continue
		}
		h := netfilter.Header{SubsystemID: netfilter.NFSubsysCTNetlinkExp, Family: netfilter.ProtoIPv4,
			Flags: netlink.Request | netlink.Acknowledge}
		if !x.Tuple.Src.Is4() {
			h.Family = netfilter.ProtoIPv6
		}
		op := "expectation create"
		switch recs[i].Op {
		case OpUpsert:
			h.MessageType = ipctnlMsgExpNew
			h.Flags |= netlink.Create
		case OpDelete:
			h.MessageType, op = ipctnlMsgExpDelete, "expectation delete"
		default:
			errs[i] = ErrMalformed
			continue
		}
		m, err := netfilter.MarshalNetlink(h, expectAttrs(x, recs[i].Op == OpUpsert))
		if err != nil {
			errs[i] = err
			continue
		}
		if _, err := k.xc.Query(m); err != nil {
			var errno syscall.Errno
			if !errors.As(err, &errno) {
				errs[i] = err
				continue
			}
			if recs[i].Op == OpDelete && errno == unix.ENOENT {
				continue
			}
			errs[i] = &KernelError{Op: op, Errno: errno}
		}
	}
	return errs
}
