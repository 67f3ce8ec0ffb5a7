package test

import (
	"fmt"
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

// TestPingFlipTimeout: node-a's path to the pingserver target breaks and
// node-b takes over; then node-b's path breaks too. With flip_timeout 3s
// node-b keeps the role (its target down is held, the history says so)
// until it has been primary 3s, then both count 0 targets up and override
// priority gives node-a the role. The control run, flip_timeout 0s, hands
// the role back to node-a as soon as node-b's path breaks.
func TestPingFlipTimeout(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft (apt-get install nftables; .ci/run installs it)")
	}
	const flip = 3 * time.Second
	for _, ft := range []time.Duration{flip, 0} {
		t.Run(fmt.Sprintf("flip_timeout=%s", ft), func(t *testing.T) {
			_, a, b := twoNodes(t)
			ping := fmt.Sprintf("pingserver:\n  interfaces: [port1]\n  targets: [%s]\n  interval: 100ms\n  failover_threshold: 3\n  flip_timeout: %s\n", lab.ClientIPv4, ft)
			pa, pb := params(200, true), params(100, true)
			pa.ClusterExtra, pb.ClusterExtra = ping, ping
			start(t, a, pa)
			start(t, b, pb)
			eventually(t, 10*time.Second, "initial election", func() error { return agree("node-a", a, b) })
			breakARP := func(n *lab.Node) {
				t.Helper()
				for _, args := range [][]string{
					{"add", "table", "netdev", "fliptest"},
					{"add", "chain", "netdev", "fliptest", "in", "{ type filter hook ingress device port1 priority 0; }"},
					{"add", "rule", "netdev", "fliptest", "in", "ether", "type", "arp", "drop"},
				} {
					if out, err := lab.Exec(n.NS, append([]string{"nft"}, args...)...); err != nil {
						t.Fatalf("nft %v: %v %s", args, err, out)
					}
				}
			}
			breakARP(a)
			eventually(t, 5*time.Second, "node-b takes over on node-a's pingserver failure", func() error { return agree("node-b", a, b) })
			took := time.Now()
			breakARP(b)
			if ft == 0 {
				eventually(t, 5*time.Second, "node-a takes back at once without flip_timeout", func() error { return agree("node-a", a, b) })
				t.Logf("measured: without flip_timeout node-a took back %v after node-b became primary", time.Since(took).Round(time.Millisecond))
				return
			}
			consistently(t, flip-time.Since(took)-500*time.Millisecond, "node-b keeps the role inside flip_timeout", func() error { return agree("node-b", a, b) })
			eventually(t, flip+5*time.Second, "node-a takes back after flip_timeout", func() error { return agree("node-a", a, b) })
			t.Logf("measured: node-a took back %v after node-b became primary (flip_timeout %s)", time.Since(took).Round(time.Millisecond), ft)
			if d := time.Since(took); d < flip-200*time.Millisecond {
				t.Errorf("node-a took back after %v, before flip_timeout %s", d, ft)
			}
			if out, _ := b.Ctl("ha", "history"); !strings.Contains(out, "held by flip_timeout") || !strings.Contains(out, "flip_timeout over") {
				t.Errorf("node-b's history lacks the held target:\n%s", out)
			}
		})
	}
}
