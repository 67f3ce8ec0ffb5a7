package chaos

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

var testShape = Shape{Nodes: 3, Witness: 2, Detect: 600 * time.Millisecond, MaxFaults: 4,
	QuietMin: 2 * time.Second, QuietMax: 4 * time.Second}

func TestGenerateReplays(t *testing.T) {
	a, b := Generate(42, 10*time.Minute, testShape), Generate(42, 10*time.Minute, testShape)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed gave two schedules")
	}
	short := Generate(42, time.Minute, testShape)
	if !reflect.DeepEqual(short.Rounds, a.Rounds[:len(short.Rounds)]) {
		t.Fatal("a 1-minute schedule is not a prefix of the 10-minute one")
	}
	if reflect.DeepEqual(Generate(43, time.Minute, testShape).Rounds, short.Rounds) {
		t.Fatal("seeds 42 and 43 gave the same schedule")
	}
	for _, r := range a.Rounds {
		if len(r.Faults) == 0 || len(r.Faults) > testShape.MaxFaults || r.Quiet < testShape.QuietMin || r.Quiet > testShape.QuietMax {
			t.Fatalf("round out of shape: %+v", r)
		}
		for _, f := range r.Faults {
			if (f.Kind == Kill || f.Kind == Term) && f.Target.Role == "" && f.Target.Node == testShape.Witness {
				t.Fatalf("%s aimed at the witness: %v", f.Kind, f)
			}
			if f.Kind == Stop && (f.Dur < testShape.Detect || f.Dur > 5*testShape.Detect) {
				t.Fatalf("SIGSTOP for %v, want 1-5 detection times", f.Dur)
			}
			if f.Kind == HBLoss && (f.Pct < 10 || f.Pct > 60) {
				t.Fatalf("loss %d%%", f.Pct)
			}
		}
	}
}

func TestTestSeedCoversEveryFault(t *testing.T) {
	seen := map[Kind]bool{}
	for _, r := range Generate(testSeed, time.Minute, testShape).Rounds {
		for _, f := range r.Faults {
			seen[f.Kind] = true
		}
	}
	for _, k := range Kinds {
		if !seen[k] {
			t.Errorf("the make test seed %d has no %s in its first minute", testSeed, k)
		}
	}
}

// rec builds a record of 10 s with the given holds (seconds from t0).
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func testRecord() *Record {
	return &Record{Start: t0, End: at(10), Nodes: []string{"a", "b", "c"}, Interval: 100 * time.Millisecond,
		Detect: 600 * time.Millisecond, Holds: map[string][]Span{},
		Reads: ReadStats{Reads: 1, Writes: 1}, Conns: ConnStats{Opened: 1, Echoes: 1}}
}

var testBounds = Bounds{Slack: 300 * time.Millisecond, Observer: 100 * time.Millisecond, RSSGrowthKB: 8 << 10, Goroutines: 20}

func find(cs []Check, name string) Check {
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	return Check{}
}

func TestCheckDualVMAC(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults []*FaultRec
		bHold  Span
		want   int
	}{
		{"overlap while hearing", nil, Span{at(2), at(3)}, 1},
		{"short overlap", nil, Span{at(2), at(2.3)}, 0},
		{"partitioned", []*FaultRec{{Fault: Fault{Kind: Partition}, Node: "b", Start: at(1.9), End: at(2.9)}}, Span{at(2), at(3)}, 0},
		{"partition healed, still both", []*FaultRec{{Fault: Fault{Kind: Partition}, Node: "b", Start: at(1.9), End: at(2.2)}}, Span{at(2), at(3)}, 1},
		{"a data flap does not deafen", []*FaultRec{{Fault: Fault{Kind: DataFlap}, Node: "b", Start: at(1.9), End: at(2.9)}}, Span{at(2), at(3)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testRecord()
			r.Holds["a"] = []Span{{From: at(0)}}
			r.Holds["b"] = []Span{tc.bHold}
			r.Faults = tc.faults
			if got := find(Evaluate(r, testBounds), InvDualVMAC); len(got.Violations) != tc.want {
				t.Errorf("%d violations, want %d: %+v", len(got.Violations), tc.want, got.Violations)
			}
		})
	}
}

