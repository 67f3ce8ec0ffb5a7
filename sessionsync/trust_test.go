package sessionsync

import (
	"net/netip"
	"testing"
	"time"

	"github.com/hagent/hagent/l2chan"
)

// receiver is an engine that is not run: the tests hand messages to
// handle, as the applying goroutine does, on a clock they move.
type receiver struct {
	e     *Engine
	table *MemTable
	clk   *fakeClock
	m     Message
}

func newReceiver(t testing.TB, mod func(*Config)) *receiver {
	t.Helper()
	r := &receiver{table: NewMemTable(), clk: &fakeClock{t: time.Unix(1_000_000, 0)}}
	cfg := DefaultConfig()
	cfg.Self, cfg.Table, cfg.Transport, cfg.Now = "node-b", r.table, &blockingTransport{}, r.clk.now
	cfg.Connectionless, cfg.Expectation = true, true
	cfg.LocalAddrs = func() []netip.Addr { return nil }
	if mod != nil {
		mod(&cfg)
	}
	var err error
	if r.e, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	return r
}

// send hands the message m from peer to the engine.
func (r *receiver) send(t testing.TB, from string, m *Message) {
	t.Helper()
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	r.e.handle(l2chan.Message{From: from, Data: b}, &r.m)
}

func stream(recs ...Record) *Message { return &Message{Kind: KindStream, Records: recs} }

func upsert(f Flow) Record { return Record{Op: OpUpsert, Flow: f} }

// TestUnentitledPeerRefused: a record from a peer that is not the primary
// is never applied; after the grace it is refused and counted, while the
// primary's records are applied. Without the check (senderScope always
// true) node-c's flow is in the table.
func TestUnentitledPeerRefused(t *testing.T) {
	r := newReceiver(t, nil)
	r.e.SetSenders(Senders{"node-a": nil})
	r.send(t, "node-c", stream(upsert(flowN(ProtoTCP, 1))))
	r.send(t, "node-a", stream(upsert(flowN(ProtoTCP, 2))))
	if _, ok := r.table.Get(flowN(ProtoTCP, 1).Key()); ok {
		t.Fatal("node-c's record applied")
	}
	if _, ok := r.table.Get(flowN(ProtoTCP, 2).Key()); !ok {
		t.Fatal("the primary's record not applied")
	}
	if st := r.e.Status(); st.Held != 1 || st.Refused[RefusedNotEntitled] != 0 {
		t.Fatalf("held %d refused %v, want 1 held, none refused yet", st.Held, st.Refused)
	}
	r.clk.add(DefaultGrace)
	r.send(t, "node-a", stream(upsert(flowN(ProtoTCP, 3))))
	st := r.e.Status()
	if st.Held != 0 || st.Refused[RefusedNotEntitled] != 1 || st.RefusedTotal != 1 {
		t.Fatalf("held %d refused %v total %d, want node-c's message refused", st.Held, st.Refused, st.RefusedTotal)
	}
	if _, ok := r.table.Get(flowN(ProtoTCP, 1).Key()); ok {
		t.Fatal("node-c's record applied after the grace")
	}
	if n, _ := r.table.Count(); n != 2 {
		t.Fatalf("%d flows, want the primary's 2", n)
	}
	// A node that is primary itself is no more open: with nobody
	// entitled, nobody's record is applied.
	r.e.SetSenders(Senders{})
	r.clk.add(DefaultGrace)
	r.send(t, "node-a", stream(upsert(flowN(ProtoTCP, 4))))
	r.clk.add(DefaultGrace)
	r.e.flushHeld(r.clk.now(), &r.m)
	if _, ok := r.table.Get(flowN(ProtoTCP, 4).Key()); ok {
		t.Fatal("a record applied with nobody entitled")
	}
}

