package l2chan

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
	"github.com/hashicorp/go-hclog"
)

// frameMaker seals frames from one bare channel to a peer, as that
// channel would send them (authentic, with increasing nonces).
type frameMaker struct {
	c *Channel
	l *captureLink
	p *peer
}

func newFrameMaker(t testing.TB, self string, epoch uint64, to string, toEpoch uint64) *frameMaker {
	c, l := bareChannel(t, self, epoch)
	p := c.getPeer(to)
	p.epoch = toEpoch
	return &frameMaker{c: c, l: l, p: p}
}

// frame returns the frame of kind with body, sealed.
func (m *frameMaker) frame(kind FrameKind, body []byte) []byte {
	m.l.mu.Lock()
	m.l.frames = m.l.frames[:0]
	m.l.mu.Unlock()
	m.c.sendFrame(m.p, kind, 0, body)
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	return m.l.frames[0]
}

func (m *frameMaker) data(seq uint64, msgLen, off uint32, data []byte) []byte {
	d := DataBody{Seq: seq, MsgLen: msgLen, Offset: off, Data: data}
	return m.frame(FrameData, d.appendTo(nil))
}

// bogusFrame is a well-formed frame header from src in epoch to node-b
// (group 10) followed by junk where the ciphertext and tag would be.
func bogusFrame(src string, epoch uint64) []byte {
	h := FrameHeader{Kind: FrameData, GroupID: 10, SrcEpoch: epoch, DstEpoch: 2, Nonce: 1, Src: src, Dst: "node-b"}
	b, _ := h.MarshalBinary()
	return append(b, bytes.Repeat([]byte{0xa5}, 40)...)
}

// TestReassemblyAllocBounded sends 200 tiny first fragments, each of them
// announcing a 64 MiB message, from an authenticated peer: the receiver
// allocates for the bytes that came, not for the ones announced, and logs
// the protocol errors aggregated, not one line each. Before, each fragment
// allocated and zeroed 64 MiB (12.8 GB in all) and logged a line.
func TestReassemblyAllocBounded(t *testing.T) {
	c, _ := bareChannel(t, "node-b", 2)
	c.cfg.MaxMessage = DefaultConfig().MaxMessage
	var logBuf bytes.Buffer
	c.log = hclog.New(&hclog.LoggerOptions{Output: &logBuf, Level: hclog.Info})
	m := newFrameMaker(t, "node-a", 1, "node-b", 2)
	frames := make([][]byte, 200)
	for i := range frames {
		frames[i] = m.data(uint64(i+1), 64<<20, 0, []byte("tiny-fragment"))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, f := range frames {
		c.handleFrame(0, f)
	}
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("200 first fragments of %d bytes announcing 64 MiB: %d bytes allocated, %d log lines, %d protocol errors",
		len(frames[0]), alloc, strings.Count(logBuf.String(), "\n"), c.protoErrs.Load())
	if c.framesRx.Load() != 200 {
		t.Fatalf("accepted %d frames, want 200 (the test must get past authentication)", c.framesRx.Load())
	}
	if alloc >= 1<<20 {
		t.Errorf("allocated %d bytes for 200 tiny fragments, want < 1 MiB", alloc)
	}
	if n := strings.Count(logBuf.String(), "\n"); n > 1 {
		t.Errorf("%d log lines for 199 protocol errors of one peer, want 1:\n%s", n, logBuf.String())
	}
	if got := c.protoErrs.Load(); got != 199 {
		t.Errorf("ProtocolErrors = %d, want 199", got)
	}
}

// TestReassemblyGrowth reassembles a message of 1 MiB from in-order
// fragments: it arrives whole, and the buffer is never more than
// asmGrowth × the bytes arrived (plus the fragment that grew it).
func TestReassemblyGrowth(t *testing.T) {
	c, _ := bareChannel(t, "node-b", 2)
	c.cfg.RecvQueue = 1 << 20
	const size = 1 << 20
	msg := make([]byte, size)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	p := c.getPeer("node-a")
	p.rcvNext = 1
	var seq uint64
	for off := 0; off < size; off += 1400 {
		seq++
		end := min(off+1400, size)
		c.reassemble(p, DataBody{Seq: seq, MsgLen: size, Offset: uint32(off), Data: msg[off:end]})
		if p.asm != nil && cap(p.asm) > asmGrowth*(len(p.asm)-(end-off))+(end-off) {
			t.Fatalf("at %d bytes: buffer of %d", len(p.asm), cap(p.asm))
		}
	}
	if len(c.deliverQ) != 1 || !bytes.Equal(c.deliverQ[0].Data, msg) {
		t.Fatalf("message not delivered intact (%d messages)", len(c.deliverQ))
	}
}

// TestUnadmittedCostsNoCrypto sends frames from sender names and epochs
// the agent never admitted: they are dropped and counted before any key
// derivation, in the reader without an allocation, and in handleFrame with
// at most the name string. Before, each cost a key derivation (~2.75 µs,
// 14 allocations).
func TestUnadmittedCostsNoCrypto(t *testing.T) {
	c, _ := bareChannel(t, "node-b", 2)
	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = bogusFrame(fmt.Sprintf("rnd-%08x", i*2654435761), 12345+uint64(i))
	}
	frames = append(frames, bogusFrame("node-a", 7)) // a member, an epoch never heard
	for _, f := range frames {
		if c.prefilter(f) {
			t.Fatalf("prefilter passed a frame of an unadmitted sender")
		}
		c.handleFrame(0, append([]byte(nil), f...))
	}
	i := 0
	readerAllocs := testing.AllocsPerRun(1000, func() {
		c.prefilter(frames[i%len(frames)])
		i++
	})
	handleAllocs := testing.AllocsPerRun(1000, func() {
		c.handleFrame(0, frames[i%len(frames)])
		i++
	})
	st := c.Stats()
	t.Logf("reader: %.1f allocs/frame, handleFrame: %.1f allocs/frame; unadmitted %d, derivations %d",
		readerAllocs, handleAllocs, st.DroppedUnadmitted, st.KeyDerivations)
	if st.KeyDerivations != 0 {
		t.Errorf("%d key derivations for unadmitted senders, want 0", st.KeyDerivations)
	}
	if readerAllocs != 0 || handleAllocs > 1 {
		t.Errorf("allocations per bogus frame: reader %.1f (want 0), handleFrame %.1f (want <= 1)", readerAllocs, handleAllocs)
	}
	if st.DroppedUnadmitted < uint64(2*len(frames)) {
		t.Errorf("DroppedUnadmitted = %d, want >= %d", st.DroppedUnadmitted, 2*len(frames))
	}
	if st.DroppedAuth != 0 {
		t.Errorf("DroppedAuth = %d: unadmitted frames reached the tag check", st.DroppedAuth)
	}
}

