// Package configsync keeps the configuration of hagent cluster members
// identical: the cluster: section of the configuration and every file under
// sync.paths, pushed by the primary to the secondaries
// (docs/configsync.md).
//
// It has three layers, the lowest in a package of its own:
//
//   - The control channel is an l2chan.Channel on the l2ep Ethertype
//     (0x8893) over the hbdev links, with the HKDF label ChannelLabel: a
//     reliable, ordered, exactly-once, AES-256-GCM encrypted message stream
//     per peer pair (package l2chan).
//   - Store scans the sync paths into a Manifest (per-path SHA-256, mode,
//     owner) with a whole-tree checksum that the agent puts in heartbeats,
//     diffs manifests, and applies files atomically (temp file, fsync,
//     rename, fsync of the directory), so no reader ever sees a torn file.
//     Every read and write is made through directory fds opened below the
//     sync path's parent without a symlink in any component (openat2
//     RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or an O_NOFOLLOW walk).
//   - Syncer is the protocol on top: incremental pushes of what fsnotify
//     saw change on the primary, a periodic (and heartbeat-triggered)
//     manifest compare that repairs drift by sending only the paths that
//     differ, on_change commands after a secondary applied a change, and a
//     generation number so that a new primary pulls a newer tree from a
//     member rather than push an older one over it. The tree (manifest,
//     content, generation) is shown only to this node's primary, pushes
//     are taken only from it.
//
// The wire formats and rules are documented in docs/configsync.md.
package configsync
