// Package cluster implements hagent's primary election as a pure,
// deterministic state machine, in the shape of etcd-io/raft.
//
// A Machine has no goroutines, sockets, timers or calls to time.Now. Events
// go in through Step (a tick of the injected clock, a heartbeat advert heard
// from a peer, a change in the number of connected monitored links, the
// operator's `ha failover set|unset`, a fault, a shutdown request) and the
// resulting actions come out of Ready (take the virtual MAC, release it,
// re-announce it, send a heartbeat now, run a hook, stopped). The daemon owns
// one Machine from one goroutine and performs the actions; tests drive whole
// clusters of Machines through an in-memory network with a fake clock.
//
// The election follows FortiGate's FGCP:
//
//   - override disabled (the default): most connected monitored interfaces,
//     then the larger HA uptime (only when the difference exceeds
//     uptime_diff_margin), then the higher priority, then the higher serial;
//   - override enabled (on any live member): most connected monitored
//     interfaces, then the higher priority, then the larger HA uptime (with
//     the margin), then the higher serial.
//
// A monitored-link failure resets the node's HA uptime to zero. A member
// with `ha failover set` stays out of the election while any other member is
// a candidate. A peer is lost after hb_lost_threshold intervals without a
// valid heartbeat. A starting node waits hello_holddown before it becomes
// primary alone; once it hears peers it joins the election at once.
//
// Damping. A fall in the number of monitored links up counts at once; a
// rise counts only once the number reported has held still for
// MonitorHolddown, so a port that flaps costs one failover and one
// takeback (TestMonitorFlapStorm: 61 role changes for 30 flaps without it,
// 3 with 1s). With override, a member that wins by priority against a
// serving primary, not by more monitored links, waits OverrideWaitTime,
// winning all along, before it takes the role (TestOverrideWaitTime).
//
// Hand-overs are make-before-break: a primary that loses the election keeps
// the virtual MAC until the winner announces itself as primary, and the
// winner re-announces the MAC (gratuitous ARP) as soon as the old primary
// says it released it, so the switch never keeps pointing at a port that
// dropped the MAC. Two primaries that hear each other resolve within one
// heartbeat: the loser steps down as soon as it hears the winner claim.
// Every advert carries the sender's count of its takeovers of the MAC
// (Advert.Takeovers); a primary that sees a peer's count change while the
// peer does not claim primary knows it held the MAC unheard (its claim and
// release both lost) and re-announces it, once per change.
//
// Every decision carries a readable reason, in FortiOS's words where FortiOS
// has them ("node-a is selected as the primary because it has the largest
// value of override priority").
package cluster
