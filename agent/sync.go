package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/configsync"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/l2chan"
	"github.com/hagent/hagent/udplink"
)

// syncEngine drives configuration sync (docs/configsync.md) for the agent: the 0x8893
// control channel on the hbdevs and the configsync.Syncer. Blocking work
// (a full sync) never runs on the run goroutine.
type syncEngine struct {
	ch *l2chan.Channel
	s  *configsync.Syncer

	// owned by the run goroutine
	primary bool
	peers   []string
	lead    string
}

// newSyncEngine builds the engine. links are the control-channel links in
// hbdev priority order (nil: open AF_PACKET links on eth_type.l2ep).
func (a *Agent) newSyncEngine(cfg *config.Config, links []heartbeat.Link, stateDir, root string) (*syncEngine, error) {
	// The channel key, whatever cluster.auth says: never a keyless
	// channel (TestKeylessChannelsRefused).
	pw, err := cfg.Cluster.ChannelKey()
	if err != nil {
		return nil, err
	}
	if links == nil {
		var ul *udplink.Link
		links, ul, err = a.channelLinks(cfg, cfg.Cluster.EthType.L2EP, nil, cfg.Cluster.UnicastHB.SyncPort, "sync", "configuration sync")
		if err != nil {
			return nil, err
		}
		a.udpSync = ul
	}
	cc := l2chan.DefaultConfig()
	if cfg.Cluster.UnicastHB.Enabled {
		cc.MTU = unicastMTU
	}
	cc.Self, cc.GroupID, cc.Password, cc.Links = cfg.Node.Name, uint16(cfg.Cluster.GroupID), pw, links
	cc.Label = configsync.ChannelLabel
	cc.Logger = a.log.Named("sync-channel")
	cc.Epoch = a.epoch // the heartbeat's: persisted, only grows (Rekey raises both)
	ch, err := l2chan.New(cc)
	if err != nil {
		for _, l := range links {
			l.Close()
		}
		return nil, err
	}
	sc := configsync.DefaultSyncConfig()
	sc.Self = cfg.Node.Name
	sc.Paths = cfg.Cluster.Sync.Paths
	sc.Root = root
	sc.OnChange = cfg.Cluster.Sync.OnChange
	sc.Period = cfg.Cluster.Sync.Period
	sc.Transport = ch
	sc.Logger = a.log.Named("sync")
	if stateDir != "" {
		sc.StateFile = filepath.Join(stateDir, "sync-state.json")
	}
	sc.ClusterSection = func() ([]byte, error) {
		a.cfgMu.RLock()
		c := a.desired
		a.cfgMu.RUnlock()
		return config.MarshalCluster(c)
	}
	sc.ApplyCluster = a.applySyncedCluster
	sc.Event = func(kind, msg string) { a.hist.add(Event{Time: a.now(), Kind: "sync", Reason: kind + ": " + msg}) }
	s, err := configsync.NewSyncer(sc)
	if err != nil {
		ch.Close()
		return nil, err
	}
	return &syncEngine{ch: ch, s: s}, nil
}

// applySyncedCluster validates a cluster: section received from the
// primary and hands it to the run goroutine. It does not wait for it to be
// applied: the syncer may hold locks the run goroutine needs.
func (a *Agent) applySyncedCluster(b []byte) error {
	c, err := config.ParseCluster("cluster section from the primary", b)
	if err != nil {
		return err
	}
	merged := *a.wantedConfig() // the file's node-local keys, not the running ones
	merged.Cluster = c
	select {
	case a.applyCh <- &merged:
	default:
		// A newer one is queued already? Replace it.
		select {
		case <-a.applyCh:
		default:
		}
		a.applyCh <- &merged
	}
	return nil
}

