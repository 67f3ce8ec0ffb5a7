package heartbeat

import (
	"errors"
	"sync"

	"github.com/hagent/hagent/cluster"
)

// Errors returned by ReplayGuard.Check.
var (
	// ErrDuplicate reports a frame whose (epoch, seq) was already accepted.
	// It is normal — the same heartbeat arrives once per hbdev — and the
	// frame is authentic: count it as received, not as bad.
	ErrDuplicate = errors.New("heartbeat: duplicate frame")
	// ErrReplay reports a frame from an epoch older than the latest one seen
	// from its sender, or with a sequence number older than the window.
	ErrReplay = errors.New("heartbeat: replayed or stale frame")
)

const (
	// ReplayWindow is how many sequence numbers below the highest one
	// accepted from a serial are still accepted (once each), to tolerate
	// reordering between hbdevs.
	ReplayWindow = 64
	// MaxTrackedSerials bounds the memory of a ReplayGuard: four times the
	// largest cluster (16 members in mode fgsp), so members that restarted
	// under a new node id or left are kept a while; when a further sender
	// is seen, the least recently seen one is forgotten
	// (TestReplayGuardEviction).
	MaxTrackedSerials = 4 * cluster.MaxMembers
)

// Peer identifies a sender to a ReplayGuard: its serial and, when it sends
// one, its NodeID. Two members that share a serial (cloned VMs) but not a
// NodeID have separate windows.
type Peer struct {
	Serial string
	NodeID NodeID
}

// A ReplayGuard remembers, per sender (Peer), the latest epoch and a
// sliding window of the sequence numbers accepted in it. Call Check only
// for frames whose tag verified: forged frames must not move the window.
//
// The zero value is ready to use. A ReplayGuard is safe for concurrent use.
type ReplayGuard struct {
	mu    sync.Mutex
	peers map[Peer]*replayState
	clock uint64 // logical clock for least-recently-seen eviction
}

// replayState is the window of one sender. Bit i of seen is set when
// sequence number max-i was accepted; seen == 0 means no frame of epoch
// was accepted yet (a floor set by SetFloor).
type replayState struct {
	epoch    uint64
	max      uint64
	seen     uint64
	lastSeen uint64
}

// Check is CheckPeer for a sender without a NodeID.
func (g *ReplayGuard) Check(serial string, epoch, seq uint64) error {
	return g.CheckPeer(Peer{Serial: serial}, epoch, seq)
}

// CheckPeer decides whether the frame (epoch, seq) from p is new and, if
// so, records it. It returns nil for a new frame, ErrDuplicate for one
// already accepted, and ErrReplay for one from an older epoch or more than
// ReplayWindow-1 below the highest sequence number accepted in the current
// epoch. A larger epoch (a restarted peer) resets the window.
func (g *ReplayGuard) CheckPeer(p Peer, epoch, seq uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.clock++
	st, ok := g.peers[p]
	if !ok {
		g.addLocked(p, &replayState{epoch: epoch, max: seq, seen: 1, lastSeen: g.clock})
		return nil
	}
	switch {
	case epoch < st.epoch:
		return ErrReplay
	case epoch > st.epoch || st.seen == 0:
		*st = replayState{epoch: epoch, max: seq, seen: 1, lastSeen: g.clock}
		return nil
	}
	if seq > st.max {
		if d := seq - st.max; d >= ReplayWindow {
			st.seen = 1
		} else {
			st.seen = st.seen<<d | 1
		}
		st.max = seq
		st.lastSeen = g.clock
		return nil
	}
	d := st.max - seq
	if d >= ReplayWindow {
		return ErrReplay
	}
	st.lastSeen = g.clock
	if st.seen&(1<<d) != 0 {
		return ErrDuplicate
	}
	st.seen |= 1 << d
	return nil
}

func (g *ReplayGuard) addLocked(p Peer, st *replayState) {
	if g.peers == nil {
		g.peers = make(map[Peer]*replayState, MaxTrackedSerials)
	}
	if len(g.peers) >= MaxTrackedSerials {
		g.evictLocked()
	}
	g.peers[p] = st
}

// SetFloor makes every epoch of p below epoch a replay, as if a frame of
// epoch had been seen (the first frame of epoch itself is still accepted).
// An agent restores the epochs it persisted with it, so that frames
// captured before its restart stay replays. A floor below what the guard
// already knows of p changes nothing.
func (g *ReplayGuard) SetFloor(p Peer, epoch uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st, ok := g.peers[p]; ok {
		if epoch > st.epoch {
			*st = replayState{epoch: epoch, lastSeen: st.lastSeen}
		}
		return
	}
	g.addLocked(p, &replayState{epoch: epoch})
}

// Epoch returns the latest epoch known of p (seen or set as a floor).
func (g *ReplayGuard) Epoch(p Peer) (uint64, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st, ok := g.peers[p]
	if !ok {
		return 0, false
	}
	return st.epoch, true
}

// Hints fills h with the latest epoch of up to MaxHints senders that have
// a NodeID, most recently seen first, and returns how many it filled. It
// does not allocate.
func (g *ReplayGuard) Hints(h *[MaxHints]EpochHint) uint8 {
	g.mu.Lock()
	defer g.mu.Unlock()
	var seen [MaxHints]uint64
	n := 0
	for p, st := range g.peers {
		if p.NodeID.IsZero() {
			continue
		}
		// Insertion into the short list, ordered by lastSeen descending.
		i := n
		if n < MaxHints {
			n++
		} else if st.lastSeen <= seen[MaxHints-1] {
			continue
		} else {
			i = MaxHints - 1
		}
		for ; i > 0 && seen[i-1] < st.lastSeen; i-- {
			h[i], seen[i] = h[i-1], seen[i-1]
		}
		h[i], seen[i] = EpochHint{NodeID: p.NodeID, Epoch: st.epoch}, st.lastSeen
	}
	return uint8(n)
}

// evictLocked forgets the least recently seen sender.
func (g *ReplayGuard) evictLocked() {
	var victim Peer
	oldest := ^uint64(0)
	for p, st := range g.peers {
		if st.lastSeen < oldest {
			victim, oldest = p, st.lastSeen
		}
	}
	delete(g.peers, victim)
}

// Forget drops what the guard knows about every sender with serial, e.g.
// when a member is removed. Its next frame is accepted as new.
func (g *ReplayGuard) Forget(serial string) {
	g.mu.Lock()
	for p := range g.peers {
		if p.Serial == serial {
			delete(g.peers, p)
		}
	}
	g.mu.Unlock()
}

// Len returns the number of senders currently tracked.
func (g *ReplayGuard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.peers)
}
