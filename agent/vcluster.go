package agent

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/vmac"
)

// vcluster is one virtual cluster's election and what it drives: its own
// pure cluster.Machine, its vMACs and addresses, its monitored links and
// its fault state (FGCP virtual clustering, docs/design.md). A node has one, or
// two with cluster.vcluster2. Everything else is the node's and shared:
// the heartbeats (one frame carries both vclusters' state, TLV 3), the
// membership and peer loss, serial conflicts, configuration sync, hooks
// and history (whose entries are tagged with the vcluster).
//
// The run goroutine owns every vcluster.
type vcluster struct {
	// id is the vcluster number (1 or 2): the vcx of its vMACs, the
	// VCluster of the heartbeat state it sends, what status shows.
	id int
	// sec is the section of the configuration it runs: 1 for
	// cluster.interfaces/monitor/pingserver and node.priority/override,
	// 2 for cluster.vcluster2 and node.vcluster2.
	sec int
	// tag is what its history entries carry: id on a node running two
	// vclusters, 0 (none) otherwise.
	tag int

	m   *cluster.Machine
	net Network

	monitor    map[string]bool // monitored link carrier, by name
	faultUntil time.Time       // a failed takeover's fault clears then
	// takeoverFault is a failed takeover's fault; appliedFault is the
	// fault the machine has now (with a lost serial conflict, shared).
	takeoverFault, appliedFault string
	// operatorFailoverSet is `ha failover set` given by the operator (the
	// session hold sets failover too, and must not clear the operator's).
	operatorFailoverSet bool
	// refresh is the periodic re-announcement (refresh.go).
	refresh arpsRefresh
	// checkCause is the health check whose change was the last change of
	// v's monitored items (monitorChanged; "" when it was a link or a
	// pingserver target): a role change decided on monitored items names
	// it in its reason and in the hooks' HAGENT_CHECK.
	checkCause   string
	checkCauseUp bool
	checkCauseAt time.Time // when it changed: the time of the step it caused
	// checkReason is the last role change's reason as the election gave
	// it and as status shows it, naming the health check that caused it.
	checkReason [2]string
	// flipUntil ends the pingserver flip_timeout window (flip.go); zero
	// when none is open.
	flipUntil time.Time
	// signal is the link_failed_signal record (linksignal.go).
	signal linkSignal
}

// cause is the health check that caused the role change act, or "": the
// change came in the step of the check's change or in the step where that
// change counted after monitor_holddown (a check that rose again gives the
// role back on priority or uptime), or the election decided on monitored
// items and the last of them to change was a check.
func (v *vcluster) cause(act cluster.Action) string {
	rose := v.m.MonitorRoseAt()
	if !act.Time.Equal(v.checkCauseAt) && (rose.IsZero() || !act.Time.Equal(rose)) && !strings.Contains(act.Reason, "monitored") {
		return ""
	}
	return v.checkCause
}

// withCheck is reason naming the health check that caused it, if one did:
// the election decided on monitored items, and the last of them to change
// was a check.
func (v *vcluster) withCheck(act cluster.Action) string {
	reason := act.Reason
	if v.cause(act) == "" {
		return reason
	}
	return reason + " (health check " + v.checkCause + " " + updown(v.checkCauseUp) + ")"
}

// section returns the interfaces, monitor and pingserver v runs.
func (v *vcluster) section(cfg *config.Config) config.VClusterSection {
	return cfg.Cluster.Section(v.sec)
}

// monitored lists what counts toward v's monitor_up/monitor_total.
func (v *vcluster) monitored(cfg *config.Config) []string {
	return monitoredOf(v.section(cfg))
}

// event returns e tagged with v.
func (v *vcluster) event(e Event) Event {
	e.VCluster = v.tag
	return e
}

// machineConfig is the election configuration of section sec (1 or 2).
func machineConfig(cfg *config.Config, sec int) cluster.Config {
	c := cfg.Cluster
	prio, override := cfg.Node.Priority, cfg.Node.Override
	if sec == 2 {
		prio, override = cfg.Node.VCluster2.Priority, cfg.Node.VCluster2.Override
	}
	return cluster.Config{
		Name: cfg.Node.Name, Serial: cfg.Node.Serial,
		Priority: uint8(prio), Override: override,
		HBInterval: c.HBInterval, LostThreshold: c.HBLostThreshold,
		HelloHolddown: c.HelloHolddown, UptimeDiffMargin: c.UptimeDiffMargin,
		FailoverHoldTime: c.FailoverHoldTime, MonitorTotal: len(monitoredOf(c.Section(sec))),
		MonitorHolddown: c.MonitorHolddown, OverrideWaitTime: c.OverrideWaitTime,
		MaxMembers: config.MaxMembers(c.Mode),
	}
}

