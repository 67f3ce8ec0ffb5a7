package sessionsync

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
)

// quietPair is newPair without the refresh of connectionless flows (its
// re-sends would count as received records).
func quietPair(t *testing.T) (a, b *member) {
	nw := heartbeat.NewMemNetwork()
	quiet := func(c *Config) { c.Refresh = time.Hour }
	a = newMember(t, nw, "node-a", quiet)
	b = newMember(t, nw, "node-b", quiet)
	a.e.SetRole(true, []string{"node-b"})
	return a, b
}

// mixedFlows puts on a's table TCP flows 0-2, a TCP flow 3 in state
// closing and a UDP flow 4, and waits for b to hold their copies.
func mixedFlows(t *testing.T, a, b *member, closing uint8) {
	t.Helper()
	for i := 0; i < 3; i++ {
		a.table.Put(flowN(ProtoTCP, i))
	}
	c := flowN(ProtoTCP, 3)
	c.TCP.State = closing
	a.table.Put(c)
	a.table.Put(flowN(ProtoUDP, 4))
	eventually(t, 5*time.Second, func() error { return sameKeys(a.table, b.table, nil) })
}

// waitBulk waits until m has received a complete bulk copy.
func waitBulk(t *testing.T, m *member) {
	t.Helper()
	eventually(t, 5*time.Second, func() error {
		if !m.e.BulkDone() {
			return fmt.Errorf("%s: no complete bulk copy yet", m.name)
		}
		return nil
	})
}

// sentinel puts flow i on a's table and waits for b to hold it: the
// stream is in order, so whatever a sent before has been applied on b.
func sentinel(t *testing.T, a, b *member, i int) {
	t.Helper()
	f := flowN(ProtoTCP, i)
	a.table.Put(f)
	eventually(t, 5*time.Second, func() error {
		if _, ok := b.table.Get(f.Key()); !ok {
			return fmt.Errorf("sentinel flow %d not copied", i)
		}
		return nil
	})
}

// TestRenewPrimary: Renew replaces a primary's TCP flows that are not
// closing by fresh copies of themselves (UDP flows have no window to
// renew), and the replacements' events reach no peer: node-b's copies
// stay, and it receives nothing but the next real change.
func TestRenewPrimary(t *testing.T) {
	a, b := quietPair(t)
	mixedFlows(t, a, b, tcpTimeWait)
	sentinel(t, a, b, 5)
	before := b.e.Status().Received
	renewed, total, err := a.e.Renew(context.Background(), "test")
	if err != nil || renewed != 4 || total != 4 {
		t.Fatalf("Renew: %d of %d renewed, %v; want 4 of 4 (the TCP flows not closing)", renewed, total, err)
	}
	if n := a.table.Renewed(); n != 4 {
		t.Fatalf("table renewed %d flows, want 4", n)
	}
	sentinel(t, a, b, 6)
	if got := b.e.Status().Received - before; got != 1 {
		t.Fatalf("node-b received %d records after the renewal, want 1 (the sentinel): the renewal's events were sent", got)
	}
	if err := sameKeys(a.table, b.table, nil); err != nil {
		t.Fatal(err)
	}
	if st := a.e.Status(); st.Renewed != 4 {
		t.Fatalf("status renewed %d, want 4", st.Renewed)
	}
	// A secondary has nothing to renew: its entries are copies.
	if n, _, _ := b.e.Renew(context.Background(), "test"); n != 0 || b.table.Renewed() != 0 {
		t.Fatalf("a secondary renewed %d flows", n)
	}
}

// TestRenewEndedFlow: a flow that ends between the renewal's dump and its
// replacement is not brought back, and its end reaches the peer.
func TestRenewEndedFlow(t *testing.T) {
	a, b := newPair(t)
	f := flowN(ProtoTCP, 1)
	a.table.Put(f)
	sentinel(t, a, b, 2)
	a.table.Refuse = func(r *Flow) error {
		if r.Key() == f.Key() {
			a.table.Remove(f.Key()) // the connection ends now
		}
		return nil
	}
	if _, _, err := a.e.Renew(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	a.table.Refuse = nil
	if _, ok := a.table.Get(f.Key()); ok {
		t.Fatal("the renewal brought an ended flow back")
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, ok := b.table.Get(f.Key()); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node-b still holds the copy of the ended flow")
		}
	}
}

