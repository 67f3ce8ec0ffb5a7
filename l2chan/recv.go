package l2chan

import (
	"crypto/cipher"
	"slices"
	"time"
)

// handleFrame authenticates and dispatches one received frame.
//
// b is the channel's: it is decrypted in place.
func (c *Channel) handleFrame(li int, b []byte) {
	h := &c.rxHdr // reused: a steady peer's names are not allocated again
	n, err := DecodeFrameHeader(h, b)
	if err != nil || len(b)-n < gcmTagLen {
		c.malformed.Add(1)
		return
	}
	if h.GroupID != c.cfg.GroupID {
		c.malformed.Add(1)
		return
	}
	if h.Dst != c.cfg.Self || h.Src == c.cfg.Self {
		return // addressed to another member
	}
	p := c.peers[h.Src]
	var aead cipher.AEAD
	newEpoch := false
	switch {
	case p != nil && p.epoch != 0 && h.SrcEpoch == p.epoch:
		if !p.replay.check(h.Nonce) {
			c.replays.Add(1)
			return
		}
		aead = p.aead
	case p != nil && h.SrcEpoch < p.epoch:
		c.replays.Add(1)
		return
	default:
		if h.SrcEpoch == 0 || h.Nonce == 0 {
			c.malformed.Add(1)
			return
		}
		// A new sender or epoch: a key derivation, only for what the
		// agent admitted (the readers checked it already; the check
		// here covers frames handed to handleFrame directly), and only
		// within the derivation budget (admit.go).
		if !c.adm.admitted(b[frameFixedLen+1:frameFixedLen+1+len(h.Src)], h.SrcEpoch) {
			c.unadmitted.Add(1)
			return
		}
		if p == nil && len(c.peers) >= maxPeers {
			c.unadmitted.Add(1) // TestPeersBounded
			return
		}
		var ok bool
		if aead, ok = c.sessionKey(h.Src, h.SrcEpoch); !ok {
			return
		}
		newEpoch = true
	}
	plain, err := aead.Open(b[n:n], gcmNonce(&c.rxNonce, h.Nonce), b[n:], b[:n])
	if err != nil {
		c.badAuth.Add(1)
		return
	}
	if p == nil {
		p = c.getPeer(h.Src)
	}
	if newEpoch {
		c.resetEpoch(p, h.SrcEpoch, aead)
	}
	p.replay.mark(h.Nonce)
	p.lastHeard = time.Now()
	c.framesRx.Add(1)
	c.linkAlive(li)

	switch h.Kind {
	case FrameProbe:
		c.sendAck(p, li)
	case FrameAck:
		if h.DstEpoch != c.epoch {
			return // for an earlier incarnation of ours
		}
		var a AckBody
		if err := a.UnmarshalBinary(plain); err != nil {
			c.malformed.Add(1)
			return
		}
		c.onAck(p, &a)
	case FrameData:
		p.ackNeed, p.ackLink = true, li
		p.ackCount++
		if h.DstEpoch != c.epoch {
			return // stale: the ack tells the peer our epoch
		}
		var d DataBody
		if err := d.UnmarshalBinary(plain); err != nil {
			c.malformed.Add(1)
			return
		}
		c.onData(p, d)
		if p.ackCount >= 32 {
			c.sendAck(p, li)
		}
	}
}

func (c *Channel) onData(p *peer, d DataBody) {
	if d.Seq < p.rcvNext || d.Seq >= p.rcvNext+uint64(c.cfg.Window) {
		return // duplicate, or beyond the window
	}
	if len(c.deliverQ) >= c.maxDeliverQ() {
		// Only a sender that ignores the advertised window gets here (see
		// maxDeliverQ): the fragment is not taken and not acknowledged.
		c.flowDrops.Add(1)
		return
	}
	if d.Seq == p.rcvNext && len(p.ooo) == 0 {
		p.rcvNext++ // in order, nothing buffered: the common case
		c.reassemble(p, d)
		return
	}
	if _, dup := p.ooo[d.Seq]; dup {
		return
	}
	if len(d.Data) > c.cfg.MTU {
		// Out of order fragments are buffered only up to our MTU each, so
		// p.ooo holds at most Window × MTU bytes (TestOutOfOrderBounded);
		// a sender with a larger MTU still gets through in order.
		c.flowDrops.Add(1)
		return
	}
	// A copy: the frame's slab must not stay pinned while a gap lasts.
	d.Data = append([]byte(nil), d.Data...)
	p.ooo[d.Seq] = d
	for {
		f, ok := p.ooo[p.rcvNext]
		if !ok {
			return
		}
		delete(p.ooo, p.rcvNext)
		p.rcvNext++
		c.reassemble(p, f)
	}
}

// maxDeliverQ bounds the messages received and not yet read from Recv.
// The window closes at RecvQueue; a sender that honours it has at most
// Window fragments (so at most Window messages) in flight when it learns
// that, so RecvQueue + Window is never reached by one such sender. Several
// senders at once may reach it: their fragments beyond it are not
// acknowledged and are sent again once Recv is read. Each message is at
// most MaxMessage bytes, every one of which has arrived
// (TestDeliverQueueBounded).
func (c *Channel) maxDeliverQ() int { return c.cfg.RecvQueue + c.cfg.Window }