// updateSync tells the syncer the current role, primary and live peers
// when they changed. Runs on the run goroutine.
func (a *Agent) updateSync() {
	e := a.sync
	if e == nil {
		return
	}
	primary := a.m.Role() == cluster.RolePrimary
	peers := a.m.AlivePeers(a.peerBuf[:0])
	a.peerBuf = peers
	lead := ""
	if !primary {
		lead = a.m.Status().PrimaryName
	}
	if primary == e.primary && lead == e.lead && slices.Equal(peers, e.peers) {
		return
	}
	e.primary, e.lead, e.peers = primary, lead, slices.Clone(peers)
	if primary {
		e.s.SetRole(true, e.peers)
	} else if lead != "" {
		e.s.SetRole(false, []string{lead})
	} else {
		e.s.SetRole(false, nil)
	}
}

func (a *Agent) runSync(ctx context.Context) {
	if err := a.sync.s.Run(ctx); err != nil && ctx.Err() == nil {
		a.log.Error("configuration sync stopped", "error", err)
	}
}

// checksum returns the tree checksum and generation for heartbeats.
func (e *syncEngine) checksum() ([32]byte, uint64) {
	return e.s.Checksum(), e.s.Generation()
}

// synchronize runs `ha synchronize` (blocking, not on the run goroutine).
func (a *Agent) synchronize() (any, error) {
	if a.sync == nil {
		return nil, errors.New("configuration sync is disabled (cluster.sync.enabled: false)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	if err := a.sync.s.SyncNow(ctx); err != nil {
		a.hist.add(Event{Time: a.now(), Kind: "sync", Reason: "ha synchronize failed: " + err.Error()})
		return nil, err
	}
	st := a.sync.s.Summary()
	msg := fmt.Sprintf("synchronized in %s: checksum %s, generation %d", time.Since(start).Round(time.Millisecond), hex.EncodeToString(st.Checksum[:]), st.Generation)
	a.hist.add(Event{Time: a.now(), Kind: "sync", Reason: "ha synchronize: " + msg})
	return msg, nil
}

// checksums answers `ha checksum`.
func (a *Agent) checksums() (any, error) {
	if a.sync == nil {
		return nil, errors.New("configuration sync is disabled (cluster.sync.enabled: false)")
	}
	st := a.sync.s.Status()
	out := &control.Checksums{}
	for _, m := range st.Members {
		mc := control.MemberChecksum{Node: m.Node, Tree: hex.EncodeToString(m.Checksum[:]), Generation: m.Generation, InSync: m.InSync}
		if m.Self {
			mc.Serial = a.config().Node.Serial
		}
		if len(m.Paths) > 0 {
			mc.Paths = map[string]string{}
			for _, p := range m.Paths {
				mc.Paths[p.Path] = hex.EncodeToString(p.SHA256[:])
			}
		}
		out.Members = append(out.Members, mc)
	}
	return out, nil
}

// syncView is what status needs from the syncer, by node name.
type syncView struct {
	sum     string
	gen     uint64
	inSync  bool
	lastErr string
	members map[string]configsync.MemberStatus
}

func (a *Agent) syncStatus() *syncView {
	if a.sync == nil {
		return nil
	}
	st := a.sync.s.Summary()
	v := &syncView{sum: hex.EncodeToString(st.Checksum[:]), gen: st.Generation, inSync: st.InSync,
		members: map[string]configsync.MemberStatus{}}
	for _, m := range st.Members {
		v.members[m.Node] = m
	}
	var errs []string
	if st.LastScanError != "" {
		errs = append(errs, st.LastScanError)
	}
	if st.LastApplyError != "" {
		errs = append(errs, st.LastApplyError)
	}
	for _, c := range st.OnChange {
		if !c.OK {
			e := fmt.Sprintf("on_change %q failed (exit %d): %s", c.Command, c.ExitCode, c.StderrTail)
			if c.Error != "" && c.StderrTail == "" {
				e = fmt.Sprintf("on_change %q failed: %s", c.Command, c.Error)
			}
			errs = append(errs, e)
		}
	}
	sort.Strings(errs)
	if len(errs) > 0 {
		v.lastErr = errs[0]
		if len(errs) > 1 {
			v.lastErr += fmt.Sprintf(" (and %d more)", len(errs)-1)
		}
	}
	return v
}
