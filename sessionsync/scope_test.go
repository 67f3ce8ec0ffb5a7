package sessionsync

import (
	"fmt"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
)

// Split primaries: each node sends only the flows of its scope, both are
// primary, and a bulk copy never sweeps the receiver's own flows.
func TestScopeSplitPrimaries(t *testing.T) {
	nw := heartbeat.NewMemNetwork()
	a := newMember(t, nw, "node-a", nil)
	b := newMember(t, nw, "node-b", nil)
	even := func(f *Flow) bool { return f.Mark%2 == 0 } // node-a's "vcluster"
	odd := func(f *Flow) bool { return f.Mark%2 == 1 }
	for i := 0; i < 200; i++ {
		f := flowN(ProtoTCP, i)
		if i%2 == 0 {
			a.table.Put(f) // node-a forwards the even flows
		} else {
			b.table.Put(f)
		}
	}
	a.e.SetScope(even)
	b.e.SetScope(odd)
	a.e.SetRole(true, []string{"node-b"})
	b.e.SetRole(true, []string{"node-a"})
	eventually(t, 10*time.Second, func() error {
		if !a.e.BulkDone() || !b.e.BulkDone() {
			return fmt.Errorf("bulk copies not done")
		}
		for _, m := range []*member{a, b} {
			if n := len(m.table.Flows()); n != 200 {
				return fmt.Errorf("%s has %d flows, want all 200 (its own and the copies)", m.name, n)
			}
		}
		return nil
	})
	// A new flow of node-b's scope on node-a is not sent (it is not
	// node-a's), one of node-a's scope is.
	a.table.Put(flowN(ProtoTCP, 1001)) // odd
	a.table.Put(flowN(ProtoTCP, 1002)) // even
	eventually(t, 5*time.Second, func() error {
		if _, ok := b.table.Get(flowN(ProtoTCP, 1002).Key()); !ok {
			return fmt.Errorf("node-a's flow 1002 not copied")
		}
		return nil
	})
	if _, ok := b.table.Get(flowN(ProtoTCP, 1001).Key()); ok {
		t.Fatal("node-a sent a flow of node-b's scope")
	}
	// node-b fails: node-a owns everything now; a new bulk to a returning
	// node-b carries both halves, and node-a sweeps nothing of its own.
	a.e.SetScope(nil)
	b.stop()
	b2 := newMember(t, nw, "node-b", nil)
	a.e.PeerRestarted("node-b")
	eventually(t, 10*time.Second, func() error {
		if n := len(b2.table.Flows()); n != 202 {
			return fmt.Errorf("returning node-b has %d flows, want 202", n)
		}
		return nil
	})
	if n := len(a.table.Flows()); n != 202 {
		t.Fatalf("node-a has %d flows after the failover, want 202", n)
	}
}
