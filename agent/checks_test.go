package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/heartbeat"
)

// TestCheckStateFallRise: a check goes down after fall failures in a row
// (a pass in between starts the count again) and up after rise passes in
// a row.
func TestCheckStateFallRise(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fall, rise int
		runs       string // p: pass, f: fail
		want       string // the state after each run: u, d
		changes    int
	}{
		{"defaults", 3, 2, "pffpfffppfpp", "uuuuuudduuuu", 2},
		{"rise interrupted", 3, 2, "fffpfpfpp", "uuddddddu", 2},
		{"fall 1 rise 1", 1, 1, "fpfp", "dudu", 4},
		{"passes stay up", 3, 2, "pppp", "uuuu", 0},
		{"interrupted falls", 2, 2, "fpfpfp", "uuuuuu", 0},
		{"interrupted rises", 1, 3, "fppfppp", "ddddddu", 2},
		{"starts failing", 3, 2, "fff", "uud", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := checkState{fall: tc.fall, rise: tc.rise}
			var got strings.Builder
			changes := 0
			for _, r := range tc.runs {
				if s.record(r == 'p') {
					changes++
				}
				if s.down {
					got.WriteByte('d')
				} else {
					got.WriteByte('u')
				}
			}
			if got.String() != tc.want || changes != tc.changes {
				t.Errorf("runs %s: states %s (%d changes), want %s (%d)", tc.runs, got.String(), changes, tc.want, tc.changes)
			}
		})
	}
}

// TestCheckOffsetSpread: each check starts at a stable point inside its
// interval, and checks of the same interval are spread over it.
func TestCheckOffsetSpread(t *testing.T) {
	iv := 2 * time.Second
	seen := map[time.Duration]bool{}
	for _, n := range []string{"nginx", "memory", "sshd", "db", "dns", "api"} {
		o := checkOffset(n, iv)
		if o < 0 || o >= iv || o != checkOffset(n, iv) {
			t.Errorf("%s: offset %v (interval %v), not stable inside it", n, o, iv)
		}
		seen[o] = true
	}
	if len(seen) < 6 {
		t.Errorf("6 checks share %d offsets", len(seen))
	}
}

func testCheck(name, cmd string) config.Check {
	return config.Check{Name: name, Command: cmd, Interval: time.Second, Timeout: 5 * time.Second, Fall: 2, Rise: 2}
}

// TestCheckRunnerCommand: a command that starts failing takes the check
// down after fall runs, and back up after rise; the command runs without
// a shell.
func TestCheckRunnerCommand(t *testing.T) {
	file := filepath.Join(t.TempDir(), "down")
	k, err := newChecker(testCheck("svc", "test ! -e "+file), "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	step := func(wantChanged, wantUp bool, wantLast string) {
		t.Helper()
		changed, up := k.run(context.Background())
		if st := k.status(); changed != wantChanged || up != wantUp || st.Last != wantLast {
			t.Fatalf("run: changed %v up %v, status %+v; want changed %v up %v last %s", changed, up, st, wantChanged, wantUp, wantLast)
		}
	}
	step(false, true, "pass")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	step(false, true, "fail")
	step(true, false, "fail")
	if st := k.status(); st.State != "down" || st.Count != 2 || st.Runs != 3 {
		t.Fatalf("status %+v", st)
	}
	os.Remove(file)
	step(false, false, "pass")
	step(true, true, "pass")

	// No shell: $HOME and ; reach the program as they are.
	k, err = newChecker(testCheck("echo", `echo "$HOME;" x`), "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	k.run(context.Background())
	if st := k.status(); st.Output != "$HOME; x" || st.Last != "pass" {
		t.Fatalf("no-shell check: %+v", st)
	}
	// shell: true runs /bin/sh -c, with the check's environment.
	c := testCheck("sh", `echo "$HAGENT_CHECK $HAGENT_NODE"; exit 3`)
	c.Shell = true
	if k, err = newChecker(c, "a", nil); err != nil {
		t.Fatal(err)
	}
	k.run(context.Background())
	if st := k.status(); st.Output != "sh a" || st.Last != "fail" {
		t.Fatalf("shell check: %+v", st)
	}
	// A program that does not exist is an error, counted as a failure.
	if k, err = newChecker(testCheck("none", "/nonexistent/x"), "a", nil); err != nil {
		t.Fatal(err)
	}
	k.run(context.Background())
	if st := k.status(); st.Last != "error" || st.Count != 1 {
		t.Fatalf("missing program: %+v", st)
	}
}

// TestCheckTimeoutKillsGroup: a check that outlives its timeout fails as
// "timeout", and what it started in the background is killed with it.
func TestCheckTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	c := testCheck("slow", "sleep 30 & echo $! > "+dir+"/pid; wait")
	c.Shell, c.Timeout = true, 300*time.Millisecond
	k, err := newChecker(c, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	k.run(context.Background())
	if st := k.status(); st.Last != "timeout" {
		t.Fatalf("status %+v, want a timeout", st)
	}
	b, err := os.ReadFile(dir + "/pid")
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(b))
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err == nil && !strings.Contains(string(stat), ") Z ") {
		t.Fatalf("the check's background process %s survived its timeout: %s", pid, stat)
	}
}

