package cluster

import (
	"strings"
	"testing"
	"time"
)

// roleChanges counts the role changes of node name in the sim's log, its
// start (starting → primary) included.
func (s *sim) roleChanges(name string) int {
	n := 0
	for _, l := range s.log {
		if f := strings.Fields(l); len(f) > 2 && f[1] == name && strings.Contains(f[2], "->") {
			n++
		}
	}
	return n
}

// TestMonitorFlapStorm replays the storm of the field report: the primary's
// monitored port flaps down/up 30 times in 50 ms. Without a hold-down every
// flap is a failover and a takeback; with monitor_holddown at its default
// (1s, config.DefaultMonitorHolddown) the first fall fails over at once and
// the member comes back once, after the port has been stable for the
// hold-down: at most 3 role changes on it, its start included.
func TestMonitorFlapStorm(t *testing.T) {
	for _, tc := range []struct {
		name     string
		holddown time.Duration
		max      int
	}{
		{"no hold-down", 0, 1000},
		{"default 1s", time.Second, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := labConfig()
			cfg.MonitorHolddown = tc.holddown
			s := newSim(t, cfg, nodeSpec{name: "a", priority: 200, monitor: 2}, nodeSpec{name: "b", priority: 100, monitor: 2})
			s.run(3 * time.Second)
			s.checkSingle("a")
			stormStart := s.now
			for i := 0; i < 30; i++ {
				// 30 down/up in 50 ms: about 0.8 ms down, 0.8 ms up.
				s.event("a", Event{Type: EventMonitor, MonitorUp: 1})
				s.now = s.now.Add(800 * time.Microsecond)
				s.event("a", Event{Type: EventMonitor, MonitorUp: 2})
				s.now = s.now.Add(800 * time.Microsecond)
			}
			if s.now.Sub(stormStart) > 50*time.Millisecond {
				t.Fatalf("storm lasted %s", s.now.Sub(stormStart))
			}
			if tc.holddown > 0 {
				s.run(tc.holddown / 2)
				s.checkSingle("b") // still held down
			}
			s.run(tc.holddown + 2*cfg.HBInterval)
			s.checkSingle("a") // stable again: priority takes it back
			n := s.roleChanges("a")
			t.Logf("monitor_holddown %s: %d role changes on the flapping member (b: %d)", tc.holddown, n, s.roleChanges("b"))
			if n > tc.max {
				t.Fatalf("%d role changes, want <= %d\n%s", n, tc.max, strings.Join(s.log, "\n"))
			}
			if tc.holddown == 0 && n < 10 {
				t.Fatalf("control: without hold-down only %d role changes; the storm is not reproduced", n)
			}
		})
	}
}

// TestMonitorHolddownFallAtOnce: a fall counts at once whatever the
// hold-down (fast failover stays), a rise only after the count held still.
func TestMonitorHolddownFallAtOnce(t *testing.T) {
	cfg := labConfig()
	cfg.MonitorHolddown = 5 * time.Second
	cfg.MonitorTotal = 2
	m := New(cfg, t0)
	now := t0.Add(time.Second)
	if err := m.Step(Event{Type: EventMonitor, Time: now, MonitorUp: 0}); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(); st.MonitorUp != 0 {
		t.Fatalf("fall not counted at once: %d", st.MonitorUp)
	}
	_ = m.Step(Event{Type: EventMonitor, Time: now, MonitorUp: 2})
	st := m.Status()
	if st.MonitorUp != 0 || st.MonitorHeld != 2 || !st.MonitorHeldUntil.Equal(now.Add(5*time.Second)) {
		t.Fatalf("rise: up %d held %d until %v", st.MonitorUp, st.MonitorHeld, st.MonitorHeldUntil)
	}
	if d := m.NextDeadline(); d.After(now.Add(5 * time.Second)) {
		t.Fatalf("NextDeadline %v misses the hold-down end", d)
	}
	// A partial fall during the hold-down restarts it.
	_ = m.Step(Event{Type: EventMonitor, Time: now.Add(4 * time.Second), MonitorUp: 1})
	_ = m.Step(Event{Type: EventTick, Time: now.Add(6 * time.Second)})
	if st := m.Status(); st.MonitorUp != 0 {
		t.Fatalf("rise counted before the restarted hold-down: %d", st.MonitorUp)
	}
	_ = m.Step(Event{Type: EventTick, Time: now.Add(9 * time.Second)})
	if st := m.Status(); st.MonitorUp != 1 || st.MonitorHeld != 0 {
		t.Fatalf("after hold-down: up %d held %d", st.MonitorUp, st.MonitorHeld)
	}
}

// TestOverrideWaitTime: with override on, a higher-priority member that
// returns waits override_wait_time before it takes the role back from the
// serving primary; a member with more monitored links does not wait.
func TestOverrideWaitTime(t *testing.T) {
	cfg := labConfig()
	cfg.OverrideWaitTime = 10 * time.Second
	s := newSim(t, cfg, nodeSpec{name: "a", priority: 200, override: true, monitor: 1, startAt: 5 * time.Second},
		nodeSpec{name: "b", priority: 100, override: true, monitor: 1})
	s.run(3 * time.Second)
	s.checkSingle("b")
	back := s.now
	s.run(5 * time.Second)
	s.checkSingle("b") // a is back and wins by priority, but waits
	if st := s.nodes["a"].m.Status(); st.Role != RoleSecondary || st.OverrideWaitUntil.IsZero() {
		t.Fatalf("a waiting: role %s, wait until %v", st.Role, st.OverrideWaitUntil)
	}
	s.runUntil(back.Add(cfg.OverrideWaitTime + 2*cfg.HBInterval))
	s.checkSingle("a")
	// a's link fails: b wins by monitored links and takes over at once,
	// no wait.
	s.event("a", Event{Type: EventMonitor, MonitorUp: 0})
	s.run(cfg.HBInterval)
	s.checkSingle("b")
	// a's link returns: it wins by priority again and waits once more.
	s.event("a", Event{Type: EventMonitor, MonitorUp: 1})
	s.run(5 * time.Second)
	s.checkSingle("b")
	s.run(cfg.OverrideWaitTime)
	s.checkSingle("a")
}
