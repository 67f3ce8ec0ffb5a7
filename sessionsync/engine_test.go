package sessionsync

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/internal/testutil"
	"github.com/hagent/hagent/l2chan"
)

type member struct {
	name   string
	table  *MemTable
	ch     *l2chan.Channel
	e      *Engine
	cancel context.CancelFunc
	done   chan struct{}
}

func newMember(t *testing.T, nw *heartbeat.MemNetwork, name string, mod func(*Config)) *member {
	t.Helper()
	cc := l2chan.LabConfig()
	cc.Self, cc.GroupID, cc.Password, cc.Label = name, 10, []byte("secret"), ChannelLabel
	cc.Links = []heartbeat.Link{nw.Link("hb", name, "ha1")}
	cc.AdmitAll = true // no heartbeats in these tests to admit the peers
	ch, err := l2chan.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{name: name, table: NewMemTable(), ch: ch, done: make(chan struct{})}
	cfg := DefaultConfig()
	cfg.Self, cfg.Table, cfg.Transport = name, m.table, ch
	cfg.Connectionless = true
	cfg.Refresh = 200 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	if m.e, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { defer close(m.done); m.e.Run(ctx) }()
	t.Cleanup(m.stop)
	// The kernel's event socket subscribes when it is opened; a MemTable's
	// listener when Listen runs: wait for it.
	eventually(t, time.Second, func() error {
		m.table.mu.Lock()
		defer m.table.mu.Unlock()
		if len(m.table.listeners) == 0 {
			return fmt.Errorf("not listening")
		}
		return nil
	})
	return m
}

func (m *member) stop() {
	m.cancel()
	<-m.done
	m.ch.Close()
}

// newPair starts node-a and node-b on one segment, node-a primary.
func newPair(t *testing.T) (a, b *member) {
	nw := heartbeat.NewMemNetwork()
	a = newMember(t, nw, "node-a", nil)
	b = newMember(t, nw, "node-b", nil)
	a.e.SetRole(true, []string{"node-b"})
	return a, b
}

func flowN(proto uint8, i int) Flow {
	c := netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})
	s := netip.MustParseAddr("10.9.2.10")
	f := Flow{Proto: proto, Orig: Tuple{Src: c, Dst: s, SrcPort: uint16(1024 + i%60000), DstPort: 80},
		Reply:  Tuple{Src: s, Dst: netip.MustParseAddr("10.9.2.100"), SrcPort: 80, DstPort: uint16(20000 + i%40000)},
		Status: StatusConfirmed | StatusSeenReply | StatusAssured, Timeout: 120, Mark: uint32(i)}
	if proto == ProtoTCP {
		f.TCP = &TCPInfo{State: TCPEstablished}
	}
	return f
}

// eventually is testutil.Eventually for a condition that says what it saw.
func eventually(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	testutil.Eventually(t, d, "the condition", cond)
}

func sameKeys(a, b *MemTable, filter func(*Flow) bool) error {
	want := map[Key]Flow{}
	for _, f := range a.Flows() {
		if filter == nil || filter(&f) {
			want[f.Key()] = f
		}
	}
	got := b.Flows()
	if len(got) != len(want) {
		return fmt.Errorf("replica has %d flows, want %d", len(got), len(want))
	}
	for _, f := range got {
		w, ok := want[f.Key()]
		if !ok {
			return fmt.Errorf("replica has %s, the original does not", f.String())
		}
		if w.Reply != f.Reply || w.Mark != f.Mark {
			return fmt.Errorf("%s: reply %+v mark %d, want %+v %d", f.String(), f.Reply, f.Mark, w.Reply, w.Mark)
		}
	}
	return nil
}

