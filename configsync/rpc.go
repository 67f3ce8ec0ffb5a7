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
		t0 := time.Now()
		m, err := decodeSyncMsg(msg.From, msg.Data)
		if err == nil && m.kind == msgPush {
			s.log.Debug("push received", "peer", m.from, "entries", len(m.hdr.Entries), "bytes", len(msg.Data), "decoded_in", time.Since(t0))
		}
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