// asmGrowth is the factor by which a reassembly buffer grows: it holds at
// most asmGrowth × the bytes of the message that have arrived (and never
// more than the message), so announcing a large message costs nothing
// until its bytes come (TestReassemblyAllocBounded). Growing by 4 copies a
// message about a third of its size over in total; 1.25× (append's growth
// for large slices) copied a 16 MiB message five times over.
const asmGrowth = 4

func (c *Channel) reassemble(p *peer, f DataBody) {
	if f.Offset == 0 {
		if p.asmActive {
			c.protoError(p, "protocol error: new message before the previous one ended")
		}
		p.asmDrop = false
		if int64(f.MsgLen) > int64(c.cfg.MaxMessage) {
			c.protoError(p, "dropping message above the size limit", "size", f.MsgLen, "limit", c.cfg.MaxMessage)
			p.asmActive, p.asm, p.asmDrop = false, nil, true
			return
		}
		p.asmActive, p.asmLen, p.asm = true, f.MsgLen, nil
	} else if !p.asmActive || int(f.Offset) != len(p.asm) || f.MsgLen != p.asmLen {
		if !p.asmDrop {
			c.protoError(p, "protocol error: fragment out of place", "offset", f.Offset)
		}
		p.asmActive, p.asm, p.asmDrop = false, nil, true
		return
	}
	if need := len(p.asm) + len(f.Data); need > cap(p.asm) {
		if need > int(p.asmLen) {
			c.protoError(p, "protocol error: fragment beyond the message length", "offset", f.Offset)
			p.asmActive, p.asm, p.asmDrop = false, nil, true
			return
		}
		nb := make([]byte, len(p.asm), min(max(asmGrowth*len(p.asm), need), int(p.asmLen)))
		copy(nb, p.asm)
		p.asm = nb
	}
	p.asm = append(p.asm, f.Data...)
	if len(p.asm) == int(p.asmLen) {
		if p.asm == nil {
			p.asm = []byte{} // an empty message is not a nil one
		}
		c.deliverQ = append(c.deliverQ, Message{From: p.name, Data: p.asm})
		p.asmActive, p.asm = false, nil
	}
}

// protoLogEvery is how often protocol errors of one peer are logged at
// most; the ones in between are counted (Stats.ProtocolErrors) and the
// next line says how many were not logged (TestReassemblyAllocBounded).
const protoLogEvery = 10 * time.Second

// protoError counts a protocol error of p and logs it, at most one line
// per protoLogEvery per peer.
func (c *Channel) protoError(p *peer, msg string, args ...any) {
	c.protoErrs.Add(1)
	now := time.Now()
	if now.Before(p.errLogAt) {
		p.errSuppressed++
		return
	}
	kv := append([]any{"peer", p.name}, args...)
	if p.errSuppressed > 0 {
		kv = append(kv, "not_logged_since_last", p.errSuppressed)
	}
	c.log.Error(msg, kv...)
	p.errLogAt, p.errSuppressed = now.Add(protoLogEvery), 0
}

func (c *Channel) advertisedWindow() uint32 {
	if len(c.deliverQ) >= c.cfg.RecvQueue {
		return 0
	}
	return uint32(c.cfg.Window)
}

func (c *Channel) maybeReopenWindow() {
	if len(c.deliverQ) > c.cfg.RecvQueue/2 {
		return
	}
	for _, p := range c.peers {
		if p.zeroWnd {
			c.sendAck(p, -1)
		}
	}
}

func (c *Channel) flushAcks() {
	for _, p := range c.peers {
		if p.ackNeed {
			c.sendAck(p, p.ackLink)
		}
	}
}

// sendAck acknowledges p's stream on link li (or the active link if li is
// -1 or down).
func (c *Channel) sendAck(p *peer, li int) {
	if li < 0 || !c.links[li].up {
		li = c.active
	}
	if li < 0 {
		return
	}
	a := AckBody{Cum: p.rcvNext - 1, Window: c.advertisedWindow()}
	if len(p.ooo) > 0 {
		seqs := make([]uint64, 0, len(p.ooo))
		for s := range p.ooo {
			seqs = append(seqs, s)
		}
		slices.Sort(seqs)
		for _, s := range seqs {
			if n := len(a.Sacks); n > 0 && a.Sacks[n-1].Last+1 == s {
				a.Sacks[n-1].Last = s
				continue
			}
			if len(a.Sacks) == maxSackBlocks {
				break
			}
			a.Sacks = append(a.Sacks, SackBlock{First: s, Last: s})
		}
	}
	p.zeroWnd = a.Window == 0
	p.ackNeed, p.ackCount = false, 0
	c.bodyBuf = a.appendTo(c.bodyBuf[:0])
	c.sendControl(p, FrameAck, li, c.bodyBuf)
}
