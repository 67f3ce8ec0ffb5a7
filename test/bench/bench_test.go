package bench

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
	"github.com/hagent/hagent/test/proc"
)

const probeEvery = time.Millisecond

func needRoot(t *testing.T, env string) {
	t.Helper()
	if os.Getenv(env) != "1" {
		t.Skipf("set %s=1 to run (make bench / make soak)", env)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	// go test runs in the package directory: a relative HAGENT_BIN
	// (make bench passes "bin") is relative to the repository root.
	if d := os.Getenv("HAGENT_BIN"); d != "" && !filepath.IsAbs(d) {
		t.Setenv("HAGENT_BIN", filepath.Join(lab.RepoRoot(), d))
	}
	for _, b := range []string{"hagentd", "agentctl"} {
		if _, err := os.Stat(lab.Bin(b)); err != nil {
			t.Skipf("%s not built (make build): %v", lab.Bin(b), err)
		}
	}
}

// plan is the benchmark matrix.
type plan struct {
	intervals []time.Duration
	reps      func(ival time.Duration) int
	// extra scenarios (failover-set, link) run at these intervals
	extra  []time.Duration
	cpuFor time.Duration
	// direct: crash intervals over direct hb cables (carrier detection)
	direct []time.Duration
	// unicast: crash intervals (× 3) with unicast_hb across a router
	unicast  []time.Duration
	quick    bool
	thresh   []int
	graceful bool
}

func makePlan() plan {
	if os.Getenv("HAGENT_BENCH_QUICK") == "1" {
		return plan{
			intervals: []time.Duration{200 * time.Millisecond, 10 * time.Millisecond},
			reps:      func(time.Duration) int { return 2 },
			extra:     []time.Duration{200 * time.Millisecond, 10 * time.Millisecond},
			cpuFor:    5 * time.Second, quick: true, thresh: []int{3, 6}, graceful: true,
			direct:  []time.Duration{200 * time.Millisecond, 10 * time.Millisecond},
			unicast: []time.Duration{200 * time.Millisecond},
		}
	}
	return plan{
		intervals: []time.Duration{time.Second, 200 * time.Millisecond, 100 * time.Millisecond, 10 * time.Millisecond},
		reps: func(ival time.Duration) int {
			if ival >= time.Second {
				return 3
			}
			return 5
		},
		extra:  []time.Duration{time.Second, 200 * time.Millisecond, 100 * time.Millisecond, 10 * time.Millisecond},
		cpuFor: 20 * time.Second, thresh: []int{3, 6}, graceful: true,
		direct:  []time.Duration{time.Second, 200 * time.Millisecond, 10 * time.Millisecond},
		unicast: []time.Duration{200 * time.Millisecond, 10 * time.Millisecond},
	}
}

func outDir() string {
	if d := os.Getenv("HAGENT_BENCH_OUT"); d != "" {
		return d
	}
	return filepath.Join(lab.RepoRoot(), "bench-results")
}

// TestBench is `make bench`: the failover benchmark against keepalived.
func TestBench(t *testing.T) {
	needRoot(t, "HAGENT_BENCH")
	if _, err := lab.EnsureKeepalived(); err != nil {
		t.Fatalf("keepalived: %v", err)
	}
	pl := makePlan()
	if os.Getenv("HAGENT_BENCH_DIRECT_ONLY") == "1" {
		// Just the direct-cable and unicast rows (while working on them).
		pl.intervals, pl.cpuFor = nil, 5*time.Second
	}
	host, _ := os.Hostname()
	rep := &Report{Started: time.Now(), Host: host, CPUs: runtime.NumCPU(), Quick: pl.quick, ProbeMs: ms(probeEvery)}
	rep.Notes = append(rep.Notes,
		"Crash: every link of the node down over netlink (heartbeat links first, sub-millisecond), then SIGKILL of the agent. Graceful: SIGTERM. Link: the primary's port1 down (hagent monitor: [port1]; keepalived track_interface port1).",
		"keepalived: VRRPv3, both priority 100 (skew 0.61 × advert_int), nopreempt, adverts on ha1 through a switch like hagent's heartbeats, VIP on port1, no vMAC (clients re-ARP from its GARPs). hagent: priorities 200/100, uptime_diff_margin 100ms (the survivor stays primary), realtime off for both.",
		"The fault is injected into whichever node is primary; the failed node is restarted and rejoins as secondary before the next repetition.",
		"Takeover path: decision → first GARP as the new primary records it in `agentctl ha history --json` (takeover_us).",
	)

	l, err := lab.New(lab.Spec{Nodes: []string{"node-a", "node-b"}, HBSwitch: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if err := l.StartEcho(); err != nil {
		t.Fatal(err)
	}

	// Resources first, on a quiet machine: an idle 200 ms cluster of each
	// kind, side by side in two labs.
	if len(pl.intervals) > 0 {
		rep.Resources = measureResources(t, l, pl.cpuFor)
	}

	for _, ival := range pl.intervals {
		reps := pl.reps(ival)
		extra := slices.Contains(pl.extra, ival)
		rows := map[string]*Row{}
		for _, thr := range pl.thresh {
			kinds := []string{Crash}
			if thr == 3 {
				if pl.graceful {
					kinds = append(kinds, Graceful)
				}
				if extra {
					kinds = append(kinds, FailoverSet, Link)
				}
			}
			sys := newHagent(l, ival, thr, false)
			res := runSystem(t, l, sys, kinds, reps, ival*time.Duration(thr))
			for _, k := range kinds {
				row := &Row{Scenario: k, Interval: ival, Threshold: thr, HAgent: *res[k]}
				if k != Crash {
					row.Threshold = 0
				}
				rows[fmt.Sprintf("%s/%d", k, thr)] = row
			}
		}
		kkinds := []string{Crash}
		if pl.graceful {
			kkinds = append(kkinds, Graceful)
		}
		if extra {
			kkinds = append(kkinds, Link)
		}
		ks := newKeepalived(l, ival)
		kres := runSystem(t, l, ks, kkinds, reps, ival*4)
		for key, row := range rows {
			if s, ok := kres[row.Scenario]; ok {
				row.Keepalived = s
			}
			_ = key
		}
		for _, key := range []string{"crash/3", "crash/6", "graceful/3", "failover-set/3", "link/3"} {
			if row, ok := rows[key]; ok {
				rep.Rows = append(rep.Rows, row)
				t.Logf("%-22s hagent median %s max %s | keepalived %s", row.Label(), fmtMs(row.HAgent.Median()), fmtMs(row.HAgent.Max()), kaMedian(row))
			}
		}
	}

	// Crashes over direct heartbeat cables: hagent with direct: true
	// (carrier detection) and keepalived on the same cables, same run.
	if len(pl.direct) > 0 {
		rep.Notes = append(rep.Notes, "crash, direct hb: the same crash in a lab whose ha1 is a veth cable between the nodes (no switch); hagent with hbdev direct: true (carrier_debounce 4ms, carrier read every 2 ms), keepalived advertising on the same cable with dont_track_primary (without it, keepalived's backup enters FAULT when the cable loses carrier and never takes over).")
		dl, err := lab.New(lab.Spec{Nodes: []string{"node-a", "node-b"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(dl.Close)
		if err := dl.StartEcho(); err != nil {
			t.Fatal(err)
		}
		rep.Resources = append(rep.Resources, measureDirectCPU(t, dl, pl.cpuFor)...)
		for _, ival := range pl.direct {
			reps := pl.reps(ival)
			res := runSystem(t, dl, newHagentDirect(dl, ival, 6), []string{Crash}, reps, ival*6)
			kres := runSystem(t, dl, newKeepalivedDirect(dl, ival), []string{Crash}, reps, ival*4)
			row := &Row{Scenario: CrashDirect, Interval: ival, Threshold: 6, HAgent: *res[Crash], Keepalived: kres[Crash]}
			rep.Rows = append(rep.Rows, row)
			t.Logf("%-22s hagent median %s max %s | keepalived %s", row.Label(), fmtMs(row.HAgent.Median()), fmtMs(row.HAgent.Max()), kaMedian(row))
		}
	}

	// Crashes with the heartbeats over UDP across a routed hop.
	if len(pl.unicast) > 0 {
		rep.Notes = append(rep.Notes, "crash, unicast hb: the same crash with the heartbeats and the sync channel in UDP (unicast_hb) across a router namespace between the nodes' hbu interfaces (no L2 path); compare with the crash rows at the same interval × threshold.")
		ul, err := lab.New(lab.Spec{Nodes: []string{"node-a", "node-b"}, RoutedHB: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ul.Close)
		if err := ul.StartEcho(); err != nil {
			t.Fatal(err)
		}
		for _, ival := range pl.unicast {
			res := runSystem(t, ul, newHagent(ul, ival, 3, false), []string{Crash}, pl.reps(ival), ival*3)
			row := &Row{Scenario: CrashUnicast, Interval: ival, Threshold: 3, HAgent: *res[Crash]}
			rep.Rows = append(rep.Rows, row)
			t.Logf("%-22s hagent median %s max %s", row.Label(), fmtMs(row.HAgent.Median()), fmtMs(row.HAgent.Max()))
		}
	}

	rep.Goals = goals(rep, pl)
	rep.Duration = time.Since(rep.Started).Seconds()
	md := rep.Markdown()
	fmt.Println()
	fmt.Println(md)
	dir := outDir()
	if err := rep.Write(dir); err != nil {
		t.Errorf("writing results: %v", err)
	} else {
		t.Logf("results in %s (results.md, results.json, outages.svg)", dir)
	}
	for _, row := range rep.Rows {
		for _, s := range []*Series{&row.HAgent, row.Keepalived} {
			if s != nil && len(s.Errors) > 0 {
				t.Errorf("%s: %d repetitions failed: %v", row.Label(), len(s.Errors), s.Errors)
			}
		}
	}
}

func kaMedian(r *Row) string {
	if r.Keepalived == nil {
		return "–"
	}
	return fmtMs(r.Keepalived.Median())
}

// runSystem starts sys, runs reps repetitions of every kind, stops it.
func runSystem(t *testing.T, l *lab.Lab, sys system, kinds []string, reps int, detect time.Duration) map[string]*Series {
	t.Helper()
	out := map[string]*Series{}
	for _, k := range kinds {
		out[k] = &Series{}
	}
	if ks, ok := sys.(*keepalivedSys); ok {
		defer ks.kill()
	}
	if err := sys.start(); err != nil {
		for _, k := range kinds {
			out[k].Errors = append(out[k].Errors, "start: "+err.Error())
		}
		t.Logf("%s: start failed: %v\n%s", sys.name(), err, tail(sys, l))
		sys.stop()
		return out
	}
	defer sys.stop()
	for _, k := range kinds {
		// Up to twice the repetitions when some fail (the failures are
		// reported with the results).
		for i := 0; len(out[k].Samples) < reps && i < 2*reps; i++ {
			s, measured, err := failover(l, sys, k, detect)
			if measured {
				out[k].Samples = append(out[k].Samples, s)
				t.Logf("%s %-12s #%d outage %7.1f ms  decision %6.1f ms  takeover %5d µs  (outage %.1f..%.1f ms after the fault, lost %d)",
					sys.name(), k, i+1, s.OutageMs, s.DecisionMs, s.TakeoverUs, s.OutageStartMs, s.OutageEndMs, s.Lost)
			}
			if err != nil {
				out[k].Errors = append(out[k].Errors, err.Error())
				t.Logf("%s %s #%d: %v\n%s", sys.name(), k, i+1, err, tail(sys, l))
				// Get back to a working cluster or give up on this system.
				sys.stop()
				if err := sys.start(); err != nil {
					t.Logf("%s: restart failed: %v", sys.name(), err)
					return out
				}
			}
		}
	}
	return out
}

// failover measures one failover of the current primary and restores the
// failed node; measured is true when the sample is valid even if err (a
// failed restore) is not nil.
func failover(l *lab.Lab, sys system, kind string, detect time.Duration) (smp Sample, measured bool, err error) {
	p, s, err := sys.roles()
	if err != nil {
		return Sample{}, false, fmt.Errorf("not stable before the fault: %w", err)
	}
	pr, err := l.StartProbe(lab.ClusterIPv4, probeEvery)
	if err != nil {
		return Sample{}, false, err
	}
	stopped := false
	defer func() {
		if !stopped {
			pr.Stop()
		}
	}()
	if err := lab.Eventually(5*time.Second, func() error {
		if r := pr.Snapshot(); r.Answered < 50 || !r.Recovered {
			return fmt.Errorf("client: %s", r)
		}
		return nil
	}); err != nil {
		return Sample{}, false, fmt.Errorf("client cannot reach the cluster address before the fault: %w", err)
	}
	t0 := time.Now()
	if err := sys.inject(kind, p); err != nil {
		return Sample{}, false, fmt.Errorf("inject %s: %w", kind, err)
	}
	if err := lab.Eventually(2*detect+5*time.Second, func() error {
		if !sys.isPrimary(s) {
			return fmt.Errorf("%s did not take over", s.Name)
		}
		return nil
	}); err != nil {
		return Sample{}, false, err
	}
	tp := time.Now()
	// The snapshot leaves out the last 300 ms: wait until it covers the
	// takeover, then for the client to be answered again.
	time.Sleep(400 * time.Millisecond)
	if err := lab.Eventually(5*time.Second, func() error {
		if r := pr.Snapshot(); !r.Recovered {
			return errors.New("client not answered again")
		}
		return nil
	}); err != nil {
		return Sample{}, false, fmt.Errorf("%w (%s became primary %v after the fault)", err, s.Name, tp.Sub(t0))
	}
	res := pr.Stop()
	stopped = true
	smp = Sample{OutageMs: ms(res.Outage), Recovered: res.Recovered, Lost: res.Lost}
	if !res.OutageAt.IsZero() {
		smp.OutageStartMs = ms(res.OutageAt.Sub(t0))
		smp.OutageEndMs = ms(res.OutageAt.Add(res.Outage).Sub(t0))
	}
	if at, us, ok := sys.takeover(s, t0.Add(-time.Millisecond)); ok {
		smp.DecisionMs = ms(at.Sub(t0))
		smp.TakeoverUs = us
	}
	if err := sys.restore(kind, p); err != nil {
		return smp, true, fmt.Errorf("restore after %s: %w", kind, err)
	}
	return smp, true, nil
}

// measureResources runs an idle 200 ms cluster of hagent in l and of
// keepalived in a second lab at the same time, and samples RSS and CPU.
func measureResources(t *testing.T, l *lab.Lab, window time.Duration) []Resource {
	t.Helper()
	const ival = 200 * time.Millisecond
	l2, err := lab.New(lab.Spec{Nodes: []string{"node-a", "node-b"}, HBSwitch: true})
	if err != nil {
		t.Logf("resources: %v", err)
		return nil
	}
	defer l2.Close()
	h := newHagent(l, ival, 6, false)
	if err := h.start(); err != nil {
		t.Logf("resources: hagent: %v", err)
		return nil
	}
	defer h.stop()
	k := newKeepalived(l2, ival)
	defer k.kill()
	if err := k.start(); err != nil {
		t.Logf("resources: keepalived: %v", err)
		return nil
	}
	defer k.stop()
	time.Sleep(time.Second) // past start-up
	type sysProc struct {
		sys   system
		node  *lab.Node
		pids  []int
		ticks int64
	}
	var procs []*sysProc
	for _, sys := range []system{h, k} {
		for _, n := range nodesOf(nodesLab(sys)) {
			procs = append(procs, &sysProc{sys: sys, node: n, pids: sys.pids(n)})
		}
	}
	sum := func(p *sysProc) int64 {
		var s int64
		for _, pid := range p.pids {
			x, _ := proc.CPUTicks(pid)
			s += x
		}
		return s
	}
	start := time.Now()
	for _, p := range procs {
		p.ticks = sum(p)
	}
	time.Sleep(window)
	el := time.Since(start).Seconds()
	var out []Resource
	for _, p := range procs {
		d := sum(p) - p.ticks
		var rss int64
		for _, pid := range p.pids {
			x, _ := proc.RSSKB(pid)
			rss += x
		}
		role := "secondary"
		if p.sys.isPrimary(p.node) {
			role = "primary"
		}
		out = append(out, Resource{System: p.sys.name(), Node: p.node.Name, Role: role, PIDs: p.pids,
			RSSKB: rss, CPUPct: 100 * float64(d) / proc.ClkTck / el, Window: el, Setting: "200ms, idle"})
	}
	return out
}

// measureDirectCPU samples an idle 200 ms hagent cluster with direct
// hbdevs: what the 1 ms carrier poll costs.
func measureDirectCPU(t *testing.T, l *lab.Lab, window time.Duration) []Resource {
	t.Helper()
	h := newHagentDirect(l, 200*time.Millisecond, 6)
	if err := h.start(); err != nil {
		t.Logf("resources (direct): %v", err)
		return nil
	}
	defer h.stop()
	time.Sleep(time.Second)
	var out []Resource
	start := time.Now()
	before := map[string]int64{}
	for _, n := range nodesOf(l) {
		for _, pid := range h.pids(n) {
			x, _ := proc.CPUTicks(pid)
			before[n.Name] += x
		}
	}
	time.Sleep(window)
	el := time.Since(start).Seconds()
	for _, n := range nodesOf(l) {
		var ticks, rss int64
		for _, pid := range h.pids(n) {
			x, _ := proc.CPUTicks(pid)
			ticks += x
			r, _ := proc.RSSKB(pid)
			rss += r
		}
		role := "secondary"
		if h.isPrimary(n) {
			role = "primary"
		}
		out = append(out, Resource{System: "hagent", Node: n.Name, Role: role, PIDs: h.pids(n), RSSKB: rss,
			CPUPct: 100 * float64(ticks-before[n.Name]) / proc.ClkTck / el, Window: el, Setting: "200ms, idle, direct hbdev (carrier read every 2 ms)"})
	}
	return out
}

func nodesLab(sys system) *lab.Lab {
	switch s := sys.(type) {
	case *hagentSys:
		return s.l
	case *keepalivedSys:
		return s.l
	}
	return nil
}

// goals evaluates issue 6's targets against the rows.
func goals(r *Report, pl plan) []Goal {
	find := func(kind string, ival time.Duration, thr int) *Row {
		for _, row := range r.Rows {
			if row.Scenario == kind && row.Interval == ival && row.Threshold == thr {
				return row
			}
		}
		return nil
	}
	status := func(ok bool, n int) string {
		switch {
		case n == 0:
			return "NOT RUN"
		case n < 5:
			if ok {
				return "PASS (fewer than 5 runs)"
			}
			return "MISS (fewer than 5 runs)"
		case ok:
			return "PASS"
		}
		return "MISS"
	}
	var gs []Goal
	crashGoal := func(ival time.Duration, limit float64) {
		name := fmt.Sprintf("crash %s×3 median", fmtDur(ival))
		row := find(Crash, ival, 3)
		if row == nil {
			gs = append(gs, Goal{Name: name, Target: fmt.Sprintf("< %g ms", limit), Value: "–", Status: "NOT RUN"})
			return
		}
		m := row.HAgent.Median()
		gs = append(gs, Goal{Name: name, Target: fmt.Sprintf("< %g ms", limit),
			Value: fmt.Sprintf("%s (max %s, keepalived %s)", fmtMs(m), fmtMs(row.HAgent.Max()), kaMedian(row)), Status: status(m < limit, len(row.HAgent.Samples))})
	}
	crashGoal(200*time.Millisecond, 600)
	crashGoal(10*time.Millisecond, 35)

	var tk []float64
	for _, row := range r.Rows {
		tk = append(tk, row.HAgent.TakeoverUs()...)
	}
	tkMed := Median(tk) / 1000
	gs = append(gs, Goal{Name: "takeover path (decision → first GARP), all hagent failovers", Target: "< 5 ms",
		Value:  fmt.Sprintf("median %.2f ms, max %.2f ms (%d takeovers)", tkMed, Max(tk)/1000, len(tk)),
		Status: status(!math.IsNaN(tkMed) && tkMed < 5, len(tk))})

	worst := func(kind, name string, limit float64) {
		// The worst median among the rows with enough runs (any row when
		// none has).
		var w *Row
		for _, enough := range []bool{true, false} {
			for _, row := range r.Rows {
				if row.Scenario != kind || (enough && len(row.HAgent.Samples) < 5) {
					continue
				}
				if w == nil || row.HAgent.Median() > w.HAgent.Median() || math.IsNaN(row.HAgent.Median()) {
					w = row
				}
			}
			if w != nil {
				break
			}
		}
		if w == nil {
			gs = append(gs, Goal{Name: name, Target: fmt.Sprintf("< %g ms", limit), Value: "–", Status: "NOT RUN"})
			return
		}
		m := w.HAgent.Median()
		gs = append(gs, Goal{Name: name + " (worst interval)", Target: fmt.Sprintf("< %g ms", limit),
			Value: fmt.Sprintf("%s at %s (max %s)", fmtMs(m), fmtDur(w.Interval), fmtMs(w.HAgent.Max())), Status: status(m < limit, len(w.HAgent.Samples))})
	}
	worst(Graceful, "graceful failover, SIGTERM, median", 5)
	worst(FailoverSet, "graceful failover, `ha failover set`, median", 5)
	worst(Link, "link failover median", 20)

	gs = append(gs, Goal{Name: "zero false failovers, 10 min soak at 10ms×3 under CPU load", Target: "0",
		Value: "see `make soak` (bench-results/soak.md)", Status: "NOT RUN"})

	var rss, cpu []float64
	var krss, kcpu []float64
	for _, x := range r.Resources {
		if x.Setting != "200ms, idle" {
			continue // the direct-hbdev rows have their own setting
		}
		if x.System == "hagent" {
			rss, cpu = append(rss, float64(x.RSSKB)/1024), append(cpu, x.CPUPct)
		} else {
			krss, kcpu = append(krss, float64(x.RSSKB)/1024), append(kcpu, x.CPUPct)
		}
	}
	mr, mc := Max(rss), Max(cpu)
	gs = append(gs,
		Goal{Name: "agent RSS at 200ms", Target: "< 15 MB", Value: fmt.Sprintf("%.1f MB (keepalived %.1f MB, both processes)", mr, Max(krss)),
			Status: status(mr < 15, 5*len(rss))},
		Goal{Name: "idle CPU at 200ms", Target: "< 0.5 % of a core", Value: fmt.Sprintf("%.3f %% (keepalived %.3f %%)", mc, Max(kcpu)),
			Status: status(mc < 0.5, 5*len(cpu))})
	return gs
}
