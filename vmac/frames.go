package vmac

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
)

var (
	// broadcastMAC is the Ethernet destination of gratuitous ARPs.
	broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	// allNodesMAC is the Ethernet destination of ff02::1 (RFC 2464 §7).
	allNodesMAC = net.HardwareAddr{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}
	// allNodes is the IPv6 all-nodes link-local multicast group.
	allNodes = netip.MustParseAddr("ff02::1")
)

// minFrameLen is the minimum Ethernet frame length without FCS; shorter
// frames are zero-padded so that no driver or switch has to.
const minFrameLen = 60

// garpFrame returns a complete Ethernet frame carrying a gratuitous ARP
// request that announces ip at mac:
//
//	Ethernet dst ff:ff:ff:ff:ff:ff, src mac, type 0x0806
//	ARP request, sender HW mac, sender IP ip, target HW 00:00:00:00:00:00, target IP ip
//
// A request rather than a reply is used because every IPv4 stack updates an
// existing cache entry from it (RFC 5227 §3).
func garpFrame(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	if !ip.Is4() {
		return nil, fmt.Errorf("vmac: gratuitous ARP needs an IPv4 address, got %v", ip)
	}
	p, err := arp.NewPacket(arp.OperationRequest, mac, ip, make(net.HardwareAddr, 6), ip)
	if err != nil {
		return nil, fmt.Errorf("vmac: build ARP: %w", err)
	}
	payload, err := p.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("vmac: build ARP: %w", err)
	}
	eth := &layers.Ethernet{SrcMAC: mac, DstMAC: broadcastMAC, EthernetType: layers.EthernetTypeARP}
	return serialize(eth, gopacket.Payload(payload))
}

// naFrame returns a complete Ethernet frame carrying an unsolicited
// neighbour advertisement (RFC 4861 §7.2.6) that announces ip at mac:
//
//	Ethernet dst 33:33:00:00:00:01, src mac, type 0x86dd
//	IPv6 src ip, dst ff02::1, hop limit 255, next header ICMPv6
//	ICMPv6 type 136: Router = router, Solicited clear, Override set,
//	target ip, option target link-layer address mac
//
// router should be true when the interface forwards IPv6: a clear Router
// flag makes hosts drop this node from their default router list.
func naFrame(mac net.HardwareAddr, ip netip.Addr, router bool) ([]byte, error) {
	if !ip.Is6() || ip.Is4In6() {
		return nil, fmt.Errorf("vmac: neighbour advertisement needs an IPv6 address, got %v", ip)
	}
	na := &ndp.NeighborAdvertisement{
		Router:        router,
		Solicited:     false,
		Override:      true,
		TargetAddress: ip,
		Options: []ndp.Option{
			&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac},
		},
	}
	icmp, err := ndp.MarshalMessageChecksum(na, ip, allNodes)
	if err != nil {
		return nil, fmt.Errorf("vmac: build NA: %w", err)
	}
	eth := &layers.Ethernet{SrcMAC: mac, DstMAC: allNodesMAC, EthernetType: layers.EthernetTypeIPv6}
	ip6 := &layers.IPv6{
		Version:    6,
		NextHeader: layers.IPProtocolICMPv6,
		HopLimit:   255,
		SrcIP:      ip.AsSlice(),
		DstIP:      allNodes.AsSlice(),
	}
	return serialize(eth, ip6, gopacket.Payload(icmp))
}

func serialize(ls ...gopacket.SerializableLayer) ([]byte, error) {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ls...); err != nil {
		return nil, fmt.Errorf("vmac: serialize frame: %w", err)
	}
	b := buf.Bytes()
	if len(b) < minFrameLen {
		b = append(b, make([]byte, minFrameLen-len(b))...)
	}
	return b, nil
}
