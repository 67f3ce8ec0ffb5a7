package test

// One agent per box, and a primary that keeps what it holds: a second
// hagentd (or a `hagentd --release` by hand) beside a running primary
// refuses at once and changes nothing; a cluster address or vMAC that
// something else removes from the primary is put back at once.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/test/lab"
)

// restores sums the restores node n's status reports on its data
// interfaces, and returns its history entries of kind restore.
func restores(t *testing.T, n *lab.Node) (uint64, []control.Event) {
	t.Helper()
	st := status(t, n)
	var sum uint64
	for _, i := range st.Interfaces {
		sum += i.Restores
	}
	var hist []control.Event
	if err := control.Call(n.Socket, control.CmdHistory, &hist, 2*time.Second); err != nil {
		t.Fatalf("history of %s: %v", n.Name, err)
	}
	var out []control.Event
	for _, e := range hist {
		if e.Kind == "restore" {
			out = append(out, e)
		}
	}
	return sum, out
}

// TestSecondAgentRefused: beside a running primary, a second hagentd with
// the same configuration (a manual start next to the service, a
// configuration tool) and a `hagentd --release` by hand, with the same run
// directory or another one, refuse at once, name the running pid, and cost
// a client probing every millisecond nothing. Before the lock they
// restored the permanent MAC and removed the cluster addresses of the live
// primary (which never put them back), and only then found the control
// socket taken: the client lost every probe from then on.
func TestSecondAgentRefused(t *testing.T) {
	l, a, b := twoNodes(t)
	electAB(t, a, b, false)
	p := startProbeEvery(t, l, time.Millisecond)
	want := fmt.Sprintf("another hagentd (pid %d) is running", a.PID())
	otherRunDir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"hagentd", []string{"-c", a.ConfigPath(), "-state-dir", a.StateDir, "-run-dir", a.RunDir}},
		{"hagentd --release", []string{"-c", a.ConfigPath(), "-run-dir", a.RunDir, "--release"}},
		{"hagentd, another run dir", []string{"-c", a.ConfigPath(), "-state-dir", t.TempDir(), "-run-dir", otherRunDir}},
		{"hagentd --release, another run dir", []string{"-c", a.ConfigPath(), "-run-dir", otherRunDir, "--release"}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", a.NS, lab.Bin("hagentd")}, tc.args...)...)
		began := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(began)
		cancel()
		var ee *exec.ExitError
		code := -1
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		t.Logf("%s beside the running primary: exit %d after %v: %s", tc.name, code, took.Round(time.Millisecond), strings.TrimSpace(string(out)))
		if code != 1 || !strings.Contains(string(out), want) {
			t.Errorf("%s beside the running primary: exit %d (%v), output %q; want exit 1 and %q", tc.name, code, err, out, want)
		}
	}
	// Nothing changed: node-a still holds everything, its guard had
	// nothing to put back, and the client lost nothing.
	time.Sleep(300 * time.Millisecond) // the last probes' answers
	r := p.stop()
	t.Logf("measured: client probing every 1 ms while the four were refused: %s", r)
	if r.Lost != 0 || !r.Recovered {
		t.Errorf("the client lost %d probes (%s), want 0", r.Lost, r)
	}
	if err := agree("node-a", a, b); err != nil {
		t.Error(err)
	}
	if err := owns(a); err != nil {
		t.Error(err)
	}
	if n, entries := restores(t, a); n != 0 || len(entries) != 0 {
		t.Errorf("node-a had to put back %d times (%v): the refused hagentd changed something", n, entries)
	}
}

