package l2chan

import (
	"math"
	"time"
)

// pump fragments queued messages into the send window.
func (c *Channel) pump(p *peer) {
	if p.epoch == 0 || c.active < 0 || len(p.queue) == 0 {
		return
	}
	limit := min(c.cfg.Window, p.peerWnd)
	chunk := c.cfg.MTU - (frameFixedLen + 2 + len(c.cfg.Self) + len(p.name)) - gcmTagLen - dataBodyLen
	now := time.Now()
	for len(p.inflight) < limit && len(p.queue) > 0 {
		m := p.queue[0]
		n := min(chunk, len(m.data)-m.off)
		f := &outFrag{seq: p.sndNext, msg: m, off: m.off, data: m.data[m.off : m.off+n]}
		p.sndNext++
		m.off += n
		m.started = true
		p.inflight = append(p.inflight, f)
		if m.off == len(m.data) {
			m.lastSeq = f.seq
			p.queue = p.queue[1:]
			p.sentMsgs = append(p.sentMsgs, m)
		}
		c.transmit(p, f, now)
	}
	if len(p.inflight) > 0 && p.rtoAt.IsZero() {
		p.rtoAt = now.Add(p.rto)
	}
}

// transmit sends (or resends) one fragment on the active link.
func (c *Channel) transmit(p *peer, f *outFrag, now time.Time) {
	if c.active < 0 {
		return
	}
	if !f.sentAt.IsZero() {
		f.retrans = true
		c.retrans.Add(1)
	}
	f.sentAt = now
	p.serial++
	f.serial = p.serial
	link := c.active
	if !f.retrans {
		link = c.spreadLink()
	}
	f.link = link
	body := DataBody{Seq: f.seq, MsgLen: uint32(len(f.msg.data)), Offset: uint32(f.off), Data: f.data}
	if b, ok := c.frameStart(p, FrameData); ok {
		c.frameSend(p, link, body.appendTo(b))
	}
}

// spreadLink returns the link for a first transmission: the next usable
// link of the Spread group round-robin while the active link is one of
// them, else the active link.
func (c *Channel) spreadLink() int {
	n := c.cfg.Spread
	if n < 2 || c.active >= n {
		return c.active
	}
	for i := 0; i < n; i++ {
		c.rr = (c.rr + 1) % n
		if l := c.links[c.rr]; l.up && !l.suspect {
			return c.rr
		}
	}
	return c.active
}

func (c *Channel) sendControl(p *peer, kind FrameKind, link int, body []byte) {
	c.sendFrame(p, kind, link, body)
}

func (c *Channel) sendFrame(p *peer, kind FrameKind, link int, body []byte) {
	b, ok := c.frameStart(p, kind)
	if ok {
		c.frameSend(p, link, append(b, body...))
	}
}

// frameStart begins a frame of kind to p in the transmit buffer: it takes
// the next nonce and writes the header. The caller appends the body and
// calls frameSend, which encrypts it in place.
func (c *Channel) frameStart(p *peer, kind FrameKind) ([]byte, bool) {
	if c.nonce == math.MaxUint64 {
		// Never wraps: a nonce used twice under one key breaks GCM. 2^64
		// frames are out of reach; Rekey would start a new key.
		return nil, false
	}
	c.nonce++
	h := FrameHeader{Kind: kind, GroupID: c.cfg.GroupID, SrcEpoch: c.epoch, DstEpoch: p.epoch, Nonce: c.nonce, Src: c.cfg.Self, Dst: p.name}
	b, err := h.appendTo(c.txBuf[:0])
	if err != nil {
		c.log.Error("cannot encode frame header", "peer", p.name, "error", err)
		return nil, false
	}
	c.txHdrLen = len(b)
	return b, true
}

// frameSend seals the frame frameStart began (header, then the plaintext
// body) in place and sends it on link.
func (c *Channel) frameSend(p *peer, link int, b []byte) {
	n := c.txHdrLen
	b = c.aead.Seal(b[:n], gcmNonce(&c.txNonce, c.nonce), b[n:], b[:n])
	c.txBuf = b[:0] // keep the (possibly grown) buffer: Send does not retain it
	l := c.links[link]
	if err := l.l.Send(b); err != nil {
		l.txErr.Add(1)
		c.log.Debug("link send failed", "link", l.name, "peer", p.name, "error", err)
		return
	}
	l.tx.Add(1)
	c.framesTx.Add(1)
}

