package l2chan

import (
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hagent/hagent/heartbeat"
	"github.com/hashicorp/go-hclog"
)

// Errors returned by Channel.
var (
	// ErrChannelClosed is returned by Send after Close.
	ErrChannelClosed = errors.New("l2chan: channel closed")
	// ErrPeerUnreachable is returned by Send when the peer acknowledged
	// nothing for Config.PeerTimeout.
	ErrPeerUnreachable = errors.New("l2chan: peer unreachable")
	// ErrMessageTooLarge is returned by Send for a message longer than
	// Config.MaxMessage.
	ErrMessageTooLarge = errors.New("l2chan: message too large")
)

// Config configures a Channel. Zero values take the value of
// DefaultConfig.
type Config struct {
	// Self is this node's name (1..64 bytes); frames carry it as source.
	Self string
	// GroupID is the cluster group id; frames of other groups are dropped.
	GroupID uint16
	// Password is the group password the AES-GCM keys are derived from.
	Password []byte
	// Label names this instance's keys: the HKDF salt and info prefix
	// (see keyring), e.g. "hagent-sync-v1" for configuration sync on
	// eth_type.l2ep. Required; every instance (one per Ethertype) has its
	// own, so their keys are independent and a frame of one instance never
	// authenticates in another.
	Label string
	// Links are the links of this instance, all bound to its Ethertype
	// (the hbdevs, or a dedicated device list), highest priority first.
	// The Channel owns them and closes them on Close.
	Links []heartbeat.Link
	// MTU is the largest frame payload a link carries (Ethernet payload,
	// without the Ethernet header).
	MTU int
	// Window is the number of unacknowledged fragments in flight per peer,
	// and the number of fragments a receiver buffers out of order.
	Window int
	// MinRTO and MaxRTO bound the adaptive retransmission timeout.
	MinRTO, MaxRTO time.Duration
	// FailoverAfter is the number of consecutive retransmission timeouts
	// without progress after which the active link is declared dead and the
	// next live link takes over.
	FailoverAfter int
	// LinkProbeInterval is how often a dead link of higher priority than the
	// active one is probed to detect that it is back.
	LinkProbeInterval time.Duration
	// PeerTimeout is how long Send waits for any progress before it returns
	// ErrPeerUnreachable.
	PeerTimeout time.Duration
	// MaxMessage is the largest message Send accepts and a receiver
	// reassembles.
	MaxMessage int
	// RecvQueue is the number of delivered messages not yet read from Recv
	// above which the receive window closes (flow control).
	RecvQueue int
	// Epoch identifies this incarnation; it must grow across restarts.
	// 0 uses the current time in nanoseconds.
	Epoch uint64
	// Logger receives state changes; nil discards them.
	Logger hclog.Logger
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		MTU:               1500,                  // Ethernet payload of an hbdev
		Window:            256,                   // ~350 KB in flight per peer at 1500 bytes
		MinRTO:            20 * time.Millisecond, // LAN round trips are well below this
		MaxRTO:            time.Second,           // cap of the exponential backoff
		FailoverAfter:     3,                     // 3 timeouts without progress: link dead
		LinkProbeInterval: time.Second,           // how soon a repaired link is used again
		PeerTimeout:       10 * time.Second,      // Send gives up after this much silence
		MaxMessage:        256 << 20,             // comfortably above the 64 MB sync batch
		RecvQueue:         64,                    // unread messages before the window closes
	}
}

// LabConfig returns timings suited to tests: fast failover, short
// timeouts.
func LabConfig() Config {
	c := DefaultConfig()
	c.MaxRTO = 200 * time.Millisecond
	c.LinkProbeInterval = 100 * time.Millisecond
	c.PeerTimeout = 3 * time.Second
	return c
}

// Message is one message received from a peer.
type Message struct {
	// From is the sender's node name.
	From string
	// Data is the message; the receiver owns it.
	Data []byte
}

