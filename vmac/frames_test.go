package vmac

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/ndp"
)

// decodeGARP decodes frame and returns its Ethernet and ARP layers, or
// nil if it is not an ARP frame.
func decodeGARP(frame []byte) (*layers.Ethernet, *layers.ARP) {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	a, _ := p.Layer(layers.LayerTypeARP).(*layers.ARP)
	if eth == nil || a == nil {
		return nil, nil
	}
	return eth, a
}

// decodedNA is a neighbour advertisement found in a frame.
type decodedNA struct {
	eth      *layers.Ethernet
	ip6      *layers.IPv6
	na       *ndp.NeighborAdvertisement
	tlla     net.HardwareAddr
	checksum bool // ICMPv6 checksum verified
}

// decodeNA decodes frame as Ethernet/IPv6/ICMPv6 NA; ok is false for any
// other frame.
func decodeNA(frame []byte) (decodedNA, bool) {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip6, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	icmp, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if eth == nil || ip6 == nil || icmp == nil || icmp.TypeCode.Type() != layers.ICMPv6TypeNeighborAdvertisement {
		return decodedNA{}, false
	}
	raw := append(append([]byte(nil), icmp.Contents...), icmp.Payload...)
	msg, err := ndp.ParseMessage(raw)
	if err != nil {
		return decodedNA{}, false
	}
	na, ok := msg.(*ndp.NeighborAdvertisement)
	if !ok {
		return decodedNA{}, false
	}
	d := decodedNA{eth: eth, ip6: ip6, na: na}
	for _, o := range na.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
			d.tlla = lla.Addr
		}
	}
	d.checksum = icmpv6ChecksumOK(ip6.SrcIP, ip6.DstIP, raw)
	return d, true
}