// TestKeyDerivationCachedAndLimited: forged frames of an admitted sender
// and epoch cost one derivation in all (the key is cached), and with every
// name admitted (AdmitAll, or names made up in unauthenticated heartbeats)
// the derivations stay within the token bucket.
func TestKeyDerivationCachedAndLimited(t *testing.T) {
	c, _ := bareChannel(t, "node-b", 2)
	f := bogusFrame("node-a", 1)
	for i := 0; i < 1000; i++ {
		c.handleFrame(0, append([]byte(nil), f...))
	}
	if st := c.Stats(); st.KeyDerivations != 1 || st.DroppedAuth != 1000 {
		t.Errorf("1000 forged frames of an admitted epoch: %d derivations (want 1), %d bad tags (want 1000)", st.KeyDerivations, st.DroppedAuth)
	}

	all, _ := bareChannel(t, "node-b", 2)
	all.adm.all = true
	start := time.Now()
	for i := 0; i < 5000; i++ {
		all.handleFrame(0, bogusFrame(fmt.Sprintf("any-%d", i), 1))
	}
	elapsed := time.Since(start)
	st := all.Stats()
	limit := uint64(keyBurst + elapsed.Seconds()*keyRate + 1)
	t.Logf("5000 new names in %v with every name admitted: %d derivations (bucket allows %d), %d dropped by the limit",
		elapsed, st.KeyDerivations, limit, st.DroppedKeyLimit)
	if st.KeyDerivations > limit || st.DroppedKeyLimit == 0 {
		t.Errorf("derivations %d (limit %d), dropped by the limit %d (want > 0)", st.KeyDerivations, limit, st.DroppedKeyLimit)
	}
	if len(all.kc.keys) > maxKeyCache {
		t.Errorf("key cache holds %d keys, bound %d", len(all.kc.keys), maxKeyCache)
	}
}

