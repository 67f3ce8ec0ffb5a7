package heartbeat

import (
	"bytes"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// ethernetFrame wraps payload in an Ethernet header of the given type.
func ethernetFrame(t *testing.T, et uint16, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{
		SrcMAC:       net.HardwareAddr{2, 0, 0, 0, 0, 1},
		DstMAC:       Broadcast,
		EthernetType: layers.EthernetType(et),
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, eth, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestLayerDecode(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	f := testFrame()
	wire := mustAppend(t, c, f)
	for _, et := range []uint16{EtherTypeHA, EtherTypeHC} {
		pkt := gopacket.NewPacket(ethernetFrame(t, et, wire), layers.LayerTypeEthernet, gopacket.Default)
		if el := pkt.ErrorLayer(); el != nil {
			t.Fatalf("%#04x: %v", et, el.Error())
		}
		l := pkt.Layer(LayerTypeHeartbeat)
		if l == nil {
			t.Fatalf("%#04x: no heartbeat layer in %v", et, pkt)
		}
		hb := l.(*Heartbeat)
		if hb.Frame != f {
			t.Errorf("%#04x: frame\n got %+v\nwant %+v", et, hb.Frame, f)
		}
		if !bytes.Equal(hb.Tag[:], wire[len(wire)-tagLen:]) {
			t.Errorf("%#04x: tag %x", et, hb.Tag)
		}
		if !bytes.Equal(hb.LayerContents(), wire) {
			t.Errorf("%#04x: contents differ", et)
		}
	}
	if got := layers.EthernetType(EtherTypeHA).LayerType(); got != LayerTypeHeartbeat {
		t.Errorf("Ethertype 0x8890 maps to %v", got)
	}
	if LayerTypeHeartbeat.String() != "HAHeartbeat" {
		t.Errorf("layer name %q", LayerTypeHeartbeat.String())
	}
}

func TestLayerDecodingParser(t *testing.T) {
	c := NewCodec(nil, testGroup)
	f := testFrame()
	wire := mustAppend(t, c, f)
	withExt := withExtension(t, c, wire, []byte{42, 1, 'x'})
	var (
		eth     layers.Ethernet
		hb      Heartbeat
		decoded []gopacket.LayerType
	)
	p := gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &eth, &hb)
	// Pad like a short Ethernet frame would be: the padding is payload.
	data := append(ethernetFrame(t, EtherTypeHA, withExt), 0, 0, 0)
	if err := p.DecodeLayers(data, &decoded); err != nil {
		t.Fatal(err)
	}
	if len(decoded) != 2 || decoded[1] != LayerTypeHeartbeat {
		t.Fatalf("decoded %v", decoded)
	}
	want := f
	want.Flags |= FlagUnauthenticated
	if hb.Frame != want {
		t.Errorf("frame %+v", hb.Frame)
	}
	if !bytes.Equal(hb.Extensions, []byte{42, 1, 'x'}) {
		t.Errorf("extensions %x", hb.Extensions)
	}
	if len(hb.LayerPayload()) != 3 {
		t.Errorf("payload %x, want the 3 padding bytes", hb.LayerPayload())
	}
}

func TestLayerMalformed(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	wire := mustAppend(t, c, testFrame())
	for _, in := range [][]byte{wire[:10], wire[:len(wire)-1], append([]byte("XX"), wire[2:]...)} {
		pkt := gopacket.NewPacket(ethernetFrame(t, EtherTypeHA, in), layers.LayerTypeEthernet, gopacket.Default)
		if pkt.ErrorLayer() == nil {
			t.Errorf("%d bytes: no decode error", len(in))
		}
		if pkt.Layer(LayerTypeHeartbeat) != nil {
			t.Errorf("%d bytes: heartbeat layer present", len(in))
		}
	}
}
