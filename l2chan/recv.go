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
		aead, err = c.keys.session(h.Src, h.SrcEpoch)
		if err != nil {
			c.malformed.Add(1)
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
	if d.Seq == p.rcvNext && len(p.ooo) == 0 {
		p.rcvNext++ // in order, nothing buffered: the common case
		c.reassemble(p, d)
		return
	}
	if _, dup := p.ooo[d.Seq]; dup {
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

// asmPrealloc is the largest message whose reassembly buffer is allocated
// whole when its first fragment arrives.
const asmPrealloc = 64 << 20

func (c *Channel) reassemble(p *peer, f DataBody) {
	if f.Offset == 0 {
		if p.asmActive {
			c.log.Error("protocol error: new message before the previous one ended", "peer", p.name)
		}
		p.asmDrop = false
		if int64(f.MsgLen) > int64(c.cfg.MaxMessage) {
			c.log.Error("dropping message above the size limit", "peer", p.name, "size", f.MsgLen, "limit", c.cfg.MaxMessage)
			p.asmActive, p.asm, p.asmDrop = false, nil, true
			return
		}
		p.asmActive, p.asmLen = true, f.MsgLen
		// The whole message at once up to asmPrealloc (the sync batches),
		// above it growing by doubling as fragments arrive.
		p.asm = make([]byte, 0, min(int(f.MsgLen), asmPrealloc))
	} else if !p.asmActive || int(f.Offset) != len(p.asm) || f.MsgLen != p.asmLen {
		if !p.asmDrop {
			c.log.Error("protocol error: fragment out of place", "peer", p.name, "offset", f.Offset)
		}
		p.asmActive, p.asm, p.asmDrop = false, nil, true
		return
	}
	if len(p.asm)+len(f.Data) > cap(p.asm) {
		// Double up to the message length: append's 1.25× growth of
		// large slices copied a 16 MiB message five times over.
		p.asm = slices.Grow(p.asm, min(max(2*cap(p.asm), len(p.asm)+len(f.Data)), int(p.asmLen))-len(p.asm))
	}
	p.asm = append(p.asm, f.Data...)
	if len(p.asm) == int(p.asmLen) {
		c.deliverQ = append(c.deliverQ, Message{From: p.name, Data: p.asm})
		p.asmActive, p.asm = false, nil
	}
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
