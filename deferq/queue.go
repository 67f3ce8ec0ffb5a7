// Package deferq holds the first packets of new flows until the peers
// have the flows in their kernels (FGSP defer, cluster.session_pickup.defer,
// as pfsync's defer mode): with asymmetric routing the reply of a new
// connection may cross another member, which drops it as invalid unless
// the flow's copy got there first.
//
// Queue is the hold itself, a pure structure with the clock passed in:
// packet ids and flow keys in, verdicts (which packet to let go, and why)
// out. Runner (Linux) feeds it from nfnetlink_queue and installs the
// NFQUEUE rule that sends it the packets.
package deferq

import (
	"slices"
	"time"
)

// Why a packet was let go.
type Why uint8

const (
	// Acked: every live peer acknowledged the flow in its kernel.
	Acked Why = iota + 1
	// Timeout: the flow's first packet was held Config.Max.
	Timeout
	// Bypass: the queue (the flow's or the total) was full, or the hold
	// is off: the packet was not held.
	Bypass
)

func (w Why) String() string {
	switch w {
	case Acked:
		return "acked"
	case Timeout:
		return "timeout"
	case Bypass:
		return "bypass"
	}
	return "?"
}

// Verdict lets packet ID go.
type Verdict struct {
	ID  uint32
	Why Why
}

// Limits of a Queue.
const (
	// DefaultPerFlow is how many packets of one flow are held at most
	// (OpenBSD's pfsync holds 128 packets in all).
	DefaultPerFlow = 128
	// DefaultTotal is how many packets are held at most in all.
	DefaultTotal = 4096
)

// Config bounds a Queue.
type Config struct {
	// Max is the longest a flow's first packet is held (defer).
	Max time.Duration
	// PerFlow and Total bound the packets held per flow and in all;
	// 0 takes DefaultPerFlow and DefaultTotal.
	PerFlow, Total int
}

// Queue holds packets per flow, in arrival order, until the flow is
// acknowledged or its time is up. Not safe for concurrent use.
type Queue[K comparable] struct {
	cfg   Config
	flows map[K]*flow
	// order is the flows by deadline (a flow's deadline is its first
	// packet's arrival plus Max, so arrival order is deadline order).
	order []entry[K]
	n     int
	st    Stats
	hist  holdTimes
}

type entry[K comparable] struct {
	k K
	f *flow
}

type flow struct {
	since    time.Time
	deadline time.Time
	ids      []uint32
	done     bool // released; still in order until Expire passes it
}

// Stats counts what the queue did.
type Stats struct {
	// Held counts the packets held; Acked, TimedOut and Bypassed the
	// packets let go by acknowledgement, by timeout, and unheld.
	Held, Acked, TimedOut, Bypassed uint64
	// Holding is the number of packets held now.
	Holding int
	// P50, P99 and Max are the hold times of the last released flows'
	// first packets (the longest a packet of them waited).
	P50, P99, Max time.Duration
}

// New returns an empty queue.
func New[K comparable](cfg Config) *Queue[K] {
	if cfg.PerFlow <= 0 {
		cfg.PerFlow = DefaultPerFlow
	}
	if cfg.Total <= 0 {
		cfg.Total = DefaultTotal
	}
	return &Queue[K]{cfg: cfg, flows: map[K]*flow{}}
}

// Holding reports whether packets of flow k are held.
func (q *Queue[K]) Holding(k K) bool {
	f := q.flows[k]
	return f != nil && !f.done
}

// Hold takes packet id of flow k at now. It returns false when the
// packet is not held (the flow's or the total bound is reached, or Max
// is 0): the caller lets it go at once; it is counted as bypassed. A
// packet of a flow already held waits with it (its order kept), until
// the flow's first packet's deadline.
func (q *Queue[K]) Hold(now time.Time, id uint32, k K) bool {
	f := q.flows[k]
	if q.cfg.Max <= 0 || q.n >= q.cfg.Total || (f != nil && !f.done && len(f.ids) >= q.cfg.PerFlow) {
		q.st.Bypassed++
		return false
	}
	if f == nil || f.done {
		// (A released flow's entry in order stays until Expire passes
		// it; it is done, so it is skipped.)
		f = &flow{since: now, deadline: now.Add(q.cfg.Max)}
		q.flows[k] = f
		q.order = append(q.order, entry[K]{k, f})
	}
	f.ids = append(f.ids, id)
	q.n++
	q.st.Held++
	return true
}

// Ack lets every packet of flow k go, in arrival order (the flow is in
// every live peer's kernel). Unknown flows give nothing.
func (q *Queue[K]) Ack(now time.Time, k K, out []Verdict) []Verdict {
	f := q.flows[k]
	if f == nil || f.done {
		return out
	}
	q.st.Acked += uint64(len(f.ids))
	return q.release(now, f, Acked, out)
}

// Expire lets go, in arrival order, the packets of every flow whose first
// packet has been held Max by now.
func (q *Queue[K]) Expire(now time.Time, out []Verdict) []Verdict {
	i := 0
	for ; i < len(q.order); i++ {
		k, f := q.order[i].k, q.order[i].f
		if !f.done {
			if now.Before(f.deadline) {
				break
			}
			q.st.TimedOut += uint64(len(f.ids))
			out = q.release(now, f, Timeout, out)
		}
		if q.flows[k] == f {
			delete(q.flows, k)
		}
	}
	q.order = q.order[i:]
	if len(q.order) == 0 {
		q.order = nil
	}
	return out
}

// Next is the earliest deadline of a held flow; ok is false when nothing
// is held.
func (q *Queue[K]) Next() (t time.Time, ok bool) {
	for _, e := range q.order {
		if !e.f.done {
			return e.f.deadline, true
		}
	}
	return time.Time{}, false
}

// Flush lets every held packet go (the hold stops), as timeouts.
func (q *Queue[K]) Flush(now time.Time, out []Verdict) []Verdict {
	for _, e := range q.order {
		if !e.f.done {
			q.st.TimedOut += uint64(len(e.f.ids))
			out = q.release(now, e.f, Timeout, out)
		}
	}
	q.order, q.flows = nil, map[K]*flow{}
	return out
}

// release lets f's packets go; its entry in order goes when Expire
// reaches it (a flow held again meanwhile gets a new one: Hold).
func (q *Queue[K]) release(now time.Time, f *flow, why Why, out []Verdict) []Verdict {
	for _, id := range f.ids {
		out = append(out, Verdict{ID: id, Why: why})
	}
	q.n -= len(f.ids)
	q.hist.add(now.Sub(f.since))
	f.ids, f.done = nil, true
	return out
}

// Stats returns the counters and the hold-time quantiles.
func (q *Queue[K]) Stats() Stats {
	s := q.st
	s.Holding = q.n
	s.P50, s.P99, s.Max = q.hist.quantiles()
	return s
}

// holdTimes keeps the last hold times.
type holdTimes struct {
	s   [1024]time.Duration
	n   int
	pos int
	max time.Duration
}

func (h *holdTimes) add(d time.Duration) {
	h.s[h.pos] = d
	h.pos = (h.pos + 1) % len(h.s)
	h.n = min(h.n+1, len(h.s))
	h.max = max(h.max, d)
}

// quantiles are over the last samples; max is over all.
func (h *holdTimes) quantiles() (p50, p99, mx time.Duration) {
	if h.n == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(h.s[:h.n])
	slices.Sort(s)
	return s[h.n/2], s[(h.n*99)/100], h.max
}