// TestHeldUntilEntitled: a new primary's bulk copy that arrives before its
// first heartbeat is processed here is held and applied, complete, once
// the agent names it. Refused at once instead, the copy would be lost.
func TestHeldUntilEntitled(t *testing.T) {
	r := newReceiver(t, nil)
	r.e.SetSenders(Senders{})
	r.send(t, "node-a", &Message{Kind: KindBulkBegin, Gen: 1})
	r.send(t, "node-a", &Message{Kind: KindBulk, Gen: 1, Records: []Record{upsert(flowN(ProtoTCP, 1)), upsert(flowN(ProtoTCP, 2))}})
	r.send(t, "node-a", &Message{Kind: KindBulkEnd, Gen: 1, Count: 2})
	if n, _ := r.table.Count(); n != 0 || r.e.BulkDone() {
		t.Fatalf("%d flows, bulk done %v before node-a is entitled", n, r.e.BulkDone())
	}
	r.clk.add(DefaultGrace / 2)
	r.e.SetSenders(Senders{"node-a": nil})
	r.e.flushHeld(r.clk.now(), &r.m)
	if n, _ := r.table.Count(); n != 2 || !r.e.BulkDone() {
		t.Fatalf("%d flows, bulk done %v once node-a is entitled", n, r.e.BulkDone())
	}
	// A copy whose begin was refused (held too long) is not complete.
	r2 := newReceiver(t, nil)
	r2.e.SetSenders(Senders{})
	r2.send(t, "node-a", &Message{Kind: KindBulkBegin, Gen: 1})
	r2.clk.add(DefaultGrace)
	r2.e.flushHeld(r2.clk.now(), &r2.m) // the timer's tick
	r2.e.SetSenders(Senders{"node-a": nil})
	r2.send(t, "node-a", &Message{Kind: KindBulk, Gen: 1, Records: []Record{upsert(flowN(ProtoTCP, 1))}})
	r2.send(t, "node-a", &Message{Kind: KindBulkEnd, Gen: 1, Count: 1})
	if st := r2.e.Status(); st.BulkDone || st.Refused[RefusedNotEntitled] != 1 {
		t.Fatalf("bulk done %v refused %v: a copy without its begin counted complete", st.BulkDone, st.Refused)
	}
}

// TestGraceAfterRoleChange: the old primary's last messages, arriving
// after this node's election moved the role, are applied within the grace
// and refused after it.
func TestGraceAfterRoleChange(t *testing.T) {
	r := newReceiver(t, nil)
	r.e.SetSenders(Senders{"node-a": nil})
	r.e.SetSenders(Senders{"node-c": nil}) // node-a let the role go
	r.send(t, "node-a", stream(upsert(flowN(ProtoTCP, 1))))
	if _, ok := r.table.Get(flowN(ProtoTCP, 1).Key()); !ok {
		t.Fatal("the old primary's last record not applied within the grace")
	}
	r.clk.add(DefaultGrace)
	r.send(t, "node-a", stream(upsert(flowN(ProtoTCP, 2))))
	r.clk.add(time.Millisecond)
	r.send(t, "node-c", stream(upsert(flowN(ProtoTCP, 3))))
	r.clk.add(DefaultGrace)
	r.e.flushHeld(r.clk.now(), &r.m)
	if _, ok := r.table.Get(flowN(ProtoTCP, 2).Key()); ok {
		t.Fatal("the old primary's record applied after the grace")
	}
	if _, ok := r.table.Get(flowN(ProtoTCP, 3).Key()); !ok {
		t.Fatal("the new primary's record not applied")
	}
}

// TestOutOfScopeRefused: with virtual clusters a primary may send the
// flows of its vcluster only (here: even marks); the others are refused,
// and its bulk copy sweeps nothing outside them.
func TestOutOfScopeRefused(t *testing.T) {
	r := newReceiver(t, nil)
	even := func(f *Flow) bool { return f.Mark%2 == 0 }
	r.e.SetSenders(Senders{"node-a": even})
	r.table.Put(flowN(ProtoTCP, 5)) // a flow of the other vcluster, forwarded here
	r.send(t, "node-a", &Message{Kind: KindBulkBegin, Gen: 1})
	r.send(t, "node-a", &Message{Kind: KindBulk, Gen: 1, Records: []Record{upsert(flowN(ProtoTCP, 2)), upsert(flowN(ProtoTCP, 3)),
		{Op: OpDelete, Flow: flowN(ProtoTCP, 5)}}})
	r.send(t, "node-a", &Message{Kind: KindBulkEnd, Gen: 1, Count: 2})
	if _, ok := r.table.Get(flowN(ProtoTCP, 3).Key()); ok {
		t.Fatal("a flow outside node-a's scope applied")
	}
	if _, ok := r.table.Get(flowN(ProtoTCP, 5).Key()); !ok {
		t.Fatal("node-a deleted or swept a flow outside its scope")
	}
	if _, ok := r.table.Get(flowN(ProtoTCP, 2).Key()); !ok {
		t.Fatal("node-a's flow not applied")
	}
	if st := r.e.Status(); st.Refused[RefusedScope] != 2 {
		t.Fatalf("refused %v, want 2 out_of_scope", st.Refused)
	}
}