func TestBulkThenStream(t *testing.T) {
	nw := heartbeat.NewMemNetwork()
	a := newMember(t, nw, "node-a", nil)
	for i := 0; i < 5000; i++ {
		a.table.Put(flowN(ProtoTCP, i))
	}
	b := newMember(t, nw, "node-b", nil)
	a.e.SetRole(true, []string{"node-b"})
	eventually(t, 10*time.Second, func() error {
		if !b.e.BulkDone() {
			return fmt.Errorf("bulk not reported done")
		}
		return sameKeys(a.table, b.table, nil)
	})
	// The stream: new, update, destroy.
	a.table.Put(flowN(ProtoTCP, 9000))
	u := flowN(ProtoTCP, 1)
	u.Mark = 4242
	a.table.Put(u)
	a.table.Remove(flowN(ProtoTCP, 2).Key())
	eventually(t, 5*time.Second, func() error { return sameKeys(a.table, b.table, nil) })
	st := a.e.Status()
	if len(st.Peers) != 1 || st.Peers[0].Bulk.State != "done" || st.Peers[0].Bulk.Sent != 5000 {
		t.Fatalf("sender status %+v", st.Peers)
	}
	bs := b.e.Status()
	if bs.Applied < 5003 || bs.Errors != 0 || bs.LagP50Ms <= 0 {
		t.Fatalf("receiver status applied %d errors %d lag %v", bs.Applied, bs.Errors, bs.LagP50Ms)
	}
	// A secondary does not send: b's table changes stay local.
	b.table.Put(flowN(ProtoTCP, 9999))
	time.Sleep(50 * time.Millisecond)
	if _, ok := a.table.Get(flowN(ProtoTCP, 9999).Key()); ok {
		t.Fatal("a secondary's flow reached the primary")
	}
}

func TestFilters(t *testing.T) {
	nw := heartbeat.NewMemNetwork()
	mod := func(c *Config) {
		c.Connectionless = false
		c.NAT = false
		c.Ignore = []netip.Prefix{netip.MustParsePrefix("10.9.7.0/24")}
	}
	a := newMember(t, nw, "node-a", mod)
	b := newMember(t, nw, "node-b", mod)
	a.e.SetRole(true, []string{"node-b"})
	eventually(t, 5*time.Second, func() error {
		if !b.e.BulkDone() {
			return fmt.Errorf("no bulk yet")
		}
		return nil
	})
	plain := flowN(ProtoTCP, 1)
	plain.Reply.Dst, plain.Reply.DstPort = plain.Orig.Src, plain.Orig.SrcPort
	natted := flowN(ProtoTCP, 2)
	udp := flowN(ProtoUDP, 3)
	udp.Reply.Dst, udp.Reply.DstPort = udp.Orig.Src, udp.Orig.SrcPort
	ignored := flowN(ProtoTCP, 7<<8|5)
	ignored.Reply.Dst, ignored.Reply.DstPort = ignored.Orig.Src, ignored.Orig.SrcPort
	for _, f := range []Flow{plain, natted, udp, ignored} {
		a.table.Put(f)
	}
	eventually(t, 5*time.Second, func() error {
		return sameKeys(a.table, b.table, func(f *Flow) bool { return f.Key() == plain.Key() })
	})
	time.Sleep(100 * time.Millisecond)
	if err := sameKeys(a.table, b.table, func(f *Flow) bool { return f.Key() == plain.Key() }); err != nil {
		t.Fatal(err)
	}
}

func TestDelay(t *testing.T) {
	nw := heartbeat.NewMemNetwork()
	mod := func(c *Config) { c.Delay = 300 * time.Millisecond }
	a := newMember(t, nw, "node-a", mod)
	b := newMember(t, nw, "node-b", mod)
	a.e.SetRole(true, []string{"node-b"})
	eventually(t, 5*time.Second, func() error {
		if !b.e.BulkDone() {
			return fmt.Errorf("no bulk yet")
		}
		return nil
	})
	start := time.Now()
	long := flowN(ProtoTCP, 1)
	short := flowN(ProtoTCP, 2)
	a.table.Put(long)
	a.table.Put(short)
	time.Sleep(100 * time.Millisecond)
	a.table.Remove(short.Key()) // dies young: never copied
	if n, _ := b.table.Count(); n != 0 {
		t.Fatalf("a flow younger than delay was copied (%d)", n)
	}
	eventually(t, 3*time.Second, func() error {
		if _, ok := b.table.Get(long.Key()); !ok {
			return fmt.Errorf("long-lived flow not copied")
		}
		return nil
	})
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("copied after %v, before the delay", d)
	}
	if _, ok := b.table.Get(short.Key()); ok {
		t.Fatal("short-lived flow copied")
	}
}

