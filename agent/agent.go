// Package agent wires hagentd together: it drives the election state
// machine of package cluster with a real clock, heartbeat links and the
// virtual-MAC manager, runs hooks, keeps the history, and answers the
// operator's control socket.
//
// One goroutine (run) owns the cluster.Machine. Around it: one receiver per
// hbdev that authenticates frames and hands adverts to run; a dedicated
// sender that transmits the current advert every hb_interval on every hbdev;
// a link watcher; a hook runner; the control server. The takeover path runs
// inline in run: MAC, addresses and the first gratuitous ARP happen before
// anything else (heartbeat, hooks, logging).
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/internal/paths"
	"github.com/hagent/hagent/metrics"
	"github.com/hagent/hagent/sessionsync"
	"github.com/hagent/hagent/udplink"
	"github.com/hagent/hagent/vmac"
)

// Default directories of hagentd (systemd StateDirectory=hagent and
// RuntimeDirectory=hagent).
const (
	// DefaultStateDir keeps what must survive reboots.
	DefaultStateDir = paths.StateDir
	// DefaultRunDir keeps runtime-only state and the control socket.
	DefaultRunDir = paths.RunDir
)

// Network is what the agent needs from the virtual-MAC manager (vmac.Manager
// implements it); tests may substitute their own.
type Network interface {
	Take() (vmac.TakeReport, error)
	Announce() error
	Release() error
	Reset() error
	Owned() bool
	Status() []vmac.IfaceStatus
	Close() error
}

// Options configure an Agent. Zero fields get the real implementations.
type Options struct {
	Config *config.Config
	Logger hclog.Logger
	// Links are the hbdevs in config order; nil opens AF_PACKET links.
	Links []heartbeat.Link
	// Network manages the vMACs; nil builds a vmac.Manager (or a no-op one
	// when no data interfaces are configured). Network2 is vcluster 2's
	// (cluster.vcluster2).
	Network, Network2 Network
	// WatchLinks reports carrier changes; nil uses vmac.WatchLinks.
	WatchLinks func(ctx context.Context, names []string, fn func(name string, up bool)) error
	// PollCarrier reads the carrier of direct hbdevs every interval; nil
	// uses vmac.PollCarrier.
	// It reports a loss only after debounce.
	PollCarrier func(ctx context.Context, names []string, every, debounce time.Duration, fn func(name string, up bool)) error
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// StateDir is where state that must survive a reboot lives (the
	// heartbeat epoch, the sync generation); "" keeps none (tests).
	StateDir string
	// RunDir is where runtime-only state lives (the interfaces' permanent
	// MACs, remembered across a crash but not a reboot); "" is
	// DefaultRunDir.
	RunDir string
	// SyncLinks are the control-channel links (hbdev priority order) for
	// configuration sync; nil opens AF_PACKET links on eth_type.l2ep.
	SyncLinks []heartbeat.Link
	// SyncRoot is where "/" of the sync paths lies (tests); "" is "/".
	SyncRoot string
	// SessionLinks are the session channel's links (sync_dev, then the
	// hbdevs); nil opens AF_PACKET links on eth_type.session.
	SessionLinks []heartbeat.Link
	// SessionTable is the conntrack table; nil is the kernel's.
	SessionTable sessionsync.Table
	// Version labels hagent_build_info (metrics_listen).
	Version string
	// SetLink sets an interface up or down (cluster.link_failed_signal);
	// nil is netlink.
	SetLink func(name string, up bool) error
}

