package heartbeat

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

func TestReplayGuard(t *testing.T) {
	type step struct {
		serial     string
		epoch, seq uint64
		want       error
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first frame", []step{{"a", 5, 100, nil}}},
		{"in order", []step{{"a", 5, 1, nil}, {"a", 5, 2, nil}, {"a", 5, 3, nil}}},
		{"duplicate (same heartbeat on a second hbdev)", []step{{"a", 5, 1, nil}, {"a", 5, 1, ErrDuplicate}, {"a", 5, 1, ErrDuplicate}}},
		{"gap then late arrival in window", []step{{"a", 5, 10, nil}, {"a", 5, 13, nil}, {"a", 5, 11, nil}, {"a", 5, 12, nil}, {"a", 5, 11, ErrDuplicate}}},
		{"window edge: 63 below accepted", []step{{"a", 5, 100, nil}, {"a", 5, 37, nil}, {"a", 5, 37, ErrDuplicate}}},
		{"window edge: 64 below is old", []step{{"a", 5, 100, nil}, {"a", 5, 36, ErrReplay}}},
		{"far behind", []step{{"a", 5, 1000, nil}, {"a", 5, 1, ErrReplay}}},
		{"window slides", []step{{"a", 5, 1, nil}, {"a", 5, 2, nil}, {"a", 5, 66, nil}, {"a", 5, 2, ErrReplay}, {"a", 5, 3, nil}, {"a", 5, 65, nil}, {"a", 5, 66, ErrDuplicate}}},
		{"big jump clears window", []step{{"a", 5, 1, nil}, {"a", 5, 500, nil}, {"a", 5, 499, nil}, {"a", 5, 1, ErrReplay}}},
		{"jump of exactly 64", []step{{"a", 5, 10, nil}, {"a", 5, 74, nil}, {"a", 5, 11, nil}, {"a", 5, 10, ErrReplay}}},
		{"new epoch resets window", []step{{"a", 5, 1000, nil}, {"a", 6, 1, nil}, {"a", 6, 2, nil}, {"a", 6, 1, ErrDuplicate}}},
		{"old epoch rejected", []step{{"a", 6, 1, nil}, {"a", 5, 1000, ErrReplay}, {"a", 6, 2, nil}}},
		{"old epoch after restart", []step{{"a", 5, 1, nil}, {"a", 6, 1, nil}, {"a", 5, 2, ErrReplay}}},
		{"serials are independent", []step{{"a", 5, 1, nil}, {"b", 5, 1, nil}, {"b", 4, 9, ErrReplay}, {"a", 5, 2, nil}}},
		{"seq 0 and max", []step{{"a", 1, 0, nil}, {"a", 1, 0, ErrDuplicate}, {"a", 1, ^uint64(0), nil}, {"a", 1, 0, ErrReplay}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g ReplayGuard
			for i, s := range tt.steps {
				if err := g.Check(s.serial, s.epoch, s.seq); !errors.Is(err, s.want) || (err == nil) != (s.want == nil) {
					t.Fatalf("step %d Check(%q, %d, %d) = %v, want %v", i, s.serial, s.epoch, s.seq, err, s.want)
				}
			}
		})
	}
}

func TestReplayGuardForget(t *testing.T) {
	var g ReplayGuard
	if err := g.Check("a", 5, 10); err != nil {
		t.Fatal(err)
	}
	g.Forget("a")
	if g.Len() != 0 {
		t.Fatalf("Len = %d after Forget", g.Len())
	}
	// Forgotten: an older epoch is accepted again.
	if err := g.Check("a", 4, 1); err != nil {
		t.Fatalf("after Forget: %v", err)
	}
	g.Forget("unknown") // no-op
}

func TestReplayGuardEviction(t *testing.T) {
	var g ReplayGuard
	for i := range MaxTrackedSerials {
		if err := g.Check(fmt.Sprint("s", i), 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	// s0 is the least recently seen until we touch it; then s1 is.
	if err := g.Check("s0", 1, 2); err != nil {
		t.Fatal(err)
	}
	if err := g.Check("s0", 1, 1); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("refresh s0 by a duplicate: %v", err)
	}
	if err := g.Check("new", 1, 1); err != nil {
		t.Fatal(err)
	}
	if g.Len() != MaxTrackedSerials {
		t.Fatalf("Len = %d, want %d", g.Len(), MaxTrackedSerials)
	}
	// s1 was evicted: its state is gone, so an old epoch is accepted.
	if err := g.Check("s1", 0, 1); err != nil {
		t.Errorf("evicted s1: %v, want nil (forgotten)", err)
	}
	// s0 was kept.
	if err := g.Check("s0", 0, 1); !errors.Is(err, ErrReplay) {
		t.Errorf("kept s0: %v, want ErrReplay", err)
	}
	// Replays do not refresh: flood many new serials, s0 goes eventually.
	for i := range 100 {
		_ = g.Check(fmt.Sprint("x", i), 1, 1)
		if g.Len() > MaxTrackedSerials {
			t.Fatalf("Len = %d > %d", g.Len(), MaxTrackedSerials)
		}
	}
}

func TestReplayGuardConcurrent(t *testing.T) {
	var g ReplayGuard
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := map[uint64]int{}
	// Two hbdev receivers see the same 500 heartbeats.
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range uint64(500) {
				err := g.Check("peer", 7, seq)
				if err != nil && !errors.Is(err, ErrDuplicate) && !errors.Is(err, ErrReplay) {
					t.Error(err)
				}
				if err == nil {
					mu.Lock()
					accepted[seq]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for seq, n := range accepted {
		if n != 1 {
			t.Errorf("seq %d accepted %d times", seq, n)
		}
	}
	// Each receiver goes in order, so whichever is ahead has accepted
	// every seq the other one finds out of the window.
	if len(accepted) != 500 {
		t.Errorf("%d of 500 heartbeats accepted", len(accepted))
	}
}
