package heartbeat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode"
	"unicode/utf8"

	"github.com/hagent/hagent/cluster"
)

// ProtocolVersion is the major version of the heartbeat wire format that
// this package writes and accepts. A frame of any other major version is
// rejected with ErrVersion; compatible additions within a major version are
// made with extension TLVs, which older receivers skip.
const ProtocolVersion = 1

// Ethertypes of heartbeat frames (the eth_type configuration keys). The numeric values are
// defaults of the configuration and part of the protocol.
const (
	// EtherTypeHA carries heartbeats in the normal (NAT/route) mode.
	EtherTypeHA uint16 = 0x8890
	// EtherTypeHC carries heartbeats when the cluster is transparent.
	EtherTypeHC uint16 = 0x8891
)

// Flags are single-bit attributes of a Frame. The bit positions are part of
// the protocol and append-only: new flags take the next free bit, and
// receivers keep (and ignore) bits they do not know.
type Flags uint8

// Flag bits.
const (
	// FlagOverride is set when the sender has override enabled, which
	// changes the order of the primary election (docs/reference.md §4).
	FlagOverride Flags = 1 << iota
	// FlagFailoverSet is set while the operator has run `ha failover set`
	// on the sender: it steps down and stays out while others are healthy.
	FlagFailoverSet
	// FlagLeaving is sent by a node that is stopping gracefully: the
	// receivers take over at once instead of waiting for the lost threshold.
	FlagLeaving
	// FlagUnauthenticated marks a frame sent with authentication disabled.
	// Its tag is all zero. Codec.Append sets or clears it according to the
	// codec, whatever Frame.Flags says; Codec.Decode checks it.
	FlagUnauthenticated
)

// Wire layout constants. See the Frame doc comment.
const (
	headerLen = 8                     // magic, version, flags, group id, length
	fixedLen  = 80                    // header + fixed fields; strings start here
	tagLen    = 32                    // HMAC-SHA256
	minLen    = fixedLen + 1 + tagLen // shortest valid frame: 1-byte serial

	// MaxStringLen is the longest Node, Serial or Primary string, in bytes.
	MaxStringLen = 64
	// MaxHints is the largest number of epoch hints a frame carries and
	// reads: the largest cluster's peers, and one spare (mode fgsp: 15
	// peers). Receivers of older releases read the first 4 and skip the
	// others (TestHintsOfSixteen).
	MaxHints = cluster.MaxMembers
	// MaxFrameLen is the longest frame that Append produces: fixed part,
	// three maximal strings, the node id, MaxHints epoch hints, the second
	// vcluster's state, both takeover counts, and the tag.
	MaxFrameLen = fixedLen + 3*MaxStringLen + nodeIDTLVLen + MaxHints*hintTLVLen + vclusterTLVMax + 2*takeoversTLVLen + tagLen
)

// Extension TLV types (docs/protocol.md §5). The numeric values are part of
// the protocol: append-only, never reused.
const (
	// tlvNodeID carries Frame.NodeID (6 bytes).
	tlvNodeID = 1
	// tlvEpochHint carries one EpochHint: node id (6) and epoch (8).
	tlvEpochHint = 2

	// tlvVCluster carries Frame.VC2: the sender's state in its second
	// virtual cluster: vcluster (1), role (1), priority (1), flags (1),
	// monitor up (1), monitor total (1), uptime in ms (8), primary serial
	// (the rest, 0-MaxStringLen bytes).
	tlvVCluster = 3
	// tlvTakeovers carries Frame.Takeovers (8): how many times the sender
	// took the vMAC of the frame's vcluster in this run.
	tlvTakeovers = 4
	// tlvVCTakeovers carries Frame.VC2.Takeovers (8): the same count for
	// the vcluster of TLV 3. It is ignored in a frame without TLV 3. (TLV 3
	// cannot grow: its primary serial is "the rest" of its value, so older
	// receivers would read an appended count as part of the serial.)
	tlvVCTakeovers = 5

	nodeIDTLVLen    = 2 + 6
	hintTLVLen      = 2 + 6 + 8
	vclusterFixed   = 14
	vclusterTLVMax  = 2 + vclusterFixed + MaxStringLen
	takeoversTLVLen = 2 + 8
)

