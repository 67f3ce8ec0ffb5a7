package sessionsync

import (
	"context"
	"errors"
	"slices"
	"sync"
)

// EventType is the kind of a table event.
type EventType uint8

// Table events.
const (
	EventNew     EventType = 1 // a flow was created
	EventUpdate  EventType = 2 // a flow changed (state, status, mark, labels)
	EventDestroy EventType = 3 // a flow went away
	// EventOverrun says events were lost (ENOBUFS): the table must be
	// copied again to be sure of the replicas.
	EventOverrun EventType = 4
)

// Event is one change of a table: of a flow, or, when Expect is set, of
// an expectation (EventNew or EventDestroy).
type Event struct {
	Type   EventType
	Flow   Flow
	Expect *Expect
}

// ExpectTable is a Table that also holds expectations (the kernel's, a
// MemTable). The engine copies expectations only through one.
type ExpectTable interface {
	// DumpExpect calls fn for every expectation of the table.
	DumpExpect(fn func(*Expect)) error
	// ApplyExpect performs expectation records (Record.Expect set) in
	// order: an upsert creates the expectation (or refreshes its
	// timeout); a delete of a missing one is not an error.
	ApplyExpect(recs []Record) []error
}

// Table is a connection-tracking table: the kernel's (Kernel) or one in
// memory (MemTable).
type Table interface {
	// Listen calls fn for every change of the table until ctx is done or
	// the table fails; fn runs on one goroutine and must not block long
	// (the kernel drops events it cannot queue: EventOverrun).
	Listen(ctx context.Context, fn func(Event)) error
	// Dump calls fn for every flow of the table.
	Dump(fn func(*Flow)) error
	// Apply performs the records in order and returns one error per
	// record (nil: done). An upsert creates the flow, or updates it when
	// it exists; a delete of a missing flow is not an error.
	Apply(recs []Record) []error
	// Count returns the number of flows in the table.
	Count() (int, error)
	// Close releases the table's sockets.
	Close() error
}

// ErrRefused is returned by MemTable.Apply for flows its Refuse hook
// rejects.
var ErrRefused = errors.New("sessionsync: flow refused")

// MemTable is an in-memory Table for tests: a map of flows and a list of
// listeners that see every change, including those made by Apply (as the
// kernel's event socket does).
type MemTable struct {
	mu        sync.Mutex
	flows     map[Key]Flow
	expects   map[Key]Expect
	listeners []chan Event
	// Refuse, when set, is asked for every upsert; an error refuses it.
	Refuse   func(*Flow) error
	applied  int
	replaced int
	renewed  int
}

// Renewed returns how many flows OpRenew records renewed.
func (t *MemTable) Renewed() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.renewed
}

// Replaced returns how many existing flows OpReplace records replaced.
func (t *MemTable) Replaced() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.replaced
}

// NewMemTable returns an empty table.
func NewMemTable() *MemTable { return &MemTable{flows: map[Key]Flow{}, expects: map[Key]Expect{}} }

var _ ExpectTable = (*MemTable)(nil)

// PutExpect creates an expectation, as a helper would, and emits the
// event. Its master must be in the table (as in the kernel).
func (t *MemTable) PutExpect(x Expect) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.flows[x.Master]; !ok {
		return ErrRefused
	}
	t.expects[x.Key()] = x
	t.emit(Event{Type: EventNew, Expect: &x})
	return nil
}

// RemoveExpect deletes an expectation, as its use or expiry would, and
// emits the event.
func (t *MemTable) RemoveExpect(k Key) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if x, ok := t.expects[k]; ok {
		delete(t.expects, k)
		t.emit(Event{Type: EventDestroy, Expect: &x})
	}
}

// GetExpect returns an expectation.
func (t *MemTable) GetExpect(k Key) (Expect, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	x, ok := t.expects[k]
	return x, ok
}

// DumpExpect implements ExpectTable.
func (t *MemTable) DumpExpect(fn func(*Expect)) error {
	t.mu.Lock()
	xs := make([]Expect, 0, len(t.expects))
	for _, x := range t.expects {
		xs = append(xs, x)
	}
	t.mu.Unlock()
	for i := range xs {
		fn(&xs[i])
	}
	return nil
}

// ApplyExpect implements ExpectTable: an upsert whose master is missing
// is refused, as the kernel refuses it (ENOENT).
func (t *MemTable) ApplyExpect(recs []Record) []error {
	errs := make([]error, len(recs))
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range recs {
		x := recs[i].Expect
		if x == nil {
			errs[i] = ErrMalformed
			continue
		}
		switch recs[i].Op {
		case OpUpsert:
			if _, ok := t.flows[x.Master]; !ok {
				errs[i] = ErrRefused
				continue
			}
			t.expects[x.Key()] = *x
			t.emit(Event{Type: EventNew, Expect: x})
		case OpDelete:
			if old, ok := t.expects[x.Key()]; ok {
				delete(t.expects, x.Key())
				t.emit(Event{Type: EventDestroy, Expect: &old})
			}
		default:
			errs[i] = ErrMalformed
		}
	}
	return errs
}

var _ Table = (*MemTable)(nil)

