package deferq

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// step is one operation on a queue at a time offset (ms) and the verdicts
// it must give, written "id:why ...".
type step struct {
	at   int    // ms from the start
	op   string // "hold ID FLOW", "ack FLOW", "expire", "flush"
	want string // verdicts, or for hold "held"/"bypass"
}

func run(t *testing.T, cfg Config, steps []step) *Queue[string] {
	t.Helper()
	q := New[string](cfg)
	t0 := time.Unix(1000, 0)
	for i, s := range steps {
		now := t0.Add(time.Duration(s.at) * time.Millisecond)
		f := strings.Fields(s.op)
		var got string
		switch f[0] {
		case "hold":
			var id uint32
			fmt.Sscan(f[1], &id)
			got = "bypass"
			if q.Hold(now, id, f[2]) {
				got = "held"
			}
		case "ack":
			got = verdicts(q.Ack(now, f[1], nil))
		case "expire":
			got = verdicts(q.Expire(now, nil))
		case "flush":
			got = verdicts(q.Flush(now, nil))
		}
		if got != s.want {
			t.Fatalf("step %d (%dms %s): got %q, want %q", i, s.at, s.op, got, s.want)
		}
	}
	return q
}

func verdicts(vs []Verdict) string {
	var b []string
	for _, v := range vs {
		b = append(b, fmt.Sprintf("%d:%s", v.ID, v.Why))
	}
	return strings.Join(b, " ")
}

// TestQueue: packets of a flow are let go in arrival order, all at once,
// when the flow is acknowledged or when its first packet has waited Max;
// a full flow or queue lets packets pass unheld; acknowledgements of
// unknown or released flows do nothing.
func TestQueue(t *testing.T) {
	cfg := Config{Max: 20 * time.Millisecond, PerFlow: 3, Total: 5}
	tests := []struct {
		name  string
		cfg   Config
		steps []step
		stats Stats
	}{
		{"ack releases in order", cfg, []step{
			{0, "hold 1 a", "held"},
			{1, "hold 2 b", "held"},
			{2, "hold 3 a", "held"},
			{3, "hold 4 a", "held"},
			{5, "ack a", "1:acked 3:acked 4:acked"},
			{6, "ack a", ""}, // released already
			{6, "ack x", ""}, // unknown
			{19, "expire", ""},
			{21, "expire", "2:timeout"},
			{22, "expire", ""},
		}, Stats{Held: 4, Acked: 3, TimedOut: 1}},
		{"timeout at the first packet's deadline, followers too", cfg, []step{
			{0, "hold 1 a", "held"},
			{15, "hold 2 a", "held"},
			{19, "expire", ""},
			{20, "expire", "1:timeout 2:timeout"},
			{21, "ack a", ""},
		}, Stats{Held: 2, TimedOut: 2}},
		{"expire in deadline order", cfg, []step{
			{0, "hold 1 a", "held"},
			{5, "hold 2 b", "held"},
			{10, "hold 3 c", "held"},
			{26, "expire", "1:timeout 2:timeout"},
			{30, "expire", "3:timeout"},
		}, Stats{Held: 3, TimedOut: 3}},
		{"per-flow bound: the fourth passes unheld", cfg, []step{
			{0, "hold 1 a", "held"},
			{0, "hold 2 a", "held"},
			{0, "hold 3 a", "held"},
			{0, "hold 4 a", "bypass"},
			{0, "hold 5 b", "held"},
			{1, "ack a", "1:acked 2:acked 3:acked"},
			{1, "hold 6 a", "held"}, // a new hold of the same flow
			{2, "ack a", "6:acked"},
		}, Stats{Held: 5, Acked: 4, Bypassed: 1, Holding: 1}},
		{"total bound", cfg, []step{
			{0, "hold 1 a", "held"},
			{0, "hold 2 b", "held"},
			{0, "hold 3 c", "held"},
			{0, "hold 4 d", "held"},
			{0, "hold 5 e", "held"},
			{0, "hold 6 f", "bypass"},
			{0, "hold 7 a", "bypass"},
			{1, "ack c", "3:acked"},
			{1, "hold 8 f", "held"},
		}, Stats{Held: 6, Acked: 1, Bypassed: 2, Holding: 5}},
		{"held again after an ack: a new deadline, the old entry skipped", cfg, []step{
			{0, "hold 1 a", "held"},
			{1, "ack a", "1:acked"},
			{10, "hold 2 a", "held"},
			{11, "hold 3 b", "held"},
			{21, "expire", ""}, // a's first deadline (20) is gone with its release
			{30, "expire", "2:timeout"},
			{31, "expire", "3:timeout"},
		}, Stats{Held: 3, Acked: 1, TimedOut: 2}},
		{"off: nothing held", Config{}, []step{
			{0, "hold 1 a", "bypass"},
			{30, "expire", ""},
		}, Stats{Bypassed: 1}},
		{"flush lets everything go", cfg, []step{
			{0, "hold 1 a", "held"},
			{1, "hold 2 b", "held"},
			{2, "hold 3 a", "held"},
			{3, "flush", "1:timeout 3:timeout 2:timeout"},
			{30, "expire", ""},
		}, Stats{Held: 3, TimedOut: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := run(t, tt.cfg, tt.steps)
			st := q.Stats()
			st.P50, st.P99, st.Max = 0, 0, 0
			if st != tt.stats {
				t.Errorf("stats %+v, want %+v", st, tt.stats)
			}
		})
	}
}

// TestQueueNeverHoldsPastMax: whatever the arrivals, Expire called at any
// time lets every packet go by its flow's first packet's arrival plus Max.
func TestQueueNeverHoldsPastMax(t *testing.T) {
	max := 20 * time.Millisecond
	q := New[int](Config{Max: max})
	t0 := time.Unix(0, 0)
	arrived := map[uint32]time.Time{}
	first := map[int]time.Time{}
	var id uint32
	var out []Verdict
	for ms := 0; ms < 200; ms++ {
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		for j := 0; j < 3; j++ {
			id++
			k := (ms*7 + j) % 13
			if !q.Holding(k) {
				first[k] = now
			}
			if q.Hold(now, id, k) {
				arrived[id] = first[k]
			}
		}
		if ms%5 == 0 {
			out = q.Ack(now, ms%13, out)
		}
		out = q.Expire(now, out)
		for _, v := range out {
			if w := now.Sub(arrived[v.ID]); w > max {
				t.Fatalf("packet %d let go after %v (flow held since %v), max %v", v.ID, w, arrived[v.ID].Sub(t0), max)
			}
			delete(arrived, v.ID)
		}
		out = out[:0]
	}
	if st := q.Stats(); st.Max > max || st.P99 > max {
		t.Errorf("hold times %+v above %v", st, max)
	}
}

// TestQueueHoldTimes: the quantiles are of the released flows' hold times.
func TestQueueHoldTimes(t *testing.T) {
	q := New[int](Config{Max: time.Second})
	t0 := time.Unix(0, 0)
	var ds []time.Duration
	for i := range 100 {
		q.Hold(t0, uint32(i), i)
		d := time.Duration(i+1) * time.Millisecond
		q.Ack(t0.Add(d), i, nil)
		ds = append(ds, d)
	}
	slices.Sort(ds)
	st := q.Stats()
	if st.P50 != ds[50] || st.P99 != ds[99] || st.Max != 100*time.Millisecond {
		t.Errorf("p50 %v p99 %v max %v, want %v %v 100ms", st.P50, st.P99, st.Max, ds[50], ds[99])
	}
	t.Logf("measured: p50 %v p99 %v max %v", st.P50, st.P99, st.Max)
}
