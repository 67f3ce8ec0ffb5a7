package agent

import (
	"context"
	"encoding/hex"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/udplink"
)

// Handle answers one control request; it is the control.Handler of the
// agent. Commands that act run in the run goroutine; status reads the
// snapshot the run goroutine publishes (statusView), so it never waits for
// the run loop and never steps the election.
func (a *Agent) Handle(req control.Request) (any, error) {
	switch req.Cmd {
	case control.CmdStatus:
		return a.status(), nil
	case control.CmdHistory:
		return a.hist.list(), nil
	case control.CmdSynchronize:
		return a.synchronize()
	case control.CmdChecksum:
		return a.checksums()
	case control.CmdExposure:
		return a.exposure(), nil
	case control.CmdSessionsVerify:
		return a.sessionsVerify() // verify.go
	}
	return a.callVC(context.Background(), req.Cmd, req.VCluster)
}

// handle runs in the run goroutine; vcn is the request's vcluster (0: the
// first).
func (a *Agent) handle(cmd string, vcn int) any {
	switch cmd {
	case control.CmdFailoverSet, control.CmdFailoverUnset:
		return a.failover(cmd == control.CmdFailoverSet, vcn)
	case control.CmdSessions:
		return a.sessionsStatus()
	case control.CmdFailoverStatus:
		v, err := a.vclusterByID(vcn)
		if err != nil {
			return err
		}
		st := v.m.Status()
		return control.FailoverStatus{Set: st.FailoverSet, Role: st.Role.String(), VCluster: v.id}
	}
	return fmt.Errorf("unknown command %q", cmd)
}

// statusView is what status needs of the state the run goroutine owns:
// the machines' status, the monitored links, the serial conflicts, the
// session hold. The run goroutine publishes one after every step of its
// loop (publishStatus; a few small allocations, no system call); status
// combines the latest with what other goroutines keep safe for concurrent
// reading (counters, history, sync and session engines, vMAC manager).
// Reading it changes nothing: before, a status call or a scrape stepped
// the machines to now, so it could declare a peer lost whose heartbeat
// was queued (TestStatusDoesNotStepMachine).
type statusView struct {
	at        time.Time
	vcs       []vcView // as a.vcs
	conflicts []string // a.conf.problems
	sessHeld  bool     // session pickup holds the takeover back
}

// vcView is one vcluster's part of a statusView.
type vcView struct {
	st      cluster.Status
	monitor []control.Link
	refresh arpsRefresh
	signal  linkSignal
}

// publishStatus publishes the status view of now (run goroutine).
func (a *Agent) publishStatus() {
	cfg := a.config()
	v := &statusView{at: a.now(), conflicts: a.conf.problems(cfg.Node.Name, cfg.Node.Serial, a.nodeID)}
	for _, vc := range a.vcs {
		vv := vcView{st: vc.m.Status(), refresh: vc.refresh, signal: vc.signal}
		if vv.st.Reason == vc.checkReason[0] {
			vv.st.Reason = vc.checkReason[1] // the role change names its health check
		}
		for _, n := range vc.monitored(cfg) {
			up, ok := vc.monitor[n]
			vv.monitor = append(vv.monitor, control.Link{Name: n, Up: !ok || up})
		}
		v.vcs = append(v.vcs, vv)
	}
	v.sessHeld = a.sess != nil && a.sess.held
	a.view.Store(v)
}

