package sessionsync

import (
	"context"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/l2chan"
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

// TestKernelRenewKeepsExpectations: the kernel removes a master's
// expectations when the master entry is deleted (nf_ct_remove_expectations),
// so a renewal (delete and create) of an FTP control connection used to
// take with it the expectation its helper had just created for a PORT
// command, and the server's data connection was refused (the real
// application suite's active FTP after a graceful takeover). Renew and
// KeepFlows re-create them, related to the new master entry; a master
// without expectations and one that ended are renewed as before.
func TestKernelRenewKeepsExpectations(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, err := OpenKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		e := renewEngine(t, k)
		master := extFlows()[0] // an FTP control connection, helper ftp
		other := tcpFlow(3)
		if errs := k.Apply([]Record{{Op: OpUpsert, Flow: master}, {Op: OpUpsert, Flow: other}}); errs[0] != nil || errs[1] != nil {
			t.Fatal(errs)
		}
		x := sampleExpect(master)
		if err := k.ApplyExpect([]Record{{Op: OpUpsert, Expect: x}})[0]; err != nil {
			t.Fatal(err)
		}
		expects := func() []Expect {
			var xs []Expect
			if err := k.DumpExpect(func(x *Expect) { xs = append(xs, *x) }); err != nil {
				t.Fatal(err)
			}
			return xs
		}
		if n := len(expects()); n != 1 {
			t.Fatalf("%d expectations before the renewal, want 1", n)
		}
		for _, renew := range []struct {
			name string
			run  func() (int, int, error)
		}{
			{"Renew", func() (int, int, error) { return e.Renew(context.Background(), "test") }},
			{"KeepFlows", func() (int, int, error) { return e.KeepFlows(context.Background(), "test", nil) }},
		} {
			renewed, total, err := renew.run()
			if err != nil || renewed != 2 || total != 2 {
				t.Fatalf("%s: %d of %d renewed, %v; want 2 of 2", renew.name, renewed, total, err)
			}
			xs := expects()
			if len(xs) != 1 {
				t.Fatalf("after %s: %d expectations, want 1: the master's delete took its expectation with it", renew.name, len(xs))
			}
			got := xs[0]
			if got.Master != x.Master || got.Tuple != x.Tuple || got.Helper != x.Helper || got.NAT != x.NAT || got.NATAddr != x.NATAddr || got.NATPort != x.NATPort {
				t.Fatalf("after %s: expectation %+v, want %+v", renew.name, got, *x)
			}
		}
		t.Logf("the expectation survived Renew and KeepFlows: %+v", expects()[0])
	})
}

// staleDump is a kernel table whose dump gives stale a instead of the
// entry of the same key: a helper changed the entry after the renewal's
// dump.
type staleDump struct {
	*Kernel
	stale Flow
}

func (s staleDump) Dump(fn func(*Flow)) error {
	return s.Kernel.Dump(func(f *Flow) {
		if f.Key() == s.stale.Key() {
			c := s.stale
			fn(&c)
			return
		}
		fn(f)
	})
}

// TestKernelRenewReadsMastersAgain: a master whose sequence adjustment a
// helper changed after the renewal's dump (an FTP PORT rewritten to
// another length just after a takeover) is renewed with the adjustment
// it has, not the dump's: a copy of the dump's would translate every
// later packet of the control connection wrongly.
func TestKernelRenewReadsMastersAgain(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, err := OpenKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		live := extFlows()[0]
		stale := live
		stale.SeqAdj = &[2]SeqAdj{{CorrectionPos: 1, OffsetBefore: 0, OffsetAfter: 0}, {}}
		e := renewEngine(t, staleDump{k, stale})
		if errs := k.Apply([]Record{{Op: OpUpsert, Flow: live}}); errs[0] != nil {
			t.Fatal(errs[0])
		}
		if renewed, total, err := e.Renew(context.Background(), "test"); err != nil || renewed != 1 || total != 1 {
			t.Fatalf("Renew: %d of %d renewed, %v; want 1 of 1", renewed, total, err)
		}
		g := dumpAll(t, k)[live.Key()]
		if g.SeqAdj == nil || *g.SeqAdj != *live.SeqAdj {
			t.Fatalf("renewed master's adjustment %+v, want the entry's %+v (the dump's was %+v)", g.SeqAdj, *live.SeqAdj, *stale.SeqAdj)
		}
	})
}

// renewEngine is a primary's engine on table t, not running (Renew and
// KeepFlows need no Run).
func renewEngine(t *testing.T, tab Table) *Engine {
	t.Helper()
	nw := heartbeat.NewMemNetwork()
	cc := l2chan.LabConfig()
	cc.Self, cc.GroupID, cc.Password, cc.Label = "node-b", 10, []byte("secret"), ChannelLabel
	cc.Links = []heartbeat.Link{nw.Link("hb", "node-b", "ha1")}
	cc.AdmitAll = true
	ch, err := l2chan.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	cfg := DefaultConfig()
	cfg.Self, cfg.Table, cfg.Transport = "node-b", tab, ch
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.SetRole(true, nil)
	return e
}
