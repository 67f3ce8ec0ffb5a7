package agent

import (
	"sync"

	"github.com/hagent/hagent/control"
)

// Event is one history entry (see control.Event).
type Event = control.Event

// history is a bounded, concurrency-safe ring of events.
type history struct {
	mu  sync.Mutex
	max int
	evs []Event
}

func newHistory(max int) *history { return &history{max: max} }

func (h *history) add(e Event) {
	h.mu.Lock()
	h.evs = append(h.evs, e)
	if len(h.evs) > h.max {
		h.evs = append(h.evs[:0:0], h.evs[len(h.evs)-h.max:]...)
	}
	h.mu.Unlock()
}

// list returns a copy, oldest first.
func (h *history) list() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.evs...)
}

// last returns up to n newest events, oldest first.
func (h *history) last(n int) []Event {
	l := h.list()
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return l
}
