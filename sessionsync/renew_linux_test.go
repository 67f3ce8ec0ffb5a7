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
		type seen struct{ destroy, new int }
		ev := map[Key]*seen{a.Key(): {}, gone.Key(): {}}
		deadline := time.After(2 * time.Second)
		for n := 0; n < 4; {
			select {
			case e := <-evs:
				if s, ok := ev[e.Flow.Key()]; ok {
					n++
					switch e.Type {
					case EventDestroy:
						s.destroy++
					case EventNew:
						s.new++
					}
				}
			case <-deadline:
				t.Fatalf("events so far: renewed %+v, gone %+v; want destroy+new for both", *ev[a.Key()], *ev[gone.Key()])
			}
		}
		if *ev[a.Key()] != (seen{1, 1}) || *ev[gone.Key()] != (seen{1, 1}) {
			t.Fatalf("events: renewed %+v, gone %+v; want destroy+new for both", *ev[a.Key()], *ev[gone.Key()])
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
