package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/test/lab"
)

// vMACs of the two vclusters' first interfaces for groupID (vmac.MAC:
// vcx 0 for vcluster 1, 2 for vcluster 2).
var (
	vmacVC1 = fmt.Sprintf("00:09:0f:09:%02x:00", groupID)
	vmacVC2 = fmt.Sprintf("00:09:0f:09:%02x:20", groupID)
)

// startVC starts n with two vclusters: port1 in vcluster 1 at priority p1,
// port2 in vcluster 2 at priority p2, override in both.
func startVC(t *testing.T, n *lab.Node, p1, p2 int) {
	t.Helper()
	cfg, err := n.VClusterConfig(params(p1, true), lab.VCluster2{Priority: p2, Override: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.StartYAML(cfg); err != nil {
		t.Fatalf("start %s: %v", n.Name, err)
	}
}

// vcAgree checks that every node runs two vclusters and sees p1 as the
// primary of vcluster 1 and p2 of vcluster 2, with the roles to match.
func vcAgree(p1, p2 string, nodes ...*lab.Node) error {
	for _, n := range nodes {
		st, err := n.Status()
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		if len(st.VClusters) != 2 {
			return fmt.Errorf("%s runs %d vclusters, want 2", n.Name, len(st.VClusters))
		}
		for i, want := range []string{p1, p2} {
			v := st.VClusters[i]
			role := "secondary"
			if n.Name == want {
				role = "primary"
			}
			if v.VCluster != i+1 || v.Primary != want || v.Role != role {
				return fmt.Errorf("%s: vcluster %d: role %s, primary %q; want vcluster %d, %s, primary %q", n.Name, v.VCluster, v.Role, v.Primary, i+1, role, want)
			}
		}
		if st.Role != st.VClusters[0].Role || st.Primary != st.VClusters[0].Primary {
			return fmt.Errorf("%s: the compatibility fields (role %s, primary %q) are not vcluster 1's", n.Name, st.Role, st.Primary)
		}
	}
	return nil
}

// holds checks that port of n has (or, with !want, has not) the vMAC mac
// and the address addr.
func holds(n *lab.Node, port, mac, addr string, want bool) error {
	hw, err := n.MAC(port)
	if err != nil {
		return err
	}
	as, err := n.Addrs(port)
	if err != nil {
		return err
	}
	if has := hw.String() == mac; has != want {
		return fmt.Errorf("%s %s has MAC %s; want vMAC %s: %v", n.Name, port, hw, mac, want)
	}
	if has := slices.Contains(as, addr); has != want {
		return fmt.Errorf("%s %s addresses %v; want %s: %v", n.Name, port, as, addr, want)
	}
	return nil
}

// startServerProbe probes vcluster 2's address (port2, WANClusterIPv4)
// from the server namespace every probeEvery (the echo responders run
// already: startProbe) and waits for the first answer.
func startServerProbe(t *testing.T, l *lab.Lab) *probe {
	t.Helper()
	lp, err := lab.StartProbeFrom(l.Server, lab.WANClusterIPv4, probeEvery)
	if err != nil {
		t.Fatal(err)
	}
	return answeredProbe(t, lp, "the server side reaches vcluster 2's address")
}

// lostAfterFirst counts the unanswered probes between the first answered
// one and the last 300 ms (answers possibly still in flight).
func lostAfterFirst(s []lab.Sample) (lost, total int) {
	first := slices.IndexFunc(s, func(x lab.Sample) bool { return x.Answered })
	if first < 0 {
		return 0, 0
	}
	cut := time.Now().Add(-300 * time.Millisecond)
	for _, x := range s[first:] {
		if x.Sent.After(cut) {
			break
		}
		total++
		if !x.Answered {
			lost++
		}
	}
	return lost, total
}

// Virtual clustering (FGCP vcluster1/vcluster2, docs/design.md): node-a is primary of vcluster 1 (port1),
// node-b of vcluster 2 (port2), each vMAC on the right box and clients on
// both sides answered. node-a crashes: vcluster 1 moves to node-b within
// the detection time and vcluster 2 loses no probe. node-a returns with
// override and takes vcluster 1 back; vcluster 2 is still untouched.
func TestVClusterSplitPrimaries(t *testing.T) {
	l := newLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}, WAN: true})
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	startVC(t, a, 200, 100)
	startVC(t, b, 100, 200)
	eventually(t, 10*time.Second, "split primaries", func() error { return vcAgree("node-a", "node-b", a, b) })
	eventually(t, 5*time.Second, "each vMAC on its primary", func() error {
		return errors.Join(
			holds(a, "port1", vmacVC1, lab.ClusterIPv4+"/24", true), holds(a, "port2", vmacVC2, lab.WANClusterIPv4+"/24", false),
			holds(b, "port2", vmacVC2, lab.WANClusterIPv4+"/24", true), holds(b, "port1", vmacVC1, lab.ClusterIPv4+"/24", false))
	})

	p1 := startProbe(t, l)       // the client on port1's side, vcluster 1
	p2 := startServerProbe(t, l) // the server on port2's side, vcluster 2
	if mac, err := l.ClientNeighbor(lab.ClusterIPv4); err != nil || mac != vmacVC1 {
		t.Errorf("client's neighbour entry for %s: %q (%v), want vcluster 1's vMAC %s", lab.ClusterIPv4, mac, err, vmacVC1)
	}
	if mac, err := lab.Neighbor(l.Server, lab.WANClusterIPv4); err != nil || mac != vmacVC2 {
		t.Errorf("server's neighbour entry for %s: %q (%v), want vcluster 2's vMAC %s", lab.WANClusterIPv4, mac, err, vmacVC2)
	}
	text, err := a.Ctl("ha", "status")
	if err != nil || !strings.Contains(text, "vcluster 1: primary") || !strings.Contains(text, "vcluster 2: secondary") {
		t.Errorf("node-a's ha status lacks the vcluster blocks (%v):\n%s", err, text)
	}
	since2 := status(t, b).VClusters[1].RoleSince

	// node-a crashes: node-b takes vcluster 1 too.
	crashed := time.Now()
	a.Crash()
	eventually(t, 5*time.Second, "node-b takes vcluster 1", func() error {
		st, err := b.Status()
		if err != nil {
			return err
		}
		if st.VClusters[0].Role != "primary" {
			return fmt.Errorf("node-b is %s in vcluster 1", st.VClusters[0].Role)
		}
		return nil
	})
	detected := time.Since(crashed)
	if out := p1.outage(t, "crash of node-a, vcluster 1", crashed); out >= crashOutage {
		t.Errorf("vcluster 1 outage %v, want < %v (hb_interval %v × hb_lost_threshold %d + 200ms)", out, crashOutage, hbInterval, lostThreshold)
	}
	t.Logf("node-b primary of vcluster 1 %.0f ms after the crash", float64(detected)/float64(time.Millisecond))
	if err := holds(b, "port1", vmacVC1, lab.ClusterIPv4+"/24", true); err != nil {
		t.Error(err)
	}
	if lost, n := lostAfterFirst(p2.Samples()); lost != 0 || n == 0 {
		t.Errorf("vcluster 2 lost %d of %d probes while node-a crashed, want 0 of some", lost, n)
	}

	// node-a returns with override and takes vcluster 1 back.
	if err := a.Revive(); err != nil {
		t.Fatal(err)
	}
	returned := time.Now()
	startVC(t, a, 200, 100)
	eventually(t, 10*time.Second, "node-a takes vcluster 1 back", func() error { return vcAgree("node-a", "node-b", a, b) })
	consistently(t, 10*hbInterval, "the split stays", func() error { return vcAgree("node-a", "node-b", a, b) })
	eventually(t, 5*time.Second, "vcluster 1's vMAC back on node-a", func() error {
		return errors.Join(holds(a, "port1", vmacVC1, lab.ClusterIPv4+"/24", true), holds(b, "port1", vmacVC1, lab.ClusterIPv4+"/24", false))
	})
	r2 := p2.stop()
	lost, n := lostAfterFirst(p2.Samples())
	t.Logf("vcluster 2 over the crash and the return: %s; lost after the first answer %d of %d", r2, lost, n)
	if lost != 0 {
		t.Errorf("vcluster 2 lost %d of %d probes over node-a's crash and return, want 0", lost, n)
	}
	if err := holds(b, "port2", vmacVC2, lab.WANClusterIPv4+"/24", true); err != nil {
		t.Error(err)
	}
	st := status(t, b)
	if got := st.VClusters[1].RoleSince; !got.Equal(since2) {
		t.Errorf("node-b's vcluster 2 role changed (since %v, was since %v)", got, since2)
	}
	var h []control.Event
	if out, err := b.Ctl("ha", "history", "--vcluster", "2", "--json"); err != nil || json.Unmarshal([]byte(out), &h) != nil {
		t.Fatalf("ha history --vcluster 2 --json: %v\n%s", err, out)
	}
	for _, e := range h {
		if e.VCluster == 1 {
			t.Errorf("ha history --vcluster 2 shows a vcluster 1 entry: %+v", e)
		}
		if e.VCluster == 2 && e.Time.After(since2) && (e.Kind == "release" || e.Kind == "role") {
			t.Errorf("vcluster 2 disturbed on node-b after it became primary: %+v", e)
		}
	}
	if !slices.ContainsFunc(h, func(e control.Event) bool { return e.VCluster == 2 && e.Kind == "takeover" }) {
		t.Errorf("node-b's history has no vcluster 2 takeover: %+v", h)
	}
	t.Logf("node-a back as primary of vcluster 1 %.0f ms after its restart began", float64(time.Since(returned))/float64(time.Millisecond))
}