// TestReceiveFilter: the receiver applies its own filter (the one its
// sender side applies): no connectionless flow with connectionless off,
// nothing of an ignored prefix, no NATed flow with nat off, no
// expectation with expectation off. Each is refused, counted.
func TestReceiveFilter(t *testing.T) {
	r := newReceiver(t, func(c *Config) {
		c.Connectionless, c.NAT, c.Expectation = false, false, false
		c.Ignore = []netip.Prefix{netip.MustParsePrefix("10.9.0.7/32")}
	})
	r.e.SetSenders(Senders{"node-a": nil})
	plain := flowN(ProtoTCP, 1)
	plain.Reply.Dst, plain.Reply.DstPort = plain.Orig.Src, plain.Orig.SrcPort // not NATed
	ignored := plain
	ignored.Orig.Src, ignored.Reply.Dst = netip.MustParseAddr("10.9.0.7"), netip.MustParseAddr("10.9.0.7")
	udp := plain
	udp.Proto, udp.TCP = ProtoUDP, nil
	natted := flowN(ProtoTCP, 2) // masqueraded (flowN's reply goes to 10.9.2.100)
	ftp := plain
	ftp.Helper = "ftp"
	r.send(t, "node-a", stream(upsert(plain), upsert(ignored), upsert(udp), upsert(natted), Record{Op: OpUpsert, Expect: sampleExpect(ftp)}))
	if n, _ := r.table.Count(); n != 1 {
		t.Fatalf("%d flows applied, want only the plain TCP one: %+v", n, r.table.Flows())
	}
	if _, ok := r.table.Get(plain.Key()); !ok {
		t.Fatal("the plain flow not applied")
	}
	if len(r.table.expects) != 0 {
		t.Fatal("an expectation applied with expectation off")
	}
	if st := r.e.Status(); st.Refused[RefusedFilter] != 3 || st.Refused[RefusedExpectOff] != 1 {
		t.Fatalf("refused %v, want 3 filtered, 1 expectations_off", st.Refused)
	}
}

// TestStatusMasked: a copy carries only the status bits in CopyStatus,
// whatever the record says (EXPECTED, NAT bits, DYING, TEMPLATE, HELPER,
// OFFLOAD...).
func TestStatusMasked(t *testing.T) {
	r := newReceiver(t, nil)
	r.e.SetSenders(Senders{"node-a": nil})
	f := flowN(ProtoTCP, 1)
	f.Status = 0xffffffff
	r.send(t, "node-a", stream(upsert(f)))
	got, ok := r.table.Get(f.Key())
	if !ok {
		t.Fatal("not applied")
	}
	if got.Status != CopyStatus {
		t.Fatalf("status %#x, want %#x", got.Status, CopyStatus)
	}
	if st := r.e.Status(); st.StatusMasked != 1 {
		t.Fatalf("status_masked %d, want 1", st.StatusMasked)
	}
	// The bits a sender's kernel reports (NAT, HELPER, OFFLOAD) are
	// cleared too, not counted.
	g := flowN(ProtoTCP, 2)
	g.Status |= StatusSrcNAT | StatusDstNAT | 1<<7 | 1<<8 | 1<<13 | 1<<14
	r.send(t, "node-a", stream(upsert(g)))
	if got, _ := r.table.Get(g.Key()); got.Status != CopyStatus {
		t.Fatalf("status %#x, want %#x", got.Status, CopyStatus)
	}
	if st := r.e.Status(); st.StatusMasked != 1 {
		t.Fatalf("status_masked %d after a sender's usual bits, want still 1", st.StatusMasked)
	}
}

