// Package test holds hagent's end-to-end integration tests: real hagentd
// processes in Linux network namespaces (built by package test/lab), a
// client probing the cluster address every 10 ms, and faults injected by
// killing processes and downing links. They need root and the binaries of
// `make build`; run them with `make integration`.
package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/test/lab"
)

// Short timers keep the whole file fast: a peer is lost after
// hbInterval × lostThreshold = 600 ms.
const (
	hbInterval    = 100 * time.Millisecond
	lostThreshold = 6
	groupID       = 10
	probeEvery    = 10 * time.Millisecond
	// gracefulOutage bounds what a client may lose in a planned hand-over
	// (SIGTERM, ha failover set): make-before-break, so only the bridge
	// relearning the vMAC.
	gracefulOutage = 100 * time.Millisecond
)

// vMAC of port1 (index 0) in vcluster 1 for groupID (vmac.MAC).
var vmac = fmt.Sprintf("00:09:0f:09:%02x:00", groupID)

// crashOutage is the bound on a client's outage after a crash: detection
// (hb_interval × hb_lost_threshold) plus 200 ms for the takeover, the
// scheduling of a loaded machine and the probe resolution.
var crashOutage = hbInterval*lostThreshold + 200*time.Millisecond

// params are the lab parameters every test starts from.
func params(priority int, override bool) lab.Params {
	return lab.Params{
		GroupID: groupID, Priority: priority, Override: override,
		HBInterval: hbInterval, LostThreshold: lostThreshold,
		HelloHolddown: time.Second, ARPs: 3, ARPsInterval: time.Second,
	}
}

// needBinaries skips when the binaries of `make build` are missing.
func needBinaries(t *testing.T) {
	t.Helper()
	for _, b := range []string{"hagentd", "agentctl"} {
		if _, err := os.Stat(lab.Bin(b)); err != nil {
			t.Skipf("%s not built (%v): run `make integration` or `make build` first", b, err)
		}
	}
}

// newLab builds a lab for spec, removed when the test ends; on failure the
// nodes' log tails are logged first.
func newLab(t *testing.T, spec lab.Spec) *lab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces: run `sudo make integration`")
	}
	needBinaries(t)
	l, err := lab.New(spec)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(l.Close)
	// Registered after Close, so it runs before it (cleanups are LIFO).
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, name := range sortedNames(l) {
			n := l.Nodes[name]
			if st, err := n.Status(); err == nil {
				t.Logf("%s: role %s, primary %q, reason %q", name, st.Role, st.Primary, st.Reason)
			}
			t.Logf("---- %s: last lines of %s ----\n%s", name, n.Log, n.Tail(40))
		}
	})
	return l
}

// twoNodes is the usual lab: node-a and node-b with a direct ha1 cable.
func twoNodes(t *testing.T) (*lab.Lab, *lab.Node, *lab.Node) {
	l := newLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}})
	return l, l.Nodes["node-a"], l.Nodes["node-b"]
}

