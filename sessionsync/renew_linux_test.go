package sessionsync

import (
	"testing"
	"time"
)

// TestKernelRenew: OpRenew deletes an existing entry and creates it
// afresh (a destroy and a new event), NAT mapping included; a flow that
// is gone stays gone (created by the pair and deleted again: a new and a
// destroy event). It also measures the rate.
func TestKernelRenew(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, evs := listeningKernel(t)
		a := tcpFlow(1)
		if errs := k.Apply([]Record{{Op: OpUpsert, Flow: a}}); errs[0] != nil {
			t.Fatal(errs[0])
		}
		<-evs // a's creation
		a.Mark = 99
		gone := tcpFlow(2)
		for i, err := range k.Apply([]Record{{Op: OpRenew, Flow: a}, {Op: OpRenew, Flow: gone}}) {
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
		ev := kernelEvents(t, evs, 4, a.Key(), gone.Key())
		if ev[0] != (seen{1, 1}) || ev[1] != (seen{1, 1}) {
			t.Fatalf("events: renewed %+v, gone %+v; want destroy+new for both", ev[0], ev[1])
		}
		got := map[Key]Flow{}
		k.Dump(func(f *Flow) { got[f.Key()] = *f })
		if g, ok := got[a.Key()]; !ok || g.Mark != 99 || g.Reply != a.Reply || g.Status&StatusSrcNAT == 0 {
			t.Fatalf("renewed flow: %+v (present %v)", g, ok)
		}
		if _, ok := got[gone.Key()]; ok || len(got) != 1 {
			t.Fatalf("a flow that was gone came back (%d flows)", len(got))
		}

		const n = 5000
		recs := make([]Record, n)
		for i := range recs {
			recs[i] = Record{Op: OpUpsert, Flow: tcpFlow(100 + i)}
		}
		k.Apply(recs)
		for i := range recs {
			recs[i].Op = OpRenew
		}
		start := time.Now()
		for i, err := range k.Apply(recs) {
			if err != nil {
				t.Fatalf("renew %d: %v", i, err)
			}
		}
		d := time.Since(start)
		t.Logf("measured: %d flows renewed in %v: %.0f flows/s", n, d.Round(time.Millisecond), n/d.Seconds())
	})
}

// seen counts a flow's destroy and new events.
type seen struct{ destroy, new int }

// kernelEvents reads events until n of them concern keys (the kernel
// reports a destroy when the entry is freed, which may come after the
// new events: counted per flow, not in order) and returns the counts in
// the order of keys.
func kernelEvents(t *testing.T, evs chan Event, n int, keys ...Key) []seen {
	t.Helper()
	ev := map[Key]*seen{}
	for _, k := range keys {
		ev[k] = &seen{}
	}
	out := func() []seen {
		r := make([]seen, len(keys))
		for i, k := range keys {
			r[i] = *ev[k]
		}
		return r
	}
	deadline := time.After(2 * time.Second)
	for got := 0; got < n; {
		select {
		case e := <-evs:
			if s, ok := ev[e.Flow.Key()]; ok {
				got++
				switch e.Type {
				case EventDestroy:
					s.destroy++
				case EventNew:
					s.new++
				}
			}
		case <-deadline:
			t.Fatalf("events so far: %+v, want %d", out(), n)
		}
	}
	return out()
}
