package agent

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/vmac"
)

// One restore is written at once; those that follow within restoreLogEvery
// make one summary at the end of the window; a failure is flagged.
func TestRestoreLog(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := restoreLog{every: 30 * time.Second}
	r := func(at time.Duration, err error) restoreReport {
		return restoreReport{at: t0.Add(at), err: err, rs: []vmac.Restored{{Interface: "port1",
			Addresses: []netip.Prefix{netip.MustParsePrefix("10.9.0.100/24")}}}}
	}
	if msg, failed := l.note(r(0, nil)); failed || !strings.Contains(msg, "port1: 10.9.0.100/24 added again") {
		t.Fatalf("first restore: %q (failed %v), want it written at once", msg, failed)
	}
	if d := l.due(t0); d != 0 {
		t.Fatalf("nothing held: due %v", d)
	}
	for i := 1; i <= 1000; i++ {
		var err error
		if i == 500 {
			err = errors.New("no such device")
		}
		if msg, _ := l.note(r(time.Duration(i)*time.Millisecond, err)); msg != "" {
			t.Fatalf("restore %d within the window written: %q", i, msg)
		}
	}
	if d := l.due(t0.Add(time.Second)); d != 29*time.Second {
		t.Fatalf("due %v, want 29s", d)
	}
	if msg, _ := l.flush(t0.Add(29*time.Second), false); msg != "" {
		t.Fatalf("flush before the window's end: %q", msg)
	}
	msg, failed := l.flush(t0.Add(30*time.Second), false)
	if !failed || !strings.Contains(msg, "put back 1000 more times in 30s") || !strings.Contains(msg, "(1 failed)") {
		t.Fatalf("summary %q (failed %v)", msg, failed)
	}
	// The window starts again at the summary.
	if msg, _ := l.note(r(31*time.Second, nil)); msg != "" {
		t.Fatalf("restore right after a summary written: %q", msg)
	}
	if msg, _ := l.flush(t0.Add(32*time.Second), true); !strings.Contains(msg, "put back 1 more times") {
		t.Fatalf("forced flush: %q", msg)
	}
	if msg, _ := l.note(r(time.Hour, nil)); msg == "" {
		t.Fatal("a restore after a quiet window not written at once")
	}
}

// guardNet is a fakeNet with a guard the test drives.
type guardNet struct {
	fakeNet
	mu     sync.Mutex
	report func([]vmac.Restored, error)
}

func (g *guardNet) Guard(ctx context.Context, report func([]vmac.Restored, error)) error {
	g.mu.Lock()
	g.report = report
	g.mu.Unlock()
	<-ctx.Done()
	return nil
}

func (g *guardNet) reporter() func([]vmac.Restored, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.report
}

// The agent runs its Network's guard and writes what it restores to the log
// and the history, aggregated: a thousand restores in a row make two
// history entries (the first, and the summary at the stop), not a thousand
// that push the role changes out.
func TestAgentRunsGuard(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	g := &guardNet{}
	n := startNode(t, mem, testConfig(t, "a", 200, false), func(o *Options) { o.Network = g })
	eventually(t, 3*time.Second, "the guard started", func() bool { return g.reporter() != nil })
	report := g.reporter()
	rs := []vmac.Restored{{Interface: "port1", Addresses: []netip.Prefix{netip.MustParsePrefix("10.9.0.100/24")}}}
	start := time.Now()
	for i := 0; i < 1000; i++ {
		report(rs, nil)
	}
	eventually(t, 3*time.Second, "the first restore in the history", func() bool { return hasEvent(n, "restore", "port1: 10.9.0.100/24 added again") })
	n.stop(t)()
	windows := int(time.Since(start)/restoreLogEvery) + 1
	var entries []Event
	for _, e := range n.a.hist.list() {
		if e.Kind == "restore" {
			entries = append(entries, e)
		}
	}
	if len(entries) < 2 || len(entries) > windows+1 {
		t.Fatalf("%d history entries for 1000 restores in %d window(s), want 2 to %d", len(entries), windows, windows+1)
	}
	if last := entries[len(entries)-1].Reason; !strings.Contains(last, "more times") {
		t.Errorf("last entry %q, want the summary", last)
	}
}
