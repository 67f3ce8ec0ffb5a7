package l2chan

import (
	"crypto/cipher"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hagent/hagent/cluster"
)

// Admission: a frame from a sender epoch the channel does not know yet
// costs a key derivation (HKDF, AES key schedule, GCM setup: ~2.75 µs and
// 14 allocations) before its tag can be checked, while a frame of a known
// epoch costs one table lookup. So keys are derived only for the (sender
// name, epoch) pairs the agent admitted from the members' authenticated
// heartbeats (Admit), the derivations are rate limited, and every derived
// key is cached: anyone on the segment who sends frames with made-up names
// or epochs costs a header parse and a map lookup per frame, in the link's
// reader goroutine, before the frame reaches the channel's goroutine
// (TestUnadmittedCostsNoCrypto, TestFloodMeasure).
const (
	// maxAdmitted bounds the sender names a channel admits; the oldest
	// admission goes when a new name comes beyond it. Clusters have a few
	// members: the bound only matters when heartbeats are unauthenticated
	// (auth: false) and their names can be made up.
	maxAdmitted = 256
	// maxPeers bounds the peer state a channel keeps for senders it heard:
	// a peer is created only by an authenticated frame of an admitted name
	// (or by Send).
	maxPeers = maxAdmitted
	// keyRate and keyBurst are the token bucket of key derivations per
	// channel: a member's restart needs one, an attacker who can make the
	// agent admit names (auth: false) gets at most keyRate per second
	// (~0.6 ms of CPU per second at 2.75 µs each).
	keyRate  = 200
	keyBurst = 64
	// maxKeyCache bounds the cache of derived keys (one per admitted name
	// and epoch, the current and the previous one).
	maxKeyCache = 2 * maxAdmitted
)

// admitEntry is what the channel knows of one admitted sender name: the
// epoch of its latest heartbeat and the one before (a member's channel
// moves to its new epoch at about the time its heartbeat does, in either
// order).
type admitEntry struct {
	epoch, prev uint64
	at          atomic.Int64 // last Admit, unix ns: the oldest is evicted
}

// admission is the set of admitted (name, epoch) pairs. It is read by the
// links' reader goroutines for every frame and written by Admit, which the
// agent calls for every accepted heartbeat.
type admission struct {
	mu    sync.RWMutex
	all   bool // Config.AdmitAll
	names map[string]*admitEntry
	// learned has a token when a name or epoch was newly admitted, and
	// fresh lists them (at most maxFresh until run takes them): run
	// introduces itself to them with a probe, and probes the peers it
	// waits for at once instead of at their backoff.
	learned chan struct{}
	fresh   []keyID
}

// maxFresh bounds the admissions waiting for run's probe: every peer of
// the largest cluster (mode fgsp) twice, its current and a new epoch;
// beyond it the peers are reached by the usual probes.
const maxFresh = 2 * cluster.MaxMembers

func newAdmission(all bool) *admission {
	return &admission{all: all, names: map[string]*admitEntry{}, learned: make(chan struct{}, 1)}
}

// Admit tells the channel that node name is a member whose epoch is epoch:
// its heartbeat with that epoch was accepted. The channel derives keys only
// for admitted names and epochs (the current and the previous one of each
// name); frames of any other sender are dropped before any cryptography and
// counted in Stats.DroppedUnadmitted. The agent calls it for every
// heartbeat it accepts; it is cheap when nothing changed and safe to call
// from any goroutine.
func (c *Channel) Admit(name string, epoch uint64) {
	if len(name) == 0 || len(name) > MaxNameLen || epoch == 0 || name == c.cfg.Self {
		return
	}
	a := c.adm
	now := time.Now().UnixNano()
	a.mu.RLock()
	e := a.names[name]
	if e != nil && e.epoch == epoch {
		e.at.Store(now)
		a.mu.RUnlock()
		return
	}
	a.mu.RUnlock()
	a.mu.Lock()
	e = a.names[name]
	switch {
	case e == nil:
		if len(a.names) >= maxAdmitted {
			a.evictOldest()
		}
		e = &admitEntry{epoch: epoch}
		a.names[name] = e
	case e.epoch != epoch:
		e.prev, e.epoch = e.epoch, epoch
	}
	e.at.Store(now)
	if len(a.fresh) < maxFresh {
		a.fresh = append(a.fresh, keyID{name, epoch})
	}
	a.mu.Unlock()
	select {
	case a.learned <- struct{}{}:
	default:
	}
}

// takeFresh returns the admissions made since the last call.
func (a *admission) takeFresh() []keyID {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.fresh
	a.fresh = nil
	return f
}

