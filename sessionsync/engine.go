package sessionsync

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hagent/hagent/l2chan"
	"github.com/hashicorp/go-hclog"
)

// ChannelLabel is the HKDF label of the session channel's keys (l2chan
// Config.Label): its keys are independent of configuration sync's.
const ChannelLabel = "hagent-session-v1"

// Transport is the reliable side the engine sends on; *l2chan.Channel
// implements it.
type Transport interface {
	// Send delivers msg to peer reliably and in order, returning when it
	// is acknowledged. msg may be reused once Send returns.
	Send(ctx context.Context, peer string, msg []byte) error
	// Recv yields the messages of all peers; it is closed on shutdown.
	Recv() <-chan l2chan.Message
}

var _ Transport = (*l2chan.Channel)(nil)

// AsyncTransport is a Transport that can keep several messages to a peer
// in flight (l2chan.Channel.SendAsync): the stream is then pipelined, so
// an event does not wait for the acknowledgement of the message before.
type AsyncTransport interface {
	SendAsync(peer string, msg []byte) (<-chan error, error)
}

var _ AsyncTransport = (*l2chan.Channel)(nil)

// streamWindow and bulkWindow are how many stream and bulk messages to one
// peer may await their acknowledgement at once.
const (
	streamWindow = 4
	bulkWindow   = 4
)

// bulkRetryMin and bulkRetryMax bound the wait before a failed bulk copy
// is sent again: it doubles from the first to the second while copies
// keep failing (an unreachable peer costs a dump every bulkRetryMax at
// most), and starts again from the first once one completes.
const (
	bulkRetryMin = 500 * time.Millisecond
	bulkRetryMax = 8 * time.Second
)

// Config configures an Engine. Zero values take DefaultConfig's.
type Config struct {
	// Self is this node's name.
	Self string
	// Table is the local connection-tracking table.
	Table Table
	// Transport carries the messages to and from the peers.
	Transport Transport
	// Connectionless also copies UDP and ICMP flows.
	Connectionless bool
	// NAT also copies NATed flows.
	NAT bool
	// Expectation also copies conntrack expectations (FTP, SIP helper
	// data channels); the Table must be an ExpectTable.
	Expectation bool
	// Delay copies a flow only once it has lived this long.
	Delay time.Duration
	// Ignore are prefixes whose flows (any address of either tuple) are
	// never copied.
	Ignore []netip.Prefix
	// Refresh is how often busy connectionless flows are re-sent; their
	// copies live two refresh periods longer than the original would.
	Refresh time.Duration
	// BatchRecords is the largest number of records in one message.
	BatchRecords int
	// MaxQueue is the number of records queued for a peer above which the
	// queue is dropped and the peer gets a bulk copy instead.
	MaxQueue int
	// StallAfter is how long records may wait for a peer's acknowledgment
	// before the sync counts as stalled (health ERROR).
	StallAfter time.Duration
	// SendTimeout bounds one Send.
	SendTimeout time.Duration
	// Logger receives state changes; nil discards them.
	Logger hclog.Logger
	// LocalAddrs returns this node's own addresses; nil reads the
	// interfaces. At the end of a bulk copy, flows of the local table
	// that the copy did not contain and that touch none of these
	// addresses (forwarded flows: on a secondary, copies) are deleted, so
	// copies made before an agent restart do not linger.
	LocalAddrs func() []netip.Addr
	// Symmetric is FGSP (cluster.mode fgsp): every member sends its flows
	// to every other and applies theirs; the caller passes primary true
	// to SetRole with every live peer. A received flow's own events are
	// not sent back, a change of it made by this member's traffic is
	// (symmetric.go), and the stale sweep at a bulk end spares the flows
	// this member forwards.
	Symmetric bool
	// Event, when set, receives history entries (kind "sessions").
	Event func(msg string)
	// Grace is how long a peer keeps the entitlement to send records it
	// lost (SetSenders), and how long a message from a peer not entitled
	// is held (trust.go); 0 is DefaultGrace.
	Grace time.Duration
	// Helpers reports whether a received copy may carry a connection
	// tracking helper (Flow.Helper, an expectation's); nil allows every
	// helper. The agent allows the helpers this kernel has
	// (KernelHelper).
	Helpers func(name string) bool
	// MaxTracked bounds the sender's bookkeeping maps (the expiry last
	// sent of connectionless flows, the birth times of Delay): above it
	// their stale entries are dropped, then any (counted
	// bookkeeping_evicted; an evicted flow is at worst re-sent once).
	// 0 is DefaultMaxTracked.
	MaxTracked int
	// VerifyInterval is how often a secondary compares its table with its
	// primary's in the background (verify.go); 0 is DefaultVerifyInterval,
	// negative never.
	VerifyInterval time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// OnAcked, when set, turns FGSP defer on (defer.go): stream messages
	// ask for applied acknowledgements, and OnAcked(k) is called once
	// every live peer has a flow Defer queued in its kernel (or left).
	OnAcked func(k Key)
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		NAT:          true,             // NAT to the cluster address survives failover
		Refresh:      5 * time.Second,  // re-send busy UDP/ICMP flows this often
		BatchRecords: 1024,             // ~60-120 KB per message
		MaxQueue:     1 << 20,          // a peer this far behind gets a bulk copy
		StallAfter:   5 * time.Second,  // unacknowledged this long: health ERROR
		SendTimeout:  10 * time.Second, // one message
		Grace:        DefaultGrace,
		MaxTracked:   DefaultMaxTracked,
	}
}

