package agent

import (
	"context"
	"fmt"
	"slices"

	"github.com/hashicorp/go-hclog"

	"github.com/hagent/hagent/config"
)

const cmdReload = "reload"

// Reload applies a new configuration (SIGHUP, or a synchronized cluster
// section) where that is safe while running. config.Keys says which keys
// that is (Key.Reload): node priority and override, the election timers,
// hb_interval and hb_lost_threshold, hooks, group_name and log_level
// apply live. Every other key that changed (sockets, the vMAC manager,
// the syncer, session pickup, cluster.mode, node.realtime, log_format...)
// keeps its running value, is logged once and shown in status as
// restart_needed until a restart or a reload back to the running value
// (TestReloadRestartKeys, TestReloadModeAndSessions). It returns those
// keys.
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
	// Keep what cannot change live, take the rest.
	merged := *newCfg
	pending := config.KeepRunning(old, &merged)
	if merged.LogLevel != old.LogLevel {
		// The loggers made from the one given to New share its level
		// (hclog without IndependentLevels), hagentd's own included.
		if l := hclog.LevelFromString(merged.LogLevel); l != hclog.NoLevel {
			a.log.SetLevel(l)
		}
	}

	a.cfgMu.Lock()
	a.cfg = &merged
	a.desired = newCfg.Cluster
	a.restartNeeded = pending
	a.wanted = newCfg
	a.cfgMu.Unlock()
	for _, v := range a.vcs {
		v.m.UpdateConfig(machineConfig(&merged, v.sec), a.now())
	}
	a.process()
	reason := "configuration reloaded"
	if len(pending) > 0 {
		reason += fmt.Sprintf("; restart needed to apply: %v", pending)
		a.log.Warn("configuration reloaded; some changes wait for a restart (restart needed)", "keys", pending)
	} else {
		a.log.Info("configuration reloaded")
	}
	a.hist.add(Event{Time: a.now(), Kind: "config", Reason: reason})
	if a.sync != nil {
		a.sync.s.Rescan() // a changed cluster: section is pushed (primary) or re-checked
	}
	return pending
}

// pendingRestart returns the keys the last reload could not apply; status
// reads it from any goroutine.
func (a *Agent) pendingRestart() []string {
	a.cfgMu.RLock()
	defer a.cfgMu.RUnlock()
	return slices.Clone(a.restartNeeded)
}

// wantedConfig returns the configuration the last reload was given (the
// running one before any): a cluster section synchronized from the
// primary replaces its cluster part, so the node-local keys of a reloaded
// file that wait for a restart stay reported
// (TestReloadSyncedSectionKeepsFileKeys).
func (a *Agent) wantedConfig() *config.Config {
	a.cfgMu.RLock()
	defer a.cfgMu.RUnlock()
	if a.wanted != nil {
		return a.wanted
	}
	return a.cfg
}
