package configsync

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/hagent/hagent/l2chan"
)

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
		var msg l2chan.Message
		var ok bool
		select {
		case <-ctx.Done():
			return
		case msg, ok = <-s.tr.Recv():
			if !ok {
				return
			}
		}
		if !s.receive(ctx, msg, s.queuePush, func(m *syncMsg) { go s.serve(ctx, m) }) {
			return
		}
	}
}

// maxPullBytes bounds the content of one pull answer: the largest
// message the control channel carries by default (l2chan MaxMessage).
const maxPullBytes = 256 << 20

// maxServing bounds the requests served at once (each a goroutine that
// may scan the tree or read files): more are dropped and counted, the
// asker's request times out. A member asks for one thing at a time per
// request kind, so 8 is ample for a cluster of up to 8 members.
const maxServing = 8

// receive handles one message from the channel: a response goes to the
// request waiting for it, a push to push (queuePush), a request to serve
// within maxServing. Undecodable messages and pushes from a member that
// is not this node's primary are dropped and counted. It reports false
// when ctx ended while it waited.
func (s *Syncer) receive(ctx context.Context, msg l2chan.Message, push func(context.Context, *syncMsg) bool, serve func(*syncMsg)) bool {
	t0 := time.Now()
	m, err := decodeSyncMsg(msg.From, msg.Data)
	if err != nil {
		s.refused.Add(1)
		s.log.Warn("dropping undecodable sync message", "peer", msg.From, "error", err)
		return true
	}
	if m.kind == msgPush {
		s.log.Debug("push received", "peer", m.from, "entries", len(m.hdr.Entries), "bytes", len(msg.Data), "decoded_in", time.Since(t0))
	}
	if m.kind.isResponse() {
		s.pendMu.Lock()
		p, ok := s.pending[m.hdr.ID]
		s.pendMu.Unlock()
		if ok && p.peer == m.from {
			select {
			case p.ch <- m:
			default: // a second answer to one request
				s.refused.Add(1)
			}
		} else {
			s.refused.Add(1)
		}
		return true
	}
	if m.kind == msgPush {
		s.mu.Lock()
		role, primary := s.role, s.primary
		s.mu.Unlock()
		if role != RoleStarting && (role != RoleSecondary || primary != m.from) {
			// Refused before it is queued or written ahead (applyPush
			// checks again, and waits for a role while starting).
			s.refused.Add(1)
			s.log.Warn("rejecting push from a node that is not our primary", "peer", m.from, "role", role, "primary", primary)
			go s.reply(ctx, m.from, msgPushAck, &syncHeader{ID: m.hdr.ID,
				Error: fmt.Sprintf("%s does not accept pushes from %s (role %s, primary %q)", s.cfg.Self, m.from, role, primary)}, nil)
			return true
		}
		return push(ctx, m)
	}
	select {
	case s.serving <- struct{}{}:
	default:
		s.refused.Add(1)
		s.log.Debug("too many sync requests at once, dropping one", "peer", m.from, "kind", m.kind)
		return true
	}
	serve(m)
	return true
}

// queuePush queues a push for applyLoop (applyQ holds at most 64).
func (s *Syncer) queuePush(ctx context.Context, m *syncMsg) bool {
	select {
	case s.applyQ <- m:
		return true
	case <-ctx.Done():
		return false
	}
}

// entitled reports whether from may ask this node for its tree (manifest,
// pulled content, generation): only the primary asks those, so from must
// be this node's primary. A member that just became primary asks at once
// (catchUp), maybe before this node's role shows it: it gets up to
// startingGrace to do so.
func (s *Syncer) entitled(ctx context.Context, from string) bool {
	for deadline := time.Now().Add(s.grace); ; {
		s.mu.Lock()
		ok := s.role == RoleSecondary && s.primary == from
		s.mu.Unlock()
		if ok || !time.Now().Before(deadline) || ctx.Err() != nil {
			return ok
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serve answers the read-only requests.
//
// Who may ask what: a generation, a manifest or content is asked by a
// primary of its members (catchUp, repairPeer, pullFrom), so only this
// node's primary gets an answer (entitled); a synchronize is asked by a
// secondary of its primary, so only a member this node pushes to as
// primary (a peer worker) gets one. Others get an error, and the refusal
// is counted (TestServeOnlyToEntitled).
func (s *Syncer) serve(ctx context.Context, m *syncMsg) {
	defer func() { <-s.serving }()
	if m.kind == msgGenReq || m.kind == msgManifestReq || m.kind == msgPullReq {
		if !s.entitled(ctx, m.from) {
			s.refused.Add(1)
			s.mu.Lock()
			primary := s.primary
			s.mu.Unlock()
			s.log.Warn("refusing a sync request from a node that is not our primary", "peer", m.from, "kind", m.kind, "primary", primary)
			resp := map[msgKind]msgKind{msgGenReq: msgGenResp, msgManifestReq: msgManifestResp, msgPullReq: msgPullResp}[m.kind]
			s.reply(ctx, m.from, resp, &syncHeader{ID: m.hdr.ID, Error: fmt.Sprintf("%s answers %s only to its primary", s.cfg.Self, m.kind)}, nil)
			return
		}
	}
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
		seen := make(map[string]bool, len(m.hdr.Paths))
		for _, p := range m.hdr.Paths {
			if seen[p] {
				continue // each path once: no amplification by repetition (TestPullAnswerOncePerPath)
			}
			seen[p] = true
			if len(blob) >= maxPullBytes {
				errs = append(errs, fmt.Sprintf("pull answer reached %d bytes; %s and later paths left out", maxPullBytes, p))
				break
			}
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