// TestAdmitBounded: names beyond maxAdmitted evict the oldest admission,
// and a member admitted again is admitted in its new and previous epoch.
func TestAdmitBounded(t *testing.T) {
	c, _ := bareChannel(t, "node-b", 2)
	for i := 0; i < 3*maxAdmitted; i++ {
		c.Admit(fmt.Sprintf("made-up-%d", i), 1)
	}
	if n := len(c.adm.names); n > maxAdmitted {
		t.Fatalf("%d names admitted, bound %d", n, maxAdmitted)
	}
	c.Admit("node-a", 10)
	c.Admit("node-a", 11)
	for _, tt := range []struct {
		epoch uint64
		want  bool
	}{{9, false}, {10, true}, {11, true}, {12, false}} {
		if got := c.adm.admitted([]byte("node-a"), tt.epoch); got != tt.want {
			t.Errorf("admitted(node-a, %d) = %v, want %v", tt.epoch, got, tt.want)
		}
	}
}

// TestDeliverQueueBounded: a key-holding peer that ignores the receive
// window cannot make the queue of unread messages grow past
// RecvQueue + Window. Before, it grew by one message per fragment.
func TestDeliverQueueBounded(t *testing.T) {
	c, _ := bareChannel(t, "node-b", 2) // RecvQueue 8, Window 64
	m := newFrameMaker(t, "node-a", 1, "node-b", 2)
	n := 10 * c.maxDeliverQ()
	for i := 1; i <= n; i++ {
		c.handleFrame(0, m.data(uint64(i), 1, 0, []byte{byte(i)}))
	}
	t.Logf("%d one-fragment messages, nothing read: %d queued (bound %d), %d fragments refused",
		n, len(c.deliverQ), c.maxDeliverQ(), c.flowDrops.Load())
	if len(c.deliverQ) > c.maxDeliverQ() {
		t.Errorf("%d messages queued, bound %d", len(c.deliverQ), c.maxDeliverQ())
	}
}

// TestOutOfOrderBounded: out-of-order fragments are buffered up to Window
// of them and MTU bytes each, whatever size the peer's frames are.
func TestOutOfOrderBounded(t *testing.T) {
	c, _ := bareChannel(t, "node-b", 2) // Window 64, MTU 1500
	m := newFrameMaker(t, "node-a", 1, "node-b", 2)
	for i := 2; i <= 200; i++ { // seq 1 never comes
		size := 60000 // a peer with a 64 KiB "MTU"
		if i%2 == 0 {
			size = 1000
		}
		c.handleFrame(0, m.data(uint64(i), 1<<20, 0, make([]byte, size)))
	}
	p := c.peers["node-a"]
	total := 0
	for _, d := range p.ooo {
		total += len(d.Data)
	}
	t.Logf("out of order: %d fragments, %d bytes (bound %d × %d)", len(p.ooo), total, c.cfg.Window, c.cfg.MTU)
	if len(p.ooo) > c.cfg.Window || total > c.cfg.Window*c.cfg.MTU {
		t.Errorf("out of order: %d fragments, %d bytes; bound %d fragments, %d bytes", len(p.ooo), total, c.cfg.Window, c.cfg.Window*c.cfg.MTU)
	}
}

// TestPeersBounded: authentic frames from more sender names than maxPeers
// (a key holder, every name admitted) create at most maxPeers peers.
func TestPeersBounded(t *testing.T) {
	c, _ := bareChannel(t, "node-b", 2)
	c.adm.all = true
	for i := 0; i < maxPeers+50; i++ {
		m := newFrameMaker(t, fmt.Sprintf("holder-%d", i), 1, "node-b", 2)
		c.kc.last = time.Time{} // a full bucket: this test is about the peers
		c.handleFrame(0, m.frame(FrameProbe, nil))
	}
	if len(c.peers) > maxPeers {
		t.Errorf("%d peers, bound %d", len(c.peers), maxPeers)
	}
}

