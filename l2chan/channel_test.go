package l2chan

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/internal/testutil"
)

// testLabel is the HKDF label of the test channels.
const testLabel = "hagent-test-v1"

type chanOpt func(*Config)

// newTestChannel starts a channel for node self on links of the given
// segments of n.
func newTestChannel(t testing.TB, n *fakeNet, self string, segs []string, opts ...chanOpt) *Channel {
	t.Helper()
	cfg := LabConfig()
	cfg.Self = self
	cfg.GroupID = 10
	cfg.Password = []byte("lab-secret")
	cfg.Label = testLabel
	cfg.AdmitAll = true // no heartbeats here; TestChannelAdmit covers Admit
	for i, s := range segs {
		cfg.Links = append(cfg.Links, n.link(s, fmt.Sprintf("ha%d", i+1)))
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", self, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func recvOne(t testing.TB, c *Channel, timeout time.Duration) Message {
	t.Helper()
	select {
	case m, ok := <-c.Recv():
		if !ok {
			t.Fatal("Recv channel closed")
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no message within %v", timeout)
	}
	return Message{}
}

// TestChannelExactlyOnceInOrder sends numbered messages from several
// goroutines in both directions over impaired segments and checks each
// sender's messages arrive exactly once and in order.
func TestChannelExactlyOnceInOrder(t *testing.T) {
	tests := []struct {
		name               string
		loss, dup, reorder float64
		senders, perSender int
		maxSize            int
	}{
		{name: "clean", senders: 4, perSender: 50, maxSize: 4000},
		{name: "loss30", loss: 0.3, senders: 4, perSender: 40, maxSize: 5000},
		{name: "loss30-dup-reorder", loss: 0.3, dup: 0.2, reorder: 0.3, senders: 6, perSender: 40, maxSize: 9000},
		{name: "dup-reorder-only", dup: 0.5, reorder: 0.5, senders: 3, perSender: 60, maxSize: 3000},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNet(uint64(i + 1))
			n.seg("s1").set(tt.loss, tt.dup, tt.reorder)
			a := newTestChannel(t, n, "node-a", []string{"s1"})
			b := newTestChannel(t, n, "node-b", []string{"s1"})

			send := func(from *Channel, to string, sender int, errs chan<- error) {
				rng := rand.New(rand.NewPCG(uint64(sender), 7))
				for k := 0; k < tt.perSender; k++ {
					msg := make([]byte, 8+rng.IntN(tt.maxSize))
					binary.BigEndian.PutUint32(msg, uint32(sender))
					binary.BigEndian.PutUint32(msg[4:], uint32(k))
					for j := 8; j < len(msg); j++ {
						msg[j] = byte(sender + k + j)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					err := from.Send(ctx, to, msg)
					cancel()
					if err != nil {
						errs <- fmt.Errorf("sender %d msg %d: %w", sender, k, err)
						return
					}
				}
				errs <- nil
			}
			check := func(c *Channel, from string, done chan<- error) {
				next := make([]int, tt.senders)
				total := 0
				for total < tt.senders*tt.perSender {
					select {
					case m := <-c.Recv():
						if m.From != from {
							done <- fmt.Errorf("message from %q, want %q", m.From, from)
							return
						}
						s, k := int(binary.BigEndian.Uint32(m.Data)), int(binary.BigEndian.Uint32(m.Data[4:]))
						if s >= tt.senders || k != next[s] {
							done <- fmt.Errorf("got sender %d msg %d, want msg %d", s, k, next[min(s, tt.senders-1)])
							return
						}
						for j := 8; j < len(m.Data); j++ {
							if m.Data[j] != byte(s+k+j) {
								done <- fmt.Errorf("sender %d msg %d corrupted at byte %d", s, k, j)
								return
							}
						}
						next[s]++
						total++
					case <-time.After(20 * time.Second):
						done <- fmt.Errorf("stalled after %d messages", total)
						return
					}
				}
				// Nothing more may arrive: no duplicates.
				select {
				case m := <-c.Recv():
					done <- fmt.Errorf("extra message from %s (%d bytes)", m.From, len(m.Data))
				case <-time.After(100 * time.Millisecond):
					done <- nil
				}
			}

			errs := make(chan error, 2*tt.senders+2)
			for s := 0; s < tt.senders; s++ {
				go send(a, "node-b", s, errs)
				go send(b, "node-a", s, errs)
			}
			go check(b, "node-a", errs)
			go check(a, "node-b", errs)
			for k := 0; k < 2*tt.senders+2; k++ {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			st := a.Stats()
			if tt.loss > 0 && st.Retransmits == 0 {
				t.Errorf("loss %.0f%% but no retransmissions: %+v", tt.loss*100, st)
			}
			if st.MessagesSent != uint64(tt.senders*tt.perSender) {
				t.Errorf("MessagesSent = %d, want %d", st.MessagesSent, tt.senders*tt.perSender)
			}
		})
	}
}

// TestChannelLargeMessage sends 10 MB over a segment losing 30 % of the
// frames.
func TestChannelLargeMessage(t *testing.T) {
	n := newFakeNet(42)
	n.seg("s1").set(0.3, 0.05, 0.1)
	a := newTestChannel(t, n, "node-a", []string{"s1"})
	b := newTestChannel(t, n, "node-b", []string{"s1"})
	payload := make([]byte, 10<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		errc <- a.Send(ctx, "node-b", payload)
	}()
	m := recvOne(t, b, 40*time.Second)
	if err := <-errc; err != nil {
		t.Fatalf("Send: %v", err)
	}
	if sha256.Sum256(m.Data) != sha256.Sum256(payload) {
		t.Fatalf("payload corrupted: got %d bytes", len(m.Data))
	}
	t.Logf("10 MB over 30%% loss in %v, stats %+v", time.Since(start), a.Stats())
}

// TestChannelRejects checks that frames from a node with the wrong key or
// group are never delivered and are counted.
func TestChannelRejects(t *testing.T) {
	tests := []struct {
		name        string
		opt         chanOpt
		wantAuth    bool
		wantMalform bool
	}{
		{name: "bad password", opt: func(c *Config) { c.Password = []byte("wrong") }, wantAuth: true},
		{name: "other group", opt: func(c *Config) { c.GroupID = 11 }, wantMalform: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNet(3)
			a := newTestChannel(t, n, "node-a", []string{"s1"}, tt.opt)
			b := newTestChannel(t, n, "node-b", []string{"s1"})
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if err := a.Send(ctx, "node-b", []byte("hello")); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Send = %v, want deadline exceeded", err)
			}
			select {
			case m := <-b.Recv():
				t.Fatalf("delivered %q despite bad credentials", m.Data)
			case <-time.After(50 * time.Millisecond):
			}
			st := b.Stats()
			if tt.wantAuth && st.DroppedAuth == 0 {
				t.Errorf("DroppedAuth = 0, want > 0 (%+v)", st)
			}
			if tt.wantMalform && st.DroppedMalformed == 0 {
				t.Errorf("DroppedMalformed = 0, want > 0 (%+v)", st)
			}
			if st.FramesReceived != 0 {
				t.Errorf("FramesReceived = %d, want 0", st.FramesReceived)
			}
		})
	}
}

