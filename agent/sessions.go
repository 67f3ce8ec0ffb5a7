package agent

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/deferq"
	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/l2chan"
	"github.com/hagent/hagent/sessionsync"
	"github.com/hagent/hagent/udplink"
	"github.com/vishvananda/netlink"
)

// sessionReadyTimeout bounds how long a takeover waits for the session
// messages already received to be applied.
const sessionReadyTimeout = 200 * time.Millisecond

// sessionHoldMax bounds how long a returning override member holds back
// (failover set) waiting for its bulk session copy.
const sessionHoldMax = 60 * time.Second

// sessionEngine drives session pickup (docs/sessionsync.md): the 0x8892 channel on the
// sync_dev interfaces and the hbdevs, and the sessionsync.Engine.
type sessionEngine struct {
	ch    *l2chan.Channel
	table sessionsync.Table
	e     *sessionsync.Engine
	links []string // channel link names: sync_dev first, then the hbdevs

	// owned by the run goroutine
	primary bool
	peers   []string
	// hold: a starting member with override keeps itself out of the
	// election (failover set) until its bulk copy is complete or
	// sessionHoldMax passed; held is whether the hold set failover.
	hold, held bool
	holdStart  time.Time
	// down: down_until_synced interfaces still down.
	down []string
	// fgsp: cluster.mode fgsp, every member sends to every live peer
	// (agent/fgsp.go).
	fgsp bool
	// sendersKey is what the engine was last told of the peers entitled
	// to send (updateSessionSenders).
	sendersKey string
	// dq holds new flows' first packets (session_pickup.defer, defer.go);
	// nil when off.
	dq *deferq.Runner
}

// newSessionEngine builds the engine. links are the channel's links
// (nil: AF_PACKET links on eth_type.session, on sync_dev then the hbdevs);
// table is the conntrack table (nil: the kernel's).
func (a *Agent) newSessionEngine(cfg *config.Config, links []heartbeat.Link, table sessionsync.Table) (*sessionEngine, error) {
	sp := cfg.Cluster.SessionPickup
	// The channel key, whatever cluster.auth says: never a keyless
	// channel (TestKeylessChannelsRefused).
	pw, err := cfg.Cluster.ChannelKey()
	if err != nil {
		return nil, err
	}
	closeAll := func() {
		for _, l := range links {
			l.Close()
		}
	}
	if links == nil {
		var ul *udplink.Link
		if links, ul, err = a.channelLinks(cfg, cfg.Cluster.EthType.Session, sp.SyncDev, cfg.Cluster.UnicastHB.SessionPort, "session", "session pickup"); err != nil {
			return nil, err
		}
		a.udpSess = ul
	}
	kernel := table == nil
	if kernel {
		k, err := sessionsync.OpenKernel()
		if err != nil {
			closeAll()
			return nil, err
		}
		table = k
	}
	cc := l2chan.DefaultConfig()
	if cfg.Cluster.UnicastHB.Enabled {
		cc.MTU = unicastMTU
	}
	cc.Self, cc.GroupID, cc.Password, cc.Links = cfg.Node.Name, uint16(cfg.Cluster.GroupID), pw, links
	cc.Label = sessionsync.ChannelLabel
	if n := len(sp.SyncDev); n >= 2 && links != nil && n <= len(links) {
		cc.Spread = n // the sync_devs come first: load-balanced
	}
	cc.Logger = a.log.Named("session-channel")
	cc.Epoch = a.epoch
	cc.PeerTimeout = 3 * time.Second
	ch, err := l2chan.New(cc)
	if err != nil {
		closeAll()
		table.Close()
		return nil, err
	}
	ec := sessionsync.DefaultConfig()
	ec.Self, ec.Table, ec.Transport = cfg.Node.Name, table, ch
	ec.Connectionless, ec.NAT, ec.Expectation, ec.Delay = sp.Connectionless, sp.NAT, sp.Expectation, sp.Delay
	ec.Ignore = mgmtIgnore(cfg)
	ec.Symmetric = cfg.Cluster.Mode == config.ModeFGSP
	ec.Logger = a.log.Named("sessions")
	ec.Event = func(msg string) { a.hist.add(Event{Time: a.now(), Kind: "sessions", Reason: msg}) }
	if kernel {
		// A copy carries only the helpers this kernel has; the sender's
		// bookkeeping is bounded by this kernel's table size.
		ec.Helpers = sessionsync.KernelHelper
		if n := sessionsync.KernelMaxFlows(); n > 0 {
			ec.MaxTracked = n
		}
	}
	dq := a.newDeferRunner(cfg, kernel) // defer.go
	if dq != nil {
		ec.OnAcked = dq.Acked
	}
	e, err := sessionsync.New(ec)
	if err != nil {
		ch.Close()
		table.Close()
		return nil, err
	}
	// Nobody may send records until the election names a primary
	// (updateSessionSenders); what arrives before is held, bounded.
	e.SetSenders(sessionsync.Senders{})
	se := &sessionEngine{ch: ch, table: table, e: e, down: slices.Clone(sp.DownUntilSynced), fgsp: ec.Symmetric, dq: dq}
	for _, l := range links {
		se.links = append(se.links, l.Name())
	}
	se.hold = holdsOverride(cfg) && !se.fgsp // vcsessions.go; fgsp: the role moves no traffic
	se.holdStart = a.now()
	return se, nil
}

