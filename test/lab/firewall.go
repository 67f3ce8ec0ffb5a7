package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/hagent/hagent/sessionsync"
)

// Addresses of the firewall topology (Spec.WAN).
const (
	WANClusterIPv4 = "10.9.2.100" // port2's cluster address, the masquerade source
	ServerIPv4     = "10.9.2.10"
)

// bridgeOf is the bridge data link d of a node is on.
func (l *Lab) bridgeOf(d int) string {
	if l.Spec.WAN && d == 2 {
		return "br1"
	}
	return "br0"
}

// buildWAN adds the server namespace on the WAN bridge and makes the
// cluster the client's default gateway.
func (l *Lab) buildWAN() error {
	l.Server = l.Prefix + "-sv"
	if err := l.addNS(l.Server); err != nil {
		return err
	}
	return ipAll([][]string{
		{"link", "add", "eth0", "netns", l.Server, "type", "veth", "peer", "name", "sv0", "netns", l.Switch},
		{"-n", l.Switch, "link", "set", "sv0", "master", "br1"},
		{"-n", l.Switch, "link", "set", "sv0", "up"},
		{"-n", l.Server, "addr", "add", ServerIPv4 + "/24", "dev", "eth0"},
		{"-n", l.Server, "link", "set", "eth0", "up"},
	})
}

// FirewallRuleset is the path of the example ruleset (deploy/firewall).
func FirewallRuleset() string {
	return filepath.Join(RepoRoot(), "deploy", "firewall", "nftables.conf")
}

// SetupFirewall makes every node a stateful firewall: forwarding on,
// nf_conntrack_tcp_loose=0, the deploy/firewall ruleset, and the client
// routed through the cluster. extra sysctls (key=value) follow.
func (l *Lab) SetupFirewall(extra ...string) error {
	if _, err := exec.LookPath("nft"); err != nil {
		return fmt.Errorf("lab: needs nftables (nft)")
	}
	rules, err := os.ReadFile(FirewallRuleset())
	if err != nil {
		return err
	}
	for _, n := range l.Nodes {
		cmd := exec.Command("ip", "netns", "exec", n.NS, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(string(rules))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nft on %s: %v: %s", n.Name, err, out)
		}
		for _, kv := range append([]string{"net.ipv4.ip_forward=1", "net.netfilter.nf_conntrack_tcp_loose=0"}, extra...) {
			if _, err := Exec(n.NS, "sysctl", "-q", "-w", kv); err != nil {
				return err
			}
		}
	}
	_, err = Exec(l.Client, "ip", "route", "add", "default", "via", ClusterIPv4)
	return err
}

// Flows returns the flows of a node's kernel conntrack table (over
// ctnetlink, as hagentd reads them).
func (n *Node) Flows() ([]sessionsync.Flow, error) {
	var out []sessionsync.Flow
	err := InNS(n.NS, func() error {
		k, err := sessionsync.OpenKernel()
		if err != nil {
			return err
		}
		defer k.Close()
		return k.Dump(func(f *sessionsync.Flow) { out = append(out, *f) })
	})
	return out, err
}

// ApplyFlows writes records into a node's kernel table (to fill it with
// flows, as traffic would).
func (n *Node) ApplyFlows(recs []sessionsync.Record) error {
	return InNS(n.NS, func() error {
		k, err := sessionsync.OpenKernel()
		if err != nil {
			return err
		}
		defer k.Close()
		for i, err := range k.Apply(recs) {
			if err != nil {
				return fmt.Errorf("record %d (%s): %w", i, recs[i].Flow.String(), err)
			}
		}
		return nil
	})
}