// newVClusters builds the node's vclusters: the configured one (keys
// cluster.interfaces...), and vcluster 2 when cluster.vcluster2 is on.
// nets are the Networks given in Options (nil entries: built here).
func newVClusters(cfg *config.Config, nets [2]Network, runDir string, log hclog.Logger, now time.Time) ([]*vcluster, error) {
	vcs := configured(cfg)
	for i, v := range vcs {
		v.monitor = map[string]bool{}
		v.net = nets[i]
		if v.net == nil {
			n, err := newNetwork(cfg, v, runDir, log)
			if err != nil {
				for _, w := range vcs[:i] {
					w.net.Close()
				}
				return nil, err
			}
			v.net = n
		}
		v.m = cluster.New(machineConfig(cfg, v.sec), now)
	}
	return vcs, nil
}

// configured returns the vclusters cfg runs, without machines or networks.
func configured(cfg *config.Config) []*vcluster {
	vcs := []*vcluster{{id: cfg.Cluster.VCluster, sec: 1}}
	if cfg.Cluster.VCluster2.Enabled {
		vcs = append(vcs, &vcluster{id: 2, sec: 2})
		vcs[0].tag, vcs[1].tag = vcs[0].id, 2
	}
	return vcs
}

// newNetwork builds v's vMAC manager, or a no-op one without interfaces.
func newNetwork(cfg *config.Config, v *vcluster, runDir string, log hclog.Logger) (Network, error) {
	sec := v.section(cfg)
	if len(sec.Interfaces) == 0 {
		return noNetwork{}, nil
	}
	name := "vmac"
	if v.tag != 0 {
		name = fmt.Sprintf("vmac.vc%d", v.id)
	}
	vc := vmac.Config{
		GroupID: cfg.Cluster.GroupID, VCluster: v.id,
		ARPs: cfg.Cluster.ARPs, ARPInterval: cfg.Cluster.ARPsInterval,
		StateDir: runDir, Logger: log.Named(name),
	}
	for _, ifc := range sec.Interfaces {
		vc.Interfaces = append(vc.Interfaces, vmac.Interface{Name: ifc.Name, Prefixes: ifc.Addresses})
	}
	mgr, err := vmac.NewManager(vc)
	if err != nil && v.tag != 0 {
		return nil, fmt.Errorf("vcluster %d: %w", v.id, err)
	}
	if err != nil {
		return nil, err
	}
	return mgr, nil
}

// closeNets closes every vcluster's Network.
func (a *Agent) closeNets() {
	for _, v := range a.vcs {
		v.net.Close()
	}
}

// vclusterByID returns the vcluster numbered n, or the first for 0.
func (a *Agent) vclusterByID(n int) (*vcluster, error) {
	if n == 0 {
		return a.vcs[0], nil
	}
	for _, v := range a.vcs {
		if v.id == n {
			return v, nil
		}
	}
	var have []string
	for _, v := range a.vcs {
		have = append(have, fmt.Sprint(v.id))
	}
	return nil, fmt.Errorf("this node runs no vcluster %d (it runs %s)", n, strings.Join(have, " and "))
}

// stepAll gives ev to every vcluster's machine.
func (a *Agent) stepAll(ev cluster.Event) {
	for _, v := range a.vcs {
		_ = v.m.Step(ev)
	}
}

// stopped reports whether every machine has finished its shutdown.
func (a *Agent) stopped() bool {
	for _, v := range a.vcs {
		if !v.m.Stopped() {
			return false
		}
	}
	return true
}

