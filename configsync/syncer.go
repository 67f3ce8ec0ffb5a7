package configsync

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
)

// Transport is what the Syncer needs from the control channel; *Channel
// implements it.
type Transport interface {
	// Send delivers msg to peer reliably and in order, returning when it
	// is acknowledged.
	Send(ctx context.Context, peer string, msg []byte) error
	// Recv yields the messages of all peers; it is closed on shutdown.
	Recv() <-chan Message
}

var _ Transport = (*Channel)(nil)

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
	// Debounce is how long the watcher waits for more file events before
	// it rescans.
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
	// Transport is the control channel (a *Channel in the daemon).
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
		Debounce:        20 * time.Millisecond, // coalesce an editor's write+rename
		RepairDelay:     2 * time.Second,       // ten heartbeats of persistent mismatch
		RetryDelay:      5 * time.Second,       // after a failed push
		RequestTimeout:  60 * time.Second,      // a 32 MB batch over a lossy link
		CatchupTimeout:  5 * time.Second,       // peers answer in milliseconds when alive
		MaxBatch:        32 << 20,              // per push message
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

// Role names used in SyncStatus.
const (
	RoleStarting  = "starting"
	RolePrimary   = "primary"
	RoleSecondary = "secondary"
)

// CommandStatus is the last run of an on_change command (or of
// ApplyCluster, shown as command "ApplyCluster").
type CommandStatus struct {
	Command    string        `json:"command"`
	Paths      []string      `json:"paths"`
	LastRun    time.Time     `json:"last_run"`
	Duration   time.Duration `json:"duration_ns"`
	ExitCode   int           `json:"exit_code"`
	OK         bool          `json:"ok"`
	Error      string        `json:"error,omitempty"`
	StderrTail string        `json:"stderr_tail,omitempty"`
	// contentKey identifies the content the command ran for: a failed
	// command is not run again for the same content.
	contentKey Digest
}

// PathStatus is the state of one synchronized path.
type PathStatus struct {
	Path   string    `json:"path"`
	Kind   EntryKind `json:"kind"`
	Mode   string    `json:"mode,omitempty"`
	UID    int       `json:"uid"`
	GID    int       `json:"gid"`
	Size   int64     `json:"size"`
	SHA256 Digest    `json:"sha256"`
}

// MemberStatus is what this node knows of one member's configuration.
type MemberStatus struct {
	Node       string `json:"node"`
	Self       bool   `json:"self,omitempty"`
	Checksum   Digest `json:"checksum"`
	Generation uint64 `json:"generation"`
	// InSync: the member's checksum equals this node's.
	InSync    bool      `json:"in_sync"`
	LastSync  time.Time `json:"last_sync,omitzero"`
	LastHeard time.Time `json:"last_heard,omitzero"`
	// Paths as of the last manifest exchange (own paths for Self).
	Paths     []PathStatus `json:"paths,omitempty"`
	LastError string       `json:"last_error,omitempty"`
	// OnChange lists the member's failing on_change commands.
	OnChange []CommandStatus `json:"on_change,omitempty"`
}

// SyncStatus is the configuration-sync state shown by `agentctl ha status`
// and `agentctl ha checksum`.
type SyncStatus struct {
	Node       string `json:"node"`
	Role       string `json:"role"`
	Primary    string `json:"primary,omitempty"`
	Checksum   Digest `json:"checksum"`
	Generation uint64 `json:"generation"`
	// InSync: every known member has this node's checksum.
	InSync        bool   `json:"in_sync"`
	LastScanError string `json:"last_scan_error,omitempty"`
	// LastApplyError: applying what the primary sent failed last time.
	LastApplyError string         `json:"last_apply_error,omitempty"`
	Members        []MemberStatus `json:"members"`
	// OnChange lists this node's on_change runs.
	OnChange []CommandStatus `json:"on_change,omitempty"`
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

	// pub is the checksum and generation as of the last change, for
	// Checksum and Generation: the heartbeat sender reads them at every
	// interval and must never wait for mu (held across a state file's
	// fsync, which a busy disk makes last hundreds of milliseconds).
	pub atomic.Pointer[published]

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
}

type pendingReq struct {
	peer   string
	ch     chan *syncMsg
	cancel context.CancelCauseFunc
}

