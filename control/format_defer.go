package control

import (
	"fmt"
	"io"

	"github.com/hagent/hagent/sessionsync"
)

// formatDefer prints FGSP defer's hold (session_pickup.defer) of
// `ha sessions`.
func formatDefer(w io.Writer, d *sessionsync.DeferStatus) {
	if d == nil {
		return
	}
	fmt.Fprintf(w, "Defer %.0fms (rule %s): held %d packets, released by ack %d, by timeout %d, bypassed %d (hold full), holding %d\n",
		d.MaxMs, d.Rule, d.Held, d.ReleasedAcked, d.ReleasedTimeout, d.Bypassed, d.Holding)
	kp := "unknown"
	if d.KernelPassed >= 0 {
		kp = fmt.Sprint(d.KernelPassed)
	}
	fmt.Fprintf(w, "    hold time p50 %.3fms, p99 %.3fms, max %.3fms; passed unqueued by the kernel (no consumer, queue full) %s; flows sent ahead %d, acknowledgements %d\n",
		d.HoldP50Ms, d.HoldP99Ms, d.HoldMaxMs, kp, d.FlowsSent, d.Acks)
}