// TestHelperRemoved: a copy carries only a helper this node allows; a flow
// with another is applied without it, an expectation of another is
// refused.
func TestHelperRemoved(t *testing.T) {
	r := newReceiver(t, func(c *Config) { c.Helpers = func(n string) bool { return n == "ftp" } })
	r.e.SetSenders(Senders{"node-a": nil})
	ftp, sip := flowN(ProtoTCP, 1), flowN(ProtoTCP, 2)
	ftp.Helper, sip.Helper = "ftp", "sip"
	x := sampleExpect(sip)
	x.Helper = "sip"
	r.send(t, "node-a", stream(upsert(ftp), upsert(sip), Record{Op: OpUpsert, Expect: x}))
	if g, _ := r.table.Get(ftp.Key()); g.Helper != "ftp" {
		t.Fatalf("ftp flow has helper %q", g.Helper)
	}
	g, ok := r.table.Get(sip.Key())
	if !ok || g.Helper != "" {
		t.Fatalf("sip flow applied %v with helper %q, want applied without", ok, g.Helper)
	}
	if _, ok := r.table.GetExpect(x.Key()); ok {
		t.Fatal("an expectation of a helper not allowed applied")
	}
	if st := r.e.Status(); st.HelpersRemoved != 1 || st.Refused[RefusedHelper] != 1 {
		t.Fatalf("helpers_removed %d refused %v", st.HelpersRemoved, st.Refused)
	}
}

// TestHoldBounded: a peer that is never entitled fills the hold up to its
// bound, no further; the rest is refused at once.
func TestHoldBounded(t *testing.T) {
	r := newReceiver(t, nil)
	r.e.SetSenders(Senders{})
	for i := 0; i < maxHeldMessages+100; i++ {
		r.send(t, "node-c", stream(upsert(flowN(ProtoTCP, i))))
	}
	st := r.e.Status()
	if st.Held != maxHeldMessages || st.Refused[RefusedNotEntitled] != 100 || r.e.heldBytes > maxHeldBytes {
		t.Fatalf("held %d (%d bytes) refused %v", st.Held, r.e.heldBytes, st.Refused)
	}
	if n, _ := r.table.Count(); n != 0 {
		t.Fatalf("%d flows applied", n)
	}
}

// TestBookkeepingBounded: the sender's lastSent and born stay within
// MaxTracked when destroy events never come (lost to overruns): the
// stale entries go first, then any, counted.
func TestBookkeepingBounded(t *testing.T) {
	r := newReceiver(t, func(c *Config) { c.MaxTracked, c.Delay = 64, time.Second })
	r.e.SetRole(true, nil)
	for i := 0; i < 5000; i++ {
		f := flowN(ProtoUDP, i)
		f.TCP = nil
		r.e.onEvent(Event{Type: EventUpdate, Flow: f})
		r.clk.add(time.Millisecond)
	}
	r.e.mu.Lock()
	ls, born := len(r.e.lastSent), len(r.e.born)
	r.e.mu.Unlock()
	t.Logf("lastSent %d born %d evicted %d", ls, born, r.e.Status().BookEvicted)
	if ls > 64 || born > 64 {
		t.Fatalf("lastSent %d born %d, bound 64", ls, born)
	}
}