// LinkStats are the counters of one link of a Channel.
type LinkStats struct {
	Name string `json:"name"`
	// Up is the state last given by SetLinkUp (true by default).
	Up bool `json:"up"`
	// Alive is false while the channel considers the link dead (no answers).
	Alive    bool   `json:"alive"`
	TxFrames uint64 `json:"tx"`
	RxFrames uint64 `json:"rx"`
	TxErrors uint64 `json:"tx_errors"`
}

// Stats is a snapshot of a Channel's counters.
type Stats struct {
	// ActiveLink is the name of the link data is sent on ("" if none).
	ActiveLink       string      `json:"active_link"`
	Links            []LinkStats `json:"links"`
	MessagesSent     uint64      `json:"messages_sent"`
	MessagesReceived uint64      `json:"messages_received"`
	FramesSent       uint64      `json:"frames_sent"`
	FramesReceived   uint64      `json:"frames_received"`
	Retransmits      uint64      `json:"retransmits"`
	Timeouts         uint64      `json:"timeouts"`
	Failovers        uint64      `json:"failovers"`
	// DroppedAuth counts frames whose AES-GCM tag did not verify.
	DroppedAuth uint64 `json:"dropped_bad_auth"`
	// DroppedReplay counts frames with a reused or too old nonce or epoch.
	DroppedReplay uint64 `json:"dropped_replay"`
	// DroppedMalformed counts undecodable frames and frames of another group.
	DroppedMalformed uint64 `json:"dropped_malformed"`
}

type linkState struct {
	l       heartbeat.Link
	name    string
	up      bool // administrative state (SetLinkUp)
	suspect bool // no answers: considered dead
	tx, rx  atomic.Uint64
	txErr   atomic.Uint64
}

type inFrame struct {
	link int
	data []byte
}

type linkCmd struct {
	name string
	up   bool
}

type outMsg struct {
	peer     string
	data     []byte
	done     chan error
	off      int    // next byte to fragment
	started  bool   // a fragment has a sequence number
	lastSeq  uint64 // sequence number of the last fragment
	notified bool   // done has been written
}

func (m *outMsg) finish(err error) {
	if !m.notified {
		m.notified = true
		m.done <- err
	}
}

type outFrag struct {
	seq     uint64
	msg     *outMsg
	off     int
	data    []byte
	sentAt  time.Time
	serial  uint64 // transmission serial, for loss detection
	retrans bool
	sacked  bool
}

type peer struct {
	name      string
	epoch     uint64 // 0 = unknown
	aead      cipher.AEAD
	replay    replayWindow
	lastHeard time.Time

	// receive stream
	rcvNext   uint64
	ooo       map[uint64]DataBody
	asm       []byte
	asmLen    uint32
	asmActive bool
	asmDrop   bool
	ackNeed   bool
	ackLink   int
	ackCount  int
	zeroWnd   bool // we advertised a zero window to this peer

	// send stream
	sndNext      uint64
	sndUna       uint64
	inflight     []*outFrag // seq sndUna.. in order
	queue        []*outMsg  // not yet completely fragmented
	sentMsgs     []*outMsg  // completely fragmented, not yet acknowledged
	peerWnd      int
	serial       uint64
	rackSerial   uint64
	rtoSeq       uint64 // the fragment a first timeout resent, until acknowledged
	srtt, rttvar time.Duration
	baseRTO, rto time.Duration
	rtoAt        time.Time
	timeouts     int
	lastProgress time.Time
	probeAt      time.Time
	probeRTO     time.Duration
}

