package heartbeat

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// extFrame is testFrame with a node id and two epoch hints.
func extFrame() Frame {
	f := testFrame()
	f.NodeID = NodeID{0x02, 0, 0, 0, 0x0a, 0x01}
	f.Hints[0] = EpochHint{NodeID{0x02, 0, 0, 0, 0x0b, 0x01}, 0x0102030405060708}
	f.Hints[1] = EpochHint{NodeID{0x02, 0, 0, 0, 0x0c, 0x01}, 1}
	f.NumHints = 2
	return f
}

func TestNodeIDAndHintsRoundTrip(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	for _, n := range []uint8{0, 1, 2, MaxHints} {
		f := extFrame()
		f.NumHints = n
		clear(f.Hints[min(n, 2):]) // Decode leaves unused entries zero
		for i := 2; i < int(n); i++ {
			f.Hints[i] = EpochHint{NodeID{0x02, 0, 0, 0, byte(i), 0x01}, uint64(i) << 40}
		}
		wire := mustAppend(t, c, f)
		if want := fixedLen + len(f.Node) + len(f.Serial) + len(f.Primary) + nodeIDTLVLen + int(n)*hintTLVLen + tagLen; len(wire) != want {
			t.Fatalf("%d hints: frame is %d bytes, want %d", n, len(wire), want)
		}
		var got Frame
		// A warm frame holding more hints must not keep them.
		got.NumHints, got.Hints[3] = 4, EpochHint{NodeID{9}, 9}
		if err := c.Decode(wire, &got); err != nil {
			t.Fatal(err)
		}
		if got != f {
			t.Fatalf("%d hints: round trip\n got %+v\nwant %+v", n, got, f)
		}
	}
	// No node id, no hints: the frame is the version-1 frame of before.
	f := testFrame()
	if len(mustAppend(t, c, f)) != fixedLen+len(f.Node)+len(f.Serial)+len(f.Primary)+tagLen {
		t.Fatal("a frame without node id grew")
	}
	f.NumHints = MaxHints + 1
	if _, err := c.Append(nil, &f); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Append with %d hints: %v, want ErrMalformed", f.NumHints, err)
	}
	big := extFrame()
	big.NumHints = MaxHints
	long := strings.Repeat("n", MaxStringLen)
	big.Node, big.Serial, big.Primary = long, long, long
	big.HasVC2, big.VC2 = true, VClusterState{VCluster: 2, Role: 3, Primary: long, Takeovers: 1}
	big.Takeovers = 1
	if w := mustAppend(t, c, big); len(w) != MaxFrameLen {
		t.Fatalf("largest frame %d bytes, MaxFrameLen %d", len(w), MaxFrameLen)
	}
}

func TestKnownExtensionLengths(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	good := mustAppend(t, c, testFrame())
	tests := []struct {
		name string
		ext  []byte
		want error
	}{
		{"node id too short", []byte{tlvNodeID, 5, 1, 2, 3, 4, 5}, ErrMalformed},
		{"node id too long", []byte{tlvNodeID, 7, 1, 2, 3, 4, 5, 6, 7}, ErrMalformed},
		{"hint too short", []byte{tlvEpochHint, 13, 1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0, 1}, ErrMalformed},
		{"node id", []byte{tlvNodeID, 6, 1, 2, 3, 4, 5, 6}, nil},
		{"MaxHints+1 hints: the last is ignored", moreHints(MaxHints + 1), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Frame
			err := c.Decode(withExtension(t, c, good, tt.ext), &f)
			if (err == nil) != (tt.want == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Decode = %v, want %v", err, tt.want)
			}
			if tt.want == nil && tt.name != "node id" {
				if f.NumHints != MaxHints || f.Hints[MaxHints-1].Epoch != MaxHints {
					t.Fatalf("hints %d %+v", f.NumHints, f.Hints)
				}
			}
			if tt.name == "node id" && f.NodeID != (NodeID{1, 2, 3, 4, 5, 6}) {
				t.Fatalf("node id %v", f.NodeID)
			}
		})
	}
}

// moreHints is n hint TLVs with the epochs 1..n.
func moreHints(n int) []byte {
	var b []byte
	for i := range n {
		b = slices.Concat(b, hintTLV(uint64(i+1)))
	}
	return b
}

func hintTLV(epoch uint64) []byte {
	b := []byte{tlvEpochHint, 14, 2, 0, 0, 0, 0, byte(epoch)}
	for i := 7; i >= 0; i-- {
		b = append(b, byte(epoch>>(8*i)))
	}
	return b
}

