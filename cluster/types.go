package cluster

import (
	"errors"
	"time"
)

// Member limits. In active-passive mode a cluster has at most
// MaxMembersFGCP members, as FGCP: this node and three peers. In mode
// fgsp (every member forwards) it has at most MaxMembersFGSP, as FGSP.
// Config.MaxMembers picks one; everything kept per member before the
// mode is known (the heartbeat frame's epoch hints, the tables of
// senders) is bounded by MaxMembers, the largest of them
// (TestMemberLimitPerMode).
const (
	MaxMembersFGCP = 4
	MaxMembersFGSP = 16
	// MaxMembers is the largest cluster of any mode.
	MaxMembers = max(MaxMembersFGCP, MaxMembersFGSP)
)

// Errors returned by Step. The event is dropped; nothing else changes.
var (
	// ErrClusterFull: a member beyond Config.MaxMembers was heard (a
	// fifth in mode a-p, a 17th in mode fgsp); it is ignored.
	ErrClusterFull = errors.New("cluster: the member limit is reached, ignoring another member")
	// ErrSameSerial: a peer advertises this node's own serial.
	ErrSameSerial = errors.New("cluster: peer uses this node's serial")
	// ErrBadEvent: the event is malformed (unknown type, empty serial, invalid role).
	ErrBadEvent = errors.New("cluster: malformed event")
	// ErrStopped: the machine has stopped after a shutdown.
	ErrStopped = errors.New("cluster: stopped")
)

// Config is what the election needs to know about this node and the
// cluster's timers. Durations are those of the configuration keys of the
// same names (config.Cluster).
type Config struct {
	Name     string // node name, for reasons and status
	Serial   string // unique member id and last tie-breaker
	Priority uint8  // higher wins
	Override bool   // priority before uptime

	HBInterval       time.Duration // heartbeat interval
	LostThreshold    int           // intervals without a heartbeat before a peer is lost
	HelloHolddown    time.Duration // time in hello state before becoming primary alone
	UptimeDiffMargin time.Duration // uptime differences up to this count as equal
	FailoverHoldTime time.Duration // minimum time between two changes of primary
	MonitorTotal     int           // number of monitored links configured
	// MonitorHolddown is how long the number of monitored links up must
	// stay unchanged before a rise counts in the election; a fall counts
	// at once. 0 counts a rise at once. It turns a flapping port into one
	// failover (TestMonitorFlapStorm).
	MonitorHolddown time.Duration
	// OverrideWaitTime: with override on, a member that wins by priority
	// against a serving primary (not by more monitored links) waits this
	// long, winning all along, before it takes the role
	// (TestOverrideWaitTime). 0 takes it at once.
	OverrideWaitTime time.Duration
	// MaxMembers is the largest cluster this node forms, itself included:
	// MaxMembersFGCP (also when 0) or MaxMembersFGSP. A member heard
	// beyond it is refused with ErrClusterFull while every known peer is
	// alive.
	MaxMembers int
}

// memberLimit is c.MaxMembers, MaxMembersFGCP when unset, never above
// MaxMembers.
func (c *Config) memberLimit() int {
	if c.MaxMembers <= 0 {
		return MaxMembersFGCP
	}
	return min(c.MaxMembers, MaxMembers)
}

// LostAfter is how long a peer may stay silent before it is lost.
func (c *Config) LostAfter() time.Duration {
	return c.HBInterval * time.Duration(c.LostThreshold)
}

// Advert is what a member announces in each heartbeat: the inputs of the
// election. The daemon converts heartbeat frames to Adverts and back.
type Advert struct {
	Name         string
	Serial       string
	Role         Role
	Priority     uint8
	Override     bool
	FailoverSet  bool // operator said `ha failover set`: stay out of the election
	Leaving      bool // graceful stop in progress: take over now
	MonitorUp    int
	MonitorTotal int
	Uptime       time.Duration // HA uptime when the advert was made
	Primary      string        // serial of the member the sender sees as primary, "" for none
	// Takeovers counts the sender's takeovers of the vMAC (becoming
	// primary) in its current run; 0 from senders that do not send it.
	// It is no input of the election: a primary that sees a peer's count
	// change while the peer does not claim primary re-announces the vMAC.
	Takeovers uint64
}

