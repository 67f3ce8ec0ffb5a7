package l2chan

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// captureLink records what is sent and never receives.
type captureLink struct {
	mu     sync.Mutex
	frames [][]byte
}

func (l *captureLink) Name() string                   { return "ha1" }
func (l *captureLink) HardwareAddr() net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, 0, 1} }
func (l *captureLink) Send(p []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.frames = append(l.frames, append([]byte(nil), p...))
	return nil
}
func (l *captureLink) Recv([]byte) (int, net.HardwareAddr, error) { select {} }
func (l *captureLink) Close() error                               { return nil }

// bareChannel builds a channel's state without goroutines, so a test can
// drive handleFrame directly.
func bareChannel(t testing.TB, self string, epoch uint64) (*Channel, *captureLink) {
	cfg := LabConfig()
	cfg.Self, cfg.GroupID, cfg.Epoch, cfg.Window, cfg.MaxMessage, cfg.RecvQueue = self, 10, epoch, 64, 1<<20, 8
	keys, err := newKeyring(testLabel, []byte("fuzz-secret"), cfg.GroupID)
	if err != nil {
		t.Fatal(err)
	}
	l := &captureLink{}
	c := &Channel{cfg: cfg, log: hclog.NewNullLogger(), keys: keys, adm: newAdmission(false),
		peers: map[string]*peer{}, links: []*linkState{{l: l, name: "ha1", up: true}}}
	if err := c.setEpoch(epoch); err != nil {
		t.Fatal(err)
	}
	// The two test nodes know each other's epochs from their heartbeats.
	c.Admit("node-a", 1)
	c.Admit("node-b", 2)
	c.activeName.Store("ha1")
	return c, l
}

// seedFrames returns valid frames from node-a (epoch 1) to node-b (epoch 2)
// of every kind, as a receiver bareChannel("node-b", 2) accepts them.
func seedFrames(t testing.TB) map[string][]byte {
	a, l := bareChannel(t, "node-a", 1)
	p := a.getPeer("node-b")
	p.epoch = 2
	a.sendFrame(p, FrameProbe, 0, nil)
	d := DataBody{Seq: 1, MsgLen: 5, Offset: 0, Data: []byte("hello")}
	b, _ := d.MarshalBinary()
	a.sendFrame(p, FrameData, 0, b)
	d2 := DataBody{Seq: 2, MsgLen: 10, Offset: 0, Data: []byte("first")}
	b2, _ := d2.MarshalBinary()
	a.sendFrame(p, FrameData, 0, b2)
	ack := AckBody{Cum: 0, Window: 64, Sacks: []SackBlock{{First: 2, Last: 3}}}
	b3, _ := ack.MarshalBinary()
	a.sendFrame(p, FrameAck, 0, b3)
	names := []string{"probe", "data-whole-message", "data-first-fragment", "ack-with-sack"}
	out := map[string][]byte{}
	for i, f := range l.frames {
		out[names[i]] = f
	}
	return out
}

// FuzzFrame feeds arbitrary frames to the decoder and to a receiving
// channel: nothing may panic, and a header that decodes must encode back to
// the same bytes.
func FuzzFrame(f *testing.F) {
	for _, fr := range seedFrames(f) {
		f.Add(fr) // valid frames reach the data and ack handlers
	}
	f.Add([]byte{})                         // empty
	f.Add([]byte{1, 1, 0, 10})              // truncated fixed header
	f.Add(bytes.Repeat([]byte{0xff}, 64))   // bad version
	f.Add(append(make([]byte, 28), 200, 1)) // name length above the limit
	f.Fuzz(func(t *testing.T, b []byte) {
		var h FrameHeader
		if n, err := DecodeFrameHeader(&h, b); err == nil {
			enc, err := h.MarshalBinary()
			if err != nil {
				t.Fatalf("decoded header does not encode: %v", err)
			}
			if !bytes.Equal(enc, b[:n]) {
				t.Fatalf("header round trip: %x != %x", enc, b[:n])
			}
		}
		c, _ := bareChannel(t, "node-b", 2)
		c.handleFrame(0, b)
		c.handleFrame(0, b) // a second copy is a replay
		c.flushAcks()
		c.onTimer(time.Now().Add(time.Hour))
	})
}

