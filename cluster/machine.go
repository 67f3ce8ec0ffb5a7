package cluster

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Machine is the election state machine of one node. It is not safe for
// concurrent use: one goroutine owns it (see package doc).
type Machine struct {
	cfg Config

	role       Role
	roleSince  time.Time
	primary    string // serial of the primary as seen from here
	reason     string // why the primary was selected
	lastChange time.Time

	startedAt  time.Time
	upSince    time.Time // HA uptime origin; reset on monitored-link failure
	heardPeers bool
	monitorUp  int // as counted in the election
	// monitorSeen is the number last reported by EventMonitor and
	// monitorSeenAt when it last changed; a rise above monitorUp counts
	// once it has held still for MonitorHolddown (promoteMonitor).
	monitorSeen   int
	monitorSeenAt time.Time
	monitorRoseAt time.Time // the step in which the last rise counted
	// winSince is when this node, not primary, started winning the
	// election continuously (zero when it does not win); the
	// override_wait_time runs from it.
	winSince    time.Time
	failoverSet bool
	fault       string

	// takeovers counts this node's takeovers of the vMAC (becoming
	// primary) since New; it travels in every advert (Advert.Takeovers).
	takeovers uint64

	leaving       bool // shutdown requested
	leaveDeadline time.Time
	stopped       bool

	now     time.Time
	peers   map[string]*peer
	actions []Action
}

type peer struct {
	adv       Advert
	lastHeard time.Time
	upSince   time.Time
	alive     bool
	lostWhy   string // "" = by the lost threshold; else the EventPeerLost reason
	// reannounce counts the adverts of a peer that came back after which
	// a primary re-announces the vMAC (returnAnnounces).
	reannounce int
}

// New returns a machine in the starting (hello) state at time now. All
// monitored links are assumed up until an EventMonitor says otherwise.
func New(cfg Config, now time.Time) *Machine {
	if cfg.LostThreshold < 1 {
		cfg.LostThreshold = 1
	}
	if cfg.HBInterval <= 0 {
		cfg.HBInterval = 200 * time.Millisecond
	}
	return &Machine{
		cfg:         cfg,
		role:        RoleStarting,
		roleSince:   now,
		startedAt:   now,
		upSince:     now,
		monitorUp:   cfg.MonitorTotal,
		monitorSeen: cfg.MonitorTotal,
		now:         now,
		peers:       make(map[string]*peer),
	}
}

// MonitorRoseAt is the time of the step in which a rise of the monitored
// items up last counted, after its hold-down: the actions of that step
// carry this time, so the daemon can name the item whose change caused
// them (zero before any).
func (m *Machine) MonitorRoseAt() time.Time { return m.monitorRoseAt }

// Role returns the current role.
func (m *Machine) Role() Role { return m.role }

// Stopped reports whether a shutdown has completed.
func (m *Machine) Stopped() bool { return m.stopped }

// Step feeds one event to the machine. It returns an error, and changes
// nothing, for events it rejects (see the Err variables).
func (m *Machine) Step(ev Event) error {
	if m.stopped {
		return ErrStopped
	}
	if ev.Time.After(m.now) {
		m.now = ev.Time
	}
	now := m.now
	switch ev.Type {
	case EventTick:
		m.expire(now)
	case EventHeartbeat:
		if err := m.heard(ev.Advert, now); err != nil {
			return err
		}
	case EventMonitor:
		m.monitorChanged(ev.MonitorUp, now)
	case EventFailoverSet:
		if m.failoverSet {
			return nil
		}
		m.failoverSet = true
		m.emit(Action{Type: ActionHeartbeat, Reason: "ha failover set"})
	case EventFailoverUnset:
		if !m.failoverSet {
			return nil
		}
		m.failoverSet = false
		m.emit(Action{Type: ActionHeartbeat, Reason: "ha failover unset"})
	case EventFault:
		m.setFault(ev.Fault, ev.Reason)
	case EventShutdown:
		m.shutdown(now)
		return nil
	case EventPeerLost:
		p, ok := m.peers[ev.Serial]
		if !ok || !p.alive {
			return nil
		}
		p.alive = false
		p.lostWhy = ev.Reason
		if p.lostWhy == "" {
			p.lostWhy = "lost"
		}
	default:
		return ErrBadEvent
	}
	m.promoteMonitor(now)
	m.decide(now)
	return nil
}

