package heartbeat

import (
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// MemQueueLen is the receive queue length of a MemLink. A frame arriving at
// a full queue is dropped (and counted), never waited for.
const MemQueueLen = 256

// A MemNetwork is an in-memory set of broadcast segments (heartbeat cables
// or switches) for tests. Nodes attach links to segments with Link; a frame
// sent on a link is delivered to every other link of the segment, subject
// to the faults set with SetLoss, Cut and Isolate.
//
// Sending never blocks: each link has a bounded queue, and a frame that
// finds it full is dropped and counted in the receiver's MemLinkStats.
// A MemNetwork is safe for concurrent use.
type MemNetwork struct {
	mu       sync.Mutex
	rng      *rand.Rand
	segments map[string]*memSegment
	isolated map[string]bool
	nextMAC  uint32
	macs     map[[2]string]net.HardwareAddr // (node, ifname) → MAC
}

// memSegment is one broadcast domain.
type memSegment struct {
	links []*MemLink
	loss  int // percent
	cut   bool
}

// NewMemNetwork returns an empty network whose random loss is seeded from
// the runtime's random source.
func NewMemNetwork() *MemNetwork {
	return newMemNetwork(rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
}

// NewMemNetworkSeed returns an empty network whose random loss follows the
// given seed, for reproducible tests.
func NewMemNetworkSeed(seed int64) *MemNetwork {
	return newMemNetwork(rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15)))
}

func newMemNetwork(rng *rand.Rand) *MemNetwork {
	return &MemNetwork{
		rng:      rng,
		segments: make(map[string]*memSegment),
		isolated: make(map[string]bool),
		macs:     make(map[[2]string]net.HardwareAddr),
	}
}

// segmentLocked returns the named segment, creating it.
func (n *MemNetwork) segmentLocked(name string) *memSegment {
	s := n.segments[name]
	if s == nil {
		s = &memSegment{}
		n.segments[name] = s
	}
	return s
}

// Link attaches interface ifname of node to segment and returns the link.
// Each (node, ifname) gets a distinct, locally administered MAC address
// (02:48:42:xx:xx:xx), the same each time it is attached again. The
// returned Link is a *MemLink.
func (n *MemNetwork) Link(segment, node, ifname string) Link {
	n.mu.Lock()
	defer n.mu.Unlock()
	// Like a NIC, an interface keeps its MAC when the node reattaches it
	// (a restarted agent).
	mac, ok := n.macs[[2]string{node, ifname}]
	if !ok {
		n.nextMAC++
		m := n.nextMAC
		mac = net.HardwareAddr{0x02, 0x48, 0x42, byte(m >> 16), byte(m >> 8), byte(m)}
		n.macs[[2]string{node, ifname}] = mac
	}
	l := &MemLink{
		net:     n,
		segment: segment,
		node:    node,
		name:    ifname,
		mac:     mac,
		queue:   make(chan memFrame, MemQueueLen),
		closed:  make(chan struct{}),
		wake:    make(chan struct{}),
	}
	s := n.segmentLocked(segment)
	s.links = append(s.links, l)
	return l
}

// SetLoss makes segment drop each delivery with the given probability in
// percent (clamped to 0-100).
func (n *MemNetwork) SetLoss(segment string, percent int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.segmentLocked(segment).loss = min(max(percent, 0), 100)
}

// Cut disconnects segment: nothing sent on it is delivered until Heal.
func (n *MemNetwork) Cut(segment string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.segmentLocked(segment).cut = true
}

// Heal reconnects a segment disconnected by Cut.
func (n *MemNetwork) Heal(segment string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.segmentLocked(segment).cut = false
}

// Isolate disconnects every link of node, on every segment, in both
// directions, until Recover.
func (n *MemNetwork) Isolate(node string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.isolated[node] = true
}

// Recover reconnects a node disconnected by Isolate.
func (n *MemNetwork) Recover(node string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.isolated, node)
}

// deliver sends payload from l to the other links of its segment.
func (n *MemNetwork) deliver(from *MemLink, payload []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.segments[from.segment]
	if s == nil {
		return
	}
	for _, to := range s.links {
		if to == from {
			continue
		}
		if s.cut || n.isolated[from.node] || n.isolated[to.node] ||
			(s.loss > 0 && n.rng.IntN(100) < s.loss) {
			to.lost.Add(1)
			continue
		}
		fr := memFrame{payload: append([]byte(nil), payload...), from: from.mac}
		select {
		case to.queue <- fr:
		default:
			to.dropped.Add(1)
		}
	}
}

