package config

// Key documents one key of the configuration file. Keys is the table that
// hagent.yaml(5) is generated from; the tests check it against the decoder
// (every key the decoder accepts is in the table, and no other), against
// Default (every default) and against validation (every numeric range).
type Key struct {
	// Path is the dotted key path; a list item is written [] and a
	// mapping's free keys [KEY]: cluster.hbdev[].priority,
	// cluster.sync.on_change[PATH].
	Path string
	// Type is what the value is: string, integer, boolean, duration,
	// ethertype, path, command, address, prefix, list or mapping.
	Type string
	// Default is the value taken when the key is absent, as written in
	// YAML, or a description of how it is derived in parentheses; empty
	// when there is none (the key is required or empty by default).
	Default string
	// Range is the accepted range ("0-255", "10ms-60s") or set of values
	// ("text, json"); for integers and durations it is "LOW-HIGH", which
	// the tests check against validation.
	Range string
	// Doc says what the key does, in one or two sentences.
	Doc string
}

// Keys lists every configuration key in file order: the top level, node:,
// then cluster:. Adding a key to the decoder without adding it here fails
// the tests.
var Keys = []Key{
	{Path: "control_socket", Type: "path", Default: DefaultControlSocket, Range: "absolute, at most 107 bytes",
		Doc: "Unix socket (mode 0600) that agentctl talks to. Node-local."},
	{Path: "log_format", Type: "string", Default: DefaultLogFormat, Range: "text, json",
		Doc: "Log format on standard error (the journal under systemd). Node-local."},
	{Path: "log_level", Type: "string", Default: DefaultLogLevel, Range: "trace, debug, info, warn, error",
		Doc: "Least severe log level written. Node-local."},
	{Path: "metrics_listen", Type: "address", Default: "", Range: "IP:port, or empty for none",
		Doc: "Address and port of the Prometheus metrics endpoint (/metrics, plain HTTP: bind it to a management or loopback address). Off by default. Node-local."},

	{Path: "node", Type: "mapping",
		Doc: "This node's identity and election weight. Never synchronized: FGCP keeps hostname, priority and override local."},
	{Path: "node.name", Type: "string", Default: "(the hostname)", Range: "1-64 bytes, no spaces",
		Doc: "Node name shown in status and history."},
	{Path: "node.serial", Type: "string", Default: `(HAGT + the first 12 hex digits of /etc/machine-id)`, Range: "1-32 of A-Z a-z 0-9 . _ -",
		Doc: "Serial number, the last tie-breaker of the election (the higher wins)."},
	{Path: "node.priority", Type: "integer", Default: "128", Range: "0-255",
		Doc: "Election priority; the higher wins (after monitored links and, without override, uptime)."},
	{Path: "node.override", Type: "boolean", Default: "false",
		Doc: "Rank priority above HA uptime, so a returning node of higher priority takes the primary role back."},
	{Path: "node.realtime", Type: "boolean", Default: "false",
		Doc: "Run the heartbeat path with SCHED_FIFO and locked memory (needs CAP_SYS_NICE and CAP_IPC_LOCK)."},

	{Path: "cluster", Type: "mapping",
		Doc: "Everything the members must agree on. The primary synchronizes this section to the secondaries."},
	{Path: "cluster.group_name", Type: "string", Default: `""`, Range: "at most 32 bytes",
		Doc: "Free label shown in status."},
	{Path: "cluster.group_id", Type: "integer", Default: "0", Range: "0-1023",
		Doc: "HA group; it selects the virtual MAC prefix. Clusters sharing a segment need different ids."},
	{Path: "cluster.password_file", Type: "path", Range: "absolute",
		Doc: "File holding the group password (trailing newlines ignored), the same on every member. Required when auth is true."},
	{Path: "cluster.auth", Type: "boolean", Default: "true",
		Doc: "Authenticate heartbeats (HMAC-SHA256). false disables authentication, with a loud warning."},
	{Path: "cluster.mode", Type: "string", Default: DefaultMode, Range: "a-p",
		Doc: "Cluster mode; only active-passive is supported."},
	{Path: "cluster.vcluster", Type: "integer", Default: "1", Range: "1-2",
		Doc: "Virtual cluster; it selects the vcluster digit of the virtual MAC."},
	{Path: "cluster.hbdev", Type: "list", Range: "1-16 items",
		Doc: "Heartbeat devices; heartbeats go out on all of them, the sync channel uses the highest-priority live one."},
	{Path: "cluster.hbdev[].name", Type: "string", Range: "an interface name",
		Doc: "Interface name of the heartbeat device."},
	{Path: "cluster.hbdev[].priority", Type: "integer", Default: "0", Range: "0-255",
		Doc: "Preference for the sync channel; the higher is used first."},
	{Path: "cluster.hbdev[].direct", Type: "boolean", Default: "false",
		Doc: "The device is a cable straight to the peers (no switch): when every direct hbdev a peer was heard on has lost carrier for carrier_debounce, the peer is lost at once instead of after the lost threshold."},
	{Path: "cluster.hb_interval", Type: "duration", Default: "200ms", Range: "10ms-60s",
		Doc: "Heartbeat period."},
	{Path: "cluster.hb_lost_threshold", Type: "integer", Default: "6", Range: "1-60",
		Doc: "Intervals without a valid heartbeat after which a peer is lost."},
	{Path: "cluster.hello_holddown", Type: "duration", Default: "20s", Range: "0s-300s",
		Doc: "Time in hello state before a node that hears no peer may become primary alone."},
	{Path: "cluster.uptime_diff_margin", Type: "duration", Default: "300s", Range: "0s-65535s",
		Doc: "HA uptime difference that counts in the election."},
	{Path: "cluster.failover_hold_time", Type: "duration", Default: "0s", Range: "0s-300s",
		Doc: "Minimum time after a failover before another one."},
	{Path: "cluster.carrier_debounce", Type: "duration", Default: "4ms", Range: "0s-1s",
		Doc: "How long the carrier of a direct hbdev must stay down before it counts; a shorter flap is ignored."},
	{Path: "cluster.eth_type", Type: "mapping",
		Doc: "Ethertypes of hagent's frames; each in 0x0600-0xffff, distinct, and none of IPv4, ARP, IPv6, 802.1Q, 802.1ad."},
	{Path: "cluster.eth_type.ha", Type: "ethertype", Default: "0x8890", Range: "0x0600-0xffff",
		Doc: "Heartbeats."},
	{Path: "cluster.eth_type.hc", Type: "ethertype", Default: "0x8891", Range: "0x0600-0xffff",
		Doc: "Heartbeats in transparent mode."},
	{Path: "cluster.eth_type.l2ep", Type: "ethertype", Default: "0x8893", Range: "0x0600-0xffff",
		Doc: "The configuration sync channel."},
	{Path: "cluster.eth_type.session", Type: "ethertype", Default: "0x8892", Range: "0x0600-0xffff",
		Doc: "Session synchronization (reserved)."},
	{Path: "cluster.transparent", Type: "boolean", Default: "false",
		Doc: "Send heartbeats with eth_type.hc instead of eth_type.ha."},
	{Path: "cluster.interfaces", Type: "list", Range: "0-16 items",
		Doc: "Data interfaces that get the virtual MAC and the cluster addresses on the primary."},
	{Path: "cluster.interfaces[].name", Type: "string", Range: "an interface name, not an hbdev",
		Doc: "Interface name."},
	{Path: "cluster.interfaces[].addresses", Type: "list", Range: "0-64 items",
		Doc: "Cluster addresses with their prefix length (10.9.0.100/24, 2001:db8::100/64), added on the primary."},
	{Path: "cluster.monitor", Type: "list", Range: "0-64 interface names",
		Doc: "Interfaces whose link state counts in the election (link failover)."},
	{Path: "cluster.pingserver", Type: "mapping",
		Doc: "Remote link monitoring with ARP probes from every member."},
	{Path: "cluster.pingserver.interfaces", Type: "list", Range: "0-64 interface names",
		Doc: "Interfaces the targets are probed through; required when targets is set."},
	{Path: "cluster.pingserver.targets", Type: "list", Range: "0-64 IPv4 addresses",
		Doc: "Targets, IPv4 neighbours inside a cluster subnet of a pingserver interface."},
	{Path: "cluster.pingserver.interval", Type: "duration", Default: "1s", Range: "100ms-60s",
		Doc: "Probe period."},
	{Path: "cluster.pingserver.failover_threshold", Type: "integer", Default: "5", Range: "1-100",
		Doc: "Missed probes after which a target counts as a failed monitored link."},
	{Path: "cluster.arps", Type: "integer", Default: "5", Range: "1-60",
		Doc: "Gratuitous ARPs (and unsolicited neighbour advertisements) sent per address on takeover."},
	{Path: "cluster.arps_interval", Type: "duration", Default: "8s", Range: "1s-20s",
		Doc: "Gap between them; the first goes out at once."},
	{Path: "cluster.sync", Type: "mapping",
		Doc: "Configuration synchronization from the primary over the 0x8893 channel."},
	{Path: "cluster.sync.enabled", Type: "boolean", Default: "true",
		Doc: "Synchronize the cluster section and the files under paths."},
	{Path: "cluster.sync.paths", Type: "list", Range: "0-256 absolute paths, none inside another",
		Doc: "Files or directories kept identical on every member."},
	{Path: "cluster.sync.period", Type: "duration", Default: "60s", Range: "1s-24h",
		Doc: "Period of the checksum comparison that repairs drift."},
	{Path: "cluster.sync.on_change", Type: "mapping", Range: "0-256 entries",
		Doc: "Command run with /bin/sh -c on a secondary after a synchronized path changed."},
	{Path: "cluster.sync.on_change[PATH]", Type: "command", Range: "PATH is one of paths or under one",
		Doc: "The command for PATH."},
	{Path: "cluster.hooks", Type: "mapping",
		Doc: "Commands run with /bin/sh -c, asynchronously, on role changes; they never delay a failover."},
	{Path: "cluster.hooks.primary", Type: "command", Default: `""`,
		Doc: "Run on becoming primary."},
	{Path: "cluster.hooks.secondary", Type: "command", Default: `""`,
		Doc: "Run on becoming secondary or stopping."},
	{Path: "cluster.hooks.fault", Type: "command", Default: `""`,
		Doc: "Run on entering the fault state."},
	{Path: "cluster.hooks.timeout", Type: "duration", Default: "30s", Range: "1s-1h",
		Doc: "Time limit of each hook run."},
}
