package heartbeat

import (
	"errors"
	"testing"

	"github.com/hagent/hagent/cluster"
)

// TestHintsOfSixteen: in a cluster of 16 (mode fgsp), a member whose
// epoch went back (its frames are replays, so the guard stops seeing it)
// still gets its hint in every heartbeat beside its 14 live peers and
// senders gone long ago, and the frame carrying the 15 hints round-trips
// within MaxFrameLen. The first hints on the wire, all that a receiver of
// an older release reads, are those of the senders seen most recently.
func TestHintsOfSixteen(t *testing.T) {
	const members = 16
	if MaxHints < members-1 || cluster.MaxMembersFGSP != members {
		t.Errorf("MaxHints %d, %d members in mode fgsp: want room for %d peers", MaxHints, cluster.MaxMembersFGSP, members-1)
	}
	var g ReplayGuard
	id := func(i int) NodeID { return NodeID{2, 0, 0, 0, 1, byte(i)} }
	for i := range 20 { // gone: members replaced long ago
		if err := g.CheckPeer(Peer{Serial: "gone", NodeID: NodeID{4, byte(i)}}, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	back := Peer{Serial: "back", NodeID: id(0)}
	if err := g.CheckPeer(back, 1000, 1); err != nil {
		t.Fatal(err)
	}
	seq := uint64(1)
	for range 3 {
		seq++
		for i := 1; i < members-1; i++ {
			if err := g.CheckPeer(Peer{Serial: "live", NodeID: id(i)}, 1, seq); err != nil {
				t.Fatal(err)
			}
		}
		if err := g.CheckPeer(back, 10, seq); !errors.Is(err, ErrReplay) {
			t.Fatalf("epoch gone back: %v, want ErrReplay", err)
		}
	}
	var h [MaxHints]EpochHint
	n := g.Hints(&h)
	if int(n) != MaxHints {
		t.Fatalf("%d hints, want %d", n, MaxHints)
	}
	found := false
	for _, x := range h[:n] {
		if x.NodeID == back.NodeID {
			found = x.Epoch == 1000
		}
	}
	if !found {
		t.Fatalf("no hint of epoch 1000 for the member whose epoch went back: %+v", h[:n])
	}
	c := NewCodec(testPassword, testGroup)
	f := testFrame()
	f.NodeID, f.Hints, f.NumHints = id(15), h, n
	wire := mustAppend(t, c, f)
	if len(wire) > MaxFrameLen {
		t.Fatalf("%d bytes, MaxFrameLen %d", len(wire), MaxFrameLen)
	}
	var got Frame
	if err := c.Decode(wire, &got); err != nil {
		t.Fatal(err)
	}
	if got.NumHints != n || got.Hints != h {
		t.Fatalf("round trip: %d %+v", got.NumHints, got.Hints)
	}
	for _, x := range got.Hints[:4] {
		if x.NodeID[0] != 2 || x.NodeID == back.NodeID {
			t.Fatalf("first hints %+v: want live members first", got.Hints[:4])
		}
	}
	t.Logf("measured: a heartbeat with %d hints is %d bytes", n, len(wire))
}