// Ready returns the actions produced since the last call and forgets them.
func (m *Machine) Ready() Ready {
	rd := Ready{Actions: m.actions}
	m.actions = nil
	return rd
}

// HasReady reports whether actions are pending.
func (m *Machine) HasReady() bool { return len(m.actions) > 0 }

// NextDeadline is the earliest time at which a tick can change anything: a
// peer's loss, the end of hello_holddown or of failover_hold_time, the end
// of a hand-over. The daemon arms its timer for it (besides its regular
// tick), so a lost peer is noticed to the millisecond. Zero means none.
func (m *Machine) NextDeadline() time.Time {
	var d time.Time
	min := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	future := func(t time.Time) {
		if t.After(m.now) {
			min(t)
		}
	}
	if m.stopped {
		return d
	}
	for _, p := range m.peers {
		if p.alive {
			// A past expiry is due now: one tick marks the peer lost.
			min(p.lastHeard.Add(m.cfg.LostAfter()))
		}
	}
	if m.role == RoleStarting {
		future(m.startedAt.Add(m.cfg.HelloHolddown))
		if m.heardPeers {
			future(m.startedAt.Add(m.joinDelay()))
		}
	}
	if m.cfg.FailoverHoldTime > 0 && !m.lastChange.IsZero() {
		future(m.lastChange.Add(m.cfg.FailoverHoldTime))
	}
	if m.leaving {
		min(m.leaveDeadline)
	}
	if m.monitorSeen > m.monitorUp {
		future(m.monitorSeenAt.Add(m.cfg.MonitorHolddown))
	}
	if m.cfg.OverrideWaitTime > 0 && !m.winSince.IsZero() {
		future(m.winSince.Add(m.cfg.OverrideWaitTime))
	}
	return d
}

// Advert returns what this node announces now.
func (m *Machine) Advert() Advert {
	return Advert{
		Name:         m.cfg.Name,
		Serial:       m.cfg.Serial,
		Role:         m.role,
		Priority:     m.cfg.Priority,
		Override:     m.cfg.Override,
		FailoverSet:  m.failoverSet,
		Leaving:      m.leaving,
		MonitorUp:    m.monitorUp,
		MonitorTotal: m.cfg.MonitorTotal,
		Uptime:       m.now.Sub(m.upSince),
		Primary:      m.primary,
		Takeovers:    m.takeovers,
	}
}

// Status returns a snapshot for the operator. Members are self first, then
// peers by name.
func (m *Machine) Status() Status {
	st := Status{
		Name:         m.cfg.Name,
		Serial:       m.cfg.Serial,
		Role:         m.role,
		RoleSince:    m.roleSince,
		Primary:      m.primary,
		PrimaryName:  m.nameOf(m.primary),
		Reason:       m.reason,
		Priority:     m.cfg.Priority,
		Override:     m.cfg.Override,
		Uptime:       m.now.Sub(m.upSince),
		MonitorUp:    m.monitorUp,
		MonitorTotal: m.cfg.MonitorTotal,
		FailoverSet:  m.failoverSet,
		Fault:        m.fault,
	}
	if m.monitorSeen > m.monitorUp {
		st.MonitorHeld, st.MonitorHeldUntil = m.monitorSeen, m.monitorSeenAt.Add(m.cfg.MonitorHolddown)
	}
	if m.cfg.OverrideWaitTime > 0 && !m.winSince.IsZero() && m.role != RolePrimary {
		st.OverrideWaitUntil = m.winSince.Add(m.cfg.OverrideWaitTime)
	}
	st.Members = append(st.Members, Member{Advert: m.Advert(), Self: true, Alive: true})
	for _, serial := range m.peerSerials() {
		p := m.peers[serial]
		adv := p.adv
		adv.Uptime = m.now.Sub(p.upSince)
		mb := Member{Advert: adv, LastHeard: p.lastHeard, Alive: p.alive}
		if !p.alive {
			mb.LostBy, mb.LostWhy = "heartbeat", fmt.Sprintf("no heartbeat for %s", m.cfg.LostAfter())
			if p.lostWhy != "" {
				mb.LostBy, mb.LostWhy = "carrier", p.lostWhy
			}
		}
		st.Members = append(st.Members, mb)
	}
	return st
}