func TestPeek(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	wire := mustAppend(t, c, testFrame())
	if v, g, ok := Peek(wire); !ok || v != ProtocolVersion || g != testGroup {
		t.Fatalf("Peek = %d %d %v", v, g, ok)
	}
	other := append([]byte(nil), wire...)
	other[2], other[4], other[5] = 7, 0x01, 0x2c
	if v, g, ok := Peek(other); !ok || v != 7 || g != 300 {
		t.Fatalf("Peek = %d %d %v", v, g, ok)
	}
	for _, b := range [][]byte{nil, wire[:7], append([]byte("XA"), wire[2:]...)} {
		if _, _, ok := Peek(b); ok {
			t.Fatalf("Peek(%x) ok", b)
		}
	}
}

func TestReplayGuardPeers(t *testing.T) {
	var g ReplayGuard
	a := Peer{Serial: "S", NodeID: NodeID{2, 0, 0, 0, 0, 1}}
	b := Peer{Serial: "S", NodeID: NodeID{2, 0, 0, 0, 0, 2}}
	if err := g.CheckPeer(a, 100, 1); err != nil {
		t.Fatal(err)
	}
	// Same serial, another node id: its own window (cloned VMs).
	if err := g.CheckPeer(b, 50, 1); err != nil {
		t.Fatalf("second node with the same serial: %v", err)
	}
	if err := g.CheckPeer(a, 99, 7); !errors.Is(err, ErrReplay) {
		t.Fatalf("older epoch of a: %v", err)
	}

	// A floor: older epochs are replays, the floor epoch itself is accepted
	// once per sequence number, newer ones too.
	c := Peer{Serial: "C", NodeID: NodeID{2, 0, 0, 0, 0, 3}}
	g.SetFloor(c, 1000)
	if e, ok := g.Epoch(c); !ok || e != 1000 {
		t.Fatalf("Epoch = %d %v", e, ok)
	}
	if err := g.CheckPeer(c, 999, 5); !errors.Is(err, ErrReplay) {
		t.Fatalf("below the floor: %v", err)
	}
	if err := g.CheckPeer(c, 1000, 5); err != nil {
		t.Fatalf("at the floor: %v", err)
	}
	if err := g.CheckPeer(c, 1000, 5); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("at the floor, again: %v", err)
	}
	g.SetFloor(c, 10) // lower: no change
	if err := g.CheckPeer(c, 999, 6); !errors.Is(err, ErrReplay) {
		t.Fatalf("a lower floor reopened old epochs: %v", err)
	}
	g.SetFloor(c, 2000) // higher: the window is gone
	if err := g.CheckPeer(c, 1000, 6); !errors.Is(err, ErrReplay) {
		t.Fatalf("raised floor: %v", err)
	}

	// Hints: senders with a node id, most recently seen first, at most
	// MaxHints, without allocating.
	if err := g.Check("no-id", 5, 1); err != nil {
		t.Fatal(err)
	}
	var h [MaxHints]EpochHint
	n := g.Hints(&h)
	if n != 3 || h[0].NodeID != c.NodeID || h[0].Epoch != 2000 {
		t.Fatalf("hints %d %+v", n, h)
	}
	for i := 0; i < MaxHints+2; i++ {
		if err := g.CheckPeer(Peer{Serial: "x", NodeID: NodeID{3, byte(i)}}, 1, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := g.Hints(&h); n != MaxHints || h[0].NodeID != (NodeID{3, MaxHints + 1}) || h[MaxHints-1].NodeID != (NodeID{3, 2}) {
		t.Fatalf("hints %d %+v", n, h)
	}
	if allocs := testing.AllocsPerRun(50, func() { g.Hints(&h) }); allocs != 0 {
		t.Fatalf("Hints allocates %v", allocs)
	}
	g.Forget("S")
	if _, ok := g.Epoch(a); ok {
		t.Fatal("Forget kept a")
	}
	if _, ok := g.Epoch(b); ok {
		t.Fatal("Forget kept b")
	}
}

func TestNodeIDCompare(t *testing.T) {
	lo, hi := NodeID{2, 0, 0, 0, 0, 1}, NodeID{2, 0, 0, 0, 1, 0}
	if lo.Compare(hi) != -1 || hi.Compare(lo) != 1 || lo.Compare(lo) != 0 {
		t.Fatal("Compare")
	}
	if hi.String() != "02:00:00:00:01:00" || !(NodeID{}).IsZero() || lo.IsZero() {
		t.Fatal("String/IsZero")
	}
}