// Agent is one running hagentd.
type Agent struct {
	log   hclog.Logger
	now   func() time.Time
	codec *heartbeat.Codec
	guard heartbeat.ReplayGuard
	watch func(ctx context.Context, names []string, fn func(name string, up bool)) error
	poll  func(ctx context.Context, names []string, every, debounce time.Duration, fn func(name string, up bool)) error
	// epoch and seq (under sendMu) are this run's heartbeat epoch and
	// sequence; the epoch only grows (persisted in state, raised by hints).
	epoch  uint64
	state  *stateStore
	nodeID heartbeat.NodeID
	wire   wireWatch

	cfgMu sync.RWMutex
	cfg   *config.Config // effective: what runs now
	// desired is the cluster section as configured (file or primary); it
	// differs from cfg.Cluster in keys that wait for a restart. It is what
	// configuration sync compares and sends.
	desired config.Cluster
	// restartNeeded are the keys the last reload could not apply, wanted
	// the configuration it was given (agent/reload.go).
	restartNeeded []string
	wanted        *config.Config

	links []*hbLink

	// vcs are the virtual clusters (one, or two with cluster.vcluster2),
	// owned by run; m is the first one's machine, which configuration
	// and session sync follow.
	vcs []*vcluster
	m   *cluster.Machine

	rx     chan rxFrame
	linkCh chan linkEvent
	cmdCh  chan command

	// snapshot for the sender goroutine
	snap atomic.Pointer[snapshot]
	// view is what status reads of the run goroutine's state, published
	// after every step of the run loop (status.go).
	view   atomic.Pointer[statusView]
	sendMu sync.Mutex
	seq    uint64
	txBuf  []byte

	hist    *history
	hooks   *hookRunner
	started time.Time

	peerEpochs map[heartbeat.Peer]uint64 // last heartbeat epoch per sender, owned by run
	conf       *conflicts                // serial conflicts (run)
	cstate     carrierState              // direct hbdevs' carrier (run)
	syncRoot   string
	carrier    sync.Map // hbdev name → bool

	probers map[string]prober // pingserver, by interface
	checks  []*checker        // health checks (checks.go)
	lfs     *linkSignaler     // link_failed_signal (linksignal.go)
	mgmt    *mgmtRouting      // the management interface's routing (mgmt.go); nil without one

	sync    *syncEngine                    // config sync (nil when disabled)
	sess    *sessionEngine                 // session pickup (nil when disabled)
	metrics *metrics.Exporter              // nil without metrics_listen
	udpSync *udplink.Link                  // the sync channel's unicast_hb link, if any
	udpSess *udplink.Link                  // the session channel's unicast_hb link, if any
	msrv    atomic.Pointer[metrics.Server] // set by Run
	applyCh chan *config.Config
	peerBuf []string
	// sessOwned are the vclusters (sections) whose flows session pickup
	// sends, on a node running two (vcsessions.go; run goroutine).
	sessOwned []int
}

// hbLink is one hbdev with its counters.
type hbLink struct {
	heartbeat.Link
	prio     int
	rx       atomic.Uint64
	tx       atomic.Uint64
	txErr    atomic.Uint64
	dropped  atomic.Uint64
	badAuth  atomic.Uint64
	replay   atomic.Uint64
	lastRxNs atomic.Int64
}

type rxFrame struct {
	link  int
	at    time.Time
	frame heartbeat.Frame
	// dup: the same heartbeat already came on another hbdev; only the
	// carrier detection's record of where a peer is heard wants it.
	dup bool
}

type linkEvent struct {
	name string
	up   bool
	// debounced: a carrier loss already held for carrier_debounce (the
	// carrier poll of direct hbdevs).
	debounced bool
}

type command struct {
	cmd      string
	arg      any
	vcluster int // the request's vcluster (ha failover)
	reply    chan any
}

// snapshot is what the sender transmits until the next change: the first
// vcluster's advert, and the second's (TLV 3) when has2.
type snapshot struct {
	adv  cluster.Advert
	adv2 cluster.Advert
	has2 bool
	id2  int
	at   time.Time
}