// AlivePeers appends the names of the peers heard within the lost
// threshold to dst, sorted, and returns it.
func (m *Machine) AlivePeers(dst []string) []string {
	for _, serial := range m.peerSerials() {
		if p := m.peers[serial]; p.alive {
			dst = append(dst, p.adv.Name)
		}
	}
	return dst
}

// AliveSerials appends the serials of the peers heard within the lost
// threshold (and not lost by EventPeerLost) to dst, sorted, and returns it.
func (m *Machine) AliveSerials(dst []string) []string {
	for _, serial := range m.peerSerials() {
		if m.peers[serial].alive {
			dst = append(dst, serial)
		}
	}
	return dst
}

// UpdateConfig applies a new configuration (priority, override, timers,
// number of monitored links) live, as after a SIGHUP or a synchronized
// cluster section, and re-runs the election. Name, serial and the member
// limit (the mode's: a restart) cannot change.
func (m *Machine) UpdateConfig(cfg Config, now time.Time) {
	cfg.Name, cfg.Serial, cfg.MaxMembers = m.cfg.Name, m.cfg.Serial, m.cfg.MaxMembers
	if cfg.LostThreshold < 1 {
		cfg.LostThreshold = 1
	}
	if cfg.HBInterval <= 0 {
		cfg.HBInterval = m.cfg.HBInterval
	}
	if cfg.MonitorTotal != m.cfg.MonitorTotal {
		m.monitorUp = cfg.MonitorTotal
		m.monitorSeen = cfg.MonitorTotal
	}
	m.cfg = cfg
	if now.After(m.now) {
		m.now = now
	}
	if m.stopped {
		return
	}
	m.emit(Action{Type: ActionHeartbeat, Reason: "configuration changed"})
	m.decide(m.now)
}

func (m *Machine) emit(a Action) {
	a.Time = m.now
	m.actions = append(m.actions, a)
}

func (m *Machine) peerSerials() []string {
	s := make([]string, 0, len(m.peers))
	for k := range m.peers {
		s = append(s, k)
	}
	sort.Slice(s, func(i, j int) bool {
		a, b := m.peers[s[i]].adv, m.peers[s[j]].adv
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return s[i] < s[j]
	})
	return s
}

func (m *Machine) nameOf(serial string) string {
	if serial == "" {
		return ""
	}
	if serial == m.cfg.Serial {
		return m.cfg.Name
	}
	if p, ok := m.peers[serial]; ok {
		return p.adv.Name
	}
	return serial
}

// heard records a peer's advert.
func (m *Machine) heard(adv Advert, now time.Time) error {
	if adv.Serial == "" || !adv.Role.Valid() {
		return ErrBadEvent
	}
	if adv.Serial == m.cfg.Serial {
		return ErrSameSerial
	}
	p, known := m.peers[adv.Serial]
	if !known {
		if len(m.peers) >= m.cfg.memberLimit()-1 && !m.evictDead() {
			return ErrClusterFull
		}
		p = &peer{}
		m.peers[adv.Serial] = p
	}
	prev := p.adv
	wasAlive := p.alive
	p.adv = adv
	p.lastHeard = now
	p.upSince = now.Add(-adv.Uptime)
	p.alive = true
	p.lostWhy = ""
	m.heardPeers = true

	if adv.Leaving && adv.Role != RolePrimary {
		// A graceful stop that has released everything: forget it now
		// instead of waiting for the lost threshold.
		delete(m.peers, adv.Serial)
	}
	m.reannounce(p, prev, adv, known, wasAlive)
	return nil
}