// VClusterState is a member's election state in a second virtual cluster,
// carried beside the frame's own (vcluster 1) state in extension TLV 3, so
// that one heartbeat serves both virtual clusters (FGCP virtual
// clustering). Flags uses FlagOverride and FlagFailoverSet; leaving is the
// frame's FlagLeaving (a node leaves both vclusters at once).
type VClusterState struct {
	// VCluster is the virtual cluster the state is for (2).
	VCluster uint8
	// Role is the sender's role there (1..4; 0 is invalid on the wire).
	Role uint8
	// Priority is the sender's priority there.
	Priority uint8
	// Flags are FlagOverride and FlagFailoverSet for that vcluster.
	Flags Flags
	// MonitorUp and MonitorTotal count that vcluster's monitored links.
	MonitorUp, MonitorTotal uint8
	// Uptime is the sender's HA uptime there, in milliseconds.
	Uptime uint64
	// Primary is the serial the sender sees as that vcluster's primary.
	Primary string
	// Takeovers is the sender's takeover count there (extension TLV 5;
	// see Frame.Takeovers). Zero is not sent.
	Takeovers uint64
}

// NodeID is a member's stable identity beside its serial: the lowest MAC
// address of its hbdevs. Serials can collide (VMs cloned from one
// template); hardware addresses on one segment do not. The zero NodeID
// means "not sent".
type NodeID [6]byte

// IsZero reports whether id is the zero (absent) NodeID.
func (id NodeID) IsZero() bool { return id == NodeID{} }

// String formats id as a MAC address.
func (id NodeID) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", id[0], id[1], id[2], id[3], id[4], id[5])
}

// Compare returns -1, 0 or +1 as id is below, equal to or above o in
// byte order.
func (id NodeID) Compare(o NodeID) int {
	for i := range id {
		switch {
		case id[i] < o[i]:
			return -1
		case id[i] > o[i]:
			return 1
		}
	}
	return 0
}

// An EpochHint tells the member with NodeID which epoch of it the sender
// has accepted last. A member that finds a hint at or above its own epoch
// (its clock went back and its state was lost) moves its epoch above the
// hint, so that it is heard again within one interval. Hints only ever
// raise an epoch, so a replayed hint is harmless.
type EpochHint struct {
	NodeID NodeID
	Epoch  uint64
}

// magic are the first two bytes of every heartbeat frame ("HA").
var magic = [2]byte{'H', 'A'}

// Errors returned by Codec.Decode, Frame.UnmarshalBinary and ReplayGuard.
// A short frame is reported as io.ErrUnexpectedEOF. Errors carrying more
// detail wrap one of these; test them with errors.Is.
var (
	// ErrMalformed reports a frame that is not well formed: bad magic, bad
	// lengths, invalid field values or broken extension TLVs.
	ErrMalformed = errors.New("heartbeat: malformed frame")
	// ErrVersion reports a frame of an unknown major protocol version.
	ErrVersion = errors.New("heartbeat: unsupported protocol version")
	// ErrBadAuth reports a frame whose tag does not verify, or whose
	// authentication mode (authenticated or not) differs from the codec's.
	ErrBadAuth = errors.New("heartbeat: authentication failed")
	// ErrWrongGroup reports a frame of another HA group id.
	ErrWrongGroup = errors.New("heartbeat: frame of another group")
)

// Detailed variants, allocated once so the receive path never allocates
// while rejecting a flood of bad frames.
var (
	errBadMagic  = fmt.Errorf("%w: bad magic", ErrMalformed)
	errBadLength = fmt.Errorf("%w: bad length field", ErrMalformed)
	errStringLen = fmt.Errorf("%w: string longer than %d bytes", ErrMalformed, MaxStringLen)
	errStrings   = fmt.Errorf("%w: strings overrun the frame", ErrMalformed)
	errNoSerial  = fmt.Errorf("%w: empty serial", ErrMalformed)
	errRole      = fmt.Errorf("%w: role 0 is invalid", ErrMalformed)
	errExtension = fmt.Errorf("%w: broken extension TLV", ErrMalformed)
	errText      = fmt.Errorf("%w: string is not printable UTF-8", ErrMalformed)
)