// New builds an agent: it opens the hbdevs and the vMAC manager, makes sure
// this node holds no vMAC left over from a crash, and prepares the machine.
// Nothing is sent until Run.
func New(o Options) (*Agent, error) {
	cfg := o.Config
	if cfg == nil {
		return nil, errors.New("agent: no config")
	}
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	a := &Agent{
		log:        log.With("node", cfg.Node.Name),
		now:        now,
		cfg:        cfg,
		desired:    cfg.Cluster,
		rx:         make(chan rxFrame, 1024),
		linkCh:     make(chan linkEvent, 64),
		cmdCh:      make(chan command),
		hist:       newHistory(256),
		started:    now(),
		peerEpochs: map[heartbeat.Peer]uint64{},
		conf:       newConflicts(),
		cstate:     newCarrierState(),
		syncRoot:   o.SyncRoot,
		watch:      o.WatchLinks,
		applyCh:    make(chan *config.Config, 1),
		txBuf:      make([]byte, 0, heartbeat.MaxFrameLen),
		lfs:        newLinkSignaler(o.SetLink),
		mgmt:       newMgmtRouting(cfg),
	}
	if a.watch == nil {
		a.watch = vmac.WatchLinks
	}
	a.poll = o.PollCarrier
	if a.poll == nil {
		a.poll = vmac.PollCarrier
	}
	pw, err := cfg.Cluster.Password()
	if err != nil {
		return nil, err
	}
	if !cfg.Cluster.Auth {
		a.log.Warn("HEARTBEAT AUTHENTICATION IS DISABLED: " + config.NoAuthNote)
	}
	a.codec = heartbeat.NewCodec(pw, uint16(cfg.Cluster.GroupID))

	links := o.Links
	if links == nil {
		for _, hb := range cfg.Cluster.HBDevs {
			l, err := heartbeat.DialLink(hb.Name, cfg.Cluster.HeartbeatEtherType())
			if err != nil {
				for _, l := range links {
					l.Close()
				}
				return nil, fmt.Errorf("hbdev %s: %w", hb.Name, err)
			}
			links = append(links, l)
		}
		if u := &cfg.Cluster.UnicastHB; u.Enabled {
			l, err := a.openUnicast(u, u.Port, "heartbeat")
			if err != nil {
				for _, l := range links {
					l.Close()
				}
				return nil, err
			}
			links = append(links, l)
		}
	}
	for i, l := range links {
		prio := 0
		if i < len(cfg.Cluster.HBDevs) {
			prio = cfg.Cluster.HBDevs[i].Priority
		} else if isUnicast(l) {
			prio = cfg.Cluster.UnicastHB.Priority
		}
		a.links = append(a.links, &hbLink{Link: l, prio: prio})
	}
	a.nodeID = nodeIDOf(a.links, cfg.Node.Name)
	a.state = openState(o.StateDir, a.log)
	for p, e := range a.state.knownPeers() {
		a.guard.SetFloor(p, e) // frames captured before this restart stay replays
		a.peerEpochs[p] = e
	}
	a.epoch = a.state.startEpoch(uint64(a.started.UnixNano()))

	runDir := o.RunDir
	a.vcs, err = newVClusters(cfg, [2]Network{o.Network, o.Network2}, runDir, a.log, a.started)
	if err != nil {
		a.closeLinks()
		return nil, err
	}
	a.m = a.vcs[0].m
	if items := a.pingItems(cfg); len(items) > 0 {
		if a.probers, err = openProbers(items); err != nil {
			a.closeLinks()
			a.closeNets()
			return nil, fmt.Errorf("pingserver: %w", err)
		}
	}
	for _, c := range cfg.Cluster.Checks {
		k, err := newChecker(c, cfg.Node.Name, cfg.Cluster.Hooks.Env)
		if err != nil {
			a.closeLinks()
			a.closeNets()
			return nil, fmt.Errorf("check %s: %w", c.Name, err)
		}
		a.checks = append(a.checks, k)
	}
	if cfg.Cluster.Sync.Enabled {
		e, err := a.newSyncEngine(cfg, o.SyncLinks, o.StateDir, o.SyncRoot)
		if err != nil {
			a.closeLinks()
			a.closeNets()
			return nil, fmt.Errorf("configuration sync: %w", err)
		}
		a.sync = e
	}
	if cfg.Cluster.SessionPickup.Enabled {
		e, err := a.newSessionEngine(cfg, o.SessionLinks, o.SessionTable)
		if err != nil {
			if a.sync != nil {
				a.sync.ch.Close()
			}
			a.closeLinks()
			a.closeNets()
			return nil, fmt.Errorf("session pickup: %w", err)
		}
		a.sess = e
	}
	for _, v := range a.vcs {
		if err := v.net.Reset(); err != nil {
			a.log.Warn("could not reset the data interfaces", "vcluster", v.id, "error", err)
		}
	}
	a.publishStatus() // before anything can read status (the exporter does at once)
	if cfg.MetricsListen != "" {
		a.metrics = metrics.New(a.metricsStatus, o.Version)
	}
	a.hooks = newHookRunner(a.log.Named("hook"), a.hist)
	a.publish()
	return a, nil
}

func (a *Agent) config() *config.Config {
	a.cfgMu.RLock()
	defer a.cfgMu.RUnlock()
	return a.cfg
}

func (a *Agent) closeLinks() {
	for _, l := range a.links {
		l.Close()
	}
}