// TestDemotedReplacesAll: records a member applied while it was primary
// (the old primary's last events, sent until it let go) are not copies:
// once it is secondary again, the next primary's bulk copy replaces every
// flow it holds, those included. (They were taken for copies and updated
// in place, keeping this node's stale window tracking.)
func TestDemotedReplacesAll(t *testing.T) {
	a, b := newPair(t)
	for i := 0; i < 3; i++ {
		a.table.Put(flowN(ProtoTCP, i))
	}
	eventually(t, 5*time.Second, func() error { return sameKeys(a.table, b.table, nil) })
	b.e.SetRole(true, nil) // node-b takes over; node-a still sends
	u := flowN(ProtoTCP, 1)
	u.Mark = 77
	a.table.Put(u)
	eventually(t, 5*time.Second, func() error {
		if g, _ := b.table.Get(u.Key()); g.Mark != 77 {
			return fmt.Errorf("the update did not reach node-b")
		}
		return nil
	})
	b.e.SetRole(false, nil) // and lets go again
	replaced := b.table.Replaced()
	a.e.PeerRestarted("node-b") // a bulk copy to node-b
	eventually(t, 5*time.Second, func() error {
		if got := b.table.Replaced() - replaced; got != 3 {
			return fmt.Errorf("the bulk copy replaced %d flows on node-b, want all 3", got)
		}
		return nil
	})
}

// TestPrimaryDoesNotSweep: a bulk copy that reaches a primary (its
// sender took it for a secondary) does not remove the flows it forwards.
func TestPrimaryDoesNotSweep(t *testing.T) {
	nw := heartbeat.NewMemNetwork()
	a := newMember(t, nw, "node-a", nil)
	b := newMember(t, nw, "node-b", nil)
	b.e.SetRole(true, nil)
	b.table.Put(flowN(ProtoTCP, 5))
	b.table.Put(flowN(ProtoTCP, 6))
	a.table.Put(flowN(ProtoTCP, 1))
	a.e.SetRole(true, []string{"node-b"})
	waitBulk(t, b)
	for _, i := range []int{5, 6} {
		if _, ok := b.table.Get(flowN(ProtoTCP, i).Key()); !ok {
			t.Fatalf("the primary's flow %d was swept by a peer's bulk copy", i)
		}
	}
	if st := b.e.Status(); st.Swept != 0 || st.SweepsSkipped != 1 {
		t.Fatalf("swept %d, sweeps skipped %d; want 0, 1", st.Swept, st.SweepsSkipped)
	}
}

// TestKeepFlows: a member letting the role go makes its own flows plain
// copies (OpReplace, connectionless ones too), closing TCP flows and
// those keep rejects aside; nothing is sent.
func TestKeepFlows(t *testing.T) {
	a, b := quietPair(t)
	mixedFlows(t, a, b, tcpClose)
	// b holds the copies before every record sent has arrived (the bulk
	// copy and the stream both carry them): wait for the rest, or it is
	// counted as sent by a secondary below.
	eventually(t, 5*time.Second, func() error {
		var sent uint64
		for _, p := range a.e.Status().Peers {
			sent += p.SentFlows
		}
		if got := b.e.Status().Received; got != sent {
			return fmt.Errorf("node-b received %d of the %d records sent", got, sent)
		}
		return nil
	})
	a.e.SetRole(false, nil)
	before := b.e.Status().Received
	skip := flowN(ProtoTCP, 2).Key()
	renewed, total, err := a.e.KeepFlows(context.Background(), "test", func(f *Flow) bool { return f.Key() != skip })
	if err != nil || renewed != 3 || total != 3 {
		t.Fatalf("KeepFlows: %d of %d, %v; want 3 of 3", renewed, total, err)
	}
	if n := a.table.Replaced(); n != 3 {
		t.Fatalf("replaced %d, want 3", n)
	}
	if n, _ := a.table.Count(); n != 5 {
		t.Fatalf("%d flows after KeepFlows, want 5", n)
	}
	if got := b.e.Status().Received; got != before {
		t.Fatalf("node-b received %d records from a secondary", got-before)
	}
}
