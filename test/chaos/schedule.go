package chaos

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Kind is one kind of fault the nemesis injects.
type Kind string

// The faults. Process faults (kill, term, stop, reload) take the node's
// process lock: at most one of them per node at a time.
const (
	Kill      Kind = "kill"      // SIGKILL, down for Dur, restart
	Term      Kind = "term"      // SIGTERM (must exit 0), down for Dur, restart
	Stop      Kind = "stop"      // SIGSTOP for Dur (1–5 detection times), SIGCONT
	HBDown    Kind = "hb-down"   // the node's ha1 down for Dur
	HBLoss    Kind = "hb-loss"   // Pct % of the node's 0x8890/0x8893 frames dropped on the hb switch for Dur
	Partition Kind = "partition" // the node cut from the others on the hb switch for Dur; the data switch stays
	DataFlap  Kind = "data-flap" // the node's port1 (monitored) down for Dur
	Reload    Kind = "reload"    // node.priority changed to Priority, SIGHUP
	DiskFull  Kind = "disk-full" // the file system under the node's sync path full for Dur
)

// Kinds lists every kind, in the order of the summary.
var Kinds = []Kind{Kill, Term, Stop, HBDown, HBLoss, Partition, DataFlap, Reload, DiskFull}

func (k Kind) process() bool { return k == Kill || k == Term || k == Stop || k == Reload }

// deafens reports whether the fault, while active, keeps its node from
// hearing the others (and them from hearing it).
func (k Kind) deafens() bool {
	switch k {
	case Kill, Term, Stop, HBDown, HBLoss, Partition:
		return true
	}
	return false
}

// Target names the node a fault hits: a role, resolved from the facts
// when the fault starts (the node holding the vMAC, or one that does not),
// or a fixed node.
type Target struct {
	Role string // "primary", "secondary" or "" (Node)
	Node int    // index into the node list when Role is ""
}

func (t Target) String() string {
	if t.Role != "" {
		return "the " + t.Role
	}
	return fmt.Sprintf("node #%d", t.Node)
}

// Fault is one scheduled fault, relative to the start of its round.
type Fault struct {
	Kind     Kind
	Target   Target
	Offset   time.Duration // after the round's start
	Dur      time.Duration // how long it lasts (down time for kill and term)
	Pct      int           // hb-loss: percentage dropped
	Priority int           // reload: the new node.priority
}

func (f Fault) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "+%-6s %-9s %s", f.Offset.Round(time.Millisecond), f.Kind, f.Target)
	if f.Dur > 0 {
		fmt.Fprintf(&b, " for %s", f.Dur.Round(time.Millisecond))
	}
	if f.Kind == HBLoss {
		fmt.Fprintf(&b, " at %d%%", f.Pct)
	}
	if f.Kind == Reload {
		fmt.Fprintf(&b, " priority %d", f.Priority)
	}
	return b.String()
}

// Round is a burst of overlapping faults, then a quiet gap in which the
// cluster must converge. The quiet gap is counted from the moment the
// last fault of the burst was healed.
type Round struct {
	Faults []Fault
	Quiet  time.Duration
}

// End is when the round's last fault is scheduled to end, after its start.
func (r Round) End() time.Duration {
	var end time.Duration
	for _, f := range r.Faults {
		end = max(end, f.Offset+f.Dur)
	}
	return end
}

// Schedule is the whole campaign, generated from the seed before it
// starts: the same seed and duration give the same schedule.
type Schedule struct {
	Seed     int64
	Duration time.Duration
	Rounds   []Round
}

// Faults counts the scheduled faults.
func (s Schedule) Faults() int {
	n := 0
	for _, r := range s.Rounds {
		n += len(r.Faults)
	}
	return n
}

// Shape bounds what Generate produces.
type Shape struct {
	Nodes   int           // cluster size
	Witness int           // index of the node never killed or stopped by SIGTERM (the leak witness)
	Detect  time.Duration // hb_interval × hb_lost_threshold (SIGSTOP lasts 1–5 of these)
	// MaxFaults is the most faults in one round (they overlap).
	MaxFaults int
	// Quiet is the range of the quiet gap after each round.
	QuietMin, QuietMax time.Duration
}

// Generate makes the schedule for seed: rounds until their scheduled time
// reaches d. The rounds of a shorter campaign are a prefix of a longer
// one's with the same seed.
func Generate(seed int64, d time.Duration, sh Shape) Schedule {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6861676e74)) // "hagnt"
	s := Schedule{Seed: seed, Duration: d}
	between := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	var total time.Duration
	for total < d {
		var r Round
		n := 1 + rng.IntN(sh.MaxFaults)
		for i := 0; i < n; i++ {
			f := Fault{Kind: Kinds[rng.IntN(len(Kinds))], Offset: between(0, 2*time.Second)}
			f.Target = target(rng, f.Kind, sh)
			switch f.Kind {
			case Kill, Term:
				f.Dur = between(200*time.Millisecond, 2*time.Second)
			case Stop:
				f.Dur = sh.Detect * time.Duration(1+rng.IntN(5))
			case HBDown:
				f.Dur = between(300*time.Millisecond, 3*time.Second)
			case HBLoss:
				f.Dur = between(time.Second, 5*time.Second)
				f.Pct = 10 + rng.IntN(51)
			case Partition:
				f.Dur = between(500*time.Millisecond, 3*time.Second)
			case DataFlap:
				f.Dur = between(50*time.Millisecond, 1500*time.Millisecond)
			case Reload:
				f.Priority = 10 + rng.IntN(241)
			case DiskFull:
				f.Dur = between(2*time.Second, 6*time.Second)
			}
			r.Faults = append(r.Faults, f)
		}
		r.Quiet = between(sh.QuietMin, sh.QuietMax)
		s.Rounds = append(s.Rounds, r)
		total += r.End() + r.Quiet
	}
	return s
}

// target picks whom a fault hits: often the primary (where faults hurt),
// sometimes a secondary, sometimes a fixed node. Kill and term never
// pick the witness by name; when the primary is the witness, the nemesis
// skips them.
func target(rng *rand.Rand, k Kind, sh Shape) Target {
	if k == DiskFull {
		return Target{Role: "secondary"}
	}
	x := rng.IntN(10)
	switch {
	case x < 5:
		return Target{Role: "primary"}
	case x < 7:
		return Target{Role: "secondary"}
	}
	n := rng.IntN(sh.Nodes)
	if (k == Kill || k == Term) && n == sh.Witness {
		n = (n + 1) % sh.Nodes
	}
	return Target{Node: n}
}