// Run runs the agent until ctx is done, then stops gracefully: it tells the
// peers it is leaving, hands the vMAC over (make-before-break), releases
// and returns nil. It returns an error only for a failure to run at all.
func (a *Agent) Run(ctx context.Context) error {
	cfg := a.config()
	a.log.Info("starting", "serial", cfg.Node.Serial, "priority", cfg.Node.Priority, "override", cfg.Node.Override,
		"group_id", cfg.Cluster.GroupID, "hb_interval", cfg.Cluster.HBInterval, "hb_lost_threshold", cfg.Cluster.HBLostThreshold,
		"hbdevs", len(a.links), "vclusters", len(a.vcs))
	a.hist.add(Event{Time: a.now(), Kind: "start", Role: cluster.RoleStarting.String(), Reason: "hagentd started"})

	bg, stopBG := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if a.metrics != nil {
		// A metrics endpoint that cannot bind is logged, not fatal: the
		// cluster matters more than its graphs.
		if srv, err := a.metrics.Listen(cfg.MetricsListen); err != nil {
			a.log.Error("metrics endpoint not started", "metrics_listen", cfg.MetricsListen, "error", err)
		} else {
			a.msrv.Store(srv)
			a.log.Info("metrics endpoint", "address", srv.Addr().String(), "path", "/metrics")
		}
	}
	for i, l := range a.links {
		wg.Add(1)
		go func() { defer wg.Done(); a.receive(bg, i, l) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); a.sendLoop(bg) }()
	watchNames := append([]string(nil), cfg.Cluster.Monitor...)
	for _, n := range cfg.Cluster.Section(2).Monitor {
		if !slices.Contains(watchNames, n) {
			watchNames = append(watchNames, n)
		}
	}
	for _, l := range a.links {
		if !isUnicast(l.Link) { // a UDP path has no carrier to watch
			watchNames = append(watchNames, l.Name())
		}
	}
	if len(watchNames) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.watch(bg, watchNames, func(name string, up bool) {
				select {
				case a.linkCh <- linkEvent{name: name, up: up}:
				case <-bg.Done():
				}
			}); err != nil && bg.Err() == nil {
				a.log.Error("link watcher stopped", "error", err)
			}
		}()
	}
	a.startGuards(bg, &wg) // a primary keeps its vMACs and addresses (guard.go)
	if m := a.mgmt; m != nil {
		wg.Add(1)
		go func() { defer wg.Done(); a.mgmtGuard(bg, m) }()
	}
	if direct := directHBDevs(&cfg.Cluster); len(direct) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deb := cfg.Cluster.CarrierDebounce
			if err := a.poll(bg, direct, carrierPollEvery(deb), deb, func(name string, up bool) {
				select {
				case a.linkCh <- linkEvent{name: name, up: up, debounced: true}:
				case <-bg.Done():
				}
			}); err != nil && bg.Err() == nil {
				a.log.Error("carrier poll of the direct hbdevs stopped", "error", err)
			}
		}()
	}
	if a.sync != nil {
		wg.Add(1)
		go func() { defer wg.Done(); a.runSync(bg) }()
	}
	if a.sess != nil {
		a.startSessions()
		wg.Add(1)
		go func() { defer wg.Done(); _ = a.sess.e.Run(bg) }()
		a.runDefer(bg, &wg) // defer.go
	}
	if items := a.pingItems(cfg); len(items) > 0 && a.probers != nil {
		wg.Add(1)
		go func() { defer wg.Done(); a.pingLoop(bg, items, a.probers) }()
	}

	for _, k := range a.checks {
		wg.Add(1)
		go func() { defer wg.Done(); a.checkLoop(bg, k) }()
	}

	err := a.run(ctx)

	a.lfs.close() // no port stays down past the stop
	stopBG()
	if a.sync != nil {
		a.sync.ch.Close()
	}
	if a.sess != nil {
		a.sess.ch.Close()
	}
	a.closeLinks()
	wg.Wait()
	a.hooks.close(5 * time.Second)
	if a.sess != nil {
		a.sess.table.Close()
	}
	if srv := a.msrv.Load(); srv != nil {
		srv.Close()
	}
	a.closeNets()
	a.state.wait()
	a.log.Info("stopped")
	return err
}