// Channel is the reliable, ordered, encrypted control channel between
// cluster members over raw frames of the l2ep Ethertype. See the package
// documentation for the protocol.
type Channel struct {
	cfg   Config
	log   hclog.Logger
	keys  *keyring
	aead  cipher.AEAD
	epoch uint64
	nonce uint64

	links  []*linkState
	active int

	in       chan inFrame
	sendReq  chan *outMsg
	cancelCh chan *outMsg
	linkCh   chan linkCmd
	rekeyCh  chan rekeyReq
	recvCh   chan Message
	closed   chan struct{}
	closeMu  sync.Once
	wg       sync.WaitGroup

	peers     map[string]*peer
	deliverQ  []Message
	linkProbe time.Time
	txBuf     []byte   // the frame being sent (frameStart, frameSend)
	txHdrLen  int      // its header length
	txNonce   [12]byte // its GCM nonce
	rxNonce   [12]byte // the GCM nonce of the frame being received
	rxHdr     FrameHeader
	bodyBuf   []byte

	activeName atomic.Value  // string
	epochNow   atomic.Uint64 // c.epoch, for Epoch
	msgsSent   atomic.Uint64
	msgsRecv   atomic.Uint64
	framesTx   atomic.Uint64
	framesRx   atomic.Uint64
	retrans    atomic.Uint64
	timeoutsN  atomic.Uint64
	failovers  atomic.Uint64
	badAuth    atomic.Uint64
	replays    atomic.Uint64
	malformed  atomic.Uint64
	linkMu     sync.Mutex // guards linkState.up/suspect for Stats
}

// orDefault sets *v to d when *v is the zero value (an unset option).
func orDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// New starts a channel on cfg.Links. It owns the links from now on.
func New(cfg Config) (*Channel, error) {
	d := DefaultConfig()
	orDefault(&cfg.MTU, d.MTU)
	orDefault(&cfg.Window, d.Window)
	orDefault(&cfg.MinRTO, d.MinRTO)
	orDefault(&cfg.MaxRTO, d.MaxRTO)
	orDefault(&cfg.FailoverAfter, d.FailoverAfter)
	orDefault(&cfg.LinkProbeInterval, d.LinkProbeInterval)
	orDefault(&cfg.PeerTimeout, d.PeerTimeout)
	orDefault(&cfg.MaxMessage, d.MaxMessage)
	orDefault(&cfg.RecvQueue, d.RecvQueue)
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	switch {
	case len(cfg.Self) == 0 || len(cfg.Self) > MaxNameLen:
		return nil, fmt.Errorf("l2chan: node name %q must be 1..%d bytes", cfg.Self, MaxNameLen)
	case cfg.Label == "" || len(cfg.Label) > 64:
		return nil, fmt.Errorf("l2chan: label %q must be 1..64 bytes", cfg.Label)
	case len(cfg.Links) == 0:
		return nil, errors.New("l2chan: channel needs at least one link")
	case cfg.MTU < 256 || cfg.MTU > 65535:
		return nil, fmt.Errorf("l2chan: MTU %d out of range 256..65535", cfg.MTU)
	case cfg.Window < 1 || cfg.Window > 1<<16:
		return nil, fmt.Errorf("l2chan: window %d out of range 1..65536", cfg.Window)
	case cfg.MinRTO <= 0 || cfg.MaxRTO < cfg.MinRTO:
		return nil, fmt.Errorf("l2chan: bad RTO bounds %v..%v", cfg.MinRTO, cfg.MaxRTO)
	case cfg.MaxMessage < 0 || uint64(cfg.MaxMessage) > 1<<32-1:
		return nil, fmt.Errorf("l2chan: max message %d out of range", cfg.MaxMessage)
	}
	if len(cfg.Password) == 0 {
		cfg.Logger.Warn("control channel runs with an empty group password: frames are encrypted with a well-known key")
	}
	keys, err := newKeyring(cfg.Label, cfg.Password, cfg.GroupID)
	if err != nil {
		return nil, err
	}
	if cfg.Epoch == 0 {
		cfg.Epoch = uint64(time.Now().UnixNano())
	}
	c := &Channel{
		cfg:      cfg,
		log:      cfg.Logger.Named("channel"),
		keys:     keys,
		in:       make(chan inFrame, 1024),
		sendReq:  make(chan *outMsg),
		cancelCh: make(chan *outMsg),
		linkCh:   make(chan linkCmd),
		rekeyCh:  make(chan rekeyReq),
		recvCh:   make(chan Message),
		closed:   make(chan struct{}),
		peers:    make(map[string]*peer),
		active:   0,
	}
	if err := c.setEpoch(cfg.Epoch); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, l := range cfg.Links {
		if seen[l.Name()] {
			return nil, fmt.Errorf("l2chan: link %q given twice", l.Name())
		}
		seen[l.Name()] = true
		c.links = append(c.links, &linkState{l: l, name: l.Name(), up: true})
	}
	c.activeName.Store(c.links[0].name)
	for i := range c.links {
		c.wg.Add(1)
		go c.readLink(i)
	}
	c.wg.Add(1)
	go c.run()
	return c, nil
}

