package bench

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/test/lab"
	"github.com/hagent/hagent/test/proc"
)

// system is one HA implementation driven in a two-node lab: it starts a
// cluster, injects faults into the current primary and restores the node
// afterwards. Roles alternate: the survivor stays primary (hagent with a
// small uptime_diff_margin, keepalived with nopreempt), so a repetition
// only restarts the failed node.
type system interface {
	name() string
	start() error
	stop()
	// roles returns the current primary and secondary once the cluster is
	// stable.
	roles() (p, s *lab.Node, err error)
	isPrimary(n *lab.Node) bool
	inject(kind string, n *lab.Node) error
	restore(kind string, n *lab.Node) error
	// takeover returns the new primary's decision time and takeover path
	// (decision → first GARP) for a takeover after since.
	takeover(n *lab.Node, since time.Time) (at time.Time, us int64, ok bool)
	pids(n *lab.Node) []int
}

func nodesOf(l *lab.Lab) []*lab.Node { return []*lab.Node{l.Nodes["node-a"], l.Nodes["node-b"]} }

// hagentSys runs hagentd on both nodes.
type hagentSys struct {
	l      *lab.Lab
	params map[string]lab.Params
}

func newHagent(l *lab.Lab, ival time.Duration, thr int, realtime bool) *hagentSys {
	base := lab.Params{
		HBInterval: ival, LostThreshold: thr, Monitor: true, NoIPv6: true, Realtime: realtime,
		// Short hello so a restarted node joins quickly; a small uptime
		// margin so that the survivor's larger uptime keeps it primary (no
		// failback after a repetition: a restarted node, or one whose
		// monitored link failed, has an uptime of 0).
		HelloHolddown: 500 * time.Millisecond, UptimeMargin: 100 * time.Millisecond,
	}
	pa, pb := base, base
	pa.Priority, pb.Priority = 200, 100
	return &hagentSys{l: l, params: map[string]lab.Params{"node-a": pa, "node-b": pb}}
}

// newHagentDirect is newHagent with every hbdev direct: true (the lab's
// hb links must be cables, not a switch).
func newHagentDirect(l *lab.Lab, ival time.Duration, thr int) *hagentSys {
	h := newHagent(l, ival, thr, false)
	for name, p := range h.params {
		p.Direct = true
		h.params[name] = p
	}
	return h
}

func (h *hagentSys) name() string { return "hagent" }

