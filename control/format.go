package control

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hagent/hagent/sessionsync"
)

// FormatStatus writes the human form of `agentctl ha status`, laid out like
// FortiOS `get system ha status`.
func FormatStatus(w io.Writer, s *Status, now time.Time) {
	health, problems := HealthOf(s)
	fmt.Fprintf(w, "HA Health Status: %s\n", health)
	for _, p := range problems {
		fmt.Fprintf(w, "    %s\n", p)
	}
	for _, p := range s.Warnings {
		fmt.Fprintf(w, "    warning: %s\n", p)
	}
	formatBody(w, s, now)
}

// HealthOf returns "OK" or "ERROR" and the problems that make it ERROR:
// lost members, monitored links or hbdevs down, this node's fault and
// s.Problems. Warnings do not count.
func HealthOf(s *Status) (string, []string) {
	health := "OK"
	var problems []string
	for _, m := range s.Members {
		if !m.Alive && !m.Self {
			why := ""
			if m.LostWhy != "" {
				why = " (" + m.LostWhy + ")"
			}
			problems = append(problems, fmt.Sprintf("%s(%s) is lost%s", m.Node, m.Serial, why))
		}
		if m.MonitorUp < m.MonitorTotal {
			problems = append(problems, fmt.Sprintf("%s(%s) has %d of %d monitored links down", m.Node, m.Serial, m.MonitorTotal-m.MonitorUp, m.MonitorTotal))
		}
	}
	for _, h := range s.HBDevs {
		if !h.Up {
			problems = append(problems, fmt.Sprintf("%s: hbdev %s down", s.Node, h.Name))
		}
	}
	if s.Fault != "" {
		problems = append(problems, s.Node+": "+s.Fault)
	}
	for i, v := range s.VClusters {
		if i == 0 { // the fields above
			continue
		}
		for _, m := range v.Members {
			if m.MonitorUp < m.MonitorTotal {
				problems = append(problems, fmt.Sprintf("%s(%s) has %d of %d monitored links of vcluster %d down", m.Node, m.Serial, m.MonitorTotal-m.MonitorUp, m.MonitorTotal, v.VCluster))
			}
		}
		if v.Fault != "" {
			problems = append(problems, fmt.Sprintf("%s: vcluster %d: %s", s.Node, v.VCluster, v.Fault))
		}
	}
	problems = append(problems, s.Problems...)
	if len(problems) > 0 {
		health = "ERROR"
	}
	return health, problems
}

