// Package configsync keeps the configuration of hagent cluster members
// identical: the cluster: section of the configuration and every file under
// sync.paths, pushed by the primary to the secondaries (SPEC §6).
//
// It has three layers:
//
//   - Channel is the control channel: a reliable, ordered, exactly-once
//     message stream per peer pair over raw Ethernet frames of the l2ep
//     Ethertype (0x8893) on the hbdev links (heartbeat.Link), using the
//     highest-priority live link and failing over to the next. Frames are
//     AES-256-GCM encrypted with a per-sender, per-epoch key derived by
//     HKDF-SHA256 from the group password (salt "hagent-sync-v1"); nonce
//     counters and epochs make replays useless. Messages are fragmented to
//     the MTU, acknowledged cumulatively and selectively, retransmitted with
//     an adaptive RTO and flow-controlled by a window.
//   - Store scans the sync paths into a Manifest (per-path SHA-256, mode,
//     owner) with a whole-tree checksum that the agent puts in heartbeats,
//     diffs manifests, and applies files atomically (temp file, fsync,
//     rename, fsync of the directory), so no reader ever sees a torn file.
//   - Syncer is the protocol on top: incremental pushes of what fsnotify
//     saw change on the primary, a periodic (and heartbeat-triggered)
//     manifest compare that repairs drift by sending only the paths that
//     differ, on_change commands after a secondary applied a change, and a
//     generation number so that a new primary pulls a newer tree from a
//     member rather than push an older one over it.
//
// The wire formats and rules are documented in docs/configsync.md.
package configsync
