package configsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/l2chan"
	"github.com/hashicorp/go-hclog"
)

// ChannelLabel is the HKDF label of the configuration-sync channel on
// eth_type.l2ep (l2chan.Config.Label). It is part of the protocol: the
// keys of docs/configsync.md §1.4 derive from it.
const ChannelLabel = "hagent-sync-v1"

// Transport is what the Syncer needs from the control channel;
// *l2chan.Channel implements it.
type Transport interface {
	// Send delivers msg to peer reliably and in order, returning when it
	// is acknowledged.
	Send(ctx context.Context, peer string, msg []byte) error
	// Recv yields the messages of all peers; it is closed on shutdown.
	Recv() <-chan l2chan.Message
}

var _ Transport = (*l2chan.Channel)(nil)

// SyncConfig configures a Syncer. Zero durations take the value of
// DefaultSyncConfig.
type SyncConfig struct {
	// Self is this node's name.
	Self string
	// Paths are the absolute files and directories kept identical.
	Paths []string
	// Root, if set, is where "/" of Paths lies on this node's file system
	// (a chroot-like prefix for tests and containers); empty is "/".
	Root string
	// OnChange maps a sync path (file, or directory covering the files
	// below it) to a /bin/sh command run after a synchronization changed
	// it on this node.
	OnChange map[string]string
	// OnChangeTimeout bounds an on_change command.
	OnChangeTimeout time.Duration
	// Period is the interval of the full manifest compare (sync.period).
	Period time.Duration
	// Debounce is how long the watcher coalesces the file events that
	// follow the first of a burst (which rescans at once, unless it is an
	// in-place write) before it rescans again.
	Debounce time.Duration
	// RepairDelay is how long a checksum mismatch reported by heartbeats
	// must persist before the primary repairs that member.
	RepairDelay time.Duration
	// RetryDelay is how long a failed push or repair waits before it is
	// tried again.
	RetryDelay time.Duration
	// RequestTimeout bounds one request and its reply.
	RequestTimeout time.Duration
	// CatchupTimeout bounds how long a new primary waits for the members'
	// generations before it pushes its own tree.
	CatchupTimeout time.Duration
	// MaxBatch is the largest amount of file content put in one push.
	MaxBatch int
	// Transport is the control channel (an *l2chan.Channel in the daemon).
	Transport Transport
	// ClusterSection returns the canonical YAML of the cluster: section,
	// synchronized as the pseudo-path "cluster:"; nil leaves it out.
	ClusterSection func() ([]byte, error)
	// ApplyCluster applies a cluster: section received from the primary.
	ApplyCluster func([]byte) error
	// StateFile, if set, keeps the generation across restarts.
	StateFile string
	// Logger receives state changes; nil discards them.
	Logger hclog.Logger
	// Now is the clock of status timestamps; nil is time.Now.
	Now func() time.Time
	// Event, if set, is told of what an operator wants in the history:
	// on_change runs (kind "on_change"), drift overwritten on this node
	// ("drift"), repairs of a member ("repair"), applied pushes ("applied").
	// It is called without the syncer's lock held and must not block.
	Event func(kind, msg string)
}

// event reports to cfg.Event, if set. Call it without s.mu held.
func (s *Syncer) event(kind, format string, args ...any) {
	if s.cfg.Event != nil {
		s.cfg.Event(kind, fmt.Sprintf(format, args...))
	}
}

// DefaultSyncConfig returns the production timings.
func DefaultSyncConfig() SyncConfig {
	return SyncConfig{
		OnChangeTimeout: 30 * time.Second,      // an nft/systemctl reload is far quicker
		Period:          60 * time.Second,      // sync.period default
		Debounce:        20 * time.Millisecond, // coalesce what follows a burst's first event
		RepairDelay:     2 * time.Second,       // ten heartbeats of persistent mismatch
		RetryDelay:      5 * time.Second,       // after a failed push
		RequestTimeout:  60 * time.Second,      // a 32 MB batch over a lossy link
		CatchupTimeout:  5 * time.Second,       // peers answer in milliseconds when alive
		MaxBatch:        16 << 20,              // per push message; two in flight
	}
}

