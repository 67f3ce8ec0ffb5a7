package sessionsync

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// inNetns runs the test body on a thread in a fresh network namespace with
// a nat table loaded (so ctnetlink can set NAT up).
func inNetns(t *testing.T, fn func(t *testing.T)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, ctnetlink): run as root, e.g. sudo make test")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // the thread dies with the namespace
		orig, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			t.Error(err)
			return
		}
		defer ns.Close()
		nft := exec.Command("nft", "-f", "-")
		nft.Stdin = strings.NewReader("table ip nat { chain post { type nat hook postrouting priority 100; }; }\ntable ip6 nat { chain post { type nat hook postrouting priority 100; }; }\ntable inet lbl { chain c { type filter hook prerouting priority 0; ct label 5 counter; }; }\n")
		if out, err := nft.CombinedOutput(); err != nil {
			// nft runs in the thread's namespace only if exec'ed from it;
			// it is, since the thread is locked and we forked from it.
			t.Errorf("nft: %v: %s", err, out)
			return
		}
		fn(t)
	}()
	<-done
}

// listeningKernel opens the namespace's table and listens to its events
// (closed when the test ends).
func listeningKernel(t *testing.T) (*Kernel, chan Event) {
	t.Helper()
	k, err := OpenKernel()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); k.Close() })
	evs := make(chan Event, 1000)
	go k.Listen(ctx, func(ev Event) { evs <- ev })
	time.Sleep(50 * time.Millisecond) // the listener joins its groups
	return k, evs
}

func tcpFlow(i int) Flow {
	c := netip.AddrFrom4([4]byte{10, 9, 0, byte(10 + i/200)})
	s := netip.MustParseAddr("10.9.2.10")
	nat := netip.MustParseAddr("10.9.2.100")
	sp := uint16(30000 + i)
	return Flow{Proto: ProtoTCP,
		Orig:   Tuple{Src: c, Dst: s, SrcPort: sp, DstPort: 7007},
		Reply:  Tuple{Src: s, Dst: nat, SrcPort: 7007, DstPort: 40000 + uint16(i)},
		Status: StatusConfirmed | StatusSeenReply | StatusAssured | StatusSrcNAT, Timeout: 3600, Mark: uint32(i),
		TCP: &TCPInfo{State: TCPEstablished, WScaleOrig: 7, WScaleReply: 7, FlagsOrig: 0x2323, FlagsReply: 0x2323}}
}

