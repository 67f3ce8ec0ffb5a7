package deferq

import (
	"fmt"
	"time"

	"github.com/hagent/hagent/sessionsync"
	"github.com/hashicorp/go-hclog"
)

// DefaultQueueNum is the nfnetlink_queue number hagent's rule sends to.
const DefaultQueueNum = 8892

// Chain is the chain of hagent's own, in the security table of iptables
// and ip6tables, that its rule lives in; FORWARD jumps to it.
//
// Why the security table's FORWARD (nft priority 150 with iptables-nft):
//   - it runs after filter's FORWARD (priority 0): a packet the user's
//     firewall drops is never held nor its flow copied;
//   - the entry is still unconfirmed there (conntrack confirms it at the
//     last hook, after POSTROUTING), so the flow is sent from the queued
//     packet (FlowOfPacket), before its confirm event exists; destination
//     NAT is done by then (the rule leaves DNATed flows alone);
//   - an accept verdict on a queued packet continues at the next hook,
//     skipping the rest of its chain: the security table is one no user
//     ruleset of a router has rules in after this jump (filter or mangle
//     would have the user's rules skipped);
//   - --queue-bypass: no consumer bound, the packet passes; the queue
//     itself is fail-open (NFQA_CFG_F_FAIL_OPEN): full, it passes too.
const Chain = "HAGENT-DEFER"

// Engine is the session engine's side of defer (*sessionsync.Engine).
type Engine interface {
	Defer(f *sessionsync.Flow) bool
	Waiting(k sessionsync.Key) bool
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Max is defer: the longest a flow's first packet is held.
	Max time.Duration
	// QueueNum is the nfnetlink_queue number; 0 is DefaultQueueNum.
	QueueNum uint16
	// Protocols the rule matches ("tcp", "udp").
	Protocols []string
	// PerFlow and Total bound the hold (Config).
	PerFlow, Total int
	Logger         hclog.Logger
}

// Status is what `ha sessions` shows of defer.
type Status struct {
	Stats
	// Defer is the longest hold (Config.Max).
	Defer time.Duration
	// QueueNum is the nfnetlink_queue number.
	QueueNum uint16
	// Rule is the rule's state: "installed", or why not.
	Rule string
	// Received counts the packets the queue delivered; Undecoded those
	// without a conntrack entry hagent reads (let go at once).
	Received, Undecoded, VerdictErrors uint64
	// KernelPassed counts the packets the rule matched that the kernel
	// let pass unqueued (no consumer bound, or the queue full:
	// fail-open), from the rule's counter; -1 unknown.
	KernelPassed int64
}

// RuleText is the rule as `ha exposure` shows it.
func RuleText(queue uint16) string {
	return fmt.Sprintf("iptables/ip6tables -t security: FORWARD -j %s; %s: -p PROTO -m conntrack --ctstate NEW ! --ctstate DNAT -j NFQUEUE --queue-num %d --queue-bypass", Chain, Chain, queue)
}
