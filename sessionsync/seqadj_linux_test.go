package sessionsync

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"
)

// extFlows are flows with every extension a record carries: an FTP
// control connection (helper, NAT) with a sequence adjustment in both
// directions, a SYN proxy's connection and an SCTP association.
func extFlows() []Flow {
	ftp := tcpFlow(7)
	ftp.Orig.DstPort, ftp.Reply.SrcPort, ftp.Helper = 21, 21, "ftp"
	ftp.SeqAdj = &[2]SeqAdj{{CorrectionPos: 0x9a3c0001, OffsetBefore: 0, OffsetAfter: 1}, {CorrectionPos: 77, OffsetBefore: -2, OffsetAfter: -5}}
	syn := tcpFlow(8)
	syn.SynProxy = &SynProxy{ISN: 0x11223344, ITS: 99, TSOff: 0xfffff000}
	syn.SeqAdj = &[2]SeqAdj{{}, {CorrectionPos: 1, OffsetBefore: 1000, OffsetAfter: 1000}}
	sctp := Flow{Proto: 132, Status: StatusConfirmed | StatusSeenReply | StatusAssured, Timeout: 600,
		Orig:  Tuple{Src: netip.MustParseAddr("10.9.0.10"), Dst: netip.MustParseAddr("10.9.2.10"), SrcPort: 2905, DstPort: 2905},
		Reply: Tuple{Src: netip.MustParseAddr("10.9.2.10"), Dst: netip.MustParseAddr("10.9.0.10"), SrcPort: 2905, DstPort: 2905},
		SCTP:  &SCTPInfo{State: 3, VTagOrig: 0xdeadbeef, VTagReply: 0x01020304}} // ESTABLISHED
	return []Flow{ftp, syn, sctp}
}

func dumpAll(t *testing.T, k *Kernel) map[Key]Flow {
	t.Helper()
	got := map[Key]Flow{}
	if err := k.Dump(func(f *Flow) { got[f.Key()] = *f }); err != nil {
		t.Fatal(err)
	}
	return got
}

func sameExt(a, b *Flow) bool {
	eq := func(x, y any) bool { return x == y }
	return (a.SeqAdj == nil) == (b.SeqAdj == nil) && (a.SeqAdj == nil || *a.SeqAdj == *b.SeqAdj) &&
		(a.SynProxy == nil) == (b.SynProxy == nil) && (a.SynProxy == nil || *a.SynProxy == *b.SynProxy) &&
		(a.SCTP == nil) == (b.SCTP == nil) && (a.SCTP == nil || eq(*a.SCTP, *b.SCTP))
}

// TestSeqAdjCopied: flows with a sequence adjustment, SYN proxy state and
// SCTP state, created in one namespace and dumped there, are applied
// into another (through the wire encoding) and dumped back the same: the
// copy's kernel entry holds the adjustment of both directions (and
// IPS_SEQ_ADJUST), which the FTP helper's translation of every later
// packet depends on.
func TestSeqAdjCopied(t *testing.T) {
	var first map[Key]Flow
	inNetns(t, func(t *testing.T) {
		k, err := OpenKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		var recs []Record
		for _, f := range extFlows() {
			recs = append(recs, Record{Op: OpUpsert, Flow: f})
		}
		for i, err := range k.Apply(recs) {
			if err != nil {
				t.Fatalf("%s: %v", recs[i].Flow.String(), err)
			}
		}
		first = dumpAll(t, k)
		for _, f := range extFlows() {
			if g := first[f.Key()]; !sameExt(&g, &f) {
				t.Fatalf("%s in the first namespace: seqadj %v synproxy %v sctp %v; want %v %v %v", f.String(), g.SeqAdj, g.SynProxy, g.SCTP, f.SeqAdj, f.SynProxy, f.SCTP)
			}
		}
	})
	if t.Failed() || first == nil {
		return
	}
	// The dump, through the wire, into another namespace.
	m := Message{Kind: KindBulk}
	for _, f := range first {
		m.Records = append(m.Records, Record{Op: OpUpsert, Flow: f})
	}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var rx Message
	if err := rx.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	inNetns(t, func(t *testing.T) {
		k, err := OpenKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		for i, err := range k.Apply(rx.Records) {
			if err != nil {
				t.Fatalf("%s: %v", rx.Records[i].Flow.String(), err)
			}
		}
		got := dumpAll(t, k)
		for key, f := range first {
			g := got[key]
			if !sameExt(&g, &f) {
				t.Errorf("%s copied: seqadj %v synproxy %v sctp %v; want %v %v %v", f.String(), g.SeqAdj, g.SynProxy, g.SCTP, f.SeqAdj, f.SynProxy, f.SCTP)
			}
			if f.SeqAdj != nil && g.Status&statusSeqAdjust == 0 {
				t.Errorf("%s copied without IPS_SEQ_ADJUST: %#x", f.String(), g.Status)
			}
		}
		t.Logf("copied: %d flows, the FTP one's seqadj %+v", len(got), got[extFlows()[0].Key()].SeqAdj)
	})
}