// evictDead drops one peer that is no longer alive, to make room.
func (m *Machine) evictDead() bool {
	for serial, p := range m.peers {
		if !p.alive {
			delete(m.peers, serial)
			return true
		}
	}
	return false
}

// expire marks peers lost after the threshold.
func (m *Machine) expire(now time.Time) {
	for _, p := range m.peers {
		if p.alive && !now.Before(p.lastHeard.Add(m.cfg.LostAfter())) {
			p.alive = false
			p.lostWhy = ""
		}
	}
}

func (m *Machine) monitorChanged(up int, now time.Time) {
	if up < 0 {
		up = 0
	}
	if up > m.cfg.MonitorTotal {
		up = m.cfg.MonitorTotal
	}
	if up == m.monitorSeen {
		return
	}
	// Any change restarts the hold-down: a rise counts only once the
	// links have held still (promoteMonitor).
	m.monitorSeen, m.monitorSeenAt = up, now
	if up >= m.monitorUp {
		return
	}
	// A fall counts at once (fast failover). FGCP: a monitored-interface
	// failure resets the HA uptime.
	m.upSince = now
	m.monitorUp = up
	m.emit(Action{Type: ActionHeartbeat, Reason: fmt.Sprintf("monitored links up %d/%d", up, m.cfg.MonitorTotal)})
}

// promoteMonitor counts a rise of the monitored links up once the reported
// number has held still for MonitorHolddown: a port that flaps keeps its
// member down until it is stable (TestMonitorFlapStorm).
func (m *Machine) promoteMonitor(now time.Time) {
	if m.monitorSeen <= m.monitorUp || now.Before(m.monitorSeenAt.Add(m.cfg.MonitorHolddown)) {
		return
	}
	m.monitorUp = m.monitorSeen
	m.monitorRoseAt = now
	why := fmt.Sprintf("monitored links up %d/%d", m.monitorUp, m.cfg.MonitorTotal)
	if m.cfg.MonitorHolddown > 0 {
		why += fmt.Sprintf(" (stable for monitor_holddown %s)", m.cfg.MonitorHolddown)
	}
	m.emit(Action{Type: ActionHeartbeat, Reason: why})
}

func (m *Machine) setFault(fault bool, reason string) {
	if fault {
		if reason == "" {
			reason = "fault"
		}
		m.fault = reason
		return
	}
	m.fault = ""
}

// shutdown starts a graceful stop. A primary announces that it is leaving
// and keeps the vMAC until a peer claims it (or the hand-over deadline),
// so the hand-over is make-before-break.
func (m *Machine) shutdown(now time.Time) {
	if m.leaving {
		return
	}
	m.leaving = true
	if m.role != RolePrimary || !m.anyCandidatePeer() {
		m.finish(now, "shutdown")
		return
	}
	m.leaveDeadline = now.Add(m.handoverWait())
	m.emit(Action{Type: ActionHeartbeat, Reason: "shutdown: handing over"})
}

// handoverWait bounds how long a leaving primary waits for a peer to claim.
func (m *Machine) handoverWait() time.Duration {
	d := 3 * m.cfg.HBInterval
	if d < 100*time.Millisecond {
		d = 100 * time.Millisecond
	}
	return d
}

func (m *Machine) finish(now time.Time, why string) {
	prev := m.role
	if prev == RolePrimary {
		m.emit(Action{Type: ActionRelease, Reason: why})
	}
	m.role = RoleSecondary
	if prev != RoleSecondary {
		m.roleSince = now
		m.emit(Action{Type: ActionRoleChange, Role: RoleSecondary, Previous: prev, Reason: why})
	}
	if m.primary == m.cfg.Serial {
		m.primary = ""
	}
	m.emit(Action{Type: ActionHeartbeat, Reason: why})
	m.stopped = true
	m.emit(Action{Type: ActionStopped, Reason: why})
}

