package l2chan

import (
	"slices"
	"time"
)

func (c *Channel) nextDeadline(now time.Time) (time.Time, bool) {
	var d time.Time
	set := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	for _, p := range c.peers {
		if len(p.inflight) > 0 {
			set(p.rtoAt)
		}
		if c.needProbe(p) {
			set(p.probeAt)
		}
		if c.waiting(p) {
			set(p.lastProgress.Add(c.cfg.PeerTimeout))
		}
	}
	if c.wantLinkProbe() {
		if c.linkProbe.IsZero() {
			c.linkProbe = now.Add(c.cfg.LinkProbeInterval)
		}
		set(c.linkProbe)
	}
	return d, !d.IsZero()
}

// waiting reports whether some Send to p still waits for its result.
func (c *Channel) waiting(p *peer) bool {
	for _, m := range p.queue {
		if !m.notified {
			return true
		}
	}
	for _, m := range p.sentMsgs {
		if !m.notified {
			return true
		}
	}
	return false
}

func (c *Channel) needProbe(p *peer) bool {
	if len(p.queue) == 0 && len(p.inflight) == 0 {
		return false
	}
	return p.epoch == 0 || (p.peerWnd == 0 && len(p.inflight) == 0)
}

func (c *Channel) wantLinkProbe() bool {
	for i := 0; i < c.active; i++ {
		if c.links[i].up && c.links[i].suspect {
			return true
		}
	}
	return false
}

func (c *Channel) onTimer(now time.Time) {
	for _, p := range c.peers {
		if len(p.inflight) > 0 && !p.rtoAt.IsZero() && !now.Before(p.rtoAt) {
			c.onRTO(p, now)
		}
		if c.needProbe(p) && !now.Before(p.probeAt) {
			if l := c.active; l >= 0 {
				c.sendControl(p, FrameProbe, l, nil)
			}
			p.probeAt = now.Add(p.probeRTO)
			p.probeRTO = min(2*p.probeRTO, c.cfg.MaxRTO)
		}
		if c.waiting(p) && now.Sub(p.lastProgress) >= c.cfg.PeerTimeout {
			c.log.Warn("peer unreachable", "peer", p.name, "silent_for", now.Sub(p.lastProgress).Round(time.Millisecond))
			for _, m := range p.queue {
				m.finish(ErrPeerUnreachable)
			}
			for _, m := range p.sentMsgs {
				m.finish(ErrPeerUnreachable)
			}
			for _, f := range p.inflight {
				f.msg.finish(ErrPeerUnreachable)
			}
			p.queue = slices.DeleteFunc(p.queue, func(m *outMsg) bool { return !m.started })
			p.lastProgress = now
		}
	}
	if c.wantLinkProbe() && !c.linkProbe.IsZero() && !now.Before(c.linkProbe) {
		for i := 0; i < c.active; i++ {
			if !c.links[i].up || !c.links[i].suspect {
				continue
			}
			for _, p := range c.peers {
				if p.epoch != 0 {
					c.sendControl(p, FrameProbe, i, nil)
				}
			}
		}
		c.linkProbe = now.Add(c.cfg.LinkProbeInterval)
	}
	if !c.wantLinkProbe() {
		c.linkProbe = time.Time{}
	}
}

func (c *Channel) onRTO(p *peer, now time.Time) {
	c.timeoutsN.Add(1)
	p.timeouts++
	if p.timeouts >= c.cfg.FailoverAfter && c.active >= 0 {
		// Declare the active link dead if another usable link exists.
		other := false
		for i, l := range c.links {
			if i != c.active && l.up && !l.suspect {
				other = true
			}
		}
		if other {
			l := c.links[c.active]
			c.log.Warn("no acknowledgement on link, declaring it dead", "link", l.name, "peer", p.name, "timeouts", p.timeouts)
			c.linkMu.Lock()
			l.suspect = true
			c.linkMu.Unlock()
			c.relink("no acknowledgement from " + p.name)
			return // relink retransmitted everything
		}
	}
	p.rto = min(2*p.rto, c.cfg.MaxRTO)
	// A first timeout resends only the oldest unacknowledged fragment: a
	// receiver that was merely busy acknowledges the rest with its next
	// ack and nothing else goes twice. If that ack stops right at this
	// fragment, the fragments after it are lost and onAck resends them;
	// a second timeout in a row resends everything unacknowledged.
	p.rtoSeq = 0
	for _, f := range p.inflight {
		if !f.sacked {
			c.transmit(p, f, now)
			if p.timeouts == 1 {
				p.rtoSeq = f.seq
				break
			}
		}
	}
	p.rtoAt = now.Add(p.rto)
}