// vc2Advert converts a frame's vcluster 2 state (TLV 3) to the Advert its
// sender makes in that vcluster; ok is false when the frame has none.
func vc2Advert(f *heartbeat.Frame, id int) (cluster.Advert, bool) {
	s := &f.VC2
	if !f.HasVC2 || int(s.VCluster) != id || !cluster.Role(s.Role).Valid() {
		return cluster.Advert{}, false
	}
	// The sender as it would announce itself in a frame of its own for
	// that vcluster; leaving is the node's.
	v := heartbeat.Frame{Node: f.Node, Serial: f.Serial, Role: s.Role, Priority: s.Priority,
		Flags:     s.Flags&(heartbeat.FlagOverride|heartbeat.FlagFailoverSet) | f.Flags&heartbeat.FlagLeaving,
		MonitorUp: s.MonitorUp, MonitorTotal: s.MonitorTotal, Uptime: s.Uptime, Primary: s.Primary,
		Takeovers: s.Takeovers}
	return advertOf(&v), true
}

// putVC2 writes the advert of the second vcluster into f's TLV 3.
func putVC2(f *heartbeat.Frame, id int, adv *cluster.Advert, up time.Duration) {
	f.HasVC2 = true
	f.VC2 = heartbeat.VClusterState{
		VCluster: uint8(id), Role: uint8(adv.Role), Priority: adv.Priority,
		MonitorUp: uint8(adv.MonitorUp), MonitorTotal: uint8(adv.MonitorTotal),
		Uptime: uint64(up / time.Millisecond), Primary: adv.Primary,
		Takeovers: adv.Takeovers,
	}
	if adv.Override {
		f.VC2.Flags |= heartbeat.FlagOverride
	}
	if adv.FailoverSet {
		f.VC2.Flags |= heartbeat.FlagFailoverSet
	}
}

// monitorChanged updates every vcluster that monitors name.
func (a *Agent) monitorChanged(cfg *config.Config, name string, up bool) {
	for _, v := range a.vcs {
		monitored := v.monitored(cfg)
		if !slices.Contains(monitored, name) {
			continue
		}
		if old, ok := v.monitor[name]; ok && old == up {
			continue
		}
		v.monitor[name] = up
		now := a.now()
		n, held := v.monitorUp(monitored, now)
		what := "monitored link"
		v.checkCause = ""
		switch {
		case strings.HasPrefix(name, checkPrefix):
			what = "health check"
			v.checkCause, v.checkCauseUp = strings.TrimPrefix(name, checkPrefix), up
		case strings.Contains(name, ">"):
			what = "pingserver target"
		}
		a.log.Info(what+" changed", "vcluster", v.id, "link", name, "up", up, "monitor_up", n, "monitor_total", len(monitored))
		v.checkCauseAt = now
		reason := fmt.Sprintf("%s %s %s (%d/%d up)", what, name, updown(up), n, len(monitored))
		if held > 0 {
			reason += fmt.Sprintf(" (%d pingserver target(s) down held by flip_timeout until %s)", held, v.flipUntil.Format("15:04:05"))
		}
		a.hist.add(v.event(Event{Time: now, Kind: "link", Reason: reason}))
		_ = v.m.Step(cluster.Event{Type: cluster.EventMonitor, Time: now, MonitorUp: n})
	}
}

// process performs the machines' actions in order, vcluster by vcluster.
// A takeover comes first and inline; the heartbeat goes out once after
// all actions.
func (a *Agent) process() {
	if !slices.ContainsFunc(a.vcs, func(v *vcluster) bool { return v.m.HasReady() }) {
		return // nothing to do: no new snapshot, no allocation per frame
	}
	send := false
	for _, v := range a.vcs {
		if a.processVC(v) {
			send = true
		}
	}
	a.publish()
	if send {
		a.sendHeartbeat()
	}
	a.updateSync()
	// Actions produced while performing these (a fault after a failed takeover).
	a.process()
}

