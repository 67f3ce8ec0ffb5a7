package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHealthCheckFailover: a health check whose command starts failing on
// the primary moves the primary role to the other node within fall ×
// interval + one heartbeat interval, and back after rise passes; the
// check, its state and its cause show in status, history and hooks.
func TestHealthCheckFailover(t *testing.T) {
	l, a, b := twoNodes(t)
	const (
		interval = 200 * time.Millisecond
		fall     = 3
		rise     = 2
	)
	dir := filepath.Join(l.Dir, "checks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// One configuration for both (it may be synchronized): the file tested
	// is named after the node running the check.
	checks := fmt.Sprintf("checks:\n  - name: svc\n    command: 'test ! -e %s/$HAGENT_NODE.down'\n    shell: true\n    interval: %s\n    fall: %d\n    rise: %d\n",
		dir, interval, fall, rise)
	hooks := fmt.Sprintf("hooks:\n  secondary: 'echo \"$HAGENT_CHECK\" > %s/$HAGENT_NODE.hook'\n", dir)
	pa, pb := params(200, true), params(100, true)
	pa.ClusterExtra, pb.ClusterExtra = checks+hooks, checks+hooks
	start(t, a, pa)
	start(t, b, pb)
	eventually(t, 10*time.Second, "initial election", func() error { return agree("node-a", a, b) })
	st := status(t, a)
	if len(st.Checks) != 1 || st.Checks[0].Name != "svc" || st.Checks[0].State != "up" {
		t.Fatalf("checks %+v", st.Checks)
	}
	eventually(t, 5*time.Second, "the check has run", func() error {
		if st := status(t, a); st.Checks[0].Last != "pass" {
			return fmt.Errorf("check %+v", st.Checks[0])
		}
		return nil
	})

	if err := os.WriteFile(filepath.Join(dir, "node-a.down"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	poll(t, 5*time.Second, 10*time.Millisecond, "node-b takes over on node-a's failed check", func() error { return agree("node-b", a, b) })
	checkFailoverTime(t, "health check failover", "the command started failing", time.Since(cut), interval, fall)
	st = status(t, a)
	if st.Checks[0].State != "down" || st.Checks[0].Last != "fail" || st.Checks[0].Count < fall {
		t.Errorf("node-a's check %+v", st.Checks[0])
	}
	if !strings.Contains(st.Reason, "health check svc down") {
		t.Errorf("node-a's reason %q does not name the check", st.Reason)
	}
	eventually(t, 5*time.Second, "node-a's secondary hook got HAGENT_CHECK", func() error {
		got, err := os.ReadFile(filepath.Join(dir, "node-a.hook"))
		if err != nil || strings.TrimSpace(string(got)) != "svc" {
			return fmt.Errorf("hook wrote %q (%v)", got, err)
		}
		return nil
	})

	os.Remove(filepath.Join(dir, "node-a.down"))
	heal := time.Now()
	poll(t, 5*time.Second, 10*time.Millisecond, "node-a takes back after rise", func() error { return agree("node-a", a, b) })
	t.Logf("measured: back on node-a %v after the command passed again (rise %d x interval %v)", time.Since(heal).Round(time.Millisecond), rise, interval)
	out, _ := a.Ctl("ha", "history")
	if !strings.Contains(out, "health check check:svc down") || !strings.Contains(out, "health check check:svc up") {
		t.Errorf("history lacks the check's changes:\n%s", out)
	}
	out, _ = a.Ctl("ha", "status")
	if !strings.Contains(out, "svc (command): up") {
		t.Errorf("status lacks the check:\n%s", out)
	}
}
