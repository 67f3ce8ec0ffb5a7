package agent

import (
	"fmt"
	"strings"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/config"
)

// Carrier detection (hbdev direct: true). A direct hbdev is a cable to the
// peers' NICs: when a box loses power or its kernel dies, the NIC at this
// end loses carrier at once. A peer whose every recently used hbdev is
// direct and has been without carrier for carrier_debounce is lost now,
// not after hb_interval × hb_lost_threshold. A heartbeat heard again
// undoes the loss, as after a loss by the threshold. All of it runs in the
// run goroutine.

// carrierPollEvery is how often the carrier of direct hbdevs is read (the
// link notifications of the kernel come up to a second late; see
// vmac.PollCarrier): twice per debounce, at least every 100 ms and at most
// every millisecond. A loss is then acted on between one debounce and one
// debounce plus half a debounce after it began; each wake-up costs CPU.
func carrierPollEvery(debounce time.Duration) time.Duration {
	return min(max(debounce/2, time.Millisecond), 100*time.Millisecond)
}

// directHBDevs returns the names of the direct hbdevs.
func directHBDevs(c *config.Cluster) []string {
	var out []string
	for _, h := range c.HBDevs {
		if h.Direct {
			out = append(out, h.Name)
		}
	}
	return out
}

// carrierState is the run goroutine's view of direct hbdevs and of the
// hbdevs each peer was heard on.
type carrierState struct {
	downSince map[string]time.Time   // direct hbdev → carrier lost at
	checked   map[string]bool        // the debounce of this loss has been evaluated
	heardOn   map[string][]time.Time // peer serial → last heartbeat per hbdev index
	lostAt    map[string]time.Time   // peer serial → lost by carrier at (older frames are stale)
	names     map[string]string      // peer serial → node name
	alive     map[string]bool        // peer serial → alive at the last tick (noteLosses)
}

func newCarrierState() carrierState {
	return carrierState{downSince: map[string]time.Time{}, checked: map[string]bool{},
		heardOn: map[string][]time.Time{}, lostAt: map[string]time.Time{}, names: map[string]string{}}
}

// heard records a heartbeat of serial on hbdev index link at time at and
// reports whether it is current: false for a frame received before the
// carrier loss that declared its sender lost (still queued when the loss
// was processed), which must not bring the peer back.
func (a *Agent) carrierHeard(serial, name string, link int, at time.Time) bool {
	c := &a.cstate
	if t, ok := c.lostAt[serial]; ok {
		if !at.After(t) {
			return false
		}
		delete(c.lostAt, serial)
	}
	a.carrierSeen(serial, name, link, at)
	return true
}

// carrierSeen records that serial was heard on hbdev index link at at
// (also a duplicate: the same heartbeat on a second hbdev).
func (a *Agent) carrierSeen(serial, name string, link int, at time.Time) {
	c := &a.cstate
	h := c.heardOn[serial]
	if len(h) < len(a.links) {
		h = append(h, make([]time.Time, len(a.links)-len(h))...)
		c.heardOn[serial] = h
	}
	if at.After(h[link]) {
		h[link] = at
	}
	c.names[serial] = name
}

// noteLosses records in the log and history the peers the lost threshold
// has just taken (the carrier path records its own), so that the history
// says which path detected every loss.
func (a *Agent) noteLosses(now time.Time) {
	c := &a.cstate
	if c.alive == nil {
		c.alive = map[string]bool{}
	}
	st := a.m.Status()
	for _, m := range st.Members {
		if m.Self {
			continue
		}
		was := c.alive[m.Serial]
		c.alive[m.Serial] = m.Alive
		if was && !m.Alive && m.LostBy == "heartbeat" {
			a.log.Warn("peer lost: no heartbeat within the lost threshold", "peer", m.Name, "lost_after", a.detection())
			a.hist.add(Event{Time: now, Kind: "lost", Reason: fmt.Sprintf("lost: %s, %s (detected by heartbeat)", m.Name, m.LostWhy)})
		}
	}
}

// carrierChanged notes a carrier change of hbdev name; debounced says the
// loss has lasted carrier_debounce already (the carrier poll).
func (a *Agent) carrierChanged(name string, up, debounced bool, now time.Time) {
	if !a.isDirect(name) {
		return
	}
	c := &a.cstate
	if up {
		if since, ok := c.downSince[name]; ok && !c.checked[name] {
			a.log.Debug("direct hbdev carrier back within the debounce", "hbdev", name, "down_for", now.Sub(since))
		}
		delete(c.downSince, name)
		delete(c.checked, name)
		return
	}
	if _, ok := c.downSince[name]; !ok {
		c.downSince[name] = now
		if debounced {
			c.downSince[name] = now.Add(-a.config().Cluster.CarrierDebounce)
		}
		c.checked[name] = false
	}
	a.checkCarrier(now)
}

func (a *Agent) isDirect(name string) bool {
	for _, h := range a.config().Cluster.HBDevs {
		if h.Name == name {
			return h.Direct
		}
	}
	return false
}

// carrierDeadline is when the next pending debounce ends (zero if none).
func (a *Agent) carrierDeadline() time.Time {
	c := &a.cstate
	deb := a.config().Cluster.CarrierDebounce
	var t time.Time
	for name, since := range c.downSince {
		if c.checked[name] {
			continue
		}
		if d := since.Add(deb); t.IsZero() || d.Before(t) {
			t = d
		}
	}
	return t
}

// checkCarrier declares lost every alive peer whose recent hbdevs are all
// direct and without carrier for the debounce.
func (a *Agent) checkCarrier(now time.Time) {
	c := &a.cstate
	cfg := a.config()
	deb := cfg.Cluster.CarrierDebounce
	confirmed := false
	for name, since := range c.downSince {
		if !c.checked[name] && !now.Before(since.Add(deb)) {
			c.checked[name] = true
			confirmed = true
		}
	}
	if !confirmed {
		return
	}
	recent := a.detection()
	for _, serial := range a.m.AliveSerials(nil) {
		var on []string
		var latestDown time.Time
		all := true
		for i, t := range c.heardOn[serial] {
			if t.IsZero() || now.Sub(t) >= recent {
				continue
			}
			name := a.links[i].Name()
			on = append(on, name)
			since, down := c.downSince[name]
			if !down || !c.checked[name] {
				all = false
				break
			}
			if since.After(latestDown) {
				latestDown = since
			}
		}
		if !all || len(on) == 0 {
			continue
		}
		why := "carrier down on " + strings.Join(on, ", ")
		c.lostAt[serial] = latestDown
		peer := c.names[serial]
		a.log.Warn("peer lost: carrier down on every direct hbdev it was heard on", "peer", peer, "hbdevs", strings.Join(on, ","),
			"down_for", now.Sub(latestDown).Round(time.Microsecond), "debounce", deb)
		a.hist.add(Event{Time: now, Kind: "lost", Reason: fmt.Sprintf("lost: %s, %s (detected by carrier, %s debounce)", peer, why, deb)})
		a.stepAll(cluster.Event{Type: cluster.EventPeerLost, Time: now, Serial: serial, Reason: why}) // membership is shared
	}
}
