package agent

import (
	"slices"
	"testing"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/config"
)

// TestSignalPorts: link_failed_signal fires only on a loss of the primary
// role decided on monitored items with a monitored link of this member
// down, and never sets an hbdev, a sync_dev or a data interface of the
// other vcluster down.
func TestSignalPorts(t *testing.T) {
	cfg := config.Default()
	cfg.Cluster.HBDevs = []config.HBDev{{Name: "ha1"}}
	cfg.Cluster.SessionPickup.SyncDev = []string{"sync0"}
	cfg.Cluster.Monitor = []string{"port1", "port2", "port3", "ha1", "sync0", "port9"}
	cfg.Cluster.VCluster2 = config.VCluster2{Enabled: true, Interfaces: []config.Interface{{Name: "port9"}}}
	cfg.Cluster.LinkFailedSignal = time.Second
	lost := cluster.Action{Type: cluster.ActionRoleChange, Previous: cluster.RolePrimary, Role: cluster.RoleSecondary,
		Reason: "node-b is selected as the primary because it has the most connected monitored interfaces"}
	port1Down := map[string]bool{"port1": false, "port2": true}
	for _, tc := range []struct {
		name    string
		mutate  func(c *config.Config, a *cluster.Action, m map[string]bool)
		monitor map[string]bool
		want    []string
	}{
		{"link failure", nil, port1Down, []string{"port2", "port3"}},
		{"off", func(c *config.Config, _ *cluster.Action, _ map[string]bool) { c.Cluster.LinkFailedSignal = 0 }, port1Down, nil},
		{"by priority", func(_ *config.Config, a *cluster.Action, _ map[string]bool) {
			a.Reason = "node-b is selected as the primary because it has the largest value of override priority"
		}, port1Down, nil},
		{"graceful stop", func(_ *config.Config, a *cluster.Action, _ map[string]bool) {
			a.Reason = "shutdown: handed over to node-b"
		}, port1Down, nil},
		{"no link down (a check or a pingserver target)", nil, map[string]bool{"port1": true, "check:web": false}, nil},
		{"not from primary", func(_ *config.Config, a *cluster.Action, _ map[string]bool) { a.Previous = cluster.RoleStarting }, port1Down, nil},
		{"to fault", func(_ *config.Config, a *cluster.Action, _ map[string]bool) { a.Role = cluster.RoleFault }, port1Down, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, act := cfg, lost
			c.Cluster.Monitor = slices.Clone(cfg.Cluster.Monitor)
			if tc.mutate != nil {
				tc.mutate(&c, &act, tc.monitor)
			}
			if got := signalPorts(&c, 1, tc.monitor, act); !slices.Equal(got, tc.want) {
				t.Fatalf("signalPorts = %v, want %v", got, tc.want)
			}
		})
	}
}
