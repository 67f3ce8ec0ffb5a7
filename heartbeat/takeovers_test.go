package heartbeat

import (
	"bytes"
	"errors"
	"testing"
)

// tkFrame is vc2Frame with takeover counts in both vclusters.
func tkFrame() Frame {
	f := vc2Frame()
	f.Takeovers = 0x0102030405060708
	f.VC2.Takeovers = 3
	return f
}

func TestTakeoversTLVRoundTrip(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	var got Frame
	wire := roundTrip(t, c, tkFrame(), vc2Frame(), 2*takeoversTLVLen, &got)
	// The values are where docs/protocol.md says: TLV 4 then TLV 5, each
	// a big-endian 64-bit count.
	if !bytes.Contains(wire, []byte{tlvTakeovers, 8, 1, 2, 3, 4, 5, 6, 7, 8, tlvVCTakeovers, 8, 0, 0, 0, 0, 0, 0, 0, 3}) {
		t.Fatalf("TLVs 4 and 5 not laid out as documented: % x", wire)
	}
	// A warm frame that had the counts loses them when the next has none:
	// zero is not sent, and absent reads as zero.
	if got.Takeovers != 0 || got.VC2.Takeovers != 0 {
		t.Fatalf("counts kept from the previous frame: %d, %d", got.Takeovers, got.VC2.Takeovers)
	}
	// Each count travels on its own.
	one, vcOne := vc2Frame(), vc2Frame()
	one.Takeovers, vcOne.VC2.Takeovers = 9, 9
	roundTrip(t, c, one, vc2Frame(), takeoversTLVLen, &got)
	roundTrip(t, c, vcOne, vc2Frame(), takeoversTLVLen, &got)
	// Without TLV 3 the vcluster 2 count is not sent.
	g := extFrame()
	g.VC2.Takeovers = 5
	if w := mustAppend(t, c, g); len(w) != len(mustAppend(t, c, extFrame())) {
		t.Fatal("a vcluster 2 count went out without TLV 3")
	}
}

func TestTakeoversTLVDecode(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	plain := mustAppend(t, c, extFrame())
	withVC := mustAppend(t, c, vc2Frame())
	count := func(typ, n byte) []byte { return []byte{typ, 8, 0, 0, 0, 0, 0, 0, 0, n} }
	tests := []struct {
		name     string
		frame    []byte
		ext      []byte
		want     error
		tk, vctk uint64
	}{
		{"count", plain, count(tlvTakeovers, 7), nil, 7, 0},
		{"vcluster 2 count", withVC, count(tlvVCTakeovers, 7), nil, 0, 7},
		{"vcluster 2 count without TLV 3 is ignored", plain, count(tlvVCTakeovers, 7), nil, 0, 0},
		{"only the first of each is read", withVC, append(append(count(tlvTakeovers, 1), count(tlvTakeovers, 2)...),
			append(count(tlvVCTakeovers, 3), count(tlvVCTakeovers, 4)...)...), nil, 1, 3},
		{"explicit zero", plain, count(tlvTakeovers, 0), nil, 0, 0},
		{"count too short", plain, []byte{tlvTakeovers, 7, 0, 0, 0, 0, 0, 0, 1}, ErrMalformed, 0, 0},
		{"count too long", plain, []byte{tlvTakeovers, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1}, ErrMalformed, 0, 0},
		{"vcluster 2 count too short", withVC, []byte{tlvVCTakeovers, 4, 0, 0, 0, 1}, ErrMalformed, 0, 0},
		{"vcluster 2 count empty, even without TLV 3", plain, []byte{tlvVCTakeovers, 0}, ErrMalformed, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Frame
			err := c.Decode(withExtension(t, c, tt.frame, tt.ext), &f)
			if (err == nil) != (tt.want == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Decode = %v, want %v", err, tt.want)
			}
			if err == nil && (f.Takeovers != tt.tk || f.VC2.Takeovers != tt.vctk) {
				t.Fatalf("counts %d, %d; want %d, %d", f.Takeovers, f.VC2.Takeovers, tt.tk, tt.vctk)
			}
		})
	}
}

// TestTakeoversTLVOldReceiver: a receiver that knows none of TLVs 3-5
// skips them like any unknown type; here the frame's own fields are
// compared after stripping the counts the old receiver cannot see.
func TestTakeoversTLVOldReceiver(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	f := extFrame()
	f.Takeovers = 4
	wire := mustAppend(t, c, f)
	// Renumber TLV 4 to an unknown type, as an older receiver sees it.
	i := bytes.Index(wire, []byte{tlvTakeovers, 8, 0, 0, 0, 0, 0, 0, 0, 4})
	if i < 0 {
		t.Fatal("TLV 4 not found")
	}
	old := append([]byte(nil), wire...)
	old[i] = 0x7e
	var got Frame
	if err := c.Decode(seal(t, c, old), &got); err != nil {
		t.Fatal(err)
	}
	f.Takeovers = 0
	if got != f {
		t.Fatalf("skipping the count changed the frame\n got %+v\nwant %+v", got, f)
	}
}