// ha failover set --vcluster 2 moves only vcluster 2.
func TestVClusterFailoverSet(t *testing.T) {
	l := newLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}, WAN: true})
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	startVC(t, a, 200, 200)
	startVC(t, b, 100, 100)
	eventually(t, 10*time.Second, "node-a primary of both", func() error { return vcAgree("node-a", "node-a", a, b) })
	out, err := a.Ctl("ha", "failover", "set", "--vcluster", "2")
	if err != nil || !strings.Contains(out, "ha failover: set (vcluster 2") {
		t.Fatalf("ha failover set --vcluster 2: %v\n%s", err, out)
	}
	eventually(t, 5*time.Second, "vcluster 2 on node-b, 1 on node-a", func() error { return vcAgree("node-a", "node-b", a, b) })
	if out, err := a.Ctl("ha", "failover", "set", "--vcluster", "3"); err == nil {
		t.Errorf("ha failover set --vcluster 3 accepted:\n%s", out)
	}
	if out, err := a.Ctl("ha", "failover", "unset", "--vcluster", "2"); err != nil || !strings.Contains(out, "unset") {
		t.Fatalf("ha failover unset --vcluster 2: %v\n%s", err, out)
	}
	eventually(t, 5*time.Second, "vcluster 2 back on node-a (override)", func() error { return vcAgree("node-a", "node-a", a, b) })
}

