package test

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"

	"github.com/hagent/hagent/test/lab"
)

// announcement is one gratuitous ARP or unsolicited NA for a cluster
// address, as the client saw it.
type announcement struct {
	at  time.Time
	v6  bool
	src net.HardwareAddr
}

// captureAnnouncements records, on the client's eth0, every gratuitous ARP
// (sender = target = ClusterIPv4) and unsolicited neighbour advertisement
// (type 136, target ClusterIPv6) until the test ends.
func captureAnnouncements(t *testing.T, l *lab.Lab) func() []announcement {
	t.Helper()
	const ethAll = 0x0003
	var conn *packet.Conn
	if err := lab.InNS(l.Client, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, ethAll, nil)
		return err
	}); err != nil {
		t.Fatalf("capture on the client: %v", err)
	}
	v4 := netip.MustParseAddr(lab.ClusterIPv4).As4()
	v6 := netip.MustParseAddr(lab.ClusterIPv6).As16()
	var mu sync.Mutex
	var got []announcement
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			f := buf[:n]
			if len(f) < 14 {
				continue
			}
			a := announcement{at: time.Now(), src: net.HardwareAddr(bytes.Clone(f[6:12]))}
			switch binary.BigEndian.Uint16(f[12:14]) {
			case 0x0806: // ARP: sender IP at 14+14, target IP at 14+24
				if len(f) < 42 || !bytes.Equal(f[28:32], v4[:]) || !bytes.Equal(f[38:42], v4[:]) {
					continue
				}
			case 0x86dd: // IPv6, ICMPv6 (58) type 136, target at 14+40+8
				if len(f) < 78 || f[20] != 58 || f[54] != 136 || !bytes.Equal(f[62:78], v6[:]) {
					continue
				}
				a.v6 = true
			default:
				continue
			}
			mu.Lock()
			got = append(got, a)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return func() []announcement {
		mu.Lock()
		defer mu.Unlock()
		out := got
		got = nil
		return out
	}
}

// TestARPsRefresh: with arps_refresh 2s and a takeover burst of one
// round, the client sees a gratuitous ARP and an unsolicited NA for the
// cluster addresses from the primary's vMAC every 2s ±10% (plus
// scheduling), and none from the secondary.
// Without the refresh the primary is silent after its takeover round and
// the client sees nothing.
func TestARPsRefresh(t *testing.T) {
	l, a, b := twoNodes(t)
	const every = 2 * time.Second
	pa, pb := params(200, false), params(100, false)
	for _, p := range []*lab.Params{&pa, &pb} {
		p.ARPs = 1
		p.ClusterExtra = "arps_refresh: 2s"
	}
	startPair(t, a, b, pa, pb)
	take := captureAnnouncements(t, l)
	// The election's own announcements (node-b's arrival makes node-a
	// re-announce for a few heartbeats) are over before the window.
	time.Sleep(500 * time.Millisecond)
	take()
	const window = 11 * time.Second
	time.Sleep(window)
	got := take()
	var v4, v6 []time.Time
	for _, x := range got {
		if x.src.String() != vmac {
			t.Errorf("announcement from %s, not the vMAC %s", x.src, vmac)
		}
		if x.v6 {
			v6 = append(v6, x.at)
		} else {
			v4 = append(v4, x.at)
		}
	}
	for _, fam := range []struct {
		name string
		at   []time.Time
	}{{"gratuitous ARP", v4}, {"unsolicited NA", v6}} {
		// 11 s holds at least 4 periods of at most 2.2 s + a tick.
		if len(fam.at) < 4 || len(fam.at) > 7 {
			t.Errorf("%d %ss in %s with arps_refresh %s, want 4-7", len(fam.at), fam.name, window, every)
			continue
		}
		for i := 1; i < len(fam.at); i++ {
			gap := fam.at[i].Sub(fam.at[i-1])
			t.Logf("%s gap %d: %s", fam.name, i, gap.Round(time.Millisecond))
			if gap < every*9/10-50*time.Millisecond || gap > every*11/10+150*time.Millisecond {
				t.Errorf("%s gap %d is %s, want %s ±10%% (+ scheduling)", fam.name, i, gap, every)
			}
		}
	}
	st, err := a.Status()
	if err != nil {
		t.Fatal(err)
	}
	if r := st.ARPsRefresh; r == nil || r.EveryMs != every.Milliseconds() || r.Sent < uint64(len(v4)) || r.LastAgoMs < 0 {
		t.Errorf("node-a status arps_refresh %+v, want every %s and at least %d rounds", r, every, len(v4))
	} else {
		t.Logf("node-a: %s", r)
	}
	if st, err := b.Status(); err != nil || st.ARPsRefresh == nil || st.ARPsRefresh.Sent != 0 {
		t.Errorf("node-b (secondary) status arps_refresh %+v (%v), want 0 rounds", st.ARPsRefresh, err)
	}
}
