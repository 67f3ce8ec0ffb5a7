// Package heartbeat implements hagent's heartbeat protocol: the
// authenticated frames that cluster members broadcast every hb_interval on
// each heartbeat device (hbdev), and the links that carry them.
//
// The protocol is documented byte by byte in docs/protocol.md. In short:
//
//   - A Frame is a raw Ethernet payload of Ethertype EtherTypeHA (0x8890),
//     or EtherTypeHC (0x8891) in transparent mode. It carries the sender's
//     identity (node name, serial), its election inputs (priority, flags,
//     monitored links, HA uptime), its view of the cluster (role, primary),
//     its configuration checksum, and a per-boot Epoch with a per-epoch
//     sequence number Seq.
//   - A Codec marshals and authenticates frames with HMAC-SHA256, keyed by
//     DeriveKey (HKDF-SHA256 of the group password and group id). Decode
//     rejects short, malformed, foreign-version, foreign-group and forged
//     frames with distinct errors so callers can count them.
//   - A ReplayGuard drops frames from an older epoch or with a sequence
//     number that was already accepted or fell out of a 64-wide window.
//     Because every heartbeat is sent on every hbdev, duplicates are normal
//     and reported separately (ErrDuplicate) from replays (ErrReplay).
//   - A Link is one hbdev. DialLink opens an AF_PACKET socket on Linux;
//     MemNetwork provides in-memory links, with loss, cuts and isolated
//     nodes, for tests of the layers above.
//   - The Heartbeat gopacket layer decodes captured frames for inspection.
package heartbeat
