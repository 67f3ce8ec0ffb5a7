// Package sessionsync is hagent's session pickup (docs/sessionsync.md): it copies the
// kernel's connection-tracking table of the primary into the kernel table
// of every secondary, so that a member taking over already has an entry,
// with the same NAT mapping, for every established connection.
//
// The sender (the primary) reads conntrack events (new, update, destroy)
// over ctnetlink, filters them (TCP always; UDP and ICMP with
// Config.Connectionless; NATed flows with Config.NAT; flows younger than
// Config.Delay held back; flows touching a Config.Ignore prefix never), and
// batches them into messages on a reliable, ordered, encrypted
// l2chan.Channel on Ethertype eth_type.session (0x8892, HKDF label
// ChannelLabel). The receiver (each secondary) creates, updates and deletes
// the flows in its own kernel table over ctnetlink, NAT included
// (CTA_NAT_SRC / CTA_NAT_DST, which github.com/ti-mo/conntrack does not
// send, are encoded here with its netfilter types). It applies only what
// the peers SetSenders entitles send, within their scope, through its own
// filter, with the status bits a copy may carry (CopyStatus) and the
// helpers it allows (trust.go).
//
// The protocol (docs/sessionsync.md):
//
//   - A message is a header (magic "SS", version 1, kind, bulk generation,
//     the sender's time of the oldest event in it, a record count) and
//     records. Kinds: a stream batch, a bulk begin and a bulk end.
//   - A record is an upsert or a delete of one flow: both tuples, status,
//     timeout, mark, zone, labels and the TCP state (state, window scales,
//     flags). The flow's key is its zone and original tuple.
//   - Bulk: a member the primary has not copied to yet (it just became
//     primary, the member is new or restarted, an event overrun or a failed
//     send) gets bulk begin, the whole filtered table, bulk end, then the
//     stream. Events that arrive during the dump follow it. At bulk end
//     the receiver deletes the copies it made earlier that the bulk did not
//     contain (so an event lost to an overrun cannot leave a stale copy).
//   - Refresh: a busy UDP or ICMP flow produces no update events, yet its
//     copy must not expire first. Every Config.Refresh the sender dumps the
//     table and re-sends the connectionless flows whose expiry moved by
//     more than the refresh period; copies carry the flow's timeout plus
//     two refresh periods, and are deleted when the original's destroy
//     event arrives.
//   - An event overrun (ENOBUFS on the event socket) is counted and
//     repaired by a bulk copy with sweep to every member.
//
// The kernel enters through the Table interface: Kernel (Linux, ctnetlink)
// and MemTable (in memory, for tests without root). The channel enters
// through Transport, which *l2chan.Channel implements.
package sessionsync
