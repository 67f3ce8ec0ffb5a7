package config

import (
	"net/netip"
	"strings"
	"testing"
)

// mgmtBase is a valid configuration with a management interface; each
// case of TestMgmtInterfaceReserved appends one line that breaks it.
const mgmtBase = `node:
  mgmt: {addresses: [10.8.0.11/24], gateway: 10.8.0.1, table: 200}
cluster:
  password_file: /etc/hagent/key
  mgmt_interface: mgmt
  interfaces: [{name: port1, addresses: [10.9.0.100/24]}]
  hbdev: [{name: ha1}]
`

// TestMgmtInterfaceReserved: the management interface is refused, with one
// error naming the file, line and key, wherever the cluster would use it
// (as a heartbeat, data, monitored, pingserver or session interface, or a
// cluster address), and node.mgmt is checked on its own.
func TestMgmtInterfaceReserved(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	c, err := Parse("ok.yaml", []byte(mgmtBase))
	if err != nil {
		t.Fatalf("the base does not parse: %v", err)
	}
	if c.Cluster.MgmtInterface != "mgmt" || c.Node.Mgmt.Table != 200 || c.Node.Mgmt.Gateway != netip.MustParseAddr("10.8.0.1") ||
		len(c.Node.Mgmt.Addresses) != 1 || c.Node.Mgmt.Addresses[0] != netip.MustParsePrefix("10.8.0.11/24") {
		t.Fatalf("parsed %+v / %q", c.Node.Mgmt, c.Cluster.MgmtInterface)
	}
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"hbdev", strings.Replace(mgmtBase, "hbdev: [{name: ha1}]", "hbdev: [{name: ha1}, {name: mgmt}]", 1),
			"x.yaml:7: cluster.hbdev[1].name: mgmt is the management interface (mgmt_interface): it keeps its permanent MAC and its own addresses and is never a heartbeat device"},
		{"data interface", mgmtBase + "  vcluster2: {enabled: true, interfaces: [{name: mgmt}]}\n",
			"x.yaml:8: cluster.vcluster2.interfaces[0].name: mgmt is the management interface (mgmt_interface): it keeps its permanent MAC and its own addresses and is never a data interface (no virtual MAC, no cluster address)"},
		{"monitor", mgmtBase + "  monitor: [port1, mgmt]\n",
			"x.yaml:8: cluster.monitor[1]: mgmt is the management interface (mgmt_interface): it keeps its permanent MAC and its own addresses and is never monitored in the election"},
		{"pingserver", mgmtBase + "  pingserver: {interfaces: [port1, mgmt], targets: [10.9.0.254]}\n",
			"x.yaml:8: cluster.pingserver.interfaces[1]: mgmt is the management interface (mgmt_interface): it keeps its permanent MAC and its own addresses and is never monitored in the election (pingserver)"},
		{"sync_dev", mgmtBase + "  session_pickup: {sync_dev: [mgmt]}\n",
			"x.yaml:8: cluster.session_pickup.sync_dev[0]: mgmt is the management interface (mgmt_interface): it keeps its permanent MAC and its own addresses and is never a session sync device"},
		{"down_until_synced", mgmtBase + "  session_pickup: {down_until_synced: [mgmt]}\n",
			"x.yaml:8: cluster.session_pickup.down_until_synced[0]: mgmt is the management interface (mgmt_interface): it keeps its permanent MAC and its own addresses and is never set down by the cluster"},
		{"cluster address", strings.Replace(mgmtBase, "10.9.0.100/24", "10.8.0.11/24", 1),
			"x.yaml:2: node.mgmt.addresses[0]: 10.8.0.11 is also the cluster address cluster.interfaces[0].addresses[0]; a management address belongs to one node and never moves"},
		{"unicast peer", mgmtBase + "  unicast_hb: {enabled: true, peers: [10.8.0.11, 10.8.0.12]}\n",
			"x.yaml:2: node.mgmt.addresses[0]: 10.8.0.11 is a unicast_hb peer; heartbeats never use the management interface"},
		{"no mgmt_interface", strings.Replace(mgmtBase, "  mgmt_interface: mgmt\n", "", 1),
			"x.yaml:2: node.mgmt.addresses: needs cluster.mgmt_interface: the interface the management addresses go on"},
		{"gateway off-link", strings.Replace(mgmtBase, "gateway: 10.8.0.1", "gateway: 10.7.0.1", 1),
			"x.yaml:2: node.mgmt.gateway: 10.7.0.1 is not inside the subnet of a management address (nor IPv6 link-local): it must be a neighbour on the management interface"},
		{"gateway without addresses", strings.Replace(mgmtBase, "addresses: [10.8.0.11/24], ", "", 1),
			"x.yaml:2: node.mgmt.gateway: needs node.mgmt.addresses: the gateway routes what leaves from them"},
		{"table", strings.Replace(mgmtBase, "table: 200", "table: 254", 1),
			"x.yaml:2: node.mgmt.table: 254 is out of range 1-252"},
		{"network address", strings.Replace(mgmtBase, "10.8.0.11/24", "10.8.0.0/24", 1),
			"x.yaml:2: node.mgmt.addresses[0]: 10.8.0.0/24 is the network address of its subnet; want a host address such as 10.8.0.1"},
		{"bad interface name", strings.Replace(mgmtBase, "mgmt_interface: mgmt", "mgmt_interface: a-very-long-interface-name", 1),
			`x.yaml:5: cluster.mgmt_interface: interface name "a-very-long-interface-name" is longer than 15 bytes`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.yaml)
			}
			if got := err.Error(); got != tc.want {
				t.Fatalf("error:\n%s\nwant exactly:\n%s", got, tc.want)
			}
		})
	}
}

// TestMarshalMgmtInterface: mgmt_interface travels in the synchronized
// cluster section, and a section without it keeps its bytes.
func TestMarshalMgmtInterface(t *testing.T) {
	c := DefaultCluster()
	c.PasswordFile, c.HBDevs = "/etc/hagent/key", []HBDev{{Name: "ha1"}}
	without, err := MarshalCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(without), "mgmt_interface") {
		t.Fatalf("written while unset:\n%s", without)
	}
	c.MgmtInterface = "mgmt"
	b, err := MarshalCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseCluster("back", b)
	if err != nil {
		t.Fatal(err)
	}
	if back.MgmtInterface != "mgmt" {
		t.Fatalf("read back %q from:\n%s", back.MgmtInterface, b)
	}
}