func (m *Machine) anyCandidatePeer() bool {
	for _, p := range m.peers {
		if p.alive && p.candidate() {
			return true
		}
	}
	return false
}

func (p *peer) candidate() bool {
	return !p.adv.Leaving && p.adv.Role != RoleFault
}

// candidate is one entry of the election.
type candidate struct {
	name, serial string
	self         bool
	role         Role
	monitorUp    int
	uptime       time.Duration
	priority     uint8
	override     bool
	failoverSet  bool
}

// candidates lists the members that may be primary now.
func (m *Machine) candidates(now time.Time) []candidate {
	var cs []candidate
	if m.fault == "" && !m.leaving {
		cs = append(cs, candidate{
			name: m.cfg.Name, serial: m.cfg.Serial, self: true, role: m.role,
			monitorUp: m.monitorUp, uptime: now.Sub(m.upSince), priority: m.cfg.Priority,
			override: m.cfg.Override, failoverSet: m.failoverSet,
		})
	}
	for serial, p := range m.peers {
		if !p.alive || !p.candidate() {
			continue
		}
		cs = append(cs, candidate{
			name: p.adv.Name, serial: serial, role: p.adv.Role,
			monitorUp: p.adv.MonitorUp, uptime: now.Sub(p.upSince), priority: p.adv.Priority,
			override: p.adv.Override, failoverSet: p.adv.FailoverSet,
		})
	}
	// `ha failover set` members stay out while anyone else can serve.
	var healthy []candidate
	for _, c := range cs {
		if !c.failoverSet {
			healthy = append(healthy, c)
		}
	}
	if len(healthy) > 0 {
		return healthy
	}
	return cs
}

// elect returns the winner among cs and the FGCP criterion that decided.
func (m *Machine) elect(cs []candidate) (candidate, string) {
	override := false
	for _, c := range cs {
		override = override || c.override
	}
	// Every node must reach the same result from the same inputs whatever
	// order it holds them in: start from serial order, then rank.
	sort.Slice(cs, func(i, j int) bool { return cs[i].serial > cs[j].serial })
	sort.SliceStable(cs, func(i, j int) bool { return m.better(cs[i], cs[j], override) })
	if len(cs) == 1 {
		return cs[0], m.onlyWhy(cs[0])
	}
	_, why := m.compare(cs[0], cs[1], override)
	return cs[0], why
}

// onlyWhy explains a single candidate: alone, or the others lost, leaving,
// faulted or stepping down.
func (m *Machine) onlyWhy(c candidate) string {
	var lost, byCarrier, out []string
	for _, serial := range m.peerSerials() {
		p := m.peers[serial]
		if serial == c.serial {
			continue
		}
		switch {
		case !p.alive && p.lostWhy != "":
			byCarrier = append(byCarrier, fmt.Sprintf("lost: %s, %s", p.adv.Name, p.lostWhy))
		case !p.alive:
			lost = append(lost, p.adv.Name)
		case !p.candidate() || p.adv.FailoverSet:
			out = append(out, p.adv.Name)
		}
	}
	why := "it is the only member"
	if len(lost)+len(byCarrier)+len(out) > 0 {
		why = "it is the only healthy member"
	}
	for _, l := range byCarrier {
		why += " (" + l + ")"
	}
	if len(lost) > 0 {
		why += fmt.Sprintf(" (lost: %s, no heartbeat for %s)", strings.Join(lost, ", "), m.cfg.LostAfter())
	}
	if len(out) > 0 {
		why += fmt.Sprintf(" (stepping down or faulted: %s)", strings.Join(out, ", "))
	}
	return why
}

func (m *Machine) better(a, b candidate, override bool) bool {
	aWins, _ := m.compare(a, b, override)
	return aWins
}

