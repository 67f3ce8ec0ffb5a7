// Package chaos is hagent's fault campaign (`make chaos`; a 60-second
// campaign with a fixed seed runs in `make test`): a seeded, randomized
// schedule of overlapping faults applied to a 3-node netns lab (a
// stateful firewall trio with session pickup on) while a client probes
// the cluster address every millisecond, 200 long-lived TCP connections
// echo through the trio to a server behind it and a reader re-reads a
// synchronized file that the primary keeps rewriting; invariants are then
// checked on what was observed.
//
// Three parts, each small:
//
//   - schedule.go: Generate(seed, duration) makes the whole schedule up
//     front, rounds of 1–4 overlapping faults each followed by a quiet
//     gap, so a seed replays the same faults at the same offsets. Targets
//     are roles ("the primary") resolved from the facts when a fault
//     starts, or fixed nodes.
//   - nemesis.go: applies a round: SIGKILL and restart, SIGTERM and
//     restart, SIGSTOP/SIGCONT, hb link down, heartbeat loss and an hb
//     partition (nft on the hb switch), data link flaps, SIGHUP with a new
//     priority, a full tmpfs under the synced path.
//   - observe.go, workload.go: the observer trusts facts, not the agents'
//     status: port1's MAC on every node over netlink, gratuitous ARPs
//     entering the LAN switch and TCP resets entering the LAN and WAN
//     switches per port, the probe, the connections, the file's bytes,
//     the processes.
//
// check.go turns the Record into one Check per invariant with every
// violation timestamped; report.go prints the event log, the violations
// with the faults around them, and the summary table. The checks are
// pure functions of the Record, tested on hand-made records.
//
// failover.go is the forced-failover series (`ha failover set`/`unset`
// alternating) with each outage as the 1 ms probe saw it.
package chaos
