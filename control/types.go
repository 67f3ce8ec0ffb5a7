package control

import (
	"time"

	"github.com/hagent/hagent/sessionsync"
)

// Status is the object printed by `agentctl ha status --json`; its fields
// are only ever added (docs/reference.md §3 lists those scripts rely on).
type Status struct {
	Node        string    `json:"node"`
	Serial      string    `json:"serial"`
	Role        string    `json:"role"` // primary|secondary|starting|fault
	RoleSince   time.Time `json:"role_since"`
	GroupID     int       `json:"group_id"`
	GroupName   string    `json:"group_name"`
	VCluster    int       `json:"vcluster"`
	Mode        string    `json:"mode"`
	Primary     string    `json:"primary"` // node name of the primary, "" none
	Override    bool      `json:"override"`
	Priority    int       `json:"priority"`
	UptimeS     int64     `json:"uptime_s"`
	Reason      string    `json:"reason"`
	FailoverSet bool      `json:"failover_set"`
	Fault       string    `json:"fault,omitempty"`
	// Health is "OK" or "ERROR" (the first line of the human status);
	// Problems are the reasons for ERROR that only this node can see
	// (serial conflicts, failing authentication, unwritable sync paths),
	// Warnings what it reports without ERROR (another group or protocol
	// version on an hbdev). Health also counts lost members, monitored
	// links and hbdevs down, and faults: see HealthOf.
	Health   string   `json:"health"`
	Problems []string `json:"problems,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	// Epoch is this run's heartbeat epoch (persisted; only grows), NodeID
	// the node id sent beside the serial (the lowest hbdev MAC).
	Epoch   uint64   `json:"epoch"`
	NodeID  string   `json:"node_id"`
	Members []Member `json:"members"`
	HBDevs  []HBDev  `json:"hbdevs"`
	Monitor []Link   `json:"monitor"`
	// MonitorHeldUp is the number of monitored items up while a rise is
	// held by cluster.monitor_holddown, counted in the election from
	// MonitorHeldUntil; absent when none is held.
	MonitorHeldUp    int        `json:"monitor_held_up,omitempty"`
	MonitorHeldUntil *time.Time `json:"monitor_held_until,omitempty"`
	// OverrideWaitUntil: this node wins by override priority and takes
	// the primary role then (cluster.override_wait_time).
	OverrideWaitUntil *time.Time `json:"override_wait_until,omitempty"`
	Interfaces        []VIface   `json:"interfaces"`
	// ARPsRefresh is vcluster 1's periodic re-announcement; nil when off.
	ARPsRefresh *ARPsRefresh `json:"arps_refresh,omitempty"`
	// LinkFailedSignal is vcluster 1's link_failed_signal record; nil
	// before the first signal.
	LinkFailedSignal *LinkFailedSignal `json:"link_failed_signal,omitempty"`
	// Mgmt is the management interface (cluster.mgmt_interface with
	// node.mgmt); nil without one.
	Mgmt        *Mgmt     `json:"mgmt,omitempty"`
	Config      Config    `json:"config"`
	HBIntervalM float64   `json:"hb_interval_ms"`
	LostThresh  int       `json:"hb_lost_threshold"`
	StartedAt   time.Time `json:"started_at"`
	// Goroutines is the agent process's goroutine count (leak checks: the
	// chaos campaign compares it across thousands of role changes).
	Goroutines int     `json:"goroutines,omitempty"`
	History    []Event `json:"history,omitempty"` // the last few, newest last
	// Sessions is session pickup's state, the object of `ha sessions`
	// (nil when session pickup is off).
	Sessions *sessionsync.Status `json:"sessions"`
	// VClusters are the node's virtual clusters, the first being the one
	// of the fields above (Role, Primary, Members' roles, Monitor,
	// Interfaces...), which are kept for compatibility; a node running
	// cluster.vcluster2 has two. Absent in the status of older agents.
	VClusters []VCluster `json:"vclusters,omitempty"`
	// RestartNeeded are the keys whose new value the last reload could
	// not apply live (config.Key.Reload): the agent runs with the values
	// it has, which the fields above show, until a restart.
	RestartNeeded []string `json:"restart_needed,omitempty"`
	// Checks are the health checks (cluster.checks), in configuration
	// order; each also counts in Monitor as "check:NAME".
	Checks []Check `json:"checks,omitempty"`
}

// Check is one health check's state.
type Check struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // command, memory or systemd
	// State is "up" (counts as an up monitored link) or "down" (failed
	// fall times in a row, until it passes rise times in a row).
	State string `json:"state"`
	// Last is the last run's result: pass, fail, timeout or error (the
	// command could not start); "" before the first run.
	Last string `json:"last"`
	// Count is how many runs in a row had the Last result.
	Count   int       `json:"count"`
	Runs    uint64    `json:"runs"`
	LastRun time.Time `json:"last_run,omitzero"`
	// Output is the tail of the last run's output (at most 512 bytes).
	Output string `json:"output,omitempty"`
}

// VCluster is one virtual cluster's election as this node sees it.
type VCluster struct {
	VCluster    int       `json:"vcluster"`
	Role        string    `json:"role"`
	RoleSince   time.Time `json:"role_since"`
	Primary     string    `json:"primary"` // node name of the primary, "" none
	Priority    int       `json:"priority"`
	Override    bool      `json:"override"`
	UptimeS     int64     `json:"uptime_s"`
	Reason      string    `json:"reason"`
	FailoverSet bool      `json:"failover_set"`
	Fault       string    `json:"fault,omitempty"`
	// Members are the members' state in this vcluster (self first); the
	// membership is shared, so Alive, LastHeardMs and LostBy are those of
	// Status.Members.
	Members    []Member `json:"members"`
	Monitor    []Link   `json:"monitor"`
	Interfaces []VIface `json:"interfaces"`
	// ARPsRefresh is the periodic re-announcement (cluster.arps_refresh);
	// nil when off.
	ARPsRefresh *ARPsRefresh `json:"arps_refresh,omitempty"`
	// LinkFailedSignal is the link_failed_signal record
	// (cluster.link_failed_signal); nil before the first signal.
	LinkFailedSignal *LinkFailedSignal `json:"link_failed_signal,omitempty"`
}

// Mgmt is the management interface: this node's own, never taken over.
type Mgmt struct {
	Interface string   `json:"interface"`
	MAC       string   `json:"mac"` // its MAC now: the permanent one, never a virtual MAC
	Addresses []string `json:"addresses,omitempty"`
	Gateway   string   `json:"gateway,omitempty"`
	Table     int      `json:"table,omitempty"`
	// Routed says the policy rules and the table's routes were all in
	// place at the last check (every second); Restores counts what was
	// put back since the start.
	Routed    bool   `json:"routed"`
	Restores  uint64 `json:"restores"`
	LastError string `json:"last_error,omitempty"`
}

// LinkFailedSignal counts the signals of a member that lost the primary
// role by a failed monitored link: its other monitored ports set down for
// cluster.link_failed_signal so that the switches flush them.
type LinkFailedSignal struct {
	Count     uint64   `json:"count"`
	LastAgoMs int64    `json:"last_ago_ms"` // since the last signal began
	Ports     []string `json:"ports"`       // the ports of the last one
}

// ARPsRefresh is the state of the primary's periodic re-announcement.
type ARPsRefresh struct {
	EveryMs   int64  `json:"every_ms"`    // the configured period (jittered ±10%)
	LastAgoMs int64  `json:"last_ago_ms"` // since the last round; -1 none yet
	Sent      uint64 `json:"sent"`        // rounds sent while primary
}

// Member is one cluster member as this node sees it.
type Member struct {
	Node         string `json:"node"`
	Serial       string `json:"serial"`
	Role         string `json:"role"` // primary|secondary|starting|fault, or lost (no heartbeat within the threshold)
	Priority     int    `json:"priority"`
	Override     bool   `json:"override"`
	MonitorUp    int    `json:"monitor_up"`
	MonitorTotal int    `json:"monitor_total"`
	UptimeS      int64  `json:"uptime_s"`
	LastHeardMs  int64  `json:"last_heard_ms"` // -1 for self
	Alive        bool   `json:"alive"`
	// LostBy says how a member that is not alive was lost: "heartbeat"
	// (the lost threshold) or "carrier" (a direct hbdev lost carrier);
	// LostWhy details it ("no heartbeat for 1.2s", "carrier down on ha1").
	LostBy       string `json:"lost_by,omitempty"`
	LostWhy      string `json:"lost_why,omitempty"`
	Self         bool   `json:"self"`
	FailoverSet  bool   `json:"failover_set"`
	ConfigInSync bool   `json:"config_in_sync"`
	ConfigSum    string `json:"config_checksum"`
}

// HBDev is one heartbeat device's counters.
type HBDev struct {
	Name     string `json:"name"`
	Priority int    `json:"priority"`
	Up       bool   `json:"up"` // carrier up and a valid frame heard within the lost threshold
	Carrier  bool   `json:"carrier"`
	RX       uint64 `json:"rx"`
	TX       uint64 `json:"tx"`
	Dropped  uint64 `json:"dropped"`
	BadAuth  uint64 `json:"bad_auth"`
	Replay   uint64 `json:"replay"`
	TXErrors uint64 `json:"tx_errors"`
	// Foreign counts datagrams dropped for coming from an address that is
	// not a peer (unicast_hb paths only), before any cryptography.
	Foreign uint64 `json:"foreign,omitempty"`
}

// Link is a monitored link's state.
type Link struct {
	Name string `json:"name"`
	Up   bool   `json:"up"`
}

// VIface is a data interface with its virtual MAC.
type VIface struct {
	Name      string   `json:"name"`
	VMAC      string   `json:"vmac"`
	PermMAC   string   `json:"perm_mac"`
	Owned     bool     `json:"owned"`
	Addresses []string `json:"addresses"`
	// Restores counts the times this node, primary, put the vMAC or a
	// cluster address back after something else removed or changed it.
	Restores uint64 `json:"restores,omitempty"`
}

// Config is the configuration-sync summary of this node.
type Config struct {
	Checksum   string       `json:"checksum"`
	Generation uint64       `json:"generation"`
	InSync     bool         `json:"in_sync"`
	SyncOn     bool         `json:"sync_enabled"`
	LastError  string       `json:"last_error,omitempty"`
	Channel    *SyncChannel `json:"channel,omitempty"`
}

// SyncChannel is the state of the 0x8893 control channel.
type SyncChannel struct {
	ActiveLink       string `json:"active_link"` // hbdev carrying sync now ("" none)
	FramesSent       uint64 `json:"frames_sent"`
	FramesReceived   uint64 `json:"frames_received"`
	Retransmits      uint64 `json:"retransmits"`
	Failovers        uint64 `json:"failovers"` // moves to another hbdev
	DroppedBadAuth   uint64 `json:"dropped_bad_auth"`
	DroppedReplay    uint64 `json:"dropped_replay"`
	DroppedMalformed uint64 `json:"dropped_malformed"`
}

// Event is one entry of `agentctl ha history`.
type Event struct {
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"` // role, takeover, release, hook, sync, config, fault
	Role     string    `json:"role,omitempty"`
	Previous string    `json:"previous,omitempty"`
	Primary  string    `json:"primary,omitempty"`
	Reason   string    `json:"reason"`
	// VCluster tags the entries of one virtual cluster's election (role,
	// takeover, release, hook, monitored link...) on a node running two;
	// 0 for the node's shared events and on a single-vcluster node.
	VCluster int `json:"vcluster,omitempty"`
	// Takeover timings (kind takeover): from the decision to the first
	// GARP on the wire, and the parts.
	TakeoverUs int64 `json:"takeover_us,omitempty"`
	MACSetUs   int64 `json:"mac_set_us,omitempty"`
	AddrsUs    int64 `json:"addrs_us,omitempty"`
	// SessionsUs is how long the takeover waited for the received session
	// copies to be in the kernel table, before the vMAC (session pickup).
	SessionsUs int64 `json:"sessions_us,omitempty"`
}

// FailoverStatus is the answer to `ha failover status`.
type FailoverStatus struct {
	Set  bool   `json:"set"`
	Role string `json:"role"`
	// VCluster is the virtual cluster it is about.
	VCluster int `json:"vcluster,omitempty"`
}

// Checksums is the answer to `ha checksum`.
type Checksums struct {
	Members []MemberChecksum `json:"members"`
}

// MemberChecksum is one member's configuration checksums.
type MemberChecksum struct {
	Node       string            `json:"node"`
	Serial     string            `json:"serial"`
	Tree       string            `json:"tree"`
	Generation uint64            `json:"generation"`
	InSync     bool              `json:"in_sync"`
	Paths      map[string]string `json:"paths,omitempty"`
}

// Exposure lists everything the agent listens on or sends.
type Exposure struct {
	Sockets []Socket `json:"sockets"`
}

// Socket is one socket of the agent.
type Socket struct {
	Kind      string `json:"kind"`      // unix, packet
	Address   string `json:"address"`   // path or interface
	EtherType string `json:"ethertype"` // for packet sockets, e.g. 0x8890
	Purpose   string `json:"purpose"`
	Direction string `json:"direction"` // rx, tx, rx/tx
}