// Engine is session pickup on one member: the sender while primary, the
// receiver always.
type Engine struct {
	cfg Config
	log hclog.Logger

	mu        sync.Mutex
	primary   bool
	peers     map[string]*peerState
	gen       uint32
	runCtx    context.Context
	lastSent  map[Key]int64        // connectionless: expiry (unix ns) last sent
	born      map[Key]time.Time    // Delay: when a flow was first seen
	pending   map[Key]Flow         // Delay: flows not old enough yet
	known     map[Key]*known       // Symmetric: flows learned or sent (symmetric.go)
	gone      map[string][2]uint64 // flows and messages sent to peers no longer live
	prune     bool                 // Symmetric: an overrun lost destroy events; prune known
	renewing  map[Key]*renewMark   // flows Renew replaced, their events to come (renew.go)
	dfr       *deferState          // FGSP defer: flows waiting for acknowledgements (defer.go)
	renewGen  atomic.Uint64        // the renewal under way; a newer one stops it (renew.go)
	c         counters
	listenErr string

	isPrimary atomic.Bool // e.primary, for the receiving side

	recvMu sync.Mutex
	recv   map[string]*recvState
	rc     recvCounters
	lat    latencies

	readyCh chan chan int
	wg      sync.WaitGroup

	scope atomic.Pointer[func(*Flow) bool] // SetScope; nil: every flow

	// trust.go: the peers entitled to send (nil: SetSenders never
	// called), and the messages held from peers not entitled (yet),
	// owned by the applying goroutine.
	trustMu    sync.Mutex
	senders    *senderSet
	trustWake  chan struct{}
	held       []held
	heldFrom   map[string]int // messages held per peer
	heldBytes  int
	heldN      atomic.Int64
	heldGen    uint64        // sendersGen at the last look at held
	sendersGen atomic.Uint64 // SetSenders calls

	vfy verifier // verify.go
}

type counters struct {
	events, filtered, overruns, refreshed, overflows, unsupported uint64
	echoes, learnedSent                                           uint64
	expectSent                                                    uint64
	renewed                                                       uint64
	bookEvicted                                                   uint64
}

type recvCounters struct {
	messages, records, applied, errors, malformed, swept uint64
	sweepsSkipped                                        uint64
	expectApplied                                        uint64
	lastErr                                              string
	lastErrAt                                            time.Time
	reasons                                              map[string]uint64
	bulkDone                                             bool
	// trust.go: records and messages refused by reason, records whose
	// status was masked or whose helper was removed.
	refused                      map[string]uint64
	statusMasked, helpersRemoved uint64
	lastRefusal                  string
	lastRefusalAt                time.Time
}

type peerState struct {
	name         string
	cancel       context.CancelFunc
	wake         chan struct{}
	queue        []Record
	queueOldest  int64
	needBulk     bool
	bulk         BulkStatus
	sentRecs     uint64
	sentMsgs     uint64
	lastErr      string
	lastErrAt    time.Time
	lastProgress time.Time
	busySince    time.Time // records waiting since (zero: idle)
}

type recvState struct {
	from    string
	gen     uint32
	inBulk  bool
	seen    keySet // keyset.go
	applied keySet
	// received counts the records received from this peer.
	received uint64
	// bulkDone: a complete bulk copy came from this peer.
	bulkDone bool
	// before are the forwarded flows of the local table when the bulk
	// copy began (sweep candidates at its end).
	before []Key
	bulk   BulkStatus
}

// New builds an engine; Run starts it.
func New(cfg Config) (*Engine, error) {
	d := DefaultConfig()
	if cfg.Refresh == 0 {
		cfg.Refresh = d.Refresh
	}
	if cfg.BatchRecords == 0 {
		cfg.BatchRecords = d.BatchRecords
	}
	if cfg.MaxQueue == 0 {
		cfg.MaxQueue = d.MaxQueue
	}
	if cfg.StallAfter == 0 {
		cfg.StallAfter = d.StallAfter
	}
	if cfg.SendTimeout == 0 {
		cfg.SendTimeout = d.SendTimeout
	}
	if cfg.Grace <= 0 {
		cfg.Grace = d.Grace
	}
	if cfg.MaxTracked <= 0 {
		cfg.MaxTracked = d.MaxTracked
	}
	if cfg.VerifyInterval == 0 {
		cfg.VerifyInterval = DefaultVerifyInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Table == nil || cfg.Transport == nil {
		return nil, errors.New("sessionsync: Table and Transport are required")
	}
	if cfg.Self == "" {
		return nil, errors.New("sessionsync: Self is required")
	}
	return &Engine{
		cfg: cfg, log: cfg.Logger,
		peers: map[string]*peerState{}, lastSent: map[Key]int64{},
		born: map[Key]time.Time{}, pending: map[Key]Flow{}, known: map[Key]*known{},
		gone:      map[string][2]uint64{},
		recv:      map[string]*recvState{},
		rc:        recvCounters{reasons: map[string]uint64{}, refused: map[string]uint64{}},
		readyCh:   make(chan chan int),
		trustWake: make(chan struct{}, 1),
	}, nil
}

func (e *Engine) event(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	e.log.Info(msg)
	if e.cfg.Event != nil {
		e.cfg.Event(msg)
	}
}

// Run listens to the table, receives the peers' messages and sends to the
// peers until ctx is done.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	e.runCtx = ctx
	if q, ok := e.cfg.Table.(interface{ SetQuiet(bool) }); ok {
		q.SetQuiet(!e.primary)
	}
	for _, p := range e.peers {
		e.startPeer(p)
	}
	e.mu.Unlock()
	e.wg.Add(4)
	go func() { defer e.wg.Done(); e.verifyRun(ctx) }()
	go func() {
		defer e.wg.Done()
		if err := e.cfg.Table.Listen(ctx, e.onEvent); err != nil && ctx.Err() == nil {
			e.mu.Lock()
			e.listenErr = err.Error()
			e.mu.Unlock()
			e.log.Error("conntrack events stopped", "error", err)
		}
	}()
	go func() { defer e.wg.Done(); e.receive(ctx) }()
	go func() { defer e.wg.Done(); e.timers(ctx) }()
	<-ctx.Done()
	e.wg.Wait()
	return nil
}

