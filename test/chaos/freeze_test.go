package chaos

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// The freeze tests' timers: 100 ms × 6.
const freezeIval, freezeThr = 100 * time.Millisecond, 6

// freezePair starts node-a (priority 200) and node-b (100), both with
// override, waits for node-a primary and sniffs the GARPs entering the
// data switch (the lab goes when the test ends).
func freezePair(t *testing.T) (a, b *lab.Node, rec *Record) {
	t.Helper()
	needLab(t)
	l, err := lab.New(lab.Spec{Nodes: []string{"node-a", "node-b"}, HBSwitch: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	a, b = l.Nodes["node-a"], l.Nodes["node-b"]
	for i, n := range []*lab.Node{a, b} {
		p := lab.Params{GroupID: groupID, Priority: 200 - 100*i, Override: true, HBInterval: freezeIval, LostThreshold: freezeThr,
			HelloHolddown: time.Second, ARPs: 1, NoIPv6: true}
		if err := n.Start(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := lab.Eventually(10*time.Second, roles(a, b, "primary", "secondary")); err != nil {
		t.Fatal(err)
	}
	rec = &Record{Nodes: []string{a.Name, b.Name}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := garpSniff(ctx, l, []*lab.Node{a, b}, vmac, rec); err != nil {
		t.Fatal(err)
	}
	return a, b, rec
}

// roles is a condition: a and b have roles ra and rb.
func roles(a, b *lab.Node, ra, rb string) func() error {
	return func() error {
		if a.Role() != ra || b.Role() != rb {
			return fmt.Errorf("roles %s/%s, want %s/%s", a.Role(), b.Role(), ra, rb)
		}
		return nil
	}
}

// TestFrozenSecondaryWakes: a secondary SIGSTOPped for 3 detection times
// and SIGCONTed must not take the vMAC on its stale timers (it did for a
// few milliseconds, and the switch kept pointing at its port): no
// gratuitous ARP may enter the data switch from its port after SIGCONT.
func TestFrozenSecondaryWakes(t *testing.T) {
	_, b, rec := freezePair(t)
	for round := 0; round < 3; round++ {
		if err := b.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * freezeThr * freezeIval)
		woke := time.Now()
		if err := b.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		rec.mu.Lock()
		var grabbed []string
		for _, g := range rec.GARPs {
			if g.Node == b.Name && g.At.After(woke) {
				grabbed = append(grabbed, ms(g.At.Sub(woke)))
			}
		}
		rec.mu.Unlock()
		if len(grabbed) > 0 {
			t.Fatalf("round %d: node-b sent GARPs for the vMAC %v after SIGCONT (it took the vMAC on stale timers)\n%s", round, grabbed, b.Tail(15))
		}
		if r := b.Role(); r != "secondary" {
			t.Fatalf("round %d: node-b is %s", round, r)
		}
	}
}

// TestFrozenPrimaryWakes: a primary SIGSTOPped for 3 detection times,
// while the secondary takes the vMAC over, and SIGCONTed (it wins back:
// override, higher priority) must tell the switch again once the other
// lets the vMAC go: a gratuitous ARP from its port after the other's
// last one. (Stepping only each peer's newest queued heartbeat after the
// freeze once hid the other's release, and no GARP came.)
func TestFrozenPrimaryWakes(t *testing.T) {
	a, b, rec := freezePair(t)
	last := func(node string) time.Time {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		var at time.Time
		for _, g := range rec.GARPs {
			if g.Node == node && g.At.After(at) {
				at = g.At
			}
		}
		return at
	}
	for round := 0; round < 3; round++ {
		if err := a.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * freezeThr * freezeIval) // node-b takes over meanwhile
		if last(b.Name).IsZero() {
			t.Fatalf("round %d: node-b sent no GARP while node-a was frozen", round)
		}
		if err := a.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if err := lab.Eventually(5*time.Second, roles(a, b, "primary", "secondary")); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		time.Sleep(500 * time.Millisecond)
		if la, lb := last(a.Name), last(b.Name); !la.After(lb) {
			t.Fatalf("round %d: node-a took back without a GARP after node-b's last one (node-a's last %v, node-b's %v): the switch still points at node-b\n%s",
				round, la.Format("15:04:05.000"), lb.Format("15:04:05.000"), a.Tail(20))
		}
	}
}
