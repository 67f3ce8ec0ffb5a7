package configsync

import (
	"fmt"
	"testing"
)

// TestSixteenMembersTracked: every member of the largest cluster (16 in
// mode fgsp) keeps its state, with room for as many that left.
func TestSixteenMembersTracked(t *testing.T) {
	const members = 16
	f := newReceiveFixture(t, t.TempDir())
	for round := range 2 {
		for i := range members {
			f.s.NotePeerChecksum(fmt.Sprintf("m%02d", i), [32]byte{byte(i)}, uint64(round+1))
		}
	}
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	for i := range members {
		if f.s.members[fmt.Sprintf("m%02d", i)] == nil {
			t.Fatalf("member m%02d forgotten: %d members tracked", i, len(f.s.members))
		}
	}
}
