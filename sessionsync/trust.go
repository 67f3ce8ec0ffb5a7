package sessionsync

import (
	"bytes"
	"maps"
	"slices"
	"time"

	"github.com/hagent/hagent/l2chan"
)

// Receive-side trust. The channel authenticates a peer (it holds the
// key); it does not make it the member entitled to write this node's
// conntrack table. A received message goes through, in order:
//
//  1. The sender: only a peer SetSenders names is applied, and only the
//     flows its scope covers (a-p: the member the election sees as
//     primary, per vcluster; fgsp: every live peer). A peer that lost its
//     entitlement keeps it for Config.Grace (its last messages, sent
//     before it let the role go, may arrive after this node's election
//     saw the change: they are the copies a takeover waits for). A
//     message from a peer that is not entitled (yet) is held, not
//     applied: a new primary's bulk copy can arrive before its first
//     heartbeat is processed here. Held messages are applied, in their
//     order, once the peer is entitled, and refused (counted
//     "not_entitled") after Grace, or at once when the hold is full
//     (maxHeldMessages, maxHeldBytes). A refused message breaks the bulk
//     copy in progress from that peer: its end neither sweeps nor counts
//     as a complete copy. TestUnentitledPeerRefused,
//     TestHeldUntilEntitled, TestOutOfScopeRefused.
//  2. The receiver's own filter, the one its sender side applies
//     (wanted, filterExpect): protocols, connectionless, nat, ignore,
//     expectation. Refused records are counted "filtered" or
//     "expectations_off". TestReceiveFilter.
//  3. What a copy may carry: the status bits in CopyStatus (the rest are
//     cleared; those no sender's kernel reports are counted
//     status_masked), a helper Config.Helpers allows
//     (another is removed from the flow, counted helpers_removed; an
//     expectation of such a helper is refused, "helper"). Mark, zone,
//     labels and the NAT mapping are taken as sent from an entitled
//     sender: they are the primary's own decisions about its own flows,
//     which this node takes over (a zone or mark this node's ruleset does
//     not use matches none of its rules). TestStatusMasked,
//     TestHelperRemoved.
//
// FuzzReceive drives the whole path with arbitrary messages from
// arbitrary peers.

// Senders are the peers entitled to send this node session records, each
// with the flows it may send (a nil func: every flow). A peer not in the
// map may send nothing.
type Senders map[string]func(*Flow) bool

// DefaultGrace is how long a peer keeps the entitlement it lost, and how
// long a message from a peer not entitled is held.
const DefaultGrace = 3 * time.Second

// Bounds of the messages held from peers not entitled (yet).
const (
	maxHeldMessages = 1024
	maxHeldBytes    = 16 << 20
)

// Refusal reasons (Status.Refused).
const (
	RefusedNotEntitled = "not_entitled"     // a message from a peer not entitled
	RefusedScope       = "out_of_scope"     // a record outside the sender's scope
	RefusedFilter      = "filtered"         // a record this node's filter does not copy
	RefusedExpectOff   = "expectations_off" // an expectation; expectation: false here
	RefusedHelper      = "helper"           // an expectation of a helper not allowed here
)

type senderSet struct {
	cur Senders
	old map[string]formerSender
}

type formerSender struct {
	owns  func(*Flow) bool
	until time.Time
}

type held struct {
	from string
	data []byte
	at   time.Time
}

// SetSenders names the peers entitled to send this node session records
// (see Senders). Until it is first called every authenticated peer is
// entitled to everything (the library default; the agent calls it before
// Run, with nobody). The entitlements it replaces stay valid for
// Config.Grace; held messages of peers entitled now are applied.
func (e *Engine) SetSenders(s Senders) {
	now := e.cfg.Now()
	e.trustMu.Lock()
	next := &senderSet{cur: maps.Clone(s), old: map[string]formerSender{}}
	if next.cur == nil {
		next.cur = Senders{}
	}
	if prev := e.senders; prev != nil {
		for name, f := range prev.old {
			if now.Before(f.until) {
				next.old[name] = f
			}
		}
		for name, owns := range prev.cur {
			next.old[name] = formerSender{owns: owns, until: now.Add(e.cfg.Grace)}
		}
	}
	e.senders = next
	e.trustMu.Unlock()
	e.sendersGen.Add(1)
	poke(e.trustWake)
}

// senderScope returns the flows peer may send now (nil: every flow) and
// whether it may send anything.
func (e *Engine) senderScope(peer string, now time.Time) (func(*Flow) bool, bool) {
	e.trustMu.Lock()
	defer e.trustMu.Unlock()
	s := e.senders
	if s == nil {
		return nil, true
	}
	cur, isCur := s.cur[peer]
	old, isOld := s.old[peer]
	isOld = isOld && now.Before(old.until)
	switch {
	case isCur && isOld:
		if cur == nil || old.owns == nil {
			return nil, true
		}
		return func(f *Flow) bool { return cur(f) || old.owns(f) }, true
	case isCur:
		return cur, true
	case isOld:
		return old.owns, true
	}
	return nil, false
}