func TestRefreshKeepsBusyUDP(t *testing.T) {
	a, b := newPair(t)
	u := flowN(ProtoUDP, 1)
	u.Timeout = 30
	a.table.Put(u)
	eventually(t, 3*time.Second, func() error {
		if f, ok := b.table.Get(u.Key()); !ok || f.Timeout < 30 {
			return fmt.Errorf("not copied")
		}
		return nil
	})
	// Traffic moves the original's expiry without events: the refresh
	// must carry it.
	time.Sleep(300 * time.Millisecond)
	a.table.Touch(u.Key(), 90)
	eventually(t, 3*time.Second, func() error {
		if f, _ := b.table.Get(u.Key()); f.Timeout < 90 {
			return fmt.Errorf("copy timeout %d, want >= 90", f.Timeout)
		}
		return nil
	})
	if a.e.Status().Refreshed == 0 {
		t.Fatal("refresh not counted")
	}
	a.table.Remove(u.Key())
	eventually(t, 3*time.Second, func() error {
		if _, ok := b.table.Get(u.Key()); ok {
			return fmt.Errorf("copy still there after the original went")
		}
		return nil
	})
}

func TestOverrunRepairedBySweep(t *testing.T) {
	a, b := newPair(t)
	for i := 0; i < 100; i++ {
		a.table.Put(flowN(ProtoTCP, i))
	}
	eventually(t, 5*time.Second, func() error { return sameKeys(a.table, b.table, nil) })
	// A destroy lost to an overrun: remove without an event, then report
	// the overrun.
	k := flowN(ProtoTCP, 5).Key()
	a.table.mu.Lock()
	delete(a.table.flows, k)
	a.table.mu.Unlock()
	a.e.onEvent(Event{Type: EventOverrun})
	eventually(t, 5*time.Second, func() error { return sameKeys(a.table, b.table, nil) })
	if a.e.Status().Overruns != 1 || b.e.Status().Swept != 1 {
		t.Fatalf("overruns %d swept %d", a.e.Status().Overruns, b.e.Status().Swept)
	}
}

// TestBulkSweepsUnknownCopies: a restarted receiver does not know which
// copies it made; the bulk copy's end removes forwarded flows it did not
// contain, and keeps flows of the node's own addresses.
func TestBulkSweepsUnknownCopies(t *testing.T) {
	nw := heartbeat.NewMemNetwork()
	own := netip.MustParseAddr("10.9.0.2")
	a := newMember(t, nw, "node-a", nil)
	b := newMember(t, nw, "node-b", func(c *Config) { c.LocalAddrs = func() []netip.Addr { return []netip.Addr{own} } })
	stale := flowN(ProtoTCP, 7)
	mine := flowN(ProtoTCP, 8)
	mine.Orig.Dst, mine.Reply.Src = own, own
	b.table.Put(stale)
	b.table.Put(mine)
	a.table.Put(flowN(ProtoTCP, 1))
	a.e.SetRole(true, []string{"node-b"})
	eventually(t, 5*time.Second, func() error {
		if !b.e.BulkDone() {
			return fmt.Errorf("no bulk yet")
		}
		return nil
	})
	if _, ok := b.table.Get(stale.Key()); ok {
		t.Fatal("a forwarded flow the bulk did not contain survived it")
	}
	if _, ok := b.table.Get(mine.Key()); !ok {
		t.Fatal("a flow of the node's own address was removed")
	}
	if _, ok := b.table.Get(flowN(ProtoTCP, 1).Key()); !ok {
		t.Fatal("the bulk's flow is missing")
	}
}

