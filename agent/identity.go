package agent

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/heartbeat"
)

// nodeIDOf returns this node's NodeID: the lowest MAC address of its
// hbdevs, which is stable across restarts and unique on the wire even
// when a cloned VM shares the serial (and hostname) of its template. With
// no usable MAC (tests), a hash of the node name stands in, with the
// locally administered bit set.
func nodeIDOf(links []*hbLink, name string) heartbeat.NodeID {
	var best heartbeat.NodeID
	for _, l := range links {
		hw := l.HardwareAddr()
		if len(hw) != 6 {
			continue
		}
		var id heartbeat.NodeID
		copy(id[:], hw)
		if id.IsZero() {
			continue
		}
		if best.IsZero() || id.Compare(best) < 0 {
			best = id
		}
	}
	if best.IsZero() {
		sum := sha256.Sum256([]byte("hagent node " + name))
		copy(best[:], sum[:6])
		best[0] = best[0]&^1 | 2
	}
	return best
}

// takeHints looks for a hint about this node in an authentic frame: a peer
// that has accepted an epoch of this node above the current one rejects everything this node sends as a replay (the clock went back and
// the state file was lost, or the state directory is not persistent).
// This node then moves its epoch above the hint, persists it, and rekeys
// the control channel, so that the peer hears it again at the next
// heartbeat. Called by the receivers; hints only ever raise the epoch, so
// a replayed frame cannot do harm.
func (a *Agent) takeHints(f *heartbeat.Frame) {
	for _, h := range f.Hints[:f.NumHints] {
		if h.NodeID != a.nodeID {
			continue
		}
		a.sendMu.Lock()
		if h.Epoch <= a.epoch { // equal: the peer hears this run
			a.sendMu.Unlock()
			continue
		}
		old := a.epoch
		a.epoch, a.seq = raisedEpoch(h.Epoch), 0
		e := a.epoch
		a.sendMu.Unlock()
		// Persisted outside sendMu: the heartbeat sender must never wait
		// for a disk. Should this node die before the write, its next
		// start raises its epoch again from the same hint.
		a.state.raiseEpoch(e)
		a.log.Warn("a peer knows a later epoch of this node (clock went back and the state was lost?): epoch raised so that it hears this node again",
			"peer", f.Node, "old_epoch", old, "peer_knows", h.Epoch, "epoch", e)
		a.hist.add(Event{Time: a.now(), Kind: "epoch", Reason: fmt.Sprintf("epoch raised above %s's hint (%d → %d)", f.Node, old, e)})
		if a.sync != nil {
			a.sync.ch.Rekey(e)
		}
		if a.sess != nil {
			a.sess.ch.Rekey(e) // it runs on the heartbeat's epoch too
		}
		a.sendHeartbeat() // be heard at once, not at the next tick
	}
}

// raisedEpoch is the epoch that takes this node above a peer's hint: the
// hint plus one, saturated at the largest epoch. An authentic hint of
// 2^64-1 (only a key holder can send one) must not wrap the epoch to 0,
// which every peer would reject as a replay for good; at the ceiling the
// epoch stays there and the peers hear this node again once its sequence
// passes the one they saw (TestEpochHintSaturates).
func raisedEpoch(hint uint64) uint64 {
	if hint == math.MaxUint64 {
		return hint
	}
	return hint + 1
}

// conflict is another node seen with this node's serial, or a second node
// seen with a peer's serial.
type conflict struct {
	serial string
	id     heartbeat.NodeID
	name   string
	hbdev  string
	first  time.Time
	last   time.Time
}

// conflicts tracks serial conflicts; owned by the run goroutine.
//
// The rule: among nodes that send the same serial, the one with the highest
// NodeID keeps it. Every node compares the same two NodeIDs, which differ
// (MAC addresses on one segment), so exactly one of them wins; the others
// stay faulted (no vMAC) while they hear the winner. Peers drop the
// losers' heartbeats, so the election sees one member per serial. Two
// nodes that cannot hear each other are a split brain as with any serial.
type conflicts struct {
	self map[heartbeat.NodeID]*conflict            // nodes with this node's serial
	peer map[string]map[heartbeat.NodeID]*conflict // serial → senders
	// reported is when each kind of conflict (this node's serial, a
	// peer's serial, one that ended) last went to the log and history.
	reported map[string]time.Time
}

func newConflicts() *conflicts {
	return &conflicts{self: map[heartbeat.NodeID]*conflict{}, peer: map[string]map[heartbeat.NodeID]*conflict{},
		reported: map[string]time.Time{}}
}

