package sessbench

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/l2chan"
	"github.com/hagent/hagent/sessionsync"
	"github.com/hagent/hagent/test/lab"
	"github.com/hagent/hagent/test/proc"
)

// millionFlows is the table of TestSessionBenchMillion.
const millionFlows = 1000000

// raiseConntrack sets a kernel-wide conntrack sysctl (nf_conntrack_max
// and nf_conntrack_buckets are global: only the initial namespace writes
// them, and each namespace's table is bounded by the one max) to at least
// v, and restores it when the test ends.
func raiseConntrack(t *testing.T, name string, v int) {
	t.Helper()
	p := "/proc/sys/net/netfilter/" + name
	b, err := os.ReadFile(p)
	if err != nil {
		t.Skip(err)
	}
	old, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || old >= v {
		return
	}
	if err := os.WriteFile(p, []byte(strconv.Itoa(v)), 0o644); err != nil {
		t.Skipf("%s: %v", name, err)
	}
	t.Cleanup(func() { _ = os.WriteFile(p, []byte(strconv.Itoa(old)), 0o644) })
}

// conntrackCount is the number of entries in a node's kernel table (its
// namespace's nf_conntrack_count: a dump of a million flows would cost
// the test more than the agents).
func conntrackCount(n *lab.Node) int {
	out, err := lab.Exec(n.NS, "cat", "/proc/sys/net/netfilter/nf_conntrack_count")
	if err != nil {
		return -1
	}
	c, _ := strconv.Atoi(strings.TrimSpace(out))
	return c
}