// LabSyncConfig returns timings suited to tests.
func LabSyncConfig() SyncConfig {
	c := DefaultSyncConfig()
	c.OnChangeTimeout = 5 * time.Second
	c.Period = time.Second
	c.Debounce = 10 * time.Millisecond
	c.RepairDelay = 100 * time.Millisecond
	c.RetryDelay = 200 * time.Millisecond
	c.RequestTimeout = 10 * time.Second
	c.CatchupTimeout = 2 * time.Second
	return c
}

type member struct {
	checksum      Digest
	gen           uint64
	known         bool
	lastSync      time.Time
	lastHeard     time.Time
	paths         []PathStatus
	lastErr       string
	onChange      []CommandStatus
	mismatchSince time.Time
	repairFailed  time.Time
}

type peerWorker struct {
	peer       string
	cancel     context.CancelFunc
	kick       chan struct{}
	needRepair bool
	busy       bool // a push or repair is under way
	pending    map[string]bool
	waiters    []chan error
}

// Syncer keeps the sync paths and the cluster: section identical on all
// members: the primary pushes, secondaries apply. See the package
// documentation for the protocol.
type Syncer struct {
	cfg   SyncConfig
	log   hclog.Logger
	store *Store
	now   func() time.Time
	tr    Transport

	scanMu sync.Mutex // serializes scans and writes of the tree

	// watchSince is when the file watcher started to follow every sync
	// path (unix ns; 0: no watcher), lastEvent the time of the last file
	// event or watcher error it saw, scannedFrom the start of the scan
	// whose result is the manifest (0: not from a scan). A manifest whose
	// scan started after the watcher did and after its last event is
	// current: repairPeer uses it without scanning the tree again.
	watchSince, lastEvent atomic.Int64
	scannedFrom           int64 // under mu

	// pub is the checksum and generation as of the last change, for
	// Checksum and Generation: the heartbeat sender reads them at every
	// interval and must never wait for mu (held across a state file's
	// fsync, which a busy disk makes last hundreds of milliseconds).
	pub atomic.Pointer[published]
	// noted holds, per peer, its last heartbeat note that agreed with the
	// published tree (*notedSum): NotePeerChecksum repeats it without mu.
	noted sync.Map

	mu         sync.Mutex
	manifest   Manifest
	checksum   Digest
	gen        uint64
	role       string
	primary    string
	peers      []string
	catchingUp bool
	catchupSeq uint64
	members    map[string]*member
	commands   map[string]*CommandStatus
	scanErr    string
	applyErr   string // the last apply of what the primary sent failed ("" ok)
	workers    map[string]*peerWorker
	runCtx     context.Context

	rescanCh chan struct{}
	applyQ   chan *syncMsg
	nextID   atomic.Uint64
	pendMu   sync.Mutex
	pending  map[uint64]pendingReq
	running  atomic.Bool
	// serving holds a slot per request being served (maxServing);
	// refused counts the messages dropped or refused.
	serving chan struct{}
	refused atomic.Uint64
	// grace is how long a message from a member that may be becoming
	// this node's primary waits for the role to show it (startingGrace;
	// the receive fuzz target sets 0).
	grace time.Duration
	// applying is set while a push is applied; a rescan asked for then
	// (by the watcher, seeing the push's own writes) waits for its end
	// (deferred), as the push rescans when it is done.
	applying, deferred atomic.Bool
}

// applyQLen bounds the pushes received and not yet applied: the primary
// has at most pushDepth (3) in flight per member, pushes from anyone else
// are refused before they are queued; a full queue makes the receiver
// wait (the channel's window then holds the sender back).
const applyQLen = 8

