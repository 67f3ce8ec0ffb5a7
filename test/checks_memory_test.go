package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// writeMeminfo writes a meminfo file with MemTotal 16 GB and the given
// MemAvailable (kB), atomically (the check may read at any moment).
func writeMeminfo(t *testing.T, path string, availKB int) {
	t.Helper()
	body := fmt.Sprintf("MemTotal:       16000000 kB\nMemFree:         %d kB\nMemAvailable:   %d kB\n", availKB/2, availKB)
	if err := os.WriteFile(path+".tmp", []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// checkFailoverTime prints how long a check's failover took after its
// cause and fails beyond fall × interval + one heartbeat interval, or
// before fall runs could have failed.
func checkFailoverTime(t *testing.T, what, cause string, took, interval time.Duration, fall int) {
	t.Helper()
	bound := time.Duration(fall)*interval + hbInterval
	t.Logf("measured: %s %v after %s (fall %d x interval %v + hb_interval %v = %v)",
		what, took.Round(time.Millisecond), cause, fall, interval, hbInterval, bound)
	// The first failing run comes at most one interval after the cause,
	// the fall-th (fall-1) intervals later, so (fall-2) intervals is a
	// floor.
	if took < time.Duration(fall-2)*interval {
		t.Errorf("failover after %v: before fall failed runs", took)
	}
	if took > bound+300*time.Millisecond { // 300ms: the runs themselves and a loaded machine
		t.Errorf("failover after %v, beyond fall x interval + hb_interval (%v)", took, bound)
	}
}

// TestMemoryCheckFailover: the memory check (memory: {threshold: 90%},
// FGCP memory-based failover) reads an injected meminfo on each member
// (HAGENT_TEST_MEMINFO, the agent's test seam). The primary's reading
// going to 95% in use moves the primary role to the other member within
// fall × interval + one heartbeat interval; back to 50%, the role comes
// back after rise (and the monitor hold-down). Status and history name
// the check.
func TestMemoryCheckFailover(t *testing.T) {
	l, a, b := twoNodes(t)
	const (
		interval = 200 * time.Millisecond
		fall     = 3
		rise     = 2
	)
	files := map[string]string{}
	for _, n := range []*lab.Node{a, b} {
		files[n.Name] = filepath.Join(l.Dir, n.Name+".meminfo")
		writeMeminfo(t, files[n.Name], 8000000) // 50% in use
		n.Env = append(n.Env, "HAGENT_TEST_MEMINFO="+files[n.Name])
	}
	checks := fmt.Sprintf("checks:\n  - name: mem\n    memory: {threshold: 90%%}\n    interval: %s\n    fall: %d\n    rise: %d\n", interval, fall, rise)
	pa, pb := params(200, true), params(100, true)
	pa.ClusterExtra, pb.ClusterExtra = checks, checks
	start(t, a, pa)
	start(t, b, pb)
	eventually(t, 10*time.Second, "initial election", func() error { return agree("node-a", a, b) })
	eventually(t, 5*time.Second, "the memory check has passed on node-a", func() error {
		st := status(t, a)
		if len(st.Checks) != 1 || st.Checks[0].Kind != "memory" || st.Checks[0].Last != "pass" ||
			!strings.Contains(st.Checks[0].Output, "50.0% of memory in use") {
			return fmt.Errorf("checks %+v", st.Checks)
		}
		return nil
	})

	writeMeminfo(t, files["node-a"], 800000) // 95% in use
	cut := time.Now()
	poll(t, 5*time.Second, 10*time.Millisecond, "node-b takes over on node-a's memory", func() error { return agree("node-b", a, b) })
	checkFailoverTime(t, "memory check failover", "the reading went to 95%", time.Since(cut), interval, fall)
	st := status(t, a)
	if c := st.Checks[0]; c.State != "down" || c.Last != "fail" || !strings.Contains(c.Output, "95.0% of memory in use (threshold 90%)") {
		t.Errorf("node-a's memory check %+v", c)
	}
	if !strings.Contains(st.Reason, "health check mem down") {
		t.Errorf("node-a's reason %q does not name the check", st.Reason)
	}
	// node-b reads its own file: its check stays up.
	if c := status(t, b).Checks[0]; c.State != "up" {
		t.Errorf("node-b's memory check %+v", c)
	}

	writeMeminfo(t, files["node-a"], 8000000)
	heal := time.Now()
	poll(t, 10*time.Second, 10*time.Millisecond, "node-a takes back after rise", func() error { return agree("node-a", a, b) })
	back := time.Since(heal)
	t.Logf("measured: back on node-a %v after the reading went back to 50%% (rise %d x interval %v, then monitor_holddown 1s)", back.Round(time.Millisecond), rise, interval)
	if back < (rise-1)*interval {
		t.Errorf("took back after %v: before rise passed runs", back)
	}
	out, _ := a.Ctl("ha", "history")
	if !strings.Contains(out, "health check check:mem down") || !strings.Contains(out, "health check check:mem up") {
		t.Errorf("history lacks the check's changes:\n%s", out)
	}
}
