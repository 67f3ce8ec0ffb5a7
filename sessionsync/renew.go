package sessionsync

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"
)

// Renewing the entries of this node's own table (a-p mode). An entry this
// node forwarded carries what no record can update: its TCP window
// tracking, and, when its own masquerade translated it, the interface
// that makes the kernel delete it once the cluster address goes. Two
// moments need fresh entries (the chaos campaign, issue 14):
//
//   - Another member held the vMAC for a moment while this node stayed
//     primary (a frozen primary woke, a restarted or lossy peer took over
//     unheard) and forwarded packets this node never saw: the entries'
//     windows are behind, and the next packets are out of window, dropped
//     as invalid (or, for a masqueraded reply, answered with a reset by
//     the local stack). Renew replaces every TCP flow by a fresh copy of
//     itself, which picks its window up from the next packet.
//   - This node lets the role go: KeepFlows makes its own entries plain
//     copies before the addresses go, so the masquerade cleanup that
//     follows the removal spares them, and a node that takes the role
//     back before the new primary's bulk copy reached it still has them
//     (measured: all 200 connections stalled after a 30 ms demotion, and
//     the empty bulk copy it then sent swept every copy on a peer).

// renewChunk is how many flows one Apply call renews; whether the
// renewal is still wanted is checked between chunks.
const renewChunk = 1024

// renewRate bounds how many flows a renewal replaces per second. Each
// costs the primary's kernel two writes and its event socket two events
// (the old entry's destroy, the new one's creation), which the engine
// reads and drops; unbounded (80 000 flows/s here) a table of a million
// flows would flood that socket while the new traffic's events share it,
// and an overrun costs a bulk copy to every member. At this rate the
// caller's usual wait (200 ms) still covers ~10 000 flows, and a table of
// 1 000 000 is covered in ~20 s (TestRenewCoversTable).
var renewRate = 50000

// renewHold is how long the events of a flow Renew replaced are taken as
// the renewal's own (not sent to the peers).
const renewHold = 5 * time.Second

// renewMark is a flow Renew replaced whose events have not all come: the
// destroy of the old entry and the new one's creation. (A flow that had
// ended is created by the replacement and deleted again: the same two
// events, in the other order.) They are not sent: the peers' copies stay
// as they are.
type renewMark struct {
	at           time.Time
	destroy, new bool // still to come
}

// Renew replaces the TCP flows this primary forwards (in its scope) by
// fresh copies of themselves, NAT mapping, state, status, mark and
// timeout kept: their window tracking restarts from the next packet. A
// flow that ended meanwhile stays gone; the replacements' own events are
// not sent (the peers' copies stay as they are). It returns the flows
// renewed and the flows to renew, or 0, 0 at ctx's deadline: ctx bounds
// the caller's wait, not the renewal, which goes on in the background
// until it covered the table (its history entry says so), unless a newer
// renewal, a role change or the end of Run stops it first. Only a primary
// renews (a secondary's entries are copies).
func (e *Engine) Renew(ctx context.Context, why string) (renewed, total int, err error) {
	if !e.isPrimary.Load() || e.cfg.Symmetric {
		return 0, 0, nil
	}
	return e.renew(ctx, why, true, e.owned)
}

// KeepFlows makes the flows of the local table that keep selects (nil:
// every flow session pickup copies) plain copies of themselves before
// this node's addresses go: the masquerade cleanup of the address removal
// then spares them, and their windows restart from the next packet if the
// node forwards them again. Called once the engine stopped sending
// (SetRole(false), or the scope narrowed): the replacements' events are
// not sent. A flow the cleanup already removed is created again. It
// returns as Renew does.
func (e *Engine) KeepFlows(ctx context.Context, why string, keep func(*Flow) bool) (renewed, total int, err error) {
	if e.cfg.Symmetric {
		return 0, 0, nil
	}
	if keep == nil {
		keep = func(*Flow) bool { return true }
	}
	return e.renew(ctx, why, false, keep)
}

// renewable reports whether a TCP flow is worth renewing: not closing.
func renewable(f *Flow) bool {
	if f.TCP == nil {
		return true
	}
	switch f.TCP.State {
	case TCPNone, tcpTimeWait, tcpClose:
		return false
	}
	return true
}

// TCP conntrack states a renewal skips (enum tcp_conntrack).
const (
	tcpTimeWait = 7
	tcpClose    = 8
)

