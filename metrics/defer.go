package metrics

import (
	"github.com/hagent/hagent/sessionsync"
	"github.com/prometheus/client_golang/prometheus"
)

// FGSP defer's hold (cluster.session_pickup.defer), when it runs.
var (
	descDeferPackets = prometheus.NewDesc("hagent_sessions_defer_packets_total",
		"Packets of new flows the FGSP defer hold took: held, and of them released once every live peer had the flow (acked) or at defer (timeout); bypassed: not held, the hold full.",
		[]string{"outcome"}, nil)
	descDeferHolding = prometheus.NewDesc("hagent_sessions_defer_holding_packets", "Packets the FGSP defer hold holds now.", nil, nil)
	descDeferKernel  = prometheus.NewDesc("hagent_sessions_defer_kernel_passed_packets",
		"Packets hagent's NFQUEUE rule matched that the kernel let pass unqueued (no consumer, or the queue full: fail-open).", nil, nil)
	descDeferHold = prometheus.NewDesc("hagent_sessions_defer_hold_seconds",
		"How long new flows' first packets were held (stat p50, p99: of the last 1024 flows; max: since the agent started).", []string{"stat"}, nil)
)

// collectDefer sends the hold's metrics (nothing when defer is off).
func collectDefer(g func(*prometheus.Desc, float64, ...string), cnt func(*prometheus.Desc, uint64, ...string), d *sessionsync.DeferStatus) {
	if d == nil {
		return
	}
	cnt(descDeferPackets, d.Held, "held")
	cnt(descDeferPackets, d.ReleasedAcked, "acked")
	cnt(descDeferPackets, d.ReleasedTimeout, "timeout")
	cnt(descDeferPackets, d.Bypassed, "bypassed")
	g(descDeferHolding, float64(d.Holding))
	if d.KernelPassed >= 0 {
		g(descDeferKernel, float64(d.KernelPassed))
	}
	g(descDeferHold, d.HoldP50Ms/1000, "0.5")
	g(descDeferHold, d.HoldP99Ms/1000, "0.99")
	g(descDeferHold, d.HoldMaxMs/1000, "max")
}
