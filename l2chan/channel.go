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
	// Required: a channel never runs with a key anyone can derive.
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
	// Spread, when 2 or more, makes the first Spread links a load-balanced
	// group (session pickup's sync_dev): first transmissions of data
	// fragments go round-robin over the group's links that are up and
	// alive, retransmissions and control frames on the active link. The
	// receiver reorders (the window), and loss detection tolerates the
	// reordering of a few frames between the links. With no link of the
	// group usable, the channel falls back to the other links in order.
	Spread int
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
	// AdmitAll derives keys for every sender name and epoch, as if each
	// had been given to Admit (still rate limited and cached). For tests
	// and tools that run channels without heartbeats; the agent never
	// sets it: it admits the members whose heartbeats it accepts.
	AdmitAll bool
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
	// DroppedUnadmitted counts frames from a sender name and epoch not
	// given to Admit, dropped before any cryptography.
	DroppedUnadmitted uint64 `json:"dropped_unadmitted"`
	// DroppedKeyLimit counts frames of an admitted sender dropped because
	// the key derivation budget was spent.
	DroppedKeyLimit uint64 `json:"dropped_key_limit"`
	// KeyDerivations counts the session keys derived for senders.
	KeyDerivations uint64 `json:"key_derivations"`
	// DroppedFlow counts authenticated fragments not taken because the
	// sender ignored the receive window.
	DroppedFlow uint64 `json:"dropped_flow"`
	// ProtocolErrors counts authenticated frames that broke the protocol
	// (logged at most once per peer and protoLogEvery).
	ProtocolErrors uint64 `json:"protocol_errors"`
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
	link    int    // the link of its last transmission
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

	errLogAt      time.Time // protocol errors are not logged before it
	errSuppressed int       // protocol errors not logged since the last line

	// send stream
	sndNext  uint64
	sndUna   uint64
	inflight []*outFrag // seq sndUna.. in order
	queue    []*outMsg  // not yet completely fragmented
	sentMsgs []*outMsg  // completely fragmented, not yet acknowledged
	peerWnd  int
	serial   uint64
	// rack is, per link, the serial of the latest transmission on it
	// known to have arrived: loss detection compares fragments with the
	// later ones sent on the same link (links reorder among each other).
	rack         []uint64
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
	adm   *admission
	kc    keyCache
	aead  cipher.AEAD
	epoch uint64
	nonce uint64

	links  []*linkState
	active int
	rr     int // the group link the next spread fragment goes on
	ackBuf []uint64

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
	unadmitted atomic.Uint64
	keyLimited atomic.Uint64
	derived    atomic.Uint64
	flowDrops  atomic.Uint64
	protoErrs  atomic.Uint64
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
	case cfg.Spread < 0 || cfg.Spread > len(cfg.Links):
		return nil, fmt.Errorf("l2chan: spread %d out of range 0..%d (the links)", cfg.Spread, len(cfg.Links))
	case cfg.MTU < 256 || cfg.MTU > 65535:
		return nil, fmt.Errorf("l2chan: MTU %d out of range 256..65535", cfg.MTU)
	case cfg.Window < 1 || cfg.Window > 1<<16:
		return nil, fmt.Errorf("l2chan: window %d out of range 1..65536", cfg.Window)
	case cfg.MinRTO <= 0 || cfg.MaxRTO < cfg.MinRTO:
		return nil, fmt.Errorf("l2chan: bad RTO bounds %v..%v", cfg.MinRTO, cfg.MaxRTO)
	case cfg.MaxMessage < 0 || uint64(cfg.MaxMessage) > 1<<32-1:
		return nil, fmt.Errorf("l2chan: max message %d out of range", cfg.MaxMessage)
	case len(cfg.Password) == 0:
		// The key would be one anyone can derive (TestChannelConfigErrors).
		return nil, errors.New("l2chan: empty password: the channel's keys would be known to anyone")
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
		adm:      newAdmission(cfg.AdmitAll),
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

// SendAsync queues msg for peer like Send and returns at once with a
// channel that yields Send's result: nil when the peer has acknowledged
// all of it, ErrPeerUnreachable, or ErrChannelClosed. Messages queued by
// SendAsync and Send are delivered in the order they were queued, so a
// caller can keep several in flight (a pipeline) and still know each
// one's fate. msg is copied.
func (c *Channel) SendAsync(peer string, msg []byte) (<-chan error, error) {
	switch {
	case len(peer) == 0 || len(peer) > MaxNameLen:
		return nil, fmt.Errorf("l2chan: bad peer name %q", peer)
	case peer == c.cfg.Self:
		return nil, errors.New("l2chan: cannot send to self")
	case len(msg) > c.cfg.MaxMessage:
		return nil, fmt.Errorf("%w: %d > %d bytes", ErrMessageTooLarge, len(msg), c.cfg.MaxMessage)
	}
	m := &outMsg{peer: peer, data: append([]byte(nil), msg...), done: make(chan error, 1)}
	select {
	case c.sendReq <- m:
		return m.done, nil
	case <-c.closed:
		return nil, ErrChannelClosed
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

		DroppedUnadmitted: c.unadmitted.Load(),
		DroppedKeyLimit:   c.keyLimited.Load(),
		KeyDerivations:    c.derived.Load(),
		DroppedFlow:       c.flowDrops.Load(),
		ProtocolErrors:    c.protoErrs.Load(),
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
		if !c.prefilter(buf[:n]) {
			continue // counted
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
			c.drainIn(256)
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
		case <-c.adm.learned:
			c.onAdmitted(now)
		case out <- next:
			c.deliverQ[0] = Message{}
			c.deliverQ = c.deliverQ[1:]
			c.msgsRecv.Add(1)
			c.maybeReopenWindow()
		case <-timer.C:
			// select picks at random among ready cases: frames that
			// arrived before the deadline (the ack that makes a timeout
			// moot) are handled first.
			if c.drainIn(len(c.in)) > 0 {
				c.flushAcks()
			}
			c.onTimer(time.Now())
		}
		for _, p := range c.peers {
			c.pump(p)
		}
	}
}

// drainIn handles up to max frames already queued by the readers, without
// waiting, and returns how many it handled.
func (c *Channel) drainIn(max int) int {
	for i := 0; i < max; i++ {
		select {
		case f := <-c.in:
			c.handleFrame(f.link, f.data)
		default:
			return i
		}
	}
	return max
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
