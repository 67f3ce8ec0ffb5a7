package heartbeat

import (
	"errors"
	"net"
)

// ErrClosed is returned by Link methods after Close.
var ErrClosed = errors.New("heartbeat: link closed")

// A Link is one heartbeat device (hbdev): a best-effort, broadcast, raw
// Ethernet segment bound to a single Ethertype. It is the transport seam of
// hagent: the daemon uses AF_PACKET links (see DialLink) and tests use the
// in-memory links of a MemNetwork.
//
// Contracts:
//   - Send transmits one frame payload (without the Ethernet header) to the
//     broadcast address of the segment. It never blocks for longer than the
//     kernel takes to queue the frame; a full queue is an error, not a wait.
//     The caller keeps ownership of payload; Send does not retain it.
//   - Recv blocks until a frame arrives, the deadline set by SetReadDeadline
//     passes, or the link is closed. It copies the payload into buf and
//     returns its length and the sender's hardware address. Frames longer
//     than buf are truncated to len(buf).
//   - Close unblocks a pending Recv, which then returns ErrClosed (or an
//     error wrapping net.ErrClosed).
//   - Send and Recv may be called concurrently from different goroutines.
type Link interface {
	// Name is the interface name of the hbdev, e.g. "ha1".
	Name() string
	// HardwareAddr is the link's own MAC address.
	HardwareAddr() net.HardwareAddr
	// Send broadcasts one frame payload on the link.
	Send(payload []byte) error
	// Recv receives one frame payload into buf.
	Recv(buf []byte) (n int, from net.HardwareAddr, err error)
	// Close releases the link and unblocks Recv.
	Close() error
}