// detach removes l from its segment.
func (n *MemNetwork) detach(l *MemLink) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.segments[l.segment]
	if s == nil {
		return
	}
	for i, x := range s.links {
		if x == l {
			s.links = append(s.links[:i], s.links[i+1:]...)
			return
		}
	}
}

// memFrame is a queued delivery.
type memFrame struct {
	payload []byte
	from    net.HardwareAddr
}

// A MemLink is a Link of a MemNetwork. Besides Link, it implements
// SetReadDeadline and reports counters with Stats.
type MemLink struct {
	net                 *MemNetwork
	segment, node, name string
	mac                 net.HardwareAddr
	queue               chan memFrame
	closeOnce           sync.Once
	closed              chan struct{}
	sent, received      atomic.Uint64
	dropped, lost       atomic.Uint64
	deadlineMu          sync.Mutex
	deadline            time.Time
	wake                chan struct{} // closed and replaced on SetReadDeadline
}

var _ Link = (*MemLink)(nil)

// MemLinkStats are the counters of a MemLink.
type MemLinkStats struct {
	// Sent counts frames passed to Send.
	Sent uint64
	// Received counts frames returned by Recv.
	Received uint64
	// Dropped counts frames for this link that found its queue full.
	Dropped uint64
	// Lost counts frames for this link discarded by SetLoss, Cut or
	// Isolate.
	Lost uint64
}

// Stats returns the link's counters.
func (l *MemLink) Stats() MemLinkStats {
	return MemLinkStats{
		Sent:     l.sent.Load(),
		Received: l.received.Load(),
		Dropped:  l.dropped.Load(),
		Lost:     l.lost.Load(),
	}
}

// Name returns the interface name given to MemNetwork.Link.
func (l *MemLink) Name() string { return l.name }

// Node returns the node name given to MemNetwork.Link.
func (l *MemLink) Node() string { return l.node }

// HardwareAddr returns the link's fake MAC address.
func (l *MemLink) HardwareAddr() net.HardwareAddr { return l.mac }

// Send delivers a copy of payload to every other link of the segment. It
// never blocks and, like a real wire, does not report loss.
func (l *MemLink) Send(payload []byte) error {
	select {
	case <-l.closed:
		return ErrClosed
	default:
	}
	l.sent.Add(1)
	l.net.deliver(l, payload)
	return nil
}

// Recv waits for a frame, the read deadline or Close. Past the deadline it
// returns an error satisfying errors.Is(err, os.ErrDeadlineExceeded) (a
// net.Error whose Timeout is true).
func (l *MemLink) Recv(buf []byte) (int, net.HardwareAddr, error) {
	for {
		select {
		case <-l.closed:
			return 0, nil, ErrClosed
		default:
		}
		l.deadlineMu.Lock()
		dl, wake := l.deadline, l.wake
		l.deadlineMu.Unlock()
		var timer *time.Timer
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			timeout = timer.C
		}
		n, from, again, err := l.wait(buf, timeout, wake)
		if timer != nil {
			timer.Stop()
		}
		if !again {
			return n, from, err
		}
	}
}

// wait is one blocking step of Recv; again is true when the deadline was
// changed and Recv must start over.
func (l *MemLink) wait(buf []byte, timeout <-chan time.Time, wake <-chan struct{}) (n int, from net.HardwareAddr, again bool, err error) {
	select {
	case fr := <-l.queue:
		l.received.Add(1)
		return copy(buf, fr.payload), fr.from, false, nil
	case <-l.closed:
		return 0, nil, false, ErrClosed
	case <-timeout:
		return 0, nil, false, os.ErrDeadlineExceeded
	case <-wake:
		return 0, nil, true, nil
	}
}

// SetReadDeadline sets the deadline for pending and future Recv calls; the
// zero time means none.
func (l *MemLink) SetReadDeadline(t time.Time) error {
	l.deadlineMu.Lock()
	defer l.deadlineMu.Unlock()
	l.deadline = t
	close(l.wake)
	l.wake = make(chan struct{})
	return nil
}

// Close detaches the link from its segment and unblocks Recv.
func (l *MemLink) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.net.detach(l)
	})
	return nil
}
