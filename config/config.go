package config

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/hagent/hagent/cluster"
)

// Defaults and limits. The numeric limits are enforced by validation; the
// list lengths are also enforced while decoding so that hostile input
// cannot make the parser do unbounded work.
const (
	DefaultControlSocket   = "/run/hagent/hagent.sock"
	DefaultLogFormat       = "text"
	DefaultLogLevel        = "info"
	DefaultNodePriority    = 128
	DefaultMode            = "a-p"
	DefaultVCluster        = 1
	DefaultHBInterval      = 200 * time.Millisecond
	DefaultHBLostThreshold = 6
	DefaultHelloHolddown   = 20 * time.Second
	// DefaultCarrierDebounce is how long a direct hbdev's carrier must stay
	// down before its peers count as lost (carrier_debounce).
	DefaultCarrierDebounce  = 4 * time.Millisecond
	DefaultUptimeDiffMargin = 300 * time.Second
	DefaultFailoverHoldTime = time.Duration(0)
	// DefaultMonitorHolddown is how long the monitored links up must hold
	// still before a rise counts in the election (monitor_holddown). 1s
	// outlasts a port's flap storm (30 down/up in 50 ms) and an
	// autonegotiation bounce by far, so such a storm costs one failover
	// and one takeback; yet a link repaired by hand counts again about as
	// fast as a peer is declared lost (6 × 200 ms).
	DefaultMonitorHolddown  = time.Second
	DefaultOverrideWaitTime = time.Duration(0)
	DefaultPingInterval     = time.Second
	DefaultPingThreshold    = 5
	DefaultARPs             = 5
	DefaultARPsInterval     = 8 * time.Second
	DefaultSyncPeriod       = 60 * time.Second
	DefaultHookTimeout      = 30 * time.Second

	DefaultEthTypeHA      uint16 = 0x8890
	DefaultEthTypeHC      uint16 = 0x8891
	DefaultEthTypeSession uint16 = 0x8892
	DefaultEthTypeL2EP    uint16 = 0x8893

	// MaxInterfaces is the number of data interfaces a vcluster can have:
	// the virtual MAC has one hex digit for the interface index
	// (vmac.MAC, docs/reference.md §5).
	MaxInterfaces = 16
	// MaxHBDevs is the number of heartbeat devices accepted.
	MaxHBDevs = 16
	// MaxNameLen is the longest node name accepted, in bytes.
	MaxNameLen = 64
	// MaxSerialLen is the longest node serial accepted, in bytes.
	MaxSerialLen = 32
	// MaxHookEnv is the number of variables hooks.env may name.
	MaxHookEnv = 32
	// MaxGroupNameLen is the longest group name accepted, in bytes.
	MaxGroupNameLen = 32
	// MaxMgmtAddresses is the number of node.mgmt.addresses accepted.
	MaxMgmtAddresses = 8
	// DefaultMgmtTable is node.mgmt.table: the routing table of the
	// management traffic.
	DefaultMgmtTable = 200
	// MgmtRulePriority is the priority of the policy rules that send what
	// leaves from a management address to node.mgmt.table: before the
	// main table (32766).
	MgmtRulePriority = 1000
	// MaxPasswordFileSize bounds what Password reads.
	MaxPasswordFileSize = 64 << 10
)

// ModeFGSP is cluster.mode fgsp, active-active with shared sessions
// (docs/sessionsync.md §7): no virtual MAC, no cluster address, every member syncs its
// flows to every other.
const ModeFGSP = "fgsp"

// MaxMembers is the largest cluster of mode: 16 in mode fgsp (as FGSP), 4
// otherwise (active-passive, as FGCP).
func MaxMembers(mode string) int {
	if mode == ModeFGSP {
		return cluster.MaxMembersFGSP
	}
	return cluster.MaxMembersFGCP
}

// Config is a whole hagent configuration file.
type Config struct {
	// ControlSocket is the unix socket agentctl talks to (control_socket).
	ControlSocket string
	// LogFormat is "text" or "json" (log_format).
	LogFormat string
	// LogLevel is trace, debug, info, warn or error (log_level).
	LogLevel string
	// MetricsListen is the host:port of the Prometheus metrics endpoint
	// (metrics_listen), "" (the default) for none. Node-local.
	MetricsListen string
	// Node is the node-local section (node), never synchronized.
	Node Node
	// Cluster is the section synchronized from the primary (cluster).
	Cluster Cluster
	// Path is the file the configuration was loaded from; it is not a key.
	Path string
}