// SetRole tells the engine whether this node is primary and, if so, the
// live peers to copy to. A peer that is new gets a bulk copy first.
// Becoming secondary stops sending at once (before the caller releases
// the addresses, whose removal destroys the masqueraded flows locally).
func (e *Engine) SetRole(primary bool, peers []string) {
	var released []Key // defer: flows that waited only for peers gone
	defer func() { e.notifyAcked(released) }()
	e.mu.Lock()
	defer e.mu.Unlock()
	if primary != e.primary && !e.cfg.Symmetric {
		// Becoming primary, the copies this node made are its own flows
		// now. Becoming secondary, every flow of the table is one it
		// forwarded (its window tracking is this node's, its masquerade
		// interface maybe too): none is a plain copy of the next
		// primary's, so the next primary's records replace them all
		// (handle), whatever this node received while it was primary.
		e.recvMu.Lock()
		for _, rs := range e.recv {
			rs.applied, rs.seen, rs.inBulk = keySet{}, nil, false
		}
		e.recvMu.Unlock()
		e.renewing = nil
		if !primary {
			// Sender bookkeeping: a secondary sends nothing; a return to
			// the role starts afresh (boundBook says what a missing
			// entry costs).
			e.lastSent, e.born = map[Key]int64{}, map[Key]time.Time{}
		}
	}
	e.primary = primary
	e.isPrimary.Store(primary)
	if q, ok := e.cfg.Table.(interface{ SetQuiet(bool) }); ok {
		// A secondary ignores events: stop decoding them. Delay needs
		// the birth times of flows, which only a primary keeps.
		q.SetQuiet(!primary)
	}
	if !primary {
		peers = nil
	}
	for name, p := range e.peers {
		if !slices.Contains(peers, name) {
			if p.cancel != nil {
				p.cancel()
			}
			g := e.gone[name]
			e.gone[name] = [2]uint64{g[0] + p.sentRecs, g[1] + p.sentMsgs}
			delete(e.peers, name)
			released = append(released, e.peersLeft([]string{name})...)
		}
	}
	for _, name := range peers {
		if _, ok := e.peers[name]; ok || name == e.cfg.Self {
			continue
		}
		p := &peerState{name: name, wake: make(chan struct{}, 1), needBulk: true,
			bulk: BulkStatus{State: "pending"}, lastProgress: e.cfg.Now()}
		e.peers[name] = p
		if e.runCtx != nil {
			e.startPeer(p)
		}
	}
}