// icmpv6ChecksumOK verifies the ICMPv6 checksum of msg (RFC 4443 §2.3): the
// one's complement sum over the IPv6 pseudo-header and the message,
// checksum included, must be 0xffff.
func icmpv6ChecksumOK(src, dst net.IP, msg []byte) bool {
	var b []byte
	b = append(b, src.To16()...)
	b = append(b, dst.To16()...)
	b = append(b, byte(len(msg)>>24), byte(len(msg)>>16), byte(len(msg)>>8), byte(len(msg)))
	b = append(b, 0, 0, 0, byte(layers.IPProtocolICMPv6))
	b = append(b, msg...)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

func TestGARPFrame(t *testing.T) {
	mac := net.HardwareAddr{0x00, 0x09, 0x0f, 0x09, 0x0a, 0x03}
	tests := []struct {
		ip      string
		wantErr bool
	}{
		{ip: "10.9.0.100"},
		{ip: "192.0.2.1"},
		{ip: "2001:db8::1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.ip)
			frame, err := garpFrame(mac, ip)
			if tt.wantErr {
				if err == nil {
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(frame) < minFrameLen {
				t.Errorf("frame length %d < %d", len(frame), minFrameLen)
			}
			eth, a := decodeGARP(frame)
			if a == nil {
				t.Fatal("not an ARP frame")
			}
			if eth.SrcMAC.String() != mac.String() || eth.DstMAC.String() != "ff:ff:ff:ff:ff:ff" {
				t.Errorf("ethernet %v -> %v", eth.SrcMAC, eth.DstMAC)
			}
			if a.Operation != layers.ARPRequest {
				t.Errorf("operation %d, want request", a.Operation)
			}
			if net.HardwareAddr(a.SourceHwAddress).String() != mac.String() {
				t.Errorf("sender HW %v", net.HardwareAddr(a.SourceHwAddress))
			}
			if got := net.IP(a.SourceProtAddress).String(); got != tt.ip {
				t.Errorf("sender IP %s", got)
			}
			if got := net.IP(a.DstProtAddress).String(); got != tt.ip {
				t.Errorf("target IP %s", got)
			}
		})
	}
}

func TestNAFrame(t *testing.T) {
	mac := net.HardwareAddr{0x00, 0x09, 0x0f, 0x09, 0x0a, 0x23}
	tests := []struct {
		ip      string
		router  bool
		wantErr bool
	}{
		{ip: "2001:db8::100"},
		{ip: "fe80::1", router: true},
		{ip: "10.0.0.1", wantErr: true},
		{ip: "::ffff:10.0.0.1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.ip)
			frame, err := naFrame(mac, ip, tt.router)
			if tt.wantErr {
				if err == nil {
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			d, ok := decodeNA(frame)
			if !ok {
				t.Fatal("not a neighbour advertisement")
			}
			if d.eth.SrcMAC.String() != mac.String() || d.eth.DstMAC.String() != "33:33:00:00:00:01" {
				t.Errorf("ethernet %v -> %v", d.eth.SrcMAC, d.eth.DstMAC)
			}
			if d.ip6.HopLimit != 255 {
				t.Errorf("hop limit %d, want 255", d.ip6.HopLimit)
			}
			if d.ip6.SrcIP.String() != ip.String() || d.ip6.DstIP.String() != "ff02::1" {
				t.Errorf("IPv6 %v -> %v", d.ip6.SrcIP, d.ip6.DstIP)
			}
			if int(d.ip6.Length) != 24+8 {
				t.Errorf("IPv6 payload length %d, want 32", d.ip6.Length)
			}
			if d.na.TargetAddress != ip {
				t.Errorf("target %v", d.na.TargetAddress)
			}
			if !d.na.Override || d.na.Solicited || d.na.Router != tt.router {
				t.Errorf("flags R=%v S=%v O=%v", d.na.Router, d.na.Solicited, d.na.Override)
			}
			if d.tlla.String() != mac.String() {
				t.Errorf("target link-layer address %v", d.tlla)
			}
			if !d.checksum {
				t.Error("bad ICMPv6 checksum")
			}
		})
	}
}

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	got, err := readState(dir)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty dir: %v, %v", got, err)
	}
	a := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	b := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2}
	if err := writeState(dir, map[string]net.HardwareAddr{"port1": a}); err != nil {
		t.Fatal(err)
	}
	// A second writer for another interface keeps the first entry.
	if err := writeState(dir, map[string]net.HardwareAddr{"port2": b}); err != nil {
		t.Fatal(err)
	}
	got, err = readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got["port1"].String() != a.String() || got["port2"].String() != b.String() || len(got) != 2 {
		t.Fatalf("state = %v", got)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != StateFile {
		t.Errorf("dir holds %v", ents)
	}
	// A corrupt file is an error for readers and replaced by writers.
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readState(dir); err == nil {
		t.Error("corrupt state read without error")
	}
	if err := writeState(dir, map[string]net.HardwareAddr{"port1": b}); err != nil {
		t.Fatal(err)
	}
	if got, _ := readState(dir); got["port1"].String() != b.String() {
		t.Errorf("after rewrite: %v", got)
	}
}

func TestConfigNormalize(t *testing.T) {
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{name: "ok", cfg: Config{GroupID: 1, VCluster: 1, Interfaces: []Interface{{Name: "b"}, {Name: "a", Prefixes: []netip.Prefix{p("10.0.0.1/24")}}}}},
		{name: "no interfaces", cfg: Config{GroupID: 1, VCluster: 1}, wantErr: true},
		{name: "negative arps", cfg: Config{GroupID: 1, VCluster: 1, ARPs: -1, Interfaces: []Interface{{Name: "a"}}}, wantErr: true},
		{name: "negative interval", cfg: Config{GroupID: 1, VCluster: 1, ARPInterval: -1, Interfaces: []Interface{{Name: "a"}}}, wantErr: true},
		{name: "multicast address", cfg: Config{GroupID: 1, VCluster: 1, Interfaces: []Interface{{Name: "a", Prefixes: []netip.Prefix{p("224.0.0.1/24")}}}}, wantErr: true},
		{name: "invalid prefix", cfg: Config{GroupID: 1, VCluster: 1, Interfaces: []Interface{{Name: "a", Prefixes: []netip.Prefix{{}}}}}, wantErr: true},
		{name: "bad vcluster", cfg: Config{GroupID: 1, VCluster: 0, Interfaces: []Interface{{Name: "a"}}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, macs, err := tt.cfg.normalize()
			if tt.wantErr {
				if err == nil {
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ARPs != DefaultARPs || got.ARPInterval != DefaultARPInterval || got.StateDir != DefaultStateDir || got.Logger == nil {
				t.Errorf("defaults not applied: %+v", got)
			}
			if got.Interfaces[0].Name != "a" || macs["a"][5] != 0 || macs["b"][5] != 1 {
				t.Errorf("interfaces not sorted: %+v %v", got.Interfaces, macs)
			}
			if tt.cfg.Interfaces[0].Name != "b" {
				t.Error("normalize reordered the caller's slice")
			}
		})
	}
}