// Node holds this node's identity and election settings.
type Node struct {
	// Name is the node name (name), default os.Hostname().
	Name string
	// Serial is the election tie-breaker (serial). The default is "HAGT"
	// and the first 12 hex digits of /etc/machine-id, upper-cased, or of a
	// SHA-256 of the hostname when the machine id is unavailable.
	Serial string
	// Priority is the election priority, 0-255 (priority), default 128.
	Priority int
	// Override ranks priority above uptime in the election (override).
	Override bool
	// Realtime runs the heartbeat path with SCHED_FIFO and mlockall
	// (realtime), default false.
	Realtime bool
	// VCluster2 is this node's election weight in virtual cluster 2
	// (vcluster2); used only when cluster.vcluster2.enabled is true.
	VCluster2 NodeVCluster
	// Mgmt is this node's side of the management interface (mgmt): its
	// addresses and gateway on cluster.mgmt_interface.
	Mgmt NodeMgmt
}

// NodeMgmt is a node's own addressing of the management interface
// (cluster.mgmt_interface, FGCP ha-mgmt-interfaces). It belongs to the
// node: each member has its own management addresses, never taken over
// nor synchronized. hagentd adds the addresses to the interface and routes
// what leaves from them through a table of their own (agent/mgmt.go).
type NodeMgmt struct {
	// Addresses are the node's management addresses with their prefix
	// length (addresses), at most MaxMgmtAddresses.
	Addresses []netip.Prefix
	// Gateway is the management network's router (gateway): the default
	// route of Table. Invalid (absent) for none: only the management
	// subnets are reachable.
	Gateway netip.Addr
	// Table is the routing table of the management traffic (table),
	// 1-252, default DefaultMgmtTable.
	Table int
}

// NodeVCluster is a node's election weight in one virtual cluster.
type NodeVCluster struct {
	// Priority is the election priority there, 0-255 (priority), default 128.
	Priority int
	// Override ranks priority above uptime there (override), default false.
	Override bool
}

// Cluster is the synchronized part of the configuration.
type Cluster struct {
	// GroupName is a free label shown in status (group_name), at most 32 bytes.
	GroupName string
	// GroupID is the HA group, 0-1023 (group_id); it selects the vMAC prefix.
	GroupID int
	// PasswordFile holds the group key (password_file), an absolute
	// path: the heartbeat authentication password when Auth is true, and
	// always the key of the config sync and session pickup channels.
	// Required when Auth, Sync.Enabled or SessionPickup.Enabled is true;
	// the file must be private to root and hold at least MinKeyLen bytes
	// (readKey).
	PasswordFile string
	// Auth enables heartbeat authentication (auth), default true. false
	// turns off heartbeat authentication only (ChannelKey).
	Auth bool
	// Mode is the cluster mode (mode): "a-p" (active-passive, the
	// default) or "fgsp" (ModeFGSP: every member forwards and syncs its
	// sessions to the others; no data interfaces).
	Mode string
	// VCluster is the virtual cluster, 1 or 2 (vcluster), default 1.
	VCluster int
	// HBDevs are the heartbeat devices (hbdev), at least one.
	HBDevs []HBDev
	// HBInterval is the heartbeat period (hb_interval), 10ms-60s, default 200ms.
	HBInterval time.Duration
	// HBLostThreshold is how many intervals without a frame lose a peer
	// (hb_lost_threshold), 1-60, default 6.
	HBLostThreshold int
	// HelloHolddown is the time in hello state before a node may become
	// primary alone (hello_holddown), 0-300s, default 20s.
	HelloHolddown time.Duration
	// UptimeDiffMargin is the uptime difference that counts in the
	// election (uptime_diff_margin), 0-65535s, default 300s.
	UptimeDiffMargin time.Duration
	// FailoverHoldTime delays a new failover after one
	// (failover_hold_time), 0-300s, default 0.
	FailoverHoldTime time.Duration
	// MonitorHolddown is how long the number of monitored items up must
	// hold still before a rise counts in the election; a fall counts at
	// once (monitor_holddown), 0-60s, default 1s.
	MonitorHolddown time.Duration
	// OverrideWaitTime: with override, how long a member that wins by
	// priority waits before it takes the primary role from a serving
	// primary (override_wait_time), 0-3600s, default 0.
	OverrideWaitTime time.Duration
	// LinkFailedSignal (link_failed_signal, FGCP link-failed-signal),
	// 0-60s, default 0 (off): a member that loses the primary role
	// because a monitored link of its failed sets its other monitored
	// links down this long, then up again, so the switches they lead to
	// flush the MAC addresses they learnt on them.
	LinkFailedSignal time.Duration
	// UnicastHB is the unicast heartbeat (unicast_hb).
	UnicastHB UnicastHB
	// CarrierDebounce is how long the carrier of a direct hbdev must stay
	// down before it counts (carrier_debounce), 0-1s, default 4ms.
	CarrierDebounce time.Duration
	// EthType holds the Ethertypes in use (eth_type).
	EthType EthTypes
	// Transparent makes heartbeats use EthType.HC (transparent).
	Transparent bool
	// Interfaces are the data interfaces that get the vMAC and the
	// cluster addresses (interfaces), at most MaxInterfaces.
	Interfaces []Interface
	// Monitor lists the interfaces whose link state counts in the
	// election (monitor).
	Monitor []string
	// PingServer configures remote link monitoring (pingserver).
	PingServer PingServer
	// ARPs is how many gratuitous ARPs / unsolicited NAs are sent per
	// address on takeover (arps), 1-60, default 5.
	ARPs int
	// ARPsInterval is the gap between them (arps_interval), 1s-20s, default 8s.
	ARPsInterval time.Duration
	// ARPsRefresh is the period at which the primary re-announces every
	// cluster address after the takeover burst (arps_refresh): 0 (off,
	// the default) or 1s-1h, jittered by ±10% (agent: TestARPsRefresh).
	ARPsRefresh time.Duration
	// Sync configures file synchronization (sync).
	Sync Sync
	// SessionPickup configures connection-tracking sync (session_pickup).
	SessionPickup SessionPickup
	// Hooks are commands run on role changes (hooks).
	Hooks Hooks
	// Checks are the health checks (checks), at most MaxChecks. They
	// belong to the node, not to a vcluster: a failed check counts as a
	// failed monitored link in every vcluster the node runs.
	Checks []Check
	// MgmtInterface is the reserved management interface
	// (mgmt_interface, FGCP ha-mgmt-interfaces), "" for none: it keeps its
	// permanent MAC, never carries a cluster address, is neither a data,
	// monitored, heartbeat nor session interface; each node's addresses
	// on it are node.mgmt's.
	MgmtInterface string
	// VCluster2 is the second virtual cluster (vcluster2): its own data
	// interfaces, monitored links and pingserver, elected separately over
	// the same heartbeats. The keys above (interfaces, monitor, pingserver)
	// then belong to virtual cluster 1.
	VCluster2 VCluster2
}

