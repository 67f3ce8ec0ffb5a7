package sessionsync

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/socket"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"
)

// The event socket, and what an overrun of it means.
//
// The kernel queues one datagram per conntrack event on every listening
// socket. When a socket's receive queue is full it drops the event, marks
// the socket congested and reports ENOBUFS once (netlink_overrun). While
// the socket stays congested every further event is dropped, silently,
// however much room the queue has again; the mark is cleared only when a
// read finds the queue empty. So the events lost to one overrun are those
// of the whole interval from the first drop until the reader has drained
// the queue, not only those before the ENOBUFS.
//
// A repair that dumps the table as soon as ENOBUFS is read can therefore
// still lose flows for good: a flow created during the dump, in a hash
// bucket the dump has passed, whose event is dropped because the queue
// has not been drained yet, reaches no peer (20037 of 20200 flows in
// TestFGSPDownUntilSynced before this). Listen reports the overrun only
// once the congestion is over, judged by the queue's size (SO_MEMINFO):
// empty, or grown since the last read (nothing is queued while congested);
// a read waits at most overrunIdle before the size is looked at again. The wait is bounded without a timer of
// its own: while congested nothing is queued, so every read shortens the
// queue until it is empty (a time bound would report too early on a slow
// reader: 7 s to drain under the race detector).

const (
	// eventBuffer is the event socket's receive buffer (SO_RCVBUFFORCE).
	eventBuffer = 8 << 20
	// eventDatagram is the largest event read whole: larger ones (there
	// are none: an event is under a page) are counted and dropped.
	eventDatagram = 64 << 10
	// overrunIdle: while an overrun is followed, a read waits at most
	// this long before the queue's size is looked at again (a wait that
	// ends without a datagram proves nothing by itself).
	overrunIdle = 20 * time.Millisecond
)

// eventSocket is the ctnetlink multicast socket for conntrack and
// expectation events, read through the runtime's poller.
type eventSocket struct {
	c   *socket.Conn
	buf []byte
	mi  []byte

	mu     sync.Mutex
	joined bool
	failed error // a join or leave that failed: Listen returns it
}

// openEvents opens the event socket in the caller's network namespace.
func openEvents() (*eventSocket, error) {
	c, err := socket.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_NETFILTER, "ctnetlink-events", nil)
	if err != nil {
		return nil, err
	}
	if err := c.Bind(&unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadBuffer(eventBuffer) // SO_RCVBUFFORCE as root
	s := &eventSocket{c: c, buf: make([]byte, eventDatagram), mi: make([]byte, 4*unix.SK_MEMINFO_VARS)}
	if err := s.subscribe(true); err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

// eventGroups are the multicast groups a sender needs: conntrack new,
// update and destroy, expectation new and destroy (not expectation
// updates, which carry nothing a copy uses).
var eventGroups = append(append([]netfilter.NetlinkGroup{}, netfilter.GroupsCT...), netfilter.GroupCTExpNew, netfilter.GroupCTExpDestroy)

// subscribe joins or leaves the event groups. Left, the kernel builds no
// event for this socket at all: with no listener left in the namespace,
// not even the message (a secondary's creates cost less, and its queue
// cannot overrun; TestKernelQuietSubscribesNothing).
func (s *eventSocket) subscribe(join bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.joined == join {
		return nil
	}
	opt := unix.NETLINK_DROP_MEMBERSHIP
	if join {
		opt = unix.NETLINK_ADD_MEMBERSHIP
	}
	for _, g := range eventGroups {
		if err := s.c.SetsockoptInt(unix.SOL_NETLINK, opt, int(g)); err != nil {
			return fmt.Errorf("ctnetlink events: group %d (join %v): %w", g, join, err)
		}
	}
	s.joined = join
	return nil
}

func (s *eventSocket) Close() error { return s.c.Close() }

// subscribeOrFail is subscribe; a failure closes the socket, so that
// Listen ends with it rather than a primary silently hearing nothing.
func (s *eventSocket) subscribeOrFail(join bool) {
	if err := s.subscribe(join); err != nil {
		s.mu.Lock()
		s.failed = err
		s.mu.Unlock()
		s.c.Close()
	}
}

func (s *eventSocket) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// queued is the receive queue's size in bytes (-1 if unknown).
func (s *eventSocket) queued() int {
	n, err := s.c.GetsockoptBytes(unix.SOL_SOCKET, unix.SO_MEMINFO, s.mi)
	if err != nil || n < 4*(unix.SK_MEMINFO_RMEM_ALLOC+1) {
		return -1
	}
	return int(binary.NativeEndian.Uint32(s.mi[4*unix.SK_MEMINFO_RMEM_ALLOC:]))
}

// overrun follows one overrun of the event socket until its congestion is
// over (see above).
type overrun struct {
	on   bool
	last int // queue size at the last read
}

func (o *overrun) begin(queued int) {
	o.on, o.last = true, queued
}

// settled reports whether the congestion is over, given the queue's size
// after a read (read) or after overrunIdle without a datagram: empty, or
// grown by a read (a read takes a datagram off a congested queue and
// nothing is added). A wait that ended without a read proves nothing
// more than the size does (the reader may just not have run).
func (o *overrun) settled(queued int, read bool) bool {
	if queued <= 0 || (read && queued >= o.last) {
		o.on = false
		return true
	}
	o.last = queued
	return false
}

// Listen implements Table; it may be called once (it closes the event
// socket when ctx is done). An overrun of the event socket (ENOBUFS) is
// reported as EventOverrun once its congestion is over (see above), after
// the events still queued; listening goes on. Reads take no context: a
// cancellable one costs a goroutine per read (mdlayher/socket); closing
// the socket ends a read.
func (k *Kernel) Listen(ctx context.Context, fn func(Event)) error {
	s := k.events
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	var ov overrun
	for {
		if ov.on {
			_ = s.c.SetReadDeadline(time.Now().Add(overrunIdle))
		}
		n, _, flags, _, err := s.c.Recvmsg(context.Background(), s.buf, nil, 0)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case errors.Is(err, unix.ENOBUFS):
			if !ov.on {
				q := s.queued()
				ov.begin(q)
				if ov.settled(q, false) {
					fn(Event{Type: EventOverrun})
				}
			}
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			_ = s.c.SetReadDeadline(time.Time{})
			if ov.on && ov.settled(s.queued(), false) {
				fn(Event{Type: EventOverrun})
			}
			continue
		case err != nil:
			if f := s.failure(); f != nil {
				return f
			}
			return fmt.Errorf("ctnetlink events: %w", err)
		}
		if flags&unix.MSG_TRUNC == 0 && !k.quiet.Load() {
			_, _ = nlSplit(s.buf[:n], func(m netlink.Message) (bool, error) {
				k.deliver(ctx, m, fn)
				return false, nil
			})
		}
		if ov.on && ov.settled(s.queued(), true) {
			_ = s.c.SetReadDeadline(time.Time{})
			fn(Event{Type: EventOverrun})
		}
	}
}

