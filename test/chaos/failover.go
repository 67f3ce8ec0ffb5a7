package chaos

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/test/lab"
)

// FailoverResult is a series of forced failovers.
type FailoverResult struct {
	Outages []time.Duration // per failover, the longest run of lost probes
	Took    []time.Duration // per failover, command → the vMAC only on the new primary
	Losses  []Loss          // per failover, that run in detail
}

// Loss is one run of lost probes: from the first lost probe to the next
// answered one.
type Loss struct {
	From time.Time
	Span time.Duration
	Lost int // probes lost in it
	// SendGap is the longest gap between two consecutive probes sent in
	// it: the prober's own scheduling (a 1 ms prober that sent nothing
	// for 6 ms stretches a one-probe loss into a 7 ms "outage").
	SendGap time.Duration
}

// probeLimited reports whether the prober's own delay explains most of
// the span (it lost fewer probes than half the span's milliseconds).
func (x Loss) probeLimited(every time.Duration) bool {
	return x.Span > 0 && time.Duration(x.Lost)*every*2 < x.Span
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
	// The GARPs entering the switch from each node: what the switch
	// learnt when, to say where each outage came from.
	rec := &Record{Nodes: []string{a.Name, b.Name}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := garpSniff(ctx, l, []*lab.Node{a, b}, vmac, rec); err != nil {
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
		// The control socket's request, as agentctl sends it, from this
		// process: forking agentctl from here stalls this process (the
		// probe's echo responders and receiver live in it) for a few ms,
		// which read as a loss of the cluster.
		req := map[string]string{"set": control.CmdFailoverSet, "unset": control.CmdFailoverUnset}[cmd]
		if err := control.Call(a.Socket, req, nil, 5*time.Second); err != nil {
			return res, fmt.Errorf("failover %d: ha failover %s: %v", i+1, cmd, err)
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
		x := longestLoss(samples, starts[i], starts[i+1])
		res.Losses = append(res.Losses, x)
		res.Outages = append(res.Outages, x.Span)
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
	limited, real := 0, time.Duration(0)
	for _, x := range res.Losses {
		if x.probeLimited(time.Millisecond) {
			limited++
		} else {
			real = max(real, x.Span)
		}
	}
	fmt.Fprintf(out, "%d of %d failovers lost at least one probe; %d of them lost fewer probes than half their span (the prober itself was late); the longest loss that was not: %s\n", lossy, count, limited, ms(real))
	fmt.Fprintf(out, "prober's sender under SCHED_FIFO: %v\n", probe.Realtime())
	fmt.Fprintf(out, "the worst (times after the command; GARPs entering the switch from the new primary):\n")
	rec.mu.Lock()
	garps := append([]GARP(nil), rec.GARPs...)
	rec.mu.Unlock()
	for _, i := range idx[:min(8, count)] {
		what, to := "set", b.Name
		if i%2 == 1 {
			what, to = "unset", a.Name
		}
		x, t0 := res.Losses[i], starts[i]
		if x.Lost == 0 {
			break
		}
		var g []string
		for _, y := range garps {
			if y.Node == to && !y.At.Before(t0) && y.At.Before(starts[i+1]) {
				g = append(g, ms(y.At.Sub(t0)))
			}
		}
		fmt.Fprintf(out, "  #%d (%s): %s lost from %s (%d probes, longest send gap %s); vMAC moved by %s; GARPs at %v\n",
			i+1, what, ms(x.Span), ms(x.From.Sub(t0)), x.Lost, ms(x.SendGap), ms(res.Took[i]), g)
	}
	return res, nil
}

// longestLoss is the longest run of lost probes sent in [from, to), as
// the time from the first lost probe to the next answered one.
func longestLoss(s []lab.Sample, from, to time.Time) Loss {
	i := sort.Search(len(s), func(i int) bool { return !s[i].Sent.Before(from) })
	var worst Loss
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
		if span := end.Sub(s[i].Sent); span > worst.Span {
			x := Loss{From: s[i].Sent, Span: span, Lost: j - i}
			for k := i + 1; k <= j && k < len(s); k++ {
				x.SendGap = max(x.SendGap, s[k].Sent.Sub(s[k-1].Sent))
			}
			worst = x
		}
		i = j
	}
	return worst
}
