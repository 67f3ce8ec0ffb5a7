package config

import (
	"net/netip"
	"slices"
)

// The management interface (FGCP ha-mgmt-interfaces) is split like the
// rest of the file: which interface is reserved is cluster-wide
// (cluster.mgmt_interface, synchronized, the same on every member), its
// addresses, gateway and routing table are each node's own (node.mgmt,
// never synchronized). The interface is reserved: validation refuses it
// wherever the cluster would use it (TestMgmtInterfaceReserved).

// validateMgmtInterface checks that cluster.mgmt_interface is a valid
// name and appears in none of the cluster's own interface lists: not a
// heartbeat device, a data interface (whose MAC becomes the virtual MAC
// and which carries the cluster addresses), a monitored link, a
// pingserver interface, a session sync device or an interface kept down
// until synchronized. Each clash is reported at the list item.
func (d *decoder) validateMgmtInterface(k func(string) string, c *Cluster) {
	m := c.MgmtInterface
	if m == "" {
		return
	}
	d.ifName(k("mgmt_interface"), m)
	why := " is the management interface (mgmt_interface): it keeps its permanent MAC and its own addresses and is never "
	names := func(key string, list []string, role string) {
		for i, n := range list {
			if n == m {
				d.errorf(indexKey(k(key), i), "%s%s%s", n, why, role)
			}
		}
	}
	for i, h := range c.HBDevs {
		if h.Name == m {
			d.errorf(indexKey(k("hbdev"), i)+".name", "%s%s%s", m, why, "a heartbeat device")
		}
	}
	for _, sec := range []struct {
		sub string
		s   VClusterSection
	}{{"", c.Section(1)}, {"vcluster2.", c.Section(2)}} {
		for i, ifc := range sec.s.Interfaces {
			if ifc.Name == m {
				d.errorf(indexKey(k(sec.sub+"interfaces"), i)+".name", "%s%s%s", m, why, "a data interface (no virtual MAC, no cluster address)")
			}
		}
		names(sec.sub+"monitor", sec.s.Monitor, "monitored in the election")
		names(sec.sub+"pingserver.interfaces", sec.s.PingServer.Interfaces, "monitored in the election (pingserver)")
	}
	names("session_pickup.sync_dev", c.SessionPickup.SyncDev, "a session sync device")
	names("session_pickup.down_until_synced", c.SessionPickup.DownUntilSynced, "set down by the cluster")
}

// validateMgmt checks node.mgmt, and it against the cluster section: the
// addresses are unicast host addresses, none of them a cluster address or
// a unicast_hb peer; the gateway is a neighbour on one of their subnets
// (or an IPv6 link-local address); the table is not one of the kernel's.
func (d *decoder) validateMgmt(c *Config) {
	m := &c.Node.Mgmt
	d.intRange("node.mgmt.table", m.Table, 1, 252)
	if len(m.Addresses) > 0 && c.Cluster.MgmtInterface == "" {
		d.errorf("node.mgmt.addresses", "needs cluster.mgmt_interface: the interface the management addresses go on")
	}
	if m.Gateway.IsValid() && len(m.Addresses) == 0 {
		d.errorf("node.mgmt.gateway", "needs node.mgmt.addresses: the gateway routes what leaves from them")
	}
	cluster := map[netip.Addr]string{}
	for _, sec := range []struct {
		sub string
		s   VClusterSection
	}{{"", c.Cluster.Section(1)}, {"vcluster2.", c.Cluster.Section(2)}} {
		for i, ifc := range sec.s.Interfaces {
			for j, a := range ifc.Addresses {
				if a.IsValid() {
					cluster[a.Addr()] = indexKey(indexKey("cluster."+sec.sub+"interfaces", i)+".addresses", j)
				}
			}
		}
	}
	seen := map[netip.Addr]int{}
	for i, a := range m.Addresses {
		p := indexKey("node.mgmt.addresses", i)
		if msg := checkHostPrefix(a); msg != "" {
			d.errorf(p, "%s", msg)
			continue
		}
		switch first, dup := seen[a.Addr()]; {
		case dup:
			d.errorf(p, "%s is already addresses[%d]", a.Addr(), first)
		case cluster[a.Addr()] != "":
			d.errorf(p, "%s is also the cluster address %s; a management address belongs to one node and never moves", a.Addr(), cluster[a.Addr()])
		case slices.Contains(c.Cluster.UnicastHB.Peers, a.Addr()):
			d.errorf(p, "%s is a unicast_hb peer; heartbeats never use the management interface", a.Addr())
		}
		seen[a.Addr()] = i
	}
	if g := m.Gateway; g.IsValid() {
		onLink := g.Is6() && g.IsLinkLocalUnicast()
		for _, a := range m.Addresses {
			if a.IsValid() && a.Contains(g) && g != a.Addr() {
				onLink = true
			}
		}
		switch {
		case g.Zone() != "" || g.Is4In6() || g.IsUnspecified() || g.IsMulticast() || g.IsLoopback():
			d.errorf("node.mgmt.gateway", "%s is not a unicast address of a router", g)
		case !onLink && len(m.Addresses) > 0:
			d.errorf("node.mgmt.gateway", "%s is not inside the subnet of a management address (nor IPv6 link-local): it must be a neighbour on the management interface", g)
		}
	}
}