// compare reports whether a beats b, and the FGCP criterion that decided.
func (m *Machine) compare(a, b candidate, override bool) (bool, string) {
	monitor := func() (bool, string, bool) {
		if a.monitorUp != b.monitorUp {
			return a.monitorUp > b.monitorUp, "it has the most connected monitored interfaces", true
		}
		return false, "", false
	}
	uptime := func() (bool, string, bool) {
		d := a.uptime - b.uptime
		if d < 0 {
			d = -d
		}
		if d > m.cfg.UptimeDiffMargin {
			return a.uptime > b.uptime, "it has the largest value of uptime", true
		}
		return false, "", false
	}
	priority := func() (bool, string, bool) {
		if a.priority != b.priority {
			what := "priority"
			if override {
				what = "override priority"
			}
			return a.priority > b.priority, "it has the largest value of " + what, true
		}
		return false, "", false
	}
	order := []func() (bool, string, bool){monitor, uptime, priority}
	if override {
		order = []func() (bool, string, bool){monitor, priority, uptime}
	}
	for _, f := range order {
		if wins, why, ok := f(); ok {
			return wins, why
		}
	}
	if a.serial != b.serial {
		return a.serial > b.serial, "it has the largest value of serial number"
	}
	return false, ""
}

// joinDelay is how long a starting node listens before it may become
// primary when it has heard peers: two intervals, so it hears every member
// before it decides.
func (m *Machine) joinDelay() time.Duration { return 2 * m.cfg.HBInterval }

// claimant returns the alive peer claiming primary that wins among the
// claimants, if any.
func (m *Machine) claimant(now time.Time) (string, bool) {
	var cs []candidate
	for serial, p := range m.peers {
		if p.alive && p.adv.Role == RolePrimary && !p.adv.Leaving {
			cs = append(cs, candidate{name: p.adv.Name, serial: serial, role: RolePrimary,
				monitorUp: p.adv.MonitorUp, uptime: now.Sub(p.upSince), priority: p.adv.Priority,
				override: p.adv.Override})
		}
	}
	if len(cs) == 0 {
		return "", false
	}
	w, _ := m.elect(cs)
	return w.serial, true
}

// peerClaims reports whether another member now claims primary, which
// lets a leaving primary release.
func (m *Machine) peerClaims() bool {
	for _, p := range m.peers {
		if p.alive && p.adv.Role == RolePrimary && !p.adv.Leaving {
			return true
		}
	}
	return false
}

// decide runs the election and moves this node to the role it implies.
func (m *Machine) decide(now time.Time) {
	if m.stopped {
		return
	}
	if m.leaving {
		if m.peerClaims() {
			m.finish(now, "shutdown: handed over to "+m.nameOf(m.claimantSerial(now)))
		} else if !now.Before(m.leaveDeadline) {
			m.finish(now, "shutdown: no member took over in time")
		}
		return
	}
	if m.fault != "" {
		if m.role != RoleFault {
			m.become(RoleFault, now, m.fault)
		}
		m.primary, _ = m.claimant(now)
		return
	}
	cs := m.candidates(now)
	if len(cs) == 0 {
		return
	}
	w, why := m.elect(cs)
	reason := fmt.Sprintf("%s is selected as the primary because %s", w.name, why)

	if !w.self || m.role == RolePrimary {
		m.winSince = time.Time{}
	} else if m.winSince.IsZero() {
		m.winSince = now
	}
	if w.self {
		switch {
		case m.role == RolePrimary:
			m.setPrimary(m.cfg.Serial, reason)
		case m.role == RoleStarting && !m.mayLeaveHello(now):
			// wait in hello state
		case m.holdBlocks(now):
			// failover_hold_time: a primary exists and the last change is too recent
		case m.overrideWaits(w, now):
			// override_wait_time: a serving primary keeps the role a while
			if m.role == RoleStarting {
				claim, _ := m.claimant(now)
				m.setPrimary(claim, reason)
				m.become(RoleSecondary, now, fmt.Sprintf("%s waits override_wait_time %s before taking the primary role", m.cfg.Name, m.cfg.OverrideWaitTime))
			}
		default:
			if m.role == RoleStarting && !m.heardPeers {
				reason = fmt.Sprintf("%s is selected as the primary because it is the only member (hello_holddown %s expired)", m.cfg.Name, m.cfg.HelloHolddown)
			}
			m.setPrimary(m.cfg.Serial, reason)
			m.become(RolePrimary, now, reason)
		}
		return
	}

	// Another member wins.
	claim, claimed := m.claimant(now)
	switch m.role {
	case RolePrimary:
		// Make-before-break: keep the vMAC until the winner claims it.
		if claimed && claim == w.serial {
			m.setPrimary(w.serial, reason)
			m.become(RoleSecondary, now, reason)
		}
	case RoleStarting:
		if m.heardPeers {
			m.setPrimary(claim, reason)
			m.become(RoleSecondary, now, reason)
		}
	default:
		m.setPrimary(claim, reason)
		if m.role != RoleSecondary {
			m.become(RoleSecondary, now, reason)
		}
	}
}

