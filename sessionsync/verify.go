package sessionsync

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hagent/hagent/l2chan"
)

// Verify compares this member's table with the tables of the peers that
// send it copies (its primary; with virtual clusters the primary of each
// vcluster it is secondary of), over the session channel:
//
//  1. a bucket request: the primary answers, for each of verifyBuckets
//     buckets (by a hash of the flow key), the number of its flows and the
//     sum of their digests (verifyFields): 3 KB whatever the table's size;
//  2. for each bucket whose count or sum differ here (at most
//     verifyMaxBuckets), a flows request: the key and digest of each of its
//     flows, verifyPage at a time;
//  3. for the first flows whose digests differ (at most verifyMaxShown), a
//     records request: the primary's records, compared field by field.
//
// Both sides digest only what a copy must match: the primary the flows it
// would send (the bulk copy's filter: wanted, in its scope, not dying, not
// younger than Config.Delay); this member the flows it may receive from
// that peer (wanted, in the peer's scope, not this member's own scope or
// addresses), and the primary leaves out the flows of the requester's
// addresses (its own traffic, never a copy). An older peer that does not
// know these kinds counts them as malformed and does not answer: Verify
// says so.
const (
	// KindVerifyRequest and KindVerifyReply carry verify's requests and
	// answers (verify.go), outside the trust checks of records: they
	// change no table.
	verifyBuckets = 256
	// verifyMaxBuckets bounds the differing buckets examined per peer
	// (a table missing entirely differs in every bucket; a few name the
	// first differences, the bucket counts give the totals).
	verifyMaxBuckets = 16
	// verifyPage bounds the flows of one flows answer (49 KB of IPv6
	// keys).
	verifyPage = 1024
	// verifyMaxShown bounds the differences a result names.
	verifyMaxShown = 10
	// verifyMaxAddrs bounds the requester's addresses a bucket request
	// carries (more are left out: their flows show as differences).
	verifyMaxAddrs = 64
	// verifyMinInterval is the least time between two bucket requests
	// this node answers (each dumps the table); one request is answered
	// at a time, others are dropped and counted.
	verifyMinInterval = time.Second
	// verifySnapTTL is how long an answered bucket request's flows are
	// kept for the flows requests that follow it.
	verifySnapTTL = 30 * time.Second
	// verifyTimeout bounds the wait for each answer (the peer dumps its
	// table for some: 0.1 s for 100 000 flows of a kernel).
	verifyTimeout = 10 * time.Second
	// verifyLagMin is the least age of a difference that makes the health
	// WARN: a copy may lag by its replication delay (verifyLag).
	verifyLagMin = 5 * time.Second
	// verifyMaxTracked bounds the differing flows whose first sighting the
	// background verify remembers per peer.
	verifyMaxTracked = 4096
	// DefaultVerifyInterval is how often a secondary verifies its table in
	// the background (Config.VerifyInterval).
	DefaultVerifyInterval = 30 * time.Second
)

// verifyField is one field of a flow a copy must carry: the digest covers
// every one, and verify names those that differ. A field added to Flow
// that a copy carries is one line here (TestVerifyFieldsCoverFlow).
type verifyField struct {
	name string
	put  func(b []byte, f *Flow) []byte
}

var verifyFields = []verifyField{
	{"reply tuple (NAT)", func(b []byte, f *Flow) []byte { return appendVerifyTuple(b, &f.Reply) }},
	{"status", func(b []byte, f *Flow) []byte { return binary.BigEndian.AppendUint32(b, f.Status&CopyStatus) }},
	{"mark", func(b []byte, f *Flow) []byte { return binary.BigEndian.AppendUint32(b, f.Mark) }},
	{"labels", func(b []byte, f *Flow) []byte { return appendLabels(b, f.Labels) }},
	{"helper", func(b []byte, f *Flow) []byte { return append(b, f.Helper...) }},
	{"tcp state", func(b []byte, f *Flow) []byte { return appendTCPState(b, f.TCP) }},
	{"seqadj", func(b []byte, f *Flow) []byte { return appendOpt(b, f.SeqAdj) }},
	{"synproxy", func(b []byte, f *Flow) []byte { return appendOpt(b, f.SynProxy) }},
	{"sctp", func(b []byte, f *Flow) []byte { return appendOpt(b, f.SCTP) }},
	{"dccp", func(b []byte, f *Flow) []byte { return appendOpt(b, f.DCCP) }},
	{"master", func(b []byte, f *Flow) []byte { return appendMaster(b, f.Master) }},
}

// appendOpt encodes an optional fixed-size field: nothing for none, its
// value (binary.Append, big endian) otherwise.
func appendOpt[T any](b []byte, v *T) []byte {
	if v == nil {
		return b
	}
	b, err := binary.Append(append(b, 1), binary.BigEndian, v)
	if err != nil { // not a fixed-size type: a programming error
		panic(err)
	}
	return b
}

func appendMaster(b []byte, k *Key) []byte {
	if k == nil {
		return b
	}
	return appendVerifyKey(append(b, 1), k)
}

