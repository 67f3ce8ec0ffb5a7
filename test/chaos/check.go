package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Bounds are the slack the timing invariants allow beyond the protocol's
// own bounds, for a loaded machine and the observer's own latency.
type Bounds struct {
	// Slack is added to "2 intervals" (two vMAC holders that hear each
	// other) and to "detection + 2 intervals" (convergence, client).
	Slack time.Duration
	// Observer: how much earlier or later than it happened this process
	// may timestamp an event (a MAC change, a GARP, a connection's reset
	// are seen by different goroutines of a loaded process).
	Observer time.Duration
	// RSS and goroutines of the witness at the end may exceed the start by
	// this much.
	RSSGrowthKB int64
	// HeapGrowthMB bounds the live heap after GC (when the log shows it).
	HeapGrowthMB int
	Goroutines   int
}

// Violation is one broken invariant.
type Violation struct {
	At     time.Time
	Detail string
	// Span is how long it lasted, for the ones that last (two vMAC
	// holders); zero for the others.
	Span Span
	// Excused names the machine stall that explains it (then it does not
	// fail the run).
	Excused string
	// NoExcuse: no machine stall can explain it (a reset is a state
	// error, not a delay).
	NoExcuse bool
	// Allow, with Span, is how much of Span the invariant allows: the
	// machine stalls within Span must add up to the rest to excuse it
	// (zero: 2 intervals + slack).
	Allow time.Duration
}

// Check is one invariant's outcome.
type Check struct {
	Name       string
	Rule       string // what it checks, one line
	Checked    int    // how many times it was evaluated (0: not exercised)
	Violations []Violation
	Excused    []Violation // explained by a measured machine stall
	Measured   string      // the figure behind it (worst case seen)
	Info       bool        // informational: its violations do not fail the run
}

// Invariant names.
const (
	InvDualVMAC = "dual-vmac"
	InvConverge = "one-primary"
	InvClient   = "client-answered"
	InvGARP     = "garp-from-winner"
	InvFile     = "synced-file-reads"
	InvSync     = "sync-converges"
	InvDisk     = "disk-full-reported"
	InvPickup   = "tcp-pickup"
	InvExits    = "agent-exits"
	InvLeak     = "rss-goroutines"
	InvSanity   = "workload-ran"
)

