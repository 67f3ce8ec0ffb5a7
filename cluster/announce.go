package cluster

import "fmt"

// returnAnnounces is how many of a returning peer's first adverts make a
// primary re-announce the vMAC. A peer that was frozen (SIGSTOP, a paused
// VM) wakes with stale timers: it may take the vMAC for a moment and let
// it go within a millisecond, before this node heard it claim primary
// (its claim and its release leave in one heartbeat), and the switch is
// left pointing at its port. Announcing on its next adverts too repairs
// that (found by the fault campaign, issue 14).
const returnAnnounces = 3

// reannounce decides, for a primary that just heard adv from peer p,
// whether the switch may point at p's port and must be told again (one
// more GARP/NA round, ActionAnnounce). prev is p's advert before adv,
// known says p was known before adv (its prev is real), wasAlive that it
// was alive. At most one announce per advert, for the first of:
//
//   - release: p claimed primary in prev and no longer does: it let the
//     vMAC go while this node holds it (the make-before-break hand-over).
//   - unheard hold: p's takeover count changed to a non-zero value and p
//     does not claim primary: p took the vMAC since its previous advert,
//     sent its takeover GARPs, and let it go, and this node heard neither
//     the claim nor the release (heavy heartbeat loss; the chaos campaign,
//     issue 14). A count that went down means p restarted; a non-zero one
//     means it took over in its new run, unheard (any claim we had heard
//     would carry that count), so it announces too. A count that went down
//     to 0 is a restarted peer that has not held the vMAC: it is only the
//     new baseline. The count of every advert becomes the baseline, whatever
//     the roles, so each change announces at most once.
//   - return: p was lost, or is heard for the first time; its first
//     returnAnnounces adverts announce, as it may have held the vMAC
//     while this node could not hear it. The first count heard from a
//     peer is therefore only a baseline: this rule already announces.
//
// A count that grows while p claims primary (two primaries) is left to
// the election; the release rule announces when p lets go. The release
// and unheard-hold announces are PeerHeld: p did hold the vMAC, and the
// daemon renews its session entries before it announces (p may have
// forwarded packets this node never saw).
func (m *Machine) reannounce(p *peer, prev, adv Advert, known, wasAlive bool) {
	if !wasAlive {
		p.reannounce = returnAnnounces
	}
	if m.role != RolePrimary || adv.Role == RolePrimary {
		return
	}
	var why string
	held := true
	switch {
	case prev.Role == RolePrimary:
		why = "released the virtual MAC"
	case known && adv.Takeovers != prev.Takeovers && adv.Takeovers != 0:
		why = "held the virtual MAC unheard"
		if adv.Takeovers < prev.Takeovers {
			why = "restarted and held the virtual MAC unheard"
		}
		why = fmt.Sprintf("%s (takeover count %d -> %d)", why, prev.Takeovers, adv.Takeovers)
	case p.reannounce > 0:
		why, held = "is back (it may have held the virtual MAC)", false
	default:
		return
	}
	if p.reannounce > 0 {
		p.reannounce--
	}
	m.emit(Action{Type: ActionAnnounce, Reason: fmt.Sprintf("%s %s", adv.Name, why), PeerHeld: held})
}
