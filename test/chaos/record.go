package chaos

import (
	"sort"
	"sync"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// Record is everything the observer and the nemesis saw, with wall-clock
// times taken in this process. The invariants are checked on it after the
// run (check.go), so that a record can also be built by hand in tests.
type Record struct {
	mu sync.Mutex

	Start, End time.Time
	Nodes      []string
	Interval   time.Duration // hb_interval
	Detect     time.Duration // hb_interval × hb_lost_threshold

	// Holds are the spans in which port1 of a node carried the vMAC, from
	// netlink (link events, and a poll that catches a missed event).
	Holds map[string][]Span
	// Faults as applied: Start before the fault was injected, End once it
	// was healed (a restarted agent answers its control socket).
	Faults []*FaultRec
	// Quiets are the gaps after each round: From when the round's last
	// fault was healed, To when the next round began (or the run ended).
	Quiets []Span
	Probe  []lab.Sample `json:"-"` // the client's 1 ms UDP probe of the cluster address
	GARPs  []GARP       // gratuitous ARPs entering the data switch, by the port they came in on
	RSTs   []RST        // TCP resets entering the data switch, by port
	Conns  ConnStats
	Reads  ReadStats
	Exits  []Exit
	Disk   []DiskReport
	// Stalls are the stretches in which the machine itself stalled: a
	// netlink change (rtnl, the lock every MAC and address change takes)
	// or this process's scheduling took longer than stallMin.
	Stalls []Stall
	// WritesOn counts the file writer's versions by the node written to.
	WritesOn map[string]int
	// Res are the witness's resources at the start and the end.
	Res [2]Resources
	// Synced is the result of the final check that every node ends with
	// the primary's copy of the synchronized file ("" when it does).
	Synced   string
	SyncedAt time.Time
}

// Span is a time interval; a zero To is open (still so at the end).
type Span struct{ From, To time.Time }

func (s Span) end(rec *Record) time.Time {
	switch {
	case !s.To.IsZero():
		return s.To
	case rec.End.IsZero(): // still running
		return time.Now().Add(time.Hour)
	}
	return rec.End
}

// FaultRec is one fault as the nemesis applied it.
type FaultRec struct {
	Fault
	Round   int
	Node    string // the node it hit
	Role    string // the node's role (vMAC holder or not) when it was hit
	Start   time.Time
	End     time.Time
	Skipped string // why it was not applied ("" applied)
	Note    string // what happened (exit status of a SIGTERM, reported disk error…)
}

// Stall is a stretch in which the machine did not do what it was asked
// in time.
type Stall struct {
	Span
	What string // "netlink" or "scheduler"
}

// GARP is a gratuitous ARP for the cluster address seen entering the
// data switch from a node's port.
type GARP struct {
	At   time.Time
	Node string
}

// RST is a TCP reset a node sent, seen entering a switch from its port:
// on the LAN (port1) towards the client, on the WAN (port2) towards the
// server (masquerade keeps the client's port when it is free).
type RST struct {
	At   time.Time
	Node string
	Side string // "lan" or "wan"
	Port int    // the client's end of the connection (LAN: destination, WAN: source port)
}

// ConnStats are the long-lived TCP connections' outcomes.
type ConnStats struct {
	Opened  int
	Echoes  int64
	Ends    []ConnEnd // connections that ended other than by the run's end
	Refused int       // dials that failed (no connection to account for)
}

// ConnEnd is a connection that broke.
type ConnEnd struct {
	ID     int
	Port   int // the client's local port
	Opened time.Time
	LastOK time.Time // last echo received
	At     time.Time // when the client saw the failure
	Why    string    // reset, closed, stall, error text
}

// ReadStats are the synced-file reader's and writer's results.
type ReadStats struct {
	Reads, Writes, WriteErrors int
	Bad                        []BadRead
}

// BadRead is a read of the synchronized file that was torn, unknown or
// missing.
type BadRead struct {
	At     time.Time
	Node   string
	Detail string
}

// Exit is an agent that exited.
type Exit struct {
	At       time.Time
	Node     string
	Err      string
	Expected bool // the nemesis caused it
}

// DiskReport is what became of one disk-full fault: whether the agent
// reported it (status) while it lasted.
type DiskReport struct {
	Fault    *FaultRec
	Pushed   bool          // the primary changed the file while the disk was full
	Reported bool          // the agent's status named the failure
	After    time.Duration // from the fault's start to the first report
	Detail   string
}

// Resources are the witness agent's RSS and goroutines.
type Resources struct {
	At         time.Time
	PID        int
	RSSKB      int64
	HeapMB     int // live heap after the last GC (GODEBUG=gctrace=1), -1 unknown
	Goroutines int
	RoleMoves  int // vMAC changes of hands so far
}

func (r *Record) lock() func() { r.mu.Lock(); return r.mu.Unlock }

func (r *Record) addFault(f *FaultRec) { defer r.lock()(); r.Faults = append(r.Faults, f) }
func (r *Record) addGARP(g GARP)       { defer r.lock()(); r.GARPs = append(r.GARPs, g) }
func (r *Record) addRST(x RST)         { defer r.lock()(); r.RSTs = append(r.RSTs, x) }
func (r *Record) addExit(e Exit)       { defer r.lock()(); r.Exits = append(r.Exits, e) }
func (r *Record) addBadRead(b BadRead) { defer r.lock()(); r.Reads.Bad = append(r.Reads.Bad, b) }
func (r *Record) addConnEnd(c ConnEnd) { defer r.lock()(); r.Conns.Ends = append(r.Conns.Ends, c) }

// hold records that node holds the vMAC (or not) as observed at t.
func (r *Record) hold(node string, holds bool, t time.Time) bool {
	defer r.lock()()
	if r.Holds == nil {
		r.Holds = map[string][]Span{}
	}
	sp := r.Holds[node]
	open := len(sp) > 0 && sp[len(sp)-1].To.IsZero()
	switch {
	case holds && !open:
		r.Holds[node] = append(sp, Span{From: t})
		return true
	case !holds && open:
		sp[len(sp)-1].To = t
		return true
	}
	return false
}

// holders returns the nodes that held the vMAC at t.
func (r *Record) holders(t time.Time) []string {
	var out []string
	for _, n := range r.Nodes {
		if r.heldAt(n, t) {
			out = append(out, n)
		}
	}
	return out
}

func (r *Record) heldAt(node string, t time.Time) bool {
	for _, s := range r.Holds[node] {
		if !t.Before(s.From) && t.Before(s.end(r)) {
			return true
		}
	}
	return false
}

// moves counts how often the vMAC was taken by a node.
func (r *Record) moves() int {
	defer r.lock()()
	n := 0
	for _, sp := range r.Holds {
		n += len(sp)
	}
	return n
}

// sortAll orders what was appended concurrently.
func (r *Record) sortAll() {
	sort.Slice(r.Faults, func(i, j int) bool { return r.Faults[i].Start.Before(r.Faults[j].Start) })
	sort.Slice(r.GARPs, func(i, j int) bool { return r.GARPs[i].At.Before(r.GARPs[j].At) })
	sort.Slice(r.Exits, func(i, j int) bool { return r.Exits[i].At.Before(r.Exits[j].At) })
	sort.Slice(r.Conns.Ends, func(i, j int) bool { return r.Conns.Ends[i].At.Before(r.Conns.Ends[j].At) })
	sort.Slice(r.Reads.Bad, func(i, j int) bool { return r.Reads.Bad[i].At.Before(r.Reads.Bad[j].At) })
}