// processVC performs v's pending actions; it reports whether a heartbeat
// is asked for.
func (a *Agent) processVC(v *vcluster) (send bool) {
	if !v.m.HasReady() {
		return false
	}
	// Session pickup: every takeover waits for the copies received; a
	// release stops sending v's flows (vcsessions.go), or everything on a
	// single-vcluster node.
	multi := len(a.vcs) > 1
	rd := v.m.Ready()
	for _, act := range rd.Actions {
		switch act.Type {
		case cluster.ActionTakeover:
			// Sessions in place first: every copy received is applied
			// before the vMAC moves (docs/reference.md §5).
			sessDur, sessN := a.sessionsReady()
			rep, err := v.net.Take()
			if err != nil {
				// The vMACs or addresses could not be set: undo what was
				// done, leave the election as faulted, and try again later
				// (an interface may come back).
				a.log.Error("takeover failed; faulted, retrying", "vcluster", v.id, "error", err, "retry_in", faultRetry)
				a.hist.add(v.event(Event{Time: a.now(), Kind: "fault", Reason: "takeover failed: " + err.Error()}))
				if rerr := v.net.Release(); rerr != nil {
					a.log.Warn("undoing the failed takeover", "vcluster", v.id, "error", rerr)
				}
				v.takeoverFault = "takeover failed: " + err.Error()
				v.faultUntil = a.now().Add(faultRetry)
				a.applyFault()
				continue
			}
			if rep.AnnounceErr != nil {
				a.log.Warn("took over, but some announcements could not be sent", "vcluster", v.id, "error", rep.AnnounceErr)
				a.hist.add(v.event(Event{Time: a.now(), Kind: "takeover", Reason: "announcement not sent: " + rep.AnnounceErr.Error()}))
			}
			// Publish at once: peers must hear the claim before anything slow.
			a.publish()
			a.sendHeartbeat()
			ev := v.event(Event{Time: act.Time, Kind: "takeover", Role: "primary", Reason: "took the virtual MACs and addresses"})
			if !rep.FirstGARP.IsZero() {
				ev.TakeoverUs = rep.FirstGARP.Sub(act.Time).Microseconds()
				ev.Reason = "took the virtual MACs and addresses, sent the first gratuitous ARP"
			}
			if !rep.MACSet.IsZero() {
				ev.MACSetUs = rep.MACSet.Sub(rep.Start).Microseconds()
			}
			if !rep.AddrsAdded.IsZero() && !rep.MACSet.IsZero() {
				ev.AddrsUs = rep.AddrsAdded.Sub(rep.MACSet).Microseconds()
			}
			if a.sess != nil {
				ev.SessionsUs = sessDur.Microseconds()
				ev.Reason = fmt.Sprintf("sessions ready (%d messages applied in %s), then %s", sessN, sessDur.Round(time.Microsecond), ev.Reason)
			}
			a.hist.add(ev)
			if a.metrics != nil && !rep.FirstGARP.IsZero() {
				a.metrics.Takeover(rep.FirstGARP.Sub(act.Time))
			}
			a.log.Info("took over", "vcluster", v.id, "takeover_us", ev.TakeoverUs, "mac_us", ev.MACSetUs, "addrs_us", ev.AddrsUs)
		case cluster.ActionRelease:
			if multi {
				a.sessionsRelease(v)
			} else {
				a.sessionsStopSending()
			}
			a.sessionsKeep(v, multi)
			if err := v.net.Release(); err != nil {
				a.log.Error("release failed", "vcluster", v.id, "error", err)
			}
			a.publish()
			a.sendHeartbeat()
			a.hist.add(v.event(Event{Time: a.now(), Kind: "release", Reason: act.Reason}))
		case cluster.ActionAnnounce:
			if act.PeerHeld {
				// The peer forwarded for a moment: fresh entries first,
				// then the switch is told to send the traffic here.
				a.sessionsRenew(act.Reason)
			}
			if err := v.net.Announce(); err != nil && !errors.Is(err, vmac.ErrNotOwned) {
				a.log.Warn("re-announce failed", "vcluster", v.id, "error", err)
			}
			a.log.Debug("re-announced the virtual MACs", "vcluster", v.id, "reason", act.Reason)
		case cluster.ActionRoleChange:
			v.startFlip(a.config(), act)
			a.linkFailedSignal(v, act)
			v.checkReason = [2]string{act.Reason, v.withCheck(act)}
			st := v.m.Status()
			a.log.Info("role change", "vcluster", v.id, "role", act.Role.String(), "previous", act.Previous.String(),
				"primary", st.PrimaryName, "reason", act.Reason)
			a.hist.add(v.event(Event{Time: act.Time, Kind: "role", Role: act.Role.String(), Previous: act.Previous.String(),
				Primary: st.PrimaryName, Reason: v.checkReason[1]}))
			if a.metrics != nil && act.Role == cluster.RolePrimary {
				a.metrics.Failover(act.Reason)
			}
		case cluster.ActionHeartbeat:
			send = true
		case cluster.ActionRunHook:
			cfg := a.config()
			var cmd string
			switch act.Role {
			case cluster.RolePrimary:
				cmd = cfg.Cluster.Hooks.Primary
			case cluster.RoleSecondary:
				cmd = cfg.Cluster.Hooks.Secondary
			case cluster.RoleFault:
				cmd = cfg.Cluster.Hooks.Fault
			}
			a.hooks.run(hookJob{cmd: cmd, role: act.Role.String(), previous: act.Previous.String(),
				reason: v.withCheck(act), check: v.cause(act), node: cfg.Node.Name, timeout: cfg.Cluster.Hooks.Timeout, vcluster: v.id, env: cfg.Cluster.Hooks.Env})
		case cluster.ActionStopped:
			a.hist.add(v.event(Event{Time: a.now(), Kind: "stop", Reason: act.Reason}))
		}
	}
	return send
}