func TestCheckQuiet(t *testing.T) {
	base := func() *Record {
		r := testRecord()
		r.Holds["a"] = []Span{{From: at(0), To: at(2)}, {From: at(3.1)}}
		r.Holds["b"] = []Span{{From: at(2.05), To: at(3.05)}}
		r.Faults = []*FaultRec{{Fault: Fault{Kind: Kill}, Node: "a", Start: at(2), End: at(3)}}
		r.Quiets = []Span{{From: at(3), To: at(6)}}
		r.GARPs = []GARP{{At: at(3.11), Node: "a"}}
		for ts := 0.0; ts < 10; ts += 0.001 {
			r.Probe = append(r.Probe, lab.Sample{Sent: at(ts), Answered: ts < 2 || ts > 3.2})
		}
		return r
	}
	if cs := Evaluate(base(), testBounds); Failed(cs) {
		t.Fatalf("a clean failover and return fails: %+v", cs)
	}
	r := base()
	r.GARPs = []GARP{{At: at(2.06), Node: "b"}, {At: at(0.5), Node: "a"}}
	if c := find(Evaluate(r, testBounds), InvGARP); len(c.Violations) != 1 {
		t.Errorf("no GARP from the returning a: %+v", c)
	}
	r = base()
	r.Holds["b"] = []Span{{From: at(2.05)}} // b never lets go
	cs := Evaluate(r, testBounds)
	if c := find(cs, InvConverge); len(c.Violations) != 1 {
		t.Errorf("two holders after the quiet bound: %+v", c)
	}
	if c := find(cs, InvDualVMAC); len(c.Violations) != 1 {
		t.Errorf("two holders that hear each other: %+v", c)
	}
	r = base()
	for i := range r.Probe {
		if s := r.Probe[i].Sent; s.After(at(4.5)) && s.Before(at(4.52)) {
			r.Probe[i].Answered = false
		}
	}
	if c := find(Evaluate(r, testBounds), InvClient); len(c.Violations) != 1 {
		t.Errorf("20 ms of loss 1.5 s after the faults stopped: %+v", c)
	}
	// A machine stall as long as the excess explains two holders.
	r = base()
	r.Holds["b"] = []Span{{From: at(2.05), To: at(4.5)}}
	r.Holds["a"] = []Span{{From: at(0), To: at(2)}, {From: at(3.1)}}
	r.Stalls = []Stall{{Span: Span{From: at(3.2), To: at(4.4)}, What: "netlink"}}
	c := find(Evaluate(r, testBounds), InvDualVMAC)
	if len(c.Violations) != 0 || len(c.Excused) != 1 {
		t.Errorf("a 1.2 s netlink stall and 1.4 s of two holders: %+v", c)
	}
	r.Stalls = []Stall{{Span: Span{From: at(3.2), To: at(3.3)}, What: "netlink"}}
	if c := find(Evaluate(r, testBounds), InvDualVMAC); len(c.Violations) != 1 {
		t.Errorf("a 100 ms stall does not explain 1.4 s: %+v", c)
	}
}

