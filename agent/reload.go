package agent

import (
	"context"
	"fmt"
	"reflect"
	"slices"

	"github.com/hagent/hagent/config"
)

const cmdReload = "reload"

// Reload applies a new configuration (SIGHUP, or a synchronized cluster
// section) where that is safe while running: node priority and override,
// the election timers, hb_interval and hb_lost_threshold, hooks. Changes
// that need new sockets, a new vMAC manager or a new syncer (hbdevs,
// interfaces, group, Ethertypes, password, vcluster, vcluster2, monitor list, arps,
// sync, unicast_hb, carrier_debounce, metrics_listen) are reported and wait
// for a restart. It returns
// what was not applied.
func (a *Agent) Reload(ctx context.Context, cfg *config.Config) ([]string, error) {
	c := command{cmd: cmdReload, arg: cfg, reply: make(chan any, 1)}
	select {
	case a.cmdCh <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-c.reply:
		return r.([]string), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// reload runs in the run goroutine.
func (a *Agent) reload(newCfg *config.Config) []string {
	old := a.config()
	var pending []string
	o, n := old.Cluster, newCfg.Cluster
	need := func(what string, same bool) {
		if !same {
			pending = append(pending, what)
		}
	}
	need("cluster.hbdev", reflect.DeepEqual(o.HBDevs, n.HBDevs))
	need("cluster.interfaces", reflect.DeepEqual(o.Interfaces, n.Interfaces))
	need("cluster.group_id", o.GroupID == n.GroupID)
	need("cluster.vcluster", o.VCluster == n.VCluster)
	need("cluster.eth_type", o.EthType == n.EthType && o.Transparent == n.Transparent)
	need("cluster.password_file/auth", o.PasswordFile == n.PasswordFile && o.Auth == n.Auth)
	need("cluster.monitor", slices.Equal(o.Monitor, n.Monitor))
	need("cluster.pingserver", reflect.DeepEqual(o.PingServer, n.PingServer))
	need("cluster.vcluster2", reflect.DeepEqual(o.VCluster2, n.VCluster2))
	need("cluster.sync", reflect.DeepEqual(o.Sync, n.Sync))
	need("cluster.arps/arps_interval", o.ARPs == n.ARPs && o.ARPsInterval == n.ARPsInterval)
	need("cluster.unicast_hb", reflect.DeepEqual(o.UnicastHB, n.UnicastHB))
	need("cluster.hbdev[].direct/carrier_debounce", o.CarrierDebounce == n.CarrierDebounce)
	need("metrics_listen", old.MetricsListen == newCfg.MetricsListen)
	need("control_socket", old.ControlSocket == newCfg.ControlSocket)
	need("node.name/serial", old.Node.Name == newCfg.Node.Name && old.Node.Serial == newCfg.Node.Serial)

	// Keep what cannot change live, take the rest.
	merged := *newCfg
	merged.Cluster.HBDevs = o.HBDevs
	merged.Cluster.Interfaces = o.Interfaces
	merged.Cluster.GroupID = o.GroupID
	merged.Cluster.VCluster = o.VCluster
	merged.Cluster.EthType, merged.Cluster.Transparent = o.EthType, o.Transparent
	merged.Cluster.PasswordFile, merged.Cluster.Auth = o.PasswordFile, o.Auth
	merged.Cluster.Monitor = o.Monitor
	merged.Cluster.PingServer = o.PingServer
	merged.Cluster.VCluster2 = o.VCluster2
	merged.Cluster.Sync = o.Sync
	merged.Cluster.ARPs, merged.Cluster.ARPsInterval = o.ARPs, o.ARPsInterval
	merged.Cluster.UnicastHB = o.UnicastHB
	merged.Cluster.CarrierDebounce = o.CarrierDebounce
	merged.MetricsListen = old.MetricsListen
	merged.ControlSocket = old.ControlSocket
	merged.Node.Name, merged.Node.Serial = old.Node.Name, old.Node.Serial

	a.cfgMu.Lock()
	a.cfg = &merged
	a.desired = newCfg.Cluster
	a.cfgMu.Unlock()
	for _, v := range a.vcs {
		v.m.UpdateConfig(machineConfig(&merged, v.sec), a.now())
	}
	a.process()
	reason := "configuration reloaded"
	if len(pending) > 0 {
		reason += fmt.Sprintf("; needs a restart to apply: %v", pending)
		a.log.Warn("configuration reloaded; some changes need a restart", "keys", pending)
	} else {
		a.log.Info("configuration reloaded")
	}
	a.hist.add(Event{Time: a.now(), Kind: "config", Reason: reason})
	if a.sync != nil {
		a.sync.s.Rescan() // a changed cluster: section is pushed (primary) or re-checked
	}
	return pending
}
