package sessionsync

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"time"

	"github.com/hagent/hagent/l2chan"
)

// FGSP defer (cluster.session_pickup.defer): the packet that creates a new
// flow is held (package deferq) until every live peer has the flow in its
// kernel. The engine's part:
//
//   - Defer, called with the flow of a held packet (from its conntrack
//     entry, not confirmed yet: its event comes only once the packet goes
//     on), queues the flow's record for every live peer at once and
//     remembers which peers must acknowledge it.
//   - With Config.OnAcked set, stream messages carry genAckApplied: the
//     receiver applies them as usual and answers with KindApplied, the
//     keys of the flows its kernel accepted (after the kernel's answer,
//     not at the message's arrival: the channel's own acknowledgement
//     comes before the apply). A receiver that predates it ignores the
//     bit (a stream message's generation is not read) and applies the
//     message: its flows are released at defer, not lost.
//   - An applied acknowledgement from the last peer a flow waits for, or
//     the last such peer leaving the live set (SetRole), calls OnAcked.
//
// TestDeferAcked and TestDeferPeerGone prove the engine's part; the netns
// TestFGSPDefer the whole.

// KindApplied lists the keys of the flows of a stream message with
// genAckApplied that the receiver's kernel accepted. Layout: the message
// header (gen and oldest zero, count the number of keys), then per key
// flags(1: 1 IPv6) proto(1) zone(2) src dst (4 or 16 bytes each) sport(2)
// dport(2). (Kind 7 is not used.) The numeric value is part of the
// protocol.
const KindApplied Kind = 8

// genAckApplied, set in a stream message's generation, asks the receiver
// for a KindApplied answer (bulk generations never reach it).
const genAckApplied uint32 = 1 << 31

// maxAppliedKeys bounds the keys of one KindApplied message (a stream
// message has at most BatchRecords records, 1 024 by default).
const maxAppliedKeys = 1 << 16

// ackedKeep is how long a flow acknowledged by every peer is remembered:
// the packets that follow its first (ctstate NEW until a reply is seen,
// which in FGSP may come from a peer's update) are not held again.
const ackedKeep = 2 * time.Second

// maxDeferTracked bounds the flows waiting and remembered as acknowledged
// (each map); above it the oldest generation is dropped early (a flow
// forgotten is at worst held again, up to defer).
const maxDeferTracked = 1 << 16

// deferState is the engine's bookkeeping of defer (e.mu held).
type deferState struct {
	waits map[Key]*deferWait
	// acked and ackedOld are the flows acknowledged in the current and
	// the previous ackedKeep/2 period.
	acked, ackedOld map[Key]struct{}
	rotated         time.Time
	sent, acks      uint64
}

type deferWait struct {
	since time.Time
	peers []string
}

// Defer queues f's record for every live peer now and reports whether
// the caller must hold the packet that created it until OnAcked(f.Key()).
// False: no peer to wait for, the flow is not one copied, this flow was
// acknowledged already (a packet that follows the first), or defer is
// off (Config.OnAcked nil). The flow is marked sent by this member
// (its later events are its own, symmetric.go).
func (e *Engine) Defer(f *Flow) bool {
	if e.cfg.OnAcked == nil || !e.cfg.Symmetric {
		return false
	}
	now := e.cfg.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.primary || f.Status&StatusDying != 0 || !e.wanted(f) || !e.owned(f) {
		return false
	}
	d := e.deferBook(now)
	k := f.Key()
	if _, ok := d.waits[k]; ok {
		return true
	}
	if _, ok := d.acked[k]; ok {
		return false
	}
	if _, ok := d.ackedOld[k]; ok {
		return false
	}
	var peers []string
	for name, p := range e.peers {
		if !p.needBulk {
			peers = append(peers, name)
		}
	}
	if len(peers) == 0 {
		return false
	}
	if len(d.waits) >= maxDeferTracked {
		d.waits = map[Key]*deferWait{}
	}
	d.waits[k] = &deferWait{since: now, peers: peers}
	d.sent++
	// The entry is not confirmed yet: its timeout reads as the raw
	// initial value or zero. The flow's confirm event, once the packet
	// goes on, sends the real one.
	g := *f
	g.Status &^= StatusDying
	if g.Timeout < minDeferTimeout {
		g.Timeout = minDeferTimeout
	}
	if kn := e.known[k]; kn != nil {
		kn.from, kn.owned, kn.deleted, kn.applied = "", true, false, kn.applied[:0]
	} else {
		e.known[k] = &known{owned: true}
	}
	e.enqueue(Record{Op: OpUpsert, Flow: e.prepare(g, now)}, now)
	return true
}

