package sessionsync

import (
	"context"
	"sync"
	"testing"
	"time"
)

// openKernel opens the namespace's table for the test (closed when it
// ends).
func openKernel(t *testing.T) *Kernel {
	t.Helper()
	k, err := OpenKernel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// TestKernelOverrunReportedAfterCongestion: an overrun is reported only
// once the event socket takes events again, so a table dump started on
// the report misses nothing. The listener is held while 30000 flows are
// created (the queue overflows); on the overrun report a probe flow is
// created, and its event must arrive. Reported at the ENOBUFS, while the
// queue still holds the backlog, the probe's event is dropped with the
// rest (the kernel drops every event until the queue has been drained).
func TestKernelOverrunReportedAfterCongestion(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, w := openKernel(t), openKernel(t)
		const n = 30000
		probe := tcpFlow(n) // a tuple none of the n others has
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		release := make(chan struct{})
		var (
			mu        sync.Mutex
			overruns  int
			probeSeen bool
			applyErr  error
			first     = true
		)
		go k.Listen(ctx, func(ev Event) {
			if first {
				first = false
				<-release
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case ev.Type == EventOverrun:
				overruns++
				if overruns == 1 {
					applyErr = w.Apply([]Record{{Op: OpUpsert, Flow: probe}})[0]
				}
			case ev.Expect == nil && ev.Flow.Key() == probe.Key():
				probeSeen = true
			}
		})
		time.Sleep(50 * time.Millisecond) // the listener joins its groups
		recs := make([]Record, n)
		for i := range recs {
			recs[i] = Record{Op: OpUpsert, Flow: tcpFlow(i)}
		}
		for i, err := range w.Apply(recs) {
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
		close(release)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			done := probeSeen
			mu.Unlock()
			if done {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		if applyErr != nil {
			t.Fatalf("probe flow: %v", applyErr)
		}
		if overruns != 1 {
			t.Fatalf("%d overruns reported, want 1 (the queue must overflow once)", overruns)
		}
		if !probeSeen {
			t.Fatal("the event of a flow created when the overrun was reported never arrived: reported while the socket still dropped events")
		}
	})
}

// TestKernelQuietSubscribesNothing pins what the kernel delivers to the
// event socket: nothing at all while quiet (the groups are left, so the
// kernel does not even build the events), the sender's groups otherwise.
func TestKernelQuietSubscribesNothing(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, w := openKernel(t), openKernel(t)
		w.SetQuiet(true) // the writer's own socket must not listen either
		read := func() (int, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			n, _, _, _, err := k.events.c.Recvmsg(ctx, k.events.buf, nil, 0)
			return n, err
		}
		apply := func(from, n int) time.Duration {
			recs := make([]Record, n)
			for i := range recs {
				recs[i] = Record{Op: OpUpsert, Flow: tcpFlow(from + i)}
			}
			t0 := time.Now()
			for i, err := range w.Apply(recs) {
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
			}
			return time.Since(t0)
		}
		k.SetQuiet(true)
		quiet := apply(0, 10000)
		if n, err := read(); err == nil {
			t.Fatalf("quiet: the event socket received a datagram of %d bytes", n)
		}
		k.SetQuiet(false)
		loud := apply(10000, 10000)
		if _, err := read(); err != nil {
			t.Fatalf("listening: no event arrived: %v", err)
		}
		t.Logf("measured: 10000 creates in %v with no listener, %v with one (%.0f / %.0f flows/s)",
			quiet.Round(time.Millisecond), loud.Round(time.Millisecond), 10000/quiet.Seconds(), 10000/loud.Seconds())
	})
}

// TestKernelEventsDecodedFast pins what the kernel sends for a plain
// flow to the fast decoder's shape: new, update and destroy events of
// TCP (NATed), UDP over IPv6 and labeled flows are all decoded on the
// fast path, with the flow the kernel holds.
func TestKernelEventsDecodedFast(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, evs := listeningKernel(t)
		w := openKernel(t)
		w.SetQuiet(true)
		var recs []Record
		for i := 0; i < 50; i++ {
			recs = append(recs, Record{Op: OpUpsert, Flow: tcpFlow(i)})
		}
		labeled := labeledFlow(60)
		recs = append(recs, Record{Op: OpUpsert, Flow: labeled})
		for _, m := range eventMessages(t) { // the UDP/IPv6 and ICMP flows
			if f, _, valid, ok := decodeEvent(m); ok && valid && f.Proto != ProtoTCP {
				recs = append(recs, Record{Op: OpUpsert, Flow: f})
			}
		}
		upd := tcpFlow(0)
		upd.Mark = 99
		recs = append(recs, Record{Op: OpUpsert, Flow: upd}, Record{Op: OpDelete, Flow: tcpFlow(1)})
		for i, err := range w.Apply(recs) {
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
		got := map[EventType]int{}
		deadline := time.After(10 * time.Second)
		for got[EventNew] < len(recs)-2 || got[EventUpdate] < 1 || got[EventDestroy] < 1 {
			select {
			case ev := <-evs:
				got[ev.Type]++
			case <-deadline:
				t.Fatalf("events after 10s: %v", got)
			}
		}
		fast, slow := k.decodedFast.Load(), k.decodedSlow.Load()
		t.Logf("measured: events %v: %d decoded on the fast path, %d by ti-mo", got, fast, slow)
		if slow != 0 || fast == 0 {
			t.Fatalf("%d events decoded by ti-mo, %d on the fast path: the kernel's events no longer have the fast path's shape", slow, fast)
		}
	})
}