func (h *hagentSys) start() error {
	a, b := nodesOf(h.l)[0], nodesOf(h.l)[1]
	for _, n := range nodesOf(h.l) {
		if err := n.Revive(); err != nil {
			return err
		}
	}
	if err := a.Start(h.params[a.Name]); err != nil {
		return fmt.Errorf("%s: %w", a.Name, err)
	}
	if err := lab.Eventually(10*time.Second, func() error {
		if r := a.Role(); r != "primary" {
			return fmt.Errorf("node-a is %q", r)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := b.Start(h.params[b.Name]); err != nil {
		return fmt.Errorf("%s: %w", b.Name, err)
	}
	_, _, err := h.roles()
	return err
}

// stop stops the secondary, then the primary (which then has no peer to
// hand over to and just releases).
func (h *hagentSys) stop() {
	ns := nodesOf(h.l)
	if ns[0].Role() == "primary" {
		ns[0], ns[1] = ns[1], ns[0]
	}
	for _, n := range ns {
		_ = n.Stop(5 * time.Second)
	}
}

// roles waits until one node is primary and the other secondary following
// it, on two consecutive looks.
func (h *hagentSys) roles() (p, s *lab.Node, err error) {
	ns := nodesOf(h.l)
	good := 0
	err = lab.Eventually(20*time.Second, func() error {
		var st [2]*control.Status
		for i, n := range ns {
			x, err := n.Status()
			if err != nil {
				good = 0
				return fmt.Errorf("%s: %w", n.Name, err)
			}
			st[i] = x
		}
		switch {
		case st[0].Role == "primary" && st[1].Role == "secondary" && st[1].Primary == ns[0].Name:
			p, s = ns[0], ns[1]
		case st[1].Role == "primary" && st[0].Role == "secondary" && st[0].Primary == ns[1].Name:
			p, s = ns[1], ns[0]
		default:
			good = 0
			return fmt.Errorf("roles %s/%s (primary per b: %q, per a: %q)", st[0].Role, st[1].Role, st[1].Primary, st[0].Primary)
		}
		if good++; good < 3 {
			return errors.New("settling")
		}
		return nil
	})
	return p, s, err
}

func (h *hagentSys) isPrimary(n *lab.Node) bool { return n.Role() == "primary" }

func (h *hagentSys) inject(kind string, n *lab.Node) error {
	switch kind {
	case Crash:
		err := linksDown(n)
		n.Kill()
		return err
	case Graceful:
		return n.Stop(5 * time.Second)
	case FailoverSet:
		if out, err := n.Ctl("ha", "failover", "set"); err != nil {
			return fmt.Errorf("ha failover set: %v: %s", err, out)
		}
	case Link:
		return n.SetLink("port1", false)
	default:
		return fmt.Errorf("unknown scenario %q", kind)
	}
	return nil
}

func (h *hagentSys) restore(kind string, n *lab.Node) error {
	switch kind {
	case Crash:
		if err := n.Revive(); err != nil {
			return err
		}
		if err := n.Start(h.params[n.Name]); err != nil {
			return err
		}
	case Graceful:
		if err := n.Start(h.params[n.Name]); err != nil {
			return err
		}
	case FailoverSet:
		if out, err := n.Ctl("ha", "failover", "unset"); err != nil {
			return fmt.Errorf("ha failover unset: %v: %s", err, out)
		}
	case Link:
		if err := n.SetLink("port1", true); err != nil {
			return err
		}
	}
	_, _, err := h.roles()
	return err
}

func (h *hagentSys) takeover(n *lab.Node, since time.Time) (time.Time, int64, bool) {
	var evs []control.Event
	if err := control.Call(n.Socket, control.CmdHistory, &evs, 2*time.Second); err != nil {
		return time.Time{}, 0, false
	}
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		if e.Kind == "takeover" && !e.Time.Before(since) {
			return e.Time, e.TakeoverUs, true
		}
	}
	return time.Time{}, 0, false
}

func (h *hagentSys) pids(n *lab.Node) []int {
	pids, _ := proc.FindPIDs("hagentd", n.ConfigPath())
	return pids
}

// roleChanges counts role events in a node's history after since.
func roleChanges(n *lab.Node, since time.Time) (int, []string, error) {
	var evs []control.Event
	if err := control.Call(n.Socket, control.CmdHistory, &evs, 2*time.Second); err != nil {
		return 0, nil, err
	}
	c := 0
	var what []string
	for _, e := range evs {
		if e.Kind == "role" && e.Time.After(since) {
			c++
			what = append(what, fmt.Sprintf("%s %s→%s: %s", e.Time.Format("15:04:05.000"), e.Previous, e.Role, e.Reason))
		}
	}
	return c, what, nil
}

// keepalivedSys runs keepalived (VRRPv3) on both nodes: equal priority
// 100 (skew time 0.61 × advert_int, as the reference numbers),
// nopreempt, adverts on ha1 like hagent's heartbeats, port1 tracked.
type keepalivedSys struct {
	l  *lab.Lab
	p  lab.KeepalivedParams
	ka map[string]*lab.Keepalived
}

func newKeepalived(l *lab.Lab, ival time.Duration) *keepalivedSys {
	return &keepalivedSys{l: l, ka: map[string]*lab.Keepalived{},
		p: lab.KeepalivedParams{AdvertInt: ival, Priority: 100, NoPreempt: true, TrackPort1: true}}
}

// newKeepalivedDirect is newKeepalived for adverts on a direct cable:
// without dont_track_primary the backup faults when the cable loses
// carrier at the primary's crash and never takes over (seen in the first
// run of the direct rows).
func newKeepalivedDirect(l *lab.Lab, ival time.Duration) *keepalivedSys {
	k := newKeepalived(l, ival)
	k.p.DontTrackPrimary = true
	return k
}

func (k *keepalivedSys) name() string { return "keepalived" }

func (k *keepalivedSys) startNode(n *lab.Node) error {
	ka, err := n.StartKeepalived(k.p)
	if err != nil {
		return fmt.Errorf("keepalived on %s: %w", n.Name, err)
	}
	k.ka[n.Name] = ka
	return nil
}

func (k *keepalivedSys) start() error {
	a, b := nodesOf(k.l)[0], nodesOf(k.l)[1]
	for _, n := range nodesOf(k.l) {
		n.FlushClusterAddr()
		if err := n.Revive(); err != nil {
			return err
		}
	}
	if err := k.startNode(a); err != nil {
		return err
	}
	if err := lab.Eventually(10*time.Second+5*k.p.AdvertInt, func() error {
		if st := k.ka[a.Name].State(); st != "MASTER" {
			return fmt.Errorf("node-a is %q", st)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := k.startNode(b); err != nil {
		return err
	}
	_, _, err := k.roles()
	return err
}

func (k *keepalivedSys) stop() {
	for _, ka := range k.ka {
		_ = ka.Stop(5 * time.Second)
	}
	for _, n := range nodesOf(k.l) {
		n.FlushClusterAddr()
	}
}

func (k *keepalivedSys) state(n *lab.Node) string {
	ka := k.ka[n.Name]
	if ka == nil || !ka.Running() {
		return "DOWN"
	}
	return ka.State()
}

// roles waits for one MASTER and one BACKUP, then for two advert intervals
// more so that the backup has heard the master.
func (k *keepalivedSys) roles() (p, s *lab.Node, err error) {
	ns := nodesOf(k.l)
	err = lab.Eventually(20*time.Second, func() error {
		a, b := k.state(ns[0]), k.state(ns[1])
		switch {
		case a == "MASTER" && b == "BACKUP":
			p, s = ns[0], ns[1]
		case b == "MASTER" && a == "BACKUP":
			p, s = ns[1], ns[0]
		default:
			return fmt.Errorf("states %s/%s", a, b)
		}
		return nil
	})
	if err == nil {
		time.Sleep(max(2*k.p.AdvertInt, 50*time.Millisecond))
	}
	return p, s, err
}

func (k *keepalivedSys) isPrimary(n *lab.Node) bool { return k.state(n) == "MASTER" }

func (k *keepalivedSys) inject(kind string, n *lab.Node) error {
	ka := k.ka[n.Name]
	switch kind {
	case Crash:
		err := linksDown(n)
		ka.Kill()
		return err
	case Graceful:
		return ka.Stop(5 * time.Second)
	case Link:
		return n.SetLink("port1", false)
	default:
		return fmt.Errorf("keepalived has no %q scenario", kind)
	}
}

func (k *keepalivedSys) restore(kind string, n *lab.Node) error {
	switch kind {
	case Crash:
		n.FlushClusterAddr() // a rebooted box has no VIP
		if err := n.Revive(); err != nil {
			return err
		}
		if err := k.startNode(n); err != nil {
			return err
		}
	case Graceful:
		if err := k.startNode(n); err != nil {
			return err
		}
	case Link:
		if err := n.SetLink("port1", true); err != nil {
			return err
		}
	}
	_, _, err := k.roles()
	return err
}

func (k *keepalivedSys) takeover(*lab.Node, time.Time) (time.Time, int64, bool) {
	return time.Time{}, 0, false
}

func (k *keepalivedSys) pids(n *lab.Node) []int {
	if ka := k.ka[n.Name]; ka != nil {
		return ka.PIDs()
	}
	return nil
}

func (k *keepalivedSys) kill() {
	for _, ka := range k.ka {
		ka.Kill()
	}
}

// tail returns the last log lines of both nodes, for failure messages.
func tail(sys system, l *lab.Lab) string {
	var b strings.Builder
	for _, n := range nodesOf(l) {
		switch s := sys.(type) {
		case *hagentSys:
			fmt.Fprintf(&b, "--- %s hagentd\n%s\n", n.Name, n.Tail(15))
		case *keepalivedSys:
			if ka := s.ka[n.Name]; ka != nil {
				fmt.Fprintf(&b, "--- %s keepalived\n%s\n", n.Name, ka.Tail(15))
			}
		}
	}
	return b.String()
}