// run is the single owner of the machine.
func (a *Agent) run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	due := a.now() // when the timer fires next
	done := ctx.Done()
	var hardStop <-chan time.Time
	for {
		fired := false
		select {
		case r := <-a.rx:
			if a.frozen(due) {
				// The first thing read after a freeze may be a frame, not
				// the late timer: catch up the same way.
				a.catchUpAfterFreeze(due, &r)
				break
			}
			a.stepFrame(r)
		case nc := <-a.applyCh:
			a.log.Info("applying the cluster section synchronized from the primary")
			a.reload(nc)
		case ev := <-a.linkCh:
			a.linkChanged(ev)
		case c := <-a.cmdCh:
			var r any
			if c.cmd == cmdReload {
				r = a.reload(c.arg.(*config.Config))
			} else {
				r = a.handle(c.cmd, c.vcluster)
			}
			a.process()
			a.publishStatus() // a status right after the answer sees what the command did
			c.reply <- r
		case <-timer.C:
			fired = true
			// A deadline (a peer's expiry) must never win over a heartbeat
			// that has already arrived: select picks among ready cases at
			// random, and under load the receiver may be a step behind.
			if a.frozen(due) {
				a.catchUpAfterFreeze(due, nil)
			} else {
				a.drainRx()
				runtime.Gosched()
				a.drainRx()
			}
			a.tick(a.now())
		case <-done:
			done = nil
			a.log.Info("graceful stop: handing over")
			a.stepAll(cluster.Event{Type: cluster.EventShutdown, Time: a.now()})
			hardStop = time.After(5 * time.Second)
		case <-hardStop:
			a.log.Warn("hand-over did not finish in time; releasing")
			for _, v := range a.vcs {
				if err := v.net.Release(); err != nil {
					a.log.Error("release failed", "vcluster", v.id, "error", err)
				}
			}
			return nil
		}
		a.process()
		a.updateSessions()
		if fired || a.stopped() {
			a.updateSync()
		}
		a.publishStatus()
		if a.stopped() {
			return nil
		}
		// Re-arm only when the timer fired or something is due sooner: a
		// stream of events (status polls, frames) must not postpone ticks.
		now := a.now()
		if next := now.Add(a.nextWake()); fired || next.Before(due) {
			timer.Reset(next.Sub(now))
			due = next
		}
	}
}

// frozen reports whether the run loop wakes later than half the detection
// time after its deadline due: this process did not run (SIGSTOP, a paused
// VM, a stalled machine).
func (a *Agent) frozen(due time.Time) bool {
	return !due.IsZero() && a.now().Sub(due) > a.detection()/2
}

// catchUpAfterFreeze runs when the agent wakes from a freeze. The
// heartbeats that arrived meanwhile are still in the sockets, not yet read
// by the receivers: judging peers now would declare them lost on stale
// timers and take the vMAC for a moment (found by the chaos campaign: a
// SIGCONTed secondary grabbed the vMAC for 3 ms). So it reads for one
// interval first. And it steps only each peer's newest heartbeat: the
// backlog holds the peers' states of the whole freeze in order, and
// stepping them one by one replays elections long over (the campaign: a
// peer restarted during the freeze and, holding back for its bulk session
// copy, was not a candidate in its first heartbeats; stepped in order they
// made the thawed node the winner for one batch, which took the vMAC and
// released it 7 ms later). One older frame of a peer is kept besides its
// newest: the last one in which it claimed primary, if it claims it no
// more. That edge is what tells a primary that the peer let the vMAC go
// and the switch must be told again (a primary frozen while another took
// over, then the other released: without the edge no GARP, and the
// clients lost 1-4 s). first is a frame already read, if any.
func (a *Agent) catchUpAfterFreeze(due time.Time, first *rxFrame) {
	ival := a.config().Cluster.HBInterval
	a.log.Warn("the agent did not run for a while; reading queued heartbeats before judging peers", "late", a.now().Sub(due).Round(time.Millisecond))
	newest := map[heartbeat.Peer]rxFrame{}
	claimed := map[heartbeat.Peer]rxFrame{} // the last frame claiming primary
	var order []heartbeat.Peer
	keep := func(r rxFrame) {
		if r.dup {
			a.carrierSeen(r.frame.Serial, r.frame.Node, r.link, r.at)
			return
		}
		k := heartbeat.Peer{Serial: r.frame.Serial, NodeID: r.frame.NodeID}
		old, ok := newest[k]
		if !ok {
			order = append(order, k)
		} else if old.frame.Epoch > r.frame.Epoch || (old.frame.Epoch == r.frame.Epoch && old.frame.Seq > r.frame.Seq) {
			return
		}
		newest[k] = r
		if a.claimsPrimary(&r.frame) {
			claimed[k] = r
		}
	}
	if first != nil {
		keep(*first)
	}
	t := time.NewTimer(ival)
	defer t.Stop()
	for reading := true; reading; {
		select {
		case r := <-a.rx:
			keep(r)
		case <-t.C:
			reading = false
		}
	}
	for _, k := range order {
		n := newest[k]
		if c, ok := claimed[k]; ok && !a.claimsPrimary(&n.frame) {
			a.stepFrame(c)
		}
		a.stepFrame(n)
	}
}

// claimsPrimary reports whether f's sender says it is primary of any of
// this node's vclusters.
func (a *Agent) claimsPrimary(f *heartbeat.Frame) bool {
	if cluster.Role(f.Role) == cluster.RolePrimary {
		return true
	}
	for _, v := range a.vcs[1:] {
		if adv, ok := vc2Advert(f, v.id); ok && adv.Role == cluster.RolePrimary {
			return true
		}
	}
	return false
}

