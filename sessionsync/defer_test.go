package sessionsync

import (
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
)

// ackLog records OnAcked calls and what the peer's table held then.
type ackLog struct {
	mu     sync.Mutex
	keys   []Key
	inPeer []bool
	peer   *MemTable
}

func (l *ackLog) onAcked(k Key) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys = append(l.keys, k)
	in := false
	if l.peer != nil {
		for _, f := range l.peer.Flows() {
			if f.Key() == k {
				in = true
			}
		}
	}
	l.inPeer = append(l.inPeer, in)
}

func (l *ackLog) get() ([]Key, []bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Key(nil), l.keys...), append([]bool(nil), l.inPeer...)
}

// TestDeferAcked: a flow Defer queued is acknowledged (OnAcked) once the
// peer's table holds it, not before (the channel's own acknowledgement
// comes at the message's arrival); a packet of it that follows does not
// wait; defer off waits for nothing.
func TestDeferAcked(t *testing.T) {
	log := &ackLog{}
	var slow *slowTable
	a, b := newSymmetricPairMod(t, func(c *Config) {
		if c.Self == "node-a" {
			c.OnAcked = log.onAcked
		} else {
			// node-b's kernel is slow: an acknowledgement sent before
			// the apply would come first.
			slow = &slowTable{MemTable: c.Table.(*MemTable)}
			c.Table = slow
		}
	})
	log.peer = b.table
	slow.delay.Store(int64(100 * time.Millisecond))
	f := flowN(ProtoTCP, 7)
	if !a.e.Defer(&f) {
		t.Fatal("Defer: false with a live peer, want true (hold the packet)")
	}
	if !a.e.Defer(&f) {
		t.Error("Defer of a flow still waiting: false, want true (its packets wait together)")
	}
	eventually(t, 5*time.Second, func() error {
		if ks, _ := log.get(); len(ks) == 0 {
			return fmt.Errorf("not acknowledged")
		}
		return nil
	})
	ks, in := log.get()
	if len(ks) != 1 || ks[0] != f.Key() || !in[0] {
		t.Fatalf("acknowledged %v (in the peer's table then: %v), want %v once, in the peer's table", ks, in, f.Key())
	}
	if a.e.Waiting(f.Key()) {
		t.Error("still waiting after the acknowledgement")
	}
	if a.e.Defer(&f) {
		t.Error("Defer of an acknowledged flow (a packet that follows): true, want false")
	}
	// node-b has no OnAcked: its Defer holds nothing.
	g := flowN(ProtoTCP, 8)
	if b.e.Defer(&g) {
		t.Error("Defer with defer off: true, want false")
	}
}

// slowTable applies after a delay.
type slowTable struct {
	*MemTable
	delay atomic.Int64
}

func (s *slowTable) Apply(recs []Record) []error {
	time.Sleep(time.Duration(s.delay.Load()))
	return s.MemTable.Apply(recs)
}

// gatedTable holds its applies until the gate opens.
type gatedTable struct {
	*MemTable
	gate chan struct{}
}

func (g *gatedTable) Apply(recs []Record) []error {
	<-g.gate
	return g.MemTable.Apply(recs)
}

// TestDeferPeerGone: a flow waiting for a peer that leaves the live set
// is released at once (peers that are not live are not waited for); a
// peer without a bulk copy yet is not waited for.
func TestDeferPeerGone(t *testing.T) {
	log := &ackLog{}
	nw := heartbeat.NewMemNetwork()
	sym := func(c *Config) { c.Symmetric = true }
	a := newMember(t, nw, "node-a", func(c *Config) { sym(c); c.OnAcked = log.onAcked })
	gt := &gatedTable{gate: make(chan struct{})}
	b := newMember(t, nw, "node-b", func(c *Config) {
		sym(c)
		gt.MemTable = c.Table.(*MemTable)
		c.Table = gt
	})
	defer close(gt.gate)
	f := flowN(ProtoTCP, 9)
	a.e.SetRole(true, []string{"node-b"})
	if a.e.Defer(&f) {
		t.Fatal("Defer before the peer's bulk copy: true, want false (the bulk carries it)")
	}
	eventually(t, 5*time.Second, func() error {
		for _, p := range a.e.Status().Peers {
			if p.Bulk.State == "running" || p.Bulk.State == "done" {
				return nil
			}
		}
		return fmt.Errorf("bulk copy not begun")
	})
	g := flowN(ProtoTCP, 10)
	if !a.e.Defer(&g) {
		t.Fatal("Defer: false, want true")
	}
	time.Sleep(50 * time.Millisecond)
	if ks, _ := log.get(); len(ks) != 0 {
		t.Fatalf("acknowledged %v while the peer applies nothing", ks)
	}
	a.e.SetRole(true, nil) // node-b is not live any more
	ks, _ := log.get()
	if len(ks) != 1 || ks[0] != g.Key() {
		t.Fatalf("released %v when the peer left, want [%v]", ks, g.Key())
	}
	_ = b
}