// The fields of Flow left out of the digest, and why: Timeout (a copy's
// counts down on its own, connectionless ones are lengthened by the
// sender), the TCP window scales and flags (the kernel's tracking of each
// side's window moves with every packet and is not a sync event).

func appendVerifyTuple(b []byte, t *Tuple) []byte {
	b = append(b, t.Src.AsSlice()...)
	b = append(b, t.Dst.AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, t.SrcPort)
	return binary.BigEndian.AppendUint16(b, t.DstPort)
}

// appendLabels: all-zero labels are none (a kernel may report the
// extension empty).
func appendLabels(b, l []byte) []byte {
	for _, c := range l {
		if c != 0 {
			return append(b, l...)
		}
	}
	return b
}

func appendTCPState(b []byte, t *TCPInfo) []byte {
	if t == nil {
		return b
	}
	return append(b, t.State)
}

// appendVerifyKey encodes a key: family(1: 4 or 6) zone(2) proto(1)
// src dst sport(2) dport(2).
func appendVerifyKey(b []byte, k *Key) []byte {
	fam := byte(4)
	if k.Orig.Src.Is6() && !k.Orig.Src.Is4In6() {
		fam = 6
	}
	b = append(b, fam)
	b = binary.BigEndian.AppendUint16(b, k.Zone)
	b = append(b, k.Proto)
	for _, a := range []netip.Addr{k.Orig.Src, k.Orig.Dst} {
		switch a = a.Unmap(); {
		case fam == 6:
			x := a.As16()
			b = append(b, x[:]...)
		case a.Is4():
			x := a.As4()
			b = append(b, x[:]...)
		default: // not a flow a kernel holds: any bytes, no panic
			b = append(b, 0, 0, 0, 0)
		}
	}
	b = binary.BigEndian.AppendUint16(b, k.Orig.SrcPort)
	return binary.BigEndian.AppendUint16(b, k.Orig.DstPort)
}

// decodeVerifyKey decodes a key at b, returning its length.
func decodeVerifyKey(b []byte, k *Key) (int, error) {
	if len(b) < 1 {
		return 0, io.ErrUnexpectedEOF
	}
	alen := 4
	switch b[0] {
	case 4:
	case 6:
		alen = 16
	default:
		return 0, fmt.Errorf("%w: key family %d", ErrMalformed, b[0])
	}
	n := 4 + 2*alen + 4
	if len(b) < n {
		return 0, io.ErrUnexpectedEOF
	}
	k.Zone = binary.BigEndian.Uint16(b[1:])
	k.Proto = b[3]
	p := 4
	k.Orig.Src = readAddr(b, &p, alen)
	k.Orig.Dst = readAddr(b, &p, alen)
	if alen == 16 && (k.Orig.Src.Is4In6() || k.Orig.Dst.Is4In6()) {
		return 0, fmt.Errorf("%w: IPv4-mapped address in an IPv6 key", ErrMalformed)
	}
	k.Orig.SrcPort = binary.BigEndian.Uint16(b[p:])
	k.Orig.DstPort = binary.BigEndian.Uint16(b[p+2:])
	return n, nil
}

func fnv64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// flowDigest returns f's bucket and digest; buf is scratch space.
func flowDigest(f *Flow, buf *[]byte) (bucket int, kb string, d uint64) {
	k := f.Key()
	b := appendVerifyKey((*buf)[:0], &k)
	nk := len(b)
	bucket = int(fnv64(b) >> 56)
	for i := range verifyFields {
		b = verifyFields[i].put(b, f)
		b = append(b, 0xff) // field separator: no two encodings alias
	}
	*buf = b
	return bucket, string(b[:nk]), fnv64(b)
}

// verifyEntry is one flow of a verifyTable.
type verifyEntry struct {
	key string // appendVerifyKey
	d   uint64
}

// verifyTable is what verify compares: the digests of a table's flows
// that a copy must match, by bucket.
type verifyTable struct {
	total   int
	count   [verifyBuckets]uint32
	sum     [verifyBuckets]uint64
	entries [verifyBuckets][]verifyEntry // sorted by key
}