// PeerRestarted makes the next message to peer a bulk copy (its process
// restarted: its kernel table may have lost nothing, but its replicas
// bookkeeping did).
func (e *Engine) PeerRestarted(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p := e.peers[name]; p != nil {
		p.needBulk = true
		p.queue = nil
		poke(p.wake)
	}
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (e *Engine) startPeer(p *peerState) {
	ctx, cancel := context.WithCancel(e.runCtx)
	p.cancel = cancel
	e.wg.Add(1)
	go func() { defer e.wg.Done(); e.sendLoop(ctx, p) }()
}

// Ready applies every message already received (the takeover calls it
// before it takes the vMAC: sessions in place first) and returns the
// number applied. It waits at most until ctx is done.
func (e *Engine) Ready(ctx context.Context) (int, error) {
	r := make(chan int, 1)
	select {
	case e.readyCh <- r:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case n := <-r:
		return n, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// BulkDone reports whether a complete bulk copy has been received since
// the engine started (a returning member with override waits for it).
func (e *Engine) BulkDone() bool {
	e.recvMu.Lock()
	defer e.recvMu.Unlock()
	return e.rc.bulkDone
}

// wanted reports whether a flow is one to copy.
func (e *Engine) wanted(f *Flow) bool {
	switch f.Proto {
	case ProtoTCP:
	case ProtoUDP, ProtoICMP, ProtoICMPv6:
		if !e.cfg.Connectionless {
			return false
		}
	default:
		return false
	}
	if !e.cfg.NAT && f.NAT() {
		return false
	}
	for _, p := range e.cfg.Ignore {
		if p.Contains(f.Orig.Src) || p.Contains(f.Orig.Dst) || p.Contains(f.Reply.Src) || p.Contains(f.Reply.Dst) {
			return false
		}
	}
	return true
}

// prepare adapts a flow for sending: connectionless copies outlive the
// original by two refresh periods (the refresh keeps them current).
func (e *Engine) prepare(f Flow, now time.Time) Flow {
	if f.Connectionless() {
		e.lastSent[f.Key()] = now.UnixNano() + int64(f.Timeout)*int64(time.Second)
		e.boundBook(now)
		f.Timeout += uint32((2 * e.cfg.Refresh) / time.Second)
		if f.Timeout == 0 {
			f.Timeout = 1
		}
	}
	if f.Timeout == 0 {
		f.Timeout = 1
	}
	return f
}

func (e *Engine) onEvent(ev Event) {
	now := e.cfg.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.c.events++
	if ev.Type == EventOverrun {
		e.c.overruns++
		e.prune = e.cfg.Symmetric
		if e.primary {
			for _, p := range e.peers {
				p.needBulk, p.queue = true, nil
				poke(p.wake)
			}
		}
		e.log.Warn("conntrack event overrun (ENOBUFS): events lost; copying the table again")
		if e.cfg.Event != nil {
			e.cfg.Event("conntrack event overrun (ENOBUFS): events lost; copying the table again")
		}
		return
	}
	if ev.Expect != nil {
		e.onExpectEvent(ev, now)
		return
	}
	f := &ev.Flow
	k := f.Key()
	if e.renewing != nil && e.renewalEvent(ev.Type, k, now) {
		return // a renewal's own: the peers' copies stay as they are
	}
	if ev.Type == EventDestroy {
		delete(e.lastSent, k)
		delete(e.born, k)
		if _, ok := e.pending[k]; ok {
			delete(e.pending, k) // never sent
			return
		}
		if !e.primary || !e.wanted(f) || !e.owned(f) {
			return
		}
		if e.cfg.Symmetric && !e.symmetricDestroy(f) {
			return
		}
		e.enqueue(Record{Op: OpDelete, Flow: *f}, now)
		return
	}
	if !e.primary {
		return
	}
	if f.Status&StatusDying != 0 {
		return
	}
	if !e.wanted(f) || !e.owned(f) {
		e.c.filtered++
		return
	}
	if e.cfg.Symmetric && !e.symmetricEvent(f) {
		return
	}
	if e.cfg.Delay > 0 {
		b, ok := e.born[k]
		if !ok {
			b = now
			if ev.Type == EventUpdate {
				b = now.Add(-e.cfg.Delay) // older than this process
			}
			e.born[k] = b
			e.boundBook(now)
		}
		if now.Sub(b) < e.cfg.Delay {
			e.pending[k] = *f
			return
		}
	}
	e.deferNATFix(ev.Type, f, now) // defer.go
	e.enqueue(Record{Op: OpUpsert, Flow: e.prepare(*f, now)}, now)
}

// enqueue queues a record for every peer (e.mu held).
func (e *Engine) enqueue(r Record, now time.Time) {
	for _, p := range e.peers {
		if p.needBulk {
			continue // the bulk copy will carry it
		}
		if len(p.queue) >= e.cfg.MaxQueue {
			p.queue, p.needBulk = nil, true
			e.c.overflows++
			e.log.Warn("session queue overflow: copying the table again", "peer", p.name)
			poke(p.wake)
			continue
		}
		if len(p.queue) == 0 {
			p.queueOldest = now.UnixNano()
			if p.busySince.IsZero() {
				p.busySince = now
			}
		}
		p.queue = append(p.queue, r)
		poke(p.wake)
	}
}

// timers releases delayed flows and refreshes busy connectionless flows.
func (e *Engine) timers(ctx context.Context) {
	tick := 250 * time.Millisecond
	if e.cfg.Delay > 0 && e.cfg.Delay/4 < tick {
		tick = max(e.cfg.Delay/4, 10*time.Millisecond)
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	lastRefresh := e.cfg.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := e.cfg.Now()
		e.mu.Lock()
		for k, f := range e.pending {
			if now.Sub(e.born[k]) >= e.cfg.Delay {
				delete(e.pending, k)
				if e.primary {
					e.enqueue(Record{Op: OpUpsert, Flow: e.prepare(f, now)}, now)
				}
			}
		}
		primary, prune := e.primary, e.prune
		e.prune = false
		e.mu.Unlock()
		if e.heldN.Load() > 0 {
			poke(e.trustWake) // refuse what was held too long
		}
		if prune {
			e.pruneKnown()
		}
		if primary && e.cfg.Connectionless && now.Sub(lastRefresh) >= e.cfg.Refresh {
			lastRefresh = now
			e.refresh(now)
		}
	}
}

func (e *Engine) refresh(now time.Time) {
	var busy []Flow
	e.mu.Lock()
	last := maps2(e.lastSent)
	e.mu.Unlock()
	if err := e.cfg.Table.Dump(func(f *Flow) {
		if !f.Connectionless() || !e.wanted(f) || !e.owned(f) {
			return
		}
		exp := now.UnixNano() + int64(f.Timeout)*int64(time.Second)
		if l, ok := last[f.Key()]; ok && exp-l < int64(e.cfg.Refresh) {
			return
		}
		busy = append(busy, *f)
	}); err != nil {
		e.log.Warn("refresh dump failed", "error", err)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, f := range busy {
		if e.cfg.Delay > 0 {
			if _, ok := e.pending[f.Key()]; ok {
				continue
			}
		}
		e.c.refreshed++
		e.enqueue(Record{Op: OpUpsert, Flow: e.prepare(f, now)}, now)
	}
}

func maps2(m map[Key]int64) map[Key]int64 {
	out := make(map[Key]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// sendLoop sends to one peer: a bulk copy when needed, then the stream.
func (e *Engine) sendLoop(ctx context.Context, p *peerState) {
	buf := make([]byte, 0, 64<<10)
	poke(p.wake)
	retry := bulkRetryMin
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		}
		for ctx.Err() == nil {
			e.mu.Lock()
			if p.needBulk {
				e.mu.Unlock()
				if err := e.bulk(ctx, p, &buf); err != nil {
					if ctx.Err() != nil {
						return
					}
					// The copy is sent again, whole, until one completes:
					// bulk cleared needBulk when it began, and a copy cut
					// short (a lost acknowledgement, a send error, the peer
					// unreachable) leaves the peer without part of the
					// table (TestBulkRetriedAfterFailure).
					e.sendFailed(p, "bulk copy", err)
					e.mu.Lock()
					p.needBulk, p.queue = true, nil
					e.mu.Unlock()
					select {
					case <-ctx.Done():
						return
					case <-time.After(retry):
					}
					retry = min(2*retry, bulkRetryMax)
				} else {
					retry = bulkRetryMin
				}
				continue
			}
			m := e.nextStream(p)
			if m == nil {
				p.busySince = time.Time{}
				e.mu.Unlock()
				break
			}
			e.mu.Unlock()
			var err error
			if at, ok := e.cfg.Transport.(AsyncTransport); ok {
				err = e.pipeline(ctx, p, at, m, &buf)
			} else {
				err = e.send(ctx, p, m, &buf)
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				e.sendFailed(p, "stream", err)
				e.mu.Lock()
				p.needBulk, p.queue = true, nil
				e.mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-time.After(500 * time.Millisecond):
				}
			}
		}
	}
}

// nextStream takes the next stream message's records off p's queue, nil
// when it is empty (e.mu held).
func (e *Engine) nextStream(p *peerState) *Message {
	n := min(len(p.queue), e.cfg.BatchRecords)
	if n == 0 {
		return nil
	}
	m := &Message{Kind: KindStream, Gen: p.bulk.Gen, Oldest: p.queueOldest, Records: p.queue[:n:n]}
	if e.cfg.OnAcked != nil {
		m.Gen |= genAckApplied // defer.go: the peer acknowledges the applied flows
	}
	p.queue = p.queue[n:]
	if len(p.queue) == 0 {
		p.queue = nil
	}
	p.queueOldest = e.cfg.Now().UnixNano()
	return m
}

func (e *Engine) sendFailed(p *peerState, what string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p.lastErr == "" || e.cfg.Now().Sub(p.lastErrAt) > time.Minute {
		e.log.Warn("session sync failed; copying the table again", "peer", p.name, "what", what, "error", err)
		if e.cfg.Event != nil {
			e.cfg.Event(fmt.Sprintf("session sync to %s failed (%s): %v; copying the table again", p.name, what, err))
		}
	}
	p.lastErr, p.lastErrAt = what+": "+err.Error(), e.cfg.Now()
	if p.bulk.State == "running" {
		p.bulk.State = "failed"
	}
}

// sendPipe keeps up to its window of messages to one peer in flight on an
// AsyncTransport (the channel keeps their order) and accounts for each as
// its acknowledgement comes.
type sendPipe struct {
	e        *Engine
	p        *peerState
	at       AsyncTransport
	buf      *[]byte
	inflight []flight
	timeout  *time.Timer
}

type flight struct {
	done <-chan error
	recs int
	bulk bool
}

func (e *Engine) newPipe(p *peerState, at AsyncTransport, buf *[]byte) *sendPipe {
	return &sendPipe{e: e, p: p, at: at, buf: buf, timeout: time.NewTimer(e.cfg.SendTimeout)}
}

func (sp *sendPipe) stop() { sp.timeout.Stop() }

// push encodes m and queues it.
func (sp *sendPipe) push(m *Message) error {
	b, err := m.AppendBinary((*sp.buf)[:0])
	if err != nil {
		return err
	}
	*sp.buf = b
	done, err := sp.at.SendAsync(sp.p.name, b)
	if err != nil {
		return err
	}
	if len(sp.inflight) == 0 {
		sp.timeout.Reset(sp.e.cfg.SendTimeout) // (Go 1.23+: no stale expiry after Reset)
	}
	sp.inflight = append(sp.inflight, flight{done, len(m.Records), m.Kind == KindBulk})
	return nil
}

// wait waits for the oldest message in flight (or for wake, when set, to
// say more can be queued: it returns nil then with the message still in
// flight).
func (sp *sendPipe) wait(ctx context.Context, wake <-chan struct{}) error {
	select {
	case err := <-sp.inflight[0].done:
		if err != nil {
			return err
		}
		f := sp.inflight[0]
		sp.inflight = sp.inflight[1:]
		e, p := sp.e, sp.p
		e.mu.Lock()
		p.sentMsgs++
		p.sentRecs += uint64(f.recs)
		p.lastProgress = e.cfg.Now()
		if f.bulk {
			p.bulk.Sent += f.recs
		}
		e.mu.Unlock()
		sp.timeout.Reset(e.cfg.SendTimeout)
		return nil
	case <-wake:
		return nil
	case <-sp.timeout.C:
		return fmt.Errorf("no acknowledgement within %v", sp.e.cfg.SendTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// drain waits for every message in flight.
func (sp *sendPipe) drain(ctx context.Context) error {
	for len(sp.inflight) > 0 {
		if err := sp.wait(ctx, nil); err != nil {
			return err
		}
	}
	return nil
}

// pipeline sends the stream message m and every stream message queued
// while it and the ones after it are in flight, up to streamWindow at once,
// and returns when all are acknowledged (nil) or one failed.
func (e *Engine) pipeline(ctx context.Context, p *peerState, at AsyncTransport, m *Message, buf *[]byte) error {
	sp := e.newPipe(p, at, buf)
	defer sp.stop()
	if err := sp.push(m); err != nil {
		return err
	}
	for len(sp.inflight) > 0 {
		// Fill the window with what has queued up meanwhile.
		for len(sp.inflight) < streamWindow {
			e.mu.Lock()
			var next *Message
			if !p.needBulk {
				next = e.nextStream(p)
			}
			e.mu.Unlock()
			if next == nil {
				break
			}
			if err := sp.push(next); err != nil {
				return err
			}
		}
		if err := sp.wait(ctx, p.wake); err != nil {
			return err
		}
	}
	return nil
}

func (e *Engine) send(ctx context.Context, p *peerState, m *Message, buf *[]byte) error {
	b, err := m.AppendBinary((*buf)[:0])
	if err != nil {
		return err
	}
	*buf = b
	sctx, cancel := context.WithTimeout(ctx, e.cfg.SendTimeout)
	defer cancel()
	if err := e.cfg.Transport.Send(sctx, p.name, b); err != nil {
		return err
	}
	e.mu.Lock()
	p.sentMsgs++
	p.sentRecs += uint64(len(m.Records))
	p.lastProgress = e.cfg.Now()
	if m.Kind == KindBulk {
		p.bulk.Sent += len(m.Records)
	}
	e.mu.Unlock()
	return nil
}

func (e *Engine) bulk(ctx context.Context, p *peerState, buf *[]byte) error {
	start := e.cfg.Now()
	e.mu.Lock()
	e.gen++
	gen := e.gen
	p.needBulk, p.queue = false, nil
	p.bulk = BulkStatus{State: "running", Gen: gen, Started: start}
	e.mu.Unlock()
	if err := e.send(ctx, p, &Message{Kind: KindBulkBegin, Gen: gen}, buf); err != nil {
		return err
	}
	// The dump streams, on a goroutine of its own: records go out while
	// the kernel is still dumping and the next batch is being decoded.
	batches := make(chan []Record, 4)
	var stop atomic.Bool
	count := 0
	dumpErr := make(chan error, 1)
	go func() {
		defer close(batches)
		batch := make([]Record, 0, e.cfg.BatchRecords)
		hand := func() {
			select {
			case batches <- batch:
			case <-ctx.Done():
				stop.Store(true)
			}
			batch = make([]Record, 0, e.cfg.BatchRecords)
		}
		err := e.cfg.Table.Dump(func(f *Flow) {
			if stop.Load() || f.Status&StatusDying != 0 || !e.wanted(f) || !e.owned(f) {
				return
			}
			e.mu.Lock()
			if _, young := e.pending[f.Key()]; young && e.cfg.Delay > 0 {
				e.mu.Unlock()
				return
			}
			batch = append(batch, Record{Op: OpUpsert, Flow: e.prepare(*f, start)})
			count++
			p.bulk.Total = count
			e.mu.Unlock()
			if len(batch) == cap(batch) {
				hand()
			}
		})
		if len(batch) > 0 && !stop.Load() {
			hand()
		}
		dumpErr <- err
	}()
	var sendErr error
	at, async := e.cfg.Transport.(AsyncTransport)
	var sp *sendPipe
	if async {
		sp = e.newPipe(p, at, buf)
		defer sp.stop()
	}
	for b := range batches {
		if sendErr != nil {
			continue
		}
		m := &Message{Kind: KindBulk, Gen: gen, Oldest: start.UnixNano(), Records: b}
		if !async {
			sendErr = e.send(ctx, p, m, buf)
		} else {
			for len(sp.inflight) >= bulkWindow && sendErr == nil {
				sendErr = sp.wait(ctx, nil)
			}
			if sendErr == nil {
				sendErr = sp.push(m)
			}
		}
		if sendErr != nil {
			stop.Store(true)
		}
	}
	if async && sendErr == nil {
		sendErr = sp.drain(ctx)
	}
	if err := <-dumpErr; err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	if sendErr != nil {
		return sendErr
	}
	if err := e.bulkExpect(ctx, p, gen, start, buf); err != nil {
		return fmt.Errorf("expectations: %w", err)
	}
	if err := e.send(ctx, p, &Message{Kind: KindBulkEnd, Gen: gen, Count: uint32(count)}, buf); err != nil {
		return err
	}
	d := e.cfg.Now().Sub(start)
	e.mu.Lock()
	p.bulk.State, p.bulk.Duration, p.bulk.Done = "done", d, e.cfg.Now()
	p.lastErr = ""
	e.mu.Unlock()
	e.event("bulk session copy to %s: %d flows in %s", p.name, count, d.Round(time.Millisecond))
	return nil
}

func (e *Engine) localAddrs() []netip.Addr {
	if e.cfg.LocalAddrs != nil {
		return e.cfg.LocalAddrs()
	}
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out
}

// readyQuiet is how long Ready waits for one more message.
const readyQuiet = time.Millisecond

// receive applies the peers' messages to the local table.
func (e *Engine) receive(ctx context.Context) {
	// One goroutine reads the channel (so it keeps acknowledging, and the
	// sender keeps sending), another applies: the kernel writes of one
	// message overlap the transfer of the next.
	type item struct {
		msg   l2chan.Message
		ready chan int // a Ready marker: answered once everything before it is applied
		n     int
		flush bool // the entitled senders changed: go through the held messages
	}
	work := make(chan item, 32)
	applied := make(chan struct{})
	go func() {
		defer close(applied)
		var m Message
		for it := range work {
			if it.ready != nil || it.flush {
				e.flushHeld(e.cfg.Now(), &m)
				if it.ready != nil {
					it.ready <- it.n
				}
				continue
			}
			e.handle(it.msg, &m)
		}
	}()
	defer func() { close(work); <-applied }()
	put := func(it item) bool {
		select {
		case work <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	in := e.cfg.Transport.Recv()
	for {
		select {
		case <-ctx.Done():
			return
		case msg, ok := <-in:
			if ok && isApplied(msg.Data) {
				e.handleApplied(msg) // defer.go: not behind the applies
				continue
			}
			if !ok || !put(item{msg: msg}) {
				return
			}
		case <-e.trustWake:
			if !put(item{flush: true}) {
				return
			}
		case r := <-e.readyCh:
			// Apply what has arrived: until the channel has been quiet for
			// readyQuiet (its run goroutine may be handing a message over).
			n := 0
			quiet := time.NewTimer(readyQuiet)
		drain:
			for {
				select {
				case msg, ok := <-in:
					if !ok {
						break drain
					}
					if !put(item{msg: msg}) {
						quiet.Stop()
						return
					}
					n++
					quiet.Reset(readyQuiet)
				case <-quiet.C:
					break drain
				}
			}
			quiet.Stop()
			if !put(item{ready: r, n: n}) {
				return
			}
		}
	}
}

// handle takes one message of a peer: applied when the peer is entitled
// to send (trust.go), held otherwise. Only the applying goroutine calls it.
func (e *Engine) handle(msg l2chan.Message, m *Message) {
	now := e.cfg.Now()
	e.recvMu.Lock()
	e.rc.messages++
	e.recvMu.Unlock()
	if e.flushDue(now) {
		e.flushHeld(now, m)
	}
	if isVerify(msg.Data) {
		e.handleVerify(msg) // changes no table: no trust check (verify.go)
		return
	}
	if isApplied(msg.Data) {
		e.handleApplied(msg) // (one handed over by Ready's drain)
		return
	}
	if _, ok := e.senderScope(msg.From, now); !ok || e.holding(msg.From) {
		e.hold(msg, now)
		return
	}
	e.apply(msg, m, now)
}

// apply applies a message of an entitled peer.
func (e *Engine) apply(msg l2chan.Message, m *Message, now time.Time) {
	if err := m.UnmarshalBinary(msg.Data); err != nil {
		e.recvMu.Lock()
		e.rc.malformed++
		e.noteErr(now, "malformed message from "+msg.From+": "+err.Error())
		e.recvMu.Unlock()
		return
	}
	e.recvMu.Lock()
	rs := e.recv[msg.From]
	if rs == nil {
		rs = &recvState{from: msg.From, applied: keySet{}}
		e.recv[msg.From] = rs
	}
	// The records the sender may send and this node copies (trust.go);
	// the others are refused and counted.
	scope, _ := e.senderScope(msg.From, now)
	total := len(m.Records)
	kept := m.Records[:0]
	first := ""
	for i := range m.Records {
		r := m.Records[i]
		if why := e.admit(&r, scope); why != "" {
			e.rc.refused[why]++
			if first == "" {
				first = why
			}
			continue
		}
		kept = append(kept, r)
	}
	if first != "" {
		e.noteRefusal(now, fmt.Sprintf("%d of %d records from %s refused (the first: %s)", total-len(kept), total, msg.From, first))
	}
	m.Records = kept
	e.recvMu.Unlock()
	switch m.Kind {
	case KindBulkBegin:
		// The local table before the copy: its forwarded flows that the
		// copy does not contain are removed at its end. Taken now, while
		// the table is small (empty on a fresh member), not at the end.
		// In symmetric mode this member forwards flows of its own: only
		// the copies it made are swept.
		var before []Key
		// A primary forwards: its flows are its own traffic, not copies,
		// whatever a peer that claimed the role for a moment (this node
		// was frozen, or cut off) holds. Its table is not swept.
		if !e.cfg.Symmetric && (!e.isPrimary.Load() || e.scope.Load() != nil) {
			own := map[netip.Addr]bool{}
			for _, a := range e.localAddrs() {
				own[a] = true
			}
			// Only flows the sender may send may be swept by its copy
			// (trust.go); the copies in rs.applied came from it.
			_ = e.cfg.Table.Dump(func(f *Flow) {
				if e.wanted(f) && !e.keeps(f) && (scope == nil || scope(f)) && !own[f.Orig.Src] && !own[f.Orig.Dst] && !own[f.Reply.Src] && !own[f.Reply.Dst] {
					before = append(before, f.Key())
				}
			})
		}
		e.recvMu.Lock()
		rs.gen, rs.inBulk, rs.seen, rs.before = m.Gen, true, keySet{}, before
		rs.bulk = BulkStatus{State: "running", Gen: m.Gen, Started: now}
		e.recvMu.Unlock()
		return
	case KindBulkEnd:
		e.recvMu.Lock()
		if rs.inBulk && rs.gen != m.Gen {
			// The end of a copy the sender gave up for the one in
			// progress: it lost this peer and found it again, and the
			// old copy's goroutine still sent its end after the new
			// copy's begin. It ends nothing; the copy in progress still
			// completes (TestSupersededBulkEnd).
			e.recvMu.Unlock()
			return
		}
		var stale []Record
		// A primary never sweeps: its table holds the flows it forwards
		// (a peer that began the copy while this node was secondary, or
		// that takes it for one). With a scope, the sweep spares the
		// flows in it (keeps, below).
		primary := e.isPrimary.Load()
		sweep := e.cfg.Symmetric || !primary || e.scope.Load() != nil
		if rs.inBulk && !sweep {
			e.rc.sweepsSkipped++
		}
		if rs.inBulk && rs.gen == m.Gen && sweep {
			del := map[Key]bool{}
			for k := range rs.applied {
				if _, ok := rs.seen[k]; !ok {
					del[k.key()] = true
				}
			}
			for _, k := range rs.before {
				if !rs.seen.has(k) {
					del[k] = true
				}
			}
			for k := range del {
				fl := Flow{Zone: k.Zone, Proto: k.Proto, Orig: k.Orig, Reply: Tuple{Src: k.Orig.Dst, Dst: k.Orig.Src}}
				if e.keeps(&fl) {
					continue // this node's own now (SetScope), not a stale copy
				}

				stale = append(stale, Record{Op: OpDelete, Flow: fl})
			}
		}
		e.recvMu.Unlock()
		if e.cfg.Symmetric {
			stale = e.sweepable(msg.From, stale)
		}
		if len(stale) > 0 {
			e.cfg.Table.Apply(stale)
		}
		e.recvMu.Lock()
		for _, r := range stale {
			rs.applied.del(r.Flow.Key())
		}
		e.rc.swept += uint64(len(stale))
		// Only a copy received whole, from its begin, is complete: one
		// whose begin or part was refused (trust.go) is not.
		complete := rs.inBulk && rs.gen == m.Gen
		rs.inBulk, rs.seen, rs.before = false, nil, nil
		if !complete {
			e.recvMu.Unlock()
			e.event("bulk session copy from %s ended incomplete (its begin or a part was not received or refused): not counted as complete", msg.From)
			return
		}
		rs.bulk.State, rs.bulk.Done, rs.bulk.Duration = "done", now, now.Sub(rs.bulk.Started)
		rs.bulk.Total = int(m.Count)
		e.rc.bulkDone = true
		rs.bulkDone = true
		n, d := rs.bulk.Sent, rs.bulk.Duration
		e.recvMu.Unlock()
		if !sweep {
			e.event("bulk session copy from %s complete while this node is primary: %d flows applied in %s, nothing swept (this node's flows are its own traffic)", msg.From, n, d.Round(time.Millisecond))
			return
		}
		e.event("bulk session copy from %s complete: %d flows applied in %s, %d stale copies removed", msg.From, n, d.Round(time.Millisecond), len(stale))
		return
	}
	var had []bool
	if e.cfg.Symmetric {
		had = e.learn(msg.From, m.Records, now)
	}
	recs := m.Records
	// A primary applies what a peer sends to its live entries (those in
	// its scope), as updates; they are not copies (a-p: the sweep at a
	// bulk end and the replacement of own flows keep to copies made as a
	// secondary).
	asPrimary := e.isPrimary.Load() && !e.cfg.Symmetric
	if !asPrimary && !e.cfg.Symmetric {
		// A flow this member's table holds but did not get from this
		// peer is its own, from its own traffic (it was primary, or the
		// peer's bulk copy finds what it forwarded before a restart):
		// replace it with a plain copy. Kept, the kernel may still delete
		// it later for its own reasons: an own masqueraded entry goes
		// when its address goes (the masquerade cleanup runs after the
		// address is removed, asynchronously, so it can hit the entry
		// after this copy updated it), and its window tracking is stale.
		// (In symmetric mode the member's own flows carry its traffic:
		// they are updated, never replaced.)
		cloned := false
		e.recvMu.Lock()
		for i := range recs {
			if recs[i].Op != OpUpsert || recs[i].Expect != nil {
				continue
			}
			if !rs.applied.has(recs[i].Flow.Key()) {
				if !cloned {
					recs, cloned = slices.Clone(m.Records), true
				}
				recs[i].Op = OpReplace
			}
		}
		e.recvMu.Unlock()
	}
	errs := e.applyRecords(recs)
	if m.Kind == KindStream && m.Gen&genAckApplied != 0 {
		e.sendApplied(msg.From, recs, errs) // defer.go
	}
	if e.cfg.Symmetric {
		e.forgetRefused(recs, had, errs)
	}
	done := e.cfg.Now()
	e.recvMu.Lock()
	defer e.recvMu.Unlock()
	e.rc.records += uint64(total)
	rs.received += uint64(total)
	for i, err := range errs {
		k := m.Records[i].Flow.Key()
		if x := m.Records[i].Expect; x != nil {
			if err != nil {
				e.rc.errors++
				e.rc.reasons[reason(err)]++
				e.noteErr(now, fmt.Sprintf("%s: %v", x.String(), err))
				continue
			}
			e.rc.expectApplied++
			continue
		}
		if err != nil {
			e.rc.errors++
			e.rc.reasons[reason(err)]++
			e.noteErr(now, fmt.Sprintf("%s: %v", m.Records[i].Flow.String(), err))
			continue
		}
		e.rc.applied++
		if m.Records[i].Op == OpDelete {
			rs.applied.del(k)
			continue
		}
		if asPrimary && e.owned(&m.Records[i].Flow) {
			continue
		}
		rs.applied.add(k)
		if e.cfg.Symmetric {
			// The copy is this peer's now, not another's.
			for _, o := range e.recv {
				if o != rs {
					o.applied.del(k)
				}
			}
		}
		if rs.inBulk {
			rs.seen.add(k)
		}
	}
	if m.Kind == KindBulk {
		rs.bulk.Sent += len(m.Records)
	}
	if m.Oldest > 0 {
		e.lat.add(time.Duration(done.UnixNano() - m.Oldest))
	}
}

// noteErr records an error (e.recvMu held).
func (e *Engine) noteErr(now time.Time, msg string) {
	if e.rc.lastErr == "" || now.Sub(e.rc.lastErrAt) > time.Minute {
		e.log.Warn("session sync: receive error", "error", msg)
		if e.cfg.Event != nil {
			e.cfg.Event("session sync: " + msg + " (repeats within a minute are counted, not logged)")
		}
	}
	e.rc.lastErr, e.rc.lastErrAt = msg, now
}

func reason(err error) string {
	var ke *KernelError
	if errors.As(err, &ke) {
		return ke.Errno.Error()
	}
	return err.Error()
}

// latencies keeps the last samples of event-to-applied latency.
type latencies struct {
	s   [1024]time.Duration
	n   int
	pos int
}

func (l *latencies) add(d time.Duration) {
	l.s[l.pos] = d
	l.pos = (l.pos + 1) % len(l.s)
	if l.n < len(l.s) {
		l.n++
	}
}

func (l *latencies) quantiles() (p50, p99, last time.Duration) {
	if l.n == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(l.s[:l.n])
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	last = l.s[(l.pos+len(l.s)-1)%len(l.s)]
	return s[l.n/2], s[(l.n*99)/100], last
}