// TestAppliedEncoding: the acknowledgement decodes to its keys; malformed
// ones are refused without a panic or an allocation for a count the input
// cannot hold.
func TestAppliedEncoding(t *testing.T) {
	keys := []Key{flowN(ProtoTCP, 1).Key(), {Zone: 3, Proto: ProtoUDP, Orig: Tuple{
		Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"), SrcPort: 1, DstPort: 2}}}
	b := appendApplied(nil, keys)
	got, err := decodeApplied(b)
	if err != nil || len(got) != 2 || got[0] != keys[0] || got[1] != keys[1] {
		t.Fatalf("decoded %v, %v; want %v", got, err, keys)
	}
	if got, err := decodeApplied(appendApplied(nil, nil)); err != nil || len(got) != 0 {
		t.Errorf("empty: %v, %v", got, err)
	}
	mut := func(f func(c []byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	for name, in := range map[string][]byte{
		"truncated":   b[:len(b)-1],
		"trailing":    append(append([]byte(nil), b...), 0),
		"huge count":  mut(func(c []byte) []byte { c[16], c[17] = 0xff, 0xff; return c }),
		"bad flag":    mut(func(c []byte) []byte { c[headerLen] = 4; return c }),
		"gen not 0":   mut(func(c []byte) []byte { c[5] = 1; return c }),
		"header only": b[:10],
		"other kind":  mut(func(c []byte) []byte { c[3] = byte(KindStream); return c }),
	} {
		if _, err := decodeApplied(in); err == nil {
			t.Errorf("%s: decoded, want an error", name)
		} else if name == "huge count" && err != io.ErrUnexpectedEOF {
			t.Errorf("%s: %v, want unexpected EOF", name, err)
		}
	}
}

// natKeepingTable keeps an existing flow's reply tuple on an upsert, as
// the kernel refuses NAT changes of an entry.
type natKeepingTable struct{ *MemTable }

func (n natKeepingTable) Apply(recs []Record) []error {
	var errs []error
	for _, r := range recs { // in order, as the kernel takes a batch
		if old, ok := n.MemTable.Get(r.Flow.Key()); ok && r.Op == OpUpsert {
			r.Flow.Reply = old.Reply
		}
		errs = append(errs, n.MemTable.Apply([]Record{r})...)
	}
	return errs
}

// TestDeferNATReplaced: a flow Defer sent without NAT (its packet, before
// source NAT) whose confirm event shows a mapping reaches the peer with
// the mapping: its plain copy is deleted first.
func TestDeferNATReplaced(t *testing.T) {
	log := &ackLog{}
	a, b := newSymmetricPairMod(t, func(c *Config) {
		if c.Self == "node-a" {
			c.OnAcked = log.onAcked
		} else {
			c.Table = natKeepingTable{c.Table.(*MemTable)}
		}
	})
	f := flowN(ProtoTCP, 11)
	f.TCP = &TCPInfo{State: TCPSynSent}
	f.Reply = Tuple{Src: f.Orig.Dst, Dst: f.Orig.Src, SrcPort: f.Orig.DstPort, DstPort: f.Orig.SrcPort} // as its packet shows it
	if !a.e.Defer(&f) {
		t.Fatal("Defer: false")
	}
	eventually(t, 5*time.Second, func() error {
		if ks, _ := log.get(); len(ks) == 0 {
			return fmt.Errorf("not acknowledged")
		}
		return nil
	})
	nat := f
	nat.Reply.Dst = netip.MustParseAddr("10.9.2.100") // masqueraded
	if f.NAT() || !nat.NAT() {
		t.Fatal("test flows: want f plain, nat NATed")
	}
	a.table.Put(nat)
	eventually(t, 5*time.Second, func() error {
		g, ok := b.table.Get(f.Key())
		if !ok || g.Reply != nat.Reply {
			return fmt.Errorf("node-b's copy: %v (present %v), want reply %v", g.Reply, ok, nat.Reply)
		}
		return nil
	})
}

// TestDeferRoundTrip measures Defer to OnAcked, one flow at a time, over
// the in-memory network and tables: the engine's and the channel's part
// of a hold (no kernel, no wire). Printed, not asserted.
func TestDeferRoundTrip(t *testing.T) {
	acked := make(chan Key, 1)
	a, _ := newSymmetricPairMod(t, func(c *Config) {
		if c.Self == "node-a" {
			c.OnAcked = func(k Key) { acked <- k }
		}
	})
	var ds []time.Duration
	for i := range 500 {
		f := flowN(ProtoTCP, 2000+i)
		t0 := time.Now()
		if !a.e.Defer(&f) {
			t.Fatal("Defer: false")
		}
		select {
		case <-acked:
		case <-time.After(5 * time.Second):
			t.Fatal("no acknowledgement")
		}
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	t.Logf("measured: Defer to OnAcked over the in-memory channel: p50 %v, p99 %v, max %v (%d flows, one at a time)", ds[len(ds)/2], ds[len(ds)*99/100], ds[len(ds)-1], len(ds))
}

// FuzzAppliedDecode: a peer's acknowledgement decodes without a panic,
// to at most maxAppliedKeys keys, and what decodes encodes to the same
// bytes.
func FuzzAppliedDecode(f *testing.F) {
	f.Add(appendApplied(nil, []Key{flowN(ProtoTCP, 1).Key()}))
	f.Add(appendApplied(nil, nil))
	f.Add(appendApplied(nil, []Key{{Zone: 3, Proto: ProtoUDP, Orig: Tuple{
		Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"), SrcPort: 1, DstPort: 2}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := decodeApplied(b)
		if err != nil {
			return
		}
		if len(keys) > maxAppliedKeys {
			t.Fatalf("%d keys, bound %d", len(keys), maxAppliedKeys)
		}
		if again := appendApplied(nil, keys); !bytes.Equal(again, b) {
			t.Fatalf("decoded %v re-encodes to\n%x\nnot\n%x", keys, again, b)
		}
	})
}
