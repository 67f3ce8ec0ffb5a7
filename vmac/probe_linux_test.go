package vmac

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestARPProber: a node without any address on its interface learns that
// the peer answers for its address, and that nobody answers for another.
func TestARPProber(t *testing.T) {
	tp := newTopo(t)
	peer, err := tp.peerH.LinkByName("peer1")
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("10.77.0.1/24")
	if err := tp.peerH.AddrAdd(peer, addr); err != nil {
		t.Fatal(err)
	}
	var p *ARPProber
	if err := inNS(tp.node, func() error {
		var err error
		p, err = NewARPProber("port1")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ok, err := p.Probe(netip.MustParseAddr("10.77.0.1"), time.Second)
	if err != nil || !ok {
		t.Fatalf("probe of the peer's address: %v %v", ok, err)
	}
	start := time.Now()
	ok, err = p.Probe(netip.MustParseAddr("10.77.0.2"), 200*time.Millisecond)
	if err != nil || ok {
		t.Fatalf("probe of an unused address: %v %v", ok, err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("unanswered probe returned after %v, before its timeout", d)
	}
	tp.setUp(t, tp.peerH, "peer1", false)
	if ok, _ := p.Probe(netip.MustParseAddr("10.77.0.1"), 200*time.Millisecond); ok {
		t.Fatal("answered with the peer's link down")
	}
	if _, err := p.Probe(netip.MustParseAddr("2001:db8::1"), time.Millisecond); err == nil {
		t.Fatal("IPv6 target accepted")
	}
}