// TestMemoryCheck: the memory check fails above its threshold, from an
// injected reading, and /proc/meminfo is parsed.
func TestMemoryCheck(t *testing.T) {
	c := config.Check{Name: "memory", Memory: true, MemoryThreshold: 90, Interval: time.Second, Timeout: time.Second, Fall: 1, Rise: 1}
	k, err := newChecker(c, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	avail := uint64(500)
	k.mem = func() (uint64, uint64, error) { return avail, 1000, nil }
	if _, up := k.run(context.Background()); !up || k.status().Last != "pass" {
		t.Fatalf("50%% in use: %+v", k.status())
	}
	avail = 50 // 95% in use
	if changed, up := k.run(context.Background()); !changed || up {
		t.Fatalf("95%% in use: %+v", k.status())
	}
	if out := k.status().Output; !strings.Contains(out, "95.0% of memory in use") {
		t.Fatalf("output %q", out)
	}
	avail = 2000 // a reading that makes no sense fails, never divides by zero
	k.run(context.Background())
	if k.status().Last != "error" {
		t.Fatalf("bad reading: %+v", k.status())
	}
	a, tot, err := parseMeminfo([]byte("MemTotal:       16000000 kB\nMemFree:  1 kB\nMemAvailable:    4000000 kB\n"))
	if err != nil || a != 4000000 || tot != 16000000 {
		t.Fatalf("parseMeminfo: %d %d %v", a, tot, err)
	}
	if _, _, err := parseMeminfo([]byte("MemTotal: 5 kB\n")); err == nil {
		t.Fatal("parseMeminfo accepted a file without MemAvailable")
	}
	if _, _, err := meminfoFile("")(); err != nil {
		t.Fatal(err)
	}
}

// TestSystemdCheck: the systemd check runs systemctl is-active UNIT, no
// shell.
func TestSystemdCheck(t *testing.T) {
	k, err := newChecker(config.Check{Name: "web", Systemd: "nginx.service", Interval: time.Second, Timeout: time.Second, Fall: 1, Rise: 1}, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(k.argv, " ") != "systemctl is-active nginx.service" {
		t.Fatalf("argv %q", k.argv)
	}
}

// TestCheckFailsOver: a check that starts failing on the primary makes
// the other member primary (it has more healthy monitored items), names
// the check in history, the role change's reason and the hook's
// HAGENT_CHECK; once the check passes rise times, the primary comes back.
func TestCheckFailsOver(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	dir := t.TempDir()
	file := filepath.Join(dir, "svc-down")
	withCheck := func(cfg *config.Config, flag string) *config.Config {
		c := testCheck("svc", "test ! -e "+flag)
		c.Interval = 50 * time.Millisecond
		cfg.Cluster.Checks = []config.Check{c}
		return cfg
	}
	ca := withCheck(testConfig(t, "a", 200, false), file)
	hookOut := filepath.Join(dir, "hook")
	ca.Cluster.Hooks.Secondary = "echo $HAGENT_CHECK > " + hookOut
	a := startNode(t, mem, ca)
	b := startNode(t, mem, withCheck(testConfig(t, "b", 100, false), filepath.Join(dir, "never")))
	eventually(t, 3*time.Second, "a primary", func() bool {
		return a.status(t).Role == "primary" && b.status(t).Role == "secondary"
	})
	if st := a.status(t); len(st.Checks) != 1 || st.Checks[0].State != "up" || len(st.Monitor) != 2 {
		t.Fatalf("a's checks %+v, monitor %+v", st.Checks, st.Monitor)
	}
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, 3*time.Second, "b primary after a's check failed", func() bool {
		return b.status(t).Role == "primary" && a.status(t).Role == "secondary"
	})
	t.Logf("check failover after %v (fall 2 x 50ms)", time.Since(start))
	st := a.status(t)
	if st.Checks[0].State != "down" || st.Checks[0].Last != "fail" {
		t.Fatalf("a's check: %+v", st.Checks[0])
	}
	for _, m := range b.status(t).Members {
		if m.Node == "a" && (m.MonitorUp != 1 || m.MonitorTotal != 2) {
			t.Fatalf("a's member entry at b: %+v", m)
		}
	}
	if !hasEvent(a, "link", "health check check:svc down") {
		t.Fatalf("history lacks the check: %+v", a.a.hist.list())
	}
	if r := a.status(t).Reason; !strings.HasSuffix(r, "(health check svc down)") {
		t.Fatalf("a's status reason %q does not name the check", r)
	}
	if !hasEvent(a, "role", "(health check svc down)") {
		t.Fatalf("the role change does not name the check: %+v", a.a.hist.list())
	}
	eventually(t, 3*time.Second, "hook got HAGENT_CHECK", func() bool {
		b, _ := os.ReadFile(hookOut)
		return strings.TrimSpace(string(b)) == "svc"
	})
	os.Remove(file)
	eventually(t, 3*time.Second, "a primary again after rise", func() bool {
		return a.status(t).Role == "primary" && b.status(t).Role == "secondary"
	})
	if !hasEvent(a, "role", "(health check svc up)") {
		t.Fatalf("the role change back does not name the check: %+v", a.a.hist.list())
	}
}

// TestCheckNoOverlap: a check whose run lasts longer than its interval
// never runs twice at once (the ticks it misses are dropped, not queued).
func TestCheckNoOverlap(t *testing.T) {
	dir := t.TempDir()
	c := testCheck("slow", "mkdir "+dir+"/lock || touch "+dir+"/overlap; sleep 0.25; rmdir "+dir+"/lock; echo x >> "+dir+"/runs")
	c.Shell, c.Interval = true, 50*time.Millisecond
	k, err := newChecker(c, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{log: hclog.NewNullLogger(), linkCh: make(chan linkEvent, 64)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.checkLoop(ctx, k); close(done) }()
	eventually(t, 10*time.Second, "3 runs", func() bool {
		b, _ := os.ReadFile(dir + "/runs")
		return strings.Count(string(b), "x") >= 3
	})
	cancel()
	<-done
	if _, err := os.Stat(dir + "/overlap"); err == nil {
		t.Fatal("two runs of the check overlapped")
	}
}

// FuzzParseMeminfo: any /proc/meminfo text gives a reading or an error,
// never a panic; a reading has both fields.
func FuzzParseMeminfo(f *testing.F) {
	f.Add([]byte("MemTotal:       16000000 kB\nMemFree:  1 kB\nMemAvailable:    4000000 kB\n"))
	f.Add([]byte("MemTotal:\nMemAvailable: x kB\n"))
	f.Add([]byte("MemAvailable: 18446744073709551615 kB\nMemTotal: 1 kB\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k := &checker{cfg: config.Check{Memory: true, MemoryThreshold: 90}}
		k.mem = func() (uint64, uint64, error) { return parseMeminfo(b) }
		if r, _ := k.probe(context.Background()); r != "pass" && r != "fail" && r != "error" {
			t.Fatalf("result %q", r)
		}
	})
}