// digestTable dumps the table and digests the flows include accepts.
func (e *Engine) digestTable(include func(*Flow) bool) (*verifyTable, error) {
	vt := &verifyTable{}
	var buf []byte
	err := e.cfg.Table.Dump(func(f *Flow) {
		if f.Status&StatusDying != 0 || !include(f) {
			return
		}
		bk, kb, d := flowDigest(f, &buf)
		vt.total++
		vt.count[bk]++
		vt.sum[bk] += d
		vt.entries[bk] = append(vt.entries[bk], verifyEntry{kb, d})
	})
	for i := range vt.entries {
		slices.SortFunc(vt.entries[i], func(a, b verifyEntry) int { return cmpString(a.key, b.key) })
	}
	return vt, err
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// The wire: the message header of flow.go (kind KindVerifyRequest or
// KindVerifyReply, gen the request's id, oldest and count 0), then
//
//	request: level(1)
//	  level 0 (buckets): naddr(1) naddr × address(16)
//	  level 1 (flows):   bucket(1) from(4)
//	  level 2 (records): n(1) n × key
//	reply: level(1) status(1)
//	  level 0: total(4) 256 × (count(4) sum(8))
//	  level 1: bucket(1) from(4) more(1) n(2) n × (key digest(8))
//	  level 2: n(1) n × (present(1) [a record of flow.go])
const (
	verifyLevelBuckets = 0
	verifyLevelFlows   = 1
	verifyLevelRecords = 2

	verifyOK         = 0
	verifyNotSending = 1 // the peer is not primary: nothing to compare with
	verifyNoSnapshot = 2 // a flows request without its bucket request
	verifyBusy       = 3 // a bucket request within verifyMinInterval of another

	// verifyMaxPages bounds the flows answers read for one bucket (64 Ki
	// flows: a bucket of a 16 M-flow table).
	verifyMaxPages = 64
)

// verifyMsg is a decoded verify request or answer.
type verifyMsg struct {
	reply    bool
	fromPeer string // the sender (not on the wire)
	id       uint32
	level    byte
	status   byte
	addrs    []netip.Addr // request, level 0
	bucket   byte         // level 1
	from     uint32       // level 1
	keys     []Key        // request level 2
	// answers
	total   uint32
	count   [verifyBuckets]uint32
	sum     [verifyBuckets]uint64
	more    bool
	entries []verifyEntry // level 1
	recs    []*Flow       // level 2, nil: not present
}

// isVerify reports whether a session message is one of verify's.
func isVerify(b []byte) bool {
	return len(b) >= headerLen && b[0] == 'S' && b[1] == 'S' && b[2] == Version &&
		(Kind(b[3]) == KindVerifyRequest || Kind(b[3]) == KindVerifyReply)
}

func (v *verifyMsg) appendBinary(b []byte) ([]byte, error) {
	kind := KindVerifyRequest
	if v.reply {
		kind = KindVerifyReply
	}
	b = append(b, 'S', 'S', Version, byte(kind))
	b = binary.BigEndian.AppendUint32(b, v.id)
	b = append(b, make([]byte, 12)...) // oldest, count
	b = append(b, v.level)
	if v.reply {
		b = append(b, v.status)
		if v.status != verifyOK {
			return b, nil
		}
	}
	switch {
	case !v.reply && v.level == verifyLevelBuckets:
		n := min(len(v.addrs), verifyMaxAddrs)
		b = append(b, byte(n))
		for _, a := range v.addrs[:n] {
			x := a.As16()
			b = append(b, x[:]...)
		}
	case v.level == verifyLevelFlows:
		b = append(b, v.bucket)
		b = binary.BigEndian.AppendUint32(b, v.from)
		if v.reply {
			b = append(b, b2byte(v.more))
			b = binary.BigEndian.AppendUint16(b, uint16(len(v.entries)))
			for _, en := range v.entries {
				b = append(b, en.key...)
				b = binary.BigEndian.AppendUint64(b, en.d)
			}
		}
	case !v.reply && v.level == verifyLevelRecords:
		b = append(b, byte(len(v.keys)))
		for i := range v.keys {
			b = appendVerifyKey(b, &v.keys[i])
		}
	case v.reply && v.level == verifyLevelBuckets:
		b = binary.BigEndian.AppendUint32(b, v.total)
		for i := range verifyBuckets {
			b = binary.BigEndian.AppendUint32(b, v.count[i])
			b = binary.BigEndian.AppendUint64(b, v.sum[i])
		}
	case v.reply && v.level == verifyLevelRecords:
		b = append(b, byte(len(v.recs)))
		for _, f := range v.recs {
			if f == nil {
				b = append(b, 0)
				continue
			}
			b = append(b, 1)
			var err error
			if b, err = appendRecord(b, &Record{Op: OpUpsert, Flow: *f}); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("sessionsync: verify level %d", v.level)
	}
	return b, nil
}

func b2byte(x bool) byte {
	if x {
		return 1
	}
	return 0
}

// unmarshal decodes a verify message; every length is checked before it
// is used, and nothing is allocated beyond what the input holds
// (FuzzVerifyDecode).
func (v *verifyMsg) unmarshal(b []byte) error {
	if !isVerify(b) {
		return ErrBadMagic
	}
	*v = verifyMsg{reply: Kind(b[3]) == KindVerifyReply, id: binary.BigEndian.Uint32(b[4:])}
	b = b[headerLen:]
	if len(b) < 1 {
		return io.ErrUnexpectedEOF
	}
	v.level, b = b[0], b[1:]
	if v.level > verifyLevelRecords {
		return fmt.Errorf("%w: verify level %d", ErrMalformed, v.level)
	}
	if v.reply {
		if len(b) < 1 {
			return io.ErrUnexpectedEOF
		}
		v.status, b = b[0], b[1:]
		if v.status != verifyOK {
			return verifyEnd(b)
		}
	}
	switch {
	case !v.reply && v.level == verifyLevelBuckets:
		if len(b) < 1 || int(b[0]) > verifyMaxAddrs || len(b) != 1+16*int(b[0]) {
			return ErrMalformed
		}
		for i := range int(b[0]) {
			v.addrs = append(v.addrs, netip.AddrFrom16([16]byte(b[1+16*i:])).Unmap())
		}
		return nil
	case v.level == verifyLevelFlows:
		if len(b) < 5 {
			return io.ErrUnexpectedEOF
		}
		v.bucket, v.from, b = b[0], binary.BigEndian.Uint32(b[1:]), b[5:]
		if !v.reply {
			return verifyEnd(b)
		}
		if len(b) < 3 {
			return io.ErrUnexpectedEOF
		}
		v.more = b[0] != 0
		n := int(binary.BigEndian.Uint16(b[1:]))
		b = b[3:]
		if n > verifyPage || n*(16+8) > len(b) {
			return ErrMalformed
		}
		v.entries = make([]verifyEntry, 0, n)
		for range n {
			var k Key
			kl, err := decodeVerifyKey(b, &k)
			if err != nil {
				return err
			}
			if len(b) < kl+8 {
				return io.ErrUnexpectedEOF
			}
			v.entries = append(v.entries, verifyEntry{string(b[:kl]), binary.BigEndian.Uint64(b[kl:])})
			b = b[kl+8:]
		}
		return verifyEnd(b)
	case !v.reply && v.level == verifyLevelRecords:
		if len(b) < 1 || int(b[0]) > verifyMaxShown {
			return ErrMalformed
		}
		n := int(b[0])
		b = b[1:]
		for range n {
			var k Key
			kl, err := decodeVerifyKey(b, &k)
			if err != nil {
				return err
			}
			v.keys = append(v.keys, k)
			b = b[kl:]
		}
		return verifyEnd(b)
	case v.reply && v.level == verifyLevelBuckets:
		if len(b) != 4+verifyBuckets*12 {
			return ErrMalformed
		}
		v.total = binary.BigEndian.Uint32(b)
		for i := range verifyBuckets {
			v.count[i] = binary.BigEndian.Uint32(b[4+12*i:])
			v.sum[i] = binary.BigEndian.Uint64(b[8+12*i:])
		}
		return nil
	default: // reply, records
		if len(b) < 1 || int(b[0]) > verifyMaxShown {
			return ErrMalformed
		}
		n := int(b[0])
		b = b[1:]
		for range n {
			if len(b) < 1 {
				return io.ErrUnexpectedEOF
			}
			if b[0] == 0 {
				v.recs, b = append(v.recs, nil), b[1:]
				continue
			}
			var r Record
			rl, err := decodeRecord(b[1:], &r)
			if err != nil {
				return err
			}
			if r.Expect != nil {
				return fmt.Errorf("%w: an expectation in a verify answer", ErrMalformed)
			}
			v.recs = append(v.recs, &r.Flow)
			b = b[1+rl:]
		}
		return verifyEnd(b)
	}
}

func verifyEnd(b []byte) error {
	if len(b) != 0 {
		return ErrMalformed
	}
	return nil
}

// VerifyResult is the comparison of this member's table with one peer's.
type VerifyResult struct {
	// Peer is the member compared with (the primary).
	Peer string `json:"peer"`
	// At is when the comparison ran.
	At time.Time `json:"at"`
	// Error says why the comparison could not run ("" when it ran).
	Error string `json:"error,omitempty"`
	// Compared are the peer's flows a copy must match, Local this
	// member's flows that may be copies of the peer's.
	Compared int `json:"compared"`
	Local    int `json:"local"`
	// DifferingBuckets is the number of buckets whose flows differ;
	// Partial is true when more than verifyMaxBuckets did (the counts
	// below are of the examined ones; Compared and Local give the totals).
	DifferingBuckets int  `json:"differing_buckets"`
	Partial          bool `json:"partial,omitempty"`
	// Missing are flows the peer has and this member lacks, Extra the
	// reverse, Differing flows both have with different fields.
	Missing   int `json:"missing"`
	Extra     int `json:"extra"`
	Differing int `json:"differing"`
	// Persistent is the number of the differences seen by verifies at
	// least the sync lag apart (the background verify; health WARN).
	Persistent int `json:"persistent,omitempty"`
	// First are the first differences (at most verifyMaxShown).
	First []VerifyDiff `json:"first,omitempty"`
	// Bytes is what the comparison cost on the channel (both ways).
	Bytes int `json:"bytes"`
	// keys are the differences found (at most verifyMaxTracked), for the
	// background verify.
	keys []string
}

// InSync reports whether the comparison ran and found no difference.
func (r *VerifyResult) InSync() bool {
	return r.Error == "" && r.DifferingBuckets == 0 && r.Compared == r.Local
}

// String summarizes r (its first differences included) for logs and
// test failures.
func (r VerifyResult) String() string {
	if r.Error != "" {
		return fmt.Sprintf("verify with %s: %s", r.Peer, r.Error)
	}
	s := fmt.Sprintf("verify with %s: %d flows there, %d here, %d differing buckets, %d missing here, %d extra, %d differing, %d persistent",
		r.Peer, r.Compared, r.Local, r.DifferingBuckets, r.Missing, r.Extra, r.Differing, r.Persistent)
	for _, d := range r.First {
		s += fmt.Sprintf("; %s %s %v", d.What, d.Flow, d.Fields)
	}
	return s
}

// Differences is the number of differing flows found.
func (r *VerifyResult) Differences() int { return r.Missing + r.Extra + r.Differing }

// VerifyDiff is one flow that differs.
type VerifyDiff struct {
	// What is "missing here", "extra here" or "differs".
	What string `json:"what"`
	Flow string `json:"flow"`
	// Fields name the differing fields of a flow that differs, with both
	// values ("mark: here 00000005, on node-a 00000006").
	Fields []string `json:"fields,omitempty"`
	key    string
}

// verifier is the engine's verify state.
type verifier struct {
	mu          sync.Mutex
	nextID      uint32
	waiting     map[uint32]chan *verifyMsg // requests awaiting their answer
	run         sync.Mutex                 // held by Verify
	queue       chan *verifyMsg            // requests to answer (requests)
	lastBuckets time.Time
	snap        *verifySnap
	// last are the latest results by peer (status, metrics), and since
	// the first sighting of each difference (background verify).
	last  map[string]VerifyResult
	since map[string]map[string]time.Time
	// dropped counts requests not answered (busy, too soon), stray the
	// answers that matched no request, bad the malformed ones.
	dropped, stray, bad uint64
}

// verifySnap is the digest table of the last bucket request answered,
// for the flows requests that follow it.
type verifySnap struct {
	peer string
	id   uint32
	at   time.Time
	vt   *verifyTable
	excl map[netip.Addr]bool
}

// handleVerify takes a verify message (the applying goroutine; it never
// blocks: requests are answered on a goroutine of their own, one at a
// time, answers handed to the waiting Verify).
func (e *Engine) handleVerify(msg l2chan.Message) {
	v := &verifyMsg{}
	if err := v.unmarshal(msg.Data); err != nil {
		e.vfy.mu.Lock()
		e.vfy.bad++
		e.vfy.mu.Unlock()
		return
	}
	v.fromPeer = msg.From
	if v.reply {
		e.vfy.mu.Lock()
		ch := e.vfy.waiting[v.id]
		if ch == nil {
			e.vfy.stray++
		}
		e.vfy.mu.Unlock()
		if ch != nil {
			select {
			case ch <- v:
			default:
				e.vfy.mu.Lock()
				e.vfy.stray++
				e.vfy.mu.Unlock()
			}
		}
		return
	}
	select {
	case e.vfy.requests() <- v:
	default:
		e.vfy.mu.Lock()
		e.vfy.dropped++
		e.vfy.mu.Unlock()
	}
}

// verifyQueue bounds the requests waiting for their answer: one peer's
// verify has one in flight at a time, more are dropped and counted.
const verifyQueue = 4

// requests is the queue of requests to answer.
func (v *verifier) requests() chan *verifyMsg {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.queue == nil {
		v.queue = make(chan *verifyMsg, verifyQueue)
	}
	return v.queue
}

// verifyRun answers the peers' requests, one at a time, and runs the
// background verify, until ctx is done.
func (e *Engine) verifyRun(ctx context.Context) {
	done := make(chan struct{})
	go func() { defer close(done); e.verifyLoop(ctx) }()
	q := e.vfy.requests()
	for {
		select {
		case <-ctx.Done():
			<-done
			return
		case v := <-q:
			e.answerVerify(ctx, v.fromPeer, v)
		}
	}
}

// sendable reports whether this node, as primary, copies f (the bulk
// copy's filter, young flows aside).
func (e *Engine) sendable(f *Flow) bool {
	return f.Status&StatusDying == 0 && e.wanted(f) && e.owned(f)
}

// answerVerify answers one request of peer.
func (e *Engine) answerVerify(ctx context.Context, peer string, v *verifyMsg) {
	now := e.cfg.Now()
	ans := &verifyMsg{reply: true, id: v.id, level: v.level}
	e.mu.Lock()
	primary := e.primary
	var young map[Key]bool
	if e.cfg.Delay > 0 {
		young = make(map[Key]bool, len(e.pending))
		for k := range e.pending {
			young[k] = true
		}
	}
	e.mu.Unlock()
	switch {
	case !primary || e.cfg.Symmetric:
		ans.status = verifyNotSending
	case v.level == verifyLevelBuckets:
		e.vfy.mu.Lock()
		soon := !e.vfy.lastBuckets.IsZero() && now.Sub(e.vfy.lastBuckets) < verifyMinInterval
		if soon {
			e.vfy.dropped++
		} else {
			e.vfy.lastBuckets = now
		}
		e.vfy.mu.Unlock()
		if soon {
			ans.status = verifyBusy
			break
		}
		excl := map[netip.Addr]bool{}
		for _, a := range v.addrs {
			excl[a] = true
		}
		vt, err := e.digestTable(func(f *Flow) bool {
			return e.sendable(f) && !young[f.Key()] && !touches(f, excl)
		})
		if err != nil {
			e.log.Warn("verify: dump failed", "error", err)
			return
		}
		e.vfy.mu.Lock()
		e.vfy.snap = &verifySnap{peer: peer, id: v.id, at: now, vt: vt, excl: excl}
		e.vfy.mu.Unlock()
		ans.total, ans.count, ans.sum = uint32(vt.total), vt.count, vt.sum
	case v.level == verifyLevelFlows:
		e.vfy.mu.Lock()
		s := e.vfy.snap
		e.vfy.mu.Unlock()
		if s == nil || s.peer != peer || s.id != v.id || now.Sub(s.at) > verifySnapTTL {
			ans.status = verifyNoSnapshot
			break
		}
		all := s.vt.entries[v.bucket]
		from := min(int(v.from), len(all))
		to := min(from+verifyPage, len(all))
		ans.bucket, ans.from, ans.entries, ans.more = v.bucket, uint32(from), all[from:to], to < len(all)
	default: // records
		want := map[Key]int{}
		for i, k := range v.keys {
			want[k] = i
		}
		ans.recs = make([]*Flow, len(v.keys))
		if err := e.cfg.Table.Dump(func(f *Flow) {
			if i, ok := want[f.Key()]; ok && e.sendable(f) {
				c := *f
				ans.recs[i] = &c
			}
		}); err != nil {
			e.log.Warn("verify: dump failed", "error", err)
			return
		}
	}
	b, err := ans.appendBinary(nil)
	if err != nil {
		e.log.Warn("verify: cannot encode an answer", "error", err)
		return
	}
	sctx, cancel := context.WithTimeout(ctx, e.cfg.SendTimeout)
	defer cancel()
	_ = e.cfg.Transport.Send(sctx, peer, b)
}

// touches reports whether f has an address of addrs.
func touches(f *Flow, addrs map[netip.Addr]bool) bool {
	return len(addrs) > 0 && (addrs[f.Orig.Src.Unmap()] || addrs[f.Orig.Dst.Unmap()] || addrs[f.Reply.Src.Unmap()] || addrs[f.Reply.Dst.Unmap()])
}

// ask sends request v to peer and waits for its answer.
func (e *Engine) ask(ctx context.Context, peer string, v *verifyMsg, cost *int) (*verifyMsg, error) {
	ch := make(chan *verifyMsg, 1)
	e.vfy.mu.Lock()
	if e.vfy.waiting == nil {
		e.vfy.waiting = map[uint32]chan *verifyMsg{}
	}
	if v.level == verifyLevelBuckets {
		e.vfy.nextID++
		v.id = e.vfy.nextID
	}
	e.vfy.waiting[v.id] = ch
	e.vfy.mu.Unlock()
	defer func() {
		e.vfy.mu.Lock()
		delete(e.vfy.waiting, v.id)
		e.vfy.mu.Unlock()
	}()
	b, err := v.appendBinary(nil)
	if err != nil {
		return nil, err
	}
	*cost += len(b)
	ctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	if err := e.cfg.Transport.Send(ctx, peer, b); err != nil {
		return nil, fmt.Errorf("sending the request to %s: %w", peer, err)
	}
	for {
		select {
		case a := <-ch:
			if a.fromPeer != peer || a.level != v.level {
				continue
			}
			*cost += verifyCost(a)
			switch a.status {
			case verifyOK:
				return a, nil
			case verifyNotSending:
				return nil, fmt.Errorf("%s does not send copies (not primary)", peer)
			case verifyBusy:
				return nil, errVerifyBusy
			default:
				return nil, fmt.Errorf("%s lost the comparison's state (another verify ran meanwhile): run it again", peer)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("%s did not answer within %s (busy, or a version without verify)", peer, verifyTimeout)
		}
	}
}

var errVerifyBusy = errors.New("the peer answered another verify less than a second ago")

// verifyCost estimates an answer's size on the wire.
func verifyCost(a *verifyMsg) int {
	n := headerLen + 2
	switch a.level {
	case verifyLevelBuckets:
		n += 4 + verifyBuckets*12
	case verifyLevelFlows:
		n += 8
		for _, en := range a.entries {
			n += len(en.key) + 8
		}
	default:
		for _, f := range a.recs {
			n++
			if f != nil {
				n += recordLen(f)
			}
		}
	}
	return n
}

// Verify compares this member's table with the table of each peer that
// may send it copies now (see the top of verify.go). It errs when there is
// nobody to compare with; a peer that cannot be compared has its Error.
func (e *Engine) Verify(ctx context.Context) ([]VerifyResult, error) {
	if e.cfg.Symmetric {
		return nil, errors.New("verify compares a secondary with its primary; in fgsp mode every member forwards flows of its own")
	}
	peers := e.currentSenders()
	if len(peers) == 0 {
		return nil, errors.New("no primary to compare with (this node is the primary, or none is known)")
	}
	// One verify at a time (the command and the background one): each
	// peer keeps the state of one.
	e.vfy.run.Lock()
	defer e.vfy.run.Unlock()
	var out []VerifyResult
	for _, p := range peers {
		r := e.verifyPeer(ctx, p)
		e.vfy.mu.Lock()
		if e.vfy.last == nil {
			e.vfy.last = map[string]VerifyResult{}
		}
		r.Persistent = e.vfy.last[p].Persistent // the background verify's
		e.vfy.last[p] = r
		e.vfy.mu.Unlock()
		out = append(out, r)
	}
	return out, nil
}

// currentSenders lists the peers entitled to send now (not those within
// their grace).
func (e *Engine) currentSenders() []string {
	e.trustMu.Lock()
	defer e.trustMu.Unlock()
	if e.senders == nil {
		return nil
	}
	var names []string
	for n := range e.senders.cur {
		if n != e.cfg.Self {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// verifyPeer compares with one peer.
func (e *Engine) verifyPeer(ctx context.Context, peer string) VerifyResult {
	r := VerifyResult{Peer: peer, At: e.cfg.Now()}
	scope, _ := e.senderScope(peer, r.At)
	addrs := e.localAddrs()
	own := map[netip.Addr]bool{}
	for _, a := range addrs {
		own[a.Unmap()] = true
	}
	mine := func(f *Flow) bool {
		return e.wanted(f) && !e.keeps(f) && (scope == nil || scope(f)) && !touches(f, own)
	}
	type local struct {
		vt  *verifyTable
		err error
	}
	lc := make(chan local, 1)
	go func() { vt, err := e.digestTable(mine); lc <- local{vt, err} }()
	a, err := e.ask(ctx, peer, &verifyMsg{level: verifyLevelBuckets, addrs: addrs}, &r.Bytes)
	if errors.Is(err, errVerifyBusy) {
		select { // once more, after the peer's bound
		case <-time.After(verifyMinInterval):
			a, err = e.ask(ctx, peer, &verifyMsg{level: verifyLevelBuckets, addrs: addrs}, &r.Bytes)
		case <-ctx.Done():
		}
	}
	l := <-lc
	if err == nil && l.err != nil {
		err = fmt.Errorf("reading the local table: %w", l.err)
	}
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Compared, r.Local = int(a.total), l.vt.total
	var differ []int
	for i := range verifyBuckets {
		if a.count[i] != l.vt.count[i] || a.sum[i] != l.vt.sum[i] {
			differ = append(differ, i)
		}
	}
	r.DifferingBuckets = len(differ)
	if len(differ) > verifyMaxBuckets {
		differ, r.Partial = differ[:verifyMaxBuckets], true
	}
	var differing []VerifyDiff
	for _, bk := range differ {
		theirs := map[string]uint64{}
		for from, page := uint32(0), 0; page < verifyMaxPages; page++ {
			fa, err := e.ask(ctx, peer, &verifyMsg{id: a.id, level: verifyLevelFlows, bucket: byte(bk), from: from}, &r.Bytes)
			if err != nil {
				r.Error = err.Error()
				return r
			}
			for _, en := range fa.entries {
				theirs[en.key] = en.d
			}
			if !fa.more || len(fa.entries) == 0 {
				break
			}
			from += uint32(len(fa.entries))
		}
		for _, en := range l.vt.entries[bk] {
			d, ok := theirs[en.key]
			switch {
			case !ok:
				r.Extra++
				r.add(VerifyDiff{What: "extra here", key: en.key})
			case d != en.d:
				r.Differing++
				if len(r.keys) < verifyMaxTracked {
					r.keys = append(r.keys, en.key)
				}
				if len(differing) < verifyMaxShown {
					differing = append(differing, VerifyDiff{What: "differs", key: en.key})
				}
			}
			delete(theirs, en.key)
		}
		keys := make([]string, 0, len(theirs))
		for k := range theirs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			r.Missing++
			r.add(VerifyDiff{What: "missing here", key: k})
		}
	}
	if len(differing) > 0 {
		e.nameFields(ctx, peer, a.id, &r, differing, mine)
	}
	for i := range r.First {
		if r.First[i].Flow == "" {
			var k Key
			if _, err := decodeVerifyKey([]byte(r.First[i].key), &k); err == nil {
				f := Flow{Zone: k.Zone, Proto: k.Proto, Orig: k.Orig}
				r.First[i].Flow = f.String()
			}
		}
	}
	return r
}

// add counts d and keeps it among the first differences.
func (r *VerifyResult) add(d VerifyDiff) {
	if len(r.keys) < verifyMaxTracked {
		r.keys = append(r.keys, d.key)
	}
	if len(r.First) < verifyMaxShown {
		r.First = append(r.First, d)
	}
}

// nameFields asks peer for its records of the first differing flows and
// names the fields that differ.
func (e *Engine) nameFields(ctx context.Context, peer string, id uint32, r *VerifyResult, differing []VerifyDiff, mine func(*Flow) bool) {
	n := min(len(differing), max(verifyMaxShown-len(r.First), 1))
	differing = differing[:n]
	req := &verifyMsg{id: id, level: verifyLevelRecords}
	want := map[Key]int{}
	for i := range differing {
		var k Key
		if _, err := decodeVerifyKey([]byte(differing[i].key), &k); err != nil {
			continue
		}
		want[k] = i
		req.keys = append(req.keys, k)
	}
	here := make([]*Flow, len(differing))
	_ = e.cfg.Table.Dump(func(f *Flow) {
		if i, ok := want[f.Key()]; ok && mine(f) {
			c := *f
			here[i] = &c
		}
	})
	a, err := e.ask(ctx, peer, req, &r.Bytes)
	for i := range differing {
		d := &differing[i]
		if h := here[i]; h != nil {
			d.Flow = h.String()
		}
		switch {
		case err != nil:
			d.Fields = []string{"(the fields could not be read: " + err.Error() + ")"}
			continue
		case i >= len(a.recs) || a.recs[i] == nil || here[i] == nil:
			d.Fields = []string{"(the fields could not be read: the flow changed meanwhile)"}
			continue
		}
		for _, fl := range verifyFields {
			x, y := fl.put(nil, here[i]), fl.put(nil, a.recs[i])
			if !bytes.Equal(x, y) {
				d.Fields = append(d.Fields, fmt.Sprintf("%s: here %s, on %s %s", fl.name, showField(x), peer, showField(y)))
			}
		}
	}
	// The differing flows come first: they are the ones a failover would
	// carry wrong.
	r.First = append(differing, r.First...)
	if len(r.First) > verifyMaxShown {
		r.First = r.First[:verifyMaxShown]
	}
}

func showField(b []byte) string {
	if len(b) == 0 {
		return "none"
	}
	return hex.EncodeToString(b)
}

// verifyLag is how long a difference may last before the health warns:
// twice the sync delay, at least verifyLagMin.
func (e *Engine) verifyLag() time.Duration { return max(2*e.cfg.Delay, verifyLagMin) }

// verifyRound is one background verify (a secondary; nothing on a
// primary with no sender): it keeps, per differing flow, when a round
// first saw it, and counts as persistent those that every round since has
// seen and for longer than verifyLag (a flow in flight differs for one
// round only). It returns whether a difference was seen: the next round
// comes sooner.
func (e *Engine) verifyRound(ctx context.Context, now time.Time) bool {
	if e.copying() {
		return false // the table is still arriving: nothing to judge yet
	}
	res, err := e.Verify(ctx)
	e.vfy.mu.Lock()
	defer e.vfy.mu.Unlock()
	prev := e.vfy.since
	e.vfy.since = map[string]map[string]time.Time{}
	if err != nil {
		e.vfy.last = nil
		return false
	}
	seen := false
	for _, r := range res {
		if r.Error != "" {
			e.vfy.last[r.Peer] = r
			continue
		}
		cur := make(map[string]time.Time, len(r.keys))
		r.Persistent = 0
		for _, k := range r.keys {
			first, ok := prev[r.Peer][k]
			if !ok {
				first = now
			}
			cur[k] = first
			if now.Sub(first) >= e.verifyLag() {
				r.Persistent++
			}
		}
		seen = seen || !r.InSync()
		e.vfy.since[r.Peer] = cur
		e.vfy.last[r.Peer] = r
	}
	return seen
}

// copying reports whether no bulk copy was received whole yet, or one is
// under way.
func (e *Engine) copying() bool {
	e.recvMu.Lock()
	defer e.recvMu.Unlock()
	if !e.rc.bulkDone {
		return true
	}
	for _, rs := range e.recv {
		if rs.inBulk {
			return true
		}
	}
	return false
}

// verifyLoop runs verifyRound every Config.VerifyInterval, and after
// verifyLag when the last round saw a difference.
func (e *Engine) verifyLoop(ctx context.Context) {
	if e.cfg.VerifyInterval < 0 || e.cfg.Symmetric {
		return
	}
	wait := e.cfg.VerifyInterval
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = e.cfg.VerifyInterval
		if e.verifyRound(ctx, e.cfg.Now()) {
			wait = min(wait, e.verifyLag())
		}
	}
}

// verifyStatus adds the latest verify results to st, and a warning for
// each peer whose table differs from this one's for longer than the sync
// lag (TestVerifyPersistentDifferenceWarns).
func (e *Engine) verifyStatus(st *Status) {
	e.vfy.mu.Lock()
	defer e.vfy.mu.Unlock()
	st.VerifyDropped = e.vfy.dropped + e.vfy.stray + e.vfy.bad
	for _, r := range e.vfy.last {
		st.Verify = append(st.Verify, r)
		if r.Persistent > 0 {
			w := fmt.Sprintf("session table differs from %s's for over %s: %d flows (%d missing here, %d extra, %d differing)",
				r.Peer, e.verifyLag(), r.Differences(), r.Missing, r.Extra, r.Differing)
			if len(r.First) > 0 {
				w += fmt.Sprintf("; the first: %s %s", r.First[0].What, r.First[0].Flow)
			}
			st.Warnings = append(st.Warnings, w)
		}
	}
	sort.Slice(st.Verify, func(i, j int) bool { return st.Verify[i].Peer < st.Verify[j].Peer })
	sort.Strings(st.Warnings)
}
