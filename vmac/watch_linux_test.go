//go:build linux

package vmac

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

type linkEvent struct {
	name string
	up   bool
}

func TestWatchLinks(t *testing.T) {
	tp := newTopo(t)
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan linkEvent, 100)
	done := make(chan error, 1)
	var concurrent, inFn atomic.Int32
	go func() {
		// The watcher runs in the node namespace. The thread stays locked
		// and is discarded by the runtime when this goroutine ends.
		if err := lockedInNS(tp.node); err != nil {
			done <- err
			return
		}
		done <- WatchLinks(ctx, []string{"port1", "ghost0", "port2"}, func(name string, up bool) {
			if inFn.Add(1) > 1 {
				concurrent.Add(1)
			}
			events <- linkEvent{name, up}
			inFn.Add(-1)
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("WatchLinks: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("WatchLinks did not return after cancel")
		}
	})

	// next returns the next event, failing after a bound.
	next := func(what string) linkEvent {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case err := <-done:
			t.Fatalf("WatchLinks returned early: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatalf("no event while waiting for %s", what)
		}
		return linkEvent{}
	}
	// expect waits for want, skipping duplicates of already known states.
	state := map[string]bool{}
	expect := func(want linkEvent) {
		t.Helper()
		for {
			ev := next(want.name)
			if ev == want {
				state[ev.name] = ev.up
				return
			}
			if known, ok := state[ev.name]; ok && known == ev.up {
				continue
			}
			t.Fatalf("event %+v while waiting for %+v", ev, want)
		}
	}

	// Initial states, in the order given.
	for _, want := range []linkEvent{{"port1", true}, {"ghost0", false}, {"port2", true}} {
		if ev := next("initial state"); ev != want {
			t.Fatalf("initial event %+v, want %+v", ev, want)
		}
		state[want.name] = want.up
	}

	// Carrier loss: the far end of the veth goes down.
	tp.setUp(t, tp.peerH, "peer1", false)
	expect(linkEvent{"port1", false})
	tp.setUp(t, tp.peerH, "peer1", true)
	expect(linkEvent{"port1", true})

	// Administratively down.
	tp.setUp(t, tp.nodeH, "port2", false)
	expect(linkEvent{"port2", false})
	tp.setUp(t, tp.nodeH, "port2", true)
	expect(linkEvent{"port2", true})

	// A watched interface that appears later, then is deleted.
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ghost0"}, PeerName: "ghost0p"}
	if err := tp.nodeH.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	tp.setUp(t, tp.nodeH, "ghost0p", true)
	tp.setUp(t, tp.nodeH, "ghost0", true)
	expect(linkEvent{"ghost0", true})
	l, err := tp.nodeH.LinkByName("ghost0")
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.nodeH.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	expect(linkEvent{"ghost0", false})

	if concurrent.Load() != 0 {
		t.Error("fn called concurrently")
	}
}

// lockedInNS locks the calling goroutine to its thread and moves the thread
// into ns for good.
func lockedInNS(ns netns.NsHandle) error {
	lockThread()
	return netns.Set(ns)
}
