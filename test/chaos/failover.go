package chaos

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/hagent/hagent/test/lab"
)

// FailoverResult is a series of forced failovers.
type FailoverResult struct {
	Outages []time.Duration // per failover, the longest run of lost probes
	Took    []time.Duration // per failover, command → the vMAC only on the new primary
}

// Percentile returns the p-th percentile (0–100) of the outages.
func (f *FailoverResult) Percentile(p float64) time.Duration {
	if len(f.Outages) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), f.Outages...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Failovers runs count forced failovers in a 2-node lab (hb ival × thr):
// `agentctl ha failover set` on node-a (override, priority 200) hands the
// primary to node-b, `unset` takes it back, alternating. The client probes
// every millisecond; each failover's outage is the longest run of lost
// probes between its command and the next one.
func Failovers(count int, ival time.Duration, thr int, out io.Writer, logf func(string, ...any)) (*FailoverResult, error) {
	l, err := lab.New(lab.Spec{Nodes: []string{"node-a", "node-b"}})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	for i, n := range []*lab.Node{a, b} {
		p := lab.Params{GroupID: groupID, Priority: 200 - 100*i, Override: true,
			HBInterval: ival, LostThreshold: thr, HelloHolddown: time.Second, ARPs: 1, ARPsInterval: time.Second, NoIPv6: true}
		if err := n.Start(p); err != nil {
			return nil, err
		}
	}
	hs := map[string]*netlink.Handle{}
	for _, n := range []*lab.Node{a, b} {
		ns, err := netns.GetFromName(n.NS)
		if err != nil {
			return nil, err
		}
		h, err := netlink.NewHandleAt(ns)
		ns.Close()
		if err != nil {
			return nil, err
		}
		defer h.Close()
		hs[n.Name] = h
	}
	holds := func(n *lab.Node) bool {
		link, err := hs[n.Name].LinkByName("port1")
		return err == nil && link.Attrs().HardwareAddr.String() == vmac
	}
	only := func(p, s *lab.Node) error {
		if !holds(p) || holds(s) {
			return fmt.Errorf("%s holds %v, %s holds %v", p.Name, holds(p), s.Name, holds(s))
		}
		return nil
	}
	if err := lab.Eventually(10*time.Second, func() error { return only(a, b) }); err != nil {
		return nil, fmt.Errorf("initial election: %w", err)
	}
	if err := l.StartEcho(); err != nil {
		return nil, err
	}
	probe, err := l.StartProbe(lab.ClusterIPv4, time.Millisecond)
	if err != nil {
		return nil, err
	}
	defer probe.Stop()
	if err := lab.Eventually(5*time.Second, func() error {
		if r := probe.Snapshot(); r.Answered < 100 || !r.Recovered {
			return fmt.Errorf("client: %s", r)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	res := &FailoverResult{}
	starts := make([]time.Time, 0, count+1)
	for i := 0; i < count; i++ {
		cmd, from, to := "set", a, b
		if i%2 == 1 {
			cmd, from, to = "unset", b, a
		}
		t0 := time.Now()
		starts = append(starts, t0)
		if out, err := a.Ctl("ha", "failover", cmd); err != nil {
			return res, fmt.Errorf("failover %d: ha failover %s: %v: %s", i+1, cmd, err, out)
		}
		if err := lab.EventuallyEvery(5*time.Second, time.Millisecond, func() error { return only(to, from) }); err != nil {
			return res, fmt.Errorf("failover %d (%s → %s): %w", i+1, from.Name, to.Name, err)
		}
		res.Took = append(res.Took, time.Since(t0))
		time.Sleep(40 * time.Millisecond) // the switch and the client see the result before the next one
		if (i+1)%100 == 0 {
			logf("failovers: %d of %d", i+1, count)
		}
	}
	time.Sleep(100 * time.Millisecond)
	starts = append(starts, time.Now())
	time.Sleep(300 * time.Millisecond) // late answers
	samples := probe.Samples()
	for i := 0; i < count; i++ {
		res.Outages = append(res.Outages, longestLoss(samples, starts[i], starts[i+1]))
	}
	var over int
	var sum time.Duration
	for _, o := range res.Outages {
		sum += o
		if o >= 5*time.Millisecond {
			over++
		}
	}
	fmt.Fprintf(out, "\n==> %d forced failovers (ha failover set/unset alternating, hb %s × %d, probe every 1 ms)\n", count, ival, thr)
	fmt.Fprintf(out, "| failovers | outage p50 | p99 | max | mean | ≥ 5 ms | command → vMAC moved, p50 / max |\n|---|---|---|---|---|---|---|\n")
	tk := &FailoverResult{Outages: res.Took}
	fmt.Fprintf(out, "| %d | %s | %s | %s | %.3f ms | %d | %s / %s |\n", count, ms(res.Percentile(50)), ms(res.Percentile(99)),
		ms(res.Percentile(100)), float64(sum)/float64(max(count, 1))/float64(time.Millisecond), over, ms(tk.Percentile(50)), ms(tk.Percentile(100)))
	lossy := 0
	idx := make([]int, count)
	for i := range idx {
		idx[i] = i
		if res.Outages[i] > 0 {
			lossy++
		}
	}
	sort.Slice(idx, func(a, b int) bool { return res.Outages[idx[a]] > res.Outages[idx[b]] })
	fmt.Fprintf(out, "%d of %d failovers lost at least one probe; the worst:", lossy, count)
	for _, i := range idx[:min(5, count)] {
		what := "set"
		if i%2 == 1 {
			what = "unset"
		}
		fmt.Fprintf(out, " #%d (%s) %s (command → moved %s);", i+1, what, ms(res.Outages[i]), ms(res.Took[i]))
	}
	fmt.Fprintln(out)
	return res, nil
}

// longestLoss is the longest run of lost probes sent in [from, to), as
// the time from the first lost probe to the next answered one.
func longestLoss(s []lab.Sample, from, to time.Time) time.Duration {
	i := sort.Search(len(s), func(i int) bool { return !s[i].Sent.Before(from) })
	var worst time.Duration
	for i < len(s) && s[i].Sent.Before(to) {
		if s[i].Answered {
			i++
			continue
		}
		j := i
		for j < len(s) && !s[j].Answered {
			j++
		}
		end := to
		if j < len(s) {
			end = s[j].Sent
		}
		worst = max(worst, end.Sub(s[i].Sent))
		i = j
	}
	return worst
}
