package agent

import (
	"errors"
	"math/rand/v2"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/vmac"
)

// arpsRefresh is one vcluster's periodic re-announcement
// (cluster.arps_refresh): while it is primary, one round of gratuitous
// ARPs and unsolicited NAs (Network.Announce, the same frames as the
// takeover burst) every period, jittered by ±10% so that the members of
// several clusters on one segment do not fall into step. A switch that
// ages its MAC table faster than the hosts age their ARP entries then
// never forgets the port of a quiet primary. Owned by the run goroutine.
type arpsRefresh struct {
	every time.Duration // the period next was drawn with; 0 while not scheduled
	next  time.Time     // when the next round is due
	last  time.Time     // when the last round went out (zero: none yet)
	sent  uint64        // rounds sent while primary
}

// refreshJitter returns every ±10%, uniformly.
func refreshJitter(every time.Duration) time.Duration {
	return every - every/10 + rand.N(every/5+1)
}

// refreshARPs sends the rounds that are due at now (tick). A vcluster that
// is not primary, or has no data interface, has nothing scheduled: a
// secondary never announces (TestARPsRefresh), and becoming primary
// starts a new period from the first tick as primary, after the takeover
// burst's first round.
func (a *Agent) refreshARPs(now time.Time) {
	cfg := a.config()
	every := cfg.Cluster.ARPsRefresh
	for _, v := range a.vcs {
		r := &v.refresh
		if every <= 0 || v.m.Role() != cluster.RolePrimary || len(v.section(cfg).Interfaces) == 0 {
			r.every, r.next = 0, time.Time{}
			continue
		}
		if r.every != every {
			// Newly primary, or the period was reloaded.
			r.every, r.next = every, now.Add(refreshJitter(every))
			continue
		}
		if now.Before(r.next) {
			continue
		}
		r.next = now.Add(refreshJitter(every))
		err := v.net.Announce()
		if errors.Is(err, vmac.ErrNotOwned) {
			continue
		}
		if err != nil {
			// A frame could not go out (a link is down): the next round
			// tries again.
			a.log.Warn("periodic re-announcement failed", "vcluster", v.id, "error", err)
		}
		r.last = now
		r.sent++
	}
}

// refreshStatus is the arps_refresh line of v's status; nil when off.
func refreshStatus(every time.Duration, r arpsRefresh, now time.Time) *control.ARPsRefresh {
	if every <= 0 {
		return nil
	}
	out := &control.ARPsRefresh{EveryMs: every.Milliseconds(), LastAgoMs: -1, Sent: r.sent}
	if !r.last.IsZero() {
		out.LastAgoMs = max(now.Sub(r.last), 0).Milliseconds()
	}
	return out
}