type pendingReq struct {
	peer   string
	ch     chan *syncMsg
	cancel context.CancelCauseFunc
}

// applyWorkers is how many files a secondary writes at once: one CPU
// fewer than Go runs goroutines on. Writing files is CPU work in the
// kernel that does not block; with every P busy writing, the channel's
// frame loop would only learn of arriving frames when the runtime polls
// the network for lack of other work, or from sysmon every 10 ms, and the
// transfer of the next push would stall on its window (measured: 15-35
// MB/s during a full sync with 8 writers on 2 CPUs).
func applyWorkers() int { return max(1, runtime.GOMAXPROCS(0)-1) }

// ErrPeerRestarted ends the requests to a member that restarted: it will
// never answer them.
var ErrPeerRestarted = errors.New("configsync: peer restarted")

// PeerRestarted tells the syncer that peer restarted (its heartbeat epoch
// went up before it was ever lost): requests waiting for the old process's
// answer fail at once instead of after RequestTimeout, and the primary
// repairs that member again.
func (s *Syncer) PeerRestarted(peer string) {
	s.pendMu.Lock()
	for _, p := range s.pending {
		if p.peer == peer {
			p.cancel(ErrPeerRestarted)
		}
	}
	s.pendMu.Unlock()
	s.noted.Delete(peer)
	s.mu.Lock()
	if w := s.workers[peer]; w != nil {
		w.needRepair = true
		kick(w.kick)
	}
	s.mu.Unlock()
	s.log.Info("member restarted; resynchronizing it", "peer", peer)
}

