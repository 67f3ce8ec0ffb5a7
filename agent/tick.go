package agent

import (
	"time"

	"github.com/hagent/hagent/cluster"
)

// tick is what the run loop does when its timer fires, after the queued
// heartbeats have been stepped: end takeover faults that are due, expire
// conflicts and wire problems, check direct hbdevs' carrier, let the
// machines expire peers, record the losses, send the periodic
// re-announcements that are due (refresh.go), and keep the per-sender
// tables bounded. It is a method of its own
// so that the receive path's fuzz target (FuzzReceivePath) drives the same
// code synchronously, with a clock of its own.
func (a *Agent) tick(now time.Time) {
	for _, v := range a.vcs {
		if !v.faultUntil.IsZero() && !now.Before(v.faultUntil) {
			v.faultUntil = time.Time{}
			a.log.Info("retrying after the failed takeover", "vcluster", v.id)
			v.takeoverFault = ""
			a.applyFault()
		}
	}
	a.housekeeping(now)
	a.checkCarrier(now)
	a.endFlips(now)
	a.stepAll(cluster.Event{Type: cluster.EventTick, Time: now})
	a.noteLosses(now)
	a.refreshARPs(now)
	a.boundSenders()
}
