package sessionsync

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"testing"
)

func sampleMessage() *Message {
	v6 := Flow{Proto: ProtoUDP,
		Orig:   Tuple{Src: netip.MustParseAddr("2001:db8::10"), Dst: netip.MustParseAddr("2001:db8:2::10"), SrcPort: 5353, DstPort: 53},
		Reply:  Tuple{Src: netip.MustParseAddr("2001:db8:2::10"), Dst: netip.MustParseAddr("2001:db8::10"), SrcPort: 53, DstPort: 5353},
		Status: StatusConfirmed | StatusSeenReply, Timeout: 30, Zone: 7, Labels: bytes.Repeat([]byte{0xa5}, 16)}
	icmp := Flow{Proto: ProtoICMP,
		Orig:   Tuple{Src: netip.MustParseAddr("10.9.0.10"), Dst: netip.MustParseAddr("10.9.2.10"), SrcPort: 77, DstPort: 8 << 8},
		Reply:  Tuple{Src: netip.MustParseAddr("10.9.2.10"), Dst: netip.MustParseAddr("10.9.2.100"), SrcPort: 77, DstPort: 0},
		Status: StatusConfirmed, Timeout: 30}
	ftp := tcpFlow(2)
	ftp.Orig.DstPort, ftp.Reply.SrcPort, ftp.Helper = 21, 21, "ftp"
	ftp.SeqAdj = &[2]SeqAdj{{CorrectionPos: 0x80000001, OffsetBefore: 0, OffsetAfter: 1}, {CorrectionPos: 7, OffsetBefore: -3, OffsetAfter: -2}}
	ftp.SynProxy = &SynProxy{ISN: 1, ITS: 2, TSOff: 0xfffffff0}
	sctp := tcpFlow(4)
	sctp.Proto, sctp.TCP, sctp.SCTP = 132, nil, &SCTPInfo{State: 3, VTagOrig: 0xdeadbeef, VTagReply: 42}
	dccp := tcpFlow(5)
	dccp.Proto, dccp.TCP, dccp.DCCP = 33, nil, &DCCPInfo{State: 4, Role: 1, HandshakeSeq: 1 << 40}
	data := tcpFlow(6) // the FTP data connection (active mode), related to ftp
	data.Orig = Tuple{Src: ftp.Orig.Dst, Dst: ftp.Reply.Dst, SrcPort: 20, DstPort: 50001}
	data.Reply = Tuple{Src: ftp.Orig.Src, Dst: ftp.Orig.Dst, SrcPort: 50001, DstPort: 20}
	m := ftp.Key()
	data.Master = &m
	v6data := v6
	v6data.Orig.SrcPort, v6data.Reply.DstPort = 5004, 5004
	vm := v6.Key()
	v6data.Master = &vm
	return &Message{Kind: KindStream, Gen: 3, Oldest: 1234567890, Records: []Record{
		{Op: OpUpsert, Flow: tcpFlow(1)}, {Op: OpUpsert, Flow: v6}, {Op: OpDelete, Flow: icmp},
		{Op: OpUpsert, Flow: data}, {Op: OpUpsert, Flow: v6data},
		{Op: OpUpsert, Flow: ftp}, {Op: OpUpsert, Flow: sctp}, {Op: OpUpsert, Flow: dccp}, {Op: OpUpsert, Expect: sampleExpect(ftp)},
		{Op: OpDelete, Expect: &Expect{Master: v6.Key(), Proto: ProtoUDP,
			Tuple:   Tuple{Src: v6.Orig.Dst, Dst: v6.Orig.Src, SrcPort: 0, DstPort: 40000},
			MaskSrc: netip.MustParseAddr("::"), Timeout: 60, Helper: "sip", Class: 1, Fn: "nat-follow-master"}}}}
}

// sampleExpect is an FTP data connection expected from the server to the
// client's announced port, NATed to the client (active FTP behind masquerade).
func sampleExpect(master Flow) *Expect {
	return &Expect{Master: master.Key(), Proto: ProtoTCP,
		Tuple:   Tuple{Src: master.Reply.Src, Dst: master.Reply.Dst, SrcPort: 0, DstPort: 50001},
		MaskSrc: netip.MustParseAddr("255.255.255.255"), MaskSrcPort: 0, Timeout: 300, Helper: "ftp",
		NAT: true, NATDir: 1, NATAddr: master.Orig.Src, NATPort: 50001}
}

