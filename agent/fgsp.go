package agent

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/sessionsync"
)

// FGSP (cluster.mode fgsp, docs/sessionsync.md §7): every member forwards with its own
// addresses, so there is no vMAC and no cluster address to take over (the
// agent runs with noNetwork: config rejects interfaces in this mode). The
// election still runs, for configuration sync from the elected primary
// and for the status; session sync does not follow it: every member
// copies its flows to every live peer and applies theirs
// (sessionsync.Config.Symmetric), whatever its role.

// updateSessionsFGSP gives the engine every live peer and runs
// down_until_synced. Runs on the run goroutine.
func (a *Agent) updateSessionsFGSP() {
	s := a.sess
	var peers []string
	for _, m := range a.m.Status().Members {
		if !m.Self && m.Alive {
			peers = append(peers, m.Name)
		}
	}
	slices.Sort(peers)
	if !s.primary || !slices.Equal(peers, s.peers) {
		s.primary, s.peers = true, peers
		s.e.SetRole(true, peers)
	}
	a.fgspDownUntilSynced(peers)
}

// fgspDownUntilSynced brings the down_until_synced interfaces up once a
// complete bulk copy from every live peer is in (FGSP
// down-intfs-before-sess-sync), when no peer has appeared within
// hello_holddown, or after sessionHoldMax (logged as a timeout).
func (a *Agent) fgspDownUntilSynced(peers []string) {
	s := a.sess
	if len(s.down) == 0 {
		return
	}
	now := a.now()
	var missing []string
	for _, p := range peers {
		if !s.e.BulkDoneFrom(p) {
			missing = append(missing, p)
		}
	}
	why := ""
	switch {
	case len(peers) > 0 && len(missing) == 0:
		why = fmt.Sprintf("bulk session copies from %v complete", peers)
	case now.Sub(s.holdStart) >= sessionHoldMax:
		why = fmt.Sprintf("no complete bulk session copy from %v within %s; going on without it", missing, sessionHoldMax)
		a.log.Warn("down_until_synced ended by its timeout", "missing", missing, "max", sessionHoldMax)
	case len(peers) == 0 && now.Sub(s.holdStart) >= a.config().Cluster.HelloHolddown:
		why = "no peer to copy sessions from"
	default:
		return
	}
	for _, n := range s.down {
		if err := setLinkUp(n, true); err != nil {
			a.log.Warn("down_until_synced: cannot set the interface up", "interface", n, "error", err)
		}
	}
	a.log.Info("down_until_synced: interfaces up", "interfaces", s.down, "reason", why)
	a.hist.add(Event{Time: now, Kind: "sessions", Reason: fmt.Sprintf("down_until_synced %v up: %s", s.down, why)})
	s.down = nil
}

// fgspPeerHealth adds each member's heartbeat health to the session
// status ("alive", "lost"), with a row for a member session sync never
// copied to; a peer copied to that is no member any more is lost.
func fgspPeerHealth(st *sessionsync.Status, members []cluster.Member) {
	for _, m := range members {
		if m.Self {
			continue
		}
		hb := "lost"
		if m.Alive {
			hb = "alive"
		}
		i := slices.IndexFunc(st.Peers, func(p sessionsync.PeerStatus) bool { return p.Node == m.Name })
		if i < 0 {
			st.Peers = append(st.Peers, sessionsync.PeerStatus{Node: m.Name})
			i = len(st.Peers) - 1
		}
		st.Peers[i].Heartbeat = hb
	}
	for i := range st.Peers {
		if st.Peers[i].Heartbeat == "" {
			st.Peers[i].Heartbeat = "lost" // not a member any more (it left, or was forgotten)
		}
	}
	slices.SortFunc(st.Peers, func(x, y sessionsync.PeerStatus) int { return strings.Compare(x.Node, y.Node) })
}