// FuzzFrameBody seals arbitrary plaintext bodies in authentic frames, so
// the body decoders and the reliability state behind them see hostile
// input from an authenticated peer.
func FuzzFrameBody(f *testing.F) {
	d := DataBody{Seq: 1, MsgLen: 3, Data: []byte("abc")}
	db, _ := d.MarshalBinary()
	f.Add(byte(FrameData), db) // a whole one-fragment message
	a := AckBody{Cum: 0, Window: 1, Sacks: []SackBlock{{2, 9}}}
	ab, _ := a.MarshalBinary()
	f.Add(byte(FrameAck), ab)                                                                  // ack of data never sent
	f.Add(byte(FrameData), []byte{0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}) // 4 GB message announced
	f.Fuzz(func(t *testing.T, kind byte, body []byte) {
		if k := FrameKind(kind); k == frameKindInvalid || k >= frameKindEnd {
			return
		}
		if d.UnmarshalBinary(body) == nil {
			if enc, err := d.MarshalBinary(); err != nil || !bytes.Equal(enc, body) {
				t.Fatalf("data body round trip failed: %v", err)
			}
		}
		var ack AckBody
		if ack.UnmarshalBinary(body) == nil {
			if _, err := ack.MarshalBinary(); err != nil {
				t.Fatalf("decoded ack does not encode: %v", err)
			}
		}
		snd, l := bareChannel(t, "node-a", 1)
		p := snd.getPeer("node-b")
		p.epoch = 2
		// Give the receiver something in flight so acks have a target.
		rcv, _ := bareChannel(t, "node-b", 2)
		q := rcv.getPeer("node-a")
		rcv.enqueue(&outMsg{peer: "node-a", data: bytes.Repeat([]byte{1}, 5000), done: make(chan error, 1)})
		q.epoch = 1
		aead, _ := rcv.keys.session("node-a", 1)
		q.aead = aead
		rcv.pump(q)
		snd.sendFrame(p, FrameKind(kind), 0, body)
		for _, fr := range l.frames {
			rcv.handleFrame(0, fr)
		}
		rcv.flushAcks()
		rcv.onTimer(time.Now().Add(time.Hour))
	})
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzFrame from seedFrames
// when HAGENT_WRITE_FUZZ_SEEDS is set.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("HAGENT_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set HAGENT_WRITE_FUZZ_SEEDS=1 to regenerate the checked-in seeds")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzFrame")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, fr := range seedFrames(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%+q)\n", fr)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSeedFramesAccepted makes sure the seeds really are authentic frames,
// so the fuzzer starts from inside the handlers, and that a tampered copy
// is rejected.
func TestSeedFramesAccepted(t *testing.T) {
	frames := seedFrames(t)
	tests := []struct {
		name       string
		frame      []byte
		tamper     bool
		wantRx     uint64
		wantBadTag uint64
	}{
		{name: "probe", frame: frames["probe"], wantRx: 1},
		{name: "data", frame: frames["data-whole-message"], wantRx: 1},
		{name: "tampered data", frame: frames["data-whole-message"], tamper: true, wantBadTag: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := bareChannel(t, "node-b", 2)
			fr := append([]byte(nil), tt.frame...)
			if tt.tamper {
				fr[len(fr)-1] ^= 1
			}
			c.handleFrame(0, fr)
			if got := c.framesRx.Load(); got != tt.wantRx {
				t.Errorf("accepted %d frames, want %d", got, tt.wantRx)
			}
			if got := c.badAuth.Load(); got != tt.wantBadTag {
				t.Errorf("bad tags %d, want %d", got, tt.wantBadTag)
			}
		})
	}
}

