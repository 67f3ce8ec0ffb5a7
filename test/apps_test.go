package test

// Real applications across a failover of the firewall pair (deploy/firewall:
// masquerade to the WAN cluster address, a forward chain accepting only
// established/related from the WAN, nf_conntrack_tcp_loose=0, session
// pickup with connectionless, NAT and expectations, the kernel's FTP
// helper). Debian's servers run in the server namespace, their clients in
// the client namespace; every application runs at once through one pair,
// across a crash (the lab's: every link down, then SIGKILL), a SIGTERM, a
// link failure of the monitored ports and `ha failover set` of the
// primary, then once more with session pickup off on the member that
// takes over (the control).

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hagent/hagent/sessionsync"
	"github.com/hagent/hagent/test/lab"
)

// appsKnownBroken are the applications expected not to survive a failover
// with session pickup today, and why: "app" for every failover kind,
// "app/kind" for one. Their failure is reported (in the table and the
// summary) without failing the test; HAGENT_APPS_STRICT=1 counts them as
// failures. Remove an entry when its fix lands: the suite then requires
// the application to survive.
//
// HAGENT_APPS_KINDS=crash,link,… runs only those failover kinds (and
// control-crash only if named), to chase one.
var appsKnownBroken = map[string]string{
	// Empty: active FTP across sigterm, link and failover-set (a race on
	// a loaded machine, 2 of 9 rounds) was lost when node-b renewed the
	// entries it forwards once node-a released the virtual MAC: deleting
	// the FTP control connection's entry took the expectation of a PORT
	// sent just after the takeover with it (425), and a PORT rewritten
	// during the renewal's dump had its sequence adjustment undone by the
	// dump's copy (a timeout). The renewal re-creates the expectations of
	// the masters it replaces and reads each master again just before
	// (sessionsync.TestKernelRenewKeepsExpectations,
	// TestKernelRenewReadsMastersAgain).
}

// knownBroken returns why app is expected to fail the kind failover, or
// "".
func knownBroken(app, kind string) string {
	if why, ok := appsKnownBroken[app+"/"+kind]; ok {
		return why
	}
	return appsKnownBroken[app]
}

// appsNoControl are the applications a failover without session pickup
// does not break, and why: their control run is reported, not required
// to fail.
var appsNoControl = map[string]string{
	"dns":       "each query is a new flow from the LAN",
	"icmp-echo": "each echo request from the LAN creates the flow anew",
}

// appsStream is the length of the iperf3 streams: the failover comes
// about 2-4 s into them, and 4 s of traffic follow it.
const appsStream = 10 * time.Second

// appsPickup is the session_pickup section of the pair (as
// deploy/firewall/hagent.yaml, with expectations for the FTP helper);
// the monitored ports are deploy/firewall's.
const appsPickup = "monitor: [port1, port2]\nsession_pickup: {enabled: %v, connectionless: true, nat: true, expectation: true}\nsync: {enabled: false}"

type appsRow struct {
	kind   string
	res    lab.AppResult
	result string
}

