package heartbeat

import (
	"bytes"
	"errors"
	"testing"
)

// vc2Frame is extFrame with vcluster 2's state.
func vc2Frame() Frame {
	f := extFrame()
	f.HasVC2 = true
	f.VC2 = VClusterState{VCluster: 2, Role: 2, Priority: 250, Flags: FlagOverride,
		MonitorUp: 1, MonitorTotal: 2, Uptime: 123456, Primary: "HAGT-B"}
	return f
}

// roundTrip encodes f, checks that it is grow bytes longer than base
// encoded, decodes it into got and compares, then decodes base into got
// (a warm frame) and returns the encoded f.
func roundTrip(t *testing.T, c *Codec, f, base Frame, grow int, got *Frame) []byte {
	t.Helper()
	wire := mustAppend(t, c, f)
	baseWire := mustAppend(t, c, base)
	if want := len(baseWire) + grow; len(wire) != want {
		t.Fatalf("frame is %d bytes, want %d", len(wire), want)
	}
	if err := c.Decode(wire, got); err != nil {
		t.Fatal(err)
	}
	if *got != f {
		t.Fatalf("round trip\n got %+v\nwant %+v", *got, f)
	}
	if err := c.Decode(baseWire, got); err != nil {
		t.Fatal(err)
	}
	return wire
}

func TestVClusterTLVRoundTrip(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	f := vc2Frame()
	var got Frame
	wire := roundTrip(t, c, f, extFrame(), 2+vclusterFixed+len(f.VC2.Primary), &got)
	// A warm frame that had the TLV loses it when the next one has none.
	if got.HasVC2 || got.VC2 != (VClusterState{}) {
		t.Fatalf("VC2 kept from the previous frame: %+v", got.VC2)
	}
	// The value is where docs/protocol.md says.
	i := bytes.Index(wire, []byte{tlvVCluster, vclusterFixed + 6, 2, 2, 250, byte(FlagOverride), 1, 2})
	if i < 0 || string(wire[i+16:i+22]) != "HAGT-B" {
		t.Fatalf("TLV 3 not laid out as documented: % x", wire)
	}
}

func TestVClusterTLVInvalid(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	for _, v := range []VClusterState{{VCluster: 2}, {Role: 2}} {
		f := extFrame()
		f.HasVC2, f.VC2 = true, v
		if _, err := c.Append(nil, &f); !errors.Is(err, ErrMalformed) {
			t.Errorf("Append %+v: %v, want ErrMalformed", v, err)
		}
	}
	f := extFrame()
	f.HasVC2, f.VC2 = true, VClusterState{VCluster: 2, Role: 2, Primary: string(make([]byte, MaxStringLen+1))}
	if _, err := c.Append(nil, &f); !errors.Is(err, ErrMalformed) {
		t.Errorf("Append with a 65-byte primary: %v, want ErrMalformed", err)
	}
}