func TestCheckPickup(t *testing.T) {
	r := testRecord()
	r.Holds["a"] = []Span{{From: at(0), To: at(2.1)}, {From: at(8)}}
	r.Holds["b"] = []Span{{From: at(2.05), To: at(8.01)}}
	r.Holds["c"] = []Span{{From: at(6), To: at(7.5)}}
	r.Faults = []*FaultRec{
		{Fault: Fault{Kind: Kill}, Node: "a", Start: at(2), End: at(2.5)},        // a single-node fault
		{Fault: Fault{Kind: Stop}, Node: "a", Start: at(4), End: at(4.5)},        // two nodes at once…
		{Fault: Fault{Kind: DataFlap}, Node: "b", Start: at(4.2), End: at(4.3)},  // …with this one
		{Fault: Fault{Kind: Partition}, Node: "c", Start: at(5.9), End: at(7.4)}, // c takes the vMAC beside b
		{Fault: Fault{Kind: Kill}, Node: "b", Start: at(9), End: at(9.5), Skipped: "busy"},
	}
	r.Conns.Opened = 10
	r.Conns.Echoes = 100
	conn := func(id int, lastOK, failed float64) ConnEnd {
		return ConnEnd{ID: id, Port: 4000 + id, Opened: at(0.5), LastOK: at(lastOK), At: at(failed), Why: "reset"}
	}
	r.Conns.Ends = []ConnEnd{
		conn(1, 2.0, 2.2),  // during the kill: a violation
		conn(2, 3.5, 3.55), // 1 s after the kill healed: still its tail (1.1 s)
		conn(3, 4.1, 4.25), // kill of a, flap of b: multi-node
		conn(4, 6.5, 6.6),  // split brain b/c
		conn(7, 7.6, 7.7),  // after it (b had no copies of what c forwarded)
		conn(5, 9.2, 9.3),  // nothing applied: a violation
		{ID: 6, Port: 4006, Opened: at(2.05), LastOK: at(2.05), At: at(3.5), Why: whyStalled}, // opened through the killed a
	}
	r.RSTs = []RST{{At: at(2.19), Node: "b", Side: "wan", Port: 4001}}
	c := find(Evaluate(r, testBounds), InvPickup)
	var ids []string
	for _, v := range c.Violations {
		ids = append(ids, v.Detail[:len("connection 1")])
	}
	if len(c.Violations) != 3 || ids[0] != "connection 1" || ids[1] != "connection 2" || ids[2] != "connection 5" {
		t.Errorf("violations %v, want connections 1, 2, 5: %+v", ids, c)
	}
	if len(c.Violations) > 0 && !strings.Contains(c.Violations[0].Detail, "b's wan port") {
		t.Errorf("the reset's origin is not named: %s", c.Violations[0].Detail)
	}
	if !strings.Contains(c.Measured, "1 during faults on several nodes, 2 in a split brain, 1 opened through a node whose agent was down") {
		t.Errorf("measured %q", c.Measured)
	}
	// A split brain needs a node cut from the hb network: two holders
	// while one is SIGSTOPped (its kernel forwards alone) is single-node.
	r.Faults[3].Kind = Stop
	if c := find(Evaluate(r, testBounds), InvPickup); len(c.Violations) != 5 {
		t.Errorf("a stopped agent's kernel beside the new primary: %d violations, want 5", len(c.Violations))
	}
}

func TestFileContent(t *testing.T) {
	for _, v := range []int{1, 2, 77, 4096} {
		b := fileContent(v)
		if got, err := checkFile(b); err != nil || got != v {
			t.Fatalf("version %d read back as %d, %v", v, got, err)
		}
		if _, err := checkFile(b[:len(b)/2]); err == nil {
			t.Fatalf("half of version %d passed", v)
		}
		mix := append(append([]byte(nil), fileContent(v + 1)[:100]...), b[100:]...)
		if _, err := checkFile(mix); err == nil {
			t.Fatalf("a mix of versions %d and %d passed", v, v+1)
		}
	}
}