// setEpoch makes epoch this node's own: the AEAD key of the frames it
// sends is derived from it and the nonce counter starts again. It is the
// one place c.aead and c.epoch change (New, Rekey).
func (c *Channel) setEpoch(epoch uint64) error {
	aead, err := c.keys.session(c.cfg.Self, epoch)
	if err != nil {
		return err
	}
	c.epoch, c.aead, c.nonce = epoch, aead, 0
	c.epochNow.Store(epoch)
	return nil
}

// Epoch returns this channel's epoch.
func (c *Channel) Epoch() uint64 { return c.epochNow.Load() }

// Rekey moves this channel to a larger epoch while it runs, as if the node
// had restarted: a new session key, the nonce counter from 1, and every
// stream with every peer restarted (messages not yet acknowledged are sent
// again from their beginning; the peers see the new epoch and do the
// same). The agent calls it when its heartbeat epoch is raised by a
// peer's epoch hint (its clock went back and its state was lost), so the
// peers that rejected the old epoch as a replay hear it again. An epoch
// not above the current one is ignored.
// Rekey returns once the channel uses the new epoch.
func (c *Channel) Rekey(epoch uint64) {
	r := rekeyReq{epoch: epoch, done: make(chan struct{})}
	select {
	case c.rekeyCh <- r:
		<-r.done
	case <-c.closed:
	}
}

type rekeyReq struct {
	epoch uint64
	done  chan struct{}
}

func (c *Channel) rekey(epoch uint64) {
	if epoch <= c.epoch {
		return
	}
	old := c.epoch
	if err := c.setEpoch(epoch); err != nil {
		c.log.Error("cannot derive the key of the new epoch; keeping the old one", "epoch", epoch, "error", err)
		return
	}
	c.log.Info("own epoch raised: new session key, streams restart", "old_epoch", old, "epoch", epoch)
	for _, p := range c.peers {
		c.resetStreams(p)
		if l := c.active; p.epoch != 0 && l >= 0 {
			c.sendControl(p, FrameProbe, l, nil) // tell the peer the new epoch now
		}
	}
}

// Send queues msg for peer and returns when the peer has acknowledged all of
// it, when ctx is done, when the peer acknowledged nothing for PeerTimeout
// (ErrPeerUnreachable), or when the channel is closed. Messages to one peer
// are delivered in the order Send was called, each exactly once. msg is
// copied; the caller may reuse it at once. A message whose transmission has
// begun is still delivered after Send returned early.
func (c *Channel) Send(ctx context.Context, peer string, msg []byte) error {
	switch {
	case len(peer) == 0 || len(peer) > MaxNameLen:
		return fmt.Errorf("l2chan: bad peer name %q", peer)
	case peer == c.cfg.Self:
		return errors.New("l2chan: cannot send to self")
	case len(msg) > c.cfg.MaxMessage:
		return fmt.Errorf("%w: %d > %d bytes", ErrMessageTooLarge, len(msg), c.cfg.MaxMessage)
	}
	m := &outMsg{peer: peer, data: append([]byte(nil), msg...), done: make(chan error, 1)}
	select {
	case c.sendReq <- m:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closed:
		return ErrChannelClosed
	}
	select {
	case err := <-m.done:
		return err
	case <-ctx.Done():
		select {
		case c.cancelCh <- m:
		case <-c.closed:
		}
		return ctx.Err()
	case <-c.closed:
		return ErrChannelClosed
	}
}