func TestRefusedFlowCountedRestContinue(t *testing.T) {
	nw := heartbeat.NewMemNetwork()
	a := newMember(t, nw, "node-a", nil)
	b := newMember(t, nw, "node-b", nil)
	bad := flowN(ProtoTCP, 3).Key()
	b.table.Refuse = func(f *Flow) error {
		if f.Key() == bad {
			return &KernelError{Op: "create", Errno: 17}
		}
		return nil
	}
	a.e.SetRole(true, []string{"node-b"})
	for i := 0; i < 10; i++ {
		a.table.Put(flowN(ProtoTCP, i))
	}
	eventually(t, 5*time.Second, func() error {
		if n, _ := b.table.Count(); n != 9 {
			return fmt.Errorf("%d flows", n)
		}
		return nil
	})
	st := b.e.Status()
	if st.Errors == 0 || st.ErrorReasons["file exists"] != st.Errors || len(st.Problems) == 0 {
		t.Fatalf("errors %d reasons %v problems %v", st.Errors, st.ErrorReasons, st.Problems)
	}
}

func TestMalformedCounted(t *testing.T) {
	nw := heartbeat.NewMemNetwork()
	a := newMember(t, nw, "node-a", nil)
	b := newMember(t, nw, "node-b", nil)
	for _, m := range [][]byte{[]byte("xx"), []byte("SS\x09\x01" + string(make([]byte, 16))), append([]byte("SS\x01\x01"), make([]byte, 12)...)} {
		if err := a.ch.Send(context.Background(), "node-b", append(m, 0, 0, 0, 9)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 3*time.Second, func() error {
		if st := b.e.Status(); st.Malformed != 3 {
			return fmt.Errorf("malformed %d", st.Malformed)
		}
		return nil
	})
}

func TestReadyAppliesQueued(t *testing.T) {
	a, b := newPair(t)
	for i := 0; i < 2000; i++ {
		a.table.Put(flowN(ProtoTCP, i))
	}
	eventually(t, 5*time.Second, func() error {
		if p := a.e.Status().Peers[0]; p.Queued != 0 || p.Bulk.State != "done" || p.SentFlows < 2000 {
			return fmt.Errorf("not sent yet: %+v", p)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := b.e.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	// Everything the primary had acknowledged is applied once Ready returns.
	if err := sameKeys(a.table, b.table, nil); err != nil {
		t.Fatal(err)
	}
}

// blockingTransport accepts messages and never acknowledges them.
type blockingTransport struct{ recv chan l2chan.Message }

func (b *blockingTransport) Send(ctx context.Context, peer string, msg []byte) error {
	<-ctx.Done()
	return ctx.Err()
}
func (b *blockingTransport) Recv() <-chan l2chan.Message { return b.recv }

// TestStallIsAProblem: records that wait unacknowledged longer than
// StallAfter make a problem (health ERROR), and a failing send another.
func TestStallIsAProblem(t *testing.T) {
	table := NewMemTable()
	cfg := DefaultConfig()
	cfg.Self, cfg.Table, cfg.Transport = "node-a", table, &blockingTransport{recv: make(chan l2chan.Message)}
	cfg.StallAfter, cfg.SendTimeout = 100*time.Millisecond, time.Minute
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	e.SetRole(true, []string{"node-b"})
	table.Put(flowN(ProtoTCP, 1))
	if p := e.Status().Problems; len(p) != 0 {
		t.Fatalf("problems before any wait: %v", p)
	}
	eventually(t, 3*time.Second, func() error {
		for _, p := range e.Status().Problems {
			if strings.Contains(p, "session sync to node-b stalled") {
				return nil
			}
		}
		return fmt.Errorf("no stall problem: %v", e.Status().Problems)
	})
}

// TestReceiverReplacesOwnFlows: a flow the receiver's table holds from its
// own traffic (it forwarded it as primary) is replaced by the peer's copy,
// not updated, once; copies it already made are updated in place.
func TestReceiverReplacesOwnFlows(t *testing.T) {
	nw := heartbeat.NewMemNetwork()
	a := newMember(t, nw, "node-a", nil)
	b := newMember(t, nw, "node-b", nil)
	own := flowN(ProtoTCP, 1)
	b.table.Put(own) // node-b's own entry, before node-a sends anything
	a.e.SetRole(true, []string{"node-b"})
	a.table.Put(flowN(ProtoTCP, 1))
	a.table.Put(flowN(ProtoTCP, 2))
	eventually(t, 5*time.Second, func() error {
		if !b.e.BulkDone() {
			return fmt.Errorf("no bulk yet")
		}
		if n, _ := b.table.Count(); n != 2 {
			return fmt.Errorf("%d flows", n)
		}
		return nil
	})
	if n := b.table.Replaced(); n != 1 {
		t.Fatalf("replaced %d flows, want 1 (the own one)", n)
	}
	// Updates of copies are updates: no more replacements.
	for i := 0; i < 3; i++ {
		f := flowN(ProtoTCP, 1)
		f.Mark = uint32(100 + i)
		a.table.Put(f)
	}
	eventually(t, 5*time.Second, func() error {
		if f, ok := b.table.Get(own.Key()); !ok || f.Mark != 102 {
			return fmt.Errorf("node-b's copy: %+v %v", f, ok)
		}
		return nil
	})
	if n := b.table.Replaced(); n != 1 {
		t.Fatalf("replaced %d flows after updates, want still 1", n)
	}
}

// TestExpectations: with Expectation on, an expectation created on the
// primary reaches the secondary after its master, its removal too, and a
// member that joins later gets it in the bulk copy; with it off, none
// travels.
func TestExpectations(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("expectation=%v", on), func(t *testing.T) {
			nw := heartbeat.NewMemNetwork()
			mod := func(c *Config) { c.Expectation = on }
			a := newMember(t, nw, "node-a", mod)
			b := newMember(t, nw, "node-b", mod)
			a.e.SetRole(true, []string{"node-b"})
			master := flowN(ProtoTCP, 1)
			master.Orig.DstPort, master.Helper = 21, "ftp"
			a.table.Put(master)
			x := sampleExpect(master)
			if err := a.table.PutExpect(*x); err != nil {
				t.Fatal(err)
			}
			a.table.Put(flowN(ProtoTCP, 2)) // after the expectation: the stream is in order
			eventually(t, 5*time.Second, func() error {
				if _, ok := b.table.Get(flowN(ProtoTCP, 2).Key()); !ok {
					return fmt.Errorf("the later flow is not there yet")
				}
				return nil
			})
			got, ok := b.table.GetExpect(x.Key())
			if !on {
				if ok {
					t.Fatal("expectation copied with expectation off")
				}
				if n := a.e.Status().ExpectSent; n != 0 {
					t.Fatalf("%d expectation records sent with expectation off", n)
				}
				return
			}
			if !ok || got.Helper != "ftp" || got.NATAddr != x.NATAddr || got.Master != master.Key() {
				t.Fatalf("node-b's expectation: %+v (present %v)", got, ok)
			}
			if f, _ := b.table.Get(master.Key()); f.Helper != "ftp" {
				t.Fatalf("node-b's master has helper %q", f.Helper)
			}
			// A member that joins now gets it in its bulk copy.
			c := newMember(t, nw, "node-c", mod)
			a.e.SetRole(true, []string{"node-b", "node-c"})
			eventually(t, 5*time.Second, func() error {
				if _, ok := c.table.GetExpect(x.Key()); !ok {
					return fmt.Errorf("node-c has no expectation")
				}
				return nil
			})
			// Used or expired on the primary: gone on the others.
			a.table.RemoveExpect(x.Key())
			eventually(t, 5*time.Second, func() error {
				if _, ok := b.table.GetExpect(x.Key()); ok {
					return fmt.Errorf("node-b still has it")
				}
				return nil
			})
			if st := b.e.Status(); st.ExpectApplied < 2 {
				t.Fatalf("node-b applied %d expectation records, want 2 (new, delete)", st.ExpectApplied)
			}
		})
	}
}

// lossyTransport is a Transport (synchronous: no SendAsync) that reports
// its first bulk record message as not acknowledged after delivering it:
// the acknowledgement was lost.
type lossyTransport struct {
	Transport
	mu   sync.Mutex
	lost int
}

func (l *lossyTransport) Send(ctx context.Context, peer string, msg []byte) error {
	err := l.Transport.Send(ctx, peer, msg)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && len(msg) > 3 && Kind(msg[3]) == KindBulk && l.lost == 0 {
		l.lost++
		return errors.New("no acknowledgement (lost)")
	}
	return err
}

// TestBulkRetriedAfterFailure: a bulk copy whose acknowledgement is lost
// is sent again until one completes; the receiver ends with the whole
// table and a complete copy. Before, the failure cleared the need for a
// copy and nothing was sent again: BulkDone stayed false.
func TestBulkRetriedAfterFailure(t *testing.T) {
	nw := heartbeat.NewMemNetwork()
	var lt *lossyTransport
	a := newMember(t, nw, "node-a", func(c *Config) {
		lt = &lossyTransport{Transport: c.Transport}
		c.Transport = lt
		c.BatchRecords = 10
	})
	for i := 0; i < 50; i++ {
		a.table.Put(flowN(ProtoTCP, i))
	}
	b := newMember(t, nw, "node-b", nil)
	a.e.SetRole(true, []string{"node-b"})
	eventually(t, 10*time.Second, func() error {
		if !b.e.BulkDone() {
			return fmt.Errorf("no complete bulk copy received (status of node-a: %+v)", a.e.Status().Peers)
		}
		return sameKeys(a.table, b.table, nil)
	})
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if lt.lost != 1 {
		t.Fatalf("%d acknowledgements lost, want 1", lt.lost)
	}
	if st := a.e.Status().Peers; len(st) != 1 || st[0].Bulk.State != "done" {
		t.Fatalf("node-a's peers %+v, want its copy to node-b done", st)
	}
}

// TestBulkEndWithoutBeginIgnored: a bulk end whose begin this receiver
// never saw (it restarted in the middle of the copy, or the begin of that
// generation was lost) does not count as a complete copy, which would end
// an override hold early; a whole copy after it does. Before, every bulk
// end set BulkDone.
func TestBulkEndWithoutBeginIgnored(t *testing.T) {
	r := newReceiver(t, nil)
	r.e.SetSenders(Senders{"node-a": nil})
	// Restarted mid-copy: the rest of generation 1, no begin.
	r.send(t, "node-a", &Message{Kind: KindBulk, Gen: 1, Records: []Record{upsert(flowN(ProtoTCP, 1))}})
	r.send(t, "node-a", &Message{Kind: KindBulkEnd, Gen: 1, Count: 2})
	if r.e.BulkDone() {
		t.Fatal("a bulk end without its begin counted as a complete copy")
	}
	// The begin of generation 2 lost: the end of 3 follows the begin of 2.
	r.send(t, "node-a", &Message{Kind: KindBulkBegin, Gen: 2})
	r.send(t, "node-a", &Message{Kind: KindBulkEnd, Gen: 3, Count: 0})
	if r.e.BulkDone() {
		t.Fatal("a bulk end of another generation than its begin counted as a complete copy")
	}
	r.send(t, "node-a", &Message{Kind: KindBulkBegin, Gen: 4})
	r.send(t, "node-a", &Message{Kind: KindBulk, Gen: 4, Records: []Record{upsert(flowN(ProtoTCP, 1)), upsert(flowN(ProtoTCP, 2))}})
	r.send(t, "node-a", &Message{Kind: KindBulkEnd, Gen: 4, Count: 2})
	if !r.e.BulkDone() {
		t.Fatal("a whole copy not counted as complete")
	}
}
