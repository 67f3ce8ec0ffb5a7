package agent

import (
	"errors"
	"fmt"

	"github.com/hashicorp/go-hclog"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/vmac"
)

// Release undoes what a hagentd that died (SIGKILL, a crash) left on this
// node: its data interfaces keep the virtual MACs and cluster addresses of
// a primary until the next hagentd starts, so the kernel keeps answering
// ARP for the cluster addresses with the vMAC and the switch sends the
// cluster's traffic to a node that no longer tracks it. `hagentd --release`
// (the systemd unit's ExecStopPost) restores each interface's permanent MAC
// (remembered in runDir) and removes the cluster addresses, at once, not a
// RestartSec and a start-up later. On a node that holds nothing it changes
// nothing.
func Release(cfg *config.Config, runDir string, log hclog.Logger) error {
	if len(cfg.Cluster.Interfaces) == 0 {
		return nil
	}
	if runDir == "" {
		runDir = DefaultRunDir
	}
	vc := vmac.Config{
		GroupID: cfg.Cluster.GroupID, VCluster: cfg.Cluster.VCluster,
		ARPs: cfg.Cluster.ARPs, ARPInterval: cfg.Cluster.ARPsInterval,
		StateDir: runDir, Logger: log.Named("vmac"),
	}
	for _, ifc := range cfg.Cluster.Interfaces {
		vc.Interfaces = append(vc.Interfaces, vmac.Interface{Name: ifc.Name, Prefixes: ifc.Addresses})
	}
	m, err := vmac.NewManager(vc)
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	err = m.Reset()
	return errors.Join(err, m.Close())
}
