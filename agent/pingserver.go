package agent

import (
	"context"
	"net/netip"
	"time"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/vmac"
)

// pingItem is one pingserver check: a target probed on one interface. It
// counts as one monitored link (up while the target answers), so a node
// that lost its path to the gateway loses the election like a node with a
// failed monitored port (FGCP remote link failover).
type pingItem struct {
	name   string // "port1>10.9.0.254", as shown in status and history
	ifname string
	target netip.Addr
	// interval and threshold are those of its vcluster's pingserver.
	interval  time.Duration
	threshold int
}

// pingItemsOf lists the checks of one vcluster's pingserver.
func pingItemsOf(s config.VClusterSection) []pingItem {
	var out []pingItem
	for _, t := range s.PingServer.Targets {
		for _, ifname := range s.PingServerInterfaces(t) {
			out = append(out, pingItem{name: ifname + ">" + t.String(), ifname: ifname, target: t,
				interval: s.PingServer.Interval, threshold: s.PingServer.FailoverThreshold})
		}
	}
	return out
}

// pingItems lists the checks of every vcluster the agent runs.
func (a *Agent) pingItems(cfg *config.Config) []pingItem {
	var out []pingItem
	for _, v := range a.vcs {
		out = append(out, pingItemsOf(v.section(cfg))...)
	}
	return out
}

// monitoredOf lists what counts toward a vcluster's
// monitor_up/monitor_total: the monitored interfaces, the pingserver
// checks, then the health checks (checks.go).
func monitoredOf(s config.VClusterSection) []string {
	names := append([]string(nil), s.Monitor...)
	for _, p := range pingItemsOf(s) {
		names = append(names, p.name)
	}
	return append(names, checkNames(s.Checks)...)
}

// prober checks one target; vmac.ARPProber in the daemon.
type prober interface {
	Probe(target netip.Addr, timeout time.Duration) (bool, error)
	Close() error
}

// openProbers opens one ARP prober per pingserver interface.
func openProbers(items []pingItem) (map[string]prober, error) {
	out := map[string]prober{}
	for _, it := range items {
		if out[it.ifname] != nil {
			continue
		}
		p, err := vmac.NewARPProber(it.ifname)
		if err != nil {
			for _, q := range out {
				q.Close()
			}
			return nil, err
		}
		out[it.ifname] = p
	}
	return out, nil
}

// pingLoop probes every target each interval and reports a target as a
// down "link" after failover_threshold consecutive misses, and up again at
// the first answer.
func (a *Agent) pingLoop(ctx context.Context, items []pingItem, probers map[string]prober) {
	defer func() {
		for _, p := range probers {
			p.Close()
		}
	}()
	// One loop for every vcluster's targets, at the shortest interval; a
	// target of a longer one is probed at its own interval.
	every := items[0].interval
	for _, it := range items {
		every = min(every, it.interval)
	}
	timeout := min(every/2, time.Second)
	misses := make([]int, len(items))
	down := make([]bool, len(items))
	last := make([]time.Time, len(items))
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for i, it := range items {
			if now := time.Now(); !last[i].IsZero() && now.Sub(last[i]) < it.interval-every/2 {
				continue
			} else {
				last[i] = now
			}
			ok, err := probers[it.ifname].Probe(it.target, timeout)
			if err != nil {
				a.log.Warn("pingserver probe failed", "interface", it.ifname, "target", it.target, "error", err)
			}
			switch {
			case ok:
				misses[i] = 0
				if down[i] {
					down[i] = false
					a.pingEvent(ctx, it, true)
				}
			default:
				misses[i]++
				if !down[i] && misses[i] >= it.threshold {
					down[i] = true
					a.pingEvent(ctx, it, false)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) pingEvent(ctx context.Context, it pingItem, up bool) {
	a.log.Info("pingserver target changed", "interface", it.ifname, "target", it.target, "up", up)
	select {
	case a.linkCh <- linkEvent{name: it.name, up: up}:
	case <-ctx.Done():
	}
}