// Evaluate checks every invariant on the record.
func Evaluate(r *Record, b Bounds) []Check {
	r.sortAll()
	timing := []Check{checkDual(r, b), checkConverge(r, b), checkClient(r, b)}
	for i := range timing {
		excuse(r, b, &timing[i])
	}
	conns := checkPickup(r, b)
	excuse(r, b, &conns)
	return []Check{
		timing[0], timing[1], timing[2],
		checkGARP(r, b),
		checkReads(r),
		checkSync(r),
		checkDisk(r),
		conns,
		checkExits(r),
		checkLeak(r, b),
		checkSanity(r),
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// deaf returns the merged spans in which nodes x and y could not hear each
// other because of a fault: one of them dead, stopped, or off the hb
// switch (link down, frames dropped, partitioned away).
func deaf(r *Record, x, y string) []Span {
	var out []Span
	for _, f := range r.Faults {
		if f.Skipped != "" || !f.Kind.deafens() {
			continue
		}
		if f.Node == x || f.Node == y {
			out = append(out, Span{From: f.Start, To: f.End})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].From.Before(out[j].From) })
	var merged []Span
	for _, s := range out {
		if s.To.IsZero() {
			s.To = r.End
		}
		if n := len(merged); n > 0 && !s.From.After(merged[n-1].To) {
			if s.To.After(merged[n-1].To) {
				merged[n-1].To = s.To
			}
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

// hearing splits [from, to) into the stretches in which x and y heard
// each other.
func hearing(r *Record, x, y string, from, to time.Time) []Span {
	var out []Span
	cur := from
	for _, d := range deaf(r, x, y) {
		if !d.To.After(cur) {
			continue
		}
		if !d.From.Before(to) {
			break
		}
		if d.From.After(cur) {
			out = append(out, Span{From: cur, To: d.From})
		}
		cur = d.To
	}
	if cur.Before(to) {
		out = append(out, Span{From: cur, To: to})
	}
	return out
}

// checkDual: never two nodes holding the vMAC for longer than 2 intervals
// while they can hear each other.
func checkDual(r *Record, b Bounds) Check {
	limit := 2*r.Interval + b.Slack
	c := Check{Name: InvDualVMAC, Rule: fmt.Sprintf("two vMAC holders that hear each other for at most 2 intervals (+%s slack = %s)", b.Slack, limit)}
	var worst time.Duration
	for i, x := range r.Nodes {
		for _, y := range r.Nodes[i+1:] {
			for _, sx := range r.Holds[x] {
				for _, sy := range r.Holds[y] {
					from, to := later(sx.From, sy.From), earlier(sx.end(r), sy.end(r))
					if !to.After(from) {
						continue
					}
					for _, h := range hearing(r, x, y, from, to) {
						c.Checked++
						d := h.To.Sub(h.From)
						worst = max(worst, d)
						if d > limit {
							c.Violations = append(c.Violations, Violation{At: h.From.Add(limit), Span: h,
								Detail: fmt.Sprintf("%s and %s both held the vMAC for %s while hearing each other (from %s)", x, y, ms(d), clock(r, h.From))})
						}
					}
				}
			}
		}
	}
	c.Measured = "longest overlap while hearing " + ms(worst)
	return c
}

// convergeBound is the time after the last fault heals within which one
// primary must remain and the client must be answered.
func convergeBound(r *Record, b Bounds) time.Duration { return r.Detect + 2*r.Interval + b.Slack }

// quietChecks yields the quiet gaps long enough to check, with the time T
// at which the cluster must have converged.
func quietChecks(r *Record, b Bounds, fn func(q Span, t time.Time)) {
	bound := convergeBound(r, b)
	for _, q := range r.Quiets {
		t := q.From.Add(bound)
		if q.To.Before(t.Add(50 * time.Millisecond)) {
			continue // too short to tell (the next round started early)
		}
		fn(q, t)
	}
}

// checkConverge: once faults stop, exactly one node holds the vMAC within
// detection + 2 intervals, and it keeps it until the next round.
func checkConverge(r *Record, b Bounds) Check {
	bound := convergeBound(r, b)
	c := Check{Name: InvConverge, Rule: fmt.Sprintf("once faults stop, exactly one vMAC holder within detection + 2 intervals (+%s = %s), kept until the next round", b.Slack, bound)}
	var worst time.Duration
	quietChecks(r, b, func(q Span, t time.Time) {
		c.Checked++
		h := r.holders(t)
		if len(h) != 1 {
			c.Violations = append(c.Violations, Violation{At: t, Detail: fmt.Sprintf("%s after the faults stopped, the vMAC holders are %v", ms(bound), h)})
			return
		}
		settled := q.From
		for _, n := range r.Nodes {
			for _, s := range r.Holds[n] {
				for _, e := range []time.Time{s.From, s.To} {
					if e.After(q.From) && e.Before(q.To) {
						if e.After(t) {
							c.Violations = append(c.Violations, Violation{At: e, Detail: fmt.Sprintf("the vMAC moved (%s) %s after the faults stopped, in the quiet gap", n, ms(e.Sub(q.From)))})
						}
						settled = later(settled, e)
					}
				}
			}
		}
		worst = max(worst, settled.Sub(q.From))
	})
	c.Measured = "slowest convergence " + ms(worst)
	return c
}

// checkClient: once faults stop, the client is answered again within the
// same bound, and every probe after it is answered.
func checkClient(r *Record, b Bounds) Check {
	bound := convergeBound(r, b)
	c := Check{Name: InvClient, Rule: fmt.Sprintf("once faults stop, every 1 ms probe sent after %s is answered", bound)}
	var worst time.Duration
	quietChecks(r, b, func(q Span, t time.Time) {
		c.Checked++
		lost, first, last := 0, time.Time{}, time.Time{}
		i := sort.Search(len(r.Probe), func(i int) bool { return !r.Probe[i].Sent.Before(q.From) })
		for ; i < len(r.Probe) && r.Probe[i].Sent.Before(q.To); i++ {
			p := r.Probe[i]
			if p.Answered {
				continue
			}
			if p.Sent.Before(t) {
				worst = max(worst, p.Sent.Sub(q.From)+time.Millisecond)
				continue
			}
			if lost == 0 {
				first = p.Sent
			}
			last = p.Sent
			lost++
		}
		if lost > 0 {
			c.Violations = append(c.Violations, Violation{At: first, Detail: fmt.Sprintf("%d probes lost %s or more after the faults stopped (from %s to %s after; holders then %v)", lost, ms(bound), ms(first.Sub(q.From)), ms(last.Sub(q.From)), r.holders(first))})
		}
	})
	c.Measured = "latest loss after the faults stopped " + ms(worst)
	return c
}

// checkGARP: when another node held the vMAC since the last check (or the
// winner took it anew), the winner's GARP follows the last release.
func checkGARP(r *Record, b Bounds) Check {
	c := Check{Name: InvGARP, Rule: "after the vMAC was elsewhere, a GARP from the winner's port after the last other holder let go"}
	prev := r.Start
	var worst time.Duration
	quietChecks(r, b, func(q Span, t time.Time) {
		defer func() { prev = t }()
		h := r.holders(t)
		if len(h) != 1 {
			return // one-primary reports it
		}
		w := h[0]
		var need time.Time
		for _, n := range r.Nodes {
			for _, s := range r.Holds[n] {
				if n == w && !s.From.After(t) && s.end(r).After(t) && s.From.After(prev) {
					need = later(need, s.From)
				}
				if n != w && !s.To.IsZero() && s.To.After(prev) && !s.To.After(t) {
					need = later(need, s.To)
				}
			}
		}
		if need.IsZero() {
			return
		}
		c.Checked++
		for _, g := range r.GARPs {
			if g.Node == w && !g.At.Before(need.Add(-b.Observer)) && !g.At.After(t.Add(b.Observer)) {
				worst = max(worst, g.At.Sub(need))
				return
			}
		}
		c.Violations = append(c.Violations, Violation{At: t, Detail: fmt.Sprintf("no GARP from %s between %s (the vMAC was last elsewhere) and %s", w, clock(r, need), clock(r, t))})
	})
	c.Measured = "latest GARP after the last release " + ms(worst)
	return c
}

func checkReads(r *Record) Check {
	c := Check{Name: InvFile, Rule: "every read of the synced file on every node is a whole version the primary wrote",
		Checked: r.Reads.Reads, Measured: fmt.Sprintf("%d reads, %d versions written (%d write errors)", r.Reads.Reads, r.Reads.Writes, r.Reads.WriteErrors)}
	for _, x := range r.Reads.Bad {
		c.Violations = append(c.Violations, Violation{At: x.At, Detail: x.Node + ": " + x.Detail})
	}
	return c
}

func checkSync(r *Record) Check {
	c := Check{Name: InvSync, Rule: "after the run every node has the primary's copy of the synced file", Checked: 1}
	if r.Synced != "" {
		c.Violations = append(c.Violations, Violation{At: r.SyncedAt, Detail: r.Synced})
	}
	if !r.SyncedAt.IsZero() {
		c.Measured = "converged " + ms(r.SyncedAt.Sub(r.End)) + " after the run"
	}
	return c
}

func checkDisk(r *Record) Check {
	c := Check{Name: InvDisk, Rule: "a full disk on a secondary that gets a change is reported in its status (and it keeps running: agent-exits)"}
	var worst time.Duration
	for _, d := range r.Disk {
		if !d.Pushed {
			continue
		}
		c.Checked++
		if !d.Reported {
			c.Violations = append(c.Violations, Violation{At: d.Fault.End, Detail: fmt.Sprintf("%s: the disk was full for %s and the file changed, but its status never said so", d.Fault.Node, ms(d.Fault.End.Sub(d.Fault.Start)))})
			continue
		}
		worst = max(worst, d.After)
	}
	c.Measured = "slowest report " + ms(worst)
	return c
}

// Scopes of a broken connection: where tcp-pickup must hold.
const (
	// ScopeSingle: the faults around the break hit one node (or none):
	// session pickup must carry every connection. A violation.
	ScopeSingle = "single-node"
	// ScopeMulti: faults on two or more nodes around the break.
	ScopeMulti = "multi-node"
	// ScopeSplit: two nodes forwarded at once: both held the vMAC while
	// they could not hear each other and one of them, its agent running,
	// was cut from the hb network (hb-down, hb-loss, partition). Each
	// then sees part of a flow's packets (the switches learn the vMAC on
	// either port), so its conntrack entry goes out of window: no single
	// node failed, the pair's forwarding did.
	ScopeSplit = "split-brain"
	// ScopeUnsynced: the connection was opened through a node whose agent
	// was not running (killed, stopped with SIGSTOP or SIGTERM: its kernel
	// still held the vMAC and forwarded): no agent saw the flow, no copy
	// of it exists anywhere. Not a connection the fault interrupted.
	ScopeUnsynced = "opened-unsynced"
)

// faultTail is how long after a fault healed it still counts as the cause
// of a break: the cluster settles within the convergence bound (a
// restarted node takes the primary role back within it).
func faultTail(r *Record, b Bounds) time.Duration { return convergeBound(r, b) }

// connScope classifies a broken connection by the faults and the vMAC
// holders around it: from its last good echo to its failure.
func connScope(r *Record, b Bounds, e ConnEnd) (string, string) {
	from, to := e.LastOK.Add(-b.Observer), e.At.Add(b.Observer)
	tail := faultTail(r, b)
	nodes := map[string][]string{}
	var order []string
	for _, f := range around(r, to, to.Sub(from)+tail, 0) {
		if _, ok := nodes[f.Node]; !ok {
			order = append(order, f.Node)
		}
		nodes[f.Node] = append(nodes[f.Node], string(f.Kind))
	}
	var what []string
	for _, n := range order {
		what = append(what, n+" "+strings.Join(nodes[n], "+"))
	}
	desc := "no fault"
	if len(what) > 0 {
		desc = strings.Join(what, ", ")
	}
	if len(order) > 1 {
		return ScopeMulti, desc
	}
	for _, f := range r.Faults {
		if f.Skipped == "" && (f.Kind == Kill || f.Kind == Term || f.Kind == Stop) && !e.Opened.Before(f.Start) &&
			(f.End.IsZero() || e.Opened.Before(f.End)) && r.heldAt(f.Node, e.Opened) {
			return ScopeUnsynced, fmt.Sprintf("%s; opened at %s through %s, whose agent was down (%s)", desc, clock(r, e.Opened), f.Node, f.Kind)
		}
	}
	// A split brain: two holders, deaf to each other, one of them cut
	// from the hb network with its agent running.
	cut := func(n string, s Span) bool {
		for _, f := range r.Faults {
			if f.Skipped == "" && f.Node == n && (f.Kind == HBDown || f.Kind == HBLoss || f.Kind == Partition) {
				if f.Start.Before(s.To) && f.End.After(s.From) {
					return true
				}
			}
		}
		return false
	}
	// Its damage shows until the convergence bound after it ended: the
	// holder that stays had no copies of what the other forwarded.
	sfrom := from.Add(-tail)
	for i, x := range r.Nodes {
		for _, y := range r.Nodes[i+1:] {
			for _, sx := range r.Holds[x] {
				for _, sy := range r.Holds[y] {
					o := Span{From: later(later(sx.From, sy.From), sfrom), To: earlier(earlier(sx.end(r), sy.end(r)), to)}
					if !o.To.After(o.From) {
						continue
					}
					for _, d := range deaf(r, x, y) {
						dd := Span{From: later(d.From, o.From), To: earlier(d.To, o.To)}
						if dd.To.After(dd.From) && (cut(x, dd) || cut(y, dd)) {
							return ScopeSplit, fmt.Sprintf("%s; %s and %s both held the vMAC, deaf to each other, from %s", desc, x, y, clock(r, dd.From))
						}
					}
				}
			}
		}
	}
	return ScopeSingle, desc
}

// checkPickup: no long-lived connection through the pair (session pickup
// on) breaks by a single-node fault.
func checkPickup(r *Record, b Bounds) Check {
	c := Check{Name: InvPickup, Rule: fmt.Sprintf("no TCP connection through the pair (session pickup on) breaks (reset, closed, 3 s without its echo) while the faults from its last echo to its failure (+%s after each healed) hit at most one node; breaks during faults on two or more nodes, a split brain (two forwarding holders cut apart on the hb network) or of a connection opened through a node whose agent was down are counted, not violations", faultTail(r, b)),
		Checked: r.Conns.Opened}
	by := map[string]int{}
	why := map[string]int{}
	for _, e := range r.Conns.Ends {
		scope, desc := connScope(r, b, e)
		by[scope]++
		if scope != ScopeSingle {
			continue
		}
		why[e.Why]++
		var rst []string
		for _, x := range r.RSTs {
			if x.Port == e.Port && !x.At.Before(e.Opened) && !x.At.After(e.At.Add(b.Observer)) {
				rst = append(rst, fmt.Sprintf("%s's %s port at %s", x.Node, x.Side, clock(r, x.At)))
			}
		}
		from := "no reset from a node seen on the switches"
		if len(rst) > 0 {
			from = "resets from " + strings.Join(rst, ", ")
		}
		c.Violations = append(c.Violations, Violation{At: e.At, NoExcuse: e.Why != whyStalled,
			Span: Span{From: e.LastOK, To: e.At}, Allow: convergeBound(r, b), Detail: fmt.Sprintf("connection %d (client port %d, open since %s, last echo %s) %s during a single-node fault (%s; vMAC holders then %v); %s",
				e.ID, e.Port, clock(r, e.Opened), clock(r, e.LastOK), e.Why, desc, r.holders(e.At), from)})
	}
	c.Measured = fmt.Sprintf("%d opened, %d echoes, %d broke: %d by a single-node fault, %d during faults on several nodes, %d in a split brain, %d opened through a node whose agent was down", r.Conns.Opened, r.Conns.Echoes, len(r.Conns.Ends), by[ScopeSingle], by[ScopeMulti], by[ScopeSplit], by[ScopeUnsynced])
	return c
}

func checkExits(r *Record) Check {
	c := Check{Name: InvExits, Rule: "no agent exits unless the nemesis killed it; SIGTERM exits 0"}
	for _, e := range r.Exits {
		c.Checked++
		if !e.Expected {
			c.Violations = append(c.Violations, Violation{At: e.At, Detail: fmt.Sprintf("%s exited: %s", e.Node, e.Err)})
		}
	}
	c.Measured = fmt.Sprintf("%d exits, all of them the nemesis's", len(r.Exits)-len(c.Violations))
	return c
}

func checkLeak(r *Record, b Bounds) Check {
	s, e := r.Res[0], r.Res[1]
	c := Check{Name: InvLeak, Rule: fmt.Sprintf("the witness (never restarted) ends within +%d MiB RSS, +%d MB live heap and +%d goroutines of its start", b.RSSGrowthKB>>10, b.HeapGrowthMB, b.Goroutines)}
	if s.PID == 0 || e.PID == 0 {
		c.Measured = "not measured"
		return c
	}
	c.Checked = 1
	c.Measured = fmt.Sprintf("RSS %d → %d kB, live heap %d → %d MB, goroutines %d → %d, over %d vMAC moves", s.RSSKB, e.RSSKB, s.HeapMB, e.HeapMB, s.Goroutines, e.Goroutines, e.RoleMoves-s.RoleMoves)
	switch {
	case s.PID != e.PID:
		c.Violations = append(c.Violations, Violation{At: e.At, Detail: fmt.Sprintf("the witness was restarted (pid %d → %d)", s.PID, e.PID)})
	case e.RSSKB > s.RSSKB+b.RSSGrowthKB:
		c.Violations = append(c.Violations, Violation{At: e.At, Detail: fmt.Sprintf("RSS grew from %d kB to %d kB", s.RSSKB, e.RSSKB)})
	case b.HeapGrowthMB > 0 && s.HeapMB >= 0 && e.HeapMB > s.HeapMB+b.HeapGrowthMB:
		c.Violations = append(c.Violations, Violation{At: e.At, Detail: fmt.Sprintf("live heap grew from %d MB to %d MB", s.HeapMB, e.HeapMB)})
	case e.Goroutines > s.Goroutines+b.Goroutines:
		c.Violations = append(c.Violations, Violation{At: e.At, Detail: fmt.Sprintf("goroutines grew from %d to %d", s.Goroutines, e.Goroutines)})
	}
	return c
}

// checkSanity fails a campaign that did not exercise anything.
func checkSanity(r *Record) Check {
	c := Check{Name: InvSanity, Rule: "faults were applied and the workloads ran (no vacuous pass)", Checked: 1}
	applied := 0
	for _, f := range r.Faults {
		if f.Skipped == "" {
			applied++
		}
	}
	answered := 0
	for _, p := range r.Probe {
		if p.Answered {
			answered++
		}
	}
	var missing []string
	if applied == 0 {
		missing = append(missing, "no fault applied")
	}
	if answered == 0 {
		missing = append(missing, "no probe answered")
	}
	if r.Reads.Reads == 0 || r.Reads.Writes == 0 {
		missing = append(missing, "the synced file was not read or written")
	}
	if r.Conns.Echoes == 0 {
		missing = append(missing, "no TCP echo")
	}
	if len(missing) > 0 {
		c.Violations = append(c.Violations, Violation{At: r.End, Detail: fmt.Sprint(missing)})
	}
	c.Measured = fmt.Sprintf("%d faults applied, %d of %d probes answered", applied, answered, len(r.Probe))
	return c
}

// excuse moves the violations that a measured machine stall explains to
// c.Excused: a lasting one (two vMAC holders; a connection's silence)
// when the stalls within it add up to at least its excess over the limit
// (Allow, or 2 intervals + slack); a point one when a stall
// overlaps the convergence bound before it (a stall that long makes a
// peer miss the lost threshold, or delays a release or a takeover).
func excuse(r *Record, b Bounds, c *Check) {
	limit := 2*r.Interval + b.Slack
	window := convergeBound(r, b)
	var keep []Violation
	for _, v := range c.Violations {
		if v.NoExcuse {
			keep = append(keep, v)
			continue
		}
		from, to, need := v.At.Add(-window), v.At, time.Duration(1)
		if !v.Span.From.IsZero() {
			allow := limit
			if v.Allow > 0 {
				allow = v.Allow
			}
			from, to, need = v.Span.From, v.Span.To, v.Span.To.Sub(v.Span.From)-allow
		}
		var got time.Duration
		var what []string
		for _, st := range r.Stalls {
			a, z := later(st.From, from), earlier(st.To, to)
			if z.After(a) {
				got += z.Sub(a)
				what = append(what, fmt.Sprintf("%s %s at %s", st.What, ms(st.To.Sub(st.From)), clock(r, st.From)))
			}
		}
		if got >= need && len(what) > 0 {
			v.Excused = "machine stall: " + strings.Join(what, ", ")
			c.Excused = append(c.Excused, v)
			continue
		}
		keep = append(keep, v)
	}
	c.Violations = keep
}

// around returns the faults active within [t-before, t+after].
func around(r *Record, t time.Time, before, after time.Duration) []*FaultRec {
	var out []*FaultRec
	for _, f := range r.Faults {
		if f.Skipped != "" {
			continue
		}
		end := f.End
		if end.IsZero() {
			end = r.End
		}
		if f.Start.Before(t.Add(after)) && end.After(t.Add(-before)) {
			out = append(out, f)
		}
	}
	return out
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// clock prints t as seconds since the start of the run.
func clock(r *Record, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("+%.3fs", t.Sub(r.Start).Seconds())
}

// Failed reports whether any non-informational check has violations.
func Failed(cs []Check) bool {
	return slices.ContainsFunc(cs, func(c Check) bool { return !c.Info && len(c.Violations) > 0 })
}