// renew runs renewNow on a goroutine of its own and waits for it until
// ctx is done: the table's dump may wait for a bulk copy's, which holds
// it while it sends, the renewal of a large table takes seconds at
// renewRate, and the caller is the agent's run goroutine (a takeover
// must not wait for it). Past the deadline renew returns 0, 0; the
// renewal goes on to the end of the table. It stops at its next chunk
// when a newer renewal starts (the newer one dumps the table afresh),
// when the node's role changes (a renewal of a primary's entries is
// wrong on a secondary, and a copy's keeping wrong on a primary), or when
// Run ends.
func (e *Engine) renew(ctx context.Context, why string, live bool, keep func(*Flow) bool) (renewed, total int, err error) {
	type result struct {
		renewed, total int
		err            error
	}
	e.mu.Lock()
	run := e.runCtx
	e.mu.Unlock()
	if run == nil {
		run = context.Background() // not running (tests): nothing ends it
	}
	gen, primary := e.renewGen.Add(1), e.isPrimary.Load()
	wanted := func() bool {
		return run.Err() == nil && e.renewGen.Load() == gen && e.isPrimary.Load() == primary
	}
	done := make(chan result, 1)
	go func() {
		r, n, err := e.renewNow(wanted, why, live, keep)
		done <- result{r, n, err}
	}()
	select {
	case r := <-done:
		return r.renewed, r.total, r.err
	case <-ctx.Done():
		return 0, 0, nil
	}
}

// renewNow renews at renewRate while wanted reports true (checked
// between chunks).
func (e *Engine) renewNow(wanted func() bool, why string, live bool, keep func(*Flow) bool) (renewed, total int, err error) {
	start := e.cfg.Now()
	var flows []Flow
	dump := e.cfg.Table.Dump
	if a, ok := e.cfg.Table.(asideDumper); ok {
		dump = a.dumpAside // not behind a bulk copy's dump
	}
	if err := dump(func(f *Flow) {
		if f.Status&StatusDying != 0 || !e.wanted(f) || !keep(f) || !renewable(f) || (live && f.Proto != ProtoTCP) {
			return
		}
		flows = append(flows, *f)
	}); err != nil {
		return 0, 0, fmt.Errorf("dump: %w", err)
	}
	// Masters first: their expectations are read just before their
	// chunk's Apply, and the sooner their entries are replaced after that
	// read, the shorter the moment in which a helper's new expectation
	// (a PORT command on the wire) is lost uncopied.
	slices.SortStableFunc(flows, func(a, b Flow) int { return cmp.Compare(helperLast(&a), helperLast(&b)) })
	dumped, paced := e.cfg.Now(), time.Now()
	op := OpReplace
	if live {
		op = OpRenew
	}
	failed, kept, lost := 0, 0, 0
	if live {
		e.mu.Lock()
		for k, m := range e.renewing { // events lost (an overrun)
			if start.Sub(m.at) >= renewHold {
				delete(e.renewing, k)
			}
		}
		e.mu.Unlock()
	}
	for i := 0; i < len(flows) && wanted(); i += renewChunk {
		if i > 0 {
			// The rate: chunk i starts no earlier than i/renewRate
			// seconds after the first.
			time.Sleep(time.Until(paced.Add(time.Duration(i) * time.Second / time.Duration(renewRate))))
			if !wanted() {
				break
			}
		}
		chunk := flows[i:min(i+renewChunk, len(flows))]
		recs := make([]Record, len(chunk))
		now := e.cfg.Now()
		e.mu.Lock()
		for n := range chunk {
			recs[n] = Record{Op: op, Flow: chunk[n]}
			if live {
				if e.renewing == nil {
					e.renewing = map[Key]*renewMark{}
				}
				e.renewing[chunk[n].Key()] = &renewMark{at: now, destroy: true, new: true}
			}
		}
		e.mu.Unlock()
		xs := e.expectsOf(chunk)
		e.refreshMasters(chunk, recs)
		errs := e.cfg.Table.Apply(recs)
		k, l := e.restoreExpects(xs, chunk, errs)
		kept, lost = kept+k, lost+l
		e.mu.Lock()
		for n, err := range errs {
			if err == nil {
				renewed++
				continue
			}
			failed++
			if live {
				delete(e.renewing, chunk[n].Key()) // no events of ours to come
			}
		}
		e.mu.Unlock()
	}
	e.mu.Lock()
	e.c.renewed += uint64(renewed)
	e.mu.Unlock()
	end := e.cfg.Now()
	msg := fmt.Sprintf("%s: %d of %d flows renewed in %s (dump %s)", why, renewed, len(flows),
		end.Sub(start).Round(time.Microsecond), dumped.Sub(start).Round(time.Microsecond))
	if failed > 0 {
		msg += fmt.Sprintf(", %d refused", failed)
	}
	if kept+lost > 0 {
		msg += fmt.Sprintf(", %d of %d expectations of their masters kept", kept, kept+lost)
	}
	if renewed+failed < len(flows) {
		msg += " (stopped: a newer renewal, a role change or the engine's end)"
	}
	e.event("%s", msg)
	return renewed, len(flows), nil
}