func formatBody(w io.Writer, s *Status, now time.Time) {
	fmt.Fprintf(w, "Model: hagent, Mode: HA %s\n", strings.ToUpper(s.Mode))
	fmt.Fprintf(w, "Group Name: %s, Group ID: %d\n", s.GroupName, s.GroupID)
	fmt.Fprintf(w, "This node: %s (%s), role %s since %s, priority %d, override %s\n",
		s.Node, s.Serial, s.Role, s.RoleSince.Local().Format("2006-01-02 15:04:05"), s.Priority, enable(s.Override))
	if s.FailoverSet {
		fmt.Fprintf(w, "ha failover: set (this node stays secondary while another member is healthy)\n")
	}
	fmt.Fprintf(w, "Cluster Uptime: %s\n", days(time.Duration(s.UptimeS)*time.Second))
	fmt.Fprintf(w, "Heartbeat: every %gms, lost after %d\n", s.HBIntervalM, s.LostThresh)
	fmt.Fprintf(w, "Primary selected using:\n")
	n := 0
	for i := len(s.History) - 1; i >= 0 && n < 5; i-- {
		e := s.History[i]
		if e.Kind != "role" && e.Kind != "takeover" {
			continue
		}
		fmt.Fprintf(w, "    <%s> %s\n", e.Time.Local().Format("2006/01/02 15:04:05.000"), e.Reason)
		n++
	}
	if n == 0 && s.Reason != "" {
		fmt.Fprintf(w, "    %s\n", s.Reason)
	}
	fmt.Fprintf(w, "override: %s\n", enable(s.Override))
	if len(s.VClusters) > 1 {
		formatVClusters(w, s)
	}
	fmt.Fprintf(w, "Configuration Status:\n")
	for _, m := range s.Members {
		state := "in-sync"
		if !m.ConfigInSync {
			state = "out-of-sync"
		}
		fmt.Fprintf(w, "    %s(%s): %s\n", m.Node, m.Serial, state)
	}
	if c := s.Config.Channel; c != nil {
		active := c.ActiveLink
		if active == "" {
			active = "none"
		}
		fmt.Fprintf(w, "    sync channel: on %s, frames tx %d rx %d, retransmits %d, hbdev failovers %d, dropped bad_auth %d replay %d malformed %d\n",
			active, c.FramesSent, c.FramesReceived, c.Retransmits, c.Failovers, c.DroppedBadAuth, c.DroppedReplay, c.DroppedMalformed)
	}
	if s.Config.LastError != "" {
		fmt.Fprintf(w, "    sync error: %s\n", s.Config.LastError)
	}
	if len(s.RestartNeeded) > 0 {
		fmt.Fprintf(w, "    restart needed: %s (changed, still running with the values above)\n", strings.Join(s.RestartNeeded, ", "))
	}
	fmt.Fprintf(w, "HBDEV stats:\n    %s:\n", s.Node)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for _, h := range s.HBDevs {
		foreign := ""
		if h.Foreign > 0 {
			foreign = fmt.Sprintf(",\tforeign=%d", h.Foreign)
		}
		fmt.Fprintf(tw, "        %s:\t%s,\trx-pkts=%d,\ttx-pkts=%d,\tdropped=%d,\tbad_auth=%d,\treplay=%d%s\n",
			h.Name, updown(h.Up), h.RX, h.TX, h.Dropped, h.BadAuth, h.Replay, foreign)
	}
	tw.Flush()
	if len(s.Monitor) > 0 {
		fmt.Fprintf(w, "MONDEV stats:\n    %s:\n", s.Node)
		for _, l := range s.Monitor {
			fmt.Fprintf(w, "        %s: %s\n", l.Name, updown(l.Up))
		}
	}
	if s.MonitorHeldUntil != nil {
		fmt.Fprintf(w, "Monitor hold-down: %d up counts from %s\n", s.MonitorHeldUp, s.MonitorHeldUntil.Format("15:04:05.000"))
	}
	if s.OverrideWaitUntil != nil {
		fmt.Fprintf(w, "Override wait: takes the primary role at %s\n", s.OverrideWaitUntil.Format("15:04:05.000"))
	}
	if len(s.Checks) > 0 {
		fmt.Fprintf(w, "Health checks:\n")
		for _, c := range s.Checks {
			fmt.Fprintf(w, "    %s (%s): %s, last %s x%d", c.Name, c.Kind, c.State, orNone(c.Last), c.Count)
			if c.Output != "" {
				fmt.Fprintf(w, ": %q", c.Output)
			}
			fmt.Fprintln(w)
		}
	}
	if len(s.Interfaces) > 0 {
		fmt.Fprintf(w, "Virtual MACs:\n")
		for _, i := range s.Interfaces {
			own := "not held"
			if i.Owned {
				own = "held"
			}
			restored := ""
			if i.Restores > 0 {
				restored = fmt.Sprintf(", put back %d times", i.Restores)
			}
			fmt.Fprintf(w, "    %s: %s (%s), permanent %s, %s%s\n", i.Name, i.VMAC, own, i.PermMAC, strings.Join(i.Addresses, " "), restored)
		}
	}
	if r := s.ARPsRefresh; r != nil {
		fmt.Fprintf(w, "    %s\n", r)
	}
	if r := s.LinkFailedSignal; r != nil {
		fmt.Fprintf(w, "%s\n", r)
	}
	if m := s.Mgmt; m != nil {
		fmt.Fprintf(w, "%s\n", m)
	}
	members := append([]Member(nil), s.Members...)
	sort.SliceStable(members, func(i, j int) bool {
		return rank(members[i].Role) < rank(members[j].Role)
	})
	fmt.Fprintf(w, "Members:\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "    ROLE\tNODE\tSERIAL\tPRIO\tMONITOR\tUPTIME\tHEARD\n")
	for _, m := range members {
		heard := "self"
		if !m.Self {
			heard = fmt.Sprintf("%dms ago", m.LastHeardMs)
			if !m.Alive {
				heard += " (lost)"
			}
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%d\t%d/%d\t%s\t%s\n", title(m.Role), m.Node, m.Serial, m.Priority,
			m.MonitorUp, m.MonitorTotal, days(time.Duration(m.UptimeS)*time.Second), heard)
	}
	tw.Flush()
	idx := 0
	for _, m := range members {
		if m.Role == "primary" || m.Role == "secondary" {
			fmt.Fprintf(w, "%s: %s, %s, HA cluster index = %d\n", title(m.Role), m.Node, m.Serial, idx)
			idx++
		}
	}
}

// FormatHistory writes `agentctl ha history`.
func FormatHistory(w io.Writer, h []Event) {
	if len(h) == 0 {
		fmt.Fprintln(w, "no events")
		return
	}
	for _, e := range h {
		line := fmt.Sprintf("%s  %-8s", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Kind)
		if e.VCluster != 0 {
			line += fmt.Sprintf("  vcluster %d", e.VCluster)
		}
		if e.Role != "" {
			line += fmt.Sprintf("  %s -> %s", e.Previous, e.Role)
		}
		line += "  " + e.Reason
		if e.TakeoverUs > 0 {
			line += fmt.Sprintf(" (first GARP %.3fms after the decision; MAC %.3fms, addresses %.3fms)",
				float64(e.TakeoverUs)/1000, float64(e.MACSetUs)/1000, float64(e.AddrsUs)/1000)
		}
		fmt.Fprintln(w, line)
	}
}

// FormatChecksums writes `agentctl ha checksum`.
func FormatChecksums(w io.Writer, c *Checksums) {
	for _, m := range c.Members {
		state := "in-sync"
		if !m.InSync {
			state = "out-of-sync"
		}
		fmt.Fprintf(w, "================== %s (%s) ==================\n", m.Node, m.Serial)
		fmt.Fprintf(w, "all: %s  generation %d  %s\n", m.Tree, m.Generation, state)
		paths := make([]string, 0, len(m.Paths))
		for p := range m.Paths {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for _, p := range paths {
			fmt.Fprintf(w, "    %s  %s\n", m.Paths[p], p)
		}
	}
}

// FormatExposure writes `agentctl ha exposure`.
func FormatExposure(w io.Writer, e *Exposure) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "KIND\tADDRESS\tETHERTYPE\tDIRECTION\tPURPOSE\n")
	for _, s := range e.Sockets {
		et := s.EtherType
		if et == "" {
			et = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Kind, s.Address, et, s.Direction, s.Purpose)
	}
	tw.Flush()
}