// vclusterStatus is v's part of `ha status`, from its published view vv
// (since: the time since the view); members are the shared membership
// rows of Status.Members, in the machine's order (self first).
func (a *Agent) vclusterStatus(v *vcluster, vv *vcView, cfg *config.Config, now time.Time, since time.Duration, members []control.Member) control.VCluster {
	st := &vv.st
	prio, override := cfg.Node.Priority, cfg.Node.Override
	if v.sec == 2 {
		prio, override = cfg.Node.VCluster2.Priority, cfg.Node.VCluster2.Override
	}
	out := control.VCluster{
		VCluster: v.id, Role: st.Role.String(), RoleSince: st.RoleSince, Primary: st.PrimaryName,
		Priority: prio, Override: override, UptimeS: int64((st.Uptime + since) / time.Second), Reason: st.Reason,
		FailoverSet: st.FailoverSet, Fault: st.Fault,
	}
	shared := map[string]control.Member{}
	for _, m := range members {
		shared[m.Serial] = m
	}
	for _, m := range st.Members {
		mm, ok := shared[m.Serial]
		if !ok {
			mm = control.Member{Node: m.Name, Serial: m.Serial, Alive: m.Alive, Self: m.Self, LastHeardMs: -1, ConfigInSync: true}
			if !m.Self {
				mm.LastHeardMs = now.Sub(m.LastHeard).Milliseconds()
			}
		}
		mm.Role, mm.Priority, mm.Override = m.Role.String(), int(m.Priority), m.Override
		mm.MonitorUp, mm.MonitorTotal, mm.UptimeS = m.MonitorUp, m.MonitorTotal, int64(m.Uptime/time.Second)
		if m.Alive {
			mm.UptimeS = int64((m.Uptime + since) / time.Second)
		}
		mm.FailoverSet = m.FailoverSet
		if !m.Self && !m.Alive {
			mm.Role = "lost"
		}
		out.Members = append(out.Members, mm)
	}
	out.Monitor = vv.monitor
	out.ARPsRefresh = refreshStatus(cfg.Cluster.ARPsRefresh, vv.refresh, now)
	out.LinkFailedSignal = signalStatus(vv.signal, now)
	for _, i := range v.net.Status() {
		vi := control.VIface{Name: i.Name, VMAC: i.VMAC.String(), PermMAC: i.PermMAC.String(), Owned: i.Owned, Restores: i.Restores}
		for _, p := range i.Addresses {
			vi.Addresses = append(vi.Addresses, p.String())
		}
		out.Interfaces = append(out.Interfaces, vi)
	}
	return out
}

// failover runs `ha failover set|unset [--vcluster N]` on one vcluster.
func (a *Agent) failover(set bool, n int) any {
	v, err := a.vclusterByID(n)
	if err != nil {
		return err
	}
	typ, what := cluster.EventFailoverSet, "set"
	if !set {
		typ, what = cluster.EventFailoverUnset, "unset"
	}
	v.operatorFailoverSet = set
	a.log.Info("operator: ha failover "+what, "vcluster", v.id)
	a.hist.add(v.event(Event{Time: a.now(), Kind: "operator", Reason: "ha failover " + what}))
	_ = v.m.Step(cluster.Event{Type: typ, Time: a.now()})
	a.process()
	return control.FailoverStatus{Set: v.m.Status().FailoverSet, Role: v.m.Role().String(), VCluster: v.id}
}
