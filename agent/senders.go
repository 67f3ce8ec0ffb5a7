package agent

import (
	"slices"

	"github.com/hagent/hagent/heartbeat"
)

// maxSenders bounds what the run goroutine remembers per heartbeat sender
// beside the election machines (which hold at most the mode's member
// limit less one peers each): the last epoch per (serial, node id) and
// the carrier bookkeeping per serial. A cluster has at most 15 peers
// (cluster.MaxMembers, mode fgsp), but anyone
// holding the key (anyone on the segment with cluster.auth: false) can
// send authentic heartbeats under as many serials and node ids as they
// like; without a bound each one stayed for good, a map entry per frame.
// It is the replay guard's bound, so every sender the guard still tracks
// keeps its epoch (TestReceiveManySendersBounded, FuzzReceivePath).
const maxSenders = heartbeat.MaxTrackedSerials

// boundSenders forgets, once a table is over maxSenders, the senders the
// election does not know: the carrier state of serials that are no
// machine's member (it only matters for members: checkCarrier and
// noteLosses read it for them; a serial that joins is recorded again by
// the frame that makes it join), and the epochs of the senders the replay
// guard has let go of (it keeps the maxSenders heard most recently).
// Run goroutine.
func (a *Agent) boundSenders() {
	c := &a.cstate
	if len(a.peerEpochs) <= maxSenders && len(c.heardOn) <= maxSenders && len(c.names) <= maxSenders &&
		len(c.alive) <= maxSenders && len(c.lostAt) <= maxSenders {
		return
	}
	var members []string
	for _, v := range a.vcs {
		for _, m := range v.m.Status().Members {
			if !m.Self && !slices.Contains(members, m.Serial) {
				members = append(members, m.Serial)
			}
		}
	}
	member := func(serial string) bool { return slices.Contains(members, serial) }
	if len(c.heardOn) > maxSenders || len(c.names) > maxSenders || len(c.alive) > maxSenders || len(c.lostAt) > maxSenders {
		forget(c.heardOn, member)
		forget(c.names, member)
		forget(c.alive, member)
		forget(c.lostAt, member)
	}
	if len(a.peerEpochs) > maxSenders {
		// Keyed by (serial, node id): a member's serial under invented
		// node ids is not the member, so the guard decides, not the
		// machines.
		for p := range a.peerEpochs {
			if _, tracked := a.guard.Epoch(p); !tracked {
				delete(a.peerEpochs, p)
			}
		}
	}
	for len(a.peerEpochs) > maxSenders { // the guard tracks as many: not reached
		var victim heartbeat.Peer
		lowest, found := uint64(0), false
		for p, e := range a.peerEpochs {
			if !found || e < lowest {
				victim, lowest, found = p, e, true
			}
		}
		delete(a.peerEpochs, victim)
	}
}

// forget deletes the entries of m whose serial keep does not want.
func forget[V any](m map[string]V, keep func(string) bool) {
	for s := range m {
		if !keep(s) {
			delete(m, s)
		}
	}
}
