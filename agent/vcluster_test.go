package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/heartbeat"
)

// vcConfig is a two-vcluster node: priority p1 in vcluster 1 (monitor
// port1), p2 in vcluster 2 (monitor port2), override in both.
func vcConfig(t *testing.T, name string, p1, p2 int) *config.Config {
	t.Helper()
	// 10 × 20 ms: a loaded machine (-race, make test) must not lose a
	// peer; these tests are about the elections, not the detection.
	cfg := testConfigLost(t, name, p1, true, 10)
	cfg.Node.VCluster2 = config.NodeVCluster{Priority: p2, Override: true}
	cfg.Cluster.VCluster2.Enabled, cfg.Cluster.VCluster2.Monitor = true, []string{"port2"}
	return cfg
}

type vcNode struct {
	*testNode
	net2 *fakeNet
}

func startVCNode(t *testing.T, mem *heartbeat.MemNetwork, name string, p1, p2 int) *vcNode {
	n := &vcNode{net2: &fakeNet{}}
	n.testNode = startNode(t, mem, vcConfig(t, name, p1, p2), func(o *Options) { o.Network2 = n.net2 })
	return n
}

func roles(st *control.Status) (string, string) {
	if len(st.VClusters) != 2 {
		return st.Role, "(no vcluster 2)"
	}
	return st.VClusters[0].Role, st.VClusters[1].Role
}

// Two vclusters over one heartbeat: a is primary of vcluster 1, b of
// vcluster 2; a monitored link of vcluster 2 moves only vcluster 2; when a
// dies b has both; a returns (override) and takes vcluster 1 back while b
// keeps vcluster 2 without a release.
func TestTwoVClustersSplitPrimaries(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	a := startVCNode(t, mem, "a", 200, 100)
	b := startVCNode(t, mem, "b", 100, 200)
	split := func(x, y *vcNode) func() bool {
		return func() bool {
			ax, ay := x.net.Owned(), x.net2.Owned()
			bx, by := y.net.Owned(), y.net2.Owned()
			return ax && !ay && !bx && by
		}
	}
	eventually(t, 5*time.Second, "a primary of vc1, b of vc2", split(a, b))
	// b's heartbeat claiming vcluster 2 reaches a just after b took it.
	eventually(t, time.Second, "a hears b's claim", func() bool {
		st := a.status(t)
		return len(st.VClusters) == 2 && st.VClusters[1].Primary == "b"
	})
	st := a.status(t)
	if r1, r2 := roles(st); r1 != "primary" || r2 != "secondary" {
		t.Fatalf("a: vcluster roles %s/%s, want primary/secondary", r1, r2)
	}
	if st.Role != "primary" || st.VClusters[1].Primary != "b" || st.VClusters[0].Primary != "a" {
		t.Fatalf("a: role %s, primaries %q/%q", st.Role, st.VClusters[0].Primary, st.VClusters[1].Primary)
	}
	if m := st.VClusters[1].Members; len(m) != 2 || m[0].Priority != 100 || m[1].Priority != 200 {
		t.Fatalf("a: vcluster 2 members %+v, want self 100, b 200", m)
	}

	// vcluster 2's monitored link fails on b: vcluster 2 moves to a, 1 stays.
	b.links.set("port2", false)
	eventually(t, 3*time.Second, "vcluster 2 on a after b's port2 failed", func() bool {
		return a.net.Owned() && a.net2.Owned() && !b.net.Owned() && !b.net2.Owned()
	})
	if _, takes, rel, _ := a.net.counts(); takes != 1 || rel != 0 {
		t.Fatalf("vcluster 1 disturbed by vcluster 2's link: a took %d, released %d", takes, rel)
	}
	b.links.set("port2", true)
	eventually(t, 3*time.Second, "vcluster 2 back on b (override)", split(a, b))

	// a dies: b takes vcluster 1 too, and never released vcluster 2.
	_, _, rel2Before, _ := b.net2.counts()
	a.stop(t)()
	eventually(t, 3*time.Second, "b primary of both", func() bool { return b.net.Owned() && b.net2.Owned() })

	// a returns with override: it takes vcluster 1 back, vcluster 2 stays.
	a2 := startVCNode(t, mem, "a", 200, 100)
	eventually(t, 5*time.Second, "a takes vcluster 1 back", split(a2, b))
	if _, _, rel, _ := b.net2.counts(); rel != rel2Before {
		t.Fatalf("vcluster 2 released on b %d times while a crashed and returned", rel-rel2Before)
	}
	h, _ := b.a.Handle(control.Request{Cmd: control.CmdHistory})
	tagged := map[int]int{}
	for _, e := range h.([]Event) {
		if e.Kind == "role" {
			tagged[e.VCluster]++
		}
	}
	if tagged[1] == 0 || tagged[2] == 0 || tagged[0] != 0 {
		t.Fatalf("role entries by vcluster tag: %v, want some of 1 and 2, none untagged", tagged)
	}
}

func TestFailoverSetPerVCluster(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	a := startVCNode(t, mem, "a", 200, 200)
	b := startVCNode(t, mem, "b", 100, 100)
	eventually(t, 5*time.Second, "a primary of both", func() bool { return a.net.Owned() && a.net2.Owned() })
	v, err := a.a.Handle(control.Request{Cmd: control.CmdFailoverSet, VCluster: 2})
	if err != nil {
		t.Fatal(err)
	}
	if fs := v.(control.FailoverStatus); !fs.Set || fs.VCluster != 2 {
		t.Fatalf("failover set --vcluster 2 = %+v", fs)
	}
	eventually(t, 3*time.Second, "vcluster 2 on b, 1 on a", func() bool {
		return a.net.Owned() && !a.net2.Owned() && b.net2.Owned() && !b.net.Owned()
	})
	if _, err := a.a.Handle(control.Request{Cmd: control.CmdFailoverSet, VCluster: 3}); err == nil {
		t.Fatal("failover set --vcluster 3 accepted")
	}
	if _, err := a.a.Handle(control.Request{Cmd: control.CmdFailoverUnset, VCluster: 2}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "vcluster 2 back on a (override)", func() bool { return a.net.Owned() && a.net2.Owned() })
}

