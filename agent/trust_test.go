package agent

import (
	"math"
	"testing"

	"github.com/hagent/hagent/heartbeat"
)

// newIdleAgent builds an agent on an in-memory segment without running it:
// the test goroutine stands in for the run goroutine.
func newIdleAgent(t *testing.T, name string, opts ...func(*Options)) (*Agent, *fakeNet) {
	t.Helper()
	mem := heartbeat.NewMemNetwork()
	cfg := testConfig(t, name, 100, false)
	fn := &fakeNet{}
	o := Options{Config: cfg, Links: []heartbeat.Link{mem.Link("hb", name, "ha1")}, Network: fn,
		WatchLinks: (&fakeLinks{}).watch}
	for _, f := range opts {
		f(&o)
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.closeLinks(); a.closeNets(); a.hooks.close(0) })
	return a, fn
}

// TestEpochHintSaturates: an authentic hint of 2^64-1 about this node
// raises its epoch to 2^64-1, not to 0 (hint+1 wrapped: every peer would
// reject the node as a replay for good).
func TestEpochHintSaturates(t *testing.T) {
	a, _ := newIdleAgent(t, "a")
	f := heartbeat.Frame{Node: "b", Serial: "SN-b", Role: 2, NumHints: 1}
	f.Hints[0] = heartbeat.EpochHint{NodeID: a.nodeID, Epoch: math.MaxUint64}
	a.takeHints(&f)
	a.sendMu.Lock()
	e := a.epoch
	a.sendMu.Unlock()
	if e != math.MaxUint64 {
		t.Fatalf("epoch after a hint of 2^64-1 = %d, want %d", e, uint64(math.MaxUint64))
	}
	if got := a.state.startEpoch(1); got != math.MaxUint64 {
		t.Fatalf("next start epoch after 2^64-1 = %d, want it to stay %d", got, uint64(math.MaxUint64))
	}
}