// applyWorkers is how many files a secondary writes at once.
const applyWorkers = 8

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
		rescanCh: make(chan struct{}, 1), applyQ: make(chan *syncMsg, 64),
		pending: map[uint64]pendingReq{},
	}
	if err := s.loadState(); err != nil {
		return nil, err
	}
	if n, err := store.CleanTemp(); err != nil {
		s.log.Warn("cleaning leftover temporary files", "error", err)
	} else if n > 0 {
		s.log.Info("removed leftover temporary files of an interrupted write", "count", n)
	}
	s.rescan()
	return s, nil
}

func (s *Syncer) loadState() error {
	if s.cfg.StateFile == "" {
		return nil
	}
	b, err := os.ReadFile(s.cfg.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("configsync: reading state: %w", err)
	}
	var st struct {
		Generation uint64 `json:"generation"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		s.log.Warn("ignoring corrupt state file", "file", s.cfg.StateFile, "error", err)
		return nil
	}
	s.gen = st.Generation
	s.publishLocked()
	return nil
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
func (s *Syncer) NotePeerChecksum(peer string, sum [32]byte, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.member(peer)
	m.checksum, m.gen, m.known, m.lastHeard = sum, gen, true, s.now()
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

func (s *Syncer) checkMismatch(peer string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.member(peer)
	if m.mismatchSince.IsZero() || time.Since(m.mismatchSince) < s.cfg.RepairDelay {
		return
	}
	m.mismatchSince = time.Time{}
	if w := s.workers[peer]; w != nil && s.role == RolePrimary {
		s.log.Info("member reports a different tree, repairing", "peer", peer, "peer_checksum", m.checksum, "checksum", s.checksum)
		w.needRepair = true
		kick(w.kick)
	}
}

func (s *Syncer) member(name string) *member {
	m := s.members[name]
	if m == nil {
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
	s.manifest, s.checksum = m, m.Checksum()
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

// work is the per-peer push worker of the primary: pushes to one peer are
// serialized so they apply in order.
func (s *Syncer) work(ctx context.Context, w *peerWorker) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		}
		for ctx.Err() == nil {
			s.mu.Lock()
			if s.role != RolePrimary || s.catchingUp || (!w.needRepair && len(w.pending) == 0) {
				s.mu.Unlock()
				break
			}
			repair, waiters := w.needRepair, w.waiters
			paths := make([]string, 0, len(w.pending))
			for p := range w.pending {
				paths = append(paths, p)
			}
			w.needRepair, w.pending, w.waiters = false, map[string]bool{}, nil
			s.mu.Unlock()

			var err error
			if repair {
				err = s.repairPeer(ctx, w.peer)
			} else {
				slices.Sort(paths)
				err = s.pushPaths(ctx, w.peer, paths, false)
			}
			for _, c := range waiters {
				c <- err
			}
			s.mu.Lock()
			m := s.member(w.peer)
			if err != nil {
				m.lastErr = err.Error()
				m.repairFailed = time.Now()
				var re *remoteError
				if errors.As(err, &re) {
					// The member could not apply something: retrying at
					// once would fail the same way; the periodic compare
					// tries again.
					s.log.Warn("member failed to apply the sync", "peer", w.peer, "error", err)
				} else {
					s.log.Warn("sync to member failed, will retry", "peer", w.peer, "error", err, "retry_in", s.cfg.RetryDelay)
					w.needRepair = true
					time.AfterFunc(s.cfg.RetryDelay, func() { kick(w.kick) })
				}
				s.mu.Unlock()
				break
			}
			m.lastErr, m.repairFailed = "", time.Time{}
			s.mu.Unlock()
		}
	}
}

// repairPeer compares manifests with peer and pushes the paths that differ,
// or pulls the peer's tree if its generation is newer than ours.
func (s *Syncer) repairPeer(ctx context.Context, peer string) error {
	resp, err := s.request(ctx, peer, msgManifestReq, &syncHeader{}, nil)
	if err != nil {
		return fmt.Errorf("manifest of %s: %w", peer, err)
	}
	theirs := NewManifest(resp.hdr.Entries)
	s.mu.Lock()
	gen := s.gen
	s.notePeerManifestLocked(peer, resp, theirs)
	s.mu.Unlock()
	if resp.hdr.Gen > gen {
		s.log.Warn("member has a newer tree than the primary, pulling it", "peer", peer, "peer_generation", resp.hdr.Gen, "generation", gen)
		if err := s.pullFrom(ctx, peer, theirs, resp.hdr.Gen); err != nil {
			return err
		}
		s.mu.Lock()
		for p, w := range s.workers {
			if p != peer {
				w.needRepair = true
				kick(w.kick)
			}
		}
		s.mu.Unlock()
		return nil
	}
	s.rescan()
	s.mu.Lock()
	mine := s.manifest
	s.mu.Unlock()
	changes := Diff(theirs, mine)
	if len(changes) == 0 {
		s.mu.Lock()
		m := s.member(peer)
		m.lastSync = s.now()
		if resp.hdr.Gen != s.gen {
			s.mu.Unlock()
			// Same tree, other generation label: align it with an empty push.
			return s.pushPaths(ctx, peer, nil, true)
		}
		s.mu.Unlock()
		return nil
	}
	paths := make([]string, len(changes))
	for i, c := range changes {
		paths[i] = c.Path
	}
	s.log.Info("repairing member drift", "peer", peer, "paths", paths)
	return s.pushPaths(ctx, peer, paths, true)
}

func (s *Syncer) notePeerManifestLocked(peer string, resp *syncMsg, theirs Manifest) {
	m := s.member(peer)
	m.known = true
	m.gen = resp.hdr.Gen
	if resp.hdr.Checksum != nil {
		m.checksum = *resp.hdr.Checksum
	} else {
		m.checksum = theirs.Checksum()
	}
	m.paths = pathStatuses(theirs)
}

// pushPaths sends the current state of paths (content, or deletion) to
// peer in batches of at most MaxBatch content bytes.
func (s *Syncer) pushPaths(ctx context.Context, peer string, paths []string, repair bool) error {
	var (
		hdr    syncHeader
		blob   []byte
		errs   []error
		cmdErr []CommandStatus
	)
	flush := func(force bool) error {
		if !force && len(hdr.Entries) == 0 && len(hdr.Deleted) == 0 {
			return nil
		}
		s.mu.Lock()
		hdr.Gen, hdr.Repair = s.gen, repair
		sum := s.checksum
		hdr.Checksum = &sum
		s.mu.Unlock()
		resp, err := s.request(ctx, peer, msgPush, &hdr, blob)
		hdr, blob = syncHeader{}, nil
		if err != nil {
			return fmt.Errorf("push to %s: %w", peer, err)
		}
		s.mu.Lock()
		m := s.member(peer)
		m.known, m.gen = true, resp.hdr.Gen
		if resp.hdr.Checksum != nil {
			m.checksum = *resp.hdr.Checksum
		}
		m.lastSync = s.now()
		s.mu.Unlock()
		cmdErr = append(cmdErr, resp.hdr.Commands...)
		if resp.hdr.Error != "" {
			errs = append(errs, &remoteError{peer: peer, msg: resp.hdr.Error})
		}
		return nil
	}
	for _, p := range paths {
		e, content, err := s.store.Load(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			hdr.Deleted = append(hdr.Deleted, p)
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		}
		if len(blob) > 0 && len(blob)+len(content) > s.cfg.MaxBatch {
			if err := flush(false); err != nil {
				return err
			}
		}
		hdr.Entries = append(hdr.Entries, e)
		blob = append(blob, content...)
	}
	if err := flush(len(paths) == 0); err != nil {
		return err
	}
	s.mu.Lock()
	m := s.member(peer)
	var failing []CommandStatus
	for _, c := range cmdErr {
		if !c.OK {
			failing = append(failing, c)
		}
	}
	if len(cmdErr) > 0 {
		m.onChange = failing
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

// catchUp runs when this node becomes primary: before pushing anything it
// asks every member for its generation and pulls the newest tree if it is
// newer than its own.
func (s *Syncer) catchUp(ctx context.Context) {
	s.mu.Lock()
	peers := slices.Clone(s.peers)
	gen, seq := s.gen, s.catchupSeq
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if seq != s.catchupSeq || s.role != RolePrimary {
			s.mu.Unlock()
			return // superseded by a later role change
		}
		s.catchingUp = false
		for _, w := range s.workers {
			w.needRepair = true
			kick(w.kick)
		}
		s.mu.Unlock()
		s.rescan()
	}()
	cctx, cancel := context.WithTimeout(ctx, s.cfg.CatchupTimeout)
	defer cancel()
	type answer struct {
		peer string
		gen  uint64
	}
	answers := make(chan answer, len(peers))
	for _, p := range peers {
		go func() {
			resp, err := s.request(cctx, p, msgGenReq, &syncHeader{}, nil)
			if err != nil {
				s.log.Info("member did not tell its generation", "peer", p, "error", err)
				answers <- answer{peer: p}
				return
			}
			answers <- answer{peer: p, gen: resp.hdr.Gen}
		}()
	}
	best := answer{gen: gen}
	for range peers {
		a := <-answers
		if a.gen > best.gen {
			best = a
		}
	}
	if best.peer == "" {
		s.log.Info("no member has a newer tree", "generation", gen)
		return
	}
	s.log.Info("member has a newer tree, pulling it before pushing", "peer", best.peer, "peer_generation", best.gen, "generation", gen)
	resp, err := s.request(ctx, best.peer, msgManifestReq, &syncHeader{}, nil)
	if err != nil {
		s.log.Error("cannot fetch the newer tree; keeping ours", "peer", best.peer, "error", err)
		return
	}
	if err := s.pullFrom(ctx, best.peer, NewManifest(resp.hdr.Entries), resp.hdr.Gen); err != nil {
		s.log.Error("pulling the newer tree failed", "peer", best.peer, "error", err)
	}
}

// pullFrom makes the local tree equal to theirs (peer's manifest), fetching
// the content that differs, and adopts generation gen.
func (s *Syncer) pullFrom(ctx context.Context, peer string, theirs Manifest, gen uint64) error {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	s.rescanLocked(true)
	s.mu.Lock()
	mine := s.manifest
	s.mu.Unlock()
	changes := Diff(mine, theirs)
	var fetch, deleted []string
	for _, c := range changes {
		if c.Op == ChangeDeleted {
			deleted = append(deleted, c.Path)
		} else {
			fetch = append(fetch, c.Path)
		}
	}
	var entries []Entry
	var contents [][]byte
	if len(fetch) > 0 {
		resp, err := s.request(ctx, peer, msgPullReq, &syncHeader{Paths: fetch}, nil)
		if err != nil {
			return fmt.Errorf("pull from %s: %w", peer, err)
		}
		entries, contents = resp.hdr.Entries, resp.contents()
	}
	_, errs := s.applyLocked(entries, contents, deleted, true)
	s.noteApply(errs)
	s.rescanLocked(true)
	s.mu.Lock()
	if len(errs) == 0 && gen > s.gen {
		s.gen = gen
		s.publishLocked()
		s.saveStateLocked()
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

// SyncNow is `agentctl ha synchronize`: on the primary it compares
// manifests with every member and repairs them now; on a secondary it asks
// the primary to do so for this node. It returns when done.
func (s *Syncer) SyncNow(ctx context.Context) error {
	s.mu.Lock()
	role, primary := s.role, s.primary
	s.mu.Unlock()
	switch role {
	case RolePrimary:
		s.rescan()
		s.mu.Lock()
		var chans []chan error
		for _, w := range s.workers {
			c := make(chan error, 1)
			w.waiters = append(w.waiters, c)
			w.needRepair = true
			kick(w.kick)
			chans = append(chans, c)
		}
		s.mu.Unlock()
		var errs []error
		for _, c := range chans {
			select {
			case err := <-c:
				errs = append(errs, err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return errors.Join(errs...)
	case RoleSecondary:
		if primary == "" {
			return errors.New("configsync: no primary known")
		}
		resp, err := s.request(ctx, primary, msgSyncReq, &syncHeader{}, nil)
		if err != nil {
			return err
		}
		if resp.hdr.Error != "" {
			return errors.New(resp.hdr.Error)
		}
		return nil
	}
	return errors.New("configsync: cannot synchronize before a role is set")
}

// request sends a request and waits for the reply with the same id.
func (s *Syncer) request(ctx context.Context, peer string, kind msgKind, h *syncHeader, blob []byte) (*syncMsg, error) {
	h.ID = s.nextID.Add(1)
	ch := make(chan *syncMsg, 1)
	ctx, cancelCause := context.WithCancelCause(ctx)
	defer cancelCause(nil)
	s.pendMu.Lock()
	s.pending[h.ID] = pendingReq{peer: peer, ch: ch, cancel: cancelCause}
	s.pendMu.Unlock()
	defer func() {
		s.pendMu.Lock()
		delete(s.pending, h.ID)
		s.pendMu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	b, err := encodeSyncMsg(kind, h, blob)
	if err != nil {
		return nil, err
	}
	if err := s.tr.Send(ctx, peer, b); err != nil {
		return nil, err
	}
	select {
	case m := <-ch:
		return m, nil
	case <-ctx.Done():
		if cause := context.Cause(ctx); errors.Is(cause, ErrPeerRestarted) {
			return nil, fmt.Errorf("waiting for %s reply: %w", kind, cause)
		}
		return nil, fmt.Errorf("waiting for %s reply: %w", kind, ctx.Err())
	}
}

// reply sends a response in the background.
func (s *Syncer) reply(ctx context.Context, peer string, kind msgKind, h *syncHeader, blob []byte) {
	b, err := encodeSyncMsg(kind, h, blob)
	if err != nil {
		s.log.Error("encoding reply", "kind", kind, "error", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	if err := s.tr.Send(ctx, peer, b); err != nil {
		s.log.Warn("sending reply failed", "peer", peer, "kind", kind, "error", err)
	}
}

func (s *Syncer) recvLoop(ctx context.Context) {
	for {
		var msg Message
		var ok bool
		select {
		case <-ctx.Done():
			return
		case msg, ok = <-s.tr.Recv():
			if !ok {
				return
			}
		}
		m, err := decodeSyncMsg(msg.From, msg.Data)
		if err != nil {
			s.log.Warn("dropping undecodable sync message", "peer", msg.From, "error", err)
			continue
		}
		if m.kind.isResponse() {
			s.pendMu.Lock()
			p, ok := s.pending[m.hdr.ID]
			s.pendMu.Unlock()
			if ok && p.peer == m.from {
				p.ch <- m
			}
			continue
		}
		switch m.kind {
		case msgPush:
			select {
			case s.applyQ <- m:
			case <-ctx.Done():
				return
			}
		default:
			go s.serve(ctx, m)
		}
	}
}

// serve answers the read-only requests.
func (s *Syncer) serve(ctx context.Context, m *syncMsg) {
	switch m.kind {
	case msgGenReq:
		s.mu.Lock()
		sum := s.checksum
		h := syncHeader{ID: m.hdr.ID, Gen: s.gen, Checksum: &sum}
		s.mu.Unlock()
		s.reply(ctx, m.from, msgGenResp, &h, nil)
	case msgManifestReq:
		s.rescan()
		s.mu.Lock()
		sum := s.checksum
		h := syncHeader{ID: m.hdr.ID, Gen: s.gen, Checksum: &sum, Entries: s.manifest.Entries}
		s.mu.Unlock()
		s.reply(ctx, m.from, msgManifestResp, &h, nil)
	case msgPullReq:
		h := syncHeader{ID: m.hdr.ID}
		var blob []byte
		var errs []string
		for _, p := range m.hdr.Paths {
			e, content, err := s.store.Load(p)
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, err.Error())
				}
				continue
			}
			h.Entries = append(h.Entries, e)
			blob = append(blob, content...)
		}
		h.Error = strings.Join(errs, "; ")
		s.mu.Lock()
		sum := s.checksum
		h.Gen, h.Checksum = s.gen, &sum
		s.mu.Unlock()
		s.reply(ctx, m.from, msgPullResp, &h, blob)
	case msgSyncReq:
		s.mu.Lock()
		w := s.workers[m.from]
		var c chan error
		if w != nil && s.role == RolePrimary {
			c = make(chan error, 1)
			w.waiters = append(w.waiters, c)
			w.needRepair = true
			kick(w.kick)
		}
		s.mu.Unlock()
		h := syncHeader{ID: m.hdr.ID}
		if c == nil {
			h.Error = fmt.Sprintf("%s is not the primary of %s", s.cfg.Self, m.from)
		} else {
			select {
			case err := <-c:
				if err != nil {
					h.Error = err.Error()
				}
			case <-ctx.Done():
				return
			}
		}
		s.reply(ctx, m.from, msgSyncResp, &h, nil)
	}
}

// applyLoop applies pushes one at a time, in arrival order.
func (s *Syncer) applyLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-s.applyQ:
			s.applyPush(ctx, m)
		}
	}
}

func (s *Syncer) applyPush(ctx context.Context, m *syncMsg) {
	s.mu.Lock()
	role, primary := s.role, s.primary
	s.mu.Unlock()
	ack := syncHeader{ID: m.hdr.ID}
	if role != RoleSecondary || primary != m.from {
		s.log.Warn("rejecting push from a node that is not our primary", "peer", m.from, "role", role, "primary", primary)
		ack.Error = fmt.Sprintf("%s does not accept pushes from %s (role %s, primary %q)", s.cfg.Self, m.from, role, primary)
	} else {
		s.scanMu.Lock()
		var drift []string
		if m.hdr.Repair {
			for _, e := range m.hdr.Entries {
				if _, err := os.Lstat(s.store.fsPath(e.Path)); err == nil && e.Kind != KindCluster {
					s.log.Warn("overwriting local drift", "path", e.Path, "primary", m.from)
					drift = append(drift, e.Path)
				}
			}
			for _, p := range m.hdr.Deleted {
				s.log.Warn("removing local drift", "path", p, "primary", m.from)
				drift = append(drift, p)
			}
		}
		if len(drift) > 0 {
			s.event("drift", "local edits overwritten by the primary %s: %s", m.from, strings.Join(drift, " "))
		}
		ran, errs := s.applyLocked(m.hdr.Entries, m.contents(), m.hdr.Deleted, true)
		s.noteApply(errs)
		s.rescanLocked(true)
		s.mu.Lock()
		if len(errs) == 0 {
			// Only a tree that is all here takes the primary's generation
			// (as in pullFrom): a node that could not write the files must
			// not claim them, or it would win the generation rule with the
			// old ones when it becomes primary.
			s.gen = m.hdr.Gen
			s.publishLocked()
			s.saveStateLocked()
		}
		pm := s.member(m.from)
		pm.known, pm.gen, pm.lastSync = true, m.hdr.Gen, s.now()
		if m.hdr.Checksum != nil {
			pm.checksum = *m.hdr.Checksum
		}
		sum := s.checksum
		ack.Gen, ack.Checksum = s.gen, &sum
		s.mu.Unlock()
		s.scanMu.Unlock()
		ack.Commands = ran
		if len(errs) > 0 {
			ack.Error = errors.Join(errs...).Error()
		}
	}
	s.reply(ctx, m.from, msgPushAck, &ack, nil)
}

// noteApply remembers whether applying what the primary sent failed (a
// full disk, a read-only file system): shown in status until an apply
// succeeds, and in the history when it starts and stops failing.
func (s *Syncer) noteApply(errs []error) {
	cur := ""
	if len(errs) > 0 {
		cur = errors.Join(errs...).Error()
	}
	s.mu.Lock()
	prev := s.applyErr
	s.applyErr = cur
	s.mu.Unlock()
	switch {
	case cur != "" && prev == "":
		s.event("apply", "cannot apply the primary's files: %s", cur)
	case cur == "" && prev != "":
		s.event("apply", "applying the primary's files works again")
	}
}

// applyLocked writes entries and deletions atomically, then runs the
// on_change commands of what changed (if runCommands). scanMu is held. It
// returns the command runs and the errors.
func (s *Syncer) applyLocked(entries []Entry, contents [][]byte, deleted []string, runCommands bool) ([]CommandStatus, []error) {
	var errs []error
	changed := map[string]Digest{} // path → new digest (zero: deleted)
	order := make([]int, len(entries))
	for i := range order {
		order[i] = i
	}
	// Directories before what they contain.
	slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(entries[a].Path, entries[b].Path) })
	var cluster []byte
	haveCluster := false
	s.store.BeginBatch()
	// Directories, symlinks and the cluster section in path order (a
	// directory before what it contains), then the regular files in
	// parallel: each is still written atomically, and concurrent fsyncs let
	// the file system commit them together instead of one by one.
	var files []int
	applied := make([]bool, len(entries))
	applyErr := make([]error, len(entries))
	for _, i := range order {
		e := entries[i]
		if e.Kind == KindCluster || e.Path == ClusterPath {
			if e.Kind != KindCluster || e.Path != ClusterPath || sha256.Sum256(contents[i]) != e.SHA256 {
				errs = append(errs, errors.New("configsync: malformed cluster section entry"))
				continue
			}
			cluster, haveCluster = contents[i], true
			continue
		}
		if e.Kind == KindFile {
			files = append(files, i)
			continue
		}
		applied[i], applyErr[i] = s.store.Apply(e, contents[i])
	}
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for w := 0; w < min(applyWorkers, len(files)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1)) - 1
				if k >= len(files) {
					return
				}
				i := files[k]
				applied[i], applyErr[i] = s.store.Apply(entries[i], contents[i])
			}
		}()
	}
	wg.Wait()
	for _, i := range order {
		e := entries[i]
		if err := applyErr[i]; err != nil {
			s.log.Error("applying synchronized path failed", "path", e.Path, "error", err)
			errs = append(errs, err)
			continue
		}
		if applied[i] {
			s.log.Debug("applied synchronized path", "path", e.Path, "kind", e.Kind, "sha256", e.SHA256)
			changed[e.Path] = e.SHA256
		}
	}
	if err := s.store.EndBatch(); err != nil {
		errs = append(errs, err)
	}
	if len(changed) > 0 {
		s.log.Info("applied synchronized paths", "count", len(changed))
	}
	dels := slices.Clone(deleted)
	slices.Sort(dels)
	slices.Reverse(dels) // contents before their directory
	for _, p := range dels {
		ch, err := s.store.Remove(p)
		if err != nil {
			s.log.Error("removing synchronized path failed", "path", p, "error", err)
			errs = append(errs, err)
			continue
		}
		if ch {
			s.log.Info("removed synchronized path", "path", p)
			changed[p] = Digest{}
		}
	}
	var ran []CommandStatus
	if haveCluster && s.cfg.ApplyCluster != nil {
		var cur []byte
		err := errors.New("no local cluster section")
		if s.store.cluster != nil {
			cur, err = s.store.cluster()
		}
		if err != nil || sha256.Sum256(cur) != sha256.Sum256(cluster) {
			start := s.now()
			err := s.cfg.ApplyCluster(cluster)
			st := CommandStatus{Command: "ApplyCluster", Paths: []string{ClusterPath}, LastRun: start,
				Duration: s.now().Sub(start), OK: err == nil, contentKey: sha256.Sum256(cluster)}
			if err != nil {
				st.Error = err.Error()
				st.ExitCode = -1
				errs = append(errs, fmt.Errorf("applying cluster section: %w", err))
				s.log.Error("applying the cluster section failed", "error", err)
			} else {
				s.log.Info("applied the cluster section")
			}
			s.recordCommand(st)
			ran = append(ran, st)
		}
	}
	if runCommands {
		ran = append(ran, s.runOnChange(changed)...)
	}
	return ran, errs
}

// commandFor returns the on_change command of path p: its own, or the one
// of the nearest configured directory above it.
func (s *Syncer) commandFor(p string) string {
	best, cmd := "", ""
	for k, c := range s.cfg.OnChange {
		if (p == k || strings.HasPrefix(p, k+"/")) && len(k) > len(best) {
			best, cmd = k, c
		}
	}
	return cmd
}

// runOnChange runs each affected command once. A command that failed is not
// run again until the content it covers changes.
func (s *Syncer) runOnChange(changed map[string]Digest) []CommandStatus {
	paths := make([]string, 0, len(changed))
	for p := range changed {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	byCmd := map[string][]string{}
	var cmds []string
	for _, p := range paths {
		c := s.commandFor(p)
		if c == "" {
			continue
		}
		if byCmd[c] == nil {
			cmds = append(cmds, c)
		}
		byCmd[c] = append(byCmd[c], p)
	}
	var ran []CommandStatus
	for _, c := range cmds {
		h := sha256.New()
		for _, p := range byCmd[c] {
			d := changed[p]
			h.Write([]byte(p))
			h.Write(d[:])
		}
		var key Digest
		h.Sum(key[:0])
		s.mu.Lock()
		prev := s.commands[c]
		s.mu.Unlock()
		if prev != nil && !prev.OK && prev.contentKey == key {
			s.log.Warn("not rerunning a failed on_change command for unchanged content", "command", c, "paths", byCmd[c])
			continue
		}
		start := s.now()
		t0 := time.Now()
		exit, tail, err := runShell(context.Background(), c, s.cfg.OnChangeTimeout)
		st := CommandStatus{Command: c, Paths: byCmd[c], LastRun: start, Duration: time.Since(t0),
			ExitCode: exit, OK: err == nil, StderrTail: tail, contentKey: key}
		if err != nil {
			st.Error = err.Error()
			s.log.Error("on_change command failed", "command", c, "paths", byCmd[c], "exit", exit, "error", err, "stderr", tail)
			s.event("on_change", "on_change %q for %s failed (exit %d, %v): %s", c, strings.Join(byCmd[c], " "), exit, err, strings.TrimSpace(tail))
		} else {
			st.StderrTail = ""
			s.log.Info("on_change command ran", "command", c, "paths", byCmd[c], "duration", st.Duration)
			s.event("on_change", "on_change %q for %s ran in %s", c, strings.Join(byCmd[c], " "), st.Duration.Round(time.Millisecond))
		}
		s.recordCommand(st)
		ran = append(ran, st)
	}
	return ran
}

func (s *Syncer) recordCommand(st CommandStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.commands[st.Command] = &st
}

func pathStatuses(m Manifest) []PathStatus {
	out := make([]PathStatus, 0, len(m.Entries))
	for _, e := range m.Entries {
		ps := PathStatus{Path: e.Path, Kind: e.Kind, UID: e.UID, GID: e.GID, Size: e.Size, SHA256: e.SHA256}
		if e.Kind == KindFile || e.Kind == KindDir {
			ps.Mode = fmt.Sprintf("%04o", e.Mode)
		}
		out = append(out, ps)
	}
	return out
}

// Status returns this node's view of the configuration of every member.
func (s *Syncer) Status() SyncStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SyncStatus{
		Node: s.cfg.Self, Role: s.role, Checksum: s.checksum, Generation: s.gen,
		LastScanError: s.scanErr, LastApplyError: s.applyErr, InSync: true,
	}
	if s.role != RoleStarting {
		st.Primary = s.primary
	}
	st.Members = append(st.Members, MemberStatus{
		Node: s.cfg.Self, Self: true, Checksum: s.checksum, Generation: s.gen, InSync: true,
		Paths: pathStatuses(s.manifest),
	})
	names := make([]string, 0, len(s.members))
	for n := range s.members {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		m := s.members[n]
		if n == s.cfg.Self {
			continue
		}
		relevant := slices.Contains(s.peers, n) || n == s.primary
		ms := MemberStatus{
			Node: n, Checksum: m.checksum, Generation: m.gen, InSync: m.known && m.checksum == s.checksum,
			LastSync: m.lastSync, LastHeard: m.lastHeard, Paths: m.paths, LastError: m.lastErr,
			OnChange: slices.Clone(m.onChange),
		}
		if relevant && !ms.InSync {
			st.InSync = false
		}
		st.Members = append(st.Members, ms)
	}
	for _, p := range s.peers {
		if s.members[p] == nil {
			st.Members = append(st.Members, MemberStatus{Node: p})
			st.InSync = false
		}
	}
	cmds := make([]string, 0, len(s.commands))
	for c := range s.commands {
		cmds = append(cmds, c)
	}
	slices.Sort(cmds)
	for _, c := range cmds {
		st.OnChange = append(st.OnChange, *s.commands[c])
	}
	return st
}

// remoteError is an error a member reported while applying a push.
type remoteError struct{ peer, msg string }

func (e *remoteError) Error() string { return e.peer + ": " + e.msg }

// watch follows the sync paths with fsnotify (directories recursively, new
// ones as they appear) and asks for a rescan, debounced, on any change.
// Without a watcher the periodic scan still finds every change.
func (s *Syncer) watch(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("file watcher unavailable, relying on the periodic scan", "error", err)
		return
	}
	defer w.Close()
	watched := map[string]bool{}
	add := func(dir string) {
		if watched[dir] {
			return
		}
		if err := w.Add(dir); err == nil {
			watched[dir] = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("cannot watch directory", "dir", dir, "error", err)
		}
	}
	addTree := func(root string) {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				add(p)
			}
			return nil
		})
	}
	for _, r := range s.store.roots {
		add(filepath.Dir(s.store.fsPath(r))) // a file root is replaced by rename: watch its directory
		addTree(s.store.fsPath(r))
	}
	// The first event of a burst arms the timer; later ones do not extend
	// it, so a file rewritten without pause is still pushed every Debounce.
	var armed atomic.Bool
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if strings.HasPrefix(filepath.Base(ev.Name), tempPrefix) || !s.store.Covers(s.store.logical(ev.Name)) {
				continue
			}
			if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				for d := range watched {
					if d == ev.Name || strings.HasPrefix(d, ev.Name+"/") {
						delete(watched, d)
					}
				}
			}
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
					addTree(ev.Name)
				}
			}
			if armed.CompareAndSwap(false, true) {
				time.AfterFunc(s.cfg.Debounce, func() {
					armed.Store(false)
					kick(s.rescanCh)
				})
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			s.log.Warn("file watcher error, rescanning", "error", err)
			kick(s.rescanCh)
		}
	}
}
