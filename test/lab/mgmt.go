package lab

import "fmt"

// The management network of a lab (BuildMgmt): each node's interface
// "mgmt" on a bridge mg0 of the switch namespace, which routes between
// that subnet (MgmtNet, the switch holding MgmtGateway) and a management
// client namespace behind it (MgmtClientIPv4). The client reaches a node's
// management address only through the gateway, so the node's reply must
// leave by its mgmt interface whatever its main routing table says.
const (
	MgmtGateway    = "10.8.0.1"
	MgmtClientIPv4 = "10.7.0.10"
)

// MgmtAddr is node index i's management address (without its /24).
func MgmtAddr(i int) string { return fmt.Sprintf("10.8.0.%d", 11+i) }

// BuildMgmt adds the management network; it returns the management
// client's namespace, removed with the lab.
func (l *Lab) BuildMgmt() (string, error) {
	sw, mc := l.Switch, l.Prefix+"-mc"
	if err := l.addNS(mc); err != nil {
		return "", err
	}
	steps := [][]string{
		{"-n", sw, "link", "add", "mg0", "type", "bridge", "forward_delay", "0", "stp_state", "0", "mcast_snooping", "0"},
		{"-n", sw, "addr", "add", MgmtGateway + "/24", "dev", "mg0"},
		{"-n", sw, "link", "set", "mg0", "up"},
		{"link", "add", "eth0", "netns", mc, "type", "veth", "peer", "name", "mc0", "netns", sw},
		{"-n", sw, "addr", "add", "10.7.0.1/24", "dev", "mc0"},
		{"-n", sw, "link", "set", "mc0", "up"},
		{"-n", mc, "addr", "add", MgmtClientIPv4 + "/24", "dev", "eth0"},
		{"-n", mc, "link", "set", "eth0", "up"},
		{"-n", mc, "route", "add", "default", "via", "10.7.0.1"},
	}
	for _, name := range l.Spec.Nodes {
		n := l.Nodes[name]
		peer := fmt.Sprintf("n%dm", n.Index)
		steps = append(steps,
			[]string{"link", "add", "mgmt", "netns", n.NS, "type", "veth", "peer", "name", peer, "netns", sw},
			[]string{"-n", sw, "link", "set", peer, "master", "mg0"},
			[]string{"-n", sw, "link", "set", peer, "up"})
	}
	if err := ipAll(steps); err != nil {
		return "", err
	}
	if _, err := Exec(sw, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return "", err
	}
	return mc, nil
}