func TestKernelApplyNATAndEvents(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, evs := listeningKernel(t)

		var recs []Record
		for i := 0; i < 300; i++ {
			recs = append(recs, Record{Op: OpUpsert, Flow: tcpFlow(i)})
		}
		labeled := tcpFlow(300)
		labeled.Labels = make([]byte, 16)
		labeled.Labels[15] = 5
		recs = append(recs, Record{Op: OpUpsert, Flow: labeled})
		udp := Flow{Proto: ProtoUDP, Orig: Tuple{Src: netip.MustParseAddr("2001:db8::10"), Dst: netip.MustParseAddr("2001:db8:2::10"), SrcPort: 5000, DstPort: 53},
			Reply:  Tuple{Src: netip.MustParseAddr("2001:db8:2::10"), Dst: netip.MustParseAddr("2001:db8::10"), SrcPort: 53, DstPort: 5000},
			Status: StatusConfirmed | StatusSeenReply, Timeout: 30, Zone: 0}
		recs = append(recs, Record{Op: OpUpsert, Flow: udp})
		for i, err := range k.Apply(recs) {
			if err != nil {
				t.Fatalf("record %d (%s): %v", i, recs[i].Flow.String(), err)
			}
		}
		got := map[Key]Flow{}
		if err := k.Dump(func(f *Flow) { got[f.Key()] = *f }); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(recs) {
			t.Fatalf("dump has %d flows, want %d", len(got), len(recs))
		}
		for _, r := range recs {
			g, ok := got[r.Flow.Key()]
			if !ok {
				t.Fatalf("%s missing", r.Flow.String())
			}
			if g.Reply != r.Flow.Reply {
				t.Fatalf("%s: reply tuple %+v, want %+v (NAT mapping not copied)", r.Flow.String(), g.Reply, r.Flow.Reply)
			}
			if g.Mark != r.Flow.Mark {
				t.Fatalf("mark %d, want %d", g.Mark, r.Flow.Mark)
			}
			if r.Flow.TCP != nil && (g.TCP == nil || g.TCP.State != TCPEstablished || g.TCP.FlagsOrig>>8 != 0x23 || g.TCP.WScaleOrig != 7) {
				t.Fatalf("%s: TCP state %+v", r.Flow.String(), g.TCP)
			}
			if r.Flow.Proto == ProtoTCP && g.Status&(StatusAssured|StatusSrcNAT) != StatusAssured|StatusSrcNAT {
				t.Fatalf("%s: status %#x", r.Flow.String(), g.Status)
			}
			if len(r.Flow.Labels) > 0 && (len(g.Labels) != 16 || g.Labels[15] != 5) {
				t.Fatalf("labels %x", g.Labels)
			}
		}
		// Upsert again: an update (mark changes), not an error.
		up := tcpFlow(1)
		up.Mark = 77
		if errs := k.Apply([]Record{{Op: OpUpsert, Flow: up}}); errs[0] != nil {
			t.Fatal(errs[0])
		}
		k.Dump(func(f *Flow) {
			if f.Key() == up.Key() && f.Mark != 77 {
				t.Errorf("update not applied: mark %d", f.Mark)
			}
		})
		// An older update arriving after a newer state (a bulk copy applied
		// before a queued event: no ASSURED yet) is not an error, and does
		// not take the entry back.
		older := tcpFlow(3)
		older.Status = StatusConfirmed | StatusSeenReply | StatusSrcNAT
		older.TCP.State = 3 // SYN_RECV
		if errs := k.Apply([]Record{{Op: OpUpsert, Flow: older}}); errs[0] != nil {
			t.Fatalf("an older update: %v", errs[0])
		}
		k.Dump(func(f *Flow) {
			if f.Key() == older.Key() && f.Status&StatusAssured == 0 {
				t.Errorf("the older update cleared ASSURED: %#x", f.Status)
			}
		})
		// A refused flow is reported, the rest go on.
		bad := tcpFlow(400)
		bad.Reply.Dst = netip.MustParseAddr("2001:db8::1") // mixed families
		bad.Reply.Src = netip.MustParseAddr("2001:db8::2")
		clash := tcpFlow(401)
		clash.Reply = tcpFlow(2).Reply // reply tuple already taken
		errs := k.Apply([]Record{{Op: OpUpsert, Flow: clash}, {Op: OpUpsert, Flow: tcpFlow(402)}})
		if errs[1] != nil {
			t.Fatalf("good record after a bad one: %v", errs[1])
		}
		if errs[0] == nil {
			t.Fatal("a flow whose reply tuple is taken was accepted")
		}
		t.Logf("clashing reply tuple: %v", errs[0])
		// Delete, and deleting again is fine.
		if errs := k.Apply([]Record{{Op: OpDelete, Flow: tcpFlow(0)}, {Op: OpDelete, Flow: tcpFlow(0)}}); errs[0] != nil || errs[1] != nil {
			t.Fatalf("delete: %v", errs)
		}
		n, err := k.Count()
		if err != nil {
			t.Fatal(err)
		}
		if want := len(recs) - 1 + 1; errs[0] == nil && n < want {
			t.Fatalf("count %d, want at least %d", n, want)
		}
		// Events: a new per create, a destroy for the delete.
		var news, destroys int
		deadline := time.After(2 * time.Second)
	loop:
		for {
			select {
			case ev := <-evs:
				switch ev.Type {
				case EventNew:
					news++
				case EventDestroy:
					destroys++
				}
				if news >= len(recs) && destroys >= 1 {
					break loop
				}
			case <-deadline:
				break loop
			}
		}
		if news < len(recs) || destroys < 1 {
			t.Fatalf("events: %d new, %d destroy", news, destroys)
		}
	})
}

