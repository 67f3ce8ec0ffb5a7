package cluster

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// sim is an in-memory cluster: machines, a fake clock and a network that can
// cut links, lose single frames and kill nodes. Adverts are delivered
// synchronously. It models the LAN switch too: port is the node whose port
// the switch has learned the vMAC on, from the last takeover or announce.
type sim struct {
	t     *testing.T
	now   time.Time
	ival  time.Duration
	nodes map[string]*simNode
	order []string
	cut   map[string]bool // "a|b" with a<b
	// drop, when set, loses the heartbeat from → to for which it returns
	// true (one direction, one frame).
	drop func(from, to string) bool
	port string
	log  []string
}

type simNode struct {
	name      string
	m         *Machine
	dead      bool
	owns      bool      // holds the vMAC
	released  time.Time // when it last let the vMAC go
	announces int
	hooks     []Role
	stopped   bool
	lastSent  time.Time
	nextTick  time.Time
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// nodeSpec describes one member for newSim.
type nodeSpec struct {
	name     string
	serial   string
	priority uint8
	override bool
	monitor  int           // monitored links total (all up)
	startAt  time.Duration // offset of its start from t0
}

func labConfig() Config {
	return Config{
		HBInterval:       200 * time.Millisecond,
		LostThreshold:    6,
		HelloHolddown:    2 * time.Second,
		UptimeDiffMargin: 300 * time.Second,
	}
}

func newSim(t *testing.T, base Config, specs ...nodeSpec) *sim {
	t.Helper()
	s := &sim{t: t, now: t0, ival: base.HBInterval, nodes: map[string]*simNode{}, cut: map[string]bool{}}
	for _, sp := range specs {
		s.order = append(s.order, sp.name)
		s.nodes[sp.name] = &simNode{name: sp.name, dead: true}
	}
	for _, sp := range specs {
		if sp.startAt == 0 {
			s.start(base, sp)
		}
	}
	for _, sp := range specs {
		if sp.startAt > 0 {
			s.runUntil(t0.Add(sp.startAt))
			s.start(base, sp)
		}
	}
	return s
}

func (s *sim) start(base Config, sp nodeSpec) {
	cfg := base
	cfg.Name = sp.name
	cfg.Serial = sp.serial
	if cfg.Serial == "" {
		cfg.Serial = "SN-" + sp.name
	}
	cfg.Priority = sp.priority
	cfg.Override = sp.override
	cfg.MonitorTotal = sp.monitor
	n := s.nodes[sp.name]
	*n = simNode{name: sp.name, m: New(cfg, s.now), nextTick: s.now}
}

func linkKey(a, b string) string {
	if a > b {
		a, b = b, a
	}
	return a + "|" + b
}

func (s *sim) reachable(a, b string) bool {
	return !s.cut[linkKey(a, b)] && !s.nodes[a].dead && !s.nodes[b].dead
}

// broadcast delivers n's advert to every reachable peer, then processes
// everyone's Ready (which may broadcast again).
func (s *sim) broadcast(from *simNode) {
	adv := from.m.Advert()
	from.lastSent = s.now
	for _, name := range s.order {
		to := s.nodes[name]
		if to == from || to.m == nil || to.stopped || !s.reachable(from.name, name) {
			continue
		}
		if s.drop != nil && s.drop(from.name, name) {
			continue
		}
		if err := to.m.Step(Event{Type: EventHeartbeat, Time: s.now, Advert: adv}); err != nil {
			s.log = append(s.log, fmt.Sprintf("%s rejects %s: %v", name, from.name, err))
		}
	}
}

// process performs every pending action of every node until quiet.
func (s *sim) process() {
	for round := 0; round < 50; round++ {
		busy := false
		for _, name := range s.order {
			n := s.nodes[name]
			if n.m == nil || n.dead || !n.m.HasReady() {
				continue
			}
			busy = true
			send := false
			for _, a := range n.m.Ready().Actions {
				switch a.Type {
				case ActionTakeover:
					n.owns = true
					s.port = name
				case ActionRelease:
					n.owns = false
					n.released = s.now
				case ActionAnnounce:
					n.announces++
					s.port = name
					s.log = append(s.log, fmt.Sprintf("%s %s announces: %s", s.now.Sub(t0), name, a.Reason))
				case ActionHeartbeat:
					send = true
				case ActionRunHook:
					n.hooks = append(n.hooks, a.Role)
				case ActionStopped:
					n.stopped = true
				case ActionRoleChange:
					s.log = append(s.log, fmt.Sprintf("%s %s %s->%s: %s", s.now.Sub(t0), name, a.Previous, a.Role, a.Reason))
				}
			}
			if send {
				s.broadcast(n)
			}
		}
		if !busy {
			return
		}
	}
	s.t.Fatalf("actions never settle:\n%s", strings.Join(s.log, "\n"))
}

// runUntil advances the clock in 1 ms steps: nodes send their heartbeat
// every interval and tick at their deadlines, like the daemon does.
func (s *sim) runUntil(end time.Time) {
	for s.now.Before(end) {
		s.now = s.now.Add(time.Millisecond)
		for _, name := range s.order {
			n := s.nodes[name]
			if n.m == nil || n.dead || n.stopped {
				continue
			}
			tick := !s.now.Before(n.nextTick)
			if d := n.m.NextDeadline(); !d.IsZero() && !s.now.Before(d) {
				tick = true
			}
			if tick {
				if err := n.m.Step(Event{Type: EventTick, Time: s.now}); err != nil {
					s.t.Fatalf("%s tick: %v", name, err)
				}
			}
			if !s.now.Before(n.nextTick) {
				n.nextTick = s.now.Add(s.ival)
				s.broadcast(n)
			}
			s.process()
		}
		s.process()
	}
}

func (s *sim) run(d time.Duration) { s.runUntil(s.now.Add(d)) }

// kill makes a node vanish at once (a crash: no goodbye).
func (s *sim) kill(name string) { s.nodes[name].dead = true }

// event feeds one operator/link event to a node and settles.
func (s *sim) event(name string, ev Event) {
	ev.Time = s.now
	if err := s.nodes[name].m.Step(ev); err != nil {
		s.t.Fatalf("%s: %v", name, err)
	}
	s.process()
}

// primaries lists the live nodes whose role is primary.
func (s *sim) primaries() []string {
	var out []string
	for _, name := range s.order {
		n := s.nodes[name]
		if n.m != nil && !n.dead && !n.stopped && n.m.Role() == RolePrimary {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// owners lists the nodes that hold the vMAC.
func (s *sim) owners() []string {
	var out []string
	for _, name := range s.order {
		n := s.nodes[name]
		if n.owns && !n.dead {
			out = append(out, name)
		}
	}
	return out
}

// checkSingle asserts exactly one primary, the expected one, that it owns
// the vMAC alone, and that every live node agrees on it.
func (s *sim) checkSingle(want string) {
	s.t.Helper()
	if got := s.primaries(); len(got) != 1 || got[0] != want {
		s.t.Fatalf("primaries = %v, want [%s]\n%s", got, want, strings.Join(s.log, "\n"))
	}
	if got := s.owners(); len(got) != 1 || got[0] != want {
		s.t.Fatalf("vMAC owners = %v, want [%s]", got, want)
	}
	wantSerial := s.nodes[want].m.cfg.Serial
	for _, name := range s.order {
		n := s.nodes[name]
		if n.m == nil || n.dead || n.stopped {
			continue
		}
		if p := n.m.Status().Primary; p != wantSerial {
			s.t.Fatalf("%s sees primary %q, want %q", name, p, wantSerial)
		}
	}
}

func (s *sim) reason(name string) string { return s.nodes[name].m.Status().Reason }