// due reports whether a conflict of kind key may write its log line and
// history entry at at, and if so notes that it does: at most one per
// wireLogEvery per kind. Authentic heartbeats with a serial and ever new
// node ids (a key holder, or anyone on the segment with cluster.auth:
// false) otherwise wrote one of each per frame and pushed the role
// changes out of the history (TestConflictFloodHistoryBounded). The
// fault, the election and the status problems still see every conflict.
func (c *conflicts) due(key string, at time.Time) bool {
	if t, ok := c.reported[key]; ok && at.Sub(t) < wireLogEvery {
		return false
	}
	if len(c.reported) > maxConflictSerials {
		for k, t := range c.reported {
			if at.Sub(t) >= wireLogEvery {
				delete(c.reported, k)
			}
		}
		if len(c.reported) > maxConflictSerials {
			return false // 65 kinds within a minute: enough said
		}
	}
	c.reported[key] = at
	return true
}

// maxConflictSerials bounds the serials tracked: four times the largest
// cluster (16 members in mode fgsp).
const maxConflictSerials = 4 * cluster.MaxMembers

// maxConflictIDs bounds the node ids tracked per serial (this node's, or
// a peer's): two make a conflict, a few more are cloned VMs. Beyond it
// the one heard least recently is forgotten, so a key holder inventing
// node ids cannot grow the tables (TestReceiveManySendersBounded).
const maxConflictIDs = 8

// oldestConflict returns the node id in m heard least recently.
func oldestConflict(m map[heartbeat.NodeID]*conflict) heartbeat.NodeID {
	var id heartbeat.NodeID
	var last time.Time
	first := true
	for k, x := range m {
		if first || x.last.Before(last) {
			id, last, first = k, x.last, false
		}
	}
	return id
}

// noteSelf records a frame with this node's serial from another node id
// and reports whether that node is new (not heard within the window) and
// its conflict is due to be reported (due).
func (c *conflicts) noteSelf(f *heartbeat.Frame, hbdev string, at time.Time) (isNew bool) {
	x := c.self[f.NodeID]
	if x == nil {
		if len(c.self) >= maxConflictIDs {
			delete(c.self, oldestConflict(c.self))
		}
		x = &conflict{serial: f.Serial, id: f.NodeID, first: at}
		c.self[f.NodeID] = x
		isNew = c.due("self", at)
	}
	x.name, x.hbdev, x.last = f.Node, hbdev, at
	return isNew
}

// notePeer records a peer frame and reports whether the election should
// see it (false for a sender that shares its serial with a higher NodeID
// heard within window) and whether a conflict just began and is due to
// be reported (due).
func (c *conflicts) notePeer(f *heartbeat.Frame, hbdev string, at time.Time, window time.Duration) (see, began bool) {
	m := c.peer[f.Serial]
	if m == nil {
		if len(c.peer) >= maxConflictSerials {
			c.expire(at, window)
		}
		if len(c.peer) >= maxConflictSerials {
			// All heard within the window: forget the serial heard
			// least recently (a flood of invented serials, not members).
			var victim string
			var last time.Time
			found := false
			for s, m := range c.peer {
				var l time.Time // when any sender of s was heard last
				for _, x := range m {
					if x.last.After(l) {
						l = x.last
					}
				}
				if !found || l.Before(last) {
					victim, last, found = s, l, true
				}
			}
			delete(c.peer, victim)
		}
		m = map[heartbeat.NodeID]*conflict{}
		c.peer[f.Serial] = m
	}
	x := m[f.NodeID]
	if x == nil {
		if len(m) >= maxConflictIDs {
			delete(m, oldestConflict(m))
		}
		x = &conflict{serial: f.Serial, id: f.NodeID, first: at}
		m[f.NodeID] = x
		began = len(m) == 2 && c.due("peer "+f.Serial, at)
	}
	x.name, x.hbdev, x.last = f.Node, hbdev, at
	if len(m) == 1 {
		return true, false
	}
	for id, o := range m {
		if id != f.NodeID && at.Sub(o.last) < window && id.Compare(f.NodeID) > 0 {
			return false, began
		}
	}
	return true, began
}

// nextExpiry is when the earliest conflict with this node's serial ends
// if that node stays silent (zero if none).
func (c *conflicts) nextExpiry(window time.Duration) time.Time {
	var t time.Time
	for _, x := range c.self {
		if e := x.last.Add(window); t.IsZero() || e.Before(t) {
			t = e
		}
	}
	return t
}

// expire forgets senders not heard within window.
func (c *conflicts) expire(now time.Time, window time.Duration) {
	for id, x := range c.self {
		if now.Sub(x.last) >= window {
			delete(c.self, id)
		}
	}
	for s, m := range c.peer {
		for id, x := range m {
			if now.Sub(x.last) >= window {
				delete(m, id)
			}
		}
		if len(m) == 0 {
			delete(c.peer, s)
		}
	}
}