// Mistakes in the vcluster keys: one message naming file, line and key,
// exit 2.
func TestVClusterConfigErrors(t *testing.T) {
	needBinaries(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("secret-secret-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	head := "node: {name: node-a, serial: FGVM1}\ncluster:\n  password_file: " + key + "\n  hbdev: [{name: ha1}]\n  interfaces: [{name: port1, addresses: [10.9.0.100/24]}]\n"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"same-interface", head + "  vcluster2:\n    enabled: true\n    interfaces: [{name: port1}]\n",
			":8: cluster.vcluster2.interfaces[0].name: port1 is already in vcluster 1 (interfaces[0]); an interface belongs to one vcluster only"},
		{"vcluster-2", head + "  vcluster: 2\n  vcluster2:\n    enabled: true\n    interfaces: [{name: port2}]\n",
			":8: cluster.vcluster2.enabled: needs vcluster: 1"},
		{"priority", strings.Replace(head, "serial: FGVM1}", "serial: FGVM1, vcluster2: {priority: 256}}", 1),
			":1: node.vcluster2.priority: 256 is out of range 0-255"},
		{"unknown-key", head + "  vcluster2:\n    enabled: true\n    interface: [{name: port2}]\n",
			":8: cluster.vcluster2.interface: unknown key"},
		{"pingserver", head + "  vcluster2:\n    enabled: true\n    interfaces: [{name: port2, addresses: [10.9.2.100/24]}]\n    pingserver: {interfaces: [port2], targets: [10.9.0.254]}\n",
			":9: cluster.vcluster2.pingserver.targets[0]: 10.9.0.254 is not inside a cluster subnet of pingserver.interfaces [port2]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(lab.Bin("hagentd"), "-c", path, "--check").CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit %v, want 2\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], path+tc.want) {
				t.Errorf("output:\n%s\nwant one line containing %q", out, path+tc.want)
			}
		})
	}
	// A single-vcluster file with vcluster: 2 still works as before.
	path := filepath.Join(dir, "single.yaml")
	if err := os.WriteFile(path, []byte(head+"  vcluster: 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(lab.Bin("hagentd"), "-c", path, "--check").CombinedOutput(); err != nil {
		t.Errorf("vcluster: 2 alone: %v\n%s", err, out)
	}
}

