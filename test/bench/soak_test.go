package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
	"github.com/hagent/hagent/test/proc"
)

// TestSoak is `make soak`: a 10 ms × 3 cluster (realtime) for
// HAGENT_SOAK_DURATION (default 10m) with one CPU hog per core while the
// client probes every millisecond. Any role change is a false failover.
func TestSoak(t *testing.T) {
	needRoot(t, "HAGENT_SOAK")
	dur := 10 * time.Minute
	if s := os.Getenv("HAGENT_SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("HAGENT_SOAK_DURATION: %v", err)
		}
		dur = d
	}
	l, err := lab.New(lab.Spec{Nodes: []string{"node-a", "node-b"}, HBSwitch: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	if err := l.StartEcho(); err != nil {
		t.Fatal(err)
	}
	h := newHagent(l, 10*time.Millisecond, 3, true)
	if err := h.start(); err != nil {
		t.Fatalf("start: %v\n%s", err, tail(h, l))
	}
	t.Cleanup(h.stop)
	p, s, err := h.roles()
	if err != nil {
		t.Fatal(err)
	}
	pr, err := l.StartProbe(lab.ClusterIPv4, probeEvery)
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Eventually(5*time.Second, func() error {
		if r := pr.Snapshot(); r.Answered < 50 {
			return fmt.Errorf("client: %s", r)
		}
		return nil
	}); err != nil {
		pr.Stop()
		t.Fatal(err)
	}

	// One busy shell loop per CPU, outside the agents' namespaces.
	var hogs []*exec.Cmd
	for i := 0; i < runtime.NumCPU(); i++ {
		c := exec.Command("sh", "-c", "while :; do :; done")
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, c)
	}
	stopHogs := func() {
		for _, c := range hogs {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
		hogs = nil
	}
	t.Cleanup(stopHogs)

	since := time.Now()
	t.Logf("soak: %s primary, %s secondary, 10ms×3 realtime, %d CPU hogs, probe every %s, for %s", p.Name, s.Name, runtime.NumCPU(), probeEvery, dur)
	deadline := since.Add(dur)
	for time.Now().Before(deadline) {
		time.Sleep(min(30*time.Second, time.Until(deadline)))
		r := pr.Snapshot()
		t.Logf("soak %s: %s; roles %s=%s %s=%s", time.Since(since).Round(time.Second), r, p.Name, p.Role(), s.Name, s.Role())
	}
	stopHogs()
	res := pr.Stop()

	var b strings.Builder
	fmt.Fprintf(&b, "# hagent soak\n\n%s, %s at 10ms×3 (realtime), %d CPU hogs, client probe every %s.\n\n",
		since.Format(time.RFC3339), dur, runtime.NumCPU(), probeEvery)
	fmt.Fprintf(&b, "- client: %s\n", res)
	total := 0
	for _, n := range nodesOf(l) {
		c, what, err := roleChanges(n, since)
		if err != nil {
			t.Errorf("%s history: %v", n.Name, err)
			continue
		}
		total += c
		fmt.Fprintf(&b, "- %s: %d role changes\n", n.Name, c)
		for _, w := range what {
			fmt.Fprintf(&b, "  - %s\n", w)
		}
		for _, pid := range h.pids(n) {
			rss, _ := proc.RSSKB(pid)
			fmt.Fprintf(&b, "- %s hagentd pid %d RSS %.1f MB\n", n.Name, pid, float64(rss)/1024)
		}
	}
	status := "PASS"
	if total > 0 {
		status = "MISS"
	}
	fmt.Fprintf(&b, "\nfalse failovers: %d — %s\n", total, status)
	fmt.Println(b.String())
	dir := outDir()
	if err := os.MkdirAll(dir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "soak.md"), []byte(b.String()), 0o644)
	}
	if total > 0 {
		t.Errorf("%d false failovers during the soak", total)
	}
	if !res.Recovered {
		t.Errorf("client not answered at the end of the soak: %s", res)
	}
}
