package agent

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/sessionsync"
)

// Session pickup with two virtual clusters: each vcluster's primary sends
// the flows of its vcluster, so both nodes may send at once. A flow is
// vcluster 2's when one of its addresses is inside a subnet of vcluster
// 2's interfaces (cluster.vcluster2.interfaces[].addresses), vcluster 1's
// otherwise. The engine's scope (sessionsync.Engine.SetScope) is the set
// of vclusters this node is primary of; the other flows in its table are
// copies, which a received bulk copy may sweep, never its own.

// updateVCSessions is updateSessions for a node running two vclusters:
// primary while primary of either, copying to the live members that are
// not primary of a vcluster it is primary of.
func (a *Agent) updateVCSessions() {
	s := a.sess
	var owned []int
	var peers []string
	for _, v := range a.vcs {
		if v.m.Role() != cluster.RolePrimary {
			continue
		}
		owned = append(owned, v.sec)
		for _, m := range v.m.Status().Members {
			// As updateSessions: a member already copied to that starts
			// claiming primary keeps the stream until this node lets go.
			if !m.Self && m.Alive && (m.Role != cluster.RolePrimary || slices.Contains(s.peers, m.Name)) && !slices.Contains(peers, m.Name) {
				peers = append(peers, m.Name)
			}
		}
	}
	slices.Sort(peers)
	if !slices.Equal(owned, a.sessOwned) {
		a.setSessionScope(owned)
	}
	primary := len(owned) > 0
	if primary != s.primary || !slices.Equal(peers, s.peers) {
		s.primary, s.peers = primary, peers
		s.e.SetRole(primary, peers)
	}
}

// updateSessionSenders tells the engine which peers may send it session
// records (sessionsync.Engine.SetSenders): in a-p mode the live members
// that claim primary, each for the flows of the vclusters it claims it in
// (the flows of both with one vcluster); in fgsp every live peer, for
// every flow. The engine keeps a lost entitlement for its grace period
// (a takeover applies the last copies of the member it replaces) and holds
// what a peer not entitled yet sends (its first heartbeat may be processed
// after its bulk copy arrived). Runs on the run goroutine; tells the
// engine only of changes.
func (a *Agent) updateSessionSenders() {
	s := a.sess
	secs := map[string][]int{}
	var names []string
	for _, v := range a.vcs {
		for _, m := range v.m.Status().Members {
			if m.Self || !m.Alive || (!s.fgsp && m.Role != cluster.RolePrimary) {
				continue
			}
			if _, ok := secs[m.Name]; !ok {
				names = append(names, m.Name)
			}
			if !slices.Contains(secs[m.Name], v.sec) {
				secs[m.Name] = append(secs[m.Name], v.sec)
			}
		}
	}
	slices.Sort(names)
	multi := len(a.vcs) > 1 && !s.fgsp
	var vc2 []netip.Prefix
	key := ""
	if multi {
		vc2 = a.vc2Subnets()
		key = fmt.Sprint(vc2)
	}
	for _, n := range names {
		slices.Sort(secs[n])
		key += fmt.Sprintf(" %q%v", n, secs[n])
	}
	if key == s.sendersKey {
		return
	}
	s.sendersKey = key
	senders := sessionsync.Senders{}
	for _, n := range names {
		set := secs[n]
		if !multi || len(set) == len(a.vcs) {
			senders[n] = nil // every flow
			continue
		}
		senders[n] = func(f *sessionsync.Flow) bool { return slices.Contains(set, flowSection(f, vc2)) }
	}
	s.e.SetSenders(senders)
}

// sessionsRelease narrows the scope before v's addresses go (their
// removal destroys v's masqueraded flows here, and those destroy events
// must not reach v's new primary); with no vcluster left it stops sending.
func (a *Agent) sessionsRelease(v *vcluster) {
	if a.sess == nil {
		return
	}
	owned := slices.DeleteFunc(slices.Clone(a.sessOwned), func(sec int) bool { return sec == v.sec })
	a.setSessionScope(owned)
	if len(owned) == 0 {
		a.sessionsStopSending()
	}
}

// setSessionScope makes the engine send (and keep through a bulk copy's
// sweep) the flows of the vclusters (sections) in owned.
func (a *Agent) setSessionScope(owned []int) {
	a.sessOwned = owned
	vc2 := a.vc2Subnets()
	set := slices.Clone(owned)
	a.sess.e.SetScope(func(f *sessionsync.Flow) bool { return slices.Contains(set, flowSection(f, vc2)) })
}

// sectionFlows selects the flows of vcluster section sec.
func (a *Agent) sectionFlows(sec int) func(*sessionsync.Flow) bool {
	vc2 := a.vc2Subnets()
	return func(f *sessionsync.Flow) bool { return flowSection(f, vc2) == sec }
}

// vc2Subnets are the subnets of vcluster 2's interfaces.
func (a *Agent) vc2Subnets() []netip.Prefix {
	var vc2 []netip.Prefix
	for _, ifc := range a.config().Cluster.Section(2).Interfaces {
		for _, p := range ifc.Addresses {
			vc2 = append(vc2, p.Masked())
		}
	}
	return vc2
}

// flowSection is the vcluster (section) a flow belongs to: 2 when one of
// its addresses is in vc2, the subnets of vcluster 2's interfaces, else 1.
func flowSection(f *sessionsync.Flow, vc2 []netip.Prefix) int {
	for _, p := range vc2 {
		if p.Contains(f.Orig.Src) || p.Contains(f.Orig.Dst) || p.Contains(f.Reply.Src) || p.Contains(f.Reply.Dst) {
			return 2
		}
	}
	return 1
}

// The returning-override hold (sessionHold) over every vcluster: a node
// with override in a vcluster holds back there (failover set) until its
// bulk copy is in.

// holdsOverride reports whether a starting node holds back for its bulk
// copy: it has override in one of its vclusters.
func holdsOverride(cfg *config.Config) bool {
	return cfg.Node.Override || (cfg.Cluster.VCluster2.Enabled && cfg.Node.VCluster2.Override)
}

// overrides reports whether v runs with override on this node.
func (v *vcluster) overrides(cfg *config.Config) bool {
	if v.sec == 2 {
		return cfg.Node.VCluster2.Override
	}
	return cfg.Node.Override
}

// holdPeer returns a live peer that claims primary in a vcluster: the one
// the bulk copy comes from.
func (a *Agent) holdPeer() (bool, string) {
	for _, v := range a.vcs {
		for _, m := range v.m.Status().Members {
			if !m.Self && m.Alive && m.Role == cluster.RolePrimary {
				return true, m.Name
			}
		}
	}
	return false, ""
}

// holdDecided reports whether an election has placed this node beyond
// waiting (primary or fault in a vcluster).
func (a *Agent) holdDecided() bool {
	for _, v := range a.vcs {
		if r := v.m.Role(); r != cluster.RoleStarting && r != cluster.RoleSecondary {
			return true
		}
	}
	return false
}

// holdStep sets (or ends) the hold's failover in every vcluster this node
// has override in; an operator's `ha failover set` stays.
func (a *Agent) holdStep(set bool, now time.Time) {
	cfg := a.config()
	for _, v := range a.vcs {
		if !v.overrides(cfg) {
			continue
		}
		if set {
			_ = v.m.Step(cluster.Event{Type: cluster.EventFailoverSet, Time: now})
		} else if !v.operatorFailoverSet {
			_ = v.m.Step(cluster.Event{Type: cluster.EventFailoverUnset, Time: now})
		}
	}
	a.process()
}
