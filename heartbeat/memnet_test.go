package heartbeat

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// deadliner is the optional Link interface for receive deadlines.
type deadliner interface{ SetReadDeadline(time.Time) error }

// recvTimeout receives one frame from l, waiting at most d.
func recvTimeout(t *testing.T, l Link, d time.Duration) ([]byte, net.HardwareAddr, error) {
	t.Helper()
	if err := l.(deadliner).SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	n, from, err := l.Recv(buf)
	return buf[:n], from, err
}

// expectFrame asserts that l receives payload from sender.
func expectFrame(t *testing.T, l Link, payload []byte, sender Link) {
	t.Helper()
	got, from, err := recvTimeout(t, l, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: Recv: %v", l.Name(), err)
	}
	if !bytes.Equal(got, payload) {
		t.Errorf("%s: got %q, want %q", l.Name(), got, payload)
	}
	if !bytes.Equal(from, sender.HardwareAddr()) {
		t.Errorf("%s: from %v, want %v", l.Name(), from, sender.HardwareAddr())
	}
}

// expectNothing asserts that l receives nothing for a short while. The
// network delivers synchronously inside Send, so a short wait suffices.
func expectNothing(t *testing.T, l Link) {
	t.Helper()
	got, _, err := recvTimeout(t, l, 20*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("%s: got %q, %v; want nothing", l.Name(), got, err)
	}
}

func TestMemNetworkDelivery(t *testing.T) {
	n := NewMemNetwork()
	a := n.Link("ha1", "a", "ha1")
	b := n.Link("ha1", "b", "ha1")
	c := n.Link("ha1", "c", "ha1")
	other := n.Link("ha2", "a", "ha2")
	macs := map[string]bool{}
	for _, l := range []Link{a, b, c, other} {
		macs[l.HardwareAddr().String()] = true
	}
	if len(macs) != 4 {
		t.Fatalf("MACs not distinct: %v", macs)
	}
	payload := []byte("hello")
	if err := a.Send(payload); err != nil {
		t.Fatal(err)
	}
	payload[0] = 'j' // the network copied it
	expectFrame(t, b, []byte("hello"), a)
	expectFrame(t, c, []byte("hello"), a)
	expectNothing(t, a)     // no echo
	expectNothing(t, other) // other segment

	// Truncation to the buffer.
	_ = b.Send([]byte("0123456789"))
	buf := make([]byte, 4)
	_ = a.(deadliner).SetReadDeadline(time.Time{})
	if k, _, err := a.Recv(buf); err != nil || k != 4 || string(buf) != "0123" {
		t.Errorf("truncated Recv = %d, %q, %v", k, buf, err)
	}
	if s := a.(*MemLink).Stats(); s.Sent != 1 || s.Received != 1 {
		t.Errorf("a stats %+v", s)
	}
}