// VCluster2 is the second virtual cluster of a cluster (FGCP vcluster2).
type VCluster2 struct {
	// Enabled turns it on (enabled), default false. It requires vcluster 1.
	Enabled bool
	// Interfaces are its data interfaces (interfaces), none of them in
	// cluster.interfaces; their vMACs have vcx 2.
	Interfaces []Interface
	// Monitor lists its monitored links (monitor).
	Monitor []string
	// PingServer is its remote link monitoring (pingserver); its
	// interfaces are among Interfaces.
	PingServer PingServer
}

// VClusterSection is the part of a cluster section that belongs to one
// virtual cluster: its data interfaces, monitored links and pingserver.
type VClusterSection struct {
	Interfaces []Interface
	Monitor    []string
	PingServer PingServer
	// Checks are the node's health checks (cluster.checks): they count in
	// every vcluster the node runs.
	Checks []Check
}

// Section returns the interfaces, monitor and pingserver of vcluster n (1
// or 2); vcluster 2 is empty unless VCluster2.Enabled.
func (c *Cluster) Section(n int) VClusterSection {
	if n == 2 {
		if !c.VCluster2.Enabled {
			return VClusterSection{}
		}
		v := &c.VCluster2
		return VClusterSection{Interfaces: v.Interfaces, Monitor: v.Monitor, PingServer: v.PingServer, Checks: c.Checks}
	}
	return VClusterSection{Interfaces: c.Interfaces, Monitor: c.Monitor, PingServer: c.PingServer, Checks: c.Checks}
}

// HBDev is one heartbeat device.
type HBDev struct {
	// Name is the interface name (name).
	Name string
	// Priority orders the devices for the sync channel, 0-255 (priority),
	// default 0; higher is preferred.
	Priority int
	// Direct says the hbdev is a cable straight to the peers' NICs, with no
	// switch between (direct, default false): when the carrier of every
	// direct hbdev a peer was heard on is down for carrier_debounce, that
	// peer is lost at once, without waiting for the lost threshold.
	Direct bool
}

// Interface is a data interface with its cluster addresses.
type Interface struct {
	// Name is the interface name (name).
	Name string
	// Addresses are host addresses with their prefix length, as written
	// (10.9.0.100/24), not masked (addresses).
	Addresses []netip.Prefix
}

