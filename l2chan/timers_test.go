package l2chan

import (
	"testing"
	"time"
)

// TestTimeoutRetransmissions drives one sender by hand: a first timeout
// resends only the oldest fragment; what the next ack says decides whether
// the rest goes again; a second timeout in a row resends everything.
func TestTimeoutRetransmissions(t *testing.T) {
	tests := []struct {
		name string
		// ack is the peer's answer after the first timeout (nil: none,
		// a second timeout follows); una and next are the stream's
		// first unacknowledged and next sequence numbers.
		ack  func(una, next uint64) *AckBody
		want func(n int) int // frames sent after the first timeout, for n in flight
	}{
		{name: "busy receiver: the ack covers everything", ack: func(una, next uint64) *AckBody {
			return &AckBody{Cum: next - 1, Window: 64}
		}, want: func(int) int { return 0 }},
		{name: "busy receiver, first ack partial: the rest is not resent", ack: func(una, next uint64) *AckBody {
			return &AckBody{Cum: una + 2, Window: 64} // covers the resent fragment: ambiguous
		}, want: func(int) int { return 0 }},
		{name: "frames lost: the ack stops at the resent one", ack: func(una, next uint64) *AckBody {
			return &AckBody{Cum: una, Window: 64}
		}, want: func(n int) int { return n - 1 }},
		{name: "one more lost, SACKed around it", ack: func(una, next uint64) *AckBody {
			return &AckBody{Cum: una, Window: 64, Sacks: []SackBlock{{First: una + 2, Last: next - 1}}}
		}, want: func(int) int { return 1 }},
		{name: "no answer: the second timeout resends all", ack: nil, want: func(n int) int { return n }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, l := bareChannel(t, "node-a", 1)
			p := c.getPeer("node-b")
			p.epoch = 2
			c.enqueue(&outMsg{peer: "node-b", data: make([]byte, 10000), done: make(chan error, 1)})
			c.pump(p)
			n := len(l.frames)
			if n < 4 {
				t.Fatalf("pump sent %d frames, want a window of several", n)
			}
			c.onRTO(p, time.Now())
			if got := len(l.frames) - n; got != 1 {
				t.Fatalf("first timeout sent %d frames, want 1 (the oldest)", got)
			}
			before := len(l.frames)
			if tt.ack != nil {
				c.onAck(p, tt.ack(p.sndUna, p.sndNext))
			} else {
				c.onRTO(p, time.Now())
			}
			if got, want := len(l.frames)-before, tt.want(n); got != want {
				t.Fatalf("sent %d frames after it, want %d (%d in flight)", got, want, n)
			}
		})
	}
}
