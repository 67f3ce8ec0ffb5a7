package agent

import (
	"testing"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/heartbeat"
)

// roleChanges counts n's role changes in its history, its start included.
func roleChanges(n *testNode) int {
	c := 0
	for _, e := range n.a.hist.list() {
		if e.Kind == "role" {
			c++
		}
	}
	return c
}

// TestMonitorFlapStormAgent: the primary's monitored port flaps down/up 30
// times in 50 ms through the link watcher. With the default
// monitor_holddown (1s) the storm costs the flapping member at most three
// role changes (start, failover, takeback once stable) and the status shows
// the held rise meanwhile. The control run with monitor_holddown 0 only
// prints its count: how many flaps turn into role changes there depends
// on heartbeat timing (61 in the machine-level replay, TestMonitorFlapStorm
// in cluster/).
func TestMonitorFlapStormAgent(t *testing.T) {
	for _, tc := range []struct {
		name     string
		holddown time.Duration // < 0: the default
	}{{"default", -1}, {"no hold-down", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			mem := heartbeat.NewMemNetwork()
			// 200 ms without heartbeats, not 60: a heartbeat lost under
			// load is not what this test counts (it added two role
			// changes to the default's count on a loaded machine).
			ca, cb := testConfigLost(t, "a", 200, false, 10), testConfigLost(t, "b", 100, false, 10)
			if tc.holddown >= 0 {
				ca.Cluster.MonitorHolddown, cb.Cluster.MonitorHolddown = tc.holddown, tc.holddown
			}
			a := startNode(t, mem, ca)
			b := startNode(t, mem, cb)
			eventually(t, 3*time.Second, "a primary", func() bool {
				return a.status(t).Role == "primary" && b.status(t).Role == "secondary"
			})
			eventually(t, time.Second, "watcher", func() bool { return a.links.set("port1", true) })
			start := time.Now()
			for i := 0; i < 30; i++ {
				a.links.set("port1", false)
				time.Sleep(800 * time.Microsecond)
				a.links.set("port1", true)
				time.Sleep(800 * time.Microsecond)
			}
			t.Logf("storm took %v", time.Since(start))
			if tc.holddown < 0 {
				st := a.status(t)
				if st.MonitorHeldUntil == nil || st.MonitorHeldUp != 1 {
					t.Errorf("status during the hold-down: held %d until %v", st.MonitorHeldUp, st.MonitorHeldUntil)
				}
			}
			eventually(t, 5*time.Second, "a primary again once stable", func() bool {
				return a.status(t).Role == "primary" && b.status(t).Role == "secondary"
			})
			time.Sleep(100 * time.Millisecond) // let late role changes land
			n := roleChanges(a)
			t.Logf("monitor_holddown %s: %d role changes on the flapping member, %d on its peer", ca.Cluster.MonitorHolddown, n, roleChanges(b))
			if tc.holddown < 0 && n > 3 {
				t.Fatalf("%d role changes with the default hold-down, want <= 3: %+v", n, a.a.hist.list())
			}
		})
	}
}

// TestPingFlipTimeout: after a failover decided on monitored items, the
// new primary's pingserver targets going down count as up until it has
// been primary for flip_timeout; a monitored link counts at once; a role
// change on another criterion opens no window; leaving the primary role
// closes it.
func TestPingFlipTimeout(t *testing.T) {
	cfg := testConfig(t, "a", 200, false)
	cfg.Cluster.PingServer.FlipTimeout = time.Minute
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := cluster.New(cluster.Config{Name: "a", Serial: "SN-a", MonitorTotal: 2, HBInterval: 20 * time.Millisecond, LostThreshold: 3}, t0)
	_ = m.Step(cluster.Event{Type: cluster.EventTick, Time: t0})
	if m.Role() != cluster.RolePrimary {
		t.Fatalf("machine role %s", m.Role())
	}
	v := &vcluster{id: 1, sec: 1, m: m, monitor: map[string]bool{}}
	monitored := []string{"port1", "port1>10.9.0.254"}
	took := t0.Add(time.Second)
	v.startFlip(cfg, cluster.Action{Type: cluster.ActionRoleChange, Time: took, Role: cluster.RolePrimary,
		Reason: "a is selected as the primary because it has the most connected monitored interfaces"})
	if !v.flipUntil.Equal(took.Add(time.Minute)) {
		t.Fatalf("flip window until %v", v.flipUntil)
	}
	v.monitor["port1>10.9.0.254"] = false
	if n, held := v.monitorUp(monitored, took.Add(time.Second)); n != 2 || held != 1 {
		t.Fatalf("target down inside the window: %d up, %d held; want 2, 1", n, held)
	}
	v.monitor["port1"] = false
	if n, held := v.monitorUp(monitored, took.Add(time.Second)); n != 1 || held != 1 {
		t.Fatalf("link down inside the window: %d up, %d held; want 1, 1", n, held)
	}
	if n, held := v.monitorUp(monitored, took.Add(time.Minute)); n != 0 || held != 0 {
		t.Fatalf("after the window: %d up, %d held; want 0, 0", n, held)
	}
	// Leaving the primary role closes the window at once.
	v.startFlip(cfg, cluster.Action{Type: cluster.ActionRoleChange, Time: took.Add(2 * time.Second), Role: cluster.RoleSecondary})
	if !v.flipUntil.Equal(took.Add(2 * time.Second)) {
		t.Fatalf("window not closed on leaving primary: %v", v.flipUntil)
	}
	// A takeover on priority (not a failover) opens none.
	v.flipUntil = time.Time{}
	v.startFlip(cfg, cluster.Action{Type: cluster.ActionRoleChange, Time: took, Role: cluster.RolePrimary,
		Reason: "a is selected as the primary because it has the largest value of priority"})
	if !v.flipUntil.IsZero() {
		t.Fatalf("window opened by a priority takeover: %v", v.flipUntil)
	}
}

// TestOverrideWaitTimeAgent: cluster.override_wait_time reaches the
// election: node a (override, higher priority) returns to a cluster where b
// serves, stays secondary with its status naming the wait, and takes the
// role once the wait is over.
func TestOverrideWaitTimeAgent(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	const wait = 600 * time.Millisecond
	ca, cb := testConfig(t, "a", 200, true), testConfig(t, "b", 100, true)
	ca.Cluster.OverrideWaitTime, cb.Cluster.OverrideWaitTime = wait, wait
	b := startNode(t, mem, cb)
	eventually(t, 3*time.Second, "b primary alone", func() bool { return b.status(t).Role == "primary" })
	a := startNode(t, mem, ca)
	eventually(t, 3*time.Second, "a secondary, waiting", func() bool {
		st := a.status(t)
		return st.Role == "secondary" && st.OverrideWaitUntil != nil
	})
	if b.status(t).Role != "primary" {
		t.Fatal("b lost the role while a waits")
	}
	eventually(t, 5*time.Second, "a primary after override_wait_time", func() bool {
		return a.status(t).Role == "primary" && b.status(t).Role == "secondary"
	})
	var started, took time.Time
	for _, e := range a.a.hist.list() {
		switch {
		case e.Kind == "start":
			started = e.Time
		case e.Kind == "role" && e.Role == "primary":
			took = e.Time
		}
	}
	t.Logf("measured: a took the role %v after it started (override_wait_time %s)", took.Sub(started).Round(time.Millisecond), wait)
}