// ValidString reports whether s may be a node name, serial or primary on
// the wire: at most MaxStringLen bytes of valid UTF-8, every rune printable
// (unicode.IsPrint: letters, marks, numbers, punctuation, symbols and the
// ASCII space; no control characters, no other spaces, no invalid bytes).
// Decode drops a frame with any other string (ErrMalformed), so what a
// peer names itself reaches logs, terminals, hook environments and
// Prometheus labels only as clean text (TestDecodeRejectsBadStrings).
func ValidString(s string) bool { return validText([]byte(s)) }

// validText is ValidString on bytes; it does not allocate.
func validText(b []byte) bool {
	if len(b) > MaxStringLen {
		return false
	}
	for i := 0; i < len(b); {
		if c := b[i]; c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 || !unicode.IsPrint(r) {
			return false
		}
		i += n
	}
	return true
}

// A Frame is one heartbeat. Its wire format (version 1) is, with all
// integers big endian:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+---------------+---------------+---------------+---------------+
//	|  Magic 'H'    |  Magic 'A'    |    Version    |     Flags     |  0
//	+---------------+---------------+---------------+---------------+
//	|           Group ID            |      Length (whole frame)     |  4
//	+---------------+---------------+---------------+---------------+
//	|   VCluster    |     Role      |   Priority    |   MonitorUp   |  8
//	+---------------+---------------+---------------+---------------+
//	| MonitorTotal  |   Node len    |  Serial len   |  Primary len  | 12
//	+---------------+---------------+---------------+---------------+
//	|                 Uptime (milliseconds, 64 bits)                | 16
//	+---------------------------------------------------------------+
//	|                  Epoch (unix nanoseconds, 64 bits)            | 24
//	+---------------------------------------------------------------+
//	|                        Seq (64 bits)                          | 32
//	+---------------------------------------------------------------+
//	|                     ConfigGen (64 bits)                       | 40
//	+---------------------------------------------------------------+
//	|                 ConfigSum (SHA-256, 32 bytes)                 | 48
//	+---------------------------------------------------------------+
//	|   Node (Node len bytes) | Serial (...) | Primary (...)        | 80
//	+---------------------------------------------------------------+
//	|   Extension TLVs: Type (1, non-zero) | Len (1) | Value (Len)  |
//	|   ... zero or more, up to Length-32                           |
//	+---------------------------------------------------------------+
//	|          Tag: HMAC-SHA256 over bytes [0, Length-32)           |
//	+---------------------------------------------------------------+
//
// Length counts every byte from the magic to the end of the tag; bytes
// after it (link-layer padding) are ignored. Magic and Version keep their
// offsets in every version; everything after them may change with the
// major version. Receivers skip extension TLVs they do not know; the tag
// covers them.
//
// Frame is comparable with ==. Use a Codec to send and receive frames;
// MarshalBinary and UnmarshalBinary are unauthenticated helpers.
type Frame struct {
	// Version is the protocol major version. Append writes
	// ProtocolVersion when it is 0; Decode sets it.
	Version uint8
	// GroupID is the HA group id (0-1023).
	GroupID uint16
	// VCluster is the virtual cluster (1 or 2).
	VCluster uint8
	// Role is the sender's role, one of the cluster.Role values 1..4
	// (starting, secondary, primary, fault). 0 is invalid on the wire.
	Role uint8
	// Flags are the sender's flags. FlagUnauthenticated is managed by the
	// Codec.
	Flags Flags
	// Priority is the sender's configured priority (0-255).
	Priority uint8
	// MonitorUp is the number of monitored interfaces that are up.
	MonitorUp uint8
	// MonitorTotal is the number of monitored interfaces.
	MonitorTotal uint8
	// Uptime is the sender's HA uptime in milliseconds.
	Uptime uint64
	// Epoch identifies one run of the sender (its start time, unix ns).
	Epoch uint64
	// Seq is the per-epoch sequence number, +1 per heartbeat. The same
	// heartbeat carries the same Seq on every hbdev.
	Seq uint64
	// ConfigGen is the sender's configuration generation counter.
	ConfigGen uint64
	// ConfigSum is the sender's whole-tree configuration checksum.
	ConfigSum [32]byte
	// Node is the sender's node name, at most MaxStringLen bytes.
	Node string
	// Serial is the sender's serial, 1 to MaxStringLen bytes.
	Serial string
	// Primary is the node the sender thinks is primary ("" for none), at
	// most MaxStringLen bytes.
	Primary string
	// NodeID is the sender's node id (extension TLV 1); zero when absent.
	NodeID NodeID
	// Hints are the sender's epoch hints for its peers (extension TLV 2,
	// once per hint); the first NumHints entries are valid, Decode leaves
	// the others zero (so decoded frames compare with ==).
	Hints [MaxHints]EpochHint
	// NumHints is the number of valid entries in Hints (0..MaxHints).
	NumHints uint8
	// HasVC2 says VC2 is sent (extension TLV 3): the sender runs a
	// second virtual cluster.
	HasVC2 bool
	// VC2 is the sender's state in its second virtual cluster; zero
	// unless HasVC2.
	VC2 VClusterState
	// Takeovers counts the times the sender took the virtual MAC of the
	// frame's vcluster (became primary) since it started (extension TLV
	// 4). A receiver that sees it grow while the sender does not claim
	// primary knows the sender held the vMAC in between, unheard, and may
	// have taught the switch its port. Zero is not sent, and a frame
	// without the TLV (an older sender) decodes as zero.
	Takeovers uint64
}

