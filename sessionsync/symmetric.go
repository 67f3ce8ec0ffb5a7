package sessionsync

import (
	"fmt"
	"time"
)

// Symmetric mode (FGSP, cluster.mode fgsp): every member sends its flows to
// every other and applies theirs. Applying a peer's record makes the local
// kernel emit an event for it, which must not go back (ping-pong); a later
// change of the same flow made by this member's own traffic must (the
// asymmetric handshake: SYN through one member, SYN-ACK through the other).
//
// The two are told apart by remembering, per flow, the state last applied
// from a peer (known): the status bits a peer can set (SEEN_REPLY, ASSURED),
// the TCP state, the mark and the labels. An event whose state equals it is
// the echo of the apply and is dropped (counted as echoes); an event whose
// state differs was made by this member's traffic and is sent, to every
// peer, the one it came from included (counted as learned_updates_sent).
// Timeouts are not compared: traffic renews them without an event, and the
// busy connectionless flows are re-sent by the refresh, whose baseline is
// the expiry of the applied copy (so a copy is not refreshed back either).
//
// A flow this member sent (its own, or a learned one it changed) is owned:
// its destroy is sent, and the stale sweep at the end of a peer's bulk copy
// leaves it alone. A flow only learned is the peer's: its local destroy
// (expiry, a peer's delete applied, the sweep) is not sent back.

// tcpBeLiberal is IP_CT_TCP_FLAG_BE_LIBERAL in the high (flags) byte of
// TCPInfo.FlagsOrig/FlagsReply (the low byte is the mask).
const tcpBeLiberal = 0x08 << 8

// peerSettable are the status bits a received record sets (and so the ones
// compared with the applied state).
const peerSettable = StatusSeenReply | StatusAssured

// known is what symmetric mode remembers of a flow.
type known struct {
	// from is the peer the flow's state was last applied from; "" when
	// this member's own event was the last change sent.
	from string
	// owned is set once this member sent the flow: it carries traffic of
	// it.
	owned bool
	// deleted: a peer's delete was applied (its destroy event is the echo).
	deleted bool
	// applied are the states applied from peers since this member last
	// sent the flow, oldest first, at most appliedKeep: the events of
	// the applies arrive after them, so the echo of an earlier apply
	// (one peer's SYN_RECV) can arrive after a later one was learned
	// (another peer's ESTABLISHED).
	applied []flowState
}

// appliedKeep bounds known.applied.
const appliedKeep = 4

// flowState is what an echo is compared on.
type flowState struct {
	status uint32
	tcp    int16 // TCP state; -1 unknown (the record had none)
	mark   uint32
	labels string
}

func stateOf(f *Flow) flowState {
	s := flowState{status: f.Status & peerSettable, tcp: -1, mark: f.Mark, labels: string(f.Labels)}
	if f.TCP != nil {
		s.tcp = int16(f.TCP.State)
	}
	return s
}

// matches reports whether an event's state s equals an applied state a;
// an unknown TCP state on either side matches any.
func (a flowState) matches(s flowState) bool {
	if s.status != a.status || s.mark != a.mark || s.labels != a.labels {
		return false
	}
	return a.tcp < 0 || s.tcp < 0 || s.tcp == a.tcp
}

// echo reports whether an event's flow has a state applied from a peer
// whose event has not been seen yet; the states applied before the one
// it matches are forgotten (their events came earlier).
func (k *known) echo(f *Flow) bool {
	if k.from == "" || k.deleted {
		return false
	}
	s := stateOf(f)
	for i := range k.applied {
		if k.applied[i].matches(s) {
			if k.applied[i].tcp < 0 {
				k.applied[i].tcp = s.tcp
			}
			k.applied = k.applied[i:]
			return true
		}
	}
	return false
}

// last is the newest applied state (for the log).
func (k *known) last() flowState {
	if len(k.applied) == 0 {
		return flowState{tcp: -1}
	}
	return k.applied[len(k.applied)-1]
}

// symmetricEvent decides what symmetric mode does with a new or update
// event (e.mu held): false drops it as the echo of an apply.
func (e *Engine) symmetricEvent(f *Flow) bool {
	k := f.Key()
	kn, ok := e.known[k]
	if ok && kn.echo(f) {
		e.c.echoes++
		return false
	}
	if ok && kn.from != "" {
		e.c.learnedSent++ // this member's traffic changed a learned flow
		if e.log.IsDebug() {
			s, l := stateOf(f), kn.last()
			e.log.Debug("fgsp: a learned flow changed here; sending it", "flow", f.String(), "from", kn.from,
				"applied", fmt.Sprintf("status %#x tcp %d mark %d", l.status, l.tcp, l.mark),
				"now", fmt.Sprintf("status %#x tcp %d mark %d", s.status, s.tcp, s.mark))
		}
	}
	if !ok {
		kn = &known{}
		e.known[k] = kn
	}
	kn.from, kn.owned, kn.deleted, kn.applied = "", true, false, kn.applied[:0]
	return true
}

