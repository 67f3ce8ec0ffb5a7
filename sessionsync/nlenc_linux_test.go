package sessionsync

import (
	"bytes"
	"net/netip"
	"testing"
)

// TestFastEncoderMatchesNetfilter: the allocation-free encoder writes the
// same bytes as flowAttrs through ti-mo's netfilter.MarshalNetlink.
func TestFastEncoderMatchesNetfilter(t *testing.T) {
	m := sampleMessage()
	var recs []Record // its flows (a helper's among them), not its expectations
	for _, r := range m.Records {
		if r.Expect == nil {
			recs = append(recs, r)
		}
	}
	dnat := tcpFlow(3)
	dnat.Reply.Src, dnat.Reply.SrcPort = netip.MustParseAddr("192.168.1.5"), 8443
	dnat.Zone, dnat.Mark = 4, 0
	recs = append(recs, Record{Op: OpUpsert, Flow: dnat}, Record{Op: OpDelete, Flow: dnat})
	var k Kernel
	for i := range recs {
		for _, create := range []bool{true, false} {
			ref := k.encode(&recs[i], create)
			ref.Header.Sequence = 77
			ref.Header.Length = uint32(nlmsgHdrLen + (len(ref.Data)+3)&^3)
			want, err := ref.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var w nlw
			w.message(&recs[i], create, 77)
			if !bytes.Equal(w.b, want) {
				t.Fatalf("record %d (%s, create %v):\nfast %x\nwant %x", i, recs[i].Flow.String(), create, w.b, want)
			}
		}
	}
}

func BenchmarkEncodeCreate(b *testing.B) {
	r := Record{Op: OpUpsert, Flow: tcpFlow(1)}
	var w nlw
	b.ReportAllocs()
	for b.Loop() {
		w.b = w.b[:0]
		w.message(&r, true, 1)
	}
}

// TestFastEncoderExtensionsNoAlloc: a create and an update of a flow with
// every extension (seqadj, synproxy, SCTP, DCCP, master) encode without
// allocating, as a plain flow does.
func TestFastEncoderExtensionsNoAlloc(t *testing.T) {
	f := extFlows()[0]
	f.SynProxy = &SynProxy{ISN: 1}
	f.SCTP, f.DCCP = &SCTPInfo{State: 3}, &DCCPInfo{State: 1, HandshakeSeq: 9}
	m := tcpFlow(1).Key()
	f.Master = &m
	r := Record{Op: OpUpsert, Flow: f}
	w := nlw{b: make([]byte, 0, 4096)}
	allocs := testing.AllocsPerRun(100, func() {
		w.b = w.b[:0]
		w.message(&r, true, 1)
		w.message(&r, false, 2)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per create and update", allocs)
	}
}
