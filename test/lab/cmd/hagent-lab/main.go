// Command hagent-lab is the `make lab` demo: a two-node hagent cluster in
// network namespaces (a switch, node-a and node-b with a data port on the
// switch and a direct heartbeat cable, a client probing the cluster
// address), showing status, crashing the primary, and printing the outage
// the client saw. It cleans up after itself, also on Ctrl-C.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hagent/hagent/test/lab"
)

func main() {
	ival := flag.Duration("hb-interval", 200*time.Millisecond, "heartbeat interval")
	lost := flag.Int("lost", 6, "hb_lost_threshold")
	probe := flag.Duration("probe", 10*time.Millisecond, "client probe interval")
	direct := flag.Bool("direct", false, "mark ha1 direct: true (carrier detection; use with -probe 1ms)")
	flag.Parse()
	if err := run(*ival, *lost, *probe, *direct); err != nil {
		fmt.Fprintln(os.Stderr, "hagent-lab:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n\033[1m==> "+format+"\033[0m\n", args...)
}

func run(ival time.Duration, lost int, probeEvery time.Duration, direct bool) error {
	l, err := lab.New(lab.Spec{Nodes: []string{"node-a", "node-b"}})
	if err != nil {
		return err
	}
	defer l.Close()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() { <-sigs; l.Close(); os.Exit(130) }()

	a, b := l.Nodes["node-a"], l.Nodes["node-b"]
	step("lab %s: switch, node-a and node-b (port1 on the switch, ha1 cable between them), client %s", l.Prefix, lab.ClientIPv4)
	p := lab.Params{GroupID: 10, HBInterval: ival, LostThreshold: lost, Monitor: true, HelloHolddown: time.Second, Direct: direct}
	pa, pb := p, p
	pa.Priority, pb.Priority = 200, 100
	if err := a.Start(pa); err != nil {
		return fmt.Errorf("node-a: %w", err)
	}
	if err := b.Start(pb); err != nil {
		return fmt.Errorf("node-b: %w", err)
	}
	if err := l.StartEcho(); err != nil {
		return err
	}
	step("waiting for the election (hello_holddown 1s)")
	if err := lab.Eventually(15*time.Second, func() error {
		if a.Role() == "primary" && b.Role() == "secondary" {
			return nil
		}
		return fmt.Errorf("roles %q/%q", a.Role(), b.Role())
	}); err != nil {
		return err
	}
	pr, err := l.StartProbe(lab.ClusterIPv4, probeEvery)
	if err != nil {
		return err
	}
	if err := lab.Eventually(5*time.Second, func() error {
		if r := pr.Snapshot(); r.Answered == 0 {
			return fmt.Errorf("no answer yet")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("client cannot reach the cluster address: %w", err)
	}
	step("agentctl ha status on node-a")
	out, _ := a.Ctl("ha", "status")
	fmt.Print(out)
	step("agentctl ha status on node-b")
	out, _ = b.Ctl("ha", "status")
	fmt.Print(out)

	time.Sleep(time.Second)
	if direct {
		step("crash node-a: all its links down, then SIGKILL of hagentd (ha1 is direct: node-b sees its carrier go, carrier_debounce 4ms)")
	} else {
		step("crash node-a: all its links down, then SIGKILL of hagentd (hb_interval %s x hb_lost_threshold %d = %s detection)", ival, lost, ival*time.Duration(lost))
	}
	crashed := time.Now()
	a.Crash()
	if err := lab.Eventually(10*time.Second, func() error {
		if b.Role() == "primary" {
			return nil
		}
		return fmt.Errorf("node-b is %s", b.Role())
	}); err != nil {
		return err
	}
	if err := lab.Eventually(10*time.Second, func() error {
		if r := pr.Snapshot(); !r.Recovered || r.Sent == 0 || pr.Snapshot().OutageAt.IsZero() {
			return fmt.Errorf("client not recovered yet")
		}
		return nil
	}); err != nil {
		return err
	}
	time.Sleep(time.Second)
	res := pr.Stop()
	step("agentctl ha status on node-b after the failover")
	out, _ = b.Ctl("ha", "status")
	fmt.Print(out)
	step("agentctl ha history on node-b")
	out, _ = b.Ctl("ha", "history")
	fmt.Print(out)
	mac, _ := l.ClientNeighbor(lab.ClusterIPv4)
	step("result")
	fmt.Printf("client probe: %s\n", res)
	fmt.Printf("client's ARP entry for %s: %s (the virtual MAC: no ARP change needed)\n", lab.ClusterIPv4, mac)
	floor := (ival * time.Duration(lost)).String()
	if direct {
		floor = "carrier, 4ms debounce"
	}
	fmt.Printf("crash at %s; measured outage %.1f ms (detection: %s)\n",
		crashed.Format("15:04:05.000"), float64(res.Outage)/float64(time.Millisecond), floor)
	if !res.Recovered || res.Answered == 0 {
		return fmt.Errorf("the client did not recover")
	}
	if !strings.HasPrefix(mac, "00:09:0f:09") {
		return fmt.Errorf("client's neighbour entry %s is not the vMAC", mac)
	}
	return nil
}