// TestSeqAdjUpdate: an update carrying a sequence adjustment to an entry
// created by traffic (no NAT helper: no seqadj extension) is one the
// kernel accepts and ignores (ctnetlink_change_seq_adj returns 0 without
// the extension); Apply reads it back, replaces the entry by a copy that
// has the extension, and the adjustment holds. The plain update of an
// entry ctnetlink created (it has the extension) holds directly.
func TestSeqAdjUpdate(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("lo up: %v %s", err, out)
		}
		k, err := OpenKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		ln, err := net.Listen("tcp4", "127.0.0.1:2121")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c, err := net.DialTimeout("tcp4", "127.0.0.1:2121", 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var own Flow
		for _, f := range dumpAll(t, k) {
			if f.Proto == ProtoTCP && f.Orig.DstPort == 2121 {
				own = f
			}
		}
		if own.TCP == nil {
			t.Fatal("the loopback connection's entry is not in the table")
		}
		if own.SeqAdj != nil {
			t.Fatalf("an entry of traffic without a NAT helper has an adjustment: %+v", own.SeqAdj)
		}
		want := own
		want.SeqAdj = &[2]SeqAdj{{CorrectionPos: 1000, OffsetBefore: 0, OffsetAfter: 3}, {}}
		created := tcpFlow(9)
		created.SeqAdj = &[2]SeqAdj{{CorrectionPos: 5, OffsetAfter: 1}, {}}
		if errs := k.Apply([]Record{{Op: OpUpsert, Flow: created}}); errs[0] != nil {
			t.Fatal(errs[0])
		}
		created.SeqAdj[0].OffsetAfter = 4
		for i, err := range k.Apply([]Record{{Op: OpUpsert, Flow: want}, {Op: OpUpsert, Flow: created}}) {
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
		got := dumpAll(t, k)
		for _, f := range []Flow{want, created} {
			if g := got[f.Key()]; g.SeqAdj == nil || *g.SeqAdj != *f.SeqAdj {
				t.Errorf("%s updated: seqadj %+v, want %+v", f.String(), g.SeqAdj, *f.SeqAdj)
			}
		}
	})
}

// TestSeqAdjOfMaster: the adjustment a NAT helper sets raises no event;
// a new expectation of the flow makes Listen read the flow and report it
// as updated with its adjustment.
func TestSeqAdjOfMaster(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, evs := listeningKernel(t)
		master := extFlows()[0]
		if errs := k.Apply([]Record{{Op: OpUpsert, Flow: master}}); errs[0] != nil {
			t.Fatal(errs[0])
		}
		x := sampleExpect(master)
		if err := k.ApplyExpect([]Record{{Op: OpUpsert, Expect: x}})[0]; err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		for {
			select {
			case ev := <-evs:
				if ev.Expect == nil && ev.Type == EventUpdate && ev.Flow.Key() == master.Key() && ev.Flow.SeqAdj != nil {
					if *ev.Flow.SeqAdj != *master.SeqAdj {
						t.Fatalf("reported %+v, want %+v", *ev.Flow.SeqAdj, *master.SeqAdj)
					}
					return
				}
			case <-ctx.Done():
				t.Fatal("no update of the master with its adjustment after its expectation's creation")
			}
		}
	})
}

// TestMasterCopied: a related connection (an FTP data connection) is
// created related to its master (CTA_TUPLE_MASTER: the kernel sets
// IPS_EXPECTED and reports the master's tuple), also when its record
// comes before its master's in the same Apply; one whose master is not in
// the table is created unrelated and counted (ExtensionsLost "master").
func TestMasterCopied(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, err := OpenKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		msg := sampleMessage()
		var master, child Flow
		for _, r := range msg.Records {
			if r.Expect == nil && r.Flow.Helper == "ftp" {
				master = r.Flow
			}
			if r.Expect == nil && r.Flow.Master != nil && !r.Flow.IPv6() {
				child = r.Flow
			}
		}
		orphan := child
		orphan.Orig.DstPort, orphan.Reply.SrcPort = 50002, 50002
		om := tcpFlow(40).Key()
		orphan.Master = &om
		for i, err := range k.Apply([]Record{{Op: OpUpsert, Flow: child}, {Op: OpUpsert, Flow: master}, {Op: OpUpsert, Flow: orphan}}) {
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
		got := dumpAll(t, k)
		c := got[child.Key()]
		if c.Master == nil || *c.Master != *child.Master || c.Status&StatusExpected == 0 {
			t.Errorf("the child: master %+v status %#x; want %+v and IPS_EXPECTED", c.Master, c.Status, *child.Master)
		}
		if o, ok := got[orphan.Key()]; !ok || o.Master != nil {
			t.Errorf("the orphan: present %v, master %+v; want it created unrelated", ok, o.Master)
		}
		if n := k.ExtensionsLost()["master"]; n != 1 {
			t.Errorf("ExtensionsLost %v, want master: 1", k.ExtensionsLost())
		}
	})
}