// reorderThreshold is how many later transmissions must be acknowledged
// before a fragment is considered lost and sent again without waiting for
// the RTO.
const reorderThreshold = 3

func (c *Channel) onAck(p *peer, a *AckBody) {
	if a.Cum >= p.sndNext {
		c.malformed.Add(1)
		return
	}
	now := time.Now()
	progress := false
	var sample *outFrag // the latest transmission acknowledged that was sent once
	if len(p.rack) != len(c.links) {
		p.rack = make([]uint64, len(c.links))
	}
	// Per link: the latest first transmission and the latest
	// retransmission acknowledged.
	once, retransMax := c.ackScratch(len(c.links))
	ack := func(f *outFrag) {
		progress = true
		if f.retrans {
			retransMax[f.link] = max(retransMax[f.link], f.serial)
			return
		}
		once[f.link] = max(once[f.link], f.serial)
		if sample == nil || f.serial > sample.serial {
			sample = f
		}
	}
	for p.sndUna <= a.Cum {
		f := p.inflight[0]
		if !f.sacked {
			ack(f)
		}
		p.inflight[0] = nil
		p.inflight = p.inflight[1:]
		p.sndUna++
		progress = true
	}
	for _, s := range a.Sacks {
		first, last := max(s.First, p.sndUna), min(s.Last, p.sndNext-1)
		for seq := first; seq <= last && seq >= p.sndUna; seq++ {
			if f := p.inflight[seq-p.sndUna]; !f.sacked {
				f.sacked = true
				ack(f)
			}
		}
	}
	if a.Window > 0 && p.peerWnd == 0 {
		progress = true
	}
	p.peerWnd = int(a.Window)
	if sample != nil {
		c.rttSample(p, now.Sub(sample.sentAt))
	}
	// Loss detection goes by the latest fragment known to have arrived on
	// each link. An acknowledged retransmission is ambiguous (the ack may
	// be for its first transmission, after a spurious timeout): it counts
	// only when nothing sent once on that link was acknowledged with it.
	for i := range p.rack {
		if once[i] != 0 {
			p.rack[i] = max(p.rack[i], once[i])
		} else {
			p.rack[i] = max(p.rack[i], retransMax[i])
		}
	}
	if progress {
		p.timeouts = 0
		p.rto = p.baseRTO
		p.lastProgress = now
		p.probeRTO = p.baseRTO
		if len(p.inflight) > 0 {
			p.rtoAt = now.Add(p.rto)
		} else {
			p.rtoAt = time.Time{}
		}
	}
	for len(p.sentMsgs) > 0 && p.sentMsgs[0].lastSeq < p.sndUna {
		m := p.sentMsgs[0]
		p.sentMsgs[0] = nil
		p.sentMsgs = p.sentMsgs[1:]
		c.msgsSent.Add(1)
		m.finish(nil)
	}
	// The ack after a first timeout stops right at the fragment it
	// resent: everything sent after that fragment is lost.
	afterRTO := false
	if p.rtoSeq != 0 && a.Cum >= p.rtoSeq {
		afterRTO = a.Cum == p.rtoSeq
		p.rtoSeq = 0
	}
	// Loss detection: a fragment sent well before one that arrived on its
	// link is lost. Serials count the transmissions on every link: with
	// Spread links taking turns, a link sees every Spread-th of them.
	threshold := uint64(reorderThreshold * max(1, c.cfg.Spread))
	for _, f := range p.inflight {
		if !f.sacked && (afterRTO || f.serial+threshold < p.rack[f.link]) {
			c.transmit(p, f, now)
		}
	}
}

// ackScratch returns two zeroed per-link slices for onAck (reused: onAck
// runs on the channel's goroutine only).
func (c *Channel) ackScratch(n int) (once, retrans []uint64) {
	if len(c.ackBuf) != 2*n {
		c.ackBuf = make([]uint64, 2*n)
	}
	clear(c.ackBuf)
	return c.ackBuf[:n], c.ackBuf[n:]
}

func (c *Channel) rttSample(p *peer, r time.Duration) {
	if p.srtt == 0 {
		p.srtt, p.rttvar = r, r/2
	} else {
		d := p.srtt - r
		if d < 0 {
			d = -d
		}
		p.rttvar = (3*p.rttvar + d) / 4
		p.srtt = (7*p.srtt + r) / 8
	}
	p.baseRTO = min(max(p.srtt+4*p.rttvar, c.cfg.MinRTO), c.cfg.MaxRTO)
}