// TestApplicationsFailover: iperf3 TCP and UDP streams, an OpenSSH
// session, active FTP (the helper rewriting PORT to an address of another
// length, and of the same length), passive FTP, DNS and ICMP echo through
// the firewall pair, all at once, across each failover kind of the primary (node-a, which takes the
// role back after each: override). Each must survive with session pickup;
// with session pickup off on node-b (the control, crash only) the TCP
// applications and the UDP stream from the WAN must not.
func TestApplicationsFailover(t *testing.T) {
	if len(lab.ClientIPv4) == len(lab.WANClusterIPv4) || len(lab.FTPSameLengthClient) != len(lab.WANClusterIPv4) {
		t.Fatalf("client %s must differ in length from the WAN cluster address %s, %s not", lab.ClientIPv4, lab.WANClusterIPv4, lab.FTPSameLengthClient)
	}
	l := newLab(t, lab.Spec{Nodes: []string{"node-a", "node-b"}, WAN: true})
	if missing := lab.MissingAppPackages(); len(missing) > 0 {
		if err := lab.AptInstall(missing...); err != nil {
			t.Fatal(err)
		}
	}
	began := time.Now()
	if err := l.SetupFirewall(); err != nil {
		t.Fatal(err)
	}
	if err := l.SetupFTPHelper(); err != nil {
		t.Fatal(err)
	}
	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	pa, pb := appsParams(200, true), appsParams(100, true)
	start(t, a, pa)
	start(t, b, pb)
	eventually(t, 15*time.Second, "initial election", func() error { return agree("node-a", a, b) })
	srv, err := lab.StartAppServers(l)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	var rows []appsRow
	strict := os.Getenv("HAGENT_APPS_STRICT") != ""
	for _, k := range []struct {
		name          string
		fail, restore func(t *testing.T)
	}{
		{"crash", func(t *testing.T) { a.Crash() }, func(t *testing.T) {
			if err := a.Revive(); err != nil {
				t.Fatal(err)
			}
			start(t, a, pa)
		}},
		{"sigterm", func(t *testing.T) {
			if err := a.Stop(10 * time.Second); err != nil {
				t.Errorf("SIGTERM: %v", err)
			}
		}, func(t *testing.T) { start(t, a, pa) }},
		{"link", func(t *testing.T) { setPorts(t, a, false) }, func(t *testing.T) { setPorts(t, a, true) }},
		{"failover-set", func(t *testing.T) { mustCtl(a, "ha", "failover", "set") }, func(t *testing.T) { mustCtl(a, "ha", "failover", "unset") }},
	} {
		if only := os.Getenv("HAGENT_APPS_KINDS"); only != "" && !strings.Contains(","+only+",", ","+k.name+",") {
			continue
		}
		t.Run(k.name, func(t *testing.T) {
			res := appsRound(t, l, srv, a, b, true, k.fail)
			k.restore(t)
			for _, r := range res {
				row := appsRow{kind: k.name, res: r, result: "ok"}
				if !r.OK {
					row.result = "FAIL"
					if why := knownBroken(r.App, k.name); why != "" && !strict {
						row.result = "FAIL (known: " + why + ")"
					} else {
						t.Errorf("%s did not survive the %s failover: %s (%s)", r.App, k.name, r.Detail, r.Figure)
					}
				} else if knownBroken(r.App, k.name) != "" {
					row.result = "ok (known broken, not hit this time)"
				}
				rows = append(rows, row)
			}
			// node-a takes the role back (override) with b's copies.
			eventually(t, 20*time.Second, "node-a primary again", func() error { return agree("node-a", a, b) })
		})
	}
	t.Run("control-crash", func(t *testing.T) {
		if only := os.Getenv("HAGENT_APPS_KINDS"); only != "" && !strings.Contains(","+only+",", ",control-crash,") {
			t.Skip("not in HAGENT_APPS_KINDS")
		}
		b.Kill()
		start(t, b, appsParams(100, false))
		eventually(t, 15*time.Second, "node-b back as secondary without session pickup", func() error { return agree("node-a", a, b) })
		for _, r := range appsRound(t, l, srv, a, b, false, func(t *testing.T) { a.Crash() }) {
			row := appsRow{kind: "crash, no pickup", res: r, result: "lost (as it must)"}
			if r.OK {
				if why, ok := appsNoControl[r.App]; ok {
					row.result = "ok (no control: " + why + ")"
				} else {
					row.result = "SURVIVED"
					t.Errorf("control: %s survived a crash without session pickup: the suite cannot tell (%s)", r.App, r.Figure)
				}
			}
			rows = append(rows, row)
		}
	})

	t.Logf("measured: apps: %-18s %-16s %-36s %s", "application", "failover", "result", "gap/figure")
	var known []string
	for _, r := range rows {
		t.Logf("measured: apps: %-18s %-16s %-36s %s", r.res.App, r.kind, r.result, r.res.Figure)
		if !r.res.OK && r.res.Detail != "" {
			t.Logf("measured: apps:   (%s, %s: %s)", r.res.App, r.kind, r.res.Detail)
		}
		if strings.HasPrefix(r.result, "FAIL (known") {
			known = append(known, r.res.App+" ("+r.kind+")")
		}
	}
	if len(known) > 0 {
		t.Logf("measured: apps: known broken, not failing the test: %s", strings.Join(known, ", "))
	}
	t.Logf("measured: apps: suite took %v", time.Since(began).Round(time.Second))
}

// appsParams are the pair's parameters: 100 ms heartbeats on a direct
// cable (a crash is seen by the carrier at once), 8 lost before a peer is
// (a loaded machine starves the agents for 0.5 s at times: no failover
// of its own in the middle of a round), override (node-a takes the role
// back after each round).
func appsParams(prio int, pickup bool) lab.Params {
	p := params(prio, true)
	p.HBInterval, p.LostThreshold, p.Direct, p.NoIPv6 = 100*time.Millisecond, 8, true, true
	p.ClusterExtra = fmt.Sprintf(appsPickup, pickup)
	return p
}