// TestChannelReplay replays every frame node-a sent and checks none is
// accepted again.
func TestChannelReplay(t *testing.T) {
	n := newFakeNet(4)
	var mu sync.Mutex
	var captured [][]byte
	n.seg("s1").setTap(func(b []byte) {
		var h FrameHeader
		if _, err := DecodeFrameHeader(&h, b); err == nil && h.Src == "node-a" {
			mu.Lock()
			captured = append(captured, b)
			mu.Unlock()
		}
	})
	a := newTestChannel(t, n, "node-a", []string{"s1"})
	b := newTestChannel(t, n, "node-b", []string{"s1"})
	attacker := n.link("s1", "evil")
	if err := a.Send(context.Background(), "node-b", []byte("once")); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, b, 2*time.Second); string(m.Data) != "once" {
		t.Fatalf("got %q", m.Data)
	}
	before := b.Stats()
	mu.Lock()
	frames := captured
	mu.Unlock()
	if len(frames) == 0 {
		t.Fatal("tap captured nothing")
	}
	for _, f := range frames {
		attacker.inject(f)
	}
	testutil.Eventually(t, 2*time.Second, "replays counted", func() bool {
		return b.Stats().DroppedReplay >= before.DroppedReplay+uint64(len(frames))
	})
	select {
	case m := <-b.Recv():
		t.Fatalf("replayed message delivered: %q", m.Data)
	case <-time.After(100 * time.Millisecond):
	}
	if got := b.Stats().FramesReceived; got != before.FramesReceived {
		t.Errorf("FramesReceived grew from %d to %d on replays", before.FramesReceived, got)
	}
}

