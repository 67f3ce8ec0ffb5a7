package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hagent/hagent/vmac"
)

// guarder is a Network that keeps what it holds: vmac.Manager puts back a
// cluster address or vMAC that something else removed or changed while it
// holds them (vmac.Manager.Guard).
type guarder interface {
	Guard(ctx context.Context, report func([]vmac.Restored, error)) error
}

// restoreLogEvery bounds what restores write: the first one is logged and
// entered in the history at once; those that follow within restoreLogEvery
// (something keeps removing an address: a network manager, a script) are
// summed up in one line and one entry at the end of the window. So a fight
// costs at most one log line and one history entry per vcluster every
// 30 s, and the 256-entry history holds two hours of it beside the role
// changes. Every restore is counted (ha status interfaces[].restores,
// hagent_vmac_restores_total).
const restoreLogEvery = 30 * time.Second

// startGuards runs the guard of every vcluster whose Network has one, until
// ctx is done; wg tracks the goroutines.
func (a *Agent) startGuards(ctx context.Context, wg *sync.WaitGroup) {
	for _, v := range a.vcs {
		g, ok := v.net.(guarder)
		if !ok {
			continue
		}
		ch := make(chan restoreReport, 8)
		wg.Add(2)
		go func() {
			defer wg.Done()
			err := g.Guard(ctx, func(rs []vmac.Restored, err error) {
				select {
				case ch <- restoreReport{at: a.now(), rs: rs, err: err}:
				case <-ctx.Done():
				}
			})
			if err != nil && ctx.Err() == nil {
				a.log.Error("the guard of the virtual MACs and cluster addresses did not start: what something else removes stays removed",
					"vcluster", v.id, "error", err)
			}
		}()
		go func() {
			defer wg.Done()
			a.reportRestores(ctx, v, ch)
		}()
	}
}

type restoreReport struct {
	at  time.Time
	rs  []vmac.Restored
	err error
}

// reportRestores writes the log lines and history entries of v's restores,
// aggregated per restoreLogEvery (restoreLog).
func (a *Agent) reportRestores(ctx context.Context, v *vcluster, ch <-chan restoreReport) {
	l := restoreLog{every: restoreLogEvery}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	write := func(at time.Time, msg string, failed bool) {
		if failed {
			a.log.Error(msg, "vcluster", v.id)
		} else {
			a.log.Warn(msg, "vcluster", v.id)
		}
		a.hist.add(v.event(Event{Time: at, Kind: "restore", Reason: msg}))
	}
	for {
		select {
		case <-ctx.Done():
			if msg, failed := l.flush(a.now(), true); msg != "" {
				write(a.now(), msg, failed)
			}
			return
		case r := <-ch:
			if msg, failed := l.note(r); msg != "" {
				write(r.at, msg, failed)
			} else if d := l.due(r.at); d > 0 {
				timer.Reset(d)
			}
		case <-timer.C:
			now := a.now()
			if msg, failed := l.flush(now, false); msg != "" {
				write(now, msg, failed)
			} else if d := l.due(now); d > 0 {
				timer.Reset(d)
			}
		}
	}
}

// restoreLog aggregates restores (see restoreLogEvery). Its methods take
// the time, so that the unit test drives it without a clock.
type restoreLog struct {
	every   time.Duration
	last    time.Time // when the last line was written
	held    int       // restores not written yet
	heldErr int       // failed restores not written yet
	latest  string    // the newest of them
}

// describe says what one report put back, or why it could not.
func describe(r restoreReport) (string, bool) {
	var what []string
	for _, x := range r.rs {
		what = append(what, x.String())
	}
	msg := "put back what something else removed or changed on this primary: " + strings.Join(what, "; ")
	if r.err != nil {
		if len(what) == 0 {
			return "could not put back what something else removed or changed on this primary: " + r.err.Error(), true
		}
		msg += "; could not put back the rest: " + r.err.Error()
	}
	return msg, r.err != nil
}

// note records r and returns the line to write now, if any: the first
// report of a window is written at once, the others are held for flush.
func (l *restoreLog) note(r restoreReport) (msg string, failed bool) {
	msg, failed = describe(r)
	if l.last.IsZero() || r.at.Sub(l.last) >= l.every {
		if l.held == 0 { // nothing held back: this one opens a window
			l.last = r.at
			return msg, failed
		}
	}
	l.held++
	if failed {
		l.heldErr++
	}
	l.latest = msg
	return "", false
}

// due is how long after now the held restores are to be written (0: none
// held).
func (l *restoreLog) due(now time.Time) time.Duration {
	if l.held == 0 {
		return 0
	}
	if d := l.last.Add(l.every).Sub(now); d > 0 {
		return d
	}
	return time.Nanosecond
}

// flush returns the summary of the held restores once their window is over
// (or at once with force, when the agent stops).
func (l *restoreLog) flush(now time.Time, force bool) (msg string, failed bool) {
	if l.held == 0 || (!force && now.Sub(l.last) < l.every) {
		return "", false
	}
	msg = fmt.Sprintf("put back %d more times in %s what something else removed or changed on this primary (%d failed); the latest: %s",
		l.held, now.Sub(l.last).Round(time.Second), l.heldErr, l.latest)
	failed = l.heldErr > 0
	l.held, l.heldErr, l.latest, l.last = 0, 0, "", now
	return msg, failed
}