func sortedNames(l *lab.Lab) []string {
	var names []string
	for name := range l.Nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func start(t *testing.T, n *lab.Node, p lab.Params) {
	t.Helper()
	if err := n.Start(p); err != nil {
		t.Fatalf("start %s: %v", n.Name, err)
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := lab.Eventually(timeout, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// poll is eventually with a polling period of its own.
func poll(t *testing.T, timeout, every time.Duration, what string, cond func() error) {
	t.Helper()
	if err := lab.EventuallyEvery(timeout, every, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// consistently checks cond every 20 ms for d and fails at the first error.
func consistently(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if err := cond(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

func status(t *testing.T, n *lab.Node) *control.Status {
	t.Helper()
	st, err := n.Status()
	if err != nil {
		t.Fatalf("status of %s: %v", n.Name, err)
	}
	return st
}

// agree checks that every given node answers, names primary as the
// primary, lists all the given nodes as members, and that only primary has
// the role primary.
func agree(primary string, nodes ...*lab.Node) error {
	for _, n := range nodes {
		st, err := n.Status()
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		if st.Primary != primary {
			return fmt.Errorf("%s (role %s) says the primary is %q, want %q", n.Name, st.Role, st.Primary, primary)
		}
		wantRole := "secondary"
		if n.Name == primary {
			wantRole = "primary"
		}
		if st.Role != wantRole {
			return fmt.Errorf("%s is %s, want %s", n.Name, st.Role, wantRole)
		}
		for _, m := range nodes {
			if !hasMember(st, m.Name) {
				return fmt.Errorf("%s does not list member %s: %v", n.Name, m.Name, memberNames(st))
			}
		}
	}
	return nil
}

func hasMember(st *control.Status, name string) bool {
	return slices.Contains(memberNames(st), name)
}

func memberNames(st *control.Status) []string {
	var out []string
	for _, m := range st.Members {
		out = append(out, m.Node)
	}
	return out
}

func member(st *control.Status, name string) (control.Member, bool) {
	for _, m := range st.Members {
		if m.Node == name {
			return m, true
		}
	}
	return control.Member{}, false
}

// holdsVMAC reports whether port1 of n carries the vMAC.
func holdsVMAC(n *lab.Node) (bool, error) {
	hw, err := n.MAC("port1")
	if err != nil {
		return false, err
	}
	return hw.String() == vmac, nil
}

// owns checks that n holds the vMAC and both cluster addresses on port1.
func owns(n *lab.Node) error {
	ok, err := holdsVMAC(n)
	if err != nil {
		return err
	}
	if !ok {
		hw, _ := n.MAC("port1")
		return fmt.Errorf("%s port1 has MAC %s, want the vMAC %s", n.Name, hw, vmac)
	}
	as, err := n.Addrs("port1")
	if err != nil {
		return err
	}
	for _, want := range []string{lab.ClusterIPv4 + "/24", lab.ClusterIPv6 + "/64"} {
		if !slices.Contains(as, want) {
			return fmt.Errorf("%s port1 addresses %v lack %s", n.Name, as, want)
		}
	}
	return nil
}

// released checks that n holds neither the vMAC nor a cluster address.
func released(n *lab.Node) error {
	ok, err := holdsVMAC(n)
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("%s still has the vMAC on port1", n.Name)
	}
	as, err := n.Addrs("port1")
	if err != nil {
		return err
	}
	for _, a := range as {
		if strings.HasPrefix(a, lab.ClusterIPv4+"/") || strings.HasPrefix(a, lab.ClusterIPv6+"/") {
			return fmt.Errorf("%s still has the cluster address %s", n.Name, a)
		}
	}
	return nil
}

// electAB starts node-a (priority 200) and node-b (priority 100) with the
// given override and waits until both agree node-a is primary.
func electAB(t *testing.T, a, b *lab.Node, override bool) {
	t.Helper()
	startPair(t, a, b, params(200, override), params(100, override))
}

// probe is a client probe of the cluster IPv4 address, stopped at most once.
type probe struct {
	*lab.Probe
	once sync.Once
	res  lab.Result
}

// startProbe starts the echo responders and a probe every 10 ms, and waits
// for the first answer. The probe is stopped at the end of the test.
func startProbe(t *testing.T, l *lab.Lab) *probe {
	t.Helper()
	return startProbeEvery(t, l, probeEvery)
}

// startProbeEvery is startProbe with a probe every `every`.
func startProbeEvery(t *testing.T, l *lab.Lab, every time.Duration) *probe {
	t.Helper()
	if err := l.StartEcho(); err != nil {
		t.Fatalf("echo: %v", err)
	}
	lp, err := l.StartProbe(lab.ClusterIPv4, every)
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	return answeredProbe(t, lp, "client reaches the cluster address")
}

// answeredProbe wraps a running probe (stopped when the test ends) and
// waits for its first answer.
func answeredProbe(t *testing.T, lp *lab.Probe, what string) *probe {
	t.Helper()
	p := &probe{Probe: lp}
	t.Cleanup(func() { p.stop() })
	eventually(t, 5*time.Second, what, func() error {
		if p.Snapshot().Answered == 0 {
			return errors.New("no answer yet")
		}
		return nil
	})
	return p
}

func (p *probe) stop() lab.Result {
	p.once.Do(func() { p.res = p.Probe.Stop() })
	return p.res
}

// outage waits until the client has been answered again for a while after
// the fault at since, stops the probe, logs and returns the longest outage.
func (p *probe) outage(t *testing.T, what string, since time.Time) time.Duration {
	t.Helper()
	eventually(t, 10*time.Second, "client recovers after "+what, func() error {
		r := p.Snapshot()
		if !r.Recovered {
			return fmt.Errorf("client not recovered: %s", r)
		}
		if time.Since(since) < 500*time.Millisecond {
			return errors.New("waiting for 500 ms of answers after the fault")
		}
		return nil
	})
	r := p.stop()
	t.Logf("measured outage: %s: %.1f ms (%s)", what, float64(r.Outage)/float64(time.Millisecond), r)
	if !r.Recovered || r.Answered == 0 {
		t.Fatalf("%s: the client did not recover: %s", what, r)
	}
	return r.Outage
}

// (a) Priority and override elect the right primary, also when the
// lower-priority node starts first; status agrees on both nodes.
func TestElectionPriorityOverride(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first string // node started first, alone until it is primary
	}{
		{"together", ""},
		{"lower-priority-first", "node-b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, a, b := twoNodes(t)
			if tc.first == "node-b" {
				start(t, b, params(100, true))
				eventually(t, 5*time.Second, "node-b alone becomes primary", func() error {
					if r := b.Role(); r != "primary" {
						return fmt.Errorf("node-b is %q", r)
					}
					return nil
				})
				start(t, a, params(200, true))
			} else {
				start(t, a, params(200, true))
				start(t, b, params(100, true))
			}
			eventually(t, 10*time.Second, "node-a (priority 200, override) is primary on both", func() error {
				return agree("node-a", a, b)
			})
			for _, n := range []*lab.Node{a, b} {
				st := status(t, n)
				if len(st.Members) != 2 {
					t.Errorf("%s lists %d members %v, want 2", n.Name, len(st.Members), memberNames(st))
				}
				if !strings.Contains(st.Reason, "node-a is selected as the primary") || !strings.Contains(st.Reason, "override priority") {
					t.Errorf("%s reason %q does not name node-a and the override priority criterion", n.Name, st.Reason)
				}
				if !st.Override || st.GroupID != groupID {
					t.Errorf("%s status: override %v group %d", n.Name, st.Override, st.GroupID)
				}
			}
			// The human output names the primary too.
			out, err := b.Ctl("ha", "status")
			if err != nil || !strings.Contains(out, "node-a") {
				t.Errorf("agentctl ha status on node-b: %v\n%s", err, out)
			}
			if err := owns(a); err != nil {
				t.Error(err)
			}
			if err := released(b); err != nil {
				t.Error(err)
			}
		})
	}
}

// (b) A crash of the primary: the client's outage stays below the
// detection time plus 200 ms, and the survivor owns the vMAC and addresses.
func TestCrashFailover(t *testing.T) {
	l, a, b := twoNodes(t)
	electAB(t, a, b, false)
	crashFailover(t, l, a, b, "crash failover")
	mac, err := l.ClientNeighbor(lab.ClusterIPv4)
	if err != nil || mac != vmac {
		t.Errorf("client's neighbour entry for %s: %q (%v), want the vMAC %s", lab.ClusterIPv4, mac, err, vmac)
	}
	st := status(t, b)
	if m, ok := member(st, "node-a"); !ok || m.Alive || m.Role != "lost" {
		t.Errorf("node-b's view of node-a: %+v (found %v), want lost", m, ok)
	}
}

// (c) Graceful failovers: SIGTERM, and `ha failover set|unset`.
func TestGracefulFailover(t *testing.T) {
	t.Run("sigterm", func(t *testing.T) {
		l, a, b := twoNodes(t)
		electAB(t, a, b, false)
		p := startProbe(t, l)
		stopped := time.Now()
		if err := a.Stop(10 * time.Second); err != nil {
			t.Fatalf("hagentd on node-a after SIGTERM: %v (want exit 0)", err)
		}
		eventually(t, 5*time.Second, "node-b takes over", func() error {
			if r := b.Role(); r != "primary" {
				return fmt.Errorf("node-b is %q", r)
			}
			return nil
		})
		if out := p.outage(t, "graceful stop (SIGTERM)", stopped); out >= gracefulOutage {
			t.Errorf("outage %v, want < %v", out, gracefulOutage)
		}
		if err := owns(b); err != nil {
			t.Error(err)
		}
		if err := released(a); err != nil {
			t.Error(err)
		}
	})
	t.Run("failover-set", func(t *testing.T) {
		l, a, b := twoNodes(t)
		electAB(t, a, b, false)
		p := startProbe(t, l)
		set := time.Now()
		out, err := a.Ctl("ha", "failover", "set")
		if err != nil || !strings.Contains(out, "ha failover: set") {
			t.Fatalf("agentctl ha failover set: %v\n%s", err, out)
		}
		eventually(t, 5*time.Second, "node-b takes over from node-a", func() error { return agree("node-b", a, b) })
		if o := p.outage(t, "ha failover set", set); o >= gracefulOutage {
			t.Errorf("outage %v, want < %v", o, gracefulOutage)
		}
		if err := owns(b); err != nil {
			t.Error(err)
		}
		if err := released(a); err != nil {
			t.Error(err)
		}
		out, err = a.Ctl("ha", "failover", "status")
		if err != nil || !strings.Contains(out, "ha failover: set") {
			t.Errorf("ha failover status: %v\n%s", err, out)
		}
		if st := status(t, a); !st.FailoverSet {
			t.Error("node-a status: failover_set false after set")
		}
		// Stays out: node-a must not come back while failover is set.
		consistently(t, 5*hbInterval, "node-a stays secondary", func() error { return agree("node-b", a, b) })
		out, err = a.Ctl("ha", "failover", "unset")
		if err != nil || !strings.Contains(out, "ha failover: unset") {
			t.Fatalf("agentctl ha failover unset: %v\n%s", err, out)
		}
		out, err = a.Ctl("ha", "failover", "status")
		if err != nil || !strings.Contains(out, "ha failover: unset") {
			t.Errorf("ha failover status after unset: %v\n%s", err, out)
		}
		eventually(t, 3*time.Second, "node-b sees node-a's failover cleared", func() error {
			st, err := b.Status()
			if err != nil {
				return err
			}
			if m, ok := member(st, "node-a"); !ok || m.FailoverSet {
				return fmt.Errorf("node-b's view of node-a: %+v", m)
			}
			return nil
		})
	})
}

// (d) Link failover: the primary's monitored port1 goes down.
func TestLinkFailover(t *testing.T) {
	l, a, b := twoNodes(t)
	pa, pb := params(200, false), params(100, false)
	pa.Monitor, pb.Monitor = true, true
	start(t, a, pa)
	start(t, b, pb)
	eventually(t, 10*time.Second, "initial election", func() error { return agree("node-a", a, b) })
	p := startProbe(t, l)
	down := time.Now()
	if err := a.SetLink("port1", false); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "node-b takes over", func() error { return agree("node-b", a, b) })
	if out := p.outage(t, "monitored link down", down); out >= hbInterval*lostThreshold {
		t.Errorf("outage %v, want < %v (faster than a crash)", out, hbInterval*lostThreshold)
	}
	for _, n := range []*lab.Node{a, b} {
		m, ok := member(status(t, n), "node-a")
		if !ok || m.MonitorUp != 0 || m.MonitorTotal != 1 {
			t.Errorf("%s's view of node-a: monitor %d/%d (found %v), want 0/1", n.Name, m.MonitorUp, m.MonitorTotal, ok)
		}
	}
	if st := status(t, b); !strings.Contains(st.Reason, "monitor") {
		t.Errorf("node-b reason %q does not name the monitored interfaces", st.Reason)
	}
	if err := owns(b); err != nil {
		t.Error(err)
	}
}

// (e) A returning node takes back the primary role with override, and
// does not without override once the survivor's uptime counts.
func TestReturningNode(t *testing.T) {
	const margin = 2 * time.Second
	for _, tc := range []struct {
		override bool
		want     string // primary after node-a returns
		reason   string
	}{
		{true, "node-a", "override priority"},
		{false, "node-b", "uptime"},
	} {
		t.Run(fmt.Sprintf("override=%v", tc.override), func(t *testing.T) {
			_, a, b := twoNodes(t)
			pa, pb := params(200, tc.override), params(100, tc.override)
			pa.UptimeMargin, pb.UptimeMargin = margin, margin
			start(t, a, pa)
			start(t, b, pb)
			eventually(t, 10*time.Second, "initial election", func() error { return agree("node-a", a, b) })
			a.Crash()
			eventually(t, 5*time.Second, "node-b takes over", func() error {
				if r := b.Role(); r != "primary" {
					return fmt.Errorf("node-b is %q", r)
				}
				return nil
			})
			// node-b's uptime must exceed node-a's fresh one by the margin.
			// Polled slowly: a control request every 10 ms keeps hagentd's
			// tick timer from firing, which freezes the uptime it reports
			// (see the report on agent.run).
			poll(t, 10*time.Second, 250*time.Millisecond, "node-b's uptime passes the margin", func() error {
				st, err := b.Status()
				if err != nil {
					return err
				}
				if time.Duration(st.UptimeS)*time.Second <= margin {
					return fmt.Errorf("node-b uptime %ds", st.UptimeS)
				}
				return nil
			})
			if err := a.Revive(); err != nil {
				t.Fatal(err)
			}
			start(t, a, pa)
			eventually(t, 10*time.Second, tc.want+" is primary after node-a returns", func() error { return agree(tc.want, a, b) })
			consistently(t, 10*hbInterval, tc.want+" stays primary", func() error { return agree(tc.want, a, b) })
			for _, n := range []*lab.Node{a, b} {
				if st := status(t, n); !strings.Contains(st.Reason, tc.reason) {
					t.Errorf("%s reason %q does not name %q", n.Name, st.Reason, tc.reason)
				}
			}
			if err := owns(byName(a, b, tc.want)); err != nil {
				t.Error(err)
			}
		})
	}
}

// byName returns whichever of a and b is named name.
func byName(a, b *lab.Node, name string) *lab.Node {
	if a.Name == name {
		return a
	}
	return b
}

// (f) Four nodes on a heartbeat bridge elect one primary and all agree.
func TestFourNodes(t *testing.T) {
	names := []string{"node-a", "node-b", "node-c", "node-d"}
	prios := []int{150, 100, 250, 50}
	l := newLab(t, lab.Spec{Nodes: names})
	var nodes []*lab.Node
	for i, name := range names {
		n := l.Nodes[name]
		start(t, n, params(prios[i], false))
		nodes = append(nodes, n)
	}
	eventually(t, 10*time.Second, "all four agree on node-c", func() error { return agree("node-c", nodes...) })
	primaries := 0
	for _, n := range nodes {
		st := status(t, n)
		if len(st.Members) != 4 {
			t.Errorf("%s lists members %v, want 4", n.Name, memberNames(st))
		}
		held, err := holdsVMAC(n)
		if err != nil {
			t.Fatal(err)
		}
		if st.Role == "primary" {
			primaries++
		}
		if held != (st.Role == "primary") {
			t.Errorf("%s: role %s, holds the vMAC %v", n.Name, st.Role, held)
		}
		if !strings.Contains(st.Reason, "node-c is selected as the primary") {
			t.Errorf("%s reason %q", n.Name, st.Reason)
		}
	}
	if primaries != 1 {
		t.Errorf("%d primaries, want 1", primaries)
	}
	if err := owns(l.Nodes["node-c"]); err != nil {
		t.Error(err)
	}
}

// (g) Split brain: cutting the heartbeat link makes both primary; on
// restore exactly one primary remains within two intervals, and the loser
// releases the vMAC and addresses.
func TestSplitBrain(t *testing.T) {
	_, a, b := twoNodes(t)
	electAB(t, a, b, false)
	if err := a.SetLink("ha1", false); err != nil { // the veth cable: both ends lose carrier
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "both become primary", func() error {
		if ra, rb := a.Role(), b.Role(); ra != "primary" || rb != "primary" {
			return fmt.Errorf("roles %q/%q", ra, rb)
		}
		return nil
	})
	for _, n := range []*lab.Node{a, b} {
		if err := owns(n); err != nil {
			t.Errorf("split brain: %v", err)
		}
	}
	// Poll both nodes every 5 ms; the polling adds at most one round of two
	// status calls to the figure, hence the explicit slack.
	const slack = 100 * time.Millisecond
	restored := time.Now()
	if err := a.SetLink("ha1", true); err != nil {
		t.Fatal(err)
	}
	var took time.Duration
	for {
		ra, rb := a.Role(), b.Role()
		if (ra == "primary") != (rb == "primary") {
			took = time.Since(restored)
			break
		}
		if time.Since(restored) > 5*time.Second {
			t.Fatalf("still roles %q/%q 5s after the hb link came back", ra, rb)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("measured outage: split brain resolved %.1f ms after the hb link came back (bound 2 × hb_interval + %v polling slack)",
		float64(took)/float64(time.Millisecond), slack)
	if took > 2*hbInterval+slack {
		t.Errorf("split brain resolved after %v, want <= %v", took, 2*hbInterval+slack)
	}
	eventually(t, 2*time.Second, "node-a wins, both agree", func() error { return agree("node-a", a, b) })
	if err := released(b); err != nil {
		t.Error(err)
	}
	if err := owns(a); err != nil {
		t.Error(err)
	}
}

// (h) Heartbeats with a wrong key or of another group are counted and
// change nothing.
func TestForgedHeartbeat(t *testing.T) {
	const frames = 10
	for _, tc := range []struct {
		name     string
		password string
		group    uint16
		counter  func(control.HBDev) uint64
	}{
		{"wrong-key", "not-the-lab-secret", groupID, func(h control.HBDev) uint64 { return h.BadAuth }},
		{"wrong-group", lab.DefaultPassword, groupID + 1, func(h control.HBDev) uint64 { return h.Dropped }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, a, b := twoNodes(t)
			electAB(t, a, b, false)
			hb := func() control.HBDev {
				st := status(t, a)
				if len(st.HBDevs) != 1 || st.HBDevs[0].Name != "ha1" {
					t.Fatalf("node-a hbdevs %+v", st.HBDevs)
				}
				return st.HBDevs[0]
			}
			before := hb()
			// An intruder on node-b's side of the cable claims primary with
			// the highest priority and override: accepted, it would win.
			codec := heartbeat.NewCodec([]byte(tc.password), tc.group)
			err := lab.InNS(b.NS, func() error {
				link, err := heartbeat.DialLink("ha1", 0x8890)
				if err != nil {
					return err
				}
				defer link.Close()
				for i := 0; i < frames; i++ {
					f := heartbeat.Frame{GroupID: tc.group, VCluster: 1, Role: 3, Priority: 255,
						Flags: heartbeat.FlagOverride, MonitorUp: 1, MonitorTotal: 1, Uptime: 1 << 40,
						Epoch: uint64(time.Now().UnixNano()), Seq: uint64(i + 1),
						Node: "intruder", Serial: "FGVM99999999", Primary: "intruder"}
					buf, err := codec.Append(nil, &f)
					if err != nil {
						return err
					}
					if err := link.Send(buf); err != nil {
						return err
					}
					time.Sleep(5 * time.Millisecond)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("inject: %v", err)
			}
			eventually(t, 3*time.Second, "node-a counts the forged frames", func() error {
				if got := tc.counter(hb()) - tc.counter(before); got < frames {
					return fmt.Errorf("counted %d of %d", got, frames)
				}
				return nil
			})
			consistently(t, 3*hbInterval, "roles unchanged", func() error { return agree("node-a", a, b) })
			for _, n := range []*lab.Node{a, b} {
				if st := status(t, n); len(st.Members) != 2 || hasMember(st, "intruder") {
					t.Errorf("%s members %v, want node-a and node-b only", n.Name, memberNames(st))
				}
			}
			if after := hb(); after.RX <= before.RX {
				t.Errorf("node-a ha1 rx %d → %d: real heartbeats no longer counted", before.RX, after.RX)
			}
		})
	}
}

// (i) `hagentd --check`: a bad configuration exits 2 naming file, line
// and key; a good one prints ok and exits 0.
func TestConfigCheck(t *testing.T) {
	needBinaries(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte("secret-secret-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file     string
		wantCode int
		want     []string // substrings; FILE is the config's path
	}{
		{"good.yaml", 0, []string{"ok", "note: the key in cluster.password_file is root on every member"}},
		{"noserial.yaml", 0, []string{"ok", "node.serial is not set", "VMs cloned from one template share it", "sync path /srv/app is outside /etc", "ReadWritePaths=/srv/app"}},
		{"bad.yaml", 2, []string{"FILE:10: cluster.hb_intervall: unknown key", "FILE:7: node.priority:"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			tmpl, err := os.ReadFile(filepath.Join("testdata", "check", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, tc.file)
			if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(tmpl), "@DIR@", dir)), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(lab.Bin("hagentd"), "-c", path, "--check").CombinedOutput()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d\n%s", code, tc.wantCode, out)
			}
			if tc.file == "good.yaml" && strings.Contains(string(out), "node.serial is not set") {
				t.Errorf("a set serial gets a note:\n%s", out)
			}
			for _, w := range tc.want {
				if w = strings.ReplaceAll(w, "FILE", path); !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// (j) Hooks run after the takeover with the documented environment, and a
// slow hook does not delay the takeover.
func TestHooks(t *testing.T) {
	l, a, b := twoNodes(t)
	// Hooks live in the cluster: section, which the primary synchronizes:
	// both nodes get the same hook, writing a file per node.
	envBase := filepath.Join(l.Dir, "hook-env-")
	envFile := envBase + "node-b"
	hooks := map[string]string{"primary": fmt.Sprintf("f=%s$HAGENT_NODE; env > $f.tmp && mv $f.tmp $f; sleep 5", envBase)}
	pa, pb := params(200, false), params(100, false)
	pa.Hooks, pb.Hooks = hooks, hooks
	start(t, a, pa)
	start(t, b, pb)
	eventually(t, 10*time.Second, "initial election", func() error { return agree("node-a", a, b) })
	p := startProbe(t, l)
	set := time.Now()
	if out, err := a.Ctl("ha", "failover", "set"); err != nil {
		t.Fatalf("ha failover set: %v\n%s", err, out)
	}
	eventually(t, 3*time.Second, "node-b takes over", func() error { return agree("node-b", a, b) })
	if o := p.outage(t, "failover with a slow primary hook", set); o >= gracefulOutage {
		t.Errorf("outage %v, want < %v: the hook delayed the takeover?", o, gracefulOutage)
	}
	eventually(t, 3*time.Second, "the primary hook wrote its environment", func() error {
		_, err := os.Stat(envFile)
		return err
	})
	env, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(env), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "HAGENT_") {
			vars[k] = v
		}
	}
	if vars["HAGENT_ROLE"] != "primary" || vars["HAGENT_PREVIOUS_ROLE"] != "secondary" ||
		!strings.Contains(vars["HAGENT_REASON"], "node-b is selected as the primary") {
		t.Errorf("hook environment %v", vars)
	}
	// The history: the takeover first; the hook's entry only once it ends.
	var take, hook time.Time
	eventually(t, 10*time.Second, "the slow hook finishes", func() error {
		var h []control.Event
		if err := control.Call(b.Socket, control.CmdHistory, &h, 2*time.Second); err != nil {
			return err
		}
		take, hook = time.Time{}, time.Time{}
		for _, e := range h {
			switch {
			case e.Kind == "takeover" && e.Time.After(set):
				take = e.Time
			case e.Kind == "hook" && e.Role == "primary":
				hook = e.Time
				if !strings.Contains(e.Reason, "hook ran") {
					return fmt.Errorf("hook entry %q", e.Reason)
				}
			}
		}
		if take.IsZero() || hook.IsZero() {
			return fmt.Errorf("takeover at %v, hook at %v", take, hook)
		}
		return nil
	})
	t.Logf("takeover %s after failover set, hook entry %s after the takeover", take.Sub(set), hook.Sub(take))
	if !hook.After(take.Add(4 * time.Second)) {
		t.Errorf("hook entry %v is not ~5s after the takeover %v", hook, take)
	}
}

// (k) SIGHUP with a changed priority and override changes the election
// live.
func TestReloadChangesElection(t *testing.T) {
	l, a, b := twoNodes(t)
	electAB(t, a, b, false)
	p := startProbe(t, l)
	cfg, err := b.Config(params(250, true))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b.ConfigPath(), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	hup := time.Now()
	if err := b.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "node-b takes over after the reload", func() error { return agree("node-b", a, b) })
	if o := p.outage(t, "reload hand-over", hup); o >= crashOutage {
		t.Errorf("outage %v, want < %v", o, crashOutage)
	}
	st := status(t, b)
	if st.Priority != 250 || !st.Override {
		t.Errorf("node-b status priority %d override %v after reload, want 250 true", st.Priority, st.Override)
	}
	for _, n := range []*lab.Node{a, b} {
		if st := status(t, n); !strings.Contains(st.Reason, "override priority") {
			t.Errorf("%s reason %q does not name override priority", n.Name, st.Reason)
		}
	}
	if err := owns(b); err != nil {
		t.Error(err)
	}
	if err := released(a); err != nil {
		t.Error(err)
	}
}

// (l) agentctl without an agent says so and fails.
func TestAgentctlNotRunning(t *testing.T) {
	needBinaries(t)
	sock := filepath.Join(t.TempDir(), "none.sock")
	out, err := exec.Command(lab.Bin("agentctl"), "-s", sock, "ha", "status").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("agentctl ha status without an agent: %v, want a non-zero exit\n%s", err, out)
	}
	if !strings.Contains(string(out), "not running") {
		t.Errorf("output does not say the agent is not running:\n%s", out)
	}
}

// (m) `ha exposure --json` lists the heartbeat Ethertype on ha1 and the
// unix socket, and the agent listens on nothing else.
func TestExposure(t *testing.T) {
	_, a, _ := twoNodes(t)
	start(t, a, params(200, false))
	out, err := a.Ctl("ha", "exposure", "--json")
	if err != nil {
		t.Fatalf("ha exposure --json: %v\n%s", err, out)
	}
	var e control.Exposure
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var hb, unix bool
	for _, s := range e.Sockets {
		switch {
		case s.Kind == "packet" && s.Address == "ha1" && s.EtherType == "0x8890":
			hb = true
		case s.Kind == "unix" && s.Address == a.Socket:
			unix = true
		case s.Kind == "netlink":
		case s.Kind == "packet" && s.Address == "ha1" && s.EtherType == "0x8893":
			// configuration sync rides the configured hbdev
		case s.Kind == "packet" && s.Address == "port1" && s.Direction == "tx":
			// gratuitous ARPs and neighbour advertisements: send only
		default:
			t.Errorf("unexpected socket %+v", s)
		}
	}
	if !hb || !unix {
		t.Errorf("exposure lacks the heartbeat on ha1 (%v) or the control socket (%v):\n%s", hb, unix, out)
	}
	// What the kernel says: no IP socket, one listening unix socket.
	ss, err := lab.Exec(a.NS, "ss", "-H", "-a", "-n", "-p", "-t", "-u", "-w")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ss, "hagentd") {
		t.Errorf("hagentd has IP sockets:\n%s", ss)
	}
	ss, err = lab.Exec(a.NS, "ss", "-H", "-l", "-n", "-p", "-x")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(ss, "\n") {
		if strings.Contains(line, "hagentd") && !strings.Contains(line, a.Socket) {
			t.Errorf("hagentd listens on an unexpected unix socket: %s", line)
		}
	}
	if !strings.Contains(ss, a.Socket) {
		t.Errorf("control socket %s not listening:\n%s", a.Socket, ss)
	}
}

// crashFailover crashes primary a under a client probe and checks that b
// takes over, owns the vMAC and addresses, and that the client's outage
// stays below crashOutage.
func crashFailover(t *testing.T, l *lab.Lab, a, b *lab.Node, what string) {
	t.Helper()
	p := startProbe(t, l)
	crashed := time.Now()
	a.Crash()
	eventually(t, 5*time.Second, b.Name+" takes over", func() error {
		if r := b.Role(); r != "primary" {
			return fmt.Errorf("%s is %q", b.Name, r)
		}
		return nil
	})
	if out := p.outage(t, what, crashed); out >= crashOutage {
		t.Errorf("outage %v, want < %v (hb_interval %v × hb_lost_threshold %d + 200ms)", out, crashOutage, hbInterval, lostThreshold)
	}
	if err := owns(b); err != nil {
		t.Error(err)
	}
}