// Recv returns the channel of received messages, in order per sender. It
// is closed by Close. Not reading it closes the receive window after
// RecvQueue messages, which stalls the senders.
func (c *Channel) Recv() <-chan Message { return c.recvCh }

// SetLinkUp tells the channel that link name is up or down (for example
// from the heartbeat's view of the hbdev). A down link is never used; a
// link set up is used again at once if it has a higher priority.
func (c *Channel) SetLinkUp(name string, up bool) {
	select {
	case c.linkCh <- linkCmd{name: name, up: up}:
	case <-c.closed:
	}
}

// Stats returns a snapshot of the counters.
func (c *Channel) Stats() Stats {
	s := Stats{
		ActiveLink:       c.activeName.Load().(string),
		MessagesSent:     c.msgsSent.Load(),
		MessagesReceived: c.msgsRecv.Load(),
		FramesSent:       c.framesTx.Load(),
		FramesReceived:   c.framesRx.Load(),
		Retransmits:      c.retrans.Load(),
		Timeouts:         c.timeoutsN.Load(),
		Failovers:        c.failovers.Load(),
		DroppedAuth:      c.badAuth.Load(),
		DroppedReplay:    c.replays.Load(),
		DroppedMalformed: c.malformed.Load(),
	}
	c.linkMu.Lock()
	defer c.linkMu.Unlock()
	for _, l := range c.links {
		s.Links = append(s.Links, LinkStats{
			Name: l.name, Up: l.up, Alive: !l.suspect,
			TxFrames: l.tx.Load(), RxFrames: l.rx.Load(), TxErrors: l.txErr.Load(),
		})
	}
	return s
}

// Close stops the channel, closes its links and the Recv channel, and makes
// pending Sends return ErrChannelClosed.
func (c *Channel) Close() error {
	c.closeMu.Do(func() {
		close(c.closed)
		for _, l := range c.links {
			_ = l.l.Close()
		}
	})
	c.wg.Wait()
	return nil
}

// slabSize is the size of the buffers readLink carves received frames
// from: about 170 frames of 1500 bytes per allocation. A frame keeps its
// slab alive until the frame is processed (or, out of order, delivered).
const slabSize = 256 << 10