// loser returns, when this node (own) must give up its serial, the
// conflict that beats it.
func (c *conflicts) loser(own heartbeat.NodeID) *conflict {
	var best *conflict
	for id, x := range c.self {
		if id.Compare(own) > 0 && (best == nil || id.Compare(best.id) > 0) {
			best = x
		}
	}
	return best
}

// problems describes the live conflicts, sorted.
func (c *conflicts) problems(selfName, selfSerial string, own heartbeat.NodeID) []string {
	var out []string
	for _, x := range c.self {
		keeper := selfName
		if x.id.Compare(own) > 0 {
			keeper = x.name
		}
		out = append(out, fmt.Sprintf("serial conflict: %s (node id %s, on %s) uses this node's serial %s; %s keeps it (higher node id), the other stays out of the election: give each node its own node.serial",
			x.name, x.id, x.hbdev, selfSerial, keeper))
	}
	for s, m := range c.peer {
		if len(m) < 2 {
			continue
		}
		var names []string
		for _, x := range m {
			names = append(names, fmt.Sprintf("%s (node id %s, on %s)", x.name, x.id, x.hbdev))
		}
		sort.Strings(names)
		out = append(out, fmt.Sprintf("serial conflict: %s use the same serial %s; only the one with the highest node id takes part in the election", joinAnd(names), s))
	}
	sort.Strings(out)
	return out
}