// vmacOf is the vMAC of node n's port1 (from its status).
func vmacOf(t *testing.T, n *lab.Node) net.HardwareAddr {
	t.Helper()
	st := status(t, n)
	if len(st.Interfaces) == 0 {
		t.Fatalf("%s reports no data interface", n.Name)
	}
	mac, err := net.ParseMAC(st.Interfaces[0].VMAC)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// onNode runs fn with a netlink handle in node n's namespace and its port1,
// from this process: no fork (which would stall the echo responders
// answering the probes, and be measured as an outage).
func onNode(t *testing.T, n *lab.Node, fn func(h *netlink.Handle, port1 netlink.Link) error) {
	t.Helper()
	err := lab.InNS(n.NS, func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		link, err := h.LinkByName("port1")
		if err != nil {
			return err
		}
		return fn(h, link)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// watchRestore follows node n's address and link notifications and returns
// a function that waits (up to 5 s) for the cluster IPv4 address to be
// added and port1 to carry mac again, and says when that was.
func watchRestore(t *testing.T, n *lab.Node, mac net.HardwareAddr) func() (time.Time, error) {
	t.Helper()
	ns, err := netns.GetFromName(n.NS)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	ach := make(chan netlink.AddrUpdate, 256)
	lch := make(chan netlink.LinkUpdate, 256)
	stop := func() {
		close(done)
		ns.Close()
		go func() {
			for range ach {
			}
		}()
		go func() {
			for range lch {
			}
		}()
	}
	if err := netlink.AddrSubscribeWithOptions(ach, done, netlink.AddrSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSubscribeWithOptions(lch, done, netlink.LinkSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}
	return func() (time.Time, error) {
		defer stop()
		var addrAt, macAt time.Time
		gone := false // the address was seen removed (or the MAC changed)
		timeout := time.After(5 * time.Second)
		for {
			select {
			case u := <-ach:
				if u.LinkAddress.IP.Equal(net.ParseIP(lab.ClusterIPv4)) {
					if !u.NewAddr {
						gone, addrAt = true, time.Time{}
					} else if gone {
						addrAt = time.Now()
					}
				}
			case u := <-lch:
				if u.Link.Attrs().Name == "port1" {
					if u.Link.Attrs().HardwareAddr.String() != mac.String() {
						gone, macAt = true, time.Time{}
					} else if gone {
						macAt = time.Now()
					}
				}
			case <-timeout:
				return time.Time{}, errors.New("the cluster address or the vMAC was not put back within 5 s")
			}
			if !gone {
				continue
			}
			// Back when the last restore event came: the address, and
			// the MAC if it was the MAC that changed.
			if !addrAt.IsZero() || !macAt.IsZero() {
				at := addrAt
				if macAt.After(at) {
					at = macAt
				}
				if st, err := n.Status(); err == nil && len(st.Interfaces) > 0 && st.Interfaces[0].Owned && len(st.Interfaces[0].Addresses) >= 2 {
					return at, nil
				}
			}
		}
	}
}

// TestGuardRestoresAddress: the cluster address deleted by hand on the
// primary (ip addr del) answers again within 10 ms, measured by a client
// probing every millisecond; the same after `ip addr flush`, and after the
// vMAC is changed by hand (ip link set dev port1 address <permanent>). Each
// is logged, entered in the history and counted. Before the guard, the
// primary went on saying primary without the address (or MAC) and the
// client got no answer until the next role change.
func TestGuardRestoresAddress(t *testing.T) {
	l, a, b := twoNodes(t)
	electAB(t, a, b, false)
	st := status(t, a)
	if len(st.Interfaces) == 0 {
		t.Fatal("node-a reports no data interface")
	}
	perm, err := net.ParseMAC(st.Interfaces[0].PermMAC)
	if err != nil {
		t.Fatal(err)
	}
	cluster4 := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(lab.ClusterIPv4).To4(), Mask: net.CIDRMask(24, 32)}}
	cases := []struct {
		name   string
		change func(h *netlink.Handle, port1 netlink.Link) error
		bound  time.Duration
	}{
		{"ip addr del " + lab.ClusterIPv4 + "/24 dev port1", func(h *netlink.Handle, port1 netlink.Link) error {
			return h.AddrDel(port1, cluster4)
		}, 10 * time.Millisecond},
		{"ip addr flush dev port1", func(h *netlink.Handle, port1 netlink.Link) error {
			list, err := h.AddrList(port1, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			for _, ad := range list {
				if err := h.AddrDel(port1, &ad); err != nil {
					return err
				}
			}
			return nil
		}, 10 * time.Millisecond},
		{"ip link set dev port1 address " + perm.String(), func(h *netlink.Handle, port1 netlink.Link) error {
			return h.LinkSetHardwareAddr(port1, perm)
		}, 10 * time.Millisecond},
	}
	if err := l.StartEcho(); err != nil {
		t.Fatalf("echo: %v", err)
	}
	for i, tc := range cases {
		lp, err := l.StartProbe(lab.ClusterIPv4, time.Millisecond)
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		p := answeredProbe(t, lp, "client reaches the cluster address")
		time.Sleep(100 * time.Millisecond) // a run of answers before the change
		wait := watchRestore(t, a, vmacOf(t, a))
		changed := time.Now()
		onNode(t, a, tc.change)
		back, err := wait()
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		} else {
			t.Logf("measured: %s on the primary: put back %v later (netlink notifications)", tc.name, back.Sub(changed).Round(time.Microsecond))
		}
		out := p.outage(t, tc.name+" on the primary", changed)
		if out >= tc.bound {
			t.Errorf("%s: the client's outage was %v, want < %v", tc.name, out, tc.bound)
		}
		if err := owns(a); err != nil {
			t.Errorf("after %s: %v", tc.name, err)
		}
		n, entries := restores(t, a)
		if n < uint64(i+1) || len(entries) == 0 {
			t.Errorf("after %s: restores %d, history %v; want at least %d and an entry", tc.name, n, entries, i+1)
		}
	}
	if err := agree("node-a", a, b); err != nil {
		t.Error(err)
	}
	_, entries := restores(t, a)
	for _, e := range entries {
		t.Logf("node-a history: %s %s", e.Kind, e.Reason)
	}
}
