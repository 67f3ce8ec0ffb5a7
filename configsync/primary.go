package configsync

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"
)

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
			w.busy = true
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
			w.busy = false
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
	t0 := time.Now()
	resp, err := s.request(ctx, peer, msgManifestReq, &syncHeader{}, nil)
	if err == nil && resp.hdr.Error != "" {
		err = errors.New(resp.hdr.Error) // refused: not its primary (yet)
	}
	if err != nil {
		return fmt.Errorf("manifest of %s: %w", peer, err)
	}
	s.log.Debug("member manifest received", "peer", peer, "entries", len(resp.hdr.Entries), "after", time.Since(t0))
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
	t1 := time.Now()
	if !s.manifestCurrent() {
		s.rescan()
	}
	s.mu.Lock()
	mine := s.manifest
	s.mu.Unlock()
	changes := Diff(theirs, mine)
	s.log.Debug("member diff", "peer", peer, "changes", len(changes), "rescan_and_diff", time.Since(t1))
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
// peer in batches of at most MaxBatch content bytes (the first ones
// smaller).
func (s *Syncer) pushPaths(ctx context.Context, peer string, paths []string, repair bool) error {
	var (
		hdr    syncHeader
		blob   []byte
		errs   []error
		cmdErr []CommandStatus
	)
	batchStart := time.Now()
	// Up to pushDepth pushes are in flight: the next batch is read and
	// sent while the member applies the previous one. The channel keeps
	// them in order and the member applies them in order; the answers are
	// taken in order too.
	type result struct {
		resp *syncMsg
		err  error
	}
	var inflight []chan result
	collect := func() error {
		r := <-inflight[0]
		inflight = inflight[1:]
		if r.err != nil {
			return fmt.Errorf("push to %s: %w", peer, r.err)
		}
		resp := r.resp
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
	// drain waits for every push in flight; the first error wins.
	drain := func() error {
		var first error
		for len(inflight) > 0 {
			if err := collect(); err != nil && first == nil {
				first = err
			}
		}
		return first
	}
	flush := func(force bool) error {
		if !force && len(hdr.Entries) == 0 && len(hdr.Deleted) == 0 {
			return nil
		}
		s.mu.Lock()
		hdr.Gen, hdr.Repair = s.gen, repair
		sum := s.checksum
		hdr.Checksum = &sum
		s.mu.Unlock()
		if len(inflight) == pushDepth {
			if err := collect(); err != nil {
				drain()
				return err
			}
		}
		rc := make(chan result, 1)
		inflight = append(inflight, rc)
		h, b := hdr, blob
		s.log.Debug("pushing", "peer", peer, "entries", len(h.Entries), "deleted", len(h.Deleted), "bytes", len(b), "read_in", time.Since(batchStart))
		go func() {
			t0 := time.Now()
			resp, err := s.request(ctx, peer, msgPush, &h, b)
			s.log.Debug("push answered", "peer", peer, "entries", len(h.Entries), "after", time.Since(t0), "error", err)
			rc <- result{resp, err}
		}()
		batchStart = time.Now()
		hdr, blob = syncHeader{}, nil
		return nil
	}
	// The first push is small so that the member starts writing at once,
	// each next one twice as large up to MaxBatch: a full sync otherwise
	// waits for a whole MaxBatch to be read and sent before anything is
	// written (0.5-0.9 s of 10 000 files / 50 MiB here).
	limit := max(s.cfg.MaxBatch/firstBatchDiv, 1)
	next, stop := s.store.readAhead(paths, readAheadWorkers, readAheadWindow)
	defer stop()
	for _, p := range paths {
		e, content, err, _ := next()
		switch {
		case errors.Is(err, fs.ErrNotExist):
			hdr.Deleted = append(hdr.Deleted, p)
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		}
		if len(blob) > 0 && len(blob)+len(content) > limit {
			if err := flush(false); err != nil {
				return err
			}
			limit = min(2*limit, s.cfg.MaxBatch)
		}
		hdr.Entries = append(hdr.Entries, e)
		blob = append(blob, content...)
	}
	if err := flush(len(paths) == 0); err != nil {
		return err
	}
	if err := drain(); err != nil {
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

// firstBatchDiv: the first push of pushPaths carries at most
// MaxBatch/firstBatchDiv content bytes.
const firstBatchDiv = 16

// pushDepth is how many pushes to one member may wait for their ack at
// once (pushPaths): three, so that the member has the next push (and
// writes its files ahead) while it applies one and the primary reads the
// one after (a full sync here: 2.09 s with 3, 2.87 s with 2, one run each
// on a shared machine).
const pushDepth = 3

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
			if err == nil && resp.hdr.Error != "" {
				err = errors.New(resp.hdr.Error)
			}
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
	if err == nil && resp.hdr.Error != "" {
		err = errors.New(resp.hdr.Error)
	}
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
		// Only what was asked for: a member answering a pull cannot
		// slip in other paths (or the cluster section) unasked.
		asked := make(map[string]bool, len(fetch))
		for _, p := range fetch {
			asked[p] = true
		}
		for _, e := range entries {
			if !asked[e.Path] {
				return fmt.Errorf("pull from %s: answered %s, which was not asked for", peer, e.Path)
			}
		}
	}
	_, errs := s.applyLocked(entries, contents, deleted, true, nil)
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

// remoteError is an error a member reported while applying a push.
type remoteError struct{ peer, msg string }

func (e *remoteError) Error() string { return e.peer + ": " + e.msg }