func TestMessageRoundTrip(t *testing.T) {
	m := sampleMessage()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Message
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, m) {
		t.Fatalf("round trip:\n%+v\nwant\n%+v", got, *m)
	}
	for _, k := range []Kind{KindBulkBegin, KindBulkEnd} {
		e := Message{Kind: k, Gen: 9, Count: 50000}
		b, _ := e.MarshalBinary()
		var g Message
		if err := g.UnmarshalBinary(b); err != nil || g.Kind != k || g.Gen != 9 || (k == KindBulkEnd && g.Count != 50000) {
			t.Fatalf("%v: %+v %v", k, g, err)
		}
	}
	// Every prefix of a valid message is short or malformed, never a panic.
	for i := 0; i < len(b); i++ {
		if err := got.UnmarshalBinary(b[:i]); err == nil {
			t.Fatalf("prefix of %d bytes decoded", i)
		}
	}
	if err := got.UnmarshalBinary(b[:10]); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short header: %v", err)
	}
	// Mixed families do not encode.
	bad := tcpFlow(1)
	bad.Reply.Dst = netip.MustParseAddr("2001:db8::1")
	if _, err := (&Message{Kind: KindStream, Records: []Record{{Op: OpUpsert, Flow: bad}}}).MarshalBinary(); err == nil {
		t.Fatal("a flow with mixed families encoded")
	}
}

func FuzzMessage(f *testing.F) {
	good, _ := sampleMessage().MarshalBinary()
	f.Add(good)                                                                            // a stream message of three records (v4 TCP, v6 UDP with labels, ICMP delete)
	f.Add(good[:headerLen])                                                                // a header claiming records that are not there
	f.Add(append([]byte("SS\x01\x04"), make([]byte, 16)...))                               // a bulk end
	f.Add(append([]byte("SS\x02\x01"), make([]byte, 16)...))                               // another version
	f.Add(append(append([]byte(nil), good...), 0))                                         // trailing byte
	f.Add(append([]byte("SS\x01\x01\x00\x00\x00\x00"), bytes.Repeat([]byte{0xff}, 12)...)) // a huge count
	ex, _ := (&Message{Kind: KindBulk, Records: []Record{{Op: OpUpsert, Expect: sampleExpect(tcpFlow(3))}}}).MarshalBinary()
	f.Add(ex)             // an expectation alone
	f.Add(ex[:len(ex)-1]) // cut in its names
	for _, x := range extSeeds() {
		f.Add(x)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		if err := m.UnmarshalBinary(b); err != nil {
			return
		}
		out, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded but does not encode: %v", err)
		}
		if m.Kind != KindBulkEnd && !bytes.Equal(out, b) {
			t.Fatalf("not canonical:\n%x\n%x", b, out)
		}
	})
}

// extSeeds are one-record messages of a flow with extensions, valid and
// broken: one direction of seqadj, a wrong length, an unknown type, types
// out of order, an empty block.
func extSeeds() [][]byte {
	f := tcpFlow(9)
	f.SeqAdj = &[2]SeqAdj{{CorrectionPos: 100, OffsetAfter: 1}, {}}
	f.SCTP = &SCTPInfo{State: 3, VTagOrig: 1, VTagReply: 2}
	good, _ := (&Message{Kind: KindStream, Records: []Record{{Op: OpUpsert, Flow: f}}}).MarshalBinary()
	// The extensions are the record's last bytes: 2 seqadj (14 each), SCTP (11).
	ext := len(good) - 39
	mut := func(fn func(b []byte) []byte) []byte { return fn(append([]byte(nil), good...)) }
	return [][]byte{
		good,
		mut(func(b []byte) []byte { // the reply seqadj dropped
			b = append(b[:ext+14], b[ext+28:]...)
			b[ext-2], b[ext-1] = 0, 25
			return b
		}),
		mut(func(b []byte) []byte { b[ext+1] = 11; return b }),                   // a wrong length
		mut(func(b []byte) []byte { b[ext+28] = 9; return b }),                   // an unknown type
		mut(func(b []byte) []byte { b[ext], b[ext+14] = 2, 1; return b }),        // out of order
		mut(func(b []byte) []byte { b[ext-2], b[ext-1] = 0, 0; return b[:ext] }), // empty
	}
}

func TestExtensionsMalformed(t *testing.T) {
	seeds := extSeeds()
	var m Message
	if err := m.UnmarshalBinary(seeds[0]); err != nil || m.Records[0].Flow.SeqAdj == nil || m.Records[0].Flow.SCTP == nil {
		t.Fatalf("the valid seed: %v %+v", err, m.Records)
	}
	for i, b := range seeds[1:] {
		if err := m.UnmarshalBinary(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("broken seed %d decoded: %v", i+1, err)
		}
	}
}

func BenchmarkMessageMarshal(b *testing.B) {
	m := &Message{Kind: KindBulk}
	for i := 0; i < 1024; i++ {
		m.Records = append(m.Records, Record{Op: OpUpsert, Flow: tcpFlow(i)})
	}
	buf := make([]byte, 0, 128<<10)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = m.AppendBinary(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkMessageUnmarshal(b *testing.B) {
	m := &Message{Kind: KindBulk}
	for i := 0; i < 1024; i++ {
		m.Records = append(m.Records, Record{Op: OpUpsert, Flow: tcpFlow(i)})
	}
	data, _ := m.MarshalBinary()
	var out Message
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := out.UnmarshalBinary(data); err != nil {
			b.Fatal(err)
		}
	}
}
