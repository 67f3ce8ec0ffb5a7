package test

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// roleChanges counts the role changes in n's `agentctl ha history`.
func roleChanges(t *testing.T, n *lab.Node) (int, string) {
	t.Helper()
	out, err := n.Ctl("ha", "history")
	if err != nil {
		t.Fatalf("history of %s: %v", n.Name, err)
	}
	c := 0
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "role" {
			c++
		}
	}
	return c, out
}

// TestFlapStorm: the primary's monitored port1 flaps down/up 30 times in
// about 50 ms (one `ip -batch`). With the default monitor_holddown the
// flapping member ends primary again after at most 3 role changes on each
// node (start, failover, takeback once stable). The control run,
// monitor_holddown 0s, prints how many the same storm costs without
// damping (node-b: 61 when measured).
func TestFlapStorm(t *testing.T) {
	for _, tc := range []struct {
		name, extra string
		damped      bool
	}{{"default", "", true}, {"no hold-down", "monitor_holddown: 0s\n", false}} {
		t.Run(tc.name, func(t *testing.T) {
			_, a, b := twoNodes(t)
			pa, pb := params(200, false), params(100, false)
			pa.Monitor, pb.Monitor = true, true
			pa.ClusterExtra, pb.ClusterExtra = tc.extra, tc.extra
			start(t, a, pa)
			start(t, b, pb)
			eventually(t, 10*time.Second, "initial election", func() error { return agree("node-a", a, b) })
			var batch strings.Builder
			for i := 0; i < 30; i++ {
				batch.WriteString("link set port1 down\nlink set port1 up\n")
			}
			cmd := exec.Command("ip", "-n", a.NS, "-batch", "-")
			cmd.Stdin = strings.NewReader(batch.String())
			began := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("ip -batch: %v: %s", err, out)
			}
			t.Logf("storm: 30 down/up in %v", time.Since(began).Round(time.Millisecond))
			eventually(t, 10*time.Second, "node-a primary again", func() error { return agree("node-a", a, b) })
			time.Sleep(3 * hbInterval) // let late changes land
			if err := agree("node-a", a, b); err != nil {
				t.Fatal(err)
			}
			na, hist := roleChanges(t, a)
			nb, _ := roleChanges(t, b)
			t.Logf("measured: %s: %d role changes on node-a, %d on node-b", tc.name, na, nb)
			if tc.damped && (na > 3 || nb > 3) {
				t.Fatalf("%d role changes on node-a, %d on node-b, want <= 3 each; node-a's history:\n%s", na, nb, hist)
			}
		})
	}
}