// startSessions brings the down_until_synced interfaces down (Run, before
// anything is heard).
func (a *Agent) startSessions() {
	s := a.sess
	if s == nil {
		return
	}
	for _, n := range s.down {
		if err := setLinkUp(n, false); err != nil {
			a.log.Warn("down_until_synced: cannot set the interface down", "interface", n, "error", err)
		}
	}
	if len(s.down) > 0 {
		a.log.Info("down_until_synced: interfaces down until the bulk session copy is complete", "interfaces", s.down)
	}
}

// updateSessions tells the engine the role and the live peers, and ends
// the hold and down_until_synced once the bulk copy is in (or nobody can
// send one). Runs on the run goroutine.
func (a *Agent) updateSessions() {
	s := a.sess
	if s == nil {
		return
	}
	a.updateSessionSenders() // vcsessions.go
	if s.fgsp {
		a.updateSessionsFGSP()
		return
	}
	if len(a.vcs) > 1 {
		a.updateVCSessions() // vcsessions.go
		a.sessionHold()
		return
	}
	primary := a.m.Role() == cluster.RolePrimary
	// Copy to the live members that do not claim primary: a leaving
	// primary still holds the addresses, and their removal destroys its
	// masqueraded flows, copies included; it gets its bulk copy once it
	// says secondary. A member already copied to that starts claiming
	// primary (it takes over from this node) keeps getting the stream
	// until this node lets go (sessionsStopSending): flows made here in
	// the hand-over window reach it too.
	var peers []string
	if primary {
		for _, m := range a.m.Status().Members {
			if !m.Self && m.Alive && (m.Role != cluster.RolePrimary || slices.Contains(s.peers, m.Name)) {
				peers = append(peers, m.Name)
			}
		}
		slices.Sort(peers)
	}
	if primary != s.primary || !slices.Equal(peers, s.peers) {
		s.primary, s.peers = primary, peers
		s.e.SetRole(primary, peers)
	}
	a.sessionHold()
}

// sessionHold runs the override hold and down_until_synced.
func (a *Agent) sessionHold() {
	s := a.sess
	now := a.now()
	waiting := s.hold || len(s.down) > 0
	if !waiting {
		return
	}
	// A live peer that claims primary is the one the copy comes from.
	primaryPeer, peerName := a.holdPeer()
	done, why := false, ""
	switch {
	case s.e.BulkDone():
		done, why = true, "bulk session copy complete"
	case now.Sub(s.holdStart) >= sessionHoldMax:
		done, why = true, fmt.Sprintf("no complete bulk session copy within %s; going on without it", sessionHoldMax)
	case !primaryPeer && a.holdDecided():
		done, why = true, "no other primary to copy sessions from"
	case !primaryPeer && now.Sub(s.holdStart) >= a.config().Cluster.HelloHolddown:
		done, why = true, "no other primary to copy sessions from"
	}
	if s.hold && !s.held && !done && primaryPeer {
		// Another member is primary: stay out until the copy is in.
		s.held = true
		a.log.Info("override: holding back until the bulk session copy is complete", "primary", peerName, "max", sessionHoldMax)
		a.hist.add(Event{Time: now, Kind: "sessions", Reason: "override: holding back (failover set) until the bulk session copy from " + peerName + " is complete"})
		a.holdStep(true, now)
	}
	if !done {
		return
	}
	if s.hold {
		s.hold = false
		if s.held {
			s.held = false
			if sessionHoldMax <= now.Sub(s.holdStart) {
				a.log.Warn("override hold ended by its timeout", "reason", why)
			} else {
				a.log.Info("override hold ends", "reason", why)
			}
			a.hist.add(Event{Time: now, Kind: "sessions", Reason: "override hold ends: " + why})
			a.holdStep(false, now)
		}
	}
	if len(s.down) > 0 {
		for _, n := range s.down {
			if err := setLinkUp(n, true); err != nil {
				a.log.Warn("down_until_synced: cannot set the interface up", "interface", n, "error", err)
			}
		}
		a.hist.add(Event{Time: now, Kind: "sessions", Reason: fmt.Sprintf("down_until_synced %v up: %s", s.down, why)})
		s.down = nil
	}
}

// sessionsReady applies what the session channel has delivered before a
// takeover touches the vMAC: the takeover order is sessions in place →
// vMAC → addresses → GARP, so a flow never reaches a new primary that
// lacks its entry (docs/reference.md §5, TestAgentSessionPickup). It returns how long it took.
func (a *Agent) sessionsReady() (time.Duration, int) {
	if a.sess == nil {
		return 0, 0
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), sessionReadyTimeout)
	defer cancel()
	n, err := a.sess.e.Ready(ctx)
	if err != nil {
		a.log.Warn("sessions not ready within the bound; taking over anyway", "bound", sessionReadyTimeout, "error", err)
	}
	return time.Since(start), n
}