// deliver decodes one event message and hands it to fn: a plain flow's
// on the fast path (evdecode_linux.go), the rest with ti-mo.
func (k *Kernel) deliver(ctx context.Context, m netlink.Message, fn func(Event)) {
	if f, typ, valid, ok := decodeEvent(m); ok {
		k.decodedFast.Add(1)
		if valid {
			k.emitFlow(typ, f, fn)
		}
		return
	}
	k.decodedSlow.Add(1)
	var ev conntrack.Event
	if err := ev.Unmarshal(m); err != nil {
		return
	}
	if ev.Expect != nil {
		x, ok := fromTiMoExpect(ev.Expect)
		switch {
		case !ok:
		case ev.Type == conntrack.EventExpNew:
			fn(Event{Type: EventNew, Expect: &x})
			k.seqAdjOfMaster(ctx, x.Master, fn)
		case ev.Type == conntrack.EventExpDestroy:
			fn(Event{Type: EventDestroy, Expect: &x})
		}
		return
	}
	if ev.Flow == nil {
		return
	}
	f, ok := fromTiMo(ev.Flow)
	if !ok {
		return
	}
	if typ, ok := flowEventType(ev); ok {
		k.emitFlow(typ, f, fn)
	}
}

// flowEventType is the type of a ti-mo flow event in sessionsync's terms.
func flowEventType(ev conntrack.Event) (EventType, bool) {
	switch ev.Type {
	case conntrack.EventNew:
		return EventNew, true
	case conntrack.EventUpdate:
		return EventUpdate, true
	case conntrack.EventDestroy:
		return EventDestroy, true
	}
	return 0, false
}

// emitFlow hands a decoded flow event to fn.
func (k *Kernel) emitFlow(typ EventType, f Flow, fn func(Event)) {
	if typ != EventDestroy && f.Status&statusSeqAdjust != 0 && f.SeqAdj == nil {
		// An event carries the adjustment only when ctnetlink changed it
		// (IPCT_SEQADJ); the data path changes it without one
		// (nf_ct_seqadj_set): read the entry.
		if g, ok := k.get(f.Key()); ok {
			f = g
		}
	}
	fn(Event{Type: typ, Flow: f})
}

// seqAdjDelay is how long after an expectation's creation its master is
// read a second time: the NAT helper creates the expectation
// (nf_nat_exp_find_port) before it rewrites the payload and sets the
// adjustment (nf_nat_mangle_tcp_packet), within the same packet.
const seqAdjDelay = 50 * time.Millisecond

// seqAdjOfMaster reports the master of a new expectation as updated when
// it carries a sequence adjustment. A helper that rewrites a payload to
// another length (nf_nat_ftp, nf_nat_irc, nf_nat_sip over TCP, H.323)
// creates an expectation for the connection it announces; the adjustment
// it sets on the master raises no conntrack event, so the expectation's
// is the moment to read it. Read now and again after seqAdjDelay (the
// second read is sent only when it differs).
func (k *Kernel) seqAdjOfMaster(ctx context.Context, master Key, fn func(Event)) {
	first, ok := k.get(master)
	if !ok {
		return
	}
	if first.SeqAdj != nil {
		fn(Event{Type: EventUpdate, Flow: first})
	}
	time.AfterFunc(seqAdjDelay, func() {
		if ctx.Err() != nil || k.quiet.Load() {
			return
		}
		g, ok := k.get(master)
		if !ok || g.SeqAdj == nil || (first.SeqAdj != nil && *g.SeqAdj == *first.SeqAdj) {
			return
		}
		fn(Event{Type: EventUpdate, Flow: g})
	})
}