// stepFrame feeds one received heartbeat to the machine and the syncer.
func (a *Agent) stepFrame(r rxFrame) {
	if r.dup {
		a.carrierSeen(r.frame.Serial, r.frame.Node, r.link, r.at)
		return
	}
	cfg := a.config()
	hbdev := a.links[r.link].Name()
	if r.frame.Serial == cfg.Node.Serial {
		a.selfConflict(r, hbdev)
		return
	}
	see, began := a.conf.notePeer(&r.frame, hbdev, r.at, a.detection())
	if began {
		msg := fmt.Sprintf("serial conflict: %s (node id %s, on %s) uses the serial %s of another member; only the node with the highest node id takes part in the election",
			r.frame.Node, r.frame.NodeID, hbdev, r.frame.Serial)
		a.log.Error(msg)
		a.hist.add(Event{Time: r.at, Kind: "health", Reason: msg})
	}
	if !see {
		a.links[r.link].dropped.Add(1)
		return
	}
	if !a.carrierHeard(r.frame.Serial, r.frame.Node, r.link, r.at) {
		return // queued before the carrier loss that declared its sender lost
	}
	if err := a.m.Step(cluster.Event{Type: cluster.EventHeartbeat, Time: r.at, Advert: advertOf(&r.frame)}); err != nil {
		a.links[r.link].dropped.Add(1)
		a.log.Debug("heartbeat ignored", "from", r.frame.Node, "error", err)
	}
	// The same frame carries the sender's state in the other vcluster.
	for _, v := range a.vcs[1:] {
		if adv, ok := vc2Advert(&r.frame, v.id); ok {
			if err := v.m.Step(cluster.Event{Type: cluster.EventHeartbeat, Time: r.at, Advert: adv}); err != nil {
				a.log.Debug("heartbeat ignored", "vcluster", v.id, "from", r.frame.Node, "error", err)
			}
		}
	}
	key := heartbeat.Peer{Serial: r.frame.Serial, NodeID: r.frame.NodeID}
	if old, ok := a.peerEpochs[key]; !ok || r.frame.Epoch > old {
		if ok && a.sync != nil {
			// Restarted before it was ever lost: whatever the syncer was
			// waiting for from the old process will not come.
			a.log.Info("peer restarted", "peer", r.frame.Node)
			a.sync.s.PeerRestarted(r.frame.Node)
		}
		if ok && a.sess != nil {
			a.sess.e.PeerRestarted(r.frame.Node)
		}
		a.peerEpochs[key] = r.frame.Epoch
		a.state.notePeer(key, r.frame.Epoch)
	}
	a.boundSenders()
	// The channels derive keys only for the members and epochs heard here
	// (l2chan.Channel.Admit): a frame from any other name costs them no
	// cryptography. Both channels run on the heartbeat's epoch.
	if a.sync != nil {
		a.sync.ch.Admit(r.frame.Node, r.frame.Epoch)
	}
	if a.sess != nil {
		a.sess.ch.Admit(r.frame.Node, r.frame.Epoch)
	}
	if a.sync != nil {
		a.sync.s.NotePeerChecksum(r.frame.Node, r.frame.ConfigSum, r.frame.ConfigGen)
		if !slices.Contains(a.sync.peers, r.frame.Node) && r.frame.Node != a.sync.lead {
			a.updateSync()
		}
	}
}

// drainRx steps every heartbeat already queued by the receivers.
func (a *Agent) drainRx() {
	for {
		select {
		case r := <-a.rx:
			a.stepFrame(r)
		default:
			return
		}
	}
}

// faultRetry is how long a node whose takeover failed stays faulted
// before it runs the election again.
const faultRetry = 2 * time.Second

// maxSleep bounds the run loop's sleep when the machine has no deadline.
const maxSleep = 10 * time.Second

// nextWake is the time until the machine's next deadline (or the end of a
// takeover fault). The machine names every instant at which time matters,
// so an idle agent wakes only for frames, not at every interval.
func (a *Agent) nextWake() time.Duration {
	now := a.now()
	wait := maxSleep
	min := func(t time.Time) {
		if !t.IsZero() {
			if until := t.Sub(now); until < wait {
				wait = until
			}
		}
	}
	for _, v := range a.vcs {
		min(v.m.NextDeadline())
		min(v.faultUntil)
		min(v.refresh.next) // arps_refresh on time, not at the next heartbeat
		min(v.flipUntil)    // pingserver flip_timeout (flip.go)
	}
	min(a.conf.nextExpiry(a.detection()))
	min(a.carrierDeadline())
	if wait < 0 {
		wait = 0
	}
	return wait
}

