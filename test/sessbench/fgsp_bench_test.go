package sessbench

// FGSP (cluster.mode fgsp) beside conntrackd's multi-primary setup: FTFW
// both ways with DisableExternalCache On (each daemon injects the peer's
// states into its kernel table at once; TCP window tracking of injected
// entries off, its default), no keepalived (no failover to drive: both
// members forward). Same lab (lab.SetupFGSP: own addresses per member,
// strict ruleset, nf_conntrack_tcp_loose=0), same run.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hagent/hagent/sessionsync"
	"github.com/hagent/hagent/test/lab"
)

const fgspConns = 200

// conntrackdMulti is the Sync Mode block of conntrackd's multi-primary
// setup.
const conntrackdMulti = "FTFW {\n\t\tDisableExternalCache On\n\t}"

// fgspImpl starts one implementation on both members and returns what
// kills node-a's daemon (beside its links: a failure).
type fgspImpl struct {
	name  string
	start func(t *testing.T, a, b *lab.Node) (killA func())
}

var fgspImpls = []fgspImpl{
	{"hagent", func(t *testing.T, a, b *lab.Node) func() {
		for _, n := range []struct {
			n    *lab.Node
			prio int
		}{{a, 200}, {b, 100}} {
			p := hagentParams(n.prio)
			p.Monitor = false
			if err := n.n.StartFGSP(p); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(n.n.Kill)
		}
		if err := lab.Eventually(10*time.Second, func() error {
			for _, n := range []*lab.Node{a, b} {
				st, err := sessions(n)
				if err != nil || st == nil || !st.BulkDone {
					return fmt.Errorf("%s: bulk copy not done (%v)", n.Name, err)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return a.Kill
	}},
	{"conntrackd", func(t *testing.T, a, b *lab.Node) func() {
		var kill []func()
		for _, n := range [][2]*lab.Node{{a, b}, {b, a}} {
			c, err := n[0].StartConntrackdMode(n[1], conntrackdMulti)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Kill)
			kill = append(kill, c.Kill)
		}
		return kill[0]
	}},
}

var fgspRows []row

func addFGSPRow(t *testing.T, r row) {
	fgspRows = append(fgspRows, r)
	writeRows(t, "sessions-fgsp.md", "| measurement (FGSP, asymmetric paths) | hagent mode fgsp | conntrackd multi-primary (FTFW both ways, DisableExternalCache On) | ratio |", fgspRows)
}

func fgspLab(t *testing.T) (*lab.Lab, *lab.Node, *lab.Node) {
	t.Helper()
	l, err := lab.New(lab.Spec{Nodes: []string{"node-a", "node-b"}, WAN: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if err := l.SetupFGSP(); err != nil {
		t.Fatal(err)
	}
	return l, l.Nodes["node-a"], l.Nodes["node-b"]
}

// TestSessionBenchFGSPAsymmetric: 200 connections whose SYN goes through
// node-a and SYN-ACK through node-b: how many open and carry data, then
// how many survive node-a's failure (links down, its daemon killed) once
// the routes move to node-b.
func TestSessionBenchFGSPAsymmetric(t *testing.T) {
	needBench(t)
	type result struct {
		opened, carried, survived int
		open                      time.Duration
		report                    lab.LoadReport
	}
	res := map[string]result{}
	for _, impl := range fgspImpls {
		t.Run(impl.name, func(t *testing.T) {
			l, a, b := fgspLab(t)
			killA := impl.start(t, a, b)
			if err := l.RouteVia(a, b); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			ld, failed, err := lab.StartTCPLoadParallel(l, fgspConns, 100*time.Millisecond, 30*time.Second, lab.LoadPort)
			if err != nil {
				t.Fatal(err)
			}
			defer ld.Stop()
			r := result{opened: fgspConns - len(failed), open: time.Since(t0)}
			time.Sleep(5 * time.Second)
			r.carried = ld.Echoed()
			ld.ResetStalls()
			a.Crash() // links down (and hagentd killed)
			killA()
			if err := l.RouteVia(b, b); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Second)
			r.report = ld.Report(2 * time.Second)
			r.survived = r.opened - max(r.report.Resets, r.report.Errors, r.report.Stalled)
			t.Logf("measured: %s: %d of %d opened in %v, %d carried data; after node-a failed: %s",
				impl.name, r.opened, fgspConns, r.open.Round(time.Millisecond), r.carried, r.report)
			res[impl.name] = r
		})
	}
	h, c := res["hagent"], res["conntrackd"]
	addFGSPRow(t, row{what: fmt.Sprintf("connections of %d that open through the asymmetric path (SYN via node-a, SYN-ACK via node-b) and carry data", fgspConns),
		hagent:     fmt.Sprintf("%d open (in %v), %d carry data", h.opened, h.open.Round(time.Millisecond), h.carried),
		conntrackd: fmt.Sprintf("%d open (in %v), %d carry data", c.opened, c.open.Round(time.Millisecond), c.carried),
		ratio:      ratio(float64(h.carried), float64(c.carried))})
	addFGSPRow(t, row{what: "of those, surviving node-a's failure (routes moved to node-b)",
		hagent:     fmt.Sprintf("%d, %d resets, longest stall %v", h.survived, h.report.Resets, h.report.MaxStall.Round(time.Millisecond)),
		conntrackd: fmt.Sprintf("%d, %d resets, longest stall %v", c.survived, c.report.Resets, c.report.MaxStall.Round(time.Millisecond)),
		ratio:      ratio(float64(h.survived), float64(c.survived))})
}

// TestSessionBenchFGSPLatency: the time from a connection's SYN creating
// its flow on node-a to the flow being present in node-b's kernel table
// (the new-flow events of both tables, one clock), over 200 connections
// opened 20 ms apart through node-a.
func TestSessionBenchFGSPLatency(t *testing.T) {
	needBench(t)
	type result struct {
		p50, p99 time.Duration
		n        int
	}
	res := map[string]result{}
	srv := netip.MustParseAddr(lab.ServerIPv4)
	for _, impl := range fgspImpls {
		t.Run(impl.name, func(t *testing.T) {
			l, a, b := fgspLab(t)
			impl.start(t, a, b)
			var mu sync.Mutex
			seen := map[sessionsync.Key][2]time.Time{}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for i, n := range []*lab.Node{a, b} {
				if err := n.WatchNew(ctx, func(f *sessionsync.Flow, at time.Time) {
					if f.Proto != sessionsync.ProtoTCP || f.Orig.Dst != srv || f.Orig.DstPort != lab.LoadPort {
						return
					}
					mu.Lock()
					defer mu.Unlock()
					v := seen[f.Key()]
					if v[i].IsZero() {
						v[i] = at
						seen[f.Key()] = v
					}
				}); err != nil {
					t.Fatal(err)
				}
			}
			var ln net.Listener
			if err := lab.InNS(l.Server, func() error {
				var err error
				ln, err = net.Listen("tcp4", net.JoinHostPort(lab.ServerIPv4, fmt.Sprint(lab.LoadPort)))
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					defer c.Close()
				}
			}()
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for i := 0; i < fgspConns; i++ {
				if err := lab.InNS(l.Client, func() error {
					c, err := net.DialTimeout("tcp4", net.JoinHostPort(lab.ServerIPv4, fmt.Sprint(lab.LoadPort)), 5*time.Second)
					if err == nil {
						conns = append(conns, c)
					}
					return err
				}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(2 * time.Second)
			mu.Lock()
			var ds []time.Duration
			for _, v := range seen {
				if !v[0].IsZero() && !v[1].IsZero() {
					ds = append(ds, v[1].Sub(v[0]))
				}
			}
			mu.Unlock()
			if len(ds) == 0 {
				t.Fatal("no flow seen on both members")
			}
			slices.Sort(ds)
			r := result{p50: ds[len(ds)/2], p99: ds[len(ds)*99/100], n: len(ds)}
			t.Logf("measured: %s: SYN on node-a to the flow in node-b's table: p50 %v, p99 %v over %d of %d flows",
				impl.name, r.p50, r.p99, r.n, fgspConns)
			res[impl.name] = r
		})
	}
	h, c := res["hagent"], res["conntrackd"]
	addFGSPRow(t, row{what: "from a SYN creating the flow on node-a to the flow in node-b's kernel table (p50 / p99)",
		hagent:     fmt.Sprintf("%.2f / %.2f ms (%d flows)", ms(h.p50), ms(h.p99), h.n),
		conntrackd: fmt.Sprintf("%.2f / %.2f ms (%d flows)", ms(c.p50), ms(c.p99), c.n),
		ratio:      ratio(ms(h.p50), ms(c.p50)) + " (p50)"})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