// symmetricDestroy decides whether a destroy event is sent (e.mu held).
func (e *Engine) symmetricDestroy(f *Flow) bool {
	k := f.Key()
	kn, ok := e.known[k]
	if !ok {
		return true // not learned: this member's own flow
	}
	delete(e.known, k)
	if kn.deleted || !kn.owned {
		e.c.echoes++
		return false
	}
	return true
}

// learn records the state of received records before they are applied
// (their events can arrive before Apply returns). It returns, per record,
// whether the flow was known before (a refused create is forgotten again).
func (e *Engine) learn(from string, recs []Record, now time.Time) []bool {
	had := make([]bool, len(recs))
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range recs {
		if recs[i].Expect != nil {
			continue // expectations: not in fgsp mode (config rejects them)
		}
		f := &recs[i].Flow
		k := f.Key()
		kn, ok := e.known[k]
		had[i] = ok
		if !ok {
			kn = &known{}
			e.known[k] = kn
		}
		if recs[i].Op == OpDelete {
			kn.from, kn.deleted = from, true
			delete(e.lastSent, k)
			continue
		}
		if f.TCP != nil {
			// This member has not seen the flow's sequence numbers (a
			// SYN-ACK through it answers a SYN it never saw): window
			// tracking of the copy is off, as conntrackd's default
			// (TCPWindowTracking off); the state machine still runs.
			f.TCP.FlagsOrig |= tcpBeLiberal
			f.TCP.FlagsReply |= tcpBeLiberal
		}
		if kn.deleted {
			kn.applied = kn.applied[:0]
		}
		kn.from, kn.deleted = from, false
		if len(kn.applied) == appliedKeep {
			kn.applied = append(kn.applied[:0], kn.applied[1:]...)
		}
		kn.applied = append(kn.applied, stateOf(f))
		if f.Connectionless() {
			// The refresh compares the local expiry with this one: a copy
			// is re-sent only when this member's traffic moved it on.
			exp := now.UnixNano() + int64(f.Timeout)*int64(time.Second)
			e.lastSent[k] = max(e.lastSent[k], exp)
		}
	}
	e.boundBook(now)
	return had
}

// forgetRefused drops the state learned for records the table refused and
// that were not known before (nothing was applied, no event will follow).
func (e *Engine) forgetRefused(recs []Record, had []bool, errs []error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, err := range errs {
		if err != nil && !had[i] && recs[i].Expect == nil {
			delete(e.known, recs[i].Flow.Key())
		}
	}
}

// sweepable keeps the stale-sweep candidates of a bulk copy from a peer
// that are still that peer's: not owned here, not since learned from
// another peer. Their destroy events are echoes.
func (e *Engine) sweepable(from string, stale []Record) []Record {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := stale[:0]
	for _, r := range stale {
		kn, ok := e.known[r.Flow.Key()]
		if ok && (kn.owned || kn.from != from) {
			continue
		}
		if ok {
			kn.deleted = true
		}
		out = append(out, r)
	}
	return out
}

// BulkDoneFrom reports whether a complete bulk copy from peer has been
// received since the engine started (a restarting fgsp member keeps its
// down_until_synced interfaces down until every live peer's is in).
func (e *Engine) BulkDoneFrom(peer string) bool {
	e.recvMu.Lock()
	defer e.recvMu.Unlock()
	rs := e.recv[peer]
	return rs != nil && rs.bulkDone
}

// pruneKnown forgets the flows that are no longer in the table: an event
// overrun lost their destroy events. Only entries older than the dump
// are candidates.
func (e *Engine) pruneKnown() {
	e.mu.Lock()
	old := make([]Key, 0, len(e.known))
	for k := range e.known {
		old = append(old, k)
	}
	e.mu.Unlock()
	present := make(map[Key]struct{}, len(old))
	if err := e.cfg.Table.Dump(func(f *Flow) { present[f.Key()] = struct{}{} }); err != nil {
		e.log.Warn("pruning the fgsp flow states: dump failed", "error", err)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, k := range old {
		if _, ok := present[k]; !ok {
			delete(e.known, k)
			n++
		}
	}
	e.log.Info("fgsp flow states pruned after an event overrun", "forgotten", n)
}
