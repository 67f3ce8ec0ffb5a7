package sessionsync

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
)

// newSymmetricPair starts node-a and node-b in fgsp mode, each sending to
// the other.
func newSymmetricPair(t *testing.T) (a, b *member) {
	return newSymmetricPairMod(t, nil)
}

// newSymmetricPairMod is newSymmetricPair with more configuration.
func newSymmetricPairMod(t *testing.T, mod func(*Config)) (a, b *member) {
	nw := heartbeat.NewMemNetwork()
	sym := func(c *Config) {
		c.Symmetric = true
		if mod != nil {
			mod(c)
		}
	}
	a = newMember(t, nw, "node-a", sym)
	b = newMember(t, nw, "node-b", sym)
	a.e.SetRole(true, []string{"node-b"})
	b.e.SetRole(true, []string{"node-a"})
	eventually(t, 5*time.Second, func() error {
		if !a.e.BulkDoneFrom("node-b") || !b.e.BulkDoneFrom("node-a") {
			return fmt.Errorf("bulk copies not done")
		}
		return nil
	})
	return a, b
}

func sentTo(m *member, peer string) uint64 {
	for _, p := range m.e.Status().Peers {
		if p.Node == peer {
			return p.SentFlows
		}
	}
	return 0
}

// settle waits until the flows sent by both members stop changing.
func settle(t *testing.T, a, b *member) (ab, ba uint64) {
	t.Helper()
	prevA, prevB := ^uint64(0), ^uint64(0)
	for i := 0; i < 100; i++ {
		ab, ba = sentTo(a, "node-b"), sentTo(b, "node-a")
		if ab == prevA && ba == prevB && a.e.Status().Peers[0].Queued == 0 && b.e.Status().Peers[0].Queued == 0 {
			return ab, ba
		}
		prevA, prevB = ab, ba
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("sending never settled: a→b %d, b→a %d", ab, ba)
	return
}

// TestSymmetricNoPingPong: flows of each member reach the other once; the
// events the applies cause are not sent back.
func TestSymmetricNoPingPong(t *testing.T) {
	a, b := newSymmetricPair(t)
	for i := 0; i < 100; i++ {
		a.table.Put(flowN(ProtoTCP, i))
		b.table.Put(flowN(ProtoUDP, 1000+i))
	}
	eventually(t, 5*time.Second, func() error {
		if na, nb := len(a.table.Flows()), len(b.table.Flows()); na != 200 || nb != 200 {
			return fmt.Errorf("a has %d flows, b %d, want 200 each", na, nb)
		}
		return nil
	})
	ab, ba := settle(t, a, b)
	if ab != 100 || ba != 100 {
		t.Fatalf("a sent %d flows to b, b sent %d to a; want 100 each (no flow sent back)", ab, ba)
	}
	if e := b.e.Status().Echoes; e < 100 {
		t.Fatalf("b counted %d echoes, want ≥ 100", e)
	}
	if err := sameKeys(a.table, b.table, nil); err != nil {
		t.Fatal(err)
	}
	st := b.e.Status()
	if st.Mode != "fgsp" || len(st.Sources) != 1 || st.Sources[0].Received != 100 || st.Sources[0].Copies != 100 {
		t.Fatalf("b's status: mode %q sources %+v", st.Mode, st.Sources)
	}
}

// TestSymmetricAsymmetricHandshake: the SYN is seen on node-a, the SYN-ACK
// on node-b, the ACK on node-a: each change made by a member's own traffic
// reaches the other, once, and the echoes of the applies stop there.
func TestSymmetricAsymmetricHandshake(t *testing.T) {
	a, b := newSymmetricPair(t)
	f := flowN(ProtoTCP, 7)
	f.Status, f.TCP = StatusConfirmed, &TCPInfo{State: TCPSynSent}
	a.table.Put(f) // SYN through node-a
	state := func(m *member, want uint8, status uint32) func() error {
		return func() error {
			g, ok := m.table.Get(f.Key())
			if !ok || g.TCP == nil || g.TCP.State != want || g.Status&status != status {
				return fmt.Errorf("%s: flow %+v, want TCP state %d status %#x", m.name, g, want, status)
			}
			return nil
		}
	}
	eventually(t, 5*time.Second, state(b, TCPSynSent, 0))
	settle(t, a, b)
	f.Status |= StatusSeenReply
	f.TCP = &TCPInfo{State: TCPSynRecv}
	b.table.Put(f) // SYN-ACK through node-b
	eventually(t, 5*time.Second, state(a, TCPSynRecv, StatusSeenReply))
	settle(t, a, b)
	f.Status |= StatusAssured
	f.TCP = &TCPInfo{State: TCPEstablished}
	a.table.Put(f) // ACK through node-a
	eventually(t, 5*time.Second, state(b, TCPEstablished, StatusAssured))
	ab, ba := settle(t, a, b)
	if ab != 2 || ba != 1 {
		t.Fatalf("a sent %d records, b %d; want 2 and 1 (SYN, ACK from a; SYN-ACK from b)", ab, ba)
	}
	if n := a.e.Status().LearnedSent + b.e.Status().LearnedSent; n != 2 {
		t.Fatalf("learned updates sent: %d, want 2", n)
	}
}

// TestSymmetricDestroy: a learned flow that goes locally (expiry) is not
// deleted on its owner; the owner's destroy deletes the copy and is not
// sent back; a learned flow this member changed is its own too.
func TestSymmetricDestroy(t *testing.T) {
	a, b := newSymmetricPair(t)
	f1, f2 := flowN(ProtoTCP, 1), flowN(ProtoTCP, 2)
	a.table.Put(f1)
	a.table.Put(f2)
	eventually(t, 5*time.Second, func() error {
		if n := len(b.table.Flows()); n != 2 {
			return fmt.Errorf("b has %d flows", n)
		}
		return nil
	})
	b.table.Remove(f1.Key()) // the copy expires on b
	settle(t, a, b)
	if _, ok := a.table.Get(f1.Key()); !ok {
		t.Fatal("a copy's expiry on b deleted the flow on its owner a")
	}
	// b carries f2 now: its change is sent, so f2 is b's as well.
	f2.Mark = 99
	b.table.Put(f2)
	eventually(t, 5*time.Second, func() error {
		if g, _ := a.table.Get(f2.Key()); g.Mark != 99 {
			return fmt.Errorf("a's f2 mark %d, want 99", g.Mark)
		}
		return nil
	})
	b.table.Remove(f2.Key())
	eventually(t, 5*time.Second, func() error {
		if _, ok := a.table.Get(f2.Key()); ok {
			return fmt.Errorf("b's destroy of f2 (b changed it) did not reach a")
		}
		return nil
	})
	a.table.Remove(f1.Key())
	_, ba := settle(t, a, b)
	if ba != 2 {
		t.Fatalf("b sent %d records, want 2 (f2's update and destroy)", ba)
	}
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// TestSymmetricRefreshNotSentBack: a UDP flow kept busy by node-a's
// traffic is refreshed to node-b; node-b's copy, idle there (its timeout
// counts down as the kernel's does), is never refreshed back, until
// node-b's own traffic renews it.
func TestSymmetricRefreshNotSentBack(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	a, b := newSymmetricPairMod(t, func(c *Config) { c.Now, c.Refresh = clk.now, 200*time.Millisecond })
	u := flowN(ProtoUDP, 3)
	u.Timeout = 30
	a.table.Put(u)
	eventually(t, 5*time.Second, func() error {
		if _, ok := b.table.Get(u.Key()); !ok {
			return fmt.Errorf("not copied")
		}
		return nil
	})
	// step moves the clock by 1 s: a member's flow that its traffic
	// keeps busy stays at 30 s, an idle one counts down (as the kernel's).
	step := func(busyA, busyB bool) {
		clk.add(time.Second)
		for _, m := range []struct {
			m    *member
			busy bool
		}{{a, busyA}, {b, busyB}} {
			if f, ok := m.m.table.Get(u.Key()); ok {
				if m.busy {
					m.m.table.Touch(u.Key(), 30)
				} else {
					m.m.table.Touch(u.Key(), f.Timeout-1)
				}
			}
		}
		time.Sleep(300 * time.Millisecond) // the timers tick on real time
	}
	for i := 0; i < 4; i++ {
		step(true, false)
	}
	if r := a.e.Status().Refreshed; r == 0 {
		t.Fatal("node-a's busy flow was not refreshed")
	}
	if s := sentTo(b, "node-a"); s != 0 {
		st := b.e.Status()
		t.Fatalf("node-b sent %d records for an idle copy (refresh back): %+v", s, st)
	}
	// The traffic moves to node-b: its copy's expiry moves beyond the
	// applied one, and node-b refreshes it to node-a.
	for i := 0; i < 4; i++ {
		step(false, true)
	}
	eventually(t, 3*time.Second, func() error {
		if s := sentTo(b, "node-a"); s == 0 {
			return fmt.Errorf("node-b never refreshed a flow its traffic keeps busy")
		}
		return nil
	})
}

// TestSymmetricOverrunPrunes: after an event overrun the states of flows
// whose destroy events were lost are forgotten.
func TestSymmetricOverrunPrunes(t *testing.T) {
	a, b := newSymmetricPair(t)
	for i := 0; i < 10; i++ {
		a.table.Put(flowN(ProtoTCP, i))
	}
	eventually(t, 5*time.Second, func() error {
		if n := len(b.table.Flows()); n != 10 {
			return fmt.Errorf("b has %d flows", n)
		}
		return nil
	})
	known := func() int { b.e.mu.Lock(); defer b.e.mu.Unlock(); return len(b.e.known) }
	if n := known(); n != 10 {
		t.Fatalf("b remembers %d flows, want 10", n)
	}
	// Five copies go without their destroy events reaching the engine.
	b.table.mu.Lock()
	for i := 0; i < 5; i++ {
		delete(b.table.flows, flowN(ProtoTCP, i).Key())
	}
	b.table.mu.Unlock()
	b.e.onEvent(Event{Type: EventOverrun})
	eventually(t, 5*time.Second, func() error {
		if n := known(); n != 5 {
			return fmt.Errorf("b remembers %d flows, want 5", n)
		}
		return nil
	})
}

// TestSymmetricLateEcho: the echo of an earlier apply (node-b's SYN_RECV)
// arriving after a later apply was learned (node-a's ESTABLISHED) is still
// an echo; a state neither applied is not.
func TestSymmetricLateEcho(t *testing.T) {
	_, c := newSymmetricPair(t)
	f := flowN(ProtoTCP, 9)
	synRecv, est, finWait := f, f, f
	synRecv.Status, synRecv.TCP = StatusConfirmed|StatusSeenReply, &TCPInfo{State: TCPSynRecv}
	est.TCP = &TCPInfo{State: TCPEstablished}
	finWait.TCP = &TCPInfo{State: 4}
	now := time.Now()
	c.e.learn("node-b", []Record{{Op: OpUpsert, Flow: synRecv}}, now)
	c.e.learn("node-a", []Record{{Op: OpUpsert, Flow: est}}, now)
	c.e.mu.Lock()
	defer c.e.mu.Unlock()
	if c.e.symmetricEvent(&synRecv) {
		t.Fatal("the late echo of node-b's SYN_RECV was sent on")
	}
	if c.e.symmetricEvent(&est) {
		t.Fatal("the echo of node-a's ESTABLISHED was sent on")
	}
	if !c.e.symmetricEvent(&finWait) {
		t.Fatal("a state made here (FIN_WAIT) was not sent")
	}
}