// errHints reports a frame with more than MaxHints hints to encode.
var errHints = fmt.Errorf("%w: more than %d epoch hints", ErrMalformed, MaxHints)

// encodedLen validates f for encoding and returns its wire length. The
// checks mirror those of parseBody so that whatever decodes re-encodes.
func (f *Frame) encodedLen() (int, error) {
	if f.Version != 0 && f.Version != ProtocolVersion {
		return 0, ErrVersion
	}
	if len(f.Node) > MaxStringLen || len(f.Serial) > MaxStringLen || len(f.Primary) > MaxStringLen {
		return 0, errStringLen
	}
	if f.Serial == "" {
		return 0, errNoSerial
	}
	if !ValidString(f.Node) || !ValidString(f.Serial) || !ValidString(f.Primary) || f.HasVC2 && !ValidString(f.VC2.Primary) {
		return 0, errText
	}
	if f.Role == 0 {
		return 0, errRole
	}
	if f.NumHints > MaxHints {
		return 0, errHints
	}
	if f.HasVC2 && (f.VC2.Role == 0 || f.VC2.VCluster == 0) {
		return 0, errExtension
	}
	if f.HasVC2 && len(f.VC2.Primary) > MaxStringLen {
		return 0, errStringLen
	}
	return fixedLen + len(f.Node) + len(f.Serial) + len(f.Primary) + f.extLen() + tagLen, nil
}

// extLen is the length of the extension TLVs that put writes.
func (f *Frame) extLen() int {
	n := int(f.NumHints) * hintTLVLen
	if !f.NodeID.IsZero() {
		n += nodeIDTLVLen
	}
	if f.HasVC2 {
		n += 2 + vclusterFixed + len(f.VC2.Primary)
	}
	if f.Takeovers != 0 {
		n += takeoversTLVLen
	}
	if f.HasVC2 && f.VC2.Takeovers != 0 {
		n += takeoversTLVLen
	}
	return n
}

