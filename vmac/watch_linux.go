//go:build linux

package vmac

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// linkUp reports whether flags (struct ifinfomsg ifi_flags) mean the link can
// carry traffic: administratively up and with carrier.
func linkUp(flags uint32) bool {
	return flags&unix.IFF_UP != 0 && flags&unix.IFF_LOWER_UP != 0
}

// resubscribeDelay is the pause before subscribing again after the netlink
// subscription broke (for example on a receive buffer overrun).
const resubscribeDelay = 100 * time.Millisecond

// WatchLinks reports the carrier state of the named interfaces from netlink
// link notifications (RTM_NEWLINK/RTM_DELLINK) of the calling thread's
// network namespace. It first reports the current state of every name, then
// each change. up means IFF_UP and IFF_LOWER_UP; a deleted or missing
// interface is down, and one created later is reported when it appears. If
// the subscription breaks, WatchLinks subscribes again and re-reads every
// state, reporting only what changed.
//
// fn is called from one goroutine, never concurrently; it should return
// quickly. WatchLinks returns nil once ctx is done, or an error if the first
// subscription cannot be set up.
func WatchLinks(ctx context.Context, names []string, fn func(name string, up bool)) error {
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("vmac: watch links: %w", err)
	}
	defer ns.Close()

	w := &linkWatcher{ns: ns, fn: fn, watched: map[string]bool{}, last: map[string]bool{}, byIndex: map[int]string{}}
	for _, n := range names {
		w.watched[n] = true
	}
	first := true
	for {
		err := w.run(ctx, names, first)
		if ctx.Err() != nil {
			return nil
		}
		if first && err != nil {
			return err
		}
		first = false
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(resubscribeDelay):
		}
	}
}

type linkWatcher struct {
	ns      netns.NsHandle
	fn      func(string, bool)
	watched map[string]bool
	last    map[string]bool // last state reported per name
	byIndex map[int]string  // ifindex → watched name, to notice renames
}

// report calls fn if the state of name changed (or force is set).
func (w *linkWatcher) report(name string, up, force bool) {
	if prev, ok := w.last[name]; ok && prev == up && !force {
		return
	}
	w.last[name] = up
	w.fn(name, up)
}

// run subscribes, reads the current state of every name and follows updates
// until ctx is done or the subscription breaks.
func (w *linkWatcher) run(ctx context.Context, names []string, first bool) error {
	done := make(chan struct{})
	ch := make(chan netlink.LinkUpdate, 64)
	subscribed := false
	defer func() {
		// Closing done closes the socket, which ends the library's receive
		// goroutine; drain ch so that goroutine never blocks on a send.
		close(done)
		if !subscribed {
			return
		}
		go func() {
			for range ch {
			}
		}()
	}()
	errc := make(chan error, 1)
	opts := netlink.LinkSubscribeOptions{
		Namespace: &w.ns,
		ErrorCallback: func(err error) {
			select {
			case errc <- err:
			default:
			}
		},
	}
	// Subscribe before reading the current state so no change falls between.
	if err := netlink.LinkSubscribeWithOptions(ch, done, opts); err != nil {
		return fmt.Errorf("vmac: watch links: subscribe: %w", err)
	}
	subscribed = true
	h, err := netlink.NewHandleAt(w.ns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("vmac: watch links: %w", err)
	}
	for _, n := range names {
		link, err := h.LinkByName(n)
		up := false
		if err == nil {
			a := link.Attrs()
			up = linkUp(a.RawFlags)
			w.byIndex[a.Index] = n
		} else {
			var nf netlink.LinkNotFoundError
			if !errors.As(err, &nf) {
				h.Close()
				return fmt.Errorf("vmac: watch links: %s: %w", n, err)
			}
		}
		w.report(n, up, first)
	}
	h.Close()

	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-ch:
			if !ok {
				var err error
				select {
				case err = <-errc:
				default:
					err = errors.New("subscription closed")
				}
				return fmt.Errorf("vmac: watch links: %w", err)
			}
			w.update(u)
		}
	}
}

func (w *linkWatcher) update(u netlink.LinkUpdate) {
	a := u.Link.Attrs()
	idx := int(u.Index)
	deleted := u.Header.Type == unix.RTM_DELLINK
	// A watched interface renamed away (or replaced) is down under its name.
	if old, ok := w.byIndex[idx]; ok && (old != a.Name || deleted) {
		delete(w.byIndex, idx)
		if old != a.Name {
			w.report(old, false, false)
		}
	}
	if !w.watched[a.Name] {
		return
	}
	if deleted {
		w.report(a.Name, false, false)
		return
	}
	w.byIndex[idx] = a.Name
	w.report(a.Name, linkUp(u.Flags), false)
}
