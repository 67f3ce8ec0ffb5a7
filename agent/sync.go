package agent

import (
	"context"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/control"
)

// Syncer is the configuration-sync engine as the agent drives it.
type Syncer interface {
	// Run runs the engine until ctx is done.
	Run(ctx context.Context) error
	// NotePeer feeds the checksum a peer advertises in its heartbeats.
	NotePeer(node, serial string, sum [32]byte, gen uint64)
	// SetLinkUp tells the control channel an hbdev's carrier changed.
	SetLinkUp(name string, up bool)
	// SetRole says whether this node is now the primary.
	SetRole(primary bool)
	// Checksum returns this node's whole-tree checksum and generation.
	Checksum() ([32]byte, uint64)
	// Peers returns what is known of each peer's configuration, by serial.
	Peers() map[string]syncPeer
	// LastError is the last apply/on_change error, "" when none.
	LastError() string
	// SyncNow forces a full synchronization (`ha synchronize`).
	SyncNow() any
	// Checksums answers `ha checksum`.
	Checksums(st cluster.Status) any
}

// syncPeer is one peer's configuration state.
type syncPeer struct {
	sum    [32]byte
	gen    uint64
	inSync bool
}

var _ = control.Checksums{}

func (a *Agent) runSync(ctx context.Context) {
	if err := a.sync.Run(ctx); err != nil && ctx.Err() == nil {
		a.log.Error("configuration sync stopped", "error", err)
	}
}
