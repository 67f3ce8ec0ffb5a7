package test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// TestPingServer: both nodes check the client (standing in for the
// gateway) with ARP probes; when node-a's path to it breaks (its ARP is
// dropped on its port), node-a loses the election like a node with a
// failed monitored link, and takes back when the path heals.
func TestPingServer(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft (apt-get install nftables; .ci/run installs it)")
	}
	_, a, b := twoNodes(t)
	ping := fmt.Sprintf("pingserver:\n  interfaces: [port1]\n  targets: [%s]\n  interval: 100ms\n  failover_threshold: 3\n", lab.ClientIPv4)
	pa, pb := params(200, true), params(100, true)
	pa.ClusterExtra, pb.ClusterExtra = ping, ping
	start(t, a, pa)
	start(t, b, pb)
	eventually(t, 10*time.Second, "initial election", func() error { return agree("node-a", a, b) })
	st, err := a.Status()
	if err != nil {
		t.Fatal(err)
	}
	target := "port1>" + lab.ClientIPv4
	if len(st.Monitor) != 1 || st.Monitor[0].Name != target || !st.Monitor[0].Up {
		t.Fatalf("monitor list %+v, want %s up", st.Monitor, target)
	}
	// Break node-a's path: drop ARP arriving on its port1.
	nft := func(args ...string) {
		t.Helper()
		if out, err := lab.Exec(a.NS, append([]string{"nft"}, args...)...); err != nil {
			t.Fatalf("nft %v: %v %s", args, err, out)
		}
	}
	nft("add", "table", "netdev", "pingtest")
	nft("add", "chain", "netdev", "pingtest", "in", "{ type filter hook ingress device port1 priority 0; }")
	nft("add", "rule", "netdev", "pingtest", "in", "ether", "type", "arp", "drop")
	cut := time.Now()
	eventually(t, 5*time.Second, "node-b takes over on node-a's pingserver failure", func() error { return agree("node-b", a, b) })
	t.Logf("measured: pingserver failover %v after the path broke (3 misses x 100ms)", time.Since(cut).Round(time.Millisecond))
	if d := time.Since(cut); d < 150*time.Millisecond {
		t.Errorf("failover after %v: before failover_threshold misses", d)
	}
	st, _ = b.Status()
	for _, m := range st.Members {
		if m.Node == "node-a" && m.MonitorUp != 0 {
			t.Errorf("node-a's member entry %+v, want monitor_up 0", m)
		}
	}
	if !strings.Contains(st.Reason, "monitored") {
		t.Errorf("reason %q", st.Reason)
	}
	// Heal: override + priority gives node-a back the primary role.
	nft("delete", "table", "netdev", "pingtest")
	eventually(t, 5*time.Second, "node-a takes back", func() error { return agree("node-a", a, b) })
	out, _ := a.Ctl("ha", "history")
	if !strings.Contains(out, "pingserver target "+target+" down") || !strings.Contains(out, "pingserver target "+target+" up") {
		t.Errorf("history lacks the pingserver events:\n%s", out)
	}
}