// TestNonceSaturates: the nonce counter never wraps to a used value; at
// its end the channel sends nothing more under that key.
func TestNonceSaturates(t *testing.T) {
	c, l := bareChannel(t, "node-a", 1)
	p := c.getPeer("node-b")
	p.epoch = 2
	c.nonce = math.MaxUint64 - 1
	c.sendFrame(p, FrameProbe, 0, nil)
	c.sendFrame(p, FrameProbe, 0, nil)
	if len(l.frames) != 1 || c.nonce != math.MaxUint64 {
		t.Fatalf("%d frames sent, nonce %d: want 1 frame and the counter stopped at its maximum", len(l.frames), c.nonce)
	}
}

// TestChannelAdmit runs two channels the way the agent does (no AdmitAll):
// nothing gets through until each has admitted the other's name and epoch
// (from its heartbeat), and no key is derived for the unadmitted sender;
// then a message goes through at once.
func TestChannelAdmit(t *testing.T) {
	n := newFakeNet(21)
	strict := func(c *Config) { c.AdmitAll = false }
	a := newTestChannel(t, n, "node-a", []string{"s1"}, strict)
	b := newTestChannel(t, n, "node-b", []string{"s1"}, strict)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := a.Send(ctx, "node-b", []byte("too early"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send before admission = %v, want a timeout", err)
	}
	if st := b.Stats(); st.DroppedUnadmitted == 0 || st.KeyDerivations != 0 || st.FramesReceived != 0 {
		t.Fatalf("before admission: %+v", st)
	}
	b.Admit("node-a", a.Epoch())
	a.Admit("node-b", b.Epoch())
	if err := a.Send(context.Background(), "node-b", []byte("admitted")); err != nil {
		t.Fatal(err)
	}
	for m := recvOne(t, b, 2*time.Second); string(m.Data) != "admitted"; m = recvOne(t, b, 2*time.Second) {
		// "too early" may arrive first: its transmission had begun.
	}
}

// BenchmarkBogusFrame measures the cost of a frame from an unadmitted
// sender with a new name each time: in the reader (prefilter) and in
// handleFrame.
func BenchmarkBogusFrame(b *testing.B) {
	c, _ := bareChannel(b, "node-b", 2)
	frames := make([][]byte, 4096)
	for i := range frames {
		frames[i] = bogusFrame(fmt.Sprintf("r-%014x", uint64(i)*0x9e3779b97f4a7c15), uint64(i)+100)
	}
	b.Run("reader", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			c.prefilter(frames[i%len(frames)])
		}
	})
	b.Run("handleFrame", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			c.handleFrame(0, frames[i%len(frames)])
		}
	})
	// Every name admitted (as names made up in unauthenticated heartbeats
	// would be): the derivation budget is what bounds the cost.
	all, _ := bareChannel(b, "node-b", 2)
	all.adm.all = true
	b.Run("handleFrame-all-admitted", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			all.handleFrame(0, frames[i%len(frames)])
		}
		b.ReportMetric(float64(all.derived.Load()), "derivations")
	})
}

// floodLink is a link whose Recv returns, as fast as it is called, frames
// from a new random sender name each (well-formed headers, junk where the
// ciphertext is), n of them, then blocks until closed.
type floodLink struct {
	n       int
	sent    atomic.Int64
	tmpl    []byte
	nameOff int
	rng     uint64
	start   chan struct{} // closed: the flood begins
	done    chan struct{}
	closed  chan struct{}
	once    sync.Once
}

func newFloodLink(n int) *floodLink {
	f := &floodLink{n: n, start: make(chan struct{}), done: make(chan struct{}), closed: make(chan struct{}), rng: 0x9e3779b97f4a7c15}
	f.tmpl = bogusFrame("r-0123456789abcd", 1) // 16-byte names, 78-byte frames
	f.nameOff = frameFixedLen + 1 + 2
	return f
}

func (f *floodLink) Name() string                   { return "flood" }
func (f *floodLink) HardwareAddr() net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, 0x66} }
func (f *floodLink) Send([]byte) error              { return nil }
func (f *floodLink) Close() error                   { f.once.Do(func() { close(f.closed) }); return nil }