// EthTypes are the Ethertypes hagent sends and receives.
type EthTypes struct {
	// HA carries heartbeats (ha), default 0x8890.
	HA uint16
	// HC carries heartbeats in transparent mode (hc), default 0x8891.
	HC uint16
	// L2EP carries the configuration sync channel (l2ep), default 0x8893.
	L2EP uint16
	// Session is reserved for session sync (session), default 0x8892.
	Session uint16
}

// PingServer monitors remote targets through some interfaces.
type PingServer struct {
	// Interfaces are the interfaces the targets are pinged through (interfaces).
	Interfaces []string
	// Targets are the addresses pinged (targets).
	Targets []netip.Addr
	// Interval is the ping period (interval), 100ms-60s, default 1s.
	Interval time.Duration
	// FailoverThreshold is how many lost pings mark the path down
	// (failover_threshold), 1-100, default 5.
	FailoverThreshold int
	// FlipTimeout (flip_timeout, FGCP pingserver-flip-timeout), 0-24h,
	// default 0 (off): a node that took the primary role because it had
	// more monitored items up does not count its own pingserver targets
	// going down until it has been primary this long, so two members that
	// both lose a remote target do not hand the role back and forth.
	FlipTimeout time.Duration
}

// UnicastHB carries the heartbeats and the channels in UDP between the
// members' addresses (FGCP unicast-hb), for networks where raw Ethertypes
// do not pass.
type UnicastHB struct {
	// Enabled turns it on (enabled), default false.
	Enabled bool
	// Peers are every member's address, this node's included (peers): each
	// node binds the one configured on it and sends to the others; the
	// same list on every member. 2-4 unicast addresses (2-16 in mode
	// fgsp: MaxMembers).
	Peers []netip.Addr
	// Port carries heartbeats (port), default 6065; SyncPort the
	// configuration-sync channel (sync_port), default 6066; SessionPort the
	// session-sync channel (session_port), default 6067.
	Port, SyncPort, SessionPort int
	// Priority ranks the UDP path among the hbdevs for the channels
	// (priority), 0-255, default 0.
	Priority int
}

// Sync configures the synchronization of files from the primary.
type Sync struct {
	// Enabled turns synchronization on (enabled), default true.
	Enabled bool
	// Paths are absolute, cleaned files or directories kept identical
	// (paths); none is inside another.
	Paths []string
	// Period is the checksum comparison period (period), 1s-24h, default 60s.
	Period time.Duration
	// OnChange maps a synchronized path (or a path under one) to the
	// command run on a secondary after it changed (on_change).
	OnChange map[string]string
}

// SessionPickup configures session pickup (docs/sessionsync.md): the primary copies
// its kernel connection-tracking table to the secondaries over the
// eth_type.session channel.
type SessionPickup struct {
	// Enabled turns session pickup on (enabled), default false.
	Enabled bool
	// Connectionless also copies UDP and ICMP flows (connectionless),
	// default false.
	Connectionless bool
	// Expectation also copies conntrack expectations (expectation),
	// default false.
	Expectation bool
	// NAT also copies NATed flows (nat), default true.
	NAT bool
	// Delay copies a flow only once it has lived this long (delay),
	// 0-3600s, default 0s.
	Delay time.Duration
	// Defer holds the packet that creates a new flow (and the packets of
	// that flow that follow while it is held) until every live peer has
	// the flow in its kernel, or this long (defer), 0s-1s, 0 off; default
	// DefaultDefer of the mode: 20ms in fgsp, 0s in a-p.
	Defer time.Duration
	// SyncDev are dedicated interfaces for the session channel (sync_dev);
	// empty: the hbdevs.
	SyncDev []string
	// Ignore are prefixes whose flows are never copied (ignore).
	Ignore []netip.Prefix
	// DownUntilSynced are interfaces a starting member keeps down until
	// its bulk session copy is complete (down_until_synced).
	DownUntilSynced []string
}

// Hooks are shell commands run with /bin/sh -c on role changes.
type Hooks struct {
	// Primary runs on becoming primary (primary).
	Primary string
	// Secondary runs on becoming secondary or stopping (secondary).
	Secondary string
	// Fault runs on entering the fault state (fault).
	Fault string
	// Timeout bounds each run (timeout), 1s-1h, default 30s.
	Timeout time.Duration
	// Env names variables of hagentd's environment passed on to hooks
	// (env); a hook otherwise gets only PATH and the HAGENT_ variables.
	Env []string
}