// deferNATFix: a flow Defer sent went as its packet showed it at
// FORWARD, before source NAT (POSTROUTING). When its confirm event shows
// a NAT mapping, the peers' copy is deleted before the event's record
// creates it again: the kernel refuses NAT changes of an entry, so an
// update would keep the copy unmapped (e.mu held). TestDeferNATReplaced.
func (e *Engine) deferNATFix(t EventType, f *Flow, now time.Time) {
	if t != EventNew || e.dfr == nil || !f.NAT() {
		return
	}
	k := f.Key()
	d := e.dfr
	_, w := d.waits[k]
	_, a := d.acked[k]
	_, o := d.ackedOld[k]
	if !w && !a && !o {
		return
	}
	plain := Flow{Zone: k.Zone, Proto: k.Proto, Orig: k.Orig, Reply: Tuple{Src: k.Orig.Dst, Dst: k.Orig.Src, SrcPort: k.Orig.DstPort, DstPort: k.Orig.SrcPort}}
	e.enqueue(Record{Op: OpDelete, Flow: plain}, now)
}

// minDeferTimeout is the least timeout (s) a deferred flow's copy gets:
// TCP's SYN_SENT timeout, so the copy outlives the handshake.
const minDeferTimeout = 120

// Waiting reports whether flow k still waits for an acknowledgement.
func (e *Engine) Waiting(k Key) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dfr == nil {
		return false
	}
	_, ok := e.dfr.waits[k]
	return ok
}

// deferBook returns the bookkeeping, rotating the acknowledged flows and
// dropping waits no hold needs any more (e.mu held).
func (e *Engine) deferBook(now time.Time) *deferState {
	d := e.dfr
	if d == nil {
		d = &deferState{waits: map[Key]*deferWait{}, acked: map[Key]struct{}{}, ackedOld: map[Key]struct{}{}, rotated: now}
		e.dfr = d
	}
	if now.Sub(d.rotated) >= ackedKeep/2 || len(d.acked) >= maxDeferTracked {
		d.ackedOld, d.acked, d.rotated = d.acked, map[Key]struct{}{}, now
		// A wait older than the longest defer has no packet held for it.
		for k, w := range d.waits {
			if now.Sub(w.since) > time.Second {
				delete(d.waits, k)
			}
		}
	}
	return d
}

// ackedBy removes peer from the waits of keys (nil: of every flow, the
// peer left); the flows no peer is awaited for any more are returned
// (e.mu held).
func (e *Engine) ackedBy(peer string, keys []Key, now time.Time) []Key {
	if e.dfr == nil {
		return nil
	}
	d := e.deferBook(now)
	var done []Key
	drop := func(k Key, w *deferWait) {
		for i, p := range w.peers {
			if p == peer {
				w.peers = append(w.peers[:i], w.peers[i+1:]...)
				break
			}
		}
		if len(w.peers) == 0 {
			delete(d.waits, k)
			d.acked[k] = struct{}{}
			done = append(done, k)
		}
	}
	if keys == nil {
		for k, w := range d.waits {
			drop(k, w)
		}
		return done
	}
	for _, k := range keys {
		if w, ok := d.waits[k]; ok {
			d.acks++
			drop(k, w)
		}
	}
	return done
}

// peersLeft releases the flows that waited only for peers that are not
// live any more (SetRole, e.mu held): their OnAcked calls run after.
func (e *Engine) peersLeft(gone []string) []Key {
	var done []Key
	now := e.cfg.Now()
	for _, p := range gone {
		done = append(done, e.ackedBy(p, nil, now)...)
	}
	return done
}

// notifyAcked calls OnAcked for keys (e.mu not held).
func (e *Engine) notifyAcked(keys []Key) {
	for _, k := range keys {
		e.cfg.OnAcked(k)
	}
}

// handleApplied takes a peer's KindApplied message (on the channel's
// reading goroutine: an acknowledgement does not wait behind applies).
func (e *Engine) handleApplied(msg l2chan.Message) {
	keys, err := decodeApplied(msg.Data)
	if err != nil {
		e.recvMu.Lock()
		e.rc.malformed++
		e.noteErr(e.cfg.Now(), "malformed applied acknowledgement from "+msg.From+": "+err.Error())
		e.recvMu.Unlock()
		return
	}
	if e.cfg.OnAcked == nil {
		return
	}
	e.mu.Lock()
	done := e.ackedBy(msg.From, keys, e.cfg.Now())
	e.mu.Unlock()
	e.notifyAcked(done)
}

// sendApplied acknowledges to peer the flows of a stream message with
// genAckApplied
// its kernel accepted (the applying goroutine; the send does not wait).
func (e *Engine) sendApplied(peer string, recs []Record, errs []error) {
	keys := make([]Key, 0, len(recs))
	for i := range recs {
		if errs[i] == nil && recs[i].Op != OpDelete && recs[i].Expect == nil {
			keys = append(keys, recs[i].Flow.Key())
		}
	}
	b := appendApplied(nil, keys)
	if at, ok := e.cfg.Transport.(AsyncTransport); ok {
		if _, err := at.SendAsync(peer, b); err != nil {
			e.log.Debug("applied acknowledgement not sent", "peer", peer, "error", err)
		}
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.SendTimeout)
		defer cancel()
		_ = e.cfg.Transport.Send(ctx, peer, b)
	}()
}

