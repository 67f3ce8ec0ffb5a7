package sessionsync

import "time"

// DefaultMaxTracked bounds the sender's bookkeeping maps (Config.MaxTracked):
// the default nf_conntrack_max of a machine with 4 GiB or more, so a table
// the kernel allows fits. The agent sets the local nf_conntrack_max
// (KernelMaxFlows). An entry costs about 100 bytes.
const DefaultMaxTracked = 262144

// boundBook keeps lastSent and born within cfg.MaxTracked (e.mu held).
// Their entries go with the flow's destroy event; events lost to an
// overrun, or the flows of a primary that became secondary, would leave
// them forever. Above the bound the stale entries go first: a lastSent
// expiry in the past (the flow would have expired unless refreshed; the
// refresh re-sends it once if it lives), a birth older than Delay of a
// flow not pending (an update of an unknown flow counts as old anyway).
// If that is not enough, any entries go until 7/8 of the bound is left,
// counted bookkeeping_evicted: an evicted flow is at worst sent once more
// (lastSent) or sent at once instead of after Delay (born).
// TestBookkeepingBounded.
func (e *Engine) boundBook(now time.Time) {
	limit := e.cfg.MaxTracked
	if len(e.lastSent) <= limit && len(e.born) <= limit {
		return
	}
	low := limit - limit/8
	if len(e.lastSent) > limit {
		for k, exp := range e.lastSent {
			if exp < now.UnixNano() {
				delete(e.lastSent, k)
			}
		}
		for k := range e.lastSent {
			if len(e.lastSent) <= low {
				break
			}
			delete(e.lastSent, k)
			e.c.bookEvicted++
		}
	}
	if len(e.born) > limit {
		for k, b := range e.born {
			if _, young := e.pending[k]; !young && now.Sub(b) >= e.cfg.Delay {
				delete(e.born, k)
			}
		}
		for k := range e.born {
			if len(e.born) <= low {
				break
			}
			delete(e.born, k) // a pending flow is then released at the next tick
			e.c.bookEvicted++
		}
	}
}
