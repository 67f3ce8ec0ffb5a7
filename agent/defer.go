package agent

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/deferq"
	"github.com/hagent/hagent/sessionsync"
)

// FGSP defer (cluster.session_pickup.defer): a member holds the packet
// that creates a new forwarded flow until every live peer has the flow in
// its kernel, or defer has passed (package deferq; the engine's part is
// sessionsync/defer.go). It runs only with the kernel's table (never with
// the tests' in-memory one) and only in mode fgsp: in a-p one member
// forwards both directions of a flow. The NFQUEUE rule is hagent's own
// and is removed when the runner stops (TestFGSPDefer checks no rule is
// left after hagentd stops).

// newDeferRunner returns the runner when defer is on, nil otherwise.
func (a *Agent) newDeferRunner(cfg *config.Config, kernel bool) *deferq.Runner {
	sp := cfg.Cluster.SessionPickup
	if !kernel {
		return nil
	}
	if sp.Defer <= 0 || cfg.Cluster.Mode != config.ModeFGSP {
		deferq.RemoveStale() // an earlier process's, killed before it removed it
		return nil
	}
	protos := []string{"tcp"}
	if sp.Connectionless {
		protos = append(protos, "udp") // ICMP is not held
	}
	return deferq.NewRunner(deferq.RunnerConfig{Max: sp.Defer, Protocols: protos, Logger: a.log.Named("defer")})
}

// runDefer runs the hold until ctx is done (it removes its rule then).
func (a *Agent) runDefer(ctx context.Context, wg *sync.WaitGroup) {
	s := a.sess
	if s == nil || s.dq == nil {
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.dq.Run(ctx, s.e); err != nil {
			a.log.Error("defer: new flows are not held", "error", err)
			a.hist.add(Event{Time: time.Now(), Kind: "sessions", Reason: "defer off: " + err.Error()})
		}
	}()
}

// deferStatus fills the hold's part of `ha sessions`.
func (a *Agent) deferStatus(st *sessionsync.Status) {
	if a.sess == nil || a.sess.dq == nil {
		return
	}
	d := a.sess.dq.Status()
	ms := func(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }
	ds := &sessionsync.DeferStatus{MaxMs: ms(d.Defer), Rule: d.Rule, Held: d.Held, ReleasedAcked: d.Acked,
		ReleasedTimeout: d.TimedOut, Bypassed: d.Bypassed, Holding: d.Holding, KernelPassed: d.KernelPassed,
		Received: d.Received, Undecoded: d.Undecoded, HoldP50Ms: ms(d.P50), HoldP99Ms: ms(d.P99), HoldMaxMs: ms(d.Max)}
	ds.FlowsSent, ds.Acks = a.sess.e.DeferCounts()
	st.Defer = ds
}

// deferExposure lists the queue and the rule.
func (a *Agent) deferExposure(e *control.Exposure) {
	if a.sess == nil || a.sess.dq == nil {
		return
	}
	st := a.sess.dq.Status()
	e.Sockets = append(e.Sockets,
		control.Socket{Kind: "netlink", Address: "NETLINK_NETFILTER nfqueue " + strconv.Itoa(int(st.QueueNum)), Direction: "rx/tx",
			Purpose: "session_pickup.defer: holds new flows' first packets (fail-open)"},
		control.Socket{Kind: "rule", Address: deferq.RuleText(st.QueueNum), Direction: "rx",
			Purpose: "session_pickup.defer: hagent's own chain, installed at start, removed at stop (" + st.Rule + ")"})
}
