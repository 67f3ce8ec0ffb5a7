package test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/hagent/hagent/test/lab"
)

// carrierWatch polls, every 5 ms, the operational state of a link of a
// namespace (a bridge port of the switch) and records every change.
type carrierWatch struct {
	mu      sync.Mutex
	changes []string // "down@123ms" / "up@456ms", from the start
	stop    chan struct{}
	done    chan struct{}
}

func watchCarrier(t *testing.T, ns, link string) *carrierWatch {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("netns %s: %v", ns, err)
	}
	nh, err := netlink.NewHandleAt(h)
	h.Close()
	if err != nil {
		t.Fatalf("netlink in %s: %v", ns, err)
	}
	w := &carrierWatch{stop: make(chan struct{}), done: make(chan struct{})}
	began := time.Now()
	go func() {
		defer close(w.done)
		defer nh.Close()
		last := "up"
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			l, err := nh.LinkByName(link)
			if err != nil {
				continue
			}
			state := "down"
			if l.Attrs().OperState == netlink.OperUp {
				state = "up"
			}
			if state != last {
				w.mu.Lock()
				w.changes = append(w.changes, fmt.Sprintf("%s@%dms", state, time.Since(began).Milliseconds()))
				w.mu.Unlock()
				last = state
			}
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *carrierWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *carrierWatch) seen() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.changes...)
}

// TestLinkFailedSignal: node-a (primary) and node-b monitor port1 and
// port2, both on the switch's bridge. The switch side of node-a's port1
// goes down: node-b takes over and, with link_failed_signal 1s, node-a
// sets its port2 down and up again, which the switch sees as carrier loss
// on its port n0p2 and then carrier back; status and history count it.
// The control run, link_failed_signal 0s, sees no carrier loss on n0p2.
func TestLinkFailedSignal(t *testing.T) {
	for _, sig := range []time.Duration{time.Second, 0} {
		t.Run(fmt.Sprintf("link_failed_signal=%s", sig), func(t *testing.T) {
			l := newLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}, DataLinks: 2})
			a, b := l.Nodes["node-a"], l.Nodes["node-b"]
			extra := fmt.Sprintf("monitor: [port1, port2]\nlink_failed_signal: %s\n", sig)
			pa, pb := params(200, false), params(100, false)
			pa.ClusterExtra, pb.ClusterExtra = extra, extra
			start(t, a, pa)
			start(t, b, pb)
			eventually(t, 10*time.Second, "initial election", func() error { return agree("node-a", a, b) })
			w := watchCarrier(t, l.Switch, "n0p2")
			cut := time.Now()
			if err := lab.IP("-n", l.Switch, "link", "set", "n0p1", "down"); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, "node-b takes over on node-a's port1 failure", func() error { return agree("node-b", a, b) })
			t.Logf("measured: failover %v after the cut", time.Since(cut).Round(time.Millisecond))
			if sig == 0 {
				// The signal would start at node-a's loss of the role,
				// which has happened: give it its duration and more.
				time.Sleep(3 * time.Second)
				if got := w.seen(); len(got) > 0 {
					t.Fatalf("n0p2 changed without link_failed_signal: %v", got)
				}
				if st := status(t, a); st.LinkFailedSignal != nil {
					t.Fatalf("status counts a signal with 0s: %+v", st.LinkFailedSignal)
				}
				return
			}
			poll(t, 10*time.Second, 20*time.Millisecond, "n0p2 loses carrier, then has it back", func() error {
				got := w.seen()
				if len(got) < 2 || !strings.HasPrefix(got[0], "down@") || !strings.HasPrefix(got[len(got)-1], "up@") {
					return fmt.Errorf("n0p2 changes so far: %v", got)
				}
				return nil
			})
			t.Logf("measured: n0p2 (switch side of node-a's port2): %v", w.seen())
			st := status(t, a)
			if st.LinkFailedSignal == nil || st.LinkFailedSignal.Count != 1 || strings.Join(st.LinkFailedSignal.Ports, ",") != "port2" {
				t.Fatalf("status: link_failed_signal %+v, want 1 signal on port2", st.LinkFailedSignal)
			}
			if out, _ := a.Ctl("ha", "history"); !strings.Contains(out, "link_failed_signal: port2 down for 1s") {
				t.Fatalf("node-a's history lacks the signal:\n%s", out)
			}
			if out, _ := a.Ctl("ha", "status"); !strings.Contains(out, "link_failed_signal: 1 sent") {
				t.Fatalf("node-a's status lacks the signal:\n%s", out)
			}
			// The signal does not hand the role back: node-b stays primary.
			if err := agree("node-b", a, b); err != nil {
				t.Fatal(err)
			}
		})
	}
}