func TestMemNetworkFaults(t *testing.T) {
	type action func(n *MemNetwork)
	tests := []struct {
		name      string
		fault     action
		heal      action
		delivered bool
	}{
		{"none", func(*MemNetwork) {}, func(*MemNetwork) {}, true},
		{"cut segment", func(n *MemNetwork) { n.Cut("ha1") }, func(n *MemNetwork) { n.Heal("ha1") }, false},
		{"cut other segment", func(n *MemNetwork) { n.Cut("ha2") }, func(n *MemNetwork) { n.Heal("ha2") }, true},
		{"isolate sender", func(n *MemNetwork) { n.Isolate("a") }, func(n *MemNetwork) { n.Recover("a") }, false},
		{"isolate receiver", func(n *MemNetwork) { n.Isolate("b") }, func(n *MemNetwork) { n.Recover("b") }, false},
		{"isolate bystander", func(n *MemNetwork) { n.Isolate("c") }, func(n *MemNetwork) { n.Recover("c") }, true},
		{"100% loss", func(n *MemNetwork) { n.SetLoss("ha1", 100) }, func(n *MemNetwork) { n.SetLoss("ha1", 0) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := NewMemNetworkSeed(1)
			a := n.Link("ha1", "a", "ha1")
			b := n.Link("ha1", "b", "ha1")
			tt.fault(n)
			if err := a.Send([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if tt.delivered {
				expectFrame(t, b, []byte("x"), a)
			} else {
				expectNothing(t, b)
				if s := b.(*MemLink).Stats(); s.Lost != 1 {
					t.Errorf("receiver stats %+v, want Lost 1", s)
				}
			}
			tt.heal(n)
			if err := a.Send([]byte("y")); err != nil {
				t.Fatal(err)
			}
			expectFrame(t, b, []byte("y"), a)
		})
	}
}

func TestMemNetworkIsolateAllSegments(t *testing.T) {
	n := NewMemNetwork()
	a1, a2 := n.Link("ha1", "a", "ha1"), n.Link("ha2", "a", "ha2")
	b1, b2 := n.Link("ha1", "b", "ha1"), n.Link("ha2", "b", "ha2")
	n.Isolate("b")
	_ = a1.Send([]byte("1"))
	_ = a2.Send([]byte("2"))
	_ = b1.Send([]byte("3"))
	expectNothing(t, b1)
	expectNothing(t, b2)
	expectNothing(t, a1)
	n.Recover("b")
	_ = b2.Send([]byte("4"))
	expectFrame(t, a2, []byte("4"), b2)
}

func TestMemNetworkLoss(t *testing.T) {
	for _, pct := range []int{0, 10, 30, 50, 90} {
		t.Run(fmt.Sprint(pct, "%"), func(t *testing.T) {
			n := NewMemNetworkSeed(int64(pct) + 1)
			n.SetLoss("seg", pct)
			a, b := n.Link("seg", "a", "x"), n.Link("seg", "b", "x")
			const total = 2000
			got := 0
			buf := make([]byte, 8)
			for range total / 100 {
				for range 100 {
					_ = a.Send([]byte("p"))
				}
				// Drain what arrived; delivery is synchronous.
				for {
					_ = b.(deadliner).SetReadDeadline(time.Now().Add(10 * time.Millisecond))
					if _, _, err := b.Recv(buf); err != nil {
						break
					}
					got++
				}
			}
			want := total * (100 - pct) / 100
			if d := got - want; d < -total/20 || d > total/20 {
				t.Errorf("%d%% loss: %d of %d delivered, want about %d", pct, got, total, want)
			}
			if s := b.(*MemLink).Stats(); int(s.Lost) != total-got {
				t.Errorf("Lost = %d, want %d", s.Lost, total-got)
			}
		})
	}
}

// TestMemNetworkSeeded checks that a seed fixes the loss pattern.
func TestMemNetworkSeeded(t *testing.T) {
	pattern := func(seed int64) string {
		n := NewMemNetworkSeed(seed)
		n.SetLoss("s", 50)
		a, b := n.Link("s", "a", "x"), n.Link("s", "b", "x")
		var out []byte
		for i := range 64 {
			_ = a.Send([]byte{byte(i)})
		}
		buf := make([]byte, 1)
		for {
			_ = b.(deadliner).SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			if _, _, err := b.Recv(buf); err != nil {
				return string(out)
			}
			out = append(out, buf[0])
		}
	}
	if first, again := pattern(7), pattern(7); first != again {
		t.Error("same seed, different losses")
	}
	if pattern(7) == pattern(8) {
		t.Error("different seeds, same losses")
	}
}

func TestMemNetworkNeverBlocks(t *testing.T) {
	n := NewMemNetwork()
	a, b := n.Link("s", "a", "x"), n.Link("s", "b", "x")
	const total = 4 * MemQueueLen
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range total {
			if err := a.Send([]byte("frame")); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Send blocked on a full receiver")
	}
	if s := b.(*MemLink).Stats(); s.Dropped != total-MemQueueLen {
		t.Errorf("Dropped = %d, want %d", s.Dropped, total-MemQueueLen)
	}
	// The queue still holds the first MemQueueLen frames.
	for i := range MemQueueLen {
		if _, _, err := recvTimeout(t, b, time.Second); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
}

func TestMemLinkDeadlineAndClose(t *testing.T) {
	n := NewMemNetwork()
	a, b := n.Link("s", "a", "x"), n.Link("s", "b", "x")

	start := time.Now()
	_, _, err := recvTimeout(t, b, 50*time.Millisecond)
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if el := time.Since(start); el < 50*time.Millisecond || el > 5*time.Second {
		t.Errorf("timed out after %v", el)
	}

	// Moving the deadline wakes a blocked Recv.
	_ = b.(deadliner).SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, _, err := b.Recv(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond) // let Recv block (not required for correctness)
	_ = b.(deadliner).SetReadDeadline(time.Now().Add(-time.Second))
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("err = %v after moving the deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("SetReadDeadline did not wake Recv")
	}

	// Close unblocks Recv; later calls fail with ErrClosed.
	_ = b.(deadliner).SetReadDeadline(time.Time{})
	go func() {
		_, _, err := b.Recv(make([]byte, 10))
		errc <- err
	}()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Recv after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Recv")
	}
	if err := b.Send([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// A closed link no longer receives (nor counts).
	_ = a.Send([]byte("x"))
	if s := b.(*MemLink).Stats(); s.Dropped+s.Lost != 0 {
		t.Errorf("closed link still attached: %+v", s)
	}
}