// hasFlow reports whether n's conntrack table holds a UDP flow from src to
// dst:EchoPort (a probe's).
func hasFlow(n *lab.Node, src, dst string) error {
	fl, err := n.Flows()
	if err != nil {
		return err
	}
	for _, f := range fl {
		if f.Orig.Src.String() == src && f.Orig.Dst.String() == dst && f.Orig.DstPort == lab.EchoPort {
			return nil
		}
	}
	return fmt.Errorf("%s has no flow %s -> %s:%d among its %d", n.Name, src, dst, lab.EchoPort, len(fl))
}

// Session pickup per vcluster: each vcluster's primary copies the flows of
// its vcluster to the other node, both send at once, and neither's bulk
// copy sweeps the other's own flows. With one sender (vcluster 1's
// primary, the behaviour before), node-a would never hold vcluster 2's
// flow and node-b's would be swept as a stale copy.
func TestVClusterSessions(t *testing.T) {
	l := newLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}, WAN: true})
	if err := l.SetupFirewall(); err != nil { // conntrack on in the nodes
		t.Fatal(err)
	}
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	for _, n := range []struct {
		n      *lab.Node
		p1, p2 int
	}{{a, 200, 100}, {b, 100, 200}} {
		p := params(n.p1, true)
		p.NoIPv6, p.ClusterExtra = true, fmt.Sprintf(sessionExtra, true)
		cfg, err := n.n.VClusterConfig(p, lab.VCluster2{Priority: n.p2, Override: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.n.StartYAML(cfg); err != nil {
			t.Fatalf("start %s: %v", n.n.Name, err)
		}
	}
	eventually(t, 10*time.Second, "split primaries", func() error { return vcAgree("node-a", "node-b", a, b) })
	startProbe(t, l)       // client -> 10.9.0.100 on node-a (vcluster 1)
	startServerProbe(t, l) // server -> 10.9.2.100 on node-b (vcluster 2)
	vc1Flow := func(n *lab.Node) error { return hasFlow(n, lab.ClientIPv4, lab.ClusterIPv4) }
	vc2Flow := func(n *lab.Node) error { return hasFlow(n, lab.ServerIPv4, lab.WANClusterIPv4) }
	eventually(t, 10*time.Second, "each primary's flow copied to the other node", func() error {
		return errors.Join(vc1Flow(a), vc1Flow(b), vc2Flow(b), vc2Flow(a))
	})
	// Both stay: neither node's bulk copy or stream removes the other's own.
	consistently(t, 2*time.Second, "both flows on both nodes", func() error {
		return errors.Join(vc1Flow(a), vc1Flow(b), vc2Flow(b), vc2Flow(a))
	})
	for _, n := range []*lab.Node{a, b} {
		s := sessionsOf(t, n)
		if len(s.Peers) != 1 || s.Peers[0].SentFlows == 0 {
			t.Errorf("%s sends to %+v, want its vcluster's flows to the other node", n.Name, s.Peers)
		}
		if s.Applied == 0 {
			t.Errorf("%s applied no copy of the other vcluster's flows: %+v", n.Name, s)
		}
	}
	// node-b crashes: node-a is primary of both and keeps both flows.
	b.Crash()
	eventually(t, 5*time.Second, "node-a primary of both", func() error {
		st, err := a.Status()
		if err != nil {
			return err
		}
		if st.VClusters[0].Role != "primary" || st.VClusters[1].Role != "primary" {
			return fmt.Errorf("node-a is %s/%s", st.VClusters[0].Role, st.VClusters[1].Role)
		}
		return nil
	})
	if err := errors.Join(vc1Flow(a), vc2Flow(a)); err != nil {
		t.Error(err)
	}
	// hagentd --release (ExecStopPost after a crash) gives back vcluster
	// 2's vMAC and address too, not only vcluster 1's.
	if err := holds(b, "port2", vmacVC2, lab.WANClusterIPv4+"/24", true); err != nil {
		t.Fatalf("before the release: %v", err)
	}
	if err := b.Release(); err != nil {
		t.Fatal(err)
	}
	if err := holds(b, "port2", vmacVC2, lab.WANClusterIPv4+"/24", false); err != nil {
		t.Errorf("after hagentd --release: %v", err)
	}
}