// TestChannelFailover cuts the first link in the middle of a transfer: the
// transfer completes on the second one, and traffic moves back when the
// first link answers again.
func TestChannelFailover(t *testing.T) {
	// The segment cuts itself after cutAfter frames, in the middle of the
	// transfer however fast it runs; cut then does the rest.
	const cutAfter = 500
	tests := []struct {
		name string
		cut  func(n *fakeNet, a, b *Channel)
	}{
		{name: "silent cut", cut: func(n *fakeNet, a, b *Channel) {}},
		{name: "SetLinkUp false", cut: func(n *fakeNet, a, b *Channel) {
			a.SetLinkUp("ha1", false)
			b.SetLinkUp("ha1", false)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newFakeNet(5)
			a := newTestChannel(t, n, "node-a", []string{"s1", "s2"})
			b := newTestChannel(t, n, "node-b", []string{"s1", "s2"})
			payload := bytes.Repeat([]byte("0123456789abcdef"), 256<<10) // 4 MB
			s1, frames, cutNow := n.seg("s1"), 0, make(chan struct{})
			s1.setTap(func([]byte) { // called with the network locked
				if frames++; frames == cutAfter {
					s1.cut = true
					close(cutNow)
				}
			})
			errc := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				errc <- a.Send(ctx, "node-b", payload)
			}()
			select {
			case <-cutNow:
			case <-time.After(10 * time.Second):
				t.Fatal("transfer never under way on ha1")
			}
			tt.cut(n, a, b)
			m := recvOne(t, b, 30*time.Second)
			if err := <-errc; err != nil {
				t.Fatalf("Send: %v", err)
			}
			if !bytes.Equal(m.Data, payload) {
				t.Fatalf("payload corrupted (%d bytes)", len(m.Data))
			}
			st := a.Stats()
			if st.ActiveLink != "ha2" || st.Links[1].TxFrames == 0 {
				t.Fatalf("active link %q, ha2 tx %d; want traffic on ha2", st.ActiveLink, st.Links[1].TxFrames)
			}
			// Repair the first link: traffic returns to it.
			n.seg("s1").setCut(false)
			a.SetLinkUp("ha1", true)
			b.SetLinkUp("ha1", true)
			testutil.Eventually(t, 5*time.Second, "back on ha1", func() bool {
				return a.Stats().ActiveLink == "ha1"
			})
			tx := a.Stats().Links[0].TxFrames
			if err := a.Send(context.Background(), "node-b", []byte("after")); err != nil {
				t.Fatal(err)
			}
			if m := recvOne(t, b, 5*time.Second); string(m.Data) != "after" {
				t.Fatalf("got %q", m.Data)
			}
			if a.Stats().Links[0].TxFrames == tx {
				t.Error("message after repair did not use ha1")
			}
		})
	}
}