func (m *Machine) claimantSerial(now time.Time) string {
	s, _ := m.claimant(now)
	return s
}

func (m *Machine) setPrimary(serial, reason string) {
	if serial != m.primary {
		m.primary = serial
		if serial != "" {
			m.reason = reason
		}
		m.emit(Action{Type: ActionHeartbeat, Reason: "primary is now " + m.nameOf(serial)})
		return
	}
	if serial != "" && m.role == RolePrimary && serial == m.cfg.Serial {
		// Keep the reason current (e.g. "only member" → a real criterion).
		m.reason = reason
	}
}

// mayLeaveHello: a starting node may become primary once hello_holddown
// has passed, or, when it hears peers, once it has listened two intervals.
func (m *Machine) mayLeaveHello(now time.Time) bool {
	if !now.Before(m.startedAt.Add(m.cfg.HelloHolddown)) {
		return true
	}
	return m.heardPeers && !now.Before(m.startedAt.Add(m.joinDelay()))
}

// holdBlocks: failover_hold_time delays a change of primary while another
// member still serves as primary. With no primary at all, nothing waits.
func (m *Machine) holdBlocks(now time.Time) bool {
	if m.cfg.FailoverHoldTime <= 0 || m.lastChange.IsZero() {
		return false
	}
	if _, claimed := m.claimant(now); !claimed {
		return false
	}
	return now.Before(m.lastChange.Add(m.cfg.FailoverHoldTime))
}

// overrideWaits: with override on, a winner that beats the serving primary
// by priority rather than by monitored links waits OverrideWaitTime,
// winning all along, before it takes the role (TestOverrideWaitTime).
func (m *Machine) overrideWaits(w candidate, now time.Time) bool {
	if m.cfg.OverrideWaitTime <= 0 || m.winSince.IsZero() || !now.Before(m.winSince.Add(m.cfg.OverrideWaitTime)) {
		return false
	}
	claim, claimed := m.claimant(now)
	if !claimed {
		return false
	}
	p := m.peers[claim]
	if !p.adv.Override && !m.cfg.Override {
		return false
	}
	// More monitored links up is a failover, never delayed.
	return w.monitorUp <= p.adv.MonitorUp
}

// become switches role and emits the actions for it, in the order that
// keeps the outage shortest: the network first, then tell peers, then hooks.
func (m *Machine) become(r Role, now time.Time, reason string) {
	prev := m.role
	if prev == r {
		return
	}
	m.role = r
	m.roleSince = now
	if r == RolePrimary || prev == RolePrimary {
		m.lastChange = now
	}
	m.emit(Action{Type: ActionRoleChange, Role: r, Previous: prev, Reason: reason})
	switch {
	case r == RolePrimary:
		m.takeovers++
		m.emit(Action{Type: ActionTakeover, Reason: reason})
	case prev == RolePrimary:
		m.emit(Action{Type: ActionRelease, Reason: reason})
	}
	m.emit(Action{Type: ActionHeartbeat, Reason: reason})
	m.emit(Action{Type: ActionRunHook, Role: r, Previous: prev, Reason: reason})
}
