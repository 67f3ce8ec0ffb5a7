package sessionsync

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
)

// labeledFlow is tcpFlow(i) with conntrack label 5 set.
func labeledFlow(i int) Flow {
	f := tcpFlow(i)
	f.Labels = make([]byte, 16)
	f.Labels[15] = 5
	return f
}

// eventMessages are conntrack messages as the kernel sends them in
// events: new (create flags), update and destroy of plain flows, TCP,
// UDP, ICMP, IPv6, with a zone, a mark and labels.
func eventMessages(t testing.TB) []netlink.Message {
	t.Helper()
	labeled := labeledFlow(7)
	zoned := tcpFlow(8)
	zoned.Zone = 4
	udp6 := Flow{Proto: ProtoUDP, Orig: Tuple{Src: netip.MustParseAddr("2001:db8::10"), Dst: netip.MustParseAddr("2001:db8:2::10"), SrcPort: 5000, DstPort: 53},
		Reply:  Tuple{Src: netip.MustParseAddr("2001:db8:2::10"), Dst: netip.MustParseAddr("2001:db8::10"), SrcPort: 53, DstPort: 5000},
		Status: StatusConfirmed | StatusSeenReply, Timeout: 30}
	icmp := Flow{Proto: ProtoICMP, Orig: Tuple{Src: netip.MustParseAddr("10.9.0.10"), Dst: netip.MustParseAddr("10.9.2.10"), SrcPort: 77, DstPort: 8 << 8},
		Reply:  Tuple{Src: netip.MustParseAddr("10.9.2.10"), Dst: netip.MustParseAddr("10.9.0.10"), SrcPort: 77, DstPort: 0},
		Status: StatusConfirmed, Timeout: 30}
	var out []netlink.Message
	for _, f := range []Flow{tcpFlow(1), labeled, zoned, udp6, icmp} {
		for _, r := range []Record{{Op: OpUpsert, Flow: f}, {Op: OpDelete, Flow: f}} {
			for _, create := range []bool{true, false} {
				var w nlw
				w.message(&r, create, 1)
				if _, err := nlSplit(w.b, func(m netlink.Message) (bool, error) {
					m.Data = append([]byte(nil), m.Data...)
					out = append(out, m)
					return false, nil
				}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return out
}

// slowDecode is the reference: ti-mo's Event.Unmarshal and fromTiMo.
func slowDecode(m netlink.Message) (Flow, EventType, bool) {
	var ev conntrack.Event
	if ev.Unmarshal(m) != nil || ev.Flow == nil {
		return Flow{}, 0, false
	}
	f, ok := fromTiMo(ev.Flow)
	typ, _ := flowEventType(ev)
	return f, typ, ok
}

// checkSameDecode fails when the fast path answers differently from the
// reference.
func checkSameDecode(t testing.TB, m netlink.Message) bool {
	f, typ, valid, ok := decodeEvent(m)
	if !ok {
		return false
	}
	g, gtyp, gok := slowDecode(m)
	if valid != gok {
		t.Fatalf("fast path valid %v, ti-mo %v (%+v)", valid, gok, m)
	}
	if valid && (typ != gtyp || !reflect.DeepEqual(f, g)) {
		t.Fatalf("fast path %v %+v\nti-mo     %v %+v", typ, f, gtyp, g)
	}
	return true
}

// TestEventDecodeFastMatchesTiMo: every plain flow's event is taken by
// the fast path, with ti-mo's result.
func TestEventDecodeFastMatchesTiMo(t *testing.T) {
	for i, m := range eventMessages(t) {
		if !checkSameDecode(t, m) {
			t.Fatalf("message %d (type %#x): not taken by the fast path", i, m.Header.Type)
		}
	}
}

// TestEventDecodeAllocs pins the fast path's allocations: the TCP state
// and its copy (ti-mo's path: 39 per event).
func TestEventDecodeAllocs(t *testing.T) {
	m := eventMessages(t)[0]
	n := testing.AllocsPerRun(1000, func() {
		if _, _, _, ok := decodeEvent(m); !ok {
			t.Fatal("not taken by the fast path")
		}
	})
	if n > 2 {
		t.Fatalf("%v allocations per event, want at most 2", n)
	}
}

func FuzzEventDecode(f *testing.F) {
	for _, m := range eventMessages(f) {
		f.Add(uint16(m.Header.Type), uint16(m.Header.Flags), m.Data)
	}
	f.Fuzz(func(t *testing.T, typ, flags uint16, data []byte) {
		checkSameDecode(t, netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.HeaderFlags(flags)}, Data: data})
	})
}

func BenchmarkEventDecode(b *testing.B) {
	m := eventMessages(b)[0]
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			decodeEvent(m)
		}
	})
	b.Run("ti-mo", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			slowDecode(m)
		}
	})
}