func TestReportPrintsTheSeed(t *testing.T) {
	r := testRecord()
	r.Faults = []*FaultRec{{Fault: Fault{Kind: Kill, Dur: time.Second}, Round: 1, Node: "a", Role: "primary", Start: at(1), End: at(2)}}
	var b bytes.Buffer
	Report(&b, Config{Seed: 99, Duration: time.Minute, Threshold: 6}, &Result{Record: r, Checks: Evaluate(r, testBounds)})
	for _, want := range []string{"seed 99", "make chaos SEED=99 DURATION=1m0s", "kill      a (primary)", "| dual-vmac |", "result: FAIL"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

func TestLongestLoss(t *testing.T) {
	var s []lab.Sample
	add := func(ms float64, ok bool) { s = append(s, lab.Sample{Sent: at(ms / 1000), Answered: ok}) }
	for i := 0; i < 10; i++ {
		add(float64(i), true)
	}
	add(10, false) // one probe lost, then the prober slept 7 ms
	add(17, true)
	add(18, false) // three lost in a row: a real 3 ms loss
	add(19, false)
	add(20, false)
	add(21, true)
	x := longestLoss(s, at(0), at(1))
	if x.Span != 7*time.Millisecond || x.Lost != 1 || x.SendGap != 7*time.Millisecond || !x.probeLimited(time.Millisecond) {
		t.Errorf("the prober's own gap: %+v", x)
	}
	x = longestLoss(s, at(0.0175), at(1))
	if x.Span != 3*time.Millisecond || x.Lost != 3 || x.probeLimited(time.Millisecond) {
		t.Errorf("a real loss: %+v", x)
	}
}

// A machine stall may explain a connection that stalled, never one that
// was reset.
func TestCheckPickupStallExcuse(t *testing.T) {
	r := testRecord()
	r.Holds["a"] = []Span{{From: at(0)}}
	r.Conns.Ends = []ConnEnd{
		{ID: 1, Opened: at(0.5), LastOK: at(2), At: at(5), Why: whyStalled},
		{ID: 2, Opened: at(0.5), LastOK: at(4.9), At: at(5), Why: "reset"},
	}
	// 3 s of silence, 1.1 s allowed (detection + 2 intervals + slack):
	// stalls must add up to 1.9 s.
	r.Stalls = []Stall{{Span: Span{From: at(2.5), To: at(4.8)}, What: "netlink"}}
	c := find(Evaluate(r, testBounds), InvPickup)
	if len(c.Excused) != 1 || len(c.Violations) != 1 || !strings.Contains(c.Violations[0].Detail, "connection 2") {
		t.Errorf("excused %+v, violations %+v", c.Excused, c.Violations)
	}
	r.Stalls = []Stall{{Span: Span{From: at(4.5), To: at(4.8)}, What: "netlink"}}
	if c := find(Evaluate(r, testBounds), InvPickup); len(c.Excused) != 0 || len(c.Violations) != 2 {
		t.Errorf("a 300 ms stall excused 3 s of silence: excused %+v", c.Excused)
	}
}

func TestLastHeap(t *testing.T) {
	log := filepath.Join(t.TempDir(), "hagentd.log")
	if err := os.WriteFile(log, []byte("2026 [INFO] hagentd: starting\n"+
		"gc 1 @0.012s 1%: 0.010+0.52+0.002 ms clock, 0.020+0.10/0.40/0+0.004 ms cpu, 3->4->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P\n"+
		"2026 [INFO] hagentd: took over\n"+
		"gc 2 @5.100s 1%: 0.010+0.52+0.002 ms clock, 0.020+0.10/0.40/0+0.004 ms cpu, 14->15->7 MB, 16 MB goal, 0 MB stacks, 0 MB globals, 2 P\n"+
		"2026 [INFO] hagentd: released\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := lastHeap(log); got != 7 {
		t.Errorf("lastHeap = %d, want 7", got)
	}
	if got := lastHeap(log + ".none"); got != -1 {
		t.Errorf("no log: %d", got)
	}
}

func TestCheckLeak(t *testing.T) {
	b := testBounds
	b.HeapGrowthMB = 8
	for _, tc := range []struct {
		name       string
		start, end Resources
		want       int
	}{
		{"flat", Resources{PID: 1, RSSKB: 50000, HeapMB: 3, Goroutines: 25}, Resources{PID: 1, RSSKB: 55000, HeapMB: 4, Goroutines: 25}, 0},
		{"heap leak", Resources{PID: 1, RSSKB: 50000, HeapMB: 3, Goroutines: 25}, Resources{PID: 1, RSSKB: 55000, HeapMB: 12, Goroutines: 25}, 1},
		{"heap unknown", Resources{PID: 1, RSSKB: 50000, HeapMB: -1, Goroutines: 25}, Resources{PID: 1, RSSKB: 55000, HeapMB: 30, Goroutines: 25}, 0},
		{"rss", Resources{PID: 1, RSSKB: 50000, HeapMB: 3}, Resources{PID: 1, RSSKB: 60000, HeapMB: 3}, 1},
		{"goroutines", Resources{PID: 1, Goroutines: 25}, Resources{PID: 1, Goroutines: 60}, 1},
		{"restarted", Resources{PID: 1}, Resources{PID: 2}, 1},
	} {
		r := testRecord()
		r.Res = [2]Resources{tc.start, tc.end}
		if c := checkLeak(r, b); len(c.Violations) != tc.want {
			t.Errorf("%s: %d violations, want %d: %+v", tc.name, len(c.Violations), tc.want, c)
		}
	}
}
