package l2chan

import (
	"time"
)

func (c *Channel) setLinkUp(lc linkCmd) {
	for _, l := range c.links {
		if l.name == lc.name {
			c.linkMu.Lock()
			changed := l.up != lc.up
			l.up = lc.up
			if lc.up {
				l.suspect = false
			}
			c.linkMu.Unlock()
			if changed {
				c.log.Info("link state set", "link", l.name, "up", lc.up)
			}
			c.relink("link set " + map[bool]string{true: "up", false: "down"}[lc.up])
			return
		}
	}
	c.log.Warn("SetLinkUp for unknown link", "link", lc.name)
}

// pickLink returns the highest-priority link that is up and alive, else
// the highest-priority link that is up, else -1.
func (c *Channel) pickLink() int {
	fallback := -1
	for i, l := range c.links {
		if !l.up {
			continue
		}
		if !l.suspect {
			return i
		}
		if fallback < 0 {
			fallback = i
		}
	}
	return fallback
}

// relink re-evaluates the active link; on a change everything in flight is
// sent again on the new link.
func (c *Channel) relink(reason string) {
	n := c.pickLink()
	if n == c.active {
		return
	}
	from, to := "", ""
	if c.active >= 0 {
		from = c.links[c.active].name
	}
	if n >= 0 {
		to = c.links[n].name
	}
	c.log.Info("control channel link change", "from", from, "to", to, "reason", reason)
	c.failovers.Add(1)
	c.active = n
	c.activeName.Store(to)
	now := time.Now()
	for _, p := range c.peers {
		p.timeouts = 0
		p.rto = p.baseRTO
		for _, f := range p.inflight {
			if !f.sacked {
				c.transmit(p, f, now)
			}
		}
		if len(p.inflight) > 0 {
			p.rtoAt = now.Add(p.rto)
		}
	}
}

func (c *Channel) linkAlive(li int) {
	l := c.links[li]
	l.rx.Add(1)
	if l.suspect && l.up {
		c.linkMu.Lock()
		l.suspect = false
		c.linkMu.Unlock()
		c.log.Info("link answers again", "link", l.name)
		c.relink("link " + l.name + " answers again")
	}
}
