package heartbeat

import (
	"errors"
	"sync"
)

// Errors returned by ReplayGuard.Check.
var (
	// ErrDuplicate reports a frame whose (epoch, seq) was already accepted.
	// It is normal — the same heartbeat arrives once per hbdev — and the
	// frame is authentic: count it as received, not as bad.
	ErrDuplicate = errors.New("heartbeat: duplicate frame")
	// ErrReplay reports a frame from an epoch older than the latest one seen
	// from its serial, or with a sequence number older than the window.
	ErrReplay = errors.New("heartbeat: replayed or stale frame")
)

const (
	// ReplayWindow is how many sequence numbers below the highest one
	// accepted from a serial are still accepted (once each), to tolerate
	// reordering between hbdevs.
	ReplayWindow = 64
	// MaxTrackedSerials bounds the memory of a ReplayGuard. A cluster has
	// at most 4 members; when a further serial is seen, the least recently
	// seen one is forgotten.
	MaxTrackedSerials = 16
)

// A ReplayGuard remembers, per sender serial, the latest epoch and a
// sliding window of the sequence numbers accepted in it. Call Check only
// for frames whose tag verified: forged frames must not move the window.
//
// The zero value is ready to use. A ReplayGuard is safe for concurrent use.
type ReplayGuard struct {
	mu    sync.Mutex
	peers map[string]*replayState
	clock uint64 // logical clock for least-recently-seen eviction
}

// replayState is the window of one serial. Bit i of seen is set when
// sequence number max-i was accepted.
type replayState struct {
	epoch    uint64
	max      uint64
	seen     uint64
	lastSeen uint64
}

// Check decides whether the frame (epoch, seq) from serial is new and, if
// so, records it. It returns nil for a new frame, ErrDuplicate for one
// already accepted, and ErrReplay for one from an older epoch or more than
// ReplayWindow-1 below the highest sequence number accepted in the current
// epoch. A larger epoch (a restarted peer) resets the window.
func (g *ReplayGuard) Check(serial string, epoch, seq uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.clock++
	st, ok := g.peers[serial]
	if !ok {
		if g.peers == nil {
			g.peers = make(map[string]*replayState, MaxTrackedSerials)
		}
		if len(g.peers) >= MaxTrackedSerials {
			g.evictLocked()
		}
		g.peers[serial] = &replayState{epoch: epoch, max: seq, seen: 1, lastSeen: g.clock}
		return nil
	}
	switch {
	case epoch < st.epoch:
		return ErrReplay
	case epoch > st.epoch:
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

// evictLocked forgets the least recently seen serial.
func (g *ReplayGuard) evictLocked() {
	var victim string
	oldest := ^uint64(0)
	for s, st := range g.peers {
		if st.lastSeen < oldest {
			victim, oldest = s, st.lastSeen
		}
	}
	delete(g.peers, victim)
}

// Forget drops what the guard knows about serial, e.g. when a member is
// removed. Its next frame is accepted as new.
func (g *ReplayGuard) Forget(serial string) {
	g.mu.Lock()
	delete(g.peers, serial)
	g.mu.Unlock()
}

// Len returns the number of serials currently tracked.
func (g *ReplayGuard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.peers)
}