func (f *floodLink) Recv(buf []byte) (int, net.HardwareAddr, error) {
	select {
	case <-f.start:
	case <-f.closed:
		return 0, nil, heartbeat.ErrClosed
	}
	if int(f.sent.Load()) >= f.n {
		select {
		case <-f.done:
		default:
			close(f.done)
		}
		<-f.closed
		return 0, nil, heartbeat.ErrClosed
	}
	n := copy(buf, f.tmpl)
	f.rng ^= f.rng << 13 // xorshift: a new name and epoch per frame
	f.rng ^= f.rng >> 7
	f.rng ^= f.rng << 17
	const hex = "0123456789abcdef"
	for i := 0; i < 14; i++ {
		buf[f.nameOff+i] = hex[(f.rng>>(4*i))&15]
	}
	binary.BigEndian.PutUint64(buf[4:], f.rng|1)
	f.sent.Add(1)
	return n, f.HardwareAddr(), nil
}

// TestFloodMeasure measures the cost of a flood of frames from random
// sender names, the DoS an on-link attacker without the key can do: 1 M
// frames through a running channel's reader (a link that yields them as
// fast as the reader takes them), the process CPU they cost, and the
// latency of messages between two admitted channels meanwhile (on another
// link, as the hbdevs are each their own reader). A measurement, not a
// unit test: HAGENT_FLOOD_MEASURE=1 runs it, and it fails only when the
// flood costs more than 1 s of CPU or a message does not get through.
func TestFloodMeasure(t *testing.T) {
	if os.Getenv("HAGENT_FLOOD_MEASURE") == "" {
		t.Skip("set HAGENT_FLOOD_MEASURE=1 to measure the cost of a flood of bogus frames")
	}
	const frames = 1_000_000
	n := newFakeNet(31)
	strict := func(c *Config) { c.AdmitAll = false }
	a := newTestChannel(t, n, "node-a", []string{"s1"}, strict)
	flood := newFloodLink(frames)
	b := newTestChannel(t, n, "node-b", []string{"s1"}, strict, func(c *Config) {
		c.Links = append(c.Links, flood)
	})
	a.Admit("node-b", b.Epoch())
	b.Admit("node-a", a.Epoch())

	// Round trips: a sends, b echoes nothing; latency is Send's return
	// (b acknowledged the message) measured from its start.
	var lat []time.Duration
	ping := func(d time.Duration) {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			t0 := time.Now()
			if err := a.Send(context.Background(), "node-b", []byte("config batch")); err != nil {
				t.Errorf("Send during the flood: %v", err)
				return
			}
			lat = append(lat, time.Since(t0))
			recvOne(t, b, 5*time.Second)
		}
	}
	quiet := func() []time.Duration { l := lat; lat = nil; return l }
	ping(300 * time.Millisecond)
	base := quiet()

	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	close(flood.start)
	pingDone := make(chan struct{})
	go func() {
		defer close(pingDone)
		for {
			select {
			case <-flood.done:
				return
			default:
			}
			ping(10 * time.Millisecond)
		}
	}()
	<-flood.done
	wall := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	<-pingDone
	during := quiet()
	cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
	st := b.Stats()
	t.Logf("flood: %d frames from random names in %v (%.0f k frames/s), process CPU %v (%.0f ns/frame, the flood generator and the pings included)",
		frames, wall.Round(time.Millisecond), float64(frames)/wall.Seconds()/1000, cpu.Round(time.Millisecond), float64(cpu.Nanoseconds())/frames)
	t.Logf("receiver: %d dropped unadmitted, %d key derivations (node-a's), %d bad tags", st.DroppedUnadmitted, st.KeyDerivations, st.DroppedAuth)
	t.Logf("message latency (Send until acknowledged): quiet %s; during the flood %s", latStats(base), latStats(during))
	if st.KeyDerivations > 1 || st.DroppedUnadmitted < frames {
		t.Errorf("derivations %d (want 1: node-a's), unadmitted %d (want %d)", st.KeyDerivations, st.DroppedUnadmitted, frames)
	}
	if cpu > time.Second {
		t.Errorf("the flood cost %v of CPU, bound 1 s", cpu)
	}
	if len(during) == 0 {
		t.Errorf("no message went through during the flood")
	}
}

func latStats(l []time.Duration) string {
	if len(l) == 0 {
		return "none"
	}
	slices.Sort(l)
	return fmt.Sprintf("%d messages, median %v, p99 %v, max %v", len(l),
		l[len(l)/2].Round(time.Microsecond), l[len(l)*99/100].Round(time.Microsecond), l[len(l)-1].Round(time.Microsecond))
}