func isApplied(b []byte) bool {
	return len(b) >= headerLen && b[0] == 'S' && b[1] == 'S' && b[2] == Version && Kind(b[3]) == KindApplied
}

// appendApplied appends the KindApplied message of keys to b.
func appendApplied(b []byte, keys []Key) []byte {
	b = append(b, 'S', 'S', Version, byte(KindApplied))
	b = append(b, make([]byte, 12)...) // gen, oldest
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		fl := byte(0)
		if k.Orig.Src.Is6() {
			fl = flagIPv6
		}
		b = append(b, fl, k.Proto)
		b = binary.BigEndian.AppendUint16(b, k.Zone)
		b = append(b, k.Orig.Src.AsSlice()...)
		b = append(b, k.Orig.Dst.AsSlice()...)
		b = binary.BigEndian.AppendUint16(b, k.Orig.SrcPort)
		b = binary.BigEndian.AppendUint16(b, k.Orig.DstPort)
	}
	return b
}

var errAppliedMalformed = errors.New("sessionsync: malformed applied acknowledgement")

// decodeApplied decodes a KindApplied message; a count the input cannot
// hold, an unknown flag, a mapped address or trailing bytes are errors
// (no allocation beyond the keys the input holds).
func decodeApplied(b []byte) ([]Key, error) {
	if !isApplied(b) {
		return nil, errAppliedMalformed
	}
	for _, c := range b[4:16] {
		if c != 0 {
			return nil, errAppliedMalformed
		}
	}
	n := binary.BigEndian.Uint32(b[16:])
	b = b[headerLen:]
	if n > maxAppliedKeys || uint64(n)*14 > uint64(len(b)) {
		return nil, io.ErrUnexpectedEOF
	}
	keys := make([]Key, 0, n)
	for range n {
		if len(b) < 2 {
			return nil, io.ErrUnexpectedEOF
		}
		fl, proto := b[0], b[1]
		alen := 4
		switch fl {
		case 0:
		case flagIPv6:
			alen = 16
		default:
			return nil, errAppliedMalformed
		}
		if len(b) < 4+2*alen+4 {
			return nil, io.ErrUnexpectedEOF
		}
		k := Key{Proto: proto, Zone: binary.BigEndian.Uint16(b[2:])}
		p := 4
		src, _ := netip.AddrFromSlice(b[p : p+alen])
		dst, _ := netip.AddrFromSlice(b[p+alen : p+2*alen])
		if alen == 16 && (src.Is4In6() || dst.Is4In6()) {
			return nil, errAppliedMalformed
		}
		p += 2 * alen
		k.Orig = Tuple{Src: src, Dst: dst, SrcPort: binary.BigEndian.Uint16(b[p:]), DstPort: binary.BigEndian.Uint16(b[p+2:])}
		keys = append(keys, k)
		b = b[p+4:]
	}
	if len(b) != 0 {
		return nil, errAppliedMalformed
	}
	return keys, nil
}

// DeferStatus is the hold of FGSP defer as `ha sessions` shows it (the
// agent fills it from package deferq).
type DeferStatus struct {
	// MaxMs is defer; Rule the state of hagent's NFQUEUE rule.
	MaxMs float64 `json:"max_ms"`
	Rule  string  `json:"rule"`
	// Held counts the packets held; ReleasedAcked those let go once every
	// live peer had their flow, ReleasedTimeout those let go at defer,
	// Bypassed those not held because the hold was full; Holding the
	// packets held now.
	Held            uint64 `json:"held"`
	ReleasedAcked   uint64 `json:"released_acked"`
	ReleasedTimeout uint64 `json:"released_timeout"`
	Bypassed        uint64 `json:"bypassed"`
	Holding         int    `json:"holding"`
	// KernelPassed counts the packets the kernel let pass unqueued (no
	// consumer, or its queue full: fail-open), -1 unknown; Undecoded the
	// queued packets without a flow hagent reads (let go at once).
	KernelPassed int64  `json:"kernel_passed"`
	Received     uint64 `json:"received"`
	Undecoded    uint64 `json:"undecoded"`
	// HoldP50Ms, HoldP99Ms (of the last 1 024 released flows) and
	// HoldMaxMs (since start): how long flows' first packets waited.
	HoldP50Ms float64 `json:"hold_p50_ms"`
	HoldP99Ms float64 `json:"hold_p99_ms"`
	HoldMaxMs float64 `json:"hold_max_ms"`
	// FlowsSent counts the flows Defer sent ahead of their events;
	// Acks the applied acknowledgements that released a wait.
	FlowsSent uint64 `json:"flows_sent"`
	Acks      uint64 `json:"acks"`
}

// DeferCounts returns the engine's defer counters (flows sent ahead, acks).
func (e *Engine) DeferCounts() (sent, acks uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dfr == nil {
		return 0, 0
	}
	return e.dfr.sent, e.dfr.acks
}
