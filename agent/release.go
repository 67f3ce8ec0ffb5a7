package agent

import (
	"errors"
	"fmt"

	"github.com/hashicorp/go-hclog"

	"github.com/hagent/hagent/config"
)

// Release undoes what a hagentd that died (SIGKILL, a crash) left on this
// node: its data interfaces keep the virtual MACs and cluster addresses of
// a primary until the next hagentd starts, so the kernel keeps answering
// ARP for the cluster addresses with the vMAC and the switch sends the
// cluster's traffic to a node that no longer tracks it. `hagentd --release`
// (the systemd unit's ExecStopPost) restores each interface's permanent MAC
// (remembered in runDir) and removes the cluster addresses, at once, not a
// RestartSec and a start-up later. On a node that holds nothing it changes
// nothing. It must not run beside a live agent, whose vMACs and addresses
// it would take away: hagentd calls it only once it holds the run
// directory's lock and no agent answers on the control socket (the same
// holds for New, whose Reset does the same), and refuses otherwise.
func Release(cfg *config.Config, runDir string, log hclog.Logger) error {
	if runDir == "" {
		runDir = DefaultRunDir
	}
	var errs []error
	for _, v := range configured(cfg) { // both vclusters' interfaces
		n, err := newNetwork(cfg, v, runDir, log)
		if err != nil {
			errs = append(errs, fmt.Errorf("release: %w", err))
			continue
		}
		errs = append(errs, n.Reset(), n.Close())
	}
	return errors.Join(errs...)
}