func enable(b bool) string {
	if b {
		return "enable"
	}
	return "disable"
}

func updown(b bool) string {
	if b {
		return "up"
	}
	return "down"
}

func title(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func rank(role string) int {
	switch role {
	case "primary":
		return 0
	case "secondary":
		return 1
	case "starting":
		return 2
	}
	return 3
}

func days(d time.Duration) string {
	d = d.Round(time.Second)
	day := d / (24 * time.Hour)
	d -= day * 24 * time.Hour
	h := d / time.Hour
	d -= h * time.Hour
	m := d / time.Minute
	d -= m * time.Minute
	return fmt.Sprintf("%d days %d:%02d:%02d", day, h, m, d/time.Second)
}

// FormatSessions prints `agentctl ha sessions`.
func FormatSessions(w io.Writer, s *sessionsync.Status) {
	if !s.Enabled {
		fmt.Fprintln(w, "Session pickup: disable")
		return
	}
	role := "receiving"
	if s.Sending {
		role = "sending (primary)"
	}
	if s.Mode == "fgsp" {
		role = "mode fgsp (every member sends and applies)"
	}
	health := "OK"
	if len(s.Problems) > 0 {
		health = "ERROR"
	} else if len(s.Warnings) > 0 {
		health = "WARN"
	}
	fmt.Fprintf(w, "Session pickup: enable, %s, health %s\n", role, health)
	for _, p := range s.Problems {
		fmt.Fprintf(w, "    %s\n", p)
	}
	for _, p := range s.Warnings {
		fmt.Fprintf(w, "    warning: %s\n", p)
	}
	for _, r := range s.Verify {
		fmt.Fprintf(w, "Last verify (%s): ", r.At.Format(time.RFC3339))
		FormatVerify(w, []sessionsync.VerifyResult{r}, 3)
	}
	if s.Holding {
		fmt.Fprintln(w, "    holding back (override) until the bulk copy is complete")
	}
	fmt.Fprintf(w, "Local flows: %d\n", s.LocalFlows)
	for _, p := range s.Peers {
		if p.Heartbeat != "" {
			fmt.Fprintf(w, "To %s (heartbeat %s): bulk %s %d/%d", p.Node, p.Heartbeat, p.Bulk.State, p.Bulk.Sent, p.Bulk.Total)
		} else {
			fmt.Fprintf(w, "To %s: bulk %s %d/%d", p.Node, p.Bulk.State, p.Bulk.Sent, p.Bulk.Total)
		}
		if p.Bulk.State == "done" {
			fmt.Fprintf(w, " in %s", p.Bulk.Duration.Round(time.Millisecond))
		}
		fmt.Fprintf(w, ", sent %d flows in %d messages, queued %d, lag %.1fms\n", p.SentFlows, p.SentMsgs, p.Queued, p.LagMs)
		if p.LastError != "" {
			fmt.Fprintf(w, "    last error: %s (%s)\n", p.LastError, p.LastErrorAt)
		}
	}
	for _, src := range s.Sources {
		fmt.Fprintf(w, "From %s: bulk %s %d flows", src.Node, src.Bulk.State, src.Bulk.Sent)
		if src.Bulk.State == "done" {
			fmt.Fprintf(w, " in %s", src.Bulk.Duration.Round(time.Millisecond))
		}
		fmt.Fprintf(w, ", %d copies held, %d records received\n", src.Copies, src.Received)
	}
	fmt.Fprintf(w, "Sender: events %d, filtered %d, overruns %d (repaired by bulk copies), refreshed %d, delayed %d, renewed %d\n",
		s.Events, s.Filtered, s.Overruns, s.Refreshed, s.Delayed, s.Renewed)
	if s.Mode == "fgsp" {
		fmt.Fprintf(w, "FGSP: echoes of applied flows not sent back %d, changes of learned flows sent %d\n", s.Echoes, s.LearnedSent)
	}
	formatDefer(w, s.Defer)
	fmt.Fprintf(w, "Receiver: messages %d, flows %d, applied %d, errors %d, malformed %d, stale removed %d\n",
		s.Messages, s.Received, s.Applied, s.Errors, s.Malformed, s.Swept)
	formatCounts(w, "    refused: %s: %d\n", s.ErrorReasons)
	formatCounts(w, "    applied without: %s: %d\n", s.ExtensionsLost)
	if s.LastError != "" {
		fmt.Fprintf(w, "    last error: %s (%s)\n", s.LastError, s.LastErrorAt)
	}
	formatSessionTrust(w, s)
	fmt.Fprintf(w, "Replication lag (event to applied): p50 %.3fms, p99 %.3fms, last %.3fms\n", s.LagP50Ms, s.LagP99Ms, s.LagLastMs)
	if c := s.Channel; c != nil {
		fmt.Fprintf(w, "Channel: link %s, frames tx %d rx %d, retransmits %d, failovers %d, dropped bad_auth %d replay %d malformed %d\n",
			c.ActiveLink, c.FramesSent, c.FramesReceived, c.Retransmits, c.Failovers, c.DroppedBadAuth, c.DroppedReplay, c.DroppedMalformed)
		for _, l := range c.Links {
			state := "up"
			switch {
			case !l.Up:
				state = "down"
			case !l.Alive:
				state = "not answering"
			}
			spread := ""
			if l.Spread {
				spread = ", load-balanced"
			}
			fmt.Fprintf(w, "    %s: %s%s, tx %d rx %d\n", l.Name, state, spread, l.Tx, l.Rx)
		}
	}
}

// formatVClusters writes the "vcluster 1" / "vcluster 2" blocks of a node
// running two virtual clusters (FortiOS get system ha status).
func formatVClusters(w io.Writer, s *Status) {
	for _, v := range s.VClusters {
		fmt.Fprintf(w, "vcluster %d: %s, priority %d, override %s, primary %s\n",
			v.VCluster, v.Role, v.Priority, enable(v.Override), orNone(v.Primary))
		if v.FailoverSet {
			fmt.Fprintf(w, "    ha failover: set\n")
		}
		if v.Fault != "" {
			fmt.Fprintf(w, "    fault: %s\n", v.Fault)
		}
		if v.Reason != "" {
			fmt.Fprintf(w, "    selected by: %s\n", v.Reason)
		}
		for _, m := range v.Members {
			fmt.Fprintf(w, "    %s: %s(%s), priority %d, monitor %d/%d\n", title(m.Role), m.Node, m.Serial, m.Priority, m.MonitorUp, m.MonitorTotal)
		}
		for _, i := range v.Interfaces {
			own := "not held"
			if i.Owned {
				own = "held"
			}
			fmt.Fprintf(w, "    vMAC %s: %s (%s) %s\n", i.Name, i.VMAC, own, strings.Join(i.Addresses, " "))
		}
		if v.ARPsRefresh != nil {
			fmt.Fprintf(w, "    %s\n", v.ARPsRefresh)
		}
		if v.LinkFailedSignal != nil {
			fmt.Fprintf(w, "    %s\n", v.LinkFailedSignal)
		}
		for _, l := range v.Monitor {
			fmt.Fprintf(w, "    monitor %s: %s\n", l.Name, updown(l.Up))
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// formatSessionTrust prints what the receiver refused before the table:
// records of peers not entitled, out of their scope or of its filter, the
// status bits and helpers a copy may not carry.
func formatSessionTrust(w io.Writer, s *sessionsync.Status) {
	senders := "every peer"
	if s.Senders != nil {
		senders = strings.Join(s.Senders, ", ")
	}
	if senders == "" {
		senders = "none"
	}
	fmt.Fprintf(w, "Trust: senders %s; refused %d, status masked %d, helpers removed %d, held %d\n",
		senders, s.RefusedTotal, s.StatusMasked, s.HelpersRemoved, s.Held)
	formatCounts(w, "    refused: %s: %d\n", s.Refused)
	if s.LastRefusal != "" {
		fmt.Fprintf(w, "    last refusal: %s\n", s.LastRefusal)
	}
}

// formatCounts prints the counters of m in the order of their names.
func formatCounts(w io.Writer, format string, m map[string]uint64) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, format, k, m[k])
	}
}

// FormatVerify prints `agentctl ha sessions verify`: "verify: in sync (N
// flows compared)", or per primary what differs and the first
// differences (at most max of them; 0: all the result names).
func FormatVerify(w io.Writer, rs []sessionsync.VerifyResult, max int) {
	inSync, n := true, 0
	for i := range rs {
		inSync = inSync && rs[i].InSync()
		n += rs[i].Compared
	}
	if inSync && len(rs) > 0 {
		fmt.Fprintf(w, "verify: in sync (%d flows compared)\n", n)
		return
	}
	for i := range rs {
		r := &rs[i]
		switch {
		case r.Error != "":
			fmt.Fprintf(w, "verify: with %s: not compared: %s\n", r.Peer, r.Error)
			continue
		case r.InSync():
			fmt.Fprintf(w, "verify: with %s: in sync (%d flows compared)\n", r.Peer, r.Compared)
			continue
		}
		fmt.Fprintf(w, "verify: with %s: differs: %d flows there, %d here; %d missing here, %d extra here, %d differing",
			r.Peer, r.Compared, r.Local, r.Missing, r.Extra, r.Differing)
		if r.Partial {
			fmt.Fprintf(w, " (counted in the buckets examined: %d of 256 differ)", r.DifferingBuckets)
		}
		if r.Persistent > 0 {
			fmt.Fprintf(w, "; %d for longer than the sync lag", r.Persistent)
		}
		fmt.Fprintln(w)
		for j, d := range r.First {
			if max > 0 && j >= max {
				break
			}
			fmt.Fprintf(w, "    %s: %s\n", d.What, d.Flow)
			for _, f := range d.Fields {
				fmt.Fprintf(w, "        %s\n", f)
			}
		}
	}
}

// String is the status line of the periodic re-announcement:
// "arps_refresh: 30s, last 12s ago, sent 4".
func (r *ARPsRefresh) String() string {
	last := "none yet"
	if r.LastAgoMs >= 0 {
		last = "last " + (time.Duration(r.LastAgoMs) * time.Millisecond).Round(100*time.Millisecond).String() + " ago"
	}
	return fmt.Sprintf("arps_refresh: %s, %s, sent %d", time.Duration(r.EveryMs)*time.Millisecond, last, r.Sent)
}

// String is its status line: "link_failed_signal: 2 sent, last 12s ago
// (port2)".
func (r *LinkFailedSignal) String() string {
	return fmt.Sprintf("link_failed_signal: %d sent, last %s ago (%s)", r.Count,
		(time.Duration(r.LastAgoMs) * time.Millisecond).Round(100*time.Millisecond), strings.Join(r.Ports, ", "))
}

// String is the management interface's status line: "Management
// interface: mgmt 02:…, permanent MAC, 10.8.0.11/24 via 10.8.0.1 (table
// 200, routed, put back 0 times)".
func (m *Mgmt) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Management interface: %s %s (own MAC, never a cluster address)", m.Interface, m.MAC)
	if len(m.Addresses) > 0 {
		fmt.Fprintf(&b, ", %s", strings.Join(m.Addresses, " "))
		if m.Gateway != "" {
			fmt.Fprintf(&b, " via %s", m.Gateway)
		}
		state := "routed"
		if !m.Routed {
			state = "NOT routed"
		}
		fmt.Fprintf(&b, " (table %d, %s, put back %d times)", m.Table, state, m.Restores)
	}
	if m.LastError != "" {
		fmt.Fprintf(&b, ": %s", m.LastError)
	}
	return b.String()
}
