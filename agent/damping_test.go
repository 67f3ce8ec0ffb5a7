package agent

import (
	"testing"
	"time"

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
			ca, cb := testConfig(t, "a", 200, false), testConfig(t, "b", 100, false)
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
