package vmac

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// ARPProber checks that IPv4 neighbours answer on one interface, for
// pingserver monitoring. It sends RFC 5227 ARP probes (sender IP 0.0.0.0),
// which every IPv4 stack answers for its own address, so a node that holds
// no address on the interface (a secondary) checks its path as well as the
// primary does. It is not safe for concurrent use.
type ARPProber struct {
	ifname string
	index  int
	c      *packet.Conn
	buf    []byte
}

// NewARPProber opens the prober's AF_PACKET socket (Ethertype 0x0806) on
// ifname, in the caller's network namespace.
func NewARPProber(ifname string) (*ARPProber, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("vmac: pingserver interface %s: %w", ifname, err)
	}
	c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil)
	if err != nil {
		return nil, fmt.Errorf("vmac: pingserver interface %s: ARP socket: %w", ifname, err)
	}
	return &ARPProber{ifname: ifname, index: ifi.Index, c: c, buf: make([]byte, 1514)}, nil
}

// Probe sends one ARP probe for target and reports whether target answered
// within timeout. The probe's sender MAC is the interface's current MAC
// (the vMAC on the primary), so the answer comes back to this node.
func (p *ARPProber) Probe(target netip.Addr, timeout time.Duration) (bool, error) {
	if !target.Is4() {
		return false, fmt.Errorf("vmac: ARP probe needs an IPv4 target, got %v", target)
	}
	ifi, err := net.InterfaceByIndex(p.index)
	if err != nil {
		return false, fmt.Errorf("vmac: pingserver interface %s: %w", p.ifname, err)
	}
	frame, err := probeFrame(ifi.HardwareAddr, target)
	if err != nil {
		return false, err
	}
	if _, err := p.c.WriteTo(frame, &packet.Addr{HardwareAddr: broadcastMAC}); err != nil {
		return false, fmt.Errorf("vmac: ARP probe on %s: %w", p.ifname, err)
	}
	deadline := time.Now().Add(timeout)
	if err := p.c.SetReadDeadline(deadline); err != nil {
		return false, err
	}
	for {
		n, _, err := p.c.ReadFrom(p.buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return false, nil
			}
			return false, fmt.Errorf("vmac: ARP probe on %s: %w", p.ifname, err)
		}
		if isReplyFrom(p.buf[:n], target) {
			return true, nil
		}
	}
}

// Close closes the socket.
func (p *ARPProber) Close() error { return p.c.Close() }

// probeFrame is an RFC 5227 ARP probe for target from mac:
//
//	Ethernet dst ff:ff:ff:ff:ff:ff, src mac, type 0x0806
//	ARP request, sender HW mac, sender IP 0.0.0.0, target HW 0, target IP target
func probeFrame(mac net.HardwareAddr, target netip.Addr) ([]byte, error) {
	a, err := arp.NewPacket(arp.OperationRequest, mac, netip.IPv4Unspecified(), make(net.HardwareAddr, 6), target)
	if err != nil {
		return nil, fmt.Errorf("vmac: build ARP probe: %w", err)
	}
	payload, err := a.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("vmac: build ARP probe: %w", err)
	}
	eth := &layers.Ethernet{SrcMAC: mac, DstMAC: broadcastMAC, EthernetType: layers.EthernetTypeARP}
	return serialize(eth, gopacket.Payload(payload))
}

// isReplyFrom reports whether frame is an ARP reply sent by target.
func isReplyFrom(frame []byte, target netip.Addr) bool {
	if len(frame) < 14 {
		return false
	}
	var a arp.Packet
	if err := a.UnmarshalBinary(frame[14:]); err != nil {
		return false
	}
	return a.Operation == arp.OperationReply && a.SenderIP == target
}