// senderNames lists the peers entitled now, for the status.
func (e *Engine) senderNames(now time.Time) []string {
	e.trustMu.Lock()
	defer e.trustMu.Unlock()
	if e.senders == nil {
		return nil
	}
	names := []string{} // set, if empty: not "every peer"
	for n := range e.senders.cur {
		names = append(names, n)
	}
	for n, f := range e.senders.old {
		if now.Before(f.until) && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// hold keeps a message of a peer not entitled (yet), or refuses it when
// the hold is full. Only the applying goroutine calls it.
func (e *Engine) hold(msg l2chan.Message, now time.Time) {
	if len(e.held) >= maxHeldMessages || e.heldBytes+len(msg.Data) > maxHeldBytes {
		e.refuseMsg(msg.From, now)
		return
	}
	e.held = append(e.held, held{from: msg.From, data: bytes.Clone(msg.Data), at: now})
	e.heldBytes += len(msg.Data)
	if e.heldFrom == nil {
		e.heldFrom = map[string]int{}
	}
	e.heldFrom[msg.From]++
	e.heldN.Store(int64(len(e.held)))
}

// holding reports whether a message of peer is held (a newer one waits
// behind it).
func (e *Engine) holding(peer string) bool { return e.heldFrom[peer] > 0 }

// flushDue reports whether the held messages need a look: the senders
// changed since the last, or the oldest is due for refusal. It keeps a
// message from a peer that is not entitled at a constant cost, whatever
// the hold (TestHoldBounded, BenchmarkUnentitledMessage).
func (e *Engine) flushDue(now time.Time) bool {
	return len(e.held) > 0 && (e.sendersGen.Load() != e.heldGen || now.Sub(e.held[0].at) >= e.cfg.Grace)
}

// flushHeld applies the held messages of the peers entitled now, in their
// order, and refuses those held longer than Grace.
func (e *Engine) flushHeld(now time.Time, m *Message) {
	if len(e.held) == 0 {
		return
	}
	e.heldGen = e.sendersGen.Load()
	q := e.held
	e.held = nil
	e.heldFrom = nil
	var blocked map[string]bool
	var keep []held
	for _, h := range q {
		if _, ok := e.senderScope(h.from, now); ok && !blocked[h.from] {
			e.heldBytes -= len(h.data)
			e.apply(l2chan.Message{From: h.from, Data: h.data}, m, now)
			continue
		}
		if now.Sub(h.at) >= e.cfg.Grace {
			e.heldBytes -= len(h.data)
			e.refuseMsg(h.from, now)
			continue
		}
		if blocked == nil {
			blocked = map[string]bool{}
		}
		blocked[h.from] = true
		keep = append(keep, h)
		if e.heldFrom == nil {
			e.heldFrom = map[string]int{}
		}
		e.heldFrom[h.from]++
	}
	e.held = keep
	e.heldN.Store(int64(len(e.held)))
}

// refuseMsg counts a message refused because its sender is not entitled,
// and breaks the bulk copy in progress from that peer: a copy with a hole
// must not sweep, nor count as complete.
func (e *Engine) refuseMsg(from string, now time.Time) {
	e.recvMu.Lock()
	defer e.recvMu.Unlock()
	e.rc.refused[RefusedNotEntitled]++
	if rs := e.recv[from]; rs != nil && rs.inBulk {
		rs.inBulk, rs.seen, rs.before = false, nil, nil
		rs.bulk.State = "failed"
	}
	e.noteRefusal(now, "message from "+from+", which is not entitled to send session records, refused")
}

// admit decides whether a record of an entitled sender whose scope is
// scope is applied, adapting it to what a copy may carry: "" applies it,
// otherwise the refusal reason (e.recvMu held).
func (e *Engine) admit(r *Record, scope func(*Flow) bool) string {
	if x := r.Expect; x != nil {
		switch {
		case !e.cfg.Expectation:
			return RefusedExpectOff
		case scope != nil && !scope(masterFlow(x)):
			return RefusedScope
		case !e.filterExpect(x):
			return RefusedFilter
		case !e.helperAllowed(x.Helper):
			return RefusedHelper
		}
		return ""
	}
	f := &r.Flow
	if scope != nil && !scope(f) {
		return RefusedScope
	}
	if !e.wanted(f) {
		return RefusedFilter
	}
	if r.Op != OpUpsert {
		return ""
	}
	if f.Status&^senderStatus != 0 {
		e.rc.statusMasked++
	}
	f.Status &= CopyStatus
	if f.Helper != "" && !e.helperAllowed(f.Helper) {
		f.Helper = ""
		e.rc.helpersRemoved++
	}
	return ""
}

// helperAllowed reports whether a copy may carry helper name.
func (e *Engine) helperAllowed(name string) bool {
	return e.cfg.Helpers == nil || e.cfg.Helpers(name)
}

// noteRefusal logs a refusal at most once a minute (e.recvMu held).
func (e *Engine) noteRefusal(now time.Time, msg string) {
	if now.Sub(e.rc.lastRefusalAt) > time.Minute {
		e.log.Warn("session sync: refused", "what", msg)
		if e.cfg.Event != nil {
			e.cfg.Event("session sync: " + msg + " (refusals within a minute are counted, not logged)")
		}
		e.rc.lastRefusalAt = now
	}
	e.rc.lastRefusal = msg
}