// FuzzReceive drives the whole receive path: a message of arbitrary bytes
// from one of three peers (node-a entitled to the even marks, node-c once
// entitled then not, node-x never) into handle, the clock moving by the
// input. Never a panic; nothing of node-x's and nothing out of node-a's
// scope is ever in the table; every flow's status is within CopyStatus,
// its helper allowed, and it passes the receiver's filter; the hold stays
// within its bounds.
func FuzzReceive(f *testing.F) {
	good, _ := sampleMessage().MarshalBinary()
	f.Add(byte(0), uint16(0), good)
	f.Add(byte(2), uint16(0), good)
	f.Add(byte(1), uint16(4000), good)
	bb, _ := (&Message{Kind: KindBulkBegin, Gen: 1}).MarshalBinary()
	be, _ := (&Message{Kind: KindBulkEnd, Gen: 1, Count: 3}).MarshalBinary()
	f.Add(byte(0), uint16(1), bb)
	f.Add(byte(0), uint16(1), be)
	wild := flowN(ProtoTCP, 2)
	wild.Status, wild.Helper = 0xffffffff, "sip"
	w, _ := stream(upsert(wild), upsert(flowN(ProtoTCP, 3))).MarshalBinary()
	f.Add(byte(0), uint16(0), w)
	f.Add(byte(2), uint16(9000), w)
	f.Add(byte(0), uint16(0), []byte("SS\x01\x01"))
	f.Fuzz(func(t *testing.T, peer byte, ms uint16, data []byte) {
		r := newReceiver(t, func(c *Config) {
			c.Helpers = func(n string) bool { return n == "ftp" }
			c.Ignore = []netip.Prefix{netip.MustParsePrefix("10.9.0.7/32")}
		})
		r.table.Put(flowN(ProtoTCP, 1001)) // odd: not node-a's to touch
		even := func(f *Flow) bool { return f.Mark%2 == 0 }
		r.e.SetSenders(Senders{"node-a": even, "node-c": nil})
		r.e.SetSenders(Senders{"node-a": even}) // node-c: grace only
		from := []string{"node-a", "node-c", "node-x"}[int(peer)%3]
		for i := 0; i < 3; i++ { // the same message three times, the clock moving
			r.e.handle(l2chan.Message{From: from, Data: data}, &r.m)
			r.clk.add(time.Duration(ms) * time.Millisecond)
		}
		r.e.flushHeld(r.clk.now(), &r.m)
		if _, ok := r.table.Get(flowN(ProtoTCP, 1001).Key()); !ok {
			t.Fatal("a flow outside the sender's scope was removed")
		}
		for _, g := range r.table.Flows() {
			if g.Key() == flowN(ProtoTCP, 1001).Key() {
				continue
			}
			if from == "node-x" {
				t.Fatalf("node-x's flow %s applied", g.String())
			}
			if from == "node-a" && !even(&g) {
				t.Fatalf("flow %s outside node-a's scope applied", g.String())
			}
			if g.Status&^CopyStatus != 0 {
				t.Fatalf("flow %s applied with status %#x", g.String(), g.Status)
			}
			if g.Helper != "" && g.Helper != "ftp" {
				t.Fatalf("flow %s applied with helper %q", g.String(), g.Helper)
			}
			if !r.e.wanted(&g) {
				t.Fatalf("flow %s applied though the filter refuses it", g.String())
			}
		}
		for _, x := range r.table.expects {
			if x.Helper != "ftp" || from == "node-x" {
				t.Fatalf("expectation %s applied", x.String())
			}
		}
		if len(r.e.held) > maxHeldMessages || r.e.heldBytes > maxHeldBytes || r.e.heldBytes < 0 {
			t.Fatalf("hold %d messages %d bytes", len(r.e.held), r.e.heldBytes)
		}
		n := 0
		for _, c := range r.e.heldFrom {
			n += c
		}
		if n != len(r.e.held) {
			t.Fatalf("heldFrom counts %d messages, the hold has %d", n, len(r.e.held))
		}
	})
}

// BenchmarkUnentitledMessage: the cost of a message (one record) from a
// key holder that is not entitled, once the hold is full (the steady state
// of a flood): refused and counted without decoding.
func BenchmarkUnentitledMessage(b *testing.B) {
	r := newReceiver(b, nil)
	r.e.SetSenders(Senders{"node-a": nil})
	data, _ := stream(upsert(flowN(ProtoTCP, 1))).MarshalBinary()
	msg := l2chan.Message{From: "node-c", Data: data}
	for range maxHeldMessages {
		r.e.handle(msg, &r.m)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.e.handle(msg, &r.m)
	}
	b.StopTimer()
	if n, _ := r.table.Count(); n != 0 {
		b.Fatalf("%d flows applied", n)
	}
}