// readLink receives the frames of link i and hands them to run. The
// frames it hands over are run's to keep and to modify (decrypted in
// place).
func (c *Channel) readLink(i int) {
	defer c.wg.Done()
	l := c.links[i].l
	buf := make([]byte, 65536)
	var slab []byte // frames are carved from it: one allocation per many frames
	for {
		n, _, err := l.Recv(buf)
		if err != nil {
			select {
			case <-c.closed:
				return
			default:
			}
			if errors.Is(err, heartbeat.ErrClosed) || errors.Is(err, net.ErrClosed) {
				c.log.Warn("link closed under the channel", "link", c.links[i].name)
				return
			}
			c.log.Debug("link receive error", "link", c.links[i].name, "error", err)
			select {
			case <-c.closed:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if len(slab) < n {
			slab = make([]byte, max(slabSize, n))
		}
		data := slab[:n:n]
		slab = slab[n:]
		copy(data, buf[:n])
		select {
		case c.in <- inFrame{link: i, data: data}:
		case <-c.closed:
			return
		}
	}
}

func (c *Channel) run() {
	defer c.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var out chan<- Message
		var next Message
		if len(c.deliverQ) > 0 {
			out, next = c.recvCh, c.deliverQ[0]
		}
		now := time.Now()
		if d, ok := c.nextDeadline(now); ok {
			timer.Reset(max(d.Sub(now), 0))
		} else {
			timer.Reset(time.Hour)
		}
		select {
		case <-c.closed:
			c.shutdown()
			return
		case f := <-c.in:
			c.handleFrame(f.link, f.data)
		drain:
			for i := 0; i < 256; i++ {
				select {
				case f := <-c.in:
					c.handleFrame(f.link, f.data)
				default:
					break drain
				}
			}
			c.flushAcks()
		case m := <-c.sendReq:
			c.enqueue(m)
		case m := <-c.cancelCh:
			c.cancel(m)
		case lc := <-c.linkCh:
			c.setLinkUp(lc)
		case r := <-c.rekeyCh:
			c.rekey(r.epoch)
			close(r.done)
		case out <- next:
			c.deliverQ[0] = Message{}
			c.deliverQ = c.deliverQ[1:]
			c.msgsRecv.Add(1)
			c.maybeReopenWindow()
		case <-timer.C:
			c.onTimer(time.Now())
		}
		for _, p := range c.peers {
			c.pump(p)
		}
	}
}

func (c *Channel) shutdown() {
	for _, p := range c.peers {
		for _, m := range p.queue {
			m.finish(ErrChannelClosed)
		}
		for _, m := range p.sentMsgs {
			m.finish(ErrChannelClosed)
		}
	}
	close(c.recvCh)
}

func (c *Channel) getPeer(name string) *peer {
	p := c.peers[name]
	if p == nil {
		p = &peer{name: name, rcvNext: 1, sndNext: 1, sndUna: 1, ooo: map[uint64]DataBody{}, peerWnd: c.cfg.Window}
		p.baseRTO = min(max(100*time.Millisecond, c.cfg.MinRTO), c.cfg.MaxRTO)
		p.rto = p.baseRTO
		p.probeRTO = p.baseRTO
		c.peers[name] = p
	}
	return p
}

// resetEpoch starts new streams with peer p after it restarted (or when its
// epoch is first learned): the receive state is dropped and every message
// not yet acknowledged is sent again from its beginning.
func (c *Channel) resetEpoch(p *peer, epoch uint64, aead cipher.AEAD) {
	if p.epoch != 0 {
		c.log.Info("peer restarted, resetting session", "peer", p.name, "old_epoch", p.epoch, "epoch", epoch)
	}
	p.epoch, p.aead, p.replay = epoch, aead, replayWindow{}
	c.resetStreams(p)
}

// resetStreams restarts both streams with p: the receive state is dropped
// and every message not yet acknowledged is queued again from its start.
func (c *Channel) resetStreams(p *peer) {
	p.rcvNext, p.ooo, p.asm, p.asmActive, p.asmDrop = 1, map[uint64]DataBody{}, nil, false, false
	var requeue []*outMsg
	seen := map[*outMsg]bool{}
	add := func(m *outMsg) {
		if !seen[m] && !m.notified {
			seen[m] = true
			m.off, m.started = 0, false
			requeue = append(requeue, m)
		}
	}
	for _, f := range p.inflight {
		add(f.msg)
	}
	for _, m := range p.sentMsgs {
		add(m)
	}
	for _, m := range p.queue {
		add(m)
	}
	// inflight, then sentMsgs, then queue is stream order.
	p.queue, p.sentMsgs, p.inflight = requeue, nil, nil
	p.sndNext, p.sndUna, p.peerWnd = 1, 1, c.cfg.Window
	p.rto, p.timeouts, p.rtoAt, p.rtoSeq = p.baseRTO, 0, time.Time{}, 0
	p.lastProgress = time.Now()
}

func (c *Channel) enqueue(m *outMsg) {
	p := c.getPeer(m.peer)
	if len(p.queue) == 0 && len(p.inflight) == 0 {
		p.lastProgress = time.Now()
	}
	p.queue = append(p.queue, m)
	if p.epoch == 0 && p.probeAt.IsZero() {
		p.probeAt = time.Now() // learn the peer's epoch now
	}
}

func (c *Channel) cancel(m *outMsg) {
	m.notified = true
	p := c.peers[m.peer]
	if p == nil || m.started {
		return // transmission has begun: it completes in the background
	}
	p.queue = slices.DeleteFunc(p.queue, func(x *outMsg) bool { return x == m })
}

func (c *Channel) setLinkUp(lc linkCmd) {
	for _, l := range c.links {
		if l.name == lc.name {
			c.linkMu.Lock()
			changed := l.up != lc.up
			l.up = lc.up
			if lc.up {
				l.suspect = false
			}
			c.linkMu.Unlock()
			if changed {
				c.log.Info("link state set", "link", l.name, "up", lc.up)
			}
			c.relink("link set " + map[bool]string{true: "up", false: "down"}[lc.up])
			return
		}
	}
	c.log.Warn("SetLinkUp for unknown link", "link", lc.name)
}

// pickLink returns the highest-priority link that is up and alive, else
// the highest-priority link that is up, else -1.
func (c *Channel) pickLink() int {
	fallback := -1
	for i, l := range c.links {
		if !l.up {
			continue
		}
		if !l.suspect {
			return i
		}
		if fallback < 0 {
			fallback = i
		}
	}
	return fallback
}

// relink re-evaluates the active link; on a change everything in flight is
// sent again on the new link.
func (c *Channel) relink(reason string) {
	n := c.pickLink()
	if n == c.active {
		return
	}
	from, to := "", ""
	if c.active >= 0 {
		from = c.links[c.active].name
	}
	if n >= 0 {
		to = c.links[n].name
	}
	c.log.Info("control channel link change", "from", from, "to", to, "reason", reason)
	c.failovers.Add(1)
	c.active = n
	c.activeName.Store(to)
	now := time.Now()
	for _, p := range c.peers {
		p.timeouts = 0
		p.rto = p.baseRTO
		for _, f := range p.inflight {
			if !f.sacked {
				c.transmit(p, f, now)
			}
		}
		if len(p.inflight) > 0 {
			p.rtoAt = now.Add(p.rto)
		}
	}
}

func (c *Channel) nextDeadline(now time.Time) (time.Time, bool) {
	var d time.Time
	set := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	for _, p := range c.peers {
		if len(p.inflight) > 0 {
			set(p.rtoAt)
		}
		if c.needProbe(p) {
			set(p.probeAt)
		}
		if c.waiting(p) {
			set(p.lastProgress.Add(c.cfg.PeerTimeout))
		}
	}
	if c.wantLinkProbe() {
		if c.linkProbe.IsZero() {
			c.linkProbe = now.Add(c.cfg.LinkProbeInterval)
		}
		set(c.linkProbe)
	}
	return d, !d.IsZero()
}

// waiting reports whether some Send to p still waits for its result.
func (c *Channel) waiting(p *peer) bool {
	for _, m := range p.queue {
		if !m.notified {
			return true
		}
	}
	for _, m := range p.sentMsgs {
		if !m.notified {
			return true
		}
	}
	return false
}

func (c *Channel) needProbe(p *peer) bool {
	if len(p.queue) == 0 && len(p.inflight) == 0 {
		return false
	}
	return p.epoch == 0 || (p.peerWnd == 0 && len(p.inflight) == 0)
}

func (c *Channel) wantLinkProbe() bool {
	for i := 0; i < c.active; i++ {
		if c.links[i].up && c.links[i].suspect {
			return true
		}
	}
	return false
}

func (c *Channel) onTimer(now time.Time) {
	for _, p := range c.peers {
		if len(p.inflight) > 0 && !p.rtoAt.IsZero() && !now.Before(p.rtoAt) {
			c.onRTO(p, now)
		}
		if c.needProbe(p) && !now.Before(p.probeAt) {
			if l := c.active; l >= 0 {
				c.sendControl(p, FrameProbe, l, nil)
			}
			p.probeAt = now.Add(p.probeRTO)
			p.probeRTO = min(2*p.probeRTO, c.cfg.MaxRTO)
		}
		if c.waiting(p) && now.Sub(p.lastProgress) >= c.cfg.PeerTimeout {
			c.log.Warn("peer unreachable", "peer", p.name, "silent_for", now.Sub(p.lastProgress).Round(time.Millisecond))
			for _, m := range p.queue {
				m.finish(ErrPeerUnreachable)
			}
			for _, m := range p.sentMsgs {
				m.finish(ErrPeerUnreachable)
			}
			for _, f := range p.inflight {
				f.msg.finish(ErrPeerUnreachable)
			}
			p.queue = slices.DeleteFunc(p.queue, func(m *outMsg) bool { return !m.started })
			p.lastProgress = now
		}
	}
	if c.wantLinkProbe() && !c.linkProbe.IsZero() && !now.Before(c.linkProbe) {
		for i := 0; i < c.active; i++ {
			if !c.links[i].up || !c.links[i].suspect {
				continue
			}
			for _, p := range c.peers {
				if p.epoch != 0 {
					c.sendControl(p, FrameProbe, i, nil)
				}
			}
		}
		c.linkProbe = now.Add(c.cfg.LinkProbeInterval)
	}
	if !c.wantLinkProbe() {
		c.linkProbe = time.Time{}
	}
}

func (c *Channel) onRTO(p *peer, now time.Time) {
	c.timeoutsN.Add(1)
	p.timeouts++
	if p.timeouts >= c.cfg.FailoverAfter && c.active >= 0 {
		// Declare the active link dead if another usable link exists.
		other := false
		for i, l := range c.links {
			if i != c.active && l.up && !l.suspect {
				other = true
			}
		}
		if other {
			l := c.links[c.active]
			c.log.Warn("no acknowledgement on link, declaring it dead", "link", l.name, "peer", p.name, "timeouts", p.timeouts)
			c.linkMu.Lock()
			l.suspect = true
			c.linkMu.Unlock()
			c.relink("no acknowledgement from " + p.name)
			return // relink retransmitted everything
		}
	}
	p.rto = min(2*p.rto, c.cfg.MaxRTO)
	// A first timeout resends only the oldest unacknowledged fragment: a
	// receiver that was merely busy acknowledges the rest with its next
	// ack and nothing else goes twice. If that ack stops right at this
	// fragment, the fragments after it are lost and onAck resends them;
	// a second timeout in a row resends everything unacknowledged.
	p.rtoSeq = 0
	for _, f := range p.inflight {
		if !f.sacked {
			c.transmit(p, f, now)
			if p.timeouts == 1 {
				p.rtoSeq = f.seq
				break
			}
		}
	}
	p.rtoAt = now.Add(p.rto)
}

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
	body := DataBody{Seq: f.seq, MsgLen: uint32(len(f.msg.data)), Offset: uint32(f.off), Data: f.data}
	if b, ok := c.frameStart(p, FrameData); ok {
		c.frameSend(p, c.active, body.appendTo(b))
	}
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

func (c *Channel) linkAlive(li int) {
	l := c.links[li]
	l.rx.Add(1)
	if l.suspect && l.up {
		c.linkMu.Lock()
		l.suspect = false
		c.linkMu.Unlock()
		c.log.Info("link answers again", "link", l.name)
		c.relink("link " + l.name + " answers again")
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
	var sample *outFrag   // the latest transmission acknowledged that was sent once
	var retransMax uint64 // the latest retransmission acknowledged
	ack := func(f *outFrag) {
		progress = true
		if f.retrans {
			retransMax = max(retransMax, f.serial)
		} else if sample == nil || f.serial > sample.serial {
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
		// Loss detection goes by the latest fragment known to have
		// arrived. An acknowledged retransmission is ambiguous (the ack
		// may be for its first transmission, after a spurious timeout):
		// it counts only when nothing sent once was acknowledged with it.
		p.rackSerial = max(p.rackSerial, sample.serial)
	} else {
		p.rackSerial = max(p.rackSerial, retransMax)
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
	// Loss detection: a fragment sent well before one that arrived is lost.
	for _, f := range p.inflight {
		if !f.sacked && (afterRTO || f.serial+reorderThreshold < p.rackSerial) {
			c.transmit(p, f, now)
		}
	}
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
