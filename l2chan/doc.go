// Package l2chan is hagent's cluster channel: a reliable, ordered,
// exactly-once, encrypted message stream between each pair of cluster
// members over raw Ethernet frames of one Ethertype, on a set of links
// (heartbeat.Link: the hbdevs, or a dedicated device list).
//
// One Channel serves one Ethertype and carries its own HKDF label
// (Config.Label), so instances side by side never accept each other's
// frames: configuration sync runs one on eth_type.l2ep (0x8893, label
// "hagent-sync-v1"), session sync one on eth_type.session (0x8892).
//
// The protocol (docs/configsync.md §1, docs/channel.md):
//
//   - Frames carry a clear header (version, kind, group id, source and
//     destination epoch, nonce counter, source and destination node names)
//     that is the AES-256-GCM additional data of the encrypted body. The
//     key is per sender and epoch, derived by HKDF-SHA256 from the group
//     password and the label; a 1024-wide sliding window over the nonce
//     counter and the epoch make replayed frames useless.
//   - Messages are fragmented to the MTU, buffered out of order within a
//     window, acknowledged cumulatively and selectively (SACK),
//     retransmitted on an adaptive RTO (RFC 6298, Karn) and on a RACK-like
//     reordering allowance, and flow-controlled by the receive window.
//   - Data goes on the highest-priority link that is up and answers; after
//     FailoverAfter timeouts without progress the next link takes over and
//     everything in flight is resent there; a repaired link is probed and
//     used again.
//   - A peer restart (a higher source epoch) resets that peer's streams:
//     messages not yet acknowledged are sent again from their start.
//   - Keys are derived only for the sender names and epochs the agent
//     admitted from authenticated heartbeats (Channel.Admit), rate limited
//     and cached; other frames are dropped in the link readers before any
//     cryptography. Every receive-side structure has a bound
//     (docs/channel.md, "Admission and receive-side bounds").
package l2chan