// TestChannelPeerRestart restarts node-b: the new incarnation gets new
// messages exactly once and nothing stale.
func TestChannelPeerRestart(t *testing.T) {
	n := newFakeNet(6)
	n.seg("s1").set(0.1, 0.1, 0.1)
	a := newTestChannel(t, n, "node-a", []string{"s1"})
	b := newTestChannel(t, n, "node-b", []string{"s1"}, func(c *Config) { c.Epoch = 100 })
	for i := 0; i < 3; i++ {
		if err := a.Send(context.Background(), "node-b", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if m := recvOne(t, b, 2*time.Second); m.Data[0] != byte(i) {
			t.Fatalf("got %v want %d", m.Data, i)
		}
	}
	b.Close()
	b2 := newTestChannel(t, n, "node-b", []string{"s1"}, func(c *Config) { c.Epoch = 200 })
	for i := 10; i < 13; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := a.Send(ctx, "node-b", []byte{byte(i)})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if m := recvOne(t, b2, 2*time.Second); m.Data[0] != byte(i) {
			t.Fatalf("after restart got %v want %d", m.Data, i)
		}
	}
	// And the restarted node can talk back.
	if err := b2.Send(context.Background(), "node-a", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if m := recvOne(t, a, 2*time.Second); string(m.Data) != "hi" {
		t.Fatalf("got %q", m.Data)
	}
}

// TestChannelUnreachable checks Send gives up on a silent peer.
func TestChannelUnreachable(t *testing.T) {
	n := newFakeNet(7)
	a := newTestChannel(t, n, "node-a", []string{"s1"}, func(c *Config) { c.PeerTimeout = 300 * time.Millisecond })
	start := time.Now()
	err := a.Send(context.Background(), "nobody", []byte("x"))
	if !errors.Is(err, ErrPeerUnreachable) {
		t.Fatalf("Send = %v, want ErrPeerUnreachable", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("gave up after %v, want about 300ms", d)
	}
}

// TestChannelFlowControl lets the receiver not read: the sender stalls
// instead of flooding it, then completes once the receiver reads.
func TestChannelFlowControl(t *testing.T) {
	n := newFakeNet(8)
	a := newTestChannel(t, n, "node-a", []string{"s1"})
	b := newTestChannel(t, n, "node-b", []string{"s1"}, func(c *Config) { c.RecvQueue = 4 })
	const total = 40
	done := make(chan error, 1)
	go func() {
		for i := 0; i < total; i++ {
			if err := a.Send(context.Background(), "node-b", []byte{byte(i)}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		t.Fatalf("all %d sends completed without the receiver reading (err %v)", total, err)
	case <-time.After(300 * time.Millisecond):
	}
	for i := 0; i < total; i++ {
		if m := recvOne(t, b, 5*time.Second); m.Data[0] != byte(i) {
			t.Fatalf("got %d want %d", m.Data[0], i)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestChannelConfigErrors(t *testing.T) {
	n := newFakeNet(9)
	l := n.link("s1", "ha1")
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no password", Config{Label: testLabel, Self: "a", Links: []heartbeat.Link{l}}},
		{"no name", Config{Label: testLabel, Links: []heartbeat.Link{l}}},
		{"long name", Config{Label: testLabel, Self: string(bytes.Repeat([]byte("x"), 65)), Links: []heartbeat.Link{l}}},
		{"no label", Config{Self: "a", Links: []heartbeat.Link{l}}},
		{"no links", Config{Label: testLabel, Self: "a"}},
		{"tiny mtu", Config{Label: testLabel, Self: "a", Links: []heartbeat.Link{l}, MTU: 100}},
		{"duplicate link", Config{Label: testLabel, Self: "a", Links: []heartbeat.Link{l, l}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := New(tt.cfg); err == nil {
				c.Close()
				t.Fatal("New succeeded, want error")
			}
		})
	}
}

// BenchmarkChannelThroughput measures bulk transfer over a clean in-memory
// segment.
func BenchmarkChannelThroughput(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			n := newFakeNet(10)
			x := newTestChannel(b, n, "node-a", []string{"s1"})
			y := newTestChannel(b, n, "node-b", []string{"s1"})
			go func() {
				for range y.Recv() {
				}
			}()
			msg := make([]byte, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := x.Send(context.Background(), "node-b", msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestChannelInstancesIsolated runs two channel instances, as for two
// Ethertypes (configuration sync and session sync), with their own labels
// over the same links. The fake segment hands every frame to both (as if
// the Ethertype filter failed): each instance still delivers only its own
// messages and rejects the other's frames, before any state changes.
func TestChannelInstancesIsolated(t *testing.T) {
	n := newFakeNet(14)
	label := func(l string) chanOpt { return func(c *Config) { c.Label = l } }
	a1 := newTestChannel(t, n, "node-a", []string{"s1", "s2"}, label("hagent-sync-v1"))
	b1 := newTestChannel(t, n, "node-b", []string{"s1", "s2"}, label("hagent-sync-v1"))
	a2 := newTestChannel(t, n, "node-a", []string{"s1", "s2"}, label("hagent-session-v1"))
	b2 := newTestChannel(t, n, "node-b", []string{"s1", "s2"}, label("hagent-session-v1"))
	const msgs = 20
	errc := make(chan error, 2)
	for _, x := range []struct {
		c   *Channel
		tag string
	}{{a1, "sync"}, {a2, "session"}} {
		go func() {
			for i := 0; i < msgs; i++ {
				if err := x.c.Send(context.Background(), "node-b", fmt.Appendf(nil, "%s %d %s", x.tag, i, bytes.Repeat([]byte("x"), 3000))); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for _, x := range []struct {
		c   *Channel
		tag string
	}{{b1, "sync"}, {b2, "session"}} {
		for i := 0; i < msgs; i++ {
			m := recvOne(t, x.c, 10*time.Second)
			want := fmt.Sprintf("%s %d ", x.tag, i)
			if !bytes.HasPrefix(m.Data, []byte(want)) {
				t.Fatalf("%s instance got %.20q, want prefix %q", x.tag, m.Data, want)
			}
		}
	}
	for i := 0; i < 2; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	select {
	case m := <-b1.Recv():
		t.Fatalf("extra message on the sync instance: %.20q", m.Data)
	case m := <-b2.Recv():
		t.Fatalf("extra message on the session instance: %.20q", m.Data)
	case <-time.After(100 * time.Millisecond):
	}
	for name, c := range map[string]*Channel{"b1": b1, "b2": b2} {
		// Unauthentic, or (an older epoch of the same sender name) stale.
		if st := c.Stats(); st.DroppedAuth+st.DroppedReplay == 0 {
			t.Errorf("%s rejected no frame of the other instance: %+v", name, st)
		}
	}
}

// TestChannelSpread: with Spread 2 a transfer goes over both links of the
// group, arrives intact, and retransmits little when nothing is lost
// although one link is 2 ms slower than the other (loss detection compares
// a fragment only with later ones on its own link); with one of them down
// it runs on the other; with both down on the fallback.
func TestChannelSpread(t *testing.T) {
	n := newFakeNet(7)
	n.seg("s1").latency = 2 * time.Millisecond
	spread := func(c *Config) { c.Spread = 2 }
	a := newTestChannel(t, n, "node-a", []string{"s1", "s2", "s3"}, spread)
	b := newTestChannel(t, n, "node-b", []string{"s1", "s2", "s3"}, spread)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MB
	send := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- a.Send(ctx, "node-b", payload) }()
		m := recvOne(t, b, 20*time.Second)
		if err := <-errc; err != nil {
			t.Fatalf("%s: Send: %v", what, err)
		}
		if !bytes.Equal(m.Data, payload) {
			t.Fatalf("%s: payload corrupted", what)
		}
	}
	tx := func() [3]uint64 {
		var out [3]uint64
		for i, l := range a.Stats().Links {
			out[i] = l.TxFrames
		}
		return out
	}
	before := tx()
	send("both up")
	after := tx()
	d1, d2, d3 := after[0]-before[0], after[1]-before[1], after[2]-before[2]
	if d1 < 200 || d2 < 200 || d3 > 10 {
		t.Fatalf("frames per link %d/%d/%d: want the transfer spread over ha1 and ha2, not on ha3", d1, d2, d3)
	}
	if st := a.Stats(); st.Retransmits*100 > st.FramesSent {
		t.Errorf("%d retransmits (%d timeouts) of %d frames on a lossless network", st.Retransmits, st.Timeouts, st.FramesSent)
	}

	a.SetLinkUp("ha1", false)
	b.SetLinkUp("ha1", false)
	before = tx()
	send("ha1 down")
	after = tx()
	if after[0] != before[0] || after[1]-before[1] < 400 {
		t.Fatalf("with ha1 down: frames per link %v -> %v, want all on ha2", before, after)
	}

	a.SetLinkUp("ha2", false)
	b.SetLinkUp("ha2", false)
	before = tx()
	send("group down")
	after = tx()
	if after[0] != before[0] || after[1] != before[1] || after[2]-before[2] < 400 {
		t.Fatalf("with the group down: frames per link %v -> %v, want all on ha3 (fallback)", before, after)
	}

	a.SetLinkUp("ha1", true)
	b.SetLinkUp("ha1", true)
	a.SetLinkUp("ha2", true)
	b.SetLinkUp("ha2", true)
	testutil.Eventually(t, 5*time.Second, "back on the group", func() bool { return a.Stats().ActiveLink == "ha1" })
	before = tx()
	send("group back")
	after = tx()
	if after[0]-before[0] < 200 || after[1]-before[1] < 200 {
		t.Fatalf("group back: frames per link %v -> %v, want both ha1 and ha2", before, after)
	}
}

// TestChannelSendAsync: messages queued with SendAsync and Send arrive
// once each in the order queued, and every result channel yields nil.
func TestChannelSendAsync(t *testing.T) {
	n := newFakeNet(9)
	n.seg("s1").loss = 0.1
	a := newTestChannel(t, n, "node-a", []string{"s1"})
	b := newTestChannel(t, n, "node-b", []string{"s1"})
	var dones []<-chan error
	for i := 0; i < 50; i++ {
		msg := []byte(fmt.Sprintf("msg %03d %s", i, bytes.Repeat([]byte("x"), i*100)))
		if i%10 == 9 {
			if err := a.Send(context.Background(), "node-b", msg); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
			continue
		}
		d, err := a.SendAsync("node-b", msg)
		if err != nil {
			t.Fatal(err)
		}
		dones = append(dones, d)
	}
	for i := 0; i < 50; i++ {
		m := recvOne(t, b, 10*time.Second)
		if want := fmt.Sprintf("msg %03d ", i); !bytes.HasPrefix(m.Data, []byte(want)) {
			t.Fatalf("message %d is %.8q, want %q", i, m.Data, want)
		}
	}
	for i, d := range dones {
		select {
		case err := <-d:
			if err != nil {
				t.Fatalf("SendAsync %d: %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("SendAsync %d: no result", i)
		}
	}
	if _, err := a.SendAsync("node-a", []byte("x")); err == nil {
		t.Fatal("SendAsync to self accepted")
	}
}
