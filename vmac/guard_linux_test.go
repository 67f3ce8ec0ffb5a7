//go:build linux

package vmac

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hagent/hagent/internal/testutil"
	"github.com/vishvananda/netlink"
)

// guardReports collects what Guard reports.
type guardReports struct {
	mu   sync.Mutex
	rs   []Restored
	errs []error
}

func (g *guardReports) add(rs []Restored, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rs = append(g.rs, rs...)
	if err != nil {
		g.errs = append(g.errs, err)
	}
}

func (g *guardReports) get() ([]Restored, []error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.rs), slices.Clone(g.errs)
}

// startGuard runs m.Guard until the test ends.
func startGuard(t *testing.T, m *Manager) *guardReports {
	t.Helper()
	g := &guardReports{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Guard(ctx, g.add) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Guard: %v", err)
		}
	})
	return g
}

func (tp *topo) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := tp.nodeH.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (tp *topo) delAddr(t *testing.T, name string, p netip.Prefix) {
	t.Helper()
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if err := tp.nodeH.AddrDel(tp.link(t, name), a); err != nil {
		t.Fatalf("delete %s from %s: %v", p, name, err)
	}
}

// A Manager that holds the vMACs puts back, at once, a cluster address
// deleted by someone else (ip addr del, ip addr flush) and its vMAC
// changed by someone else (ip link set address), announces again, counts
// it, and reports what it did. Its own Take and Release never trigger a
// restore, and after Release nothing is put back. Without Guard (the code
// before it) nothing comes back: the primary stays without its address
// until the next role change.
func TestGuardRestores(t *testing.T) {
	tp := newTopo(t)
	m, err := tp.newManager(t, testConfig(t, 1, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	vmac1, err := MAC(10, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rs, err := m.Restore(); len(rs) != 0 || err != nil {
		t.Fatalf("Restore before Take: %v, %v; want nothing", rs, err)
	}
	g := startGuard(t, m)
	// Its own changes, many times over, end holding: no restore.
	for i := 0; i < 20; i++ {
		if _, err := m.Take(); err != nil {
			t.Fatal(err)
		}
		if err := m.Release(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Take(); err != nil {
		t.Fatal(err)
	}
	cap1 := tp.capture(t, "peer1")

	hasAll := func(name string, want ...netip.Prefix) func() bool {
		return func() bool {
			got, _ := tp.addrs(t, name)
			for _, p := range want {
				if !got[p] {
					return false
				}
			}
			return true
		}
	}
	// ip addr del
	tp.delAddr(t, "port1", v4a)
	testutil.Eventually(t, 5*time.Second, "10.9.0.100/24 back on port1", hasAll("port1", v4a, v6a))
	testutil.Eventually(t, 5*time.Second, "a gratuitous ARP after the restore", func() bool { return cap1.garps(vmac1, v4a.Addr()) > 0 })
	// ip addr flush dev port1
	list, err := tp.nodeH.AddrList(tp.link(t, "port1"), netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list {
		_ = tp.nodeH.AddrDel(tp.link(t, "port1"), &a)
	}
	testutil.Eventually(t, 5*time.Second, "both cluster addresses back on port1 after a flush", hasAll("port1", v4a, v6a))
	// ip link set dev port1 address <permanent>
	if err := tp.nodeH.LinkSetHardwareAddr(tp.link(t, "port1"), tp.origMAC["port1"]); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the vMAC back on port1", func() bool { return bytes.Equal(tp.mac(t, "port1"), vmac1) })
	// Each change made by hand is one restore, or two for the flush (its
	// two deletions may be seen apart); the 41 Takes and Releases before
	// them caused none.
	var rs []Restored
	testutil.Eventually(t, 5*time.Second, "the vMAC's restore reported", func() bool {
		rs, _ = g.get()
		return len(rs) > 0 && rs[len(rs)-1].Found != nil
	})
	if _, errs := g.get(); len(errs) > 0 {
		t.Errorf("Guard reported errors: %v", errs)
	}
	t.Logf("restored: %v", rs)
	if len(rs) < 3 || len(rs) > 4 {
		t.Fatalf("restores %v, want 3 or 4", rs)
	}
	if rs[0].Interface != "port1" || !slices.Equal(rs[0].Addresses, []netip.Prefix{v4a}) || rs[0].Found != nil {
		t.Errorf("first restore %v, want port1: 10.9.0.100/24", rs[0])
	}
	last := rs[len(rs)-1]
	if !bytes.Equal(last.Found, tp.origMAC["port1"]) || !bytes.Equal(last.VMAC, vmac1) || len(last.Addresses) != 0 {
		t.Errorf("last restore %v, want the vMAC set again over %s", last, tp.origMAC["port1"])
	}
	for _, st := range m.Status() {
		want := uint64(0)
		if st.Name == "port1" {
			want = uint64(len(rs))
		}
		if st.Restores != want {
			t.Errorf("%s: Restores %d, want %d", st.Name, st.Restores, want)
		}
	}

	// Released: nothing is put back, and a MAC set by someone else after
	// the release is left alone.
	if err := m.Release(); err != nil {
		t.Fatal(err)
	}
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x42}
	if err := tp.nodeH.LinkSetHardwareAddr(tp.link(t, "port1"), other); err != nil {
		t.Fatal(err)
	}
	if rs, err := m.Restore(); len(rs) != 0 || err != nil {
		t.Fatalf("Restore after Release: %v, %v; want nothing", rs, err)
	}
	if got, _ := tp.addrs(t, "port1"); got[v4a] || !bytes.Equal(tp.mac(t, "port1"), other) {
		t.Errorf("after Release: port1 has %v and MAC %s, want no cluster address and %s", got, tp.mac(t, "port1"), other)
	}
}

// The restore budget: GuardBurst at once, then one per GuardRefill, never
// more than GuardBurst saved up.
func TestGuardBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	g := &guard{tokens: GuardBurst, at: t0}
	for i := 0; i < GuardBurst; i++ {
		if w := g.allowed(t0); w != 0 {
			t.Fatalf("restore %d of a burst must wait %v", i+1, w)
		}
		g.tokens--
	}
	if w := g.allowed(t0); w != GuardRefill {
		t.Fatalf("after the burst: wait %v, want %v", w, GuardRefill)
	}
	if w := g.allowed(t0.Add(GuardRefill / 2)); w != GuardRefill/2 {
		t.Fatalf("half a refill later: wait %v, want %v", w, GuardRefill/2)
	}
	if w := g.allowed(t0.Add(GuardRefill)); w != 0 {
		t.Fatalf("a refill later: wait %v, want 0", w)
	}
	// An hour of quiet saves up no more than a burst.
	g.allowed(t0.Add(time.Hour))
	if g.tokens != GuardBurst {
		t.Fatalf("tokens after an hour: %v, want %d", g.tokens, GuardBurst)
	}
}