// TestKernelReplace: OpReplace deletes an existing entry and creates the
// record's afresh (a destroy and a new event, not an update), NAT mapping
// included; a missing one is simply created.
func TestKernelReplace(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, err := OpenKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		if errs := k.Apply([]Record{{Op: OpUpsert, Flow: tcpFlow(1)}}); errs[0] != nil {
			t.Fatal(errs[0])
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		evs := make(chan Event, 100)
		go k.Listen(ctx, func(ev Event) { evs <- ev })
		time.Sleep(50 * time.Millisecond)
		a, b := tcpFlow(1), tcpFlow(2)
		a.Mark, b.Mark = 88, 89
		for i, err := range k.Apply([]Record{{Op: OpReplace, Flow: a}, {Op: OpReplace, Flow: b}}) {
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
		ev := kernelEvents(t, evs, 3, a.Key(), b.Key())
		if ev[0] != (seen{1, 1}) || ev[1] != (seen{0, 1}) {
			t.Fatalf("events: replaced %+v, created %+v; want destroy+new and new", ev[0], ev[1])
		}
		got := map[Key]Flow{}
		k.Dump(func(f *Flow) { got[f.Key()] = *f })
		for _, f := range []Flow{a, b} {
			g, ok := got[f.Key()]
			if !ok || g.Mark != f.Mark || g.Reply != f.Reply || g.Status&StatusSrcNAT == 0 {
				t.Fatalf("%s after replace: %+v (present %v)", f.String(), g, ok)
			}
		}
		if len(got) != 2 {
			t.Fatalf("%d flows, want 2", len(got))
		}
	})
}

// TestKernelExpect: a flow created with a helper gets it, an expectation
// of it is created, reported as an event, dumped as created and deleted;
// an expectation of a master without a helper is refused.
func TestKernelExpect(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, evs := listeningKernel(t)

		master, plain := tcpFlow(5), tcpFlow(6)
		master.Orig.DstPort, master.Reply.SrcPort, master.Helper = 21, 21, "ftp"
		for i, err := range k.Apply([]Record{{Op: OpUpsert, Flow: master}, {Op: OpUpsert, Flow: plain}}) {
			if err != nil {
				t.Fatalf("flow %d: %v", i, err)
			}
		}
		var got Flow
		k.Dump(func(f *Flow) {
			if f.Key() == master.Key() {
				got = *f
			}
		})
		if got.Helper != "ftp" {
			t.Fatalf("the copy's helper is %q, want ftp (CTA_HELP on create)", got.Helper)
		}
		x := sampleExpect(master)
		x.Tuple.DstPort, x.NATPort = 50007, 50007
		for i, err := range k.ApplyExpect([]Record{{Op: OpUpsert, Expect: x}}) {
			if err != nil {
				t.Fatalf("expectation %d: %v", i, err)
			}
		}
		deadline := time.After(2 * time.Second)
		for seen := false; !seen; {
			select {
			case ev := <-evs:
				seen = ev.Expect != nil && ev.Type == EventNew && ev.Expect.Key() == x.Key()
			case <-deadline:
				t.Fatal("no expectation event")
			}
		}
		var dumped []Expect
		if err := k.DumpExpect(func(e *Expect) { dumped = append(dumped, *e) }); err != nil {
			t.Fatal(err)
		}
		if len(dumped) != 1 {
			t.Fatalf("dumped %d expectations, want 1", len(dumped))
		}
		d := dumped[0]
		if d.Key() != x.Key() || d.Master != x.Master || d.Helper != "ftp" || d.MaskSrc != x.MaskSrc || !d.NAT || d.NATAddr != x.NATAddr || d.NATPort != x.NATPort || d.NATDir != x.NATDir || d.Timeout == 0 || d.Timeout > x.Timeout {
			t.Fatalf("dumped %+v, created %+v", d, *x)
		}
		// Of a master without a helper: refused, with the reason.
		y := sampleExpect(plain)
		if errs := k.ApplyExpect([]Record{{Op: OpUpsert, Expect: y}}); errs[0] == nil {
			t.Fatal("an expectation of a flow without a helper was created")
		}
		// Delete, twice: the second is not an error.
		for n := 0; n < 2; n++ {
			if errs := k.ApplyExpect([]Record{{Op: OpDelete, Expect: x}}); errs[0] != nil {
				t.Fatalf("delete %d: %v", n, errs[0])
			}
		}
		dumped = nil
		k.DumpExpect(func(e *Expect) { dumped = append(dumped, *e) })
		if len(dumped) != 0 {
			t.Fatalf("after delete: %+v", dumped)
		}
	})
}