func setPorts(t *testing.T, n *lab.Node, up bool) {
	t.Helper()
	for _, p := range []string{"port1", "port2"} {
		if err := n.SetLink(p, up); err != nil {
			t.Fatal(err)
		}
	}
}

// appsRound starts every application through primary a, waits until
// node-b holds a copy of each long-lived flow (with pickup), fails a, waits
// for b to take over, and returns what each application saw.
func appsRound(t *testing.T, l *lab.Lab, srv *lab.AppServers, a, b *lab.Node, pickup bool, fail func(t *testing.T)) []lab.AppResult {
	t.Helper()
	if err := agree("node-a", a, b); err != nil {
		t.Fatalf("before the round: %v", err)
	}
	if err := srv.StartIperfServers(); err != nil {
		t.Fatal(err)
	}
	var apps []lab.App
	defer func() {
		for _, app := range apps {
			app.Kill()
		}
	}()
	// The sessions first (logins, first transfers), then the streams, so
	// that the failover comes early in them.
	for _, group := range [][]lab.App{srv.Apps(), srv.Streams(appsStream)} {
		apps = append(apps, group...)
		errs := make([]error, len(group))
		var wg sync.WaitGroup
		for i, app := range group {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = app.Start() }()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s did not start: %v", group[i].Name(), err)
			}
		}
	}
	if pickup {
		// The FTP helper rewrote the active clients' PORT to the cluster
		// address (vsftpd refuses a PORT to another address than the
		// control connection's peer, so both first transfers prove it
		// too): one byte longer than ClientIPv4, as long as
		// FTPSameLengthClient.
		if log, err := os.ReadFile(srv.FTPLog); err != nil || !strings.Contains(string(log), `"PORT `+strings.ReplaceAll(lab.WANClusterIPv4, ".", ",")+",") {
			t.Fatalf("vsftpd got no PORT with the cluster address (%v): the helper did not rewrite it", err)
		}
	}
	poll(t, 6*time.Second, 100*time.Millisecond, "every application's flows on node-a and their copies on node-b", func() error {
		return appFlowsCopied(a, b, pickup)
	})
	time.Sleep(time.Second) // steady traffic before the fault
	fault := time.Now()
	fail(t)
	poll(t, 10*time.Second, 20*time.Millisecond, "node-b takes over", func() error {
		if r := b.Role(); r != "primary" {
			return fmt.Errorf("node-b is %q", r)
		}
		return nil
	})
	took := time.Since(fault)
	t.Logf("node-b primary %v after the fault", took.Round(time.Millisecond))
	settle := time.Now().Add(3 * time.Second)
	out := make([]lab.AppResult, len(apps))
	var wg sync.WaitGroup
	for i, app := range apps {
		wg.Add(1)
		go func() { defer wg.Done(); out[i] = app.Finish(fault, settle) }()
	}
	wg.Wait()
	return out
}

// appFlowsCopied checks that node-a tracks the long-lived flows of every
// application (ssh, two FTP control connections, two iperf3 control and
// data connections each, the UDP stream, the echo) and, with pickup, that
// node-b holds a copy of each.
func appFlowsCopied(a, b *lab.Node, pickup bool) error {
	srv := lab.ServerIPv4
	long := func(f *sessionsync.Flow) bool {
		if f.Orig.Dst.String() != srv {
			return false
		}
		switch f.Proto {
		case sessionsync.ProtoTCP:
			p := f.Orig.DstPort
			return f.TCP != nil && f.TCP.State == sessionsync.TCPEstablished &&
				(p == 22 || p == 21 || p == lab.IperfTCPPort || p == lab.IperfUDPPort)
		case sessionsync.ProtoUDP:
			return f.Orig.DstPort == lab.IperfUDPPort
		case sessionsync.ProtoICMP:
			return true
		}
		return false
	}
	// ssh 1, FTP control 3, iperf3 TCP 2 (control, data), iperf3 UDP 2
	// (control, stream), echo 1
	const want = 9
	fa, err := a.Flows()
	if err != nil {
		return err
	}
	ka := flowKeys(fa, long)
	if len(ka) < want {
		return fmt.Errorf("node-a tracks %d of the applications' flows, want >= %d", len(ka), want)
	}
	if !pickup {
		return nil
	}
	fb, err := b.Flows()
	if err != nil {
		return err
	}
	kb := flowKeys(fb, long)
	for k, f := range ka {
		if _, ok := kb[k]; !ok {
			return fmt.Errorf("node-b lacks %s", f.String())
		}
	}
	return nil
}