func (t *MemTable) emit(ev Event) {
	for _, l := range t.listeners {
		select {
		case l <- ev:
		default:
			// A full listener lost an event: tell it, as ENOBUFS does.
			select {
			case l <- Event{Type: EventOverrun}:
			default:
			}
		}
	}
}

// Put creates or replaces a flow, as traffic would, and emits the event.
func (t *MemTable) Put(f Flow) {
	t.mu.Lock()
	defer t.mu.Unlock()
	typ := EventUpdate
	if _, ok := t.flows[f.Key()]; !ok {
		typ = EventNew
	}
	f.Status |= StatusConfirmed
	t.flows[f.Key()] = f
	t.emit(Event{Type: typ, Flow: f})
}

// Remove deletes a flow, as an expiry would, and emits the event.
func (t *MemTable) Remove(k Key) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f, ok := t.flows[k]; ok {
		delete(t.flows, k)
		t.emit(Event{Type: EventDestroy, Flow: f})
		t.dropExpects(k)
	}
}

// Touch changes a flow's timeout without an event, as traffic on a
// connectionless flow does in the kernel.
func (t *MemTable) Touch(k Key, timeout uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f, ok := t.flows[k]; ok {
		f.Timeout = timeout
		t.flows[k] = f
	}
}

// Get returns a flow.
func (t *MemTable) Get(k Key) (Flow, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.flows[k]
	return f, ok
}

// dropExpects removes the expectations of master k, as the kernel does
// when a master goes (t.mu held).
func (t *MemTable) dropExpects(k Key) {
	for ek, x := range t.expects {
		if x.Master == k {
			delete(t.expects, ek)
			t.emit(Event{Type: EventDestroy, Expect: &x})
		}
	}
}

// Flows returns a copy of every flow, sorted by key.
func (t *MemTable) Flows() []Flow {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Flow, 0, len(t.flows))
	for _, f := range t.flows {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Flow) int {
		if c := a.Orig.Src.Compare(b.Orig.Src); c != 0 {
			return c
		}
		if a.Orig.SrcPort != b.Orig.SrcPort {
			return int(a.Orig.SrcPort) - int(b.Orig.SrcPort)
		}
		if c := a.Orig.Dst.Compare(b.Orig.Dst); c != 0 {
			return c
		}
		return int(a.Orig.DstPort) - int(b.Orig.DstPort)
	})
	return out
}

// Listen implements Table.
func (t *MemTable) Listen(ctx context.Context, fn func(Event)) error {
	ch := make(chan Event, 65536)
	t.mu.Lock()
	t.listeners = append(t.listeners, ch)
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.listeners = slices.DeleteFunc(t.listeners, func(c chan Event) bool { return c == ch })
		t.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-ch:
			fn(ev)
		}
	}
}

// Dump implements Table.
func (t *MemTable) Dump(fn func(*Flow)) error {
	for _, f := range t.Flows() {
		fn(&f)
	}
	return nil
}

// Apply implements Table.
func (t *MemTable) Apply(recs []Record) []error {
	errs := make([]error, len(recs))
	for i := range recs {
		r := &recs[i]
		if (r.Op == OpUpsert || r.Op == OpReplace || r.Op == OpRenew) && t.Refuse != nil {
			// Outside the lock: a slow Refuse is a slow kernel, which
			// must not block Count or Dump.
			if err := t.Refuse(&r.Flow); err != nil {
				errs[i] = err
			}
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range recs {
		r := &recs[i]
		k := r.Flow.Key()
		if errs[i] != nil {
			continue
		}
		switch r.Op {
		case OpUpsert, OpReplace:
			typ := EventUpdate
			if old, ok := t.flows[k]; !ok {
				typ = EventNew
			} else if r.Op == OpReplace {
				delete(t.flows, k)
				t.replaced++
				t.emit(Event{Type: EventDestroy, Flow: old})
				typ = EventNew
			}
			f := t.store(r.Flow)
			t.applied++
			t.emit(Event{Type: typ, Flow: f})
		case OpRenew:
			old, ok := t.flows[k]
			if !ok {
				// It ended: not brought back. The kernel's replacement
				// creates it and deletes it again; so do its events.
				t.emit(Event{Type: EventNew, Flow: r.Flow})
				t.emit(Event{Type: EventDestroy, Flow: r.Flow})
				continue
			}
			t.emit(Event{Type: EventDestroy, Flow: old})
			f := t.store(r.Flow)
			t.renewed++
			t.emit(Event{Type: EventNew, Flow: f})
		case OpDelete:
			if f, ok := t.flows[k]; ok {
				delete(t.flows, k)
				t.applied++
				t.emit(Event{Type: EventDestroy, Flow: f})
				t.dropExpects(k)
			}
		default:
			errs[i] = ErrMalformed
		}
	}
	return errs
}

// store keeps a copy of f that shares nothing with the caller's (t.mu
// held) and returns it.
func (t *MemTable) store(f Flow) Flow {
	f.Labels = slices.Clone(f.Labels)
	if f.TCP != nil {
		c := *f.TCP
		f.TCP = &c
	}
	t.flows[f.Key()] = f
	return f
}

// Count implements Table.
func (t *MemTable) Count() (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.flows), nil
}

// Close implements Table.
func (t *MemTable) Close() error { return nil }
