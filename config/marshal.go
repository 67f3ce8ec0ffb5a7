package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// MarshalCluster returns the canonical YAML of a cluster section: every key
// in one fixed order (clusterNode's), defaults included, durations as strings ("200ms",
// "5m"), Ethertypes in hex (0x8890) and on_change sorted by path. Equal
// values give identical bytes, so the result can be checksummed; it reads
// back with ParseCluster. It fails only on values YAML cannot carry (an
// invalid address).
func MarshalCluster(c Cluster) ([]byte, error) {
	root, err := clusterNode(c)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("marshal cluster: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("marshal cluster: %w", err)
	}
	return buf.Bytes(), nil
}

func clusterNode(c Cluster) (*yaml.Node, error) {
	hbdevs := seqNode(false)
	for _, h := range c.HBDevs {
		hbdevs.Content = append(hbdevs.Content, mapNode(true,
			"name", strNode(h.Name),
			"priority", intNode(h.Priority),
			"direct", boolNode(h.Direct)))
	}
	ifaces, targets, err := sectionNodes(c.Interfaces, c.PingServer.Targets)
	if err != nil {
		return nil, err
	}
	ignore := seqNode(true)
	for _, p := range c.SessionPickup.Ignore {
		if !p.IsValid() {
			return nil, fmt.Errorf("marshal cluster: session_pickup: invalid ignore prefix")
		}
		ignore.Content = append(ignore.Content, strNode(p.String()))
	}
	onChange := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	paths := make([]string, 0, len(c.Sync.OnChange))
	for p := range c.Sync.OnChange {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		onChange.Content = append(onChange.Content, strNode(p), strNode(c.Sync.OnChange[p]))
	}
	if len(paths) == 0 {
		onChange.Style = yaml.FlowStyle
	}

	root := mapNode(false,
		"group_name", strNode(c.GroupName),
		"group_id", intNode(c.GroupID),
		"password_file", strNode(c.PasswordFile),
		"auth", boolNode(c.Auth),
		"mode", strNode(c.Mode),
		"vcluster", intNode(c.VCluster),
		"hbdev", hbdevs,
		"hb_interval", durNode(c.HBInterval),
		"hb_lost_threshold", intNode(c.HBLostThreshold),
		"hello_holddown", durNode(c.HelloHolddown),
		"uptime_diff_margin", durNode(c.UptimeDiffMargin),
		"failover_hold_time", durNode(c.FailoverHoldTime),
		"monitor_holddown", durNode(c.MonitorHolddown),
		"override_wait_time", durNode(c.OverrideWaitTime),
		"link_failed_signal", durNode(c.LinkFailedSignal),
		"carrier_debounce", durNode(c.CarrierDebounce),
		"eth_type", mapNode(true,
			"ha", hexNode(c.EthType.HA),
			"hc", hexNode(c.EthType.HC),
			"l2ep", hexNode(c.EthType.L2EP),
			"session", hexNode(c.EthType.Session)),
		"transparent", boolNode(c.Transparent),
		"interfaces", ifaces,
		"monitor", strSeq(c.Monitor),
		"pingserver", pingserverNode(&c.PingServer, targets),
		"unicast_hb", mapNode(false,
			"enabled", boolNode(c.UnicastHB.Enabled),
			"peers", addrSeq(c.UnicastHB.Peers),
			"port", intNode(c.UnicastHB.Port),
			"sync_port", intNode(c.UnicastHB.SyncPort),
			"session_port", intNode(c.UnicastHB.SessionPort),
			"priority", intNode(c.UnicastHB.Priority)),
		"arps", intNode(c.ARPs),
		"arps_interval", durNode(c.ARPsInterval),
		"arps_refresh", durNode(c.ARPsRefresh),
		"sync", mapNode(false,
			"enabled", boolNode(c.Sync.Enabled),
			"paths", strSeq(c.Sync.Paths),
			"period", durNode(c.Sync.Period),
			"on_change", onChange),
		"session_pickup", mapNode(false,
			"enabled", boolNode(c.SessionPickup.Enabled),
			"connectionless", boolNode(c.SessionPickup.Connectionless),
			"expectation", boolNode(c.SessionPickup.Expectation),
			"nat", boolNode(c.SessionPickup.NAT),
			"delay", durNode(c.SessionPickup.Delay),
			"sync_dev", strSeq(c.SessionPickup.SyncDev),
			"ignore", ignore,
			"down_until_synced", strSeq(c.SessionPickup.DownUntilSynced)),
		"hooks", hooksNode(&c.Hooks),
	)
	if n := checksNode(c.Checks); n != nil {
		root.Content = append(root.Content, strNode("checks"), n)
	}
	// Written only when set, like checks: a section without one keeps the
	// canonical bytes of the releases before it.
	if c.MgmtInterface != "" {
		root.Content = append(root.Content, strNode("mgmt_interface"), strNode(c.MgmtInterface))
	}
	// vcluster2 is written only when it is not all defaults, so that the
	// canonical bytes (and the checksum) of a single-vcluster section are
	// those of the releases before it.
	if v := &c.VCluster2; !v.isDefault() {
		ifaces2, targets2, err := sectionNodes(v.Interfaces, v.PingServer.Targets)
		if err != nil {
			return nil, err
		}
		root.Content = append(root.Content, strNode("vcluster2"), mapNode(false,
			"enabled", boolNode(v.Enabled),
			"interfaces", ifaces2,
			"monitor", strSeq(v.Monitor),
			"pingserver", pingserverNode(&v.PingServer, targets2)))
	}
	return root, nil
}

