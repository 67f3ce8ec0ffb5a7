package l2chan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// FrameVersion is the version of the control-channel frame format. A frame
// with another version is dropped and counted as malformed.
const FrameVersion = 1

// MaxNameLen is the longest node name the control channel can carry.
const MaxNameLen = 64

// frameFixedLen is the length of the fixed part of a frame header.
const frameFixedLen = 28

// gcmTagLen is the length of the AES-GCM authentication tag.
const gcmTagLen = 16

// FrameKind says what a frame carries. The numeric values are part of the
// protocol: append only, never renumber; zero is invalid.
type FrameKind uint8

// Frame kinds.
const (
	frameKindInvalid FrameKind = iota
	// FrameData carries one fragment of a message.
	FrameData
	// FrameAck acknowledges data (cumulative + selective) and advertises
	// the receive window.
	FrameAck
	// FrameProbe asks the destination to answer with a FrameAck; it is used
	// to learn a peer's epoch, to probe a zero window and to test whether a
	// failed link is back.
	FrameProbe
	frameKindEnd
)

// String names the kind as in logs: data, ack, probe.
func (k FrameKind) String() string {
	switch k {
	case FrameData:
		return "data"
	case FrameAck:
		return "ack"
	case FrameProbe:
		return "probe"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Errors returned by the frame decoders.
var (
	errBadVersion = errors.New("l2chan: unsupported frame version")
	errBadKind    = errors.New("l2chan: invalid frame kind")
	errBadName    = errors.New("l2chan: invalid node name length")
	errBadSack    = errors.New("l2chan: invalid SACK block")
)

// FrameHeader is the clear-text header of a control-channel frame. The whole
// header is authenticated as AES-GCM additional data; the body that follows
// it is encrypted.
//
// Layout (all integers big endian):
//
//	 0      1  version (1)
//	 1      1  kind (1 data, 2 ack, 3 probe)
//	 2      2  group id
//	 4      8  source epoch (per-process, increasing across restarts)
//	12      8  destination epoch (the epoch of the destination the source
//	           knows; 0 = unknown, only valid in probes)
//	20      8  nonce counter (per source epoch, never reused)
//	28      1  source name length s (1..64)
//	29      s  source node name
//	29+s    1  destination name length d (1..64)
//	30+s    d  destination node name
//	30+s+d  .. AES-GCM ciphertext of the body, then the 16-byte tag
type FrameHeader struct {
	Kind     FrameKind
	GroupID  uint16
	SrcEpoch uint64
	DstEpoch uint64
	Nonce    uint64
	Src      string
	Dst      string
}

// Len is the encoded length of the header.
func (h *FrameHeader) Len() int { return frameFixedLen + 2 + len(h.Src) + len(h.Dst) }

// MarshalBinary encodes the header.
func (h *FrameHeader) MarshalBinary() ([]byte, error) {
	return h.appendTo(make([]byte, 0, h.Len()))
}

func (h *FrameHeader) appendTo(b []byte) ([]byte, error) {
	if h.Kind == frameKindInvalid || h.Kind >= frameKindEnd {
		return nil, errBadKind
	}
	if len(h.Src) == 0 || len(h.Src) > MaxNameLen || len(h.Dst) == 0 || len(h.Dst) > MaxNameLen {
		return nil, errBadName
	}
	b = append(b, FrameVersion, byte(h.Kind))
	b = binary.BigEndian.AppendUint16(b, h.GroupID)
	b = binary.BigEndian.AppendUint64(b, h.SrcEpoch)
	b = binary.BigEndian.AppendUint64(b, h.DstEpoch)
	b = binary.BigEndian.AppendUint64(b, h.Nonce)
	b = append(b, byte(len(h.Src)))
	b = append(b, h.Src...)
	b = append(b, byte(len(h.Dst)))
	b = append(b, h.Dst...)
	return b, nil
}

// UnmarshalBinary decodes a header from the start of b. Use
// DecodeFrameHeader to learn where the ciphertext starts.
func (h *FrameHeader) UnmarshalBinary(b []byte) error {
	_, err := DecodeFrameHeader(h, b)
	return err
}

// DecodeFrameHeader decodes the header at the start of frame into h and
// returns the header length; frame[n:] is the ciphertext. Short input returns
// io.ErrUnexpectedEOF.
func DecodeFrameHeader(h *FrameHeader, frame []byte) (n int, err error) {
	if len(frame) < frameFixedLen+1 {
		return 0, io.ErrUnexpectedEOF
	}
	if frame[0] != FrameVersion {
		return 0, errBadVersion
	}
	k := FrameKind(frame[1])
	if k == frameKindInvalid || k >= frameKindEnd {
		return 0, errBadKind
	}
	h.Kind = k
	h.GroupID = binary.BigEndian.Uint16(frame[2:])
	h.SrcEpoch = binary.BigEndian.Uint64(frame[4:])
	h.DstEpoch = binary.BigEndian.Uint64(frame[12:])
	h.Nonce = binary.BigEndian.Uint64(frame[20:])
	off := frameFixedLen
	for i := 0; i < 2; i++ {
		if len(frame) < off+1 {
			return 0, io.ErrUnexpectedEOF
		}
		l := int(frame[off])
		if l == 0 || l > MaxNameLen {
			return 0, errBadName
		}
		off++
		if len(frame) < off+l {
			return 0, io.ErrUnexpectedEOF
		}
		// Keep the string h already holds when it is the same name, so a
		// reused header allocates nothing for a known peer.
		name, dst := frame[off:off+l], &h.Src
		if i == 1 {
			dst = &h.Dst
		}
		if *dst != string(name) {
			*dst = string(name)
		}
		off += l
	}
	return off, nil
}

// dataBodyLen is the length of the data body header.
const dataBodyLen = 16

// DataBody is the decrypted body of a FrameData frame: one fragment of a
// message.
//
// Layout (big endian):
//
//	 0  8  sequence number of the fragment in the stream (starts at 1)
//	 8  4  total length of the message the fragment belongs to
//	12  4  offset of the fragment in the message
//	16  .. fragment bytes
//
// A message is the run of fragments from the one with offset 0 to the one
// that ends at the message length; a zero-length message is one empty
// fragment.
type DataBody struct {
	Seq    uint64
	MsgLen uint32
	Offset uint32
	Data   []byte
}

// MarshalBinary encodes the body.
func (d *DataBody) MarshalBinary() ([]byte, error) {
	return d.appendTo(make([]byte, 0, dataBodyLen+len(d.Data))), nil
}

func (d *DataBody) appendTo(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, d.Seq)
	b = binary.BigEndian.AppendUint32(b, d.MsgLen)
	b = binary.BigEndian.AppendUint32(b, d.Offset)
	return append(b, d.Data...)
}

// UnmarshalBinary decodes the body. Data aliases b.
func (d *DataBody) UnmarshalBinary(b []byte) error {
	if len(b) < dataBodyLen {
		return io.ErrUnexpectedEOF
	}
	d.Seq = binary.BigEndian.Uint64(b)
	d.MsgLen = binary.BigEndian.Uint32(b[8:])
	d.Offset = binary.BigEndian.Uint32(b[12:])
	d.Data = b[dataBodyLen:]
	if uint64(d.Offset)+uint64(len(d.Data)) > uint64(d.MsgLen) {
		return fmt.Errorf("l2chan: fragment [%d,+%d) beyond message length %d", d.Offset, len(d.Data), d.MsgLen)
	}
	return nil
}

// maxSackBlocks bounds the number of SACK blocks in one ack.
const maxSackBlocks = 16

// SackBlock is an inclusive range of sequence numbers received above the
// cumulative acknowledgement.
type SackBlock struct{ First, Last uint64 }

// AckBody is the decrypted body of a FrameAck frame.
//
// Layout (big endian):
//
//	 0   8  cumulative ack: every sequence number <= this was received (0 = none)
//	 8   4  receive window: how many sequence numbers above the cumulative
//	        ack the receiver accepts (0 = stop sending, probe later)
//	12   1  number of SACK blocks n (0..16)
//	13 16n  SACK blocks: first (8), last (8), inclusive, each above the
//	        cumulative ack
type AckBody struct {
	Cum    uint64
	Window uint32
	Sacks  []SackBlock
}

// MarshalBinary encodes the body.
func (a *AckBody) MarshalBinary() ([]byte, error) {
	if len(a.Sacks) > maxSackBlocks {
		return nil, errBadSack
	}
	return a.appendTo(make([]byte, 0, 13+16*len(a.Sacks))), nil
}

func (a *AckBody) appendTo(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, a.Cum)
	b = binary.BigEndian.AppendUint32(b, a.Window)
	b = append(b, byte(len(a.Sacks)))
	for _, s := range a.Sacks {
		b = binary.BigEndian.AppendUint64(b, s.First)
		b = binary.BigEndian.AppendUint64(b, s.Last)
	}
	return b
}

// UnmarshalBinary decodes the body.
func (a *AckBody) UnmarshalBinary(b []byte) error {
	if len(b) < 13 {
		return io.ErrUnexpectedEOF
	}
	a.Cum = binary.BigEndian.Uint64(b)
	a.Window = binary.BigEndian.Uint32(b[8:])
	n := int(b[12])
	if n > maxSackBlocks {
		return errBadSack
	}
	if len(b) < 13+16*n {
		return io.ErrUnexpectedEOF
	}
	a.Sacks = a.Sacks[:0]
	for i := 0; i < n; i++ {
		s := SackBlock{
			First: binary.BigEndian.Uint64(b[13+16*i:]),
			Last:  binary.BigEndian.Uint64(b[21+16*i:]),
		}
		if s.First > s.Last || s.First <= a.Cum {
			return errBadSack
		}
		a.Sacks = append(a.Sacks, s)
	}
	return nil
}
