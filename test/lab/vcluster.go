package lab

import (
	"fmt"
	"strings"
)

// VCluster2 are the knobs of a node's second virtual cluster in a WAN lab
// (Spec.WAN): port2, with the cluster address WANClusterIPv4 on the WAN
// bridge, moves from vcluster 1 to cluster.vcluster2.
type VCluster2 struct {
	Priority int
	Override bool
	Monitor  bool // monitor port2 in vcluster 2
}

// VClusterConfig renders the node's hagent.yaml for p with two virtual
// clusters: vcluster 1 has port1 (and p.Monitor's port1), vcluster 2 has
// port2 with v's priority and override.
func (n *Node) VClusterConfig(p Params, v VCluster2) (string, error) {
	if !n.lab.Spec.WAN {
		return "", fmt.Errorf("lab: two vclusters need a WAN lab (port2 on its own bridge)")
	}
	cfg, err := n.Config(p)
	if err != nil {
		return "", err
	}
	port2 := fmt.Sprintf("    - {name: port2, addresses: [%s/24]}\n", WANClusterIPv4)
	realtime := fmt.Sprintf("  realtime: %v\n", p.Realtime)
	if !strings.Contains(cfg, port2) || !strings.Contains(cfg, realtime) {
		return "", fmt.Errorf("lab: unexpected generated configuration:\n%s", cfg)
	}
	if v.Priority == 0 {
		v.Priority = 128
	}
	cfg = strings.Replace(cfg, port2, "", 1)
	cfg = strings.Replace(cfg, realtime, realtime+fmt.Sprintf("  vcluster2: {priority: %d, override: %v}\n", v.Priority, v.Override), 1)
	// The cluster section is the file's last.
	cfg += "  vcluster2:\n    enabled: true\n    interfaces:\n" + port2
	if v.Monitor {
		cfg += "    monitor: [port2]\n"
	}
	return cfg, nil
}
