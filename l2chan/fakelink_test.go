package l2chan

import (
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/hagent/hagent/heartbeat"
)

// fakeNet is an in-memory broadcast network for tests: segments that lose,
// duplicate and reorder frames, can be cut, and never block a sender.
type fakeNet struct {
	mu   sync.Mutex
	rng  *rand.Rand
	segs map[string]*fakeSeg
	macs byte
}

type fakeSeg struct {
	net   *fakeNet
	name  string
	links []*fakeLink
	// loss, dup and reorder are probabilities per frame and receiver;
	// reordered frames are delayed by up to 3 ms.
	loss, dup, reorder float64
	// latency delays every frame by the same time, in order (a slower
	// link beside a fast one).
	latency time.Duration
	line    chan delayed
	cut     bool
	tap     func([]byte) // sees every frame sent, before loss
}

type fakeLink struct {
	seg    *fakeSeg
	name   string
	mac    net.HardwareAddr
	ch     chan fakeFrame
	closed chan struct{}
	once   sync.Once
}

type delayed struct {
	at  time.Time
	dst *fakeLink
	f   fakeFrame
}

// delay hands f to dst after s.latency, in the order sent (n.mu held).
func (s *fakeSeg) delay(dst *fakeLink, f fakeFrame) {
	if s.line == nil {
		s.line = make(chan delayed, 1<<16)
		go func(line chan delayed) {
			for d := range line {
				time.Sleep(time.Until(d.at))
				d.dst.deliver(d.f)
			}
		}(s.line)
	}
	select {
	case s.line <- delayed{time.Now().Add(s.latency), dst, f}:
	default: // the line is full: dropped
	}
}

type fakeFrame struct {
	data []byte
	from net.HardwareAddr
}

var _ heartbeat.Link = (*fakeLink)(nil)

func newFakeNet(seed uint64) *fakeNet {
	return &fakeNet{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), segs: map[string]*fakeSeg{}}
}

// seg returns the segment name, creating it.
func (n *fakeNet) seg(name string) *fakeSeg {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.segs[name]
	if s == nil {
		s = &fakeSeg{net: n, name: name}
		n.segs[name] = s
	}
	return s
}

// link attaches a new link named ifname to segment seg.
func (n *fakeNet) link(seg, ifname string) *fakeLink {
	s := n.seg(seg)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.macs++
	l := &fakeLink{seg: s, name: ifname, mac: net.HardwareAddr{2, 0, 0, 0, 0, n.macs},
		ch: make(chan fakeFrame, 8192), closed: make(chan struct{})}
	s.links = append(s.links, l)
	return l
}

// set changes the impairments of a segment.
func (s *fakeSeg) set(loss, dup, reorder float64) {
	s.net.mu.Lock()
	defer s.net.mu.Unlock()
	s.loss, s.dup, s.reorder = loss, dup, reorder
}

// setCut cuts (true) or repairs (false) the segment.
func (s *fakeSeg) setCut(cut bool) {
	s.net.mu.Lock()
	defer s.net.mu.Unlock()
	s.cut = cut
}

func (s *fakeSeg) setTap(f func([]byte)) {
	s.net.mu.Lock()
	defer s.net.mu.Unlock()
	s.tap = f
}

func (l *fakeLink) Name() string                   { return l.name }
func (l *fakeLink) HardwareAddr() net.HardwareAddr { return l.mac }

func (l *fakeLink) Send(payload []byte) error {
	select {
	case <-l.closed:
		return heartbeat.ErrClosed
	default:
	}
	s := l.seg
	n := s.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if s.tap != nil {
		s.tap(append([]byte(nil), payload...))
	}
	if s.cut {
		return nil
	}
	for _, dst := range s.links {
		if dst == l || n.rng.Float64() < s.loss {
			continue
		}
		copies := 1
		if n.rng.Float64() < s.dup {
			copies = 2
		}
		for i := 0; i < copies; i++ {
			f := fakeFrame{data: append([]byte(nil), payload...), from: l.mac}
			if s.latency > 0 {
				s.delay(dst, f)
			} else if n.rng.Float64() < s.reorder {
				d := time.Duration(n.rng.IntN(3000)) * time.Microsecond
				time.AfterFunc(d, func() { dst.deliver(f) })
			} else {
				dst.deliver(f)
			}
		}
	}
	return nil
}

// inject delivers a raw frame to every link of the segment but l.
func (l *fakeLink) inject(payload []byte) {
	for _, dst := range l.seg.links {
		if dst != l {
			dst.deliver(fakeFrame{data: append([]byte(nil), payload...), from: l.mac})
		}
	}
}

func (l *fakeLink) deliver(f fakeFrame) {
	select {
	case <-l.closed:
	case l.ch <- f:
	default: // queue full: dropped like a real NIC would
	}
}

func (l *fakeLink) Recv(buf []byte) (int, net.HardwareAddr, error) {
	select {
	case f := <-l.ch:
		return copy(buf, f.data), f.from, nil
	case <-l.closed:
		return 0, nil, heartbeat.ErrClosed
	}
}

func (l *fakeLink) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}