// startPrimary starts hagentd on n with p and waits until it is primary.
func startPrimary(t *testing.T, n *lab.Node, p lab.Params) {
	t.Helper()
	if err := n.Start(p); err != nil {
		t.Fatal(err)
	}
	if err := lab.Eventually(10*time.Second, func() error {
		if n.Role() != "primary" {
			return fmt.Errorf("%s is %s", n.Name, n.Role())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// waitBulk waits until n holds a complete bulk copy of at least want
// flows from its peer, in its kernel table too, and returns how long
// that took from start.
func waitBulk(t *testing.T, n *lab.Node, want int, start time.Time) time.Duration {
	t.Helper()
	if err := lab.EventuallyEvery(300*time.Second, 20*time.Millisecond, func() error {
		s, err := sessions(n)
		if err != nil {
			return err
		}
		for _, src := range s.Sources {
			if src.Bulk.State == "done" && src.Bulk.Total >= want {
				return nil
			}
		}
		return fmt.Errorf("bulk not done")
	}); err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	if c := conntrackCount(n); c < want {
		t.Fatalf("%s's kernel has %d of %d flows", n.Name, c, want)
	}
	return d
}

// settledRSS samples the RSS of pid once a second for d and returns the
// first sample and the last (the garbage collector and the scavenger
// have returned what they will by then), and the CPU used meanwhile (%
// of a core).
func settledRSS(pid int, d time.Duration) (first, last int64, cpu float64) {
	first, _ = proc.RSSKB(pid)
	t0, _ := proc.CPUTicks(pid)
	w0 := time.Now()
	for time.Since(w0) < d {
		time.Sleep(time.Second)
		last, _ = proc.RSSKB(pid)
	}
	t1, _ := proc.CPUTicks(pid)
	return first, last, float64(t1-t0) / time.Since(w0).Seconds()
}

var renewedRe = regexp.MustCompile(`(own session entries kept as copies before the release|session entries renewed \([^)]*\)): \d+ of \d+ flows renewed in [^:]*`)

// TestSessionBenchMillion: 1 000 000 flows in the primary's table (the
// conntrack max raised kernel-wide). A fresh secondary's bulk copy into
// its kernel; each agent's RSS after it (per 100 000 flows) and its idle
// CPU; a crash failover with long-lived connections through the pair (the
// stall); the old primary back (it takes the role back by itself, or
// after its bulk copy with ha failover set on node-b), and the renewals
// of node-b's table as it lets the role go, as far as they got. The agents run with a 1 s lost threshold: with
// 300 ms, heartbeats delayed on the loaded two-core machine while a
// million flows were dumped, sent and written made the pair split again
// and again, each time restarting the bulk copy. hagent only: conntrackd's rows are the 100 000-flow
// ones (its resync of a million did not finish in the lab's time).
func TestSessionBenchMillion(t *testing.T) {
	needBench(t)
	const n = millionFlows
	raiseConntrack(t, "nf_conntrack_max", 2*n+200000) // two namespaces' tables
	raiseConntrack(t, "nf_conntrack_buckets", 1<<20)
	l, a, b := firewallLab(t)
	params := func(prio int) lab.Params {
		p := hagentParams(prio)
		p.LostThreshold = 10
		return p
	}
	startPrimary(t, a, params(200))
	fill := time.Now()
	if err := a.ApplyFlows(flows(0, n)); err != nil {
		t.Fatal(err)
	}
	t.Logf("measured: %d flows written into node-a's kernel in %v", n, time.Since(fill).Round(time.Millisecond))
	start := time.Now()
	if err := b.Start(params(100)); err != nil {
		t.Fatal(err)
	}
	bulk := waitBulk(t, b, n, start)
	s, _ := sessions(b)
	t.Logf("measured: bulk copy of %d flows into a fresh secondary's kernel: %v after hagentd started there (%+v)", n, bulk.Round(time.Millisecond), s.Sources)
	addRow(t, row{what: fmt.Sprintf("bulk copy of %d flows to a fresh secondary (into its kernel table)", n),
		hagent: bulk.Round(time.Millisecond).String(), conntrackd: "not run (see the 100 000-flow row)", ratio: "–"})

	type mem struct{ first, last int64 }
	var ms [2]mem
	var cpus [2]float64
	done := make(chan struct{})
	go func() {
		defer close(done)
		ms[1].first, ms[1].last, cpus[1] = settledRSS(b.PID(), 20*time.Second)
	}()
	ms[0].first, ms[0].last, cpus[0] = settledRSS(a.PID(), 20*time.Second)
	<-done
	per := func(kb int64) float64 { return float64(kb) / 1024 / (n / 100000) }
	t.Logf("measured: RSS with %d flows: primary %.1f MB after the bulk, %.1f MB 20 s later (%.1f MB per 100 000 flows), idle CPU %.1f%%; secondary %.1f MB, %.1f MB (%.1f MB per 100 000 flows), idle CPU %.1f%%",
		n, float64(ms[0].first)/1024, float64(ms[0].last)/1024, per(ms[0].last), cpus[0],
		float64(ms[1].first)/1024, float64(ms[1].last)/1024, per(ms[1].last), cpus[1])
	addRow(t, row{what: fmt.Sprintf("RSS of each agent with %d flows synced, 20 s after the bulk copy (per 100 000 flows); idle CPU", n),
		hagent: fmt.Sprintf("primary %.0f MB (%.1f MB), secondary %.0f MB (%.1f MB); CPU %.1f%% / %.1f%%", float64(ms[0].last)/1024, per(ms[0].last),
			float64(ms[1].last)/1024, per(ms[1].last), cpus[0], cpus[1]),
		conntrackd: "not run", ratio: "–"})

	const conns = 50
	load, err := lab.StartTCPLoad(l, conns, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer load.Stop()
	failover := func(what string, do func(), taker *lab.Node) lab.LoadReport {
		time.Sleep(3 * time.Second) // replication of the connections' flows
		load.ResetStalls()
		do()
		if err := lab.Eventually(20*time.Second, func() error {
			if taker.Role() != "primary" {
				return fmt.Errorf("%s is %s", taker.Name, taker.Role())
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		r := load.Report(time.Second)
		t.Logf("measured: %s with %d flows: %s", what, n, r)
		if r.Stalled > 0 {
			t.Logf("%s holds %d entries; its log:\n%s", taker.Name, conntrackCount(taker), taker.Tail(40))
		}
		addRow(t, row{what: fmt.Sprintf("connections of %d surviving a %s with %d flows", conns, what, n),
			hagent:     fmt.Sprintf("%d (%d resets, longest stall %v)", conns-max(r.Stalled, r.Errors), r.Resets, r.MaxStall.Round(time.Millisecond)),
			conntrackd: "not run", ratio: "–"})
		return r
	}
	failover("crash failover", a.Crash, b)

	if err := a.Revive(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := a.Start(params(200)); err != nil {
		t.Fatal(err)
	}
	// node-a has the higher priority: it takes the role back by itself
	// (node-b releases, renewing its own table as copies), or stays
	// secondary until its bulk copy is complete, and ha failover set on
	// node-b hands the role over.
	if err := lab.EventuallyEvery(300*time.Second, 50*time.Millisecond, func() error {
		if a.Role() == "primary" {
			return nil
		}
		s, err := sessions(a)
		if err != nil {
			return err
		}
		for _, src := range s.Sources {
			if src.Bulk.State == "done" && src.Bulk.Total >= n {
				t.Logf("measured: bulk copy of %d flows to the restarted old primary (its kernel still held its own): %v", n, time.Since(start).Round(time.Millisecond))
				return nil
			}
		}
		return fmt.Errorf("node-a is %s without a complete bulk copy", a.Role())
	}); err != nil {
		t.Fatal(err)
	}
	if a.Role() != "primary" {
		failover("graceful failover (ha failover set)", func() {
			if out, err := b.Ctl("ha", "failover", "set"); err != nil {
				t.Fatalf("ha failover set: %v: %s", err, out)
			}
		}, a)
	} else {
		t.Logf("node-a took the role back by itself %v after its start", time.Since(start).Round(time.Millisecond))
	}
	// The renewals of node-b's table as it let the role go, as far as
	// they got (a role change stops one; TestSessionBenchRenewMillion
	// measures a whole one).
	time.Sleep(5 * time.Second)
	for _, m := range renewedRe.FindAllString(b.Tail(2000), -1) {
		t.Logf("node-b: %s", m)
	}
}

// TestSessionBenchRenewMillion: the renewal of a primary's table of
// 1 000 000 flows (sessionsync.Engine.Renew on the kernel table of a lab
// namespace, no agents: on the loaded lab machine the pair of
// TestSessionBenchMillion lost heartbeats for a second now and then, and
// each role change stops a renewal). The caller waits 200 ms, as the
// agent does; the renewal goes on in the background until every flow is
// renewed.
func TestSessionBenchRenewMillion(t *testing.T) {
	needBench(t)
	const n = millionFlows
	raiseConntrack(t, "nf_conntrack_max", 2*n+200000)
	raiseConntrack(t, "nf_conntrack_buckets", 1<<20)
	l, err := lab.New(lab.Spec{Nodes: []string{"node-a"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	a := l.Nodes["node-a"]
	if err := a.ApplyFlows(flows(0, n)); err != nil {
		t.Fatal(err)
	}
	var k *sessionsync.Kernel
	if err := lab.InNS(a.NS, func() (err error) { k, err = sessionsync.OpenKernel(); return err }); err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	cc := l2chan.LabConfig()
	cc.Self, cc.GroupID, cc.Password, cc.Label = "node-a", 10, []byte("secret"), sessionsync.ChannelLabel
	cc.Links = []heartbeat.Link{heartbeat.NewMemNetwork().Link("hb", "node-a", "ha1")}
	ch, err := l2chan.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	done := make(chan string, 4)
	cfg := sessionsync.DefaultConfig()
	cfg.Self, cfg.Table, cfg.Transport = "node-a", k, ch
	cfg.Event = func(msg string) {
		if strings.HasPrefix(msg, "bench:") {
			done <- msg
		}
	}
	e, err := sessionsync.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.SetRole(true, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := e.Renew(ctx, "bench"); err != nil {
		t.Fatal(err)
	}
	waited := time.Since(start)
	var msg string
	select {
	case msg = <-done:
	case <-time.After(10 * time.Minute):
		t.Fatal("no end of the renewal in 10 minutes")
	}
	t.Logf("measured: Renew returned after %v; %s", waited.Round(time.Millisecond), msg)
	if want := fmt.Sprintf("%d of %d flows renewed", n, n); !strings.Contains(msg, want) {
		t.Fatalf("%q, want %q", msg, want)
	}
	addRow(t, row{what: fmt.Sprintf("renewal of a primary's table of %d flows (the caller waits 200 ms, the rest in the background at ≤ 50 000 flows/s)", n),
		hagent: strings.TrimPrefix(msg, "bench: "), conntrackd: "n/a", ratio: "–"})
}
