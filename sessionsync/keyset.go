package sessionsync

import "net/netip"

// keySet is a set of flow keys that the garbage collector does not scan:
// a receiver holds the copies it made from each peer (recvState.applied)
// and, during a bulk copy, the flows the copy contained (seen), a million
// each at a million flows. Keyed by Key, whose netip.Addr fields hold a
// pointer, the collector marked every entry of both maps again and again
// while the bulk copy grew them: ~40% of the receiving agent's CPU in a
// bulk copy of 1 000 000 flows (perf, TestSessionBenchMillion), and
// 64-byte keys. setKey has no pointer (TestSetKeyHasNoPointers), so the
// maps' memory is marked noscan.
type keySet map[setKey]struct{}

// setKey is a Key without pointers: the addresses as 16 bytes and their
// family (netip.Addr's zone is never set on a conntrack tuple).
type setKey struct {
	src, dst         [16]byte
	srcPort, dstPort uint16
	zone             uint16
	proto            uint8
	srcFam, dstFam   uint8 // 0: the zero Addr, 4, 6
}

func addrFam(a netip.Addr) uint8 {
	switch {
	case a.Is4():
		return 4
	case a.IsValid():
		return 6
	}
	return 0
}

func famAddr(b [16]byte, fam uint8) netip.Addr {
	switch fam {
	case 4:
		return netip.AddrFrom16(b).Unmap()
	case 6:
		return netip.AddrFrom16(b)
	}
	return netip.Addr{}
}

func toSetKey(k Key) setKey {
	return setKey{src: k.Orig.Src.As16(), dst: k.Orig.Dst.As16(), srcPort: k.Orig.SrcPort, dstPort: k.Orig.DstPort,
		zone: k.Zone, proto: k.Proto, srcFam: addrFam(k.Orig.Src), dstFam: addrFam(k.Orig.Dst)}
}

func (s setKey) key() Key {
	return Key{Zone: s.zone, Proto: s.proto, Orig: Tuple{Src: famAddr(s.src, s.srcFam), Dst: famAddr(s.dst, s.dstFam),
		SrcPort: s.srcPort, DstPort: s.dstPort}}
}

func (s keySet) add(k Key)      { s[toSetKey(k)] = struct{}{} }
func (s keySet) del(k Key)      { delete(s, toSetKey(k)) }
func (s keySet) has(k Key) bool { _, ok := s[toSetKey(k)]; return ok }
