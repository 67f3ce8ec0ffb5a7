package sessionsync

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// ErrNoExpectations is the error of an expectation record on a table that
// holds none.
var ErrNoExpectations = errors.New("sessionsync: this table holds no expectations")

// Expectations (session_pickup.expectation): the sending member copies the
// expectations its helpers create (an FTP data connection announced on
// the control connection, SIP media) and their removal; a bulk copy
// carries them after the flows, so their masters exist first. They travel
// as records of the same messages, in order with the flows.

// onExpectEvent queues an expectation's creation or removal (e.mu held).
func (e *Engine) onExpectEvent(ev Event, now time.Time) {
	if !e.cfg.Expectation || !e.primary {
		return
	}
	x := *ev.Expect
	if !e.wantedExpect(&x) {
		e.c.filtered++
		return
	}
	op := OpUpsert
	switch ev.Type {
	case EventNew, EventUpdate:
	case EventDestroy:
		op = OpDelete
	default:
		return
	}
	e.c.expectSent++
	e.enqueue(Record{Op: op, Expect: &x}, now)
}

// wantedExpect applies the filter to an expectation to send: the filter,
// and nothing whose master is not in this node's scope.
func (e *Engine) wantedExpect(x *Expect) bool {
	return e.filterExpect(x) && e.ownedExpect(x) // scope.go
}

// filterExpect is the filter of expectations, on either side: nothing of
// an ignored prefix, nothing whose master is not copied.
func (e *Engine) filterExpect(x *Expect) bool {
	for _, p := range e.cfg.Ignore {
		for _, a := range []netip.Addr{x.Tuple.Src, x.Tuple.Dst, x.Master.Orig.Src, x.Master.Orig.Dst} {
			if p.Contains(a) {
				return false
			}
		}
	}
	switch x.Master.Proto {
	case ProtoTCP:
	case ProtoUDP:
		return e.cfg.Connectionless
	default:
		return false
	}
	return true
}

// bulkExpect sends the table's expectations to p after the flows of a
// bulk copy.
func (e *Engine) bulkExpect(ctx context.Context, p *peerState, gen uint32, start time.Time, buf *[]byte) error {
	xt, ok := e.cfg.Table.(ExpectTable)
	if !e.cfg.Expectation || !ok {
		return nil
	}
	var recs []Record
	if err := xt.DumpExpect(func(x *Expect) {
		if e.wantedExpect(x) {
			c := *x
			recs = append(recs, Record{Op: OpUpsert, Expect: &c})
		}
	}); err != nil {
		return err
	}
	for len(recs) > 0 {
		n := min(len(recs), e.cfg.BatchRecords)
		if err := e.send(ctx, p, &Message{Kind: KindBulk, Gen: gen, Oldest: start.UnixNano(), Records: recs[:n]}, buf); err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

// applyRecords applies a message's records: flows to the table,
// expectations (after the flows before them, in order) to the table's
// expectations. It returns one error per record.
func (e *Engine) applyRecords(recs []Record) []error {
	first := -1
	for i := range recs {
		if recs[i].Expect != nil {
			first = i
			break
		}
	}
	if first < 0 {
		return e.cfg.Table.Apply(recs)
	}
	errs := make([]error, 0, len(recs))
	xt, _ := e.cfg.Table.(ExpectTable)
	for i := 0; i < len(recs); {
		j := i
		isExp := recs[i].Expect != nil
		for j < len(recs) && (recs[j].Expect != nil) == isExp {
			j++
		}
		switch {
		case !isExp:
			errs = append(errs, e.cfg.Table.Apply(recs[i:j])...)
		case xt == nil:
			for k := i; k < j; k++ {
				errs = append(errs, ErrNoExpectations)
			}
		default:
			errs = append(errs, xt.ApplyExpect(recs[i:j])...)
		}
		i = j
	}
	return errs
}