func joinAnd(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// wireWatch remembers heartbeat-looking frames that hbdev receivers drop
// for a reason an operator must hear of: frames of this group that fail
// authentication (a password mismatch splits the cluster), frames of
// another group (another cluster on the same wire), frames of another
// protocol version. Safe for concurrent use (one receiver per hbdev).
//
// Problems are aggregated per kind and hbdev, not per sender: anyone on
// the segment can send such frames from as many source MACs as they like,
// and a problem per source would write a log line and history entries per
// MAC, pushing real role changes out of the history in seconds. So a
// problem is one entry naming up to maxWireSources senders; it writes one
// log line when it becomes steady and then at most one per wireLogEvery,
// and at most one history entry per wireLogEvery as it begins, and one as
// it ends (TestBadAuthFloodAggregated). The table has at most one entry
// per kind and hbdev (hbdevs come from the configuration).
type wireWatch struct {
	mu      sync.Mutex
	entries map[wireKey]*wireEntry
	// began is when each problem last wrote its history entry; it
	// outlives the entry so a problem that comes and goes does not write
	// one per episode.
	began map[wireKey]time.Time
}

type wireKind uint8

const (
	wireBadAuth wireKind = iota + 1
	wireGroup
	wireVersion
)

// wireKey names one aggregated problem.
type wireKey struct {
	kind  wireKind
	hbdev string
}

// wireSource is one sender of a problem: its MAC and the group id or
// version it sent.
type wireSource struct {
	from  [6]byte
	value uint16
}

type wireEntry struct {
	first, last time.Time
	count       uint64 // frames since first, without a gap of a window
	active      bool   // steady: a problem in status
	reported    bool   // its beginning went to the log and history
	lastLog     time.Time
	sources     []wireSource // the first maxWireSources distinct senders
	more        bool         // more senders than sources holds
}

// wireProblem is a steady problem as status shows it.
type wireProblem struct {
	key  wireKey
	text string
}

// steadyFrames is how many frames, without a gap longer than the detection
// time between them, make a problem steady (one stray frame is not).
const steadyFrames = 3

// maxWireEntries bounds the table whatever the configuration (kinds ×
// hbdevs is far below it).
const maxWireEntries = 64

// maxWireSources bounds the senders remembered per problem (for the
// operator's sentence); the others are counted as "more".
const maxWireSources = 4

// wireLogEvery rate-limits the log line of a problem that persists, and
// the history entries of one that comes and goes.
const wireLogEvery = time.Minute

// wireReport is what note tells the caller to write.
type wireReport struct {
	log     bool   // write a log line
	history bool   // and a history entry (the problem began)
	count   uint64 // frames in this episode
	text    string // the operator's sentence
}

// note records a dropped frame from src and says what to report.
func (w *wireWatch) note(k wireKey, src wireSource, at time.Time, window time.Duration) wireReport {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.entries == nil {
		w.entries, w.began = map[wireKey]*wireEntry{}, map[wireKey]time.Time{}
	}
	e := w.entries[k]
	if e == nil {
		if len(w.entries) >= maxWireEntries {
			return wireReport{}
		}
		e = &wireEntry{first: at}
		w.entries[k] = e
	}
	if at.Sub(e.last) >= window && !e.last.IsZero() {
		e.first, e.count, e.active, e.reported, e.sources, e.more = at, 0, false, false, e.sources[:0], false
	}
	e.last = at
	e.count++
	if !slices.Contains(e.sources, src) {
		if len(e.sources) < maxWireSources {
			e.sources = append(e.sources, src)
		} else {
			e.more = true
		}
	}
	if e.count < steadyFrames {
		return wireReport{}
	}
	if !e.active {
		e.active = true
		if b, ok := w.began[k]; ok && at.Sub(b) < wireLogEvery {
			e.lastLog = b // it came back within the minute: reported then
			return wireReport{}
		}
		e.reported, e.lastLog, w.began[k] = true, at, at
		return wireReport{log: true, history: true, count: e.count, text: k.describe(e)}
	}
	if at.Sub(e.lastLog) >= wireLogEvery {
		e.lastLog = at
		return wireReport{log: true, count: e.count, text: k.describe(e)}
	}
	return wireReport{}
}

// expire drops entries not refreshed within window and returns the
// sentences of the active ones that ended and whose beginning was
// reported.
func (w *wireWatch) expire(now time.Time, window time.Duration) []wireProblem {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ended []wireProblem
	for k, e := range w.entries {
		if now.Sub(e.last) >= window {
			if e.active && e.reported {
				ended = append(ended, wireProblem{k, k.describe(e)})
			}
			delete(w.entries, k)
		}
	}
	for k, b := range w.began {
		if now.Sub(b) >= wireLogEvery && w.entries[k] == nil {
			delete(w.began, k)
		}
	}
	return ended
}

// active returns the steady problems heard within window, sorted.
func (w *wireWatch) active(now time.Time, window time.Duration) []wireProblem {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []wireProblem
	for k, e := range w.entries {
		if e.active && now.Sub(e.last) < window {
			out = append(out, wireProblem{k, k.describe(e)})
		}
	}
	slices.SortFunc(out, func(a, b wireProblem) int {
		if a.key.kind != b.key.kind {
			return int(a.key.kind) - int(b.key.kind)
		}
		return strings.Compare(a.text, b.text)
	})
	return out
}

// describe is the operator's sentence for k, with e's senders.
func (k wireKey) describe(e *wireEntry) string {
	var macs, values []string
	for _, src := range e.sources {
		macs = append(macs, net.HardwareAddr(src.from[:]).String())
		if v := fmt.Sprint(src.value); !slices.Contains(values, v) {
			values = append(values, v)
		}
	}
	from := joinAnd(macs)
	if e.more {
		from = fmt.Sprintf("more than %d senders (%s and others)", len(macs), strings.Join(macs, ", "))
		values = append(values, "others")
	}
	value := joinAnd(values)
	switch k.kind {
	case wireBadAuth:
		return fmt.Sprintf("heartbeats from %s on %s fail authentication (password mismatch?)", from, k.hbdev)
	case wireGroup:
		return fmt.Sprintf("heartbeats of group %s from %s on %s: another cluster on the same wire (give each cluster its own group_id)", value, from, k.hbdev)
	default:
		return fmt.Sprintf("heartbeats of protocol version %s from %s on %s: this node speaks version %d (upgrade one side)", value, from, k.hbdev, heartbeat.ProtocolVersion)
	}
}

// isError reports whether k makes the health ERROR (the others warn).
func (k wireKey) isError() bool { return k.kind == wireBadAuth }

// dropped classifies a frame Decode rejected and records what an operator
// must hear of. It returns true when the frame counts as a failed
// authentication (the hbdev's bad_auth counter).
func (a *Agent) dropped(l *hbLink, from net.HardwareAddr, b []byte, err error, at time.Time) bool {
	k := wireKey{hbdev: l.Name()}
	var src wireSource
	copy(src.from[:], from)
	ver, group, ok := heartbeat.Peek(b)
	switch {
	case errors.Is(err, heartbeat.ErrBadAuth):
		k.kind = wireBadAuth
	case errors.Is(err, heartbeat.ErrWrongGroup) && ok:
		k.kind, src.value = wireGroup, group
	case errors.Is(err, heartbeat.ErrVersion) && ok:
		k.kind, src.value = wireVersion, uint16(ver)
	default:
		return false
	}
	if r := a.wire.note(k, src, at, a.detection()); r.log {
		if k.isError() {
			a.log.Error(r.text, "hbdev", k.hbdev, "frames", r.count)
		} else {
			a.log.Warn(r.text, "hbdev", k.hbdev, "frames", r.count)
		}
		if r.history {
			a.hist.add(Event{Time: at, Kind: "health", Reason: r.text})
		}
	}
	return k.kind == wireBadAuth
}

// detection is the peer-loss time: hb_interval × hb_lost_threshold.
func (a *Agent) detection() time.Duration {
	c := a.config().Cluster
	return c.HBInterval * time.Duration(c.HBLostThreshold)
}

// selfConflict handles a heartbeat that carries this node's serial from
// another node (run goroutine).
func (a *Agent) selfConflict(r rxFrame, hbdev string) {
	if a.conf.noteSelf(&r.frame, hbdev, r.at) {
		cfg := a.config()
		keeper := cfg.Node.Name
		if r.frame.NodeID.Compare(a.nodeID) > 0 {
			keeper = r.frame.Node
		}
		msg := fmt.Sprintf("serial conflict: %s (node id %s, on %s) uses this node's serial %s (this node: %s, node id %s); %s keeps it, the other stays out of the election. Cloned VM? Set node.serial (or give it its own /etc/machine-id)",
			r.frame.Node, r.frame.NodeID, hbdev, cfg.Node.Serial, cfg.Node.Name, a.nodeID, keeper)
		a.log.Error(msg)
		a.hist.add(Event{Time: r.at, Kind: "health", Reason: msg})
	}
	a.applyFault()
}

// applyFault gives each vcluster's machine the fault it must have now: a
// lost serial conflict first (the node's, so every vcluster's), then the
// vcluster's failed takeover; nothing when neither holds.
func (a *Agent) applyFault() {
	conflict := ""
	if x := a.conf.loser(a.nodeID); x != nil {
		conflict = fmt.Sprintf("serial conflict: %s (node id %s) has this node's serial %s and a higher node id", x.name, x.id, x.serial)
	}
	for _, v := range a.vcs {
		reason := conflict
		if reason == "" {
			reason = v.takeoverFault
		}
		if reason == v.appliedFault {
			continue
		}
		v.appliedFault = reason
		_ = v.m.Step(cluster.Event{Type: cluster.EventFault, Time: a.now(), Fault: reason != "", Reason: reason})
	}
}

// housekeeping ends conflicts and wire problems that are no longer heard
// (run goroutine, at every tick).
func (a *Agent) housekeeping(now time.Time) {
	window := a.detection()
	before := len(a.conf.self)
	a.conf.expire(now, window)
	if len(a.conf.self) < before && a.conf.due("over", now) {
		a.log.Info("serial conflict over: the other node is no longer heard")
		a.hist.add(Event{Time: now, Kind: "health", Reason: "serial conflict over: the other node is no longer heard"})
	}
	a.applyFault()
	for _, p := range a.wire.expire(now, window) {
		a.log.Info("no longer heard: "+p.text, "hbdev", p.key.hbdev)
		a.hist.add(Event{Time: now, Kind: "health", Reason: "no longer heard: " + p.text})
	}
}

// problems returns what this node alone can see is wrong (health ERROR)
// and what it warns about, given the serial conflicts the run goroutine
// published (any goroutine: it changes nothing).
func (a *Agent) problems(conflicts []string, now time.Time) (errs, warns []string) {
	cfg := a.config()
	window := a.detection()
	errs = append(errs, conflicts...)
	for _, p := range a.wire.active(now, window) {
		if p.key.isError() {
			errs = append(errs, p.text)
		} else {
			warns = append(warns, p.text)
		}
	}
	if a.sync != nil {
		errs = append(errs, unwritableSyncPaths(a.syncRoot, cfg.Cluster.Sync.Paths)...)
		if e := a.sync.s.Summary().LastApplyError; e != "" {
			errs = append(errs, "configuration sync: cannot apply the primary's files: "+e)
		}
	}
	return errs, warns
}

// unwritableSyncPaths names every sync path that this process could not
// replace: a secondary writes a temporary file beside the path and renames
// it, so the path's directory (or the directory itself) must be writable.
// Under systemd, ProtectSystem= makes whole trees read-only (EROFS) unless
// ReadWritePaths= lists them.
func unwritableSyncPaths(root string, paths []string) []string {
	var out []string
	for _, p := range paths {
		full := filepath.Join(root, p)
		dir := full
		if fi, err := os.Stat(full); err != nil || !fi.IsDir() {
			dir = filepath.Dir(full)
		}
		if err := writable(dir); err != nil {
			out = append(out, fmt.Sprintf("sync path %s cannot be written here: %s: %v (under systemd: add it to ReadWritePaths=)", p, dir, err))
		}
	}
	return out
}
