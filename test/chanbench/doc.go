// Package chanbench measures and checks the cluster channel (package
// l2chan) over real AF_PACKET links: a veth pair (1500 MTU) between two
// network namespaces of the lab.
//
//   - TestChannelEthertypes (root) runs two channel instances on
//     different Ethertypes and labels over the same veth in both
//     directions: each delivers only its own messages and neither drops a
//     frame as unauthentic or malformed (the sockets keep them apart).
//   - TestChannelBench runs only with HAGENT_BENCH=1 (`make bench`): one
//     bulk transfer (HAGENT_CHAN_BENCH_MB, default 256 MiB, in messages of
//     16 MiB sent back to back) from node-a to node-b, repeated
//     HAGENT_CHAN_BENCH_REPS times (default 3); it prints MB/s, frames/s,
//     the retransmitted share of the frames sent and the CPU seconds per
//     100 MB (both ends: they run in this one process), and writes
//     bench-results/channel.md and channel.json at the repository root.
package chanbench
