package agent

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
)

// cluster.link_failed_signal (FGCP link-failed-signal). A member that
// loses the primary role because one of its monitored links failed sets
// its other monitored links, those still up, down for link_failed_signal,
// then up again: the switches at their far ends see the carrier go,
// flush the MAC addresses they learnt on those ports (the virtual MACs
// among them) and learn the new primary's ports from its first frame,
// rather than sending there until their entries age out.
//
// It fires only on a loss decided on monitored items with a monitored
// link of this member down: a graceful stop hands over with the links
// up, a loss by priority, uptime or override is no failure, and a failed
// health check or pingserver target leaves the switch ports healthy.
// hbdevs, sync_dev, the management interface and the other vcluster's
// data interfaces are never set down: the member must stay heard and
// reachable, and may be the other vcluster's primary. TestLinkFailedSignal shows the
// carrier loss on the switch side and its absence with 0s.

// linkSignal is one vcluster's record of the signal (run goroutine).
type linkSignal struct {
	count uint64
	last  time.Time
	ports []string // the ports of the last signal
}

// linkSignaler runs the signals: each sets its ports up again after the
// duration, or at once when the agent stops, so a stop never leaves a
// port down.
type linkSignaler struct {
	set  func(name string, up bool) error
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func newLinkSignaler(set func(name string, up bool) error) *linkSignaler {
	if set == nil {
		set = setLinkUp
	}
	return &linkSignaler{set: set, stop: make(chan struct{})}
}

// close brings every port of a running signal back up and waits for it.
func (s *linkSignaler) close() {
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
}

// signalPorts returns the ports a loss of the primary role by act signals
// on (none when it does not fire): the monitored links of section sec
// that are up (monitor: v.monitor), less the hbdevs, the session sync
// devices, the management interface and the data interfaces of the
// other vcluster (whose primary this node may be). down reports whether one of the
// monitored links is down, the condition of the signal
// (TestSignalPorts).
func signalPorts(cfg *config.Config, sec int, monitor map[string]bool, act cluster.Action) []string {
	if cfg.Cluster.LinkFailedSignal <= 0 || act.Previous != cluster.RolePrimary || act.Role != cluster.RoleSecondary ||
		!strings.Contains(act.Reason, "monitored") {
		return nil
	}
	c := &cfg.Cluster
	other := c.Section(3 - sec).Interfaces // the other vcluster's: this node may be its primary
	keep := func(n string) bool {
		return slices.ContainsFunc(c.HBDevs, func(h config.HBDev) bool { return h.Name == n }) ||
			slices.ContainsFunc(other, func(i config.Interface) bool { return i.Name == n }) ||
			slices.Contains(c.SessionPickup.SyncDev, n) || (c.MgmtInterface != "" && n == c.MgmtInterface)
	}
	var up []string
	failed := false
	for _, n := range c.Section(sec).Monitor {
		s, ok := monitor[n]
		switch {
		case ok && !s:
			failed = true
		case !keep(n) && !slices.Contains(up, n):
			up = append(up, n)
		}
	}
	if !failed {
		return nil
	}
	return up
}

// linkFailedSignal runs the signal for v's loss of the primary role by
// act, if it fires: the ports go down now and come back up after
// link_failed_signal, in a goroutine of their own.
func (a *Agent) linkFailedSignal(v *vcluster, act cluster.Action) {
	cfg := a.config()
	ports := signalPorts(cfg, v.sec, v.monitor, act)
	if len(ports) == 0 {
		return
	}
	d := cfg.Cluster.LinkFailedSignal
	v.signal.count++
	v.signal.last, v.signal.ports = act.Time, ports
	reason := fmt.Sprintf("link_failed_signal: %s down for %s", strings.Join(ports, ", "), d)
	a.log.Info("link failed signal", "vcluster", v.id, "ports", ports, "duration", d)
	a.hist.add(v.event(Event{Time: act.Time, Kind: "signal", Reason: reason}))
	s := a.lfs
	var down []string
	for _, p := range ports {
		if err := s.set(p, false); err != nil {
			a.log.Warn("link failed signal: could not set the port down", "port", p, "error", err)
			continue
		}
		down = append(down, p)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.stop:
		}
		for _, p := range down {
			if err := s.set(p, true); err != nil {
				a.log.Error("link failed signal: could not set the port up again", "port", p, "error", err)
			}
		}
	}()
}

// signalStatus is the link_failed_signal line of v's status; nil before
// the first signal.
func signalStatus(r linkSignal, now time.Time) *control.LinkFailedSignal {
	if r.count == 0 {
		return nil
	}
	return &control.LinkFailedSignal{Count: r.count, LastAgoMs: max(now.Sub(r.last), 0).Milliseconds(),
		Ports: append([]string(nil), r.ports...)}
}