// asideDumper is a Table with a second dump socket (the kernel's): a
// renewal's dump need not wait for a bulk copy's, which holds the first
// while it sends.
type asideDumper interface {
	dumpAside(fn func(*Flow)) error
}

// renewalEvent reports whether an event of flow k is one of a renewal's
// own, and takes it off (e.mu held).
func (e *Engine) renewalEvent(typ EventType, k Key, now time.Time) bool {
	m, ok := e.renewing[k]
	if !ok {
		return false
	}
	if now.Sub(m.at) >= renewHold {
		delete(e.renewing, k)
		return false
	}
	switch {
	case typ == EventDestroy && m.destroy:
		m.destroy = false
	case typ == EventNew && m.new:
		m.new = false
	default:
		return false
	}
	if !m.destroy && !m.new {
		delete(e.renewing, k)
	}
	return true
}

// helperLast is 0 for a flow with a helper (a master of expectations),
// 1 for the others: the order of a renewal.
func helperLast(f *Flow) int {
	if f.Helper != "" {
		return 0
	}
	return 1
}

// expectsOf returns the expectations of the table whose master is one of
// flows (none if no flow has a helper, or the table holds none). The
// kernel removes a master's expectations when the master's entry is
// deleted (nf_ct_remove_expectations), and a renewal deletes it: an FTP
// control connection renewed just after its PORT command lost the
// expectation of the data connection, which the server then opened in
// vain (TestKernelRenewKeepsExpectations).
func (e *Engine) expectsOf(flows []Flow) []Expect {
	xt, ok := e.cfg.Table.(ExpectTable)
	if !ok || !slices.ContainsFunc(flows, func(f Flow) bool { return f.Helper != "" }) {
		return nil
	}
	masters := map[Key]struct{}{}
	for i := range flows {
		if flows[i].Helper != "" {
			masters[flows[i].Key()] = struct{}{}
		}
	}
	var xs []Expect
	if err := xt.DumpExpect(func(x *Expect) {
		if _, ok := masters[x.Master]; ok {
			xs = append(xs, *x)
		}
	}); err != nil {
		e.event("renewal: the expectations of %d masters not read: %v", len(masters), err)
		return nil
	}
	return xs
}

// flowGetter is a Table that reads one flow (the kernel's).
type flowGetter interface {
	get(Key) (Flow, bool)
}

// refreshMasters reads the flows of chunk that have a helper again, just
// before their renewal, into recs: the table's dump may be tens of
// milliseconds old by then, and a helper that rewrote a command to
// another length meanwhile (an FTP PORT sent just after a takeover) has
// changed the entry's sequence adjustment, which a copy of the dump's
// would undo: every later packet of the control connection translated
// wrongly, the session stalls (TestKernelRenewReadsMastersAgain). A flow
// that ended meanwhile keeps its record (the renewal finds it gone).
func (e *Engine) refreshMasters(chunk []Flow, recs []Record) {
	g, ok := e.cfg.Table.(flowGetter)
	if !ok {
		return
	}
	for n := range chunk {
		if chunk[n].Helper == "" {
			continue
		}
		if f, ok := g.get(chunk[n].Key()); ok {
			recs[n].Flow = f
		}
	}
}

// restoreExpects creates xs again, related to the new entries of their
// masters (those of flows whose renewal errs says succeeded), and returns
// how many were kept and lost. A master that had ended (the renewal
// created it and deleted it again) takes its expectations with it: not
// counted; neither is one the helper created again meanwhile.
func (e *Engine) restoreExpects(xs []Expect, flows []Flow, errs []error) (kept, lost int) {
	if len(xs) == 0 {
		return 0, 0
	}
	xt := e.cfg.Table.(ExpectTable) // expectsOf found xs in it
	done := map[Key]bool{}
	for i := range flows {
		done[flows[i].Key()] = errs[i] == nil
	}
	var recs []Record
	for i := range xs {
		if done[xs[i].Master] {
			recs = append(recs, Record{Op: OpUpsert, Expect: &xs[i]})
		}
	}
	for _, err := range xt.ApplyExpect(recs) {
		var ke *KernelError
		switch {
		case err == nil:
			kept++
		case errors.As(err, &ke) && (ke.Errno == syscall.ENOENT || ke.Errno == syscall.EEXIST):
		default:
			lost++
		}
	}
	return kept, lost
}
