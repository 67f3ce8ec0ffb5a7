package sessionsync_test

import (
	"fmt"
	"net/netip"

	"github.com/hagent/hagent/sessionsync"
)

// A masqueraded TCP flow travels as one upsert record; the receiver's
// kernel gets it back with the same reply tuple (the NAT mapping).
func ExampleMessage() {
	f := sessionsync.Flow{Proto: sessionsync.ProtoTCP,
		Orig:   sessionsync.Tuple{Src: netip.MustParseAddr("10.9.0.10"), Dst: netip.MustParseAddr("10.9.2.10"), SrcPort: 40000, DstPort: 443},
		Reply:  sessionsync.Tuple{Src: netip.MustParseAddr("10.9.2.10"), Dst: netip.MustParseAddr("10.9.2.100"), SrcPort: 443, DstPort: 40000},
		Status: sessionsync.StatusConfirmed | sessionsync.StatusAssured, Timeout: 432000,
		TCP: &sessionsync.TCPInfo{State: sessionsync.TCPEstablished}}
	m := sessionsync.Message{Kind: sessionsync.KindStream, Records: []sessionsync.Record{{Op: sessionsync.OpUpsert, Flow: f}}}
	b, _ := m.MarshalBinary()
	var got sessionsync.Message
	if err := got.UnmarshalBinary(b); err != nil {
		fmt.Println(err)
	}
	r := got.Records[0].Flow
	fmt.Println(len(b), "bytes; source NAT:", r.SrcNAT(), "to", r.Reply.Dst)
	// Output: 68 bytes; source NAT: true to 10.9.2.100
}
