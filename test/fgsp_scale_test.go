package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// TestFGSPEightMembers: eight members in mode fgsp (beyond the four of
// mode a-p) form one cluster on one heartbeat segment and share one flow
// table: 100 connections run through node-a (both directions), every
// member's kernel table holds them all; node-a fails (links down,
// SIGKILL) and the routes move to node-e, which carries every connection
// on without a reset. With the member limit of mode a-p (4) the members
// never agree on eight (the control).
func TestFGSPEightMembers(t *testing.T) {
	const conns = 100
	names := []string{"node-a", "node-b", "node-c", "node-d", "node-e", "node-f", "node-g", "node-h"}
	l := newLab(t, lab.Spec{Nodes: names, WAN: true})
	if err := l.SetupFGSP(); err != nil {
		t.Fatal(err)
	}
	var nodes []*lab.Node
	for i, name := range names {
		n := l.Nodes[name]
		nodes = append(nodes, n)
		p := fgspParams(200-10*i, "enabled: true", "")
		// Eight agents starting on a loaded machine miss heartbeats for
		// 300 ms at times: each such loss removes a peer and restarts
		// its bulk copy. A lost threshold of 1 s keeps the start calm;
		// the failover does not wait for it (the routes move at once).
		p.LostThreshold = 10
		if err := n.StartFGSP(p); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
	}
	t0 := time.Now()
	eventually(t, 20*time.Second, "eight members elect node-a", func() error { return agree("node-a", nodes...) })
	eventually(t, 20*time.Second, "bulk copies from every peer", func() error {
		for _, n := range nodes {
			done := 0
			for _, s := range sessionsOf(t, n).Sources {
				if s.Bulk.State == "done" {
					done++
				}
			}
			if done != len(nodes)-1 {
				return fmt.Errorf("%s: %d bulk copies received, want %d", n.Name, done, len(nodes)-1)
			}
		}
		return nil
	})
	t.Logf("measured: eight members agree and hold every peer's bulk copy %v after the last start", time.Since(t0).Round(time.Millisecond))

	ld, failed, err := lab.StartTCPLoadParallel(l, conns, 100*time.Millisecond, 20*time.Second, lab.LoadPort)
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Stop()
	if len(failed) > 0 {
		t.Fatalf("%d of %d connections did not open: %v", len(failed), conns, failed[0])
	}
	t1 := time.Now()
	poll(t, 30*time.Second, 250*time.Millisecond, "established on all eight", func() error {
		if n := ld.Echoed(); n != conns {
			return fmt.Errorf("%d of %d connections got an echo", n, conns)
		}
		for _, n := range nodes {
			if e, err := established(n); err != nil || e != conns {
				return fmt.Errorf("%s: %d established load flows (%v), want %d", n.Name, e, err, conns)
			}
		}
		return nil
	})
	t.Logf("measured: %d connections through node-a in all eight kernel tables %v after they opened", conns, time.Since(t1).Round(time.Millisecond))

	a, e := nodes[0], nodes[4]
	ld.ResetStalls()
	t2 := time.Now()
	a.Crash()
	if err := l.RouteVia(e, e); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the others see node-a lost and elect node-b", func() error { return agree("node-b", nodes[1:]...) })
	time.Sleep(3 * time.Second)
	r := ld.Report(2 * time.Second)
	t.Logf("measured: eight members, node-a failed, routes to node-e: %s (%v after the crash)", r, time.Since(t2).Round(time.Millisecond))
	if r.Resets+r.Errors+r.Stalled > 0 {
		t.Fatalf("after node-a failed: %s", r)
	}
}
