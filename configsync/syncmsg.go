package configsync

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// msgKind is the type of a sync-protocol message. The numeric values are
// part of the protocol: append only, never renumber; zero is invalid.
type msgKind uint8

const (
	msgInvalid      msgKind = iota
	msgGenReq               // 1 any → any: what is your generation?
	msgGenResp              // 2 reply: gen, checksum
	msgManifestReq          // 3 any → any: send your manifest
	msgManifestResp         // 4 reply: gen, checksum, entries
	msgPush                 // 5 primary → secondary: entries (+content), deleted paths
	msgPushAck              // 6 reply: gen, checksum after applying, error, on_change results
	msgPullReq              // 7 new primary → member: send these paths
	msgPullResp             // 8 reply: gen, checksum, entries (+content)
	msgSyncReq              // 9 secondary → primary: repair me now (agentctl ha synchronize)
	msgSyncResp             // 10 reply: error
	msgKindEnd
)

var msgNames = [...]string{"invalid", "gen-req", "gen-resp", "manifest-req", "manifest-resp",
	"push", "push-ack", "pull-req", "pull-resp", "sync-req", "sync-resp"}

func (k msgKind) String() string {
	if k < msgKindEnd {
		return msgNames[k]
	}
	return fmt.Sprintf("msg(%d)", uint8(k))
}

func (k msgKind) isResponse() bool {
	switch k {
	case msgGenResp, msgManifestResp, msgPushAck, msgPullResp, msgSyncResp:
		return true
	}
	return false
}

// syncHeader is the JSON header of every sync message; unused fields are
// omitted.
type syncHeader struct {
	// ID matches a response to its request (unique per requester).
	ID       uint64  `json:"id"`
	Gen      uint64  `json:"gen,omitempty"`
	Checksum *Digest `json:"checksum,omitempty"`
	// Repair marks a push that repairs drift found by a manifest compare.
	Repair bool `json:"repair,omitempty"`
	// Entries of a push, pull response or manifest. In a push or pull
	// response, file, symlink and cluster entries carry Size bytes of
	// content each, concatenated in entry order after the header.
	Entries []Entry `json:"entries,omitempty"`
	// Deleted paths of a push.
	Deleted []string `json:"deleted,omitempty"`
	// Paths requested by a pull.
	Paths    []string        `json:"paths,omitempty"`
	Error    string          `json:"error,omitempty"`
	Commands []CommandStatus `json:"commands,omitempty"`
}

// syncMsg is a decoded sync message.
type syncMsg struct {
	from string
	kind msgKind
	hdr  syncHeader
	blob []byte
	// pre: files of this push written ahead (applyLoop), or nil; preCh
	// delivers them while they are being written.
	pre   *Prewritten
	preCh chan *Prewritten
}

// carriesContent reports whether entries of kind k have content in the blob.
func carriesContent(k EntryKind) bool {
	return k == KindFile || k == KindSymlink || k == KindCluster
}

// encodeSyncMsg lays a message out as
//
//	0  1  kind
//	1  4  header length h (big endian)
//	5  h  JSON header
//	5+h   content blob
func encodeSyncMsg(kind msgKind, h *syncHeader, blob []byte) ([]byte, error) {
	j, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 5+len(j)+len(blob))
	b = append(b, byte(kind))
	b = binary.BigEndian.AppendUint32(b, uint32(len(j)))
	b = append(b, j...)
	return append(b, blob...), nil
}

// decodeSyncMsg parses a message and checks that the blob holds exactly
// the content the entries announce.
func decodeSyncMsg(from string, b []byte) (*syncMsg, error) {
	if len(b) < 5 {
		return nil, io.ErrUnexpectedEOF
	}
	m := &syncMsg{from: from, kind: msgKind(b[0])}
	if m.kind == msgInvalid || m.kind >= msgKindEnd {
		return nil, fmt.Errorf("configsync: unknown sync message kind %d", b[0])
	}
	n := binary.BigEndian.Uint32(b[1:])
	if uint64(len(b)-5) < uint64(n) {
		return nil, io.ErrUnexpectedEOF
	}
	if err := json.Unmarshal(b[5:5+n], &m.hdr); err != nil {
		return nil, fmt.Errorf("configsync: bad %s header: %w", m.kind, err)
	}
	m.blob = b[5+n:]
	for i := range m.hdr.Entries {
		if err := validWireEntry(&m.hdr.Entries[i]); err != nil {
			return nil, fmt.Errorf("configsync: bad %s entry %d: %w", m.kind, i, err)
		}
	}
	if m.kind == msgPush || m.kind == msgPullResp {
		// Each size is checked against what is left of the blob, so the
		// sum never overflows (four sizes of 2^62 once added up to 0 and
		// made contents panic: TestDecodeSizeOverflow).
		left := int64(len(m.blob))
		for _, e := range m.hdr.Entries {
			if !carriesContent(e.Kind) {
				continue
			}
			if e.Size > left {
				return nil, fmt.Errorf("configsync: %s announces more content than the %d bytes it carries", m.kind, len(m.blob))
			}
			left -= e.Size
		}
		if left != 0 {
			return nil, fmt.Errorf("configsync: %s carries %d content bytes no entry announces", m.kind, left)
		}
	}
	return m, nil
}

// maxOwnerID is the largest uid or gid an entry may carry: IDs are 32
// bits and 2^32-1 means "unchanged" to chown(2).
const maxOwnerID = 1<<32 - 2

// validWireEntry refuses an entry no scan produces: an invalid kind, a
// path that is neither clean and absolute nor ClusterPath (or the cluster
// kind on another path), a negative size, mode bits beyond 07777, an
// owner outside -1..maxOwnerID. Each field thus reaches Store, fileMode
// and chown within its range (FuzzSyncMsg).
func validWireEntry(e *Entry) error {
	switch {
	case e.Kind == kindInvalid || e.Kind >= kindEnd:
		return fmt.Errorf("invalid kind %d", e.Kind)
	case (e.Path == ClusterPath) != (e.Kind == KindCluster):
		return fmt.Errorf("%s entry with path %q", e.Kind, e.Path)
	case e.Kind != KindCluster && (!filepath.IsAbs(e.Path) || filepath.Clean(e.Path) != e.Path || strings.IndexByte(e.Path, 0) >= 0):
		return fmt.Errorf("path %q is not clean and absolute", e.Path)
	case e.Size < 0:
		return fmt.Errorf("negative size for %s", e.Path)
	case e.Mode&^0o7777 != 0:
		return fmt.Errorf("mode %o of %s", e.Mode, e.Path)
	case e.UID < -1 || int64(e.UID) > maxOwnerID || e.GID < -1 || int64(e.GID) > maxOwnerID:
		return fmt.Errorf("owner %d:%d of %s", e.UID, e.GID, e.Path)
	}
	return nil
}

// contents splits a push or pull response blob per entry.
func (m *syncMsg) contents() [][]byte {
	out := make([][]byte, len(m.hdr.Entries))
	off := int64(0)
	for i, e := range m.hdr.Entries {
		if carriesContent(e.Kind) {
			out[i] = m.blob[off : off+e.Size]
			off += e.Size
		}
	}
	return out
}