// FuzzReceive drives the whole receive path of a channel with a sequence
// of operations decoded from the input: raw frames, authentic data, ack
// and probe frames of an admitted peer with fuzzed fields (so the fuzzer
// gets past authentication), frames of unadmitted senders, reads of the
// delivered messages and timer expiries. Nothing may panic, and after
// every step the receive state stays within its bounds: the queue of
// unread messages, the out-of-order buffer (fragments and bytes), the
// reassembly buffer against the bytes arrived, the peers.
func FuzzReceive(f *testing.F) {
	// Operations (see the switch below): 1 data (seq byte, 4 is the next
	// in order; message length; offset; data length; data), 2 read, 3 ack
	// (9: probe), 4 stranger, 5 timer, 0 raw bytes.
	f.Add([]byte{1, 4, 0, 0, 0, 5, 0, 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o', 2, 1}) // a whole message, read
	f.Add([]byte{1, 4, 0x04, 0, 0, 0, 0, 0, 0, 0, 4, 't', 'i', 'n', 'y',
		1, 4, 0x04, 0, 0, 0, 0, 0, 0, 0, 4, 't', 'i', 'n', 'y'}) // 64 MiB announced, twice
	f.Add([]byte{1, 5, 0, 0, 0, 4, 0, 0, 0, 0, 4, 'a', 'b', 'c', 'd',
		1, 4, 0, 0, 0, 4, 0, 0, 0, 0, 4, 'w', 'x', 'y', 'z', 2, 3}) // out of order, then in order, read
	f.Add([]byte{1, 4, 0, 0, 0, 9, 0, 0, 0, 0, 4, 'f', 'i', 'r', 's',
		1, 4, 0, 0, 0, 9, 0, 0, 0, 9, 4, 'l', 'a', 's', 't'}) // a fragment out of place
	f.Add([]byte{3, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 9, 0, 5}) // an ack, a probe, a timer
	f.Add([]byte{0, 12, 1, 1, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 4, 6, 9}) // raw bytes, a stranger
	f.Fuzz(func(t *testing.T, in []byte) {
		c, _ := bareChannel(t, "node-b", 2)
		c.cfg.MaxMessage = DefaultConfig().MaxMessage
		m := newFrameMaker(t, "node-a", 1, "node-b", 2)
		next := func(n int) []byte {
			if n > len(in) {
				n = len(in)
			}
			b := in[:n]
			in = in[n:]
			return b
		}
		b1 := func() byte {
			if b := next(1); len(b) == 1 {
				return b[0]
			}
			return 0
		}
		u32 := func() uint32 {
			var v uint32
			for _, x := range next(4) {
				v = v<<8 | uint32(x)
			}
			return v
		}
		for steps := 0; len(in) > 0 && steps < 512; steps++ {
			op := b1()
			switch op % 6 {
			case 0: // raw bytes
				n := int(b1())
				c.handleFrame(0, append([]byte(nil), next(n)...))
			case 1: // authentic data: seq near the receive point, length, offset, data
				p := c.peers["node-a"]
				base := uint64(1)
				if p != nil {
					base = p.rcvNext
				}
				seq := base + uint64(b1()) - 4
				msgLen, off := u32(), u32()
				data := next(int(b1()))
				fr := m.data(seq, msgLen, off, data)
				if c.prefilter(fr) {
					c.handleFrame(0, fr)
				}
			case 2: // read up to k delivered messages
				for k := int(b1()) % 8; k > 0 && len(c.deliverQ) > 0; k-- {
					c.deliverQ = c.deliverQ[1:]
					c.maybeReopenWindow()
				}
			case 3: // authentic ack or probe with a fuzzed body
				kind := FrameAck
				if op&8 != 0 {
					kind = FrameProbe
				}
				c.handleFrame(0, m.frame(kind, next(int(b1()))))
			case 4: // a stranger: unadmitted name and epoch
				c.handleFrame(0, bogusFrame(fmt.Sprintf("s-%x", next(2)), uint64(u32())))
			case 5:
				c.flushAcks()
				c.onTimer(time.Now().Add(time.Duration(op) * time.Second))
			}
			if len(c.deliverQ) > c.maxDeliverQ() {
				t.Fatalf("%d messages queued, bound %d", len(c.deliverQ), c.maxDeliverQ())
			}
			if len(c.peers) > maxPeers {
				t.Fatalf("%d peers", len(c.peers))
			}
			for _, p := range c.peers {
				oooBytes := 0
				for _, d := range p.ooo {
					oooBytes += len(d.Data)
				}
				if len(p.ooo) > c.cfg.Window || oooBytes > c.cfg.Window*c.cfg.MTU {
					t.Fatalf("out of order: %d fragments, %d bytes", len(p.ooo), oooBytes)
				}
				if cap(p.asm) > asmGrowth*len(p.asm)+65536 {
					t.Fatalf("reassembly buffer of %d for %d bytes arrived", cap(p.asm), len(p.asm))
				}
			}
			if c.derived.Load() > 1 {
				t.Fatalf("%d key derivations, want at most 1 (node-a's)", c.derived.Load())
			}
		}
	})
}