// status builds `ha status` from the published view; safe in any
// goroutine, and it never steps a machine.
func (a *Agent) status() *control.Status {
	cfg := a.config()
	now := a.now()
	view := a.view.Load()
	// The machines' uptimes are as of the view; they have run since.
	since := max(now.Sub(view.at), 0)
	st := &view.vcs[0].st
	out := &control.Status{
		Node: cfg.Node.Name, Serial: cfg.Node.Serial, Role: st.Role.String(), RoleSince: st.RoleSince,
		GroupID: cfg.Cluster.GroupID, GroupName: cfg.Cluster.GroupName, VCluster: cfg.Cluster.VCluster,
		Mode: cfg.Cluster.Mode, Primary: st.PrimaryName, Override: cfg.Node.Override, Priority: cfg.Node.Priority,
		UptimeS: int64((st.Uptime + since) / time.Second), Reason: st.Reason, FailoverSet: st.FailoverSet, Fault: st.Fault,
		HBIntervalM: float64(cfg.Cluster.HBInterval) / float64(time.Millisecond), LostThresh: cfg.Cluster.HBLostThreshold,
		StartedAt: a.started, History: a.hist.last(10), Goroutines: runtime.NumGoroutine(),
	}
	if !st.MonitorHeldUntil.IsZero() {
		until := st.MonitorHeldUntil
		out.MonitorHeldUp, out.MonitorHeldUntil = st.MonitorHeld, &until
	}
	if !st.OverrideWaitUntil.IsZero() {
		until := st.OverrideWaitUntil
		out.OverrideWaitUntil = &until
	}
	sv := a.syncStatus()
	if sv != nil {
		out.Config = control.Config{Checksum: sv.sum, Generation: sv.gen, SyncOn: true, InSync: true, LastError: sv.lastErr}
		cs := a.sync.ch.Stats()
		out.Config.Channel = &control.SyncChannel{ActiveLink: cs.ActiveLink, FramesSent: cs.FramesSent,
			FramesReceived: cs.FramesReceived, Retransmits: cs.Retransmits, Failovers: cs.Failovers,
			DroppedBadAuth: cs.DroppedAuth, DroppedReplay: cs.DroppedReplay, DroppedMalformed: cs.DroppedMalformed}
	} else {
		out.Config = control.Config{InSync: true}
	}
	for _, m := range st.Members { // self first (Machine.Status)
		mm := control.Member{
			Node: m.Name, Serial: m.Serial, Role: m.Role.String(), Priority: int(m.Priority), Override: m.Override,
			MonitorUp: m.MonitorUp, MonitorTotal: m.MonitorTotal, UptimeS: int64(m.Uptime / time.Second),
			LastHeardMs: -1, Alive: m.Alive, Self: m.Self, FailoverSet: m.FailoverSet, ConfigInSync: true,
		}
		if m.Alive {
			mm.UptimeS = int64((m.Uptime + since) / time.Second)
		}
		if !m.Self {
			mm.LastHeardMs = now.Sub(m.LastHeard).Milliseconds()
			if !m.Alive {
				mm.Role = "lost" // last heard as mm.Role; no heartbeat within the threshold, or carrier
				mm.LostBy, mm.LostWhy = m.LostBy, m.LostWhy
			}
		}
		if sv != nil {
			if m.Self {
				mm.ConfigSum = sv.sum
			} else if p, ok := sv.members[m.Name]; ok {
				mm.ConfigSum = hex.EncodeToString(p.Checksum[:])
				mm.ConfigInSync = p.InSync
			} else {
				mm.ConfigInSync = false
			}
			if !m.Self && !mm.ConfigInSync && m.Alive {
				out.Config.InSync = false
			}
		}
		out.Members = append(out.Members, mm)
	}
	if sv != nil && len(out.Members) > 0 {
		out.Members[0].ConfigInSync = out.Config.InSync
	}
	lost := cfg.Cluster.HBInterval * time.Duration(cfg.Cluster.HBLostThreshold)
	alone := len(st.Members) <= 1
	for _, l := range a.links {
		carrier := true
		if v, ok := a.carrier.Load(l.Name()); ok {
			carrier = v.(bool)
		}
		last := l.lastRxNs.Load()
		heard := last != 0 && now.Sub(time.Unix(0, last)) < lost
		out.HBDevs = append(out.HBDevs, control.HBDev{
			Name: l.Name(), Priority: l.prio, Carrier: carrier, Up: carrier && (heard || alone),
			RX: l.rx.Load(), TX: l.tx.Load(), Dropped: l.dropped.Load(), BadAuth: l.badAuth.Load(),
			Replay: l.replay.Load(), TXErrors: l.txErr.Load(),
		})
		if u, ok := l.Link.(*udplink.Link); ok {
			out.HBDevs[len(out.HBDevs)-1].Foreign = u.Foreign()
		}
	}
	for i, v := range a.vcs {
		out.VClusters = append(out.VClusters, a.vclusterStatus(v, &view.vcs[i], cfg, now, since, out.Members))
	}
	out.Monitor, out.Interfaces = out.VClusters[0].Monitor, out.VClusters[0].Interfaces
	out.ARPsRefresh = out.VClusters[0].ARPsRefresh
	out.LinkFailedSignal = out.VClusters[0].LinkFailedSignal
	out.Mgmt = a.mgmtStatus(cfg)
	a.sendMu.Lock()
	out.Epoch = a.epoch
	a.sendMu.Unlock()
	out.NodeID = a.nodeID.String()
	out.Problems, out.Warnings = a.problems(view.conflicts, now)
	out.Sessions = a.sessionsStatusOf(view.sessHeld, st.Members)
	out.Problems = append(out.Problems, out.Sessions.Problems...)
	out.Warnings = append(out.Warnings, out.Sessions.Warnings...)
	out.RestartNeeded = a.pendingRestart()
	for _, k := range a.checks {
		out.Checks = append(out.Checks, k.status())
	}
	out.Health, _ = control.HealthOf(out)
	return out
}