// onAdmitted runs on the channel's goroutine after Admit learned names or
// epochs: it sends each newly admitted member a probe, so the member learns
// this node's epoch now (its earlier probes may have been dropped here
// before the admission), and probes at once the peers messages wait for.
func (c *Channel) onAdmitted(now time.Time) {
	for _, k := range c.adm.takeFresh() {
		p := c.peers[k.name]
		if p == nil {
			if len(c.peers) >= maxPeers {
				continue
			}
			p = c.getPeer(k.name)
		}
		if p.epoch != k.epoch && c.active >= 0 {
			c.sendControl(p, FrameProbe, c.active, nil)
		}
	}
	for _, p := range c.peers {
		if p.epoch == 0 && c.needProbe(p) {
			p.probeAt, p.probeRTO = now, p.baseRTO
		}
	}
}

// evictOldest removes the admission heard longest ago (a.mu held).
func (a *admission) evictOldest() {
	var oldest string
	var at int64
	for n, e := range a.names {
		if t := e.at.Load(); oldest == "" || t < at {
			oldest, at = n, t
		}
	}
	delete(a.names, oldest)
}

// admitted reports whether keys may be derived for src in epoch. src may
// alias a frame: the map lookup does not allocate.
func (a *admission) admitted(src []byte, epoch uint64) bool {
	if a.all {
		return true
	}
	a.mu.RLock()
	e := a.names[string(src)]
	ok := e != nil && (e.epoch == epoch || e.prev == epoch)
	a.mu.RUnlock()
	return ok
}

// prefilter is the check every received frame passes in its link's reader
// goroutine before it is queued for the channel's goroutine: a frame that
// is not a frame of this group, is not addressed to this node, or comes
// from a sender name and epoch that are not admitted is dropped (and
// counted) there, having cost a header parse and a map lookup. It parses
// the header in place and allocates nothing (TestUnadmittedCostsNoCrypto).
func (c *Channel) prefilter(b []byte) bool {
	if len(b) < frameFixedLen+2 || b[0] != FrameVersion {
		c.malformed.Add(1)
		return false
	}
	if binary.BigEndian.Uint16(b[2:]) != c.cfg.GroupID {
		c.malformed.Add(1)
		return false
	}
	epoch := binary.BigEndian.Uint64(b[4:])
	sl := int(b[frameFixedLen])
	if sl == 0 || sl > MaxNameLen || len(b) < frameFixedLen+2+sl {
		c.malformed.Add(1)
		return false
	}
	src := b[frameFixedLen+1 : frameFixedLen+1+sl]
	dl := int(b[frameFixedLen+1+sl])
	dst := b[frameFixedLen+2+sl:]
	if dl == 0 || dl > MaxNameLen || len(dst) < dl {
		c.malformed.Add(1)
		return false
	}
	if string(dst[:dl]) != c.cfg.Self || string(src) == c.cfg.Self {
		return false // addressed to another member
	}
	if !c.adm.admitted(src, epoch) {
		c.unadmitted.Add(1)
		return false
	}
	return true
}

// keyID names a derived key in the cache.
type keyID struct {
	name  string
	epoch uint64
}

// keyCache holds the keys derived for admitted senders, so that frames
// of an admitted name and epoch that do not authenticate (or arrive before
// the peer state exists) never cost a second derivation, and a token bucket
// bounds the derivations. Owned by the channel's goroutine.
type keyCache struct {
	keys   map[keyID]cipher.AEAD
	tokens float64
	last   time.Time
}

// sessionKey returns the AEAD of src in epoch, derived at most once while
// cached; false when the derivation budget is spent (the frame is dropped
// and counted in Stats.DroppedKeyLimit; the sender retransmits).
func (c *Channel) sessionKey(src string, epoch uint64) (cipher.AEAD, bool) {
	k := &c.kc
	id := keyID{src, epoch}
	if a, ok := k.keys[id]; ok {
		return a, true
	}
	now := time.Now()
	if k.last.IsZero() {
		k.tokens = keyBurst
	} else {
		k.tokens = min(keyBurst, k.tokens+now.Sub(k.last).Seconds()*keyRate)
	}
	k.last = now
	if k.tokens < 1 {
		c.keyLimited.Add(1)
		return nil, false
	}
	k.tokens--
	a, err := c.keys.session(src, epoch)
	if err != nil {
		c.malformed.Add(1)
		return nil, false
	}
	c.derived.Add(1)
	if k.keys == nil {
		k.keys = map[keyID]cipher.AEAD{}
	}
	if len(k.keys) >= maxKeyCache {
		for old := range k.keys { // any one: the bound is what matters
			delete(k.keys, old)
			break
		}
	}
	k.keys[id] = a
	return a, true
}