// put writes the header, fixed fields and strings of f into b, which is
// exactly n bytes long, leaving the tag (last tagLen bytes) untouched.
func (f *Frame) put(b []byte, n int, flags Flags) {
	_ = b[n-1]
	b[0], b[1] = magic[0], magic[1]
	b[2] = ProtocolVersion
	b[3] = byte(flags)
	binary.BigEndian.PutUint16(b[4:6], f.GroupID)
	binary.BigEndian.PutUint16(b[6:8], uint16(n))
	b[8] = f.VCluster
	b[9] = f.Role
	b[10] = f.Priority
	b[11] = f.MonitorUp
	b[12] = f.MonitorTotal
	b[13] = uint8(len(f.Node))
	b[14] = uint8(len(f.Serial))
	b[15] = uint8(len(f.Primary))
	binary.BigEndian.PutUint64(b[16:24], f.Uptime)
	binary.BigEndian.PutUint64(b[24:32], f.Epoch)
	binary.BigEndian.PutUint64(b[32:40], f.Seq)
	binary.BigEndian.PutUint64(b[40:48], f.ConfigGen)
	copy(b[48:80], f.ConfigSum[:])
	o := fixedLen
	o += copy(b[o:], f.Node)
	o += copy(b[o:], f.Serial)
	o += copy(b[o:], f.Primary)
	if !f.NodeID.IsZero() {
		b[o], b[o+1] = tlvNodeID, 6
		o += 2 + copy(b[o+2:], f.NodeID[:])
	}
	for _, h := range f.Hints[:f.NumHints] {
		b[o], b[o+1] = tlvEpochHint, 14
		copy(b[o+2:], h.NodeID[:])
		binary.BigEndian.PutUint64(b[o+8:], h.Epoch)
		o += hintTLVLen
	}
	if v := &f.VC2; f.HasVC2 {
		b[o], b[o+1] = tlvVCluster, byte(vclusterFixed+len(v.Primary))
		b[o+2], b[o+3], b[o+4], b[o+5] = v.VCluster, v.Role, v.Priority, byte(v.Flags)
		b[o+6], b[o+7] = v.MonitorUp, v.MonitorTotal
		binary.BigEndian.PutUint64(b[o+8:], v.Uptime)
		o += 2 + copy(b[o+16:], v.Primary) + vclusterFixed
	}
	if f.Takeovers != 0 {
		o = putCount(b, o, tlvTakeovers, f.Takeovers)
	}
	if f.HasVC2 && f.VC2.Takeovers != 0 {
		putCount(b, o, tlvVCTakeovers, f.VC2.Takeovers)
	}
}

// putCount writes a TLV of type typ with the 8-byte count n at b[o:] and
// returns the offset after it.
func putCount(b []byte, o int, typ byte, n uint64) int {
	b[o], b[o+1] = typ, 8
	binary.BigEndian.PutUint64(b[o+2:], n)
	return o + takeoversTLVLen
}

// parseHeader checks the parts of b that can be checked without the key and
// returns the frame, cut to its Length (tag included). It does not check the
// group id.
func parseHeader(b []byte) ([]byte, error) {
	if len(b) < headerLen {
		return nil, io.ErrUnexpectedEOF
	}
	if b[0] != magic[0] || b[1] != magic[1] {
		return nil, errBadMagic
	}
	if b[2] != ProtocolVersion {
		return nil, ErrVersion
	}
	n := int(binary.BigEndian.Uint16(b[6:8]))
	if n < minLen {
		return nil, errBadLength
	}
	if len(b) < n {
		return nil, io.ErrUnexpectedEOF
	}
	return b[:n], nil
}