// metricsStatus is the status a metrics scrape reads: the same as
// `agentctl ha status`, from the published view, without the run loop.
func (a *Agent) metricsStatus(context.Context) (*control.Status, error) {
	return a.status(), nil
}

// exposure lists every socket and Ethertype the agent uses.
func (a *Agent) exposure() *control.Exposure {
	cfg := a.config()
	e := &control.Exposure{}
	e.Sockets = append(e.Sockets, control.Socket{Kind: "unix", Address: cfg.ControlSocket, Direction: "rx/tx", Purpose: "operator control (mode 0600)"})
	et := fmt.Sprintf("0x%04x", cfg.Cluster.HeartbeatEtherType())
	for _, l := range a.links {
		if u, ok := l.Link.(*udplink.Link); ok {
			e.Sockets = append(e.Sockets, control.Socket{Kind: "udp", Address: u.LocalAddr().String(), Direction: "rx/tx", Purpose: "heartbeat (unicast_hb; only from its peers)"})
			continue
		}
		e.Sockets = append(e.Sockets, control.Socket{Kind: "packet", Address: l.Name(), EtherType: et, Direction: "rx/tx", Purpose: "heartbeat"})
	}
	if a.sync != nil {
		for _, l := range a.links {
			if isUnicast(l.Link) {
				continue
			}
			e.Sockets = append(e.Sockets, control.Socket{Kind: "packet", Address: l.Name(), EtherType: fmt.Sprintf("0x%04x", cfg.Cluster.EthType.L2EP), Direction: "rx/tx", Purpose: "configuration sync (AES-GCM)"})
		}
		if u := a.udpSync; u != nil {
			e.Sockets = append(e.Sockets, control.Socket{Kind: "udp", Address: u.LocalAddr().String(), Direction: "rx/tx", Purpose: "configuration sync (AES-GCM; unicast_hb, only from its peers)"})
		}
	}
	for _, i := range append(append([]config.Interface(nil), cfg.Cluster.Interfaces...), cfg.Cluster.Section(2).Interfaces...) {
		v4, v6 := false, false
		for _, p := range i.Addresses {
			if p.Addr().Is4() {
				v4 = true
			} else {
				v6 = true
			}
		}
		if v4 {
			e.Sockets = append(e.Sockets, control.Socket{Kind: "packet", Address: i.Name, EtherType: "0x0806", Direction: "tx", Purpose: "gratuitous ARP"})
		}
		if v6 {
			e.Sockets = append(e.Sockets, control.Socket{Kind: "packet", Address: i.Name, EtherType: "0x86dd", Direction: "tx", Purpose: "unsolicited neighbour advertisement"})
		}
	}
	if m := a.mgmtStatus(cfg); m != nil {
		e.Sockets = append(e.Sockets, control.Socket{Kind: "netlink", Address: "NETLINK_ROUTE", Direction: "tx",
			Purpose: fmt.Sprintf("management interface %s (%s): its addresses, policy rules and routing table %d; no socket listens there, its MAC is never changed", m.Interface, strings.Join(m.Addresses, " "), m.Table)})
	}
	for ifname := range a.probers {
		e.Sockets = append(e.Sockets, control.Socket{Kind: "packet", Address: ifname, EtherType: "0x0806", Direction: "rx/tx", Purpose: "pingserver ARP probes"})
	}
	e.Sockets = append(e.Sockets, control.Socket{Kind: "netlink", Address: "NETLINK_ROUTE", Direction: "rx/tx", Purpose: "MAC, addresses, link events"})
	a.sessionExposure(e)
	if srv := a.msrv.Load(); srv != nil {
		e.Sockets = append(e.Sockets, control.Socket{Kind: "tcp", Address: srv.Addr().String(), Direction: "rx/tx", Purpose: "Prometheus metrics (metrics_listen, HTTP /metrics)"})
	}
	return e
}
