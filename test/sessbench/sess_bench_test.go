// Package sessbench compares hagent's session pickup with conntrackd (FTFW
// over the hb link, driven by keepalived and primary-backup.sh as
// conntrackd's documentation shows) in the same netns firewall lab, in the
// same run (make bench; HAGENT_BENCH=1).
package sessbench

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/sessionsync"
	"github.com/hagent/hagent/test/lab"
	"github.com/hagent/hagent/test/proc"
)

func needBench(t *testing.T) {
	t.Helper()
	if os.Getenv("HAGENT_BENCH") == "" {
		t.Skip("set HAGENT_BENCH=1 (make bench)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := lab.EnsureConntrackd(); err != nil {
		t.Skip(err)
	}
	if _, err := lab.EnsureKeepalived(); err != nil {
		t.Skip(err)
	}
}

func firewallLab(t *testing.T) (*lab.Lab, *lab.Node, *lab.Node) {
	t.Helper()
	l, err := lab.New(lab.Spec{Nodes: []string{"node-a", "node-b"}, WAN: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if err := l.SetupFirewall(); err != nil {
		t.Fatal(err)
	}
	return l, l.Nodes["node-a"], l.Nodes["node-b"]
}

func hagentParams(prio int) lab.Params {
	return lab.Params{GroupID: 10, Priority: prio, HBInterval: 100 * time.Millisecond, LostThreshold: 3,
		HelloHolddown: 500 * time.Millisecond, Direct: true, Monitor: true, NoIPv6: true,
		ClusterExtra: "session_pickup: {enabled: true}\nsync: {enabled: false}"}
}

func sessions(n *lab.Node) (*sessionsync.Status, error) {
	var st control.Status
	if err := control.Call(n.Socket, control.CmdStatus, &st, 5*time.Second); err != nil {
		return nil, err
	}
	return st.Sessions, nil
}

func keepalivedParams(prio int, c *lab.Conntrackd) lab.KeepalivedParams {
	return lab.KeepalivedParams{AdvertInt: 100 * time.Millisecond, Priority: prio, Interface: "ha1", DontTrackPrimary: true,
		TrackPort1: true, ExtraVIPs: []string{lab.WANClusterIPv4 + "/24 dev port2"},
		Notify: map[string]string{"master": c.Script + " primary", "backup": c.Script + " backup", "fault": c.Script + " fault"}}
}

// results collects the rows of the comparison, written to
// bench-results/sessions.md.
type row struct{ what, hagent, conntrackd, ratio string }

var rows []row

func addRow(t *testing.T, r row) {
	rows = append(rows, r)
	writeRows(t, "sessions.md", "| measurement | hagent | conntrackd (FTFW) + keepalived | ratio |", rows)
}

// writeRows logs the last row and writes the table to bench-results/file.
func writeRows(t *testing.T, file, header string, rows []row) {
	r := rows[len(rows)-1]
	t.Logf("measured: %s: hagent %s, conntrackd %s, ratio %s", r.what, r.hagent, r.conntrackd, r.ratio)
	var b strings.Builder
	b.WriteString(header + "\n|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.what, r.hagent, r.conntrackd, r.ratio)
	}
	dir := filepath.Join(lab.RepoRoot(), "bench-results")
	_ = os.MkdirAll(dir, 0o755)
	_ = os.WriteFile(filepath.Join(dir, file), []byte(b.String()), 0o644)
}

// TestSessionBenchCrash: 1000 long-lived connections through the pair,
// crash of the primary; connections that go on, and resets.
func TestSessionBenchCrash(t *testing.T) {
	needBench(t)
	const n = 1000
	measure := func(t *testing.T, l *lab.Lab, crash func(), survivorPrimary func() bool) lab.LoadReport {
		load, err := lab.StartTCPLoad(l, n, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		defer load.Stop()
		time.Sleep(3 * time.Second) // replication of the new flows
		load.ResetStalls()
		crash()
		if err := lab.Eventually(10*time.Second, func() error {
			if !survivorPrimary() {
				return fmt.Errorf("no takeover")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		return load.Report(time.Second)
	}
	var hr, cr lab.LoadReport
	t.Run("hagent", func(t *testing.T) {
		l, a, b := firewallLab(t)
		if err := a.Start(hagentParams(200)); err != nil {
			t.Fatal(err)
		}
		if err := b.Start(hagentParams(100)); err != nil {
			t.Fatal(err)
		}
		if err := lab.Eventually(10*time.Second, func() error {
			if a.Role() != "primary" || b.Role() != "secondary" {
				return fmt.Errorf("roles %s/%s", a.Role(), b.Role())
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		hr = measure(t, l, a.Crash, func() bool { return b.Role() == "primary" })
		t.Logf("hagent: %s", hr)
	})
	t.Run("conntrackd", func(t *testing.T) {
		l, a, b := firewallLab(t)
		ca := startConntrackd(t, a, b)
		cb := startConntrackd(t, b, a)
		ka, err := a.StartKeepalived(keepalivedParams(200, ca))
		if err != nil {
			t.Fatal(err)
		}
		defer ka.Kill()
		kb, err := b.StartKeepalived(keepalivedParams(100, cb))
		if err != nil {
			t.Fatal(err)
		}
		defer kb.Kill()
		if err := lab.Eventually(15*time.Second, func() error {
			if ka.State() != "MASTER" || kb.State() != "BACKUP" {
				return fmt.Errorf("states %s/%s", ka.State(), kb.State())
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // the notify script has run
		cr = measure(t, l, func() {
			for _, ifn := range []string{"ha1", "port1", "port2"} {
				_ = a.SetLink(ifn, false)
			}
			ka.Kill()
			ca.Kill()
		}, func() bool { return kb.State() == "MASTER" })
		time.Sleep(time.Second)
		t.Logf("conntrackd: %s; backup's log:\n%s", cr, kb.Tail(8))
	})
	surv := func(r lab.LoadReport) int { return r.Conns - max(r.Stalled, r.Errors) }
	addRow(t, row{what: fmt.Sprintf("connections of %d surviving a crash failover", n),
		hagent:     fmt.Sprintf("%d (%d resets, longest stall %v)", surv(hr), hr.Resets, hr.MaxStall.Round(time.Millisecond)),
		conntrackd: fmt.Sprintf("%d (%d resets, longest stall %v)", surv(cr), cr.Resets, cr.MaxStall.Round(time.Millisecond)),
		ratio:      ratio(float64(surv(hr)), float64(surv(cr)))})
}

func ratio(h, c float64) string {
	if c == 0 {
		return "∞"
	}
	return fmt.Sprintf("%.2f", h/c)
}

// flows are n masqueraded TCP flows, as the primary's traffic makes them
// (distinct server addresses keep the masquerade ports unique).
func flows(from, n int) []sessionsync.Record {
	nat := netip.MustParseAddr(lab.WANClusterIPv4)
	recs := make([]sessionsync.Record, 0, n)
	for i := from; i < from+n; i++ {
		c := netip.AddrFrom4([4]byte{10, 9, 0, byte(20 + i/50000)})
		srv := netip.AddrFrom4([4]byte{10, 9, 2, byte(20 + i/50000)})
		sp := uint16(10000 + i%50000)
		recs = append(recs, sessionsync.Record{Op: sessionsync.OpUpsert, Flow: sessionsync.Flow{
			Proto:   sessionsync.ProtoTCP,
			Orig:    sessionsync.Tuple{Src: c, Dst: srv, SrcPort: sp, DstPort: 443},
			Reply:   sessionsync.Tuple{Src: srv, Dst: nat, SrcPort: 443, DstPort: sp},
			Status:  sessionsync.StatusConfirmed | sessionsync.StatusSeenReply | sessionsync.StatusAssured,
			Timeout: 3600, TCP: &sessionsync.TCPInfo{State: sessionsync.TCPEstablished},
		}})
	}
	return recs
}

var activeRe = regexp.MustCompile(`current active connections:\s+(\d+)`)

// externalCount is the number of flows in conntrackd's external cache.
func externalCount(c *lab.Conntrackd) (int, error) {
	out, err := c.Run("-s")
	if err != nil {
		return 0, err
	}
	i := strings.Index(out, "cache external")
	if i < 0 {
		return 0, fmt.Errorf("no external cache in:\n%s", out)
	}
	m := activeRe.FindStringSubmatch(out[i:])
	if m == nil {
		return 0, fmt.Errorf("no count in:\n%s", out[i:])
	}
	return strconv.Atoi(m[1])
}

func kernelCount(n *lab.Node) int {
	fl, err := n.Flows()
	if err != nil {
		return -1
	}
	c := 0
	for _, f := range fl {
		if f.Orig.DstPort == 443 {
			c++
		}
	}
	return c
}

// TestSessionBenchBulk: 100 000 flows on the primary, then a fresh
// secondary: time until they are all in its kernel table. conntrackd: the
// new backup's resync request (-n) fills its external cache, a commit
// (-c, what primary-backup.sh runs on becoming master) writes it into the
// kernel.
func TestSessionBenchBulk(t *testing.T) {
	needBench(t)
	const n = 100000
	var hd, cd, cdCache time.Duration
	t.Run("hagent", func(t *testing.T) {
		_, a, b := firewallLab(t)
		startPrimary(t, a, hagentParams(200))
		if err := a.ApplyFlows(flows(0, n)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := b.Start(hagentParams(100)); err != nil {
			t.Fatal(err)
		}
		hd = waitBulk(t, b, n, start)
		if c := kernelCount(b); c != n {
			t.Fatalf("node-b's kernel has %d of %d flows", c, n)
		}
		s, _ := sessions(b)
		t.Logf("hagent: %d flows in node-b's kernel %v after hagentd started there (bulk %+v)", n, hd.Round(time.Millisecond), s.Sources)
	})
	t.Run("conntrackd", func(t *testing.T) {
		_, a, b := firewallLab(t)
		if err := a.ApplyFlows(flows(0, n)); err != nil {
			t.Fatal(err)
		}
		startConntrackd(t, a, b)
		start := time.Now()
		cb := startConntrackd(t, b, a)
		if _, err := cb.Run("-n"); err != nil { // request a resync from the peer
			t.Fatal(err)
		}
		if err := lab.EventuallyEvery(120*time.Second, 20*time.Millisecond, func() error {
			c, err := externalCount(cb)
			if err != nil {
				return err
			}
			if c < n {
				return fmt.Errorf("external cache %d of %d", c, n)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		cdCache = time.Since(start)
		if _, err := cb.Run("-c"); err != nil {
			t.Fatal(err)
		}
		if err := lab.EventuallyEvery(60*time.Second, 50*time.Millisecond, func() error {
			if c := kernelCount(b); c < n {
				return fmt.Errorf("kernel %d of %d", c, n)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		cd = time.Since(start)
		t.Logf("conntrackd: external cache full after %v, in the kernel after %v", cdCache.Round(time.Millisecond), cd.Round(time.Millisecond))
	})
	addRow(t, row{what: fmt.Sprintf("bulk copy of %d flows to a fresh secondary (into its kernel table)", n),
		hagent: hd.Round(time.Millisecond).String(), conntrackd: fmt.Sprintf("%v (resync into its cache %v, then commit)", cd.Round(time.Millisecond), cdCache.Round(time.Millisecond)),
		ratio: fmt.Sprintf("%.2f (conntrackd time ÷ hagent time)", cd.Seconds()/hd.Seconds())})
}

// TestSessionBenchRate: flows created on the primary at rising rates for
// 2 s each; how many are on the secondary 1 s after each step, hagent's
// event-to-applied lag, and the agent's CPU and RSS at 10 000 flows/s.
func TestSessionBenchRate(t *testing.T) {
	needBench(t)
	rates := []int{5000, 10000, 20000, 40000}
	const step = 2 * time.Second
	type res struct {
		rate, made, got int
		cpu             float64
		rss             int64
		p50, p99        float64
	}
	drive := func(a *lab.Node, rate, from int) int {
		total := rate * int(step/time.Second)
		batch := rate / 50 // 20 ms worth
		start := time.Now()
		made := 0
		for made < total {
			if err := a.ApplyFlows(flows(from+made, batch)); err != nil {
				return made
			}
			made += batch
			if d := time.Until(start.Add(time.Duration(made) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d)
			}
		}
		return made
	}
	var hres, cres []res
	t.Run("hagent", func(t *testing.T) {
		_, a, b := firewallLab(t)
		if err := a.Start(hagentParams(200)); err != nil {
			t.Fatal(err)
		}
		if err := b.Start(hagentParams(100)); err != nil {
			t.Fatal(err)
		}
		if err := lab.Eventually(10*time.Second, func() error {
			s, err := sessions(b)
			if err != nil || !s.BulkDone {
				return fmt.Errorf("no bulk yet")
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		from := 0
		for _, r := range rates {
			pids := []int{a.PID(), b.PID()}
			t0 := []int64{0, 0}
			for i, p := range pids {
				t0[i], _ = proc.CPUTicks(p)
			}
			w0 := time.Now()
			before := kernelCount(b)
			made := drive(a, r, from)
			from += made
			time.Sleep(time.Second)
			got := kernelCount(b) - before
			el := time.Since(w0).Seconds()
			t1, _ := proc.CPUTicks(pids[0])
			rss, _ := proc.RSSKB(pids[0])
			s, _ := sessions(b)
			x := res{rate: r, made: made, got: got, cpu: float64(t1-t0[0]) / el, rss: rss}
			if s != nil {
				x.p50, x.p99 = s.LagP50Ms, s.LagP99Ms
			}
			hres = append(hres, x)
			t.Logf("hagent at %d flows/s: %d made, %d on node-b 1 s later, lag p50 %.2f ms p99 %.2f ms, primary agent CPU %.1f%%, RSS %d kB",
				r, made, got, x.p50, x.p99, x.cpu, rss)
			// Empty the tables for the next step.
			if err := a.ApplyFlows(deletes(from-made, made)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
		}
	})
	t.Run("conntrackd", func(t *testing.T) {
		_, a, b := firewallLab(t)
		ca := startConntrackd(t, a, b)
		cb := startConntrackd(t, b, a)
		from := 0
		for _, r := range rates {
			t0, _ := proc.CPUTicks(ca.PID())
			w0 := time.Now()
			before, _ := externalCount(cb)
			made := drive(a, r, from)
			from += made
			time.Sleep(time.Second)
			after, _ := externalCount(cb)
			el := time.Since(w0).Seconds()
			t1, _ := proc.CPUTicks(ca.PID())
			rss, _ := proc.RSSKB(ca.PID())
			x := res{rate: r, made: made, got: after - before, cpu: float64(t1-t0) / el, rss: rss}
			cres = append(cres, x)
			t.Logf("conntrackd at %d flows/s: %d made, %d in node-b's external cache 1 s later, primary conntrackd CPU %.1f%%, RSS %d kB",
				r, made, x.got, x.cpu, rss)
			if err := a.ApplyFlows(deletes(from-made, made)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
		}
	})
	for i := range hres {
		if i >= len(cres) {
			break
		}
		h, c := hres[i], cres[i]
		addRow(t, row{what: fmt.Sprintf("flows replicated of %d created at %d/s (1 s after)", h.made, h.rate),
			hagent:     fmt.Sprintf("%d (lag p50 %.2f ms, p99 %.2f ms)", h.got, h.p50, h.p99),
			conntrackd: fmt.Sprintf("%d (in its external cache; lag not measured)", c.got), ratio: ratio(float64(h.got), float64(c.got))})
		if h.rate == 10000 {
			addRow(t, row{what: "CPU (% of a core) and RSS of the primary's agent at 10 000 new flows/s",
				hagent: fmt.Sprintf("%.0f %%, %.1f MB", h.cpu, float64(h.rss)/1024), conntrackd: fmt.Sprintf("%.0f %%, %.1f MB", c.cpu, float64(c.rss)/1024),
				ratio: ratio(h.cpu, c.cpu) + " (CPU)"})
		}
	}
}

func deletes(from, n int) []sessionsync.Record {
	recs := flows(from, n)
	for i := range recs {
		recs[i].Op = sessionsync.OpDelete
	}
	return recs
}

// startConntrackd starts conntrackd on n, synchronizing with peer, and
// kills it when the test ends.
func startConntrackd(t *testing.T, n, peer *lab.Node) *lab.Conntrackd {
	t.Helper()
	c, err := n.StartConntrackd(peer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Kill)
	return c
}