// parseBody decodes the fields of body, a frame without its tag whose
// header was checked by parseHeader, into f. It validates the strings and
// the extension TLVs, and returns the raw TLV bytes.
func parseBody(body []byte, f *Frame) ([]byte, error) {
	nl, sl, pl := int(body[13]), int(body[14]), int(body[15])
	if nl > MaxStringLen || sl > MaxStringLen || pl > MaxStringLen {
		return nil, errStringLen
	}
	if sl == 0 {
		return nil, errNoSerial
	}
	if body[9] == 0 {
		return nil, errRole
	}
	end := fixedLen + nl + sl + pl
	if end > len(body) {
		return nil, errStrings
	}
	if !validText(body[fixedLen:fixedLen+nl]) || !validText(body[fixedLen+nl:fixedLen+nl+sl]) || !validText(body[fixedLen+nl+sl:end]) {
		return nil, errText
	}
	ext := body[end:]
	var id NodeID
	var hints [MaxHints]EpochHint
	nh := 0
	var vc []byte       // the first vcluster TLV's value
	var tk, vctk []byte // the first takeover TLVs' values
	for e := ext; len(e) > 0; {
		if len(e) < 2 || e[0] == 0 || len(e) < 2+int(e[1]) {
			return nil, errExtension
		}
		v := e[2 : 2+int(e[1])]
		switch e[0] {
		case tlvNodeID:
			if len(v) != 6 {
				return nil, errExtension
			}
			copy(id[:], v)
		case tlvEpochHint:
			if len(v) != 14 {
				return nil, errExtension
			}
			if nh < MaxHints { // further hints are ignored
				copy(hints[nh].NodeID[:], v[:6])
				hints[nh].Epoch = binary.BigEndian.Uint64(v[6:])
				nh++
			}
		case tlvVCluster:
			if len(v) < vclusterFixed || len(v) > vclusterFixed+MaxStringLen || v[0] == 0 || v[1] == 0 {
				return nil, errExtension
			}
			if !validText(v[vclusterFixed:]) {
				return nil, errText
			}
			if vc == nil { // a second one is ignored
				vc = v
			}
		case tlvTakeovers, tlvVCTakeovers:
			if len(v) != 8 {
				return nil, errExtension
			}
			if e[0] == tlvTakeovers && tk == nil {
				tk = v
			} else if e[0] == tlvVCTakeovers && vctk == nil {
				vctk = v
			}
		}
		e = e[2+int(e[1]):]
	}

	f.Version = body[2]
	f.Flags = Flags(body[3])
	f.GroupID = binary.BigEndian.Uint16(body[4:6])
	f.VCluster = body[8]
	f.Role = body[9]
	f.Priority = body[10]
	f.MonitorUp = body[11]
	f.MonitorTotal = body[12]
	f.Uptime = binary.BigEndian.Uint64(body[16:24])
	f.Epoch = binary.BigEndian.Uint64(body[24:32])
	f.Seq = binary.BigEndian.Uint64(body[32:40])
	f.ConfigGen = binary.BigEndian.Uint64(body[40:48])
	copy(f.ConfigSum[:], body[48:80])
	o := fixedLen
	setString(&f.Node, body[o:o+nl])
	o += nl
	setString(&f.Serial, body[o:o+sl])
	o += sl
	setString(&f.Primary, body[o:o+pl])
	f.NodeID, f.Hints, f.NumHints = id, hints, uint8(nh)
	f.Takeovers = count(tk)
	f.HasVC2 = vc != nil
	if vc != nil {
		v := &f.VC2
		v.VCluster, v.Role, v.Priority, v.Flags = vc[0], vc[1], vc[2], Flags(vc[3])
		v.MonitorUp, v.MonitorTotal = vc[4], vc[5]
		v.Uptime = binary.BigEndian.Uint64(vc[6:14])
		setString(&v.Primary, vc[14:])
		v.Takeovers = count(vctk)
	} else {
		f.VC2 = VClusterState{}
	}
	return ext, nil
}

// count decodes the value of a takeover TLV; nil (no TLV) is zero.
func count(v []byte) uint64 {
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// setString sets *s to b, reusing the current string when it is equal, so
// that decoding a peer's heartbeats into the same Frame does not allocate.
func setString(s *string, b []byte) {
	if *s != string(b) {
		*s = string(b)
	}
}

// MarshalBinary implements encoding.BinaryMarshaler. It encodes f as an
// unauthenticated frame (FlagUnauthenticated, zero tag) of group f.GroupID,
// as NewCodec(nil, f.GroupID) would. Senders use Codec.Append.
func (f *Frame) MarshalBinary() ([]byte, error) {
	return NewCodec(nil, f.GroupID).Append(nil, f)
}

// UnmarshalBinary implements encoding.BinaryUnmarshaler. It decodes and
// validates the structure of b into f WITHOUT verifying the tag or the
// group id; it is meant for inspecting captured frames. Receivers use
// Codec.Decode.
func (f *Frame) UnmarshalBinary(b []byte) error {
	fr, err := parseHeader(b)
	if err != nil {
		return err
	}
	_, err = parseBody(fr[:len(fr)-tagLen], f)
	return err
}

// Peek returns the protocol version and group id of what looks like a
// heartbeat frame (magic "HA", at least the 8-byte header), without
// authenticating anything. Receivers use it to name what they drop: a
// frame of another group (another cluster on the wire) or of an unknown
// version (a peer running another release).
func Peek(b []byte) (version uint8, group uint16, ok bool) {
	if len(b) < headerLen || b[0] != magic[0] || b[1] != magic[1] {
		return 0, 0, false
	}
	return b[2], binary.BigEndian.Uint16(b[4:6]), true
}