func (a *Agent) linkChanged(ev linkEvent) {
	cfg := a.config()
	for _, l := range a.links {
		if l.Name() != ev.name {
			continue
		}
		// The link watcher and the carrier poll (direct hbdevs) may both
		// report a change: act once.
		if old, ok := a.carrier.Load(ev.name); ok && old.(bool) == ev.up {
			break
		}
		a.log.Info("hbdev carrier", "hbdev", ev.name, "up", ev.up)
		a.carrier.Store(ev.name, ev.up)
		a.carrierChanged(ev.name, ev.up, ev.debounced, a.now())
		if a.sync != nil {
			a.sync.ch.SetLinkUp(ev.name, ev.up)
		}
		if a.sess != nil {
			a.sess.ch.SetLinkUp(ev.name, ev.up)
		}
	}
	a.monitorChanged(cfg, ev.name, ev.up) // the vclusters that monitor it
}

// publish makes the machines' current adverts the ones the sender transmits.
func (a *Agent) publish() {
	s := &snapshot{adv: a.m.Advert(), at: a.now()}
	if len(a.vcs) > 1 {
		s.adv2, s.has2, s.id2 = a.vcs[1].m.Advert(), true, a.vcs[1].id
	}
	a.snap.Store(s)
}

func advertOf(f *heartbeat.Frame) cluster.Advert {
	return cluster.Advert{
		Name: f.Node, Serial: f.Serial, Role: cluster.Role(f.Role), Priority: f.Priority,
		Override:     f.Flags&heartbeat.FlagOverride != 0,
		FailoverSet:  f.Flags&heartbeat.FlagFailoverSet != 0,
		Leaving:      f.Flags&heartbeat.FlagLeaving != 0,
		MonitorUp:    int(f.MonitorUp),
		MonitorTotal: int(f.MonitorTotal),
		Uptime:       time.Duration(f.Uptime) * time.Millisecond,
		Primary:      f.Primary,
		Takeovers:    f.Takeovers,
	}
}

// sendLoop transmits the current advert every hb_interval, on a monotonic
// ticker of its own so a busy run loop never delays a heartbeat.
func (a *Agent) sendLoop(ctx context.Context) {
	ival := a.config().Cluster.HBInterval
	t := time.NewTicker(ival)
	defer t.Stop()
	a.sendHeartbeat()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.sendHeartbeat()
			if n := a.config().Cluster.HBInterval; n != ival {
				ival = n
				t.Reset(ival)
			}
		}
	}
}

// sendHeartbeat sends one frame with the current advert on every hbdev.
// It allocates nothing in the steady state.
func (a *Agent) sendHeartbeat() {
	s := a.snap.Load()
	if s == nil {
		return
	}
	cfg := a.config()
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	a.seq++
	adv := &s.adv
	up := adv.Uptime + a.now().Sub(s.at)
	f := heartbeat.Frame{
		GroupID: uint16(cfg.Cluster.GroupID), VCluster: uint8(cfg.Cluster.VCluster),
		Role: uint8(adv.Role), Priority: adv.Priority,
		MonitorUp: uint8(adv.MonitorUp), MonitorTotal: uint8(adv.MonitorTotal),
		Uptime: uint64(up / time.Millisecond), Epoch: a.epoch, Seq: a.seq,
		Node: adv.Name, Serial: adv.Serial, Primary: adv.Primary, NodeID: a.nodeID,
		Takeovers: adv.Takeovers,
	}
	f.NumHints = a.guard.Hints(&f.Hints)
	if s.has2 {
		putVC2(&f, s.id2, &s.adv2, s.adv2.Uptime+a.now().Sub(s.at))
	}
	if adv.Override {
		f.Flags |= heartbeat.FlagOverride
	}
	if adv.FailoverSet {
		f.Flags |= heartbeat.FlagFailoverSet
	}
	if adv.Leaving {
		f.Flags |= heartbeat.FlagLeaving
	}
	if a.sync != nil {
		f.ConfigSum, f.ConfigGen = a.sync.checksum()
	}
	b, err := a.codec.Append(a.txBuf[:0], &f)
	if err != nil {
		a.log.Error("cannot encode heartbeat", "error", err)
		return
	}
	a.txBuf = b
	for _, l := range a.links {
		if err := l.Send(b); err != nil {
			l.txErr.Add(1)
			continue
		}
		l.tx.Add(1)
	}
}

