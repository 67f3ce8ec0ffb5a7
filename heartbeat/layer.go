package heartbeat

import (
	"errors"
	"io"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// layerTypeNumber is the gopacket layer type number of LayerTypeHeartbeat,
// in the 1000-1999 range gopacket sets aside for applications.
const layerTypeNumber = 1890

// LayerTypeHeartbeat is the gopacket layer type of Heartbeat. Importing this
// package registers it, and makes gopacket's Ethernet layer decode
// EtherTypeHA and EtherTypeHC payloads as heartbeats.
var LayerTypeHeartbeat = gopacket.RegisterLayerType(layerTypeNumber, gopacket.LayerTypeMetadata{
	Name:    "HAHeartbeat",
	Decoder: gopacket.DecodeFunc(decodeHeartbeat),
})

func init() {
	for _, et := range []uint16{EtherTypeHA, EtherTypeHC} {
		layers.EthernetTypeMetadata[et] = layers.EnumMetadata{
			DecodeWith: gopacket.DecodeFunc(decodeHeartbeat),
			Name:       "HAHeartbeat",
			LayerType:  LayerTypeHeartbeat,
		}
	}
}

// Heartbeat is a gopacket layer holding one decoded heartbeat frame. It is
// for inspecting captures: decoding checks the structure of the frame but
// NOT its tag or group, so its content is unauthenticated.
type Heartbeat struct {
	layers.BaseLayer
	// Frame holds the decoded fields.
	Frame Frame
	// Tag is the frame's HMAC-SHA256 tag, as received (zero when the
	// sender had authentication disabled).
	Tag [32]byte
	// Extensions are the raw extension TLVs, aliasing the decoded data.
	Extensions []byte
}

var (
	_ gopacket.Layer         = (*Heartbeat)(nil)
	_ gopacket.DecodingLayer = (*Heartbeat)(nil)
)

// LayerType returns LayerTypeHeartbeat.
func (h *Heartbeat) LayerType() gopacket.LayerType { return LayerTypeHeartbeat }

// CanDecode returns LayerTypeHeartbeat.
func (h *Heartbeat) CanDecode() gopacket.LayerClass { return LayerTypeHeartbeat }

// NextLayerType returns gopacket.LayerTypeZero: a heartbeat is the last
// layer. Bytes after the frame's Length (link padding) are its payload.
func (h *Heartbeat) NextLayerType() gopacket.LayerType { return gopacket.LayerTypeZero }

// DecodeFromBytes decodes data into h without verifying the tag. Contents
// is the frame (Length bytes) and Payload whatever follows it.
func (h *Heartbeat) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	fr, err := parseHeader(data)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			df.SetTruncated()
		}
		return err
	}
	body := fr[:len(fr)-tagLen]
	ext, err := parseBody(body, &h.Frame)
	if err != nil {
		return err
	}
	copy(h.Tag[:], fr[len(body):])
	h.Extensions = ext
	h.Contents = fr
	h.Payload = data[len(fr):]
	return nil
}

// decodeHeartbeat is the gopacket.Decoder of LayerTypeHeartbeat.
func decodeHeartbeat(data []byte, p gopacket.PacketBuilder) error {
	h := &Heartbeat{}
	if err := h.DecodeFromBytes(data, p); err != nil {
		return err
	}
	p.AddLayer(h)
	return nil
}