// NewSyncer validates cfg and takes the first scan of the tree.
func NewSyncer(cfg SyncConfig) (*Syncer, error) {
	d := DefaultSyncConfig()
	for _, p := range []struct{ v, d *time.Duration }{
		{&cfg.OnChangeTimeout, &d.OnChangeTimeout}, {&cfg.Period, &d.Period}, {&cfg.Debounce, &d.Debounce},
		{&cfg.RepairDelay, &d.RepairDelay}, {&cfg.RetryDelay, &d.RetryDelay},
		{&cfg.RequestTimeout, &d.RequestTimeout}, {&cfg.CatchupTimeout, &d.CatchupTimeout},
	} {
		if *p.v <= 0 {
			*p.v = *p.d
		}
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = d.MaxBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Self == "" {
		return nil, errors.New("configsync: SyncConfig.Self is empty")
	}
	if cfg.Transport == nil {
		return nil, errors.New("configsync: SyncConfig.Transport is nil")
	}
	if cfg.ClusterSection != nil && cfg.ApplyCluster == nil {
		return nil, errors.New("configsync: ClusterSection without ApplyCluster")
	}
	store, err := NewStore(cfg.Root, cfg.Paths, cfg.ClusterSection)
	if err != nil {
		return nil, err
	}
	onChange := map[string]string{}
	for p, c := range cfg.OnChange {
		cp := filepath.Clean(p)
		if !store.Covers(cp) {
			return nil, fmt.Errorf("configsync: on_change path %q is not a sync path", p)
		}
		onChange[cp] = c
	}
	cfg.OnChange = onChange
	s := &Syncer{
		cfg: cfg, log: cfg.Logger.Named("sync").With("node", cfg.Self), store: store, now: cfg.Now,
		tr: cfg.Transport, role: RoleStarting, members: map[string]*member{},
		commands: map[string]*CommandStatus{}, workers: map[string]*peerWorker{},
		rescanCh: make(chan struct{}, 1), applyQ: make(chan *syncMsg, applyQLen),
		pending: map[uint64]pendingReq{}, serving: make(chan struct{}, maxServing),
		grace: startingGrace,
	}
	s.loadState()
	if n, err := store.CleanTemp(); err != nil {
		s.log.Warn("cleaning leftover temporary files", "error", err)
	} else if n > 0 {
		s.log.Info("removed leftover temporary files of an interrupted write", "count", n)
	}
	s.rescan()
	return s, nil
}

// loadState reads the generation. A missing, unreadable or corrupt file
// is logged and the generation starts at 0 — the safe side: a new primary
// asks the members for a newer tree before it pushes — never a refusal to
// start.
func (s *Syncer) loadState() {
	if s.cfg.StateFile == "" {
		return
	}
	b, err := os.ReadFile(s.cfg.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		s.log.Error("cannot read the sync state file; starting from generation 0 (the primary's tree is pulled first)", "file", s.cfg.StateFile, "error", err)
		return
	}
	var st struct {
		Generation uint64 `json:"generation"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		s.log.Error("sync state file is corrupt; starting from generation 0 (it is rewritten)", "file", s.cfg.StateFile, "error", err)
		return
	}
	s.gen = st.Generation
	s.publishLocked()
}

// saveStateLocked persists the generation; s.mu is held.
func (s *Syncer) saveStateLocked() {
	if s.cfg.StateFile == "" {
		return
	}
	b, _ := json.Marshal(map[string]uint64{"generation": s.gen})
	if err := WriteFileAtomic(s.cfg.StateFile, b, 0o600, -1, -1); err != nil {
		s.log.Warn("cannot save sync state", "file", s.cfg.StateFile, "error", err)
	}
}

// published is what Checksum and Generation return.
type published struct {
	sum Digest
	gen uint64
}

// publishLocked makes the current checksum and generation what Checksum
// and Generation return; s.mu is held.
func (s *Syncer) publishLocked() { s.pub.Store(&published{sum: s.checksum, gen: s.gen}) }

// Checksum returns the whole-tree checksum of this node, cluster: section
// included. The agent puts it in every heartbeat. It never blocks.
func (s *Syncer) Checksum() [32]byte {
	if p := s.pub.Load(); p != nil {
		return p.sum
	}
	return [32]byte{}
}

// Generation returns the tree generation: the primary increments it on
// every change it makes; secondaries take the primary's. It never blocks.
func (s *Syncer) Generation() uint64 {
	if p := s.pub.Load(); p != nil {
		return p.gen
	}
	return 0
}

// SetRole sets this node's role. As primary (primary true), peers are the
// members to keep in sync; a node that was not primary before first asks
// them for their generation and pulls a newer tree if one exists. As
// secondary, peers[0] is the current primary, the only node whose pushes
// are accepted (empty: none).
func (s *Syncer) SetRole(primary bool, peers []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.role
	if primary {
		var ps []string
		for _, p := range peers {
			if p != "" && p != s.cfg.Self && !slices.Contains(ps, p) {
				ps = append(ps, p)
			}
		}
		slices.Sort(ps)
		s.role, s.primary, s.peers = RolePrimary, s.cfg.Self, ps
		if was != RolePrimary {
			s.catchingUp = true
			s.catchupSeq++
			s.log.Info("sync role change", "role", RolePrimary, "peers", ps, "reason", "elected primary; checking members for a newer tree first")
			if s.runCtx != nil {
				go s.catchUp(s.runCtx)
			}
		}
	} else {
		p := ""
		if len(peers) > 0 {
			p = peers[0]
		}
		if was != RoleSecondary || s.primary != p {
			s.log.Info("sync role change", "role", RoleSecondary, "primary", p)
		}
		s.role, s.primary, s.peers, s.catchingUp = RoleSecondary, p, nil, false
	}
	s.syncWorkersLocked()
}

// syncWorkersLocked starts a push worker per peer while primary and stops
// the others.
func (s *Syncer) syncWorkersLocked() {
	for p, w := range s.workers {
		if s.role != RolePrimary || !slices.Contains(s.peers, p) || s.runCtx == nil {
			w.cancel()
			for _, c := range w.waiters {
				c <- errors.New("configsync: no longer primary for " + p)
			}
			delete(s.workers, p)
		}
	}
	if s.role != RolePrimary || s.runCtx == nil {
		return
	}
	for _, p := range s.peers {
		if s.workers[p] != nil {
			continue
		}
		ctx, cancel := context.WithCancel(s.runCtx)
		w := &peerWorker{peer: p, cancel: cancel, kick: make(chan struct{}, 1), needRepair: true, pending: map[string]bool{}}
		s.workers[p] = w
		go s.work(ctx, w)
		kick(w.kick)
	}
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Rescan makes the syncer look at the tree and the cluster section now,
// for example after the agent reloaded its configuration.
func (s *Syncer) Rescan() { kick(s.rescanCh) }

// NotePeerChecksum records the tree checksum and generation a member
// announced in its heartbeat. On the primary, a mismatch that persists for
// RepairDelay triggers a repair of that member.
//
// It is called for every heartbeat, by the agent's run goroutine: a note
// that repeats, within notedFor, the last one of that peer that agreed
// with the same published tree returns without taking the mutex (it would
// only move lastHeard: agreeing notes clear mismatchSince, and only
// disagreeing ones set it).
func (s *Syncer) NotePeerChecksum(peer string, sum [32]byte, gen uint64) {
	now := s.now()
	own := s.pub.Load()
	if v, ok := s.noted.Load(peer); ok {
		if n := v.(*notedSum); n.sum == sum && n.gen == gen && n.own == own && now.Sub(n.at) < notedFor {
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.member(peer)
	m.checksum, m.gen, m.known, m.lastHeard = sum, gen, true, now
	if Digest(sum) == s.checksum && gen <= s.gen {
		s.noted.Store(peer, &notedSum{sum: sum, gen: gen, own: s.pub.Load(), at: now})
	} else {
		s.noted.Delete(peer)
	}
	if s.role != RolePrimary || s.catchingUp || s.workers[peer] == nil {
		m.mismatchSince = time.Time{}
		return
	}
	if Digest(sum) == s.checksum && gen <= s.gen {
		m.mismatchSince = time.Time{}
		return
	}
	if !m.repairFailed.IsZero() && time.Since(m.repairFailed) < s.cfg.Period {
		return // the last repair failed: leave it to the periodic compare
	}
	if m.mismatchSince.IsZero() {
		m.mismatchSince = time.Now()
		time.AfterFunc(s.cfg.RepairDelay, func() { s.checkMismatch(peer) })
	}
}

// notedFor is how long NotePeerChecksum's fast path repeats a note: the
// staleness of a member's lastHeard in status.
const notedFor = time.Second

// notedSum is a peer's last agreeing note.
type notedSum struct {
	sum [32]byte
	gen uint64
	own *published // the published tree it agreed with
	at  time.Time
}

func (s *Syncer) checkMismatch(peer string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.member(peer)
	if m.mismatchSince.IsZero() || time.Since(m.mismatchSince) < s.cfg.RepairDelay {
		return
	}
	m.mismatchSince = time.Time{}
	if w := s.workers[peer]; w != nil && w.busy {
		// A transfer to it is under way: its heartbeats show the tree
		// before it; the transfer's ack brings the tree after it.
		return
	}
	if w := s.workers[peer]; w != nil && s.role == RolePrimary {
		s.log.Info("member reports a different tree, repairing", "peer", peer, "peer_checksum", m.checksum, "checksum", s.checksum)
		w.needRepair = true
		kick(w.kick)
	}
}

// maxTrackedMembers bounds the members the syncer keeps state for
// (s.members, s.noted): twice the largest cluster (16 members in mode
// fgsp), so that members that left are still shown for a while, while
// heartbeats naming ever new members cannot grow it (TestMembersBounded,
// TestSixteenMembersTracked).
const maxTrackedMembers = 2 * cluster.MaxMembers

// member returns the state of member name, created if new; s.mu is held.
// Past maxTrackedMembers, the member heard least recently that is neither
// the primary nor a peer is forgotten.
func (s *Syncer) member(name string) *member {
	m := s.members[name]
	if m == nil {
		if len(s.members) >= maxTrackedMembers {
			victim := ""
			var oldest time.Time
			for n, o := range s.members {
				if n == s.primary || slices.Contains(s.peers, n) {
					continue
				}
				if victim == "" || o.lastHeard.Before(oldest) {
					victim, oldest = n, o.lastHeard
				}
			}
			if victim != "" {
				delete(s.members, victim)
				s.noted.Delete(victim)
			}
		}
		m = &member{}
		s.members[name] = m
	}
	return m
}

// Run watches the tree and serves the sync protocol until ctx is done.
func (s *Syncer) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("configsync: Syncer.Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()

	s.mu.Lock()
	s.runCtx = ctx
	s.syncWorkersLocked()
	if s.role == RolePrimary && s.catchingUp {
		go s.catchUp(ctx)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.runCtx = nil
		s.syncWorkersLocked()
		s.mu.Unlock()
	}()

	wg.Add(3)
	go func() { defer wg.Done(); s.watch(ctx) }()
	go func() { defer wg.Done(); s.recvLoop(ctx) }()
	go func() { defer wg.Done(); s.applyLoop(ctx) }()

	tick := time.NewTicker(s.cfg.Period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.rescanCh:
			if s.applying.Load() {
				s.deferred.Store(true)
				continue
			}
			s.rescan()
		case <-tick.C:
			s.rescan()
			s.mu.Lock()
			for _, w := range s.workers {
				w.needRepair = true
				kick(w.kick)
			}
			s.mu.Unlock()
		}
	}
}

// manifestCurrent reports whether the manifest is known to match the
// tree without a scan: it comes from a scan that started after the file
// watcher followed every sync path and after the last event it saw. A
// change the watcher has not delivered yet was made after that scan
// started, at the same time as the caller's question; its event rescans.
func (s *Syncer) manifestCurrent() bool {
	since := s.watchSince.Load()
	s.mu.Lock()
	from := s.scannedFrom
	s.mu.Unlock()
	return since != 0 && from > since && from > s.lastEvent.Load()
}

// rescan scans the tree; on the primary a change increments the generation
// and is pushed to every member at once.
func (s *Syncer) rescan() {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	s.rescanLocked(false)
}

// rescanLocked scans with scanMu held. quiet suppresses the generation bump
// (the caller just applied a tree from elsewhere).
func (s *Syncer) rescanLocked(quiet bool) {
	start := time.Now().UnixNano()
	m, err := s.store.Scan()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.scanErr != err.Error() {
			s.log.Error("scanning sync paths", "error", err)
		}
		s.scanErr = err.Error()
		return
	}
	s.scanErr = ""
	if s.role == RolePrimary && s.catchingUp && !quiet {
		return // catchUp rescans when it is done
	}
	changes := Diff(s.manifest, m)
	s.manifest, s.checksum, s.scannedFrom = m, m.Checksum(), start
	s.publishLocked()
	if len(changes) == 0 || quiet {
		return
	}
	paths := make([]string, len(changes))
	for i, c := range changes {
		paths[i] = c.Path
	}
	switch s.role {
	case RolePrimary:
		s.gen++
		s.publishLocked()
		s.saveStateLocked()
		s.log.Info("local change, pushing", "generation", s.gen, "paths", paths, "checksum", s.checksum)
		for _, w := range s.workers {
			for _, p := range paths {
				w.pending[p] = true
			}
			kick(w.kick)
		}
	case RoleSecondary:
		s.log.Warn("local change on a secondary: drift, the primary will overwrite it", "paths", paths, "primary", s.primary)
	default:
		s.log.Info("local change", "paths", paths)
	}
}