// receive reads one hbdev: authenticates, checks replay, and hands new
// adverts to run. Bad frames are counted and dropped, never fatal.
func (a *Agent) receive(ctx context.Context, idx int, l *hbLink) {
	buf := make([]byte, 4096)
	cfg := a.config()
	vc := uint8(cfg.Cluster.VCluster)
	serial := cfg.Node.Serial
	direct := len(directHBDevs(&cfg.Cluster)) > 0
	var backoff time.Duration
	var f heartbeat.Frame
	for {
		n, from, err := l.Recv(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, heartbeat.ErrClosed) || errors.Is(err, net.ErrClosed) {
				return
			}
			// Log the first error of a run, then back off (10 ms → 1 s):
			// a vanished interface must not flood the log.
			if backoff == 0 {
				a.log.Warn("hbdev receive error", "hbdev", l.Name(), "error", err)
				backoff = 10 * time.Millisecond
			} else if backoff < time.Second {
				backoff *= 2
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			continue
		}
		if backoff != 0 {
			a.log.Info("hbdev receiving again", "hbdev", l.Name())
			backoff = 0
		}
		at := a.now()
		// f is reused: Decode keeps strings that did not change, so a
		// steady peer costs no allocation per frame (f goes to run by value).
		if err := a.codec.Decode(buf[:n], &f); err != nil {
			if a.dropped(l, from, buf[:n], err, at) {
				l.badAuth.Add(1)
			} else {
				l.dropped.Add(1)
			}
			continue
		}
		if f.NodeID == a.nodeID && f.Serial == serial {
			l.dropped.Add(1) // our own frame, back from another hbdev on the same segment
			continue
		}
		if f.NumHints > 0 {
			a.takeHints(&f)
		}
		if f.VCluster != vc || !cluster.Role(f.Role).Valid() {
			l.dropped.Add(1)
			continue
		}
		switch err := a.guard.CheckPeer(heartbeat.Peer{Serial: f.Serial, NodeID: f.NodeID}, f.Epoch, f.Seq); {
		case errors.Is(err, heartbeat.ErrDuplicate):
			l.rx.Add(1)
			l.lastRxNs.Store(at.UnixNano())
			if direct {
				// The copy on this hbdev says the peer is reachable here
				// too: a carrier loss of the hbdev that delivered first
				// must not declare it lost.
				select {
				case a.rx <- rxFrame{link: idx, at: at, frame: f, dup: true}:
				default:
				}
			}
			continue
		case err != nil:
			l.replay.Add(1)
			continue
		}
		l.rx.Add(1)
		l.lastRxNs.Store(at.UnixNano())
		select {
		case a.rx <- rxFrame{link: idx, at: at, frame: f}:
		default:
			l.dropped.Add(1)
		}
	}
}

// call runs a command in the run goroutine and returns its answer.
func (a *Agent) call(ctx context.Context, cmd string) (any, error) {
	return a.callVC(ctx, cmd, 0)
}

// callVC is call for a command about vcluster vcn (0: the first).
func (a *Agent) callVC(ctx context.Context, cmd string, vcn int) (any, error) {
	c := command{cmd: cmd, vcluster: vcn, reply: make(chan any, 1)}
	select {
	case a.cmdCh <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(5 * time.Second):
		return nil, errors.New("agent busy")
	}
	select {
	case r := <-c.reply:
		if err, ok := r.(error); ok {
			return nil, err
		}
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func updown(b bool) string {
	if b {
		return "up"
	}
	return "down"
}

// noNetwork is the Network of a cluster without data interfaces.
type noNetwork struct{}

func (noNetwork) Take() (vmac.TakeReport, error) {
	t := time.Now()
	return vmac.TakeReport{Start: t}, nil
}
func (noNetwork) Announce() error            { return nil }
func (noNetwork) Release() error             { return nil }
func (noNetwork) Reset() error               { return nil }
func (noNetwork) Owned() bool                { return false }
func (noNetwork) Status() []vmac.IfaceStatus { return nil }
func (noNetwork) Close() error               { return nil }

// RequiredInterfaces lists the interfaces the agent cannot start without:
// the hbdevs, the data interfaces and the pingserver interfaces. Monitored
// interfaces are not required: a missing one counts as down.
func RequiredInterfaces(cfg *config.Config) []string {
	var out []string
	add := func(n string) {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	for _, h := range cfg.Cluster.HBDevs {
		add(h.Name)
	}
	for _, sec := range []int{1, 2} {
		for _, i := range cfg.Cluster.Section(sec).Interfaces {
			add(i.Name)
		}
		for _, p := range pingItemsOf(cfg.Cluster.Section(sec)) {
			add(p.ifname)
		}
	}
	return out
}
