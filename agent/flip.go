package agent

import (
	"fmt"
	"strings"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/config"
)

// pingserver.flip_timeout (FGCP pingserver-flip-timeout): a node that took
// the primary role because it had more monitored items up (a failover) does
// not count its own pingserver targets going down until it has been primary
// for flip_timeout, so two members that both lose a remote target do not
// hand the role back and forth. Links and health checks count at once.
// TestPingFlipTimeout shows it.

// isPingTarget reports whether the monitored item name is a pingserver
// target ("port1>10.9.0.254").
func isPingTarget(name string) bool {
	return strings.Contains(name, ">") && !strings.HasPrefix(name, checkPrefix)
}

// startFlip opens v's flip window when act makes v primary on monitored
// items, and closes it (to be recounted at the next tick) when v leaves
// the primary role.
func (v *vcluster) startFlip(cfg *config.Config, act cluster.Action) {
	if act.Role != cluster.RolePrimary {
		if !v.flipUntil.IsZero() {
			v.flipUntil = act.Time
		}
		return
	}
	ft := v.section(cfg).PingServer.FlipTimeout
	if ft > 0 && strings.Contains(act.Reason, "monitored") {
		v.flipUntil = act.Time.Add(ft)
	}
}

// monitorUp counts v's monitored items up at now; held are the pingserver
// targets down that count as up inside the flip window.
func (v *vcluster) monitorUp(monitored []string, now time.Time) (n, held int) {
	flip := now.Before(v.flipUntil) && v.m.Role() == cluster.RolePrimary
	for _, m := range monitored {
		s, ok := v.monitor[m]
		switch {
		case !ok || s:
			n++
		case flip && isPingTarget(m):
			n++
			held++
		}
	}
	return n, held
}

// endFlips closes the flip windows that are due and counts the targets
// they held.
func (a *Agent) endFlips(now time.Time) {
	cfg := a.config()
	for _, v := range a.vcs {
		if v.flipUntil.IsZero() || now.Before(v.flipUntil) {
			continue
		}
		v.flipUntil = time.Time{}
		monitored := v.monitored(cfg)
		n, _ := v.monitorUp(monitored, now)
		if n == v.m.Status().MonitorUp {
			continue
		}
		a.log.Info("pingserver flip_timeout over", "vcluster", v.id, "monitor_up", n, "monitor_total", len(monitored))
		a.hist.add(v.event(Event{Time: now, Kind: "link", Reason: fmt.Sprintf("pingserver flip_timeout over (%d/%d up)", n, len(monitored))}))
		_ = v.m.Step(cluster.Event{Type: cluster.EventMonitor, Time: now, MonitorUp: n})
	}
}