// sessionRenewTimeout bounds how long a release or an announce waits for
// the session entries to be renewed (sessionsync/renew.go): a small
// table's renewal is done before the announce (or the addresses go); a
// large one's goes on in the background, rate-bounded, until it covered
// the whole table (sessionsync.TestRenewCoversTable), so the takeover
// path never waits for a million flows.
const sessionRenewTimeout = 200 * time.Millisecond

// sessionsRenew renews this primary's TCP entries after another member
// held the vMAC for a moment (its forwarding left their windows behind).
// Runs on the run goroutine, before the announce; waits at most
// sessionRenewTimeout.
func (a *Agent) sessionsRenew(why string) {
	if a.sess == nil || a.sess.fgsp {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), sessionRenewTimeout)
	defer cancel()
	if _, _, err := a.sess.e.Renew(ctx, "session entries renewed ("+why+")"); err != nil {
		a.log.Warn("renewing the session entries failed", "error", err)
	}
}

// sessionsKeep makes this node's own entries of v plain copies before v's
// addresses go (after the engine stopped sending them): the masquerade
// cleanup of the removal spares them, so a quick return to the role finds
// them. Runs on the run goroutine, waits at most sessionRenewTimeout.
func (a *Agent) sessionsKeep(v *vcluster, multi bool) {
	if a.sess == nil || a.sess.fgsp {
		return
	}
	var keep func(*sessionsync.Flow) bool
	if multi {
		keep = a.sectionFlows(v.sec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), sessionRenewTimeout)
	defer cancel()
	if _, _, err := a.sess.e.KeepFlows(ctx, "own session entries kept as copies before the release", keep); err != nil {
		a.log.Warn("keeping the session entries failed", "error", err)
	}
}

// sessionsStopSending makes the engine stop sending before the addresses
// go: their removal destroys the masqueraded flows in this kernel, and
// those destroy events must not reach the new primary.
func (a *Agent) sessionsStopSending() {
	if a.sess == nil || a.sess.fgsp {
		return // fgsp: no addresses go, every member keeps sending
	}
	a.sess.primary, a.sess.peers = false, nil
	a.sess.e.SetRole(false, nil)
}

// sessionsStatus answers `ha sessions` (run goroutine).
func (a *Agent) sessionsStatus() *sessionsync.Status {
	return a.sessionsStatusOf(a.sess != nil && a.sess.held, a.m.Status().Members)
}

// sessionsStatusOf is sessionsStatus with the run goroutine's state given:
// whether a takeover is held back, and the first vcluster's members.
func (a *Agent) sessionsStatusOf(held bool, members []cluster.Member) *sessionsync.Status {
	if a.sess == nil {
		return &sessionsync.Status{Enabled: false, LocalFlows: -1}
	}
	st := a.sess.e.Status()
	cs := a.sess.ch.Stats()
	st.Channel = &sessionsync.ChannelStatus{ActiveLink: cs.ActiveLink, FramesSent: cs.FramesSent, FramesReceived: cs.FramesReceived,
		Retransmits: cs.Retransmits, Failovers: cs.Failovers, DroppedBadAuth: cs.DroppedAuth,
		DroppedReplay: cs.DroppedReplay, DroppedMalformed: cs.DroppedMalformed}
	spread := len(a.config().Cluster.SessionPickup.SyncDev)
	for i, l := range cs.Links {
		st.Channel.Links = append(st.Channel.Links, sessionsync.ChannelLink{Name: l.Name, Up: l.Up, Alive: l.Alive,
			Spread: spread >= 2 && i < spread, Tx: l.TxFrames, Rx: l.RxFrames})
	}
	if held {
		st.Holding = true
	}
	if a.sess.fgsp {
		fgspPeerHealth(&st, members)
	}
	a.deferStatus(&st) // defer.go
	return &st
}

// sessionExposure lists the session sockets.
func (a *Agent) sessionExposure(e *control.Exposure) {
	if a.sess == nil {
		return
	}
	et := fmt.Sprintf("0x%04x", a.config().Cluster.EthType.Session)
	for _, n := range a.sess.links {
		if u := a.udpSess; u != nil && n == u.Name() {
			e.Sockets = append(e.Sockets, control.Socket{Kind: "udp", Address: u.LocalAddr().String(), Direction: "rx/tx", Purpose: "session pickup (AES-GCM; unicast_hb, only from its peers)"})
			continue
		}
		e.Sockets = append(e.Sockets, control.Socket{Kind: "packet", Address: n, EtherType: et, Direction: "rx/tx", Purpose: "session pickup (AES-GCM)"})
	}
	e.Sockets = append(e.Sockets, control.Socket{Kind: "netlink", Address: "NETLINK_NETFILTER", Direction: "rx/tx", Purpose: "conntrack events, dumps and writes (ctnetlink)"})
	a.deferExposure(e)
}

// setLinkUp sets an interface up or down (down_until_synced).
func setLinkUp(name string, up bool) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if up {
		return netlink.LinkSetUp(l)
	}
	return netlink.LinkSetDown(l)
}