// node.vcluster2's priority changes live (SIGHUP): vcluster 2 moves, 1 stays.
func TestReloadVCluster2Priority(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	a := startVCNode(t, mem, "a", 200, 200)
	b := startVCNode(t, mem, "b", 100, 100)
	eventually(t, 5*time.Second, "a primary of both", func() bool { return a.net.Owned() && a.net2.Owned() })
	c := *b.a.config()
	c.Node.VCluster2.Priority = 250
	pending, err := b.a.Reload(context.Background(), &c)
	if err != nil || len(pending) != 0 {
		t.Fatalf("reload: pending %v, err %v", pending, err)
	}
	eventually(t, 3*time.Second, "vcluster 2 on b after its priority rose", func() bool {
		return a.net.Owned() && !a.net2.Owned() && b.net2.Owned() && !b.net.Owned()
	})
	c2 := c
	c2.Cluster.VCluster2.Monitor = nil
	if pending, _ := b.a.Reload(context.Background(), &c2); len(pending) != 1 || pending[0] != "cluster.vcluster2.monitor" {
		t.Fatalf("a changed cluster.vcluster2.monitor: pending %v, want [cluster.vcluster2.monitor]", pending)
	}
}

// Each vcluster monitors its own links and pingserver targets.
func TestVClusterMonitorSections(t *testing.T) {
	cfg := vcConfig(t, "a", 200, 100)
	cfg.Cluster.Interfaces = []config.Interface{{Name: "port1", Addresses: []netip.Prefix{netip.MustParsePrefix("10.9.0.100/24")}}}
	cfg.Cluster.VCluster2.Interfaces = []config.Interface{{Name: "port2", Addresses: []netip.Prefix{netip.MustParsePrefix("10.9.2.100/24")}}}
	cfg.Cluster.VCluster2.PingServer = config.PingServer{Interfaces: []string{"port2"},
		Targets: []netip.Addr{netip.MustParseAddr("10.9.2.254")}, Interval: 3 * time.Second, FailoverThreshold: 2}
	a := &Agent{vcs: []*vcluster{{id: 1, sec: 1}, {id: 2, sec: 2}}}
	if got := a.vcs[0].monitored(cfg); len(got) != 1 || got[0] != "port1" {
		t.Errorf("vcluster 1 monitors %v, want [port1]", got)
	}
	if got := a.vcs[1].monitored(cfg); len(got) != 2 || got[0] != "port2" || got[1] != "port2>10.9.2.254" {
		t.Errorf("vcluster 2 monitors %v, want [port2 port2>10.9.2.254]", got)
	}
	items := a.pingItems(cfg)
	if len(items) != 1 || items[0].ifname != "port2" || items[0].interval != 3*time.Second || items[0].threshold != 2 {
		t.Errorf("ping items %+v, want port2's target at 3s, threshold 2", items)
	}
	if m := machineConfig(cfg, 2); m.Priority != 100 || !m.Override || m.MonitorTotal != 2 {
		t.Errorf("vcluster 2's machine config %+v", m)
	}
	req := RequiredInterfaces(cfg)
	for _, n := range []string{"ha1", "port1", "port2"} {
		if !slices.Contains(req, n) {
			t.Errorf("RequiredInterfaces %v lacks %s", req, n)
		}
	}
}

// A node returning with override in vcluster 2 only holds vcluster 2 back
// until its bulk session copy is in (the hold was vcluster 1's alone).
func TestVClusterSessionOverrideHold(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	sessCfg := func(name string, p1, p2 int, o1, o2 bool) *config.Config {
		cfg := vcConfig(t, name, p1, p2)
		cfg.Node.Override, cfg.Node.VCluster2.Override = o1, o2
		cfg.Cluster.Monitor, cfg.Cluster.VCluster2.Monitor = nil, nil
		cfg.Cluster.SessionPickup.Enabled, cfg.Cluster.SessionPickup.Connectionless = true, true
		return cfg
	}
	b := startSessNodeConfig(t, mem, sessCfg("b", 200, 100, true, false))
	waitFor(t, 5*time.Second, func() error {
		if st := b.status(t); len(st.VClusters) != 2 || st.VClusters[0].Role != "primary" || st.VClusters[1].Role != "primary" {
			return fmt.Errorf("b is not primary of both: %+v", st.VClusters)
		}
		return nil
	})
	for i := 0; i < 200; i++ {
		b.table.Put(testFlow(i))
	}
	// a: lower in vcluster 1, higher with override in vcluster 2; its
	// copy takes 400 ms.
	a := startSessNodeConfig(t, mem, sessCfg("a", 100, 200, false, true), 2*time.Millisecond)
	waitFor(t, 5*time.Second, func() error {
		if st := a.status(t); len(st.VClusters) != 2 || st.VClusters[1].Role != "primary" {
			return fmt.Errorf("a is not primary of vcluster 2: %+v", st.VClusters)
		}
		return nil
	})
	if n, _ := a.table.Count(); n != 200 {
		t.Fatalf("a took vcluster 2 over with %d of 200 flows", n)
	}
	st := a.status(t)
	if st.VClusters[0].Role != "secondary" || st.VClusters[1].FailoverSet || st.VClusters[0].FailoverSet {
		t.Fatalf("a after the hold: %+v", st.VClusters)
	}
}