// EventType says what an Event is. The zero value is invalid.
type EventType uint8

// Event types.
const (
	EventInvalid       EventType = iota
	EventTick                    // time passed
	EventHeartbeat               // Advert heard from a peer
	EventMonitor                 // MonitorUp changed (link up/down)
	EventFailoverSet             // operator: step down and stay out
	EventFailoverUnset           // operator: back into the election
	EventFault                   // Fault says whether this node can serve; Reason why
	EventShutdown                // graceful stop: hand over, release, stop
	EventPeerLost                // Serial is lost now (carrier down on every direct hbdev it was heard on); Reason why
)

// Event is one input to the machine. Time is the injected clock's now; it
// must never go backwards.
type Event struct {
	Type      EventType
	Time      time.Time
	Advert    Advert // EventHeartbeat
	MonitorUp int    // EventMonitor
	Fault     bool   // EventFault
	Reason    string // EventFault: what is wrong; EventPeerLost: how the loss was detected
	Serial    string // EventPeerLost: the peer
}

// ActionType says what an Action asks the daemon to do.
type ActionType uint8

// Action types. The daemon performs them in the order given.
const (
	ActionInvalid    ActionType = iota
	ActionRoleChange            // log and record in history: Role, Previous, Reason
	ActionTakeover              // set the vMACs, add the addresses, send the first GARPs/NAs
	ActionRelease               // remove the addresses, restore the permanent MACs
	ActionAnnounce              // one more immediate GARP/NA round (a peer just released)
	ActionHeartbeat             // send a heartbeat now (the advert changed)
	ActionRunHook               // run the hook for Role, asynchronously
	ActionStopped               // shutdown complete: the daemon may exit
)

// String names the action for logs and golden tests.
func (t ActionType) String() string {
	switch t {
	case ActionRoleChange:
		return "role-change"
	case ActionTakeover:
		return "takeover"
	case ActionRelease:
		return "release"
	case ActionAnnounce:
		return "announce"
	case ActionHeartbeat:
		return "heartbeat"
	case ActionRunHook:
		return "run-hook"
	case ActionStopped:
		return "stopped"
	}
	return "invalid"
}

// Action is one output of the machine.
type Action struct {
	Type     ActionType
	Time     time.Time
	Role     Role   // ActionRoleChange, ActionRunHook: the new role
	Previous Role   // ActionRoleChange, ActionRunHook: the role before
	Reason   string // why
	// PeerHeld (ActionAnnounce): the peer the announce is for did hold
	// the vMAC (it released it, or its takeover count moved), so it may
	// have forwarded traffic this node never saw.
	PeerHeld bool
}

// Ready holds the actions produced since the last call to Ready.
type Ready struct {
	Actions []Action
}

// Member is one member of the cluster as this node sees it.
type Member struct {
	Advert
	Self      bool
	LastHeard time.Time // zero for self
	Alive     bool      // heard within the lost threshold (always true for self)
	// LostBy says how a peer that is not alive was lost: "heartbeat" (no
	// heartbeat within the lost threshold) or "carrier" (EventPeerLost).
	LostBy string
	// LostWhy is the detail: "no heartbeat for 1.2s", "carrier down on ha1".
	LostWhy string
}

// Status is a snapshot of the machine for `agentctl ha status`.
type Status struct {
	Name         string
	Serial       string
	Role         Role
	RoleSince    time.Time
	Primary      string // serial of the primary ("" none)
	PrimaryName  string
	Reason       string // why the current primary was selected
	Priority     uint8
	Override     bool
	Uptime       time.Duration
	MonitorUp    int
	MonitorTotal int
	// MonitorHeld is the number of monitored links up as last reported
	// while a rise is still in its hold-down (0 when none is); the rise
	// counts at MonitorHeldUntil.
	MonitorHeld      int
	MonitorHeldUntil time.Time
	// OverrideWaitUntil is when this node takes the primary role back by
	// override priority (zero when it is not waiting).
	OverrideWaitUntil time.Time
	FailoverSet       bool
	Fault             string // non-empty while faulted
	Members           []Member
}