// Default returns a configuration with every default filled in, including
// the node name and serial derived from this machine. The cluster part is
// not valid by itself: it has no hbdev and no password file.
func Default() Config {
	c := Config{
		ControlSocket: DefaultControlSocket,
		LogFormat:     DefaultLogFormat,
		LogLevel:      DefaultLogLevel,
		Node:          Node{Priority: DefaultNodePriority, VCluster2: NodeVCluster{Priority: DefaultNodePriority}, Mgmt: NodeMgmt{Table: DefaultMgmtTable}},
		Cluster:       DefaultCluster(),
	}
	c.Node.Name, c.Node.Serial = defaultIdentity()
	return c
}

// DefaultCluster returns a cluster section with every default filled in.
func DefaultCluster() Cluster {
	return Cluster{
		Auth:             true,
		Mode:             DefaultMode,
		VCluster:         DefaultVCluster,
		HBInterval:       DefaultHBInterval,
		HBLostThreshold:  DefaultHBLostThreshold,
		HelloHolddown:    DefaultHelloHolddown,
		UptimeDiffMargin: DefaultUptimeDiffMargin,
		FailoverHoldTime: DefaultFailoverHoldTime,
		MonitorHolddown:  DefaultMonitorHolddown,
		OverrideWaitTime: DefaultOverrideWaitTime,
		CarrierDebounce:  DefaultCarrierDebounce,
		UnicastHB:        UnicastHB{Port: 6065, SyncPort: 6066, SessionPort: 6067},
		EthType: EthTypes{
			HA:      DefaultEthTypeHA,
			HC:      DefaultEthTypeHC,
			L2EP:    DefaultEthTypeL2EP,
			Session: DefaultEthTypeSession,
		},
		PingServer: PingServer{
			Interval:          DefaultPingInterval,
			FailoverThreshold: DefaultPingThreshold,
		},
		ARPs:          DefaultARPs,
		ARPsInterval:  DefaultARPsInterval,
		Sync:          Sync{Enabled: true, Period: DefaultSyncPeriod},
		SessionPickup: SessionPickup{NAT: true},
		Hooks:         Hooks{Timeout: DefaultHookTimeout},
		VCluster2: VCluster2{PingServer: PingServer{
			Interval:          DefaultPingInterval,
			FailoverThreshold: DefaultPingThreshold,
		}},
	}
}

// DefaultFGSPDefer is session_pickup.defer's default in mode fgsp: the
// first packet of a new flow waits at most this long for the peers'
// copies (OpenBSD's pfsync defer waits at most 20 ms too).
const DefaultFGSPDefer = 20 * time.Millisecond

// DefaultDefer is session_pickup.defer's default in mode: DefaultFGSPDefer
// in fgsp, where a flow's reply may cross another member; 0 (off) in a-p,
// where one member forwards both directions.
func DefaultDefer(mode string) time.Duration {
	if mode == ModeFGSP {
		return DefaultFGSPDefer
	}
	return 0
}

// Seams for tests.
var (
	hostname      = os.Hostname
	machineIDFile = "/etc/machine-id"
)

// defaultIdentity returns the default node name and serial.
func defaultIdentity() (name, serial string) {
	name, err := hostname()
	if err != nil || name == "" {
		name = "localhost"
	}
	return name, deriveSerial(name)
}

// DerivedSerial returns the serial this machine gets when node.serial is
// not set. VMs cloned from one template share /etc/machine-id, and with it
// this serial: hagentd --check says so.
func DerivedSerial() string {
	_, serial := defaultIdentity()
	return serial
}

// deriveSerial builds "HAGT" + 12 upper-case hex digits from the machine id,
// or from a hash of the hostname when the machine id is missing or malformed.
func deriveSerial(host string) string {
	if b, err := os.ReadFile(machineIDFile); err == nil {
		id := strings.TrimSpace(string(b))
		if len(id) >= 12 {
			if _, err := hex.DecodeString(id[:12]); err == nil {
				return "HAGT" + strings.ToUpper(id[:12])
			}
		}
	}
	sum := sha256.Sum256([]byte(host))
	return "HAGT" + strings.ToUpper(hex.EncodeToString(sum[:6]))
}

// HeartbeatEtherType returns the Ethertype heartbeats use: HC in
// transparent mode, HA otherwise.
func (c *Cluster) HeartbeatEtherType() uint16 {
	if c.Transparent {
		return c.EthType.HC
	}
	return c.EthType.HA
}

// HBDevsByPriority returns a copy of HBDevs sorted by priority, highest
// first; devices of equal priority keep their configuration order.
func (c *Cluster) HBDevsByPriority() []HBDev {
	out := append([]HBDev(nil), c.HBDevs...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Priority > out[j].Priority })
	return out
}