// hooksNode is the hooks mapping; env is written only when set, so that
// the canonical bytes (and the checksum) of a section without it are those
// of the releases before it.
func hooksNode(h *Hooks) *yaml.Node {
	n := mapNode(false,
		"primary", strNode(h.Primary),
		"secondary", strNode(h.Secondary),
		"fault", strNode(h.Fault),
		"timeout", durNode(h.Timeout))
	if len(h.Env) > 0 {
		n.Content = append(n.Content, strNode("env"), strSeq(h.Env))
	}
	return n
}

// sectionNodes returns the interfaces and the pingserver targets of a
// vcluster as YAML sequences.
func sectionNodes(ifs []Interface, ts []netip.Addr) (ifaces, targets *yaml.Node, err error) {
	if ifaces, err = ifacesNode(ifs); err != nil {
		return nil, nil, err
	}
	if targets, err = targetsNode(ts); err != nil {
		return nil, nil, err
	}
	return ifaces, targets, nil
}

func pingserverNode(ps *PingServer, targets *yaml.Node) *yaml.Node {
	return mapNode(false,
		"interfaces", strSeq(ps.Interfaces),
		"targets", targets,
		"interval", durNode(ps.Interval),
		"failover_threshold", intNode(ps.FailoverThreshold),
		"flip_timeout", durNode(ps.FlipTimeout))
}

func ifacesNode(list []Interface) (*yaml.Node, error) {
	ifaces := seqNode(false)
	for _, ifc := range list {
		addrs := seqNode(true)
		for _, a := range ifc.Addresses {
			if !a.IsValid() {
				return nil, fmt.Errorf("marshal cluster: interface %s: invalid address", ifc.Name)
			}
			addrs.Content = append(addrs.Content, strNode(a.String()))
		}
		ifaces.Content = append(ifaces.Content, mapNode(false,
			"name", strNode(ifc.Name),
			"addresses", addrs))
	}
	return ifaces, nil
}

func targetsNode(list []netip.Addr) (*yaml.Node, error) {
	targets := seqNode(true)
	for _, a := range list {
		if !a.IsValid() {
			return nil, fmt.Errorf("marshal cluster: pingserver: invalid target address")
		}
		targets.Content = append(targets.Content, strNode(a.String()))
	}
	return targets, nil
}

// mapNode builds a mapping from alternating key names and value nodes.
func mapNode(flow bool, kv ...any) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	if flow {
		n.Style = yaml.FlowStyle
	}
	for i := 0; i+1 < len(kv); i += 2 {
		n.Content = append(n.Content, strNode(kv[i].(string)), kv[i+1].(*yaml.Node))
	}
	return n
}

func seqNode(flow bool) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	if flow {
		n.Style = yaml.FlowStyle
	}
	return n
}

func strSeq(list []string) *yaml.Node {
	n := seqNode(true)
	for _, s := range list {
		n.Content = append(n.Content, strNode(s))
	}
	return n
}

// strNode is a string scalar; the encoder quotes it when it would
// otherwise read back as another type.
func strNode(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if s == "" {
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

func intNode(i int) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(i)}
}

func hexNode(v uint16) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: fmt.Sprintf("0x%04x", v)}
}

func boolNode(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

func durNode(v time.Duration) *yaml.Node { return strNode(formatDuration(v)) }

// formatDuration writes v in the largest unit that divides it exactly
// ("200ms", "20s", "5m", "1h"), falling back to Go's format for mixed
// values. The result always parses back with time.ParseDuration.
func formatDuration(v time.Duration) string {
	if v == 0 {
		return "0s"
	}
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}, {time.Millisecond, "ms"}, {time.Microsecond, "us"}} {
		if v%u.d == 0 {
			return strconv.FormatInt(int64(v/u.d), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(v), 10) + "ns"
}

// addrSeq is a flow sequence of addresses (invalid ones are left out: the
// decoder never produces them in a valid configuration).
func addrSeq(list []netip.Addr) *yaml.Node {
	n := seqNode(true)
	for _, a := range list {
		if a.IsValid() {
			n.Content = append(n.Content, strNode(a.String()))
		}
	}
	return n
}

// isDefault reports whether v is DefaultCluster's vcluster2 (off, empty).
func (v *VCluster2) isDefault() bool {
	ps := &v.PingServer
	return !v.Enabled && len(v.Interfaces) == 0 && len(v.Monitor) == 0 &&
		len(ps.Interfaces) == 0 && len(ps.Targets) == 0 &&
		ps.Interval == DefaultPingInterval && ps.FailoverThreshold == DefaultPingThreshold
}
