package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
)

// Health checks (cluster.checks). Each check is one monitored item of
// every vcluster the node runs, named checkPrefix+name in monitor_up,
// status and history: checks watch this node (a service, its memory), not
// a vcluster's interfaces, so a failed check makes the node lose every
// election it is in, as a failed monitored link would in FGCP.

// checkPrefix marks a health check among the monitored items.
const checkPrefix = "check:"

// checkNames lists the monitored-item names of the checks in cs.
func checkNames(cs []config.Check) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, checkPrefix+c.Name)
	}
	return out
}

// checkState counts one check's results: it starts up, goes down after
// fall failed runs in a row and up again after rise passed runs in a row
// (TestCheckStateFallRise).
type checkState struct {
	fall, rise int
	down       bool
	last       bool // the last run passed
	count      int  // runs in a row with the result last
	runs       uint64
}

// record counts one run and reports whether the state changed.
func (s *checkState) record(ok bool) (changed bool) {
	if s.runs == 0 || ok != s.last {
		s.count = 0
	}
	s.runs++
	s.last = ok
	if s.count < 1<<30 {
		s.count++
	}
	switch {
	case !s.down && !ok && s.count >= s.fall:
		s.down = true
		return true
	case s.down && ok && s.count >= s.rise:
		s.down = false
		return true
	}
	return false
}

// memReading is a memory reading: what is available and the total, in
// the same unit.
type memReading func() (available, total uint64, err error)

// checker runs one check. run is only ever called from the check's own
// loop, so a check never runs twice at once; mu guards what status reads.
type checker struct {
	cfg    config.Check
	argv   []string   // what runs, for a command or systemd check
	env    []string   // its environment (minimalEnv)
	mem    memReading // the memory check's reading (/proc/meminfo; tests inject one)
	offset time.Duration

	mu      sync.Mutex
	st      checkState
	result  string // pass, fail, timeout, error
	output  string
	lastRun time.Time
}

// newChecker prepares c; node and env are what the check's environment
// carries (HAGENT_NODE, hooks.env).
func newChecker(c config.Check, node string, env []string) (*checker, error) {
	k := &checker{cfg: c, st: checkState{fall: c.Fall, rise: c.Rise}, mem: meminfoFile(os.Getenv(testMeminfoEnv)),
		offset: checkOffset(c.Name, c.Interval)}
	switch c.Kind() {
	case "command":
		if c.Shell {
			k.argv = []string{"/bin/sh", "-c", c.Command}
		} else {
			argv, err := config.SplitCommand(c.Command)
			if err != nil {
				return nil, err
			}
			if len(argv) == 0 {
				return nil, errors.New("empty command")
			}
			k.argv = argv
		}
	case "systemd":
		k.argv = []string{"systemctl", "is-active", c.Systemd}
	}
	k.env = minimalEnv(os.LookupEnv, env, "HAGENT_NODE="+node, "HAGENT_CHECK="+c.Name)
	return k, nil
}

// checkOffset is where in its interval a check runs: a stable spread by
// the check's name, so that checks of the same interval do not all start
// together, and a restart keeps the same rhythm (TestCheckOffsetSpread).
func checkOffset(name string, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	return time.Duration(h.Sum64() % uint64(interval))
}

// run runs the check once and records the result; it reports whether
// the state changed and the new state.
func (k *checker) run(ctx context.Context) (changed, up bool) {
	result, out := k.probe(ctx)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.result, k.output, k.lastRun = result, out, time.Now()
	changed = k.st.record(result == "pass")
	return changed, !k.st.down
}

// probe runs the check: its result (pass, fail, timeout, error) and the
// tail of its output.
func (k *checker) probe(ctx context.Context) (string, string) {
	if k.cfg.Kind() == "memory" {
		avail, total, err := k.mem()
		if err != nil || total == 0 || avail > total {
			return "error", fmt.Sprintf("reading memory: %v", err)
		}
		used := 100 * float64(total-avail) / float64(total)
		out := fmt.Sprintf("%.1f%% of memory in use (threshold %d%%)", used, k.cfg.MemoryThreshold)
		if used > float64(k.cfg.MemoryThreshold) {
			return "fail", out
		}
		return "pass", out
	}
	res := runInGroup(ctx, k.argv, k.env, k.cfg.Timeout)
	switch {
	case !res.started:
		return "error", res.err.Error()
	case res.timedOut:
		return "timeout", res.tail
	case res.err != nil:
		if res.tail == "" {
			return "fail", res.err.Error()
		}
		return "fail", res.tail
	}
	return "pass", res.tail
}

// status is k's part of `ha status`.
func (k *checker) status() control.Check {
	k.mu.Lock()
	defer k.mu.Unlock()
	state := "up"
	if k.st.down {
		state = "down"
	}
	count := k.st.count
	if k.st.runs == 0 {
		count = 0
	}
	return control.Check{Name: k.cfg.Name, Kind: k.cfg.Kind(), State: state, Last: k.result, Count: count,
		Runs: k.st.runs, LastRun: k.lastRun, Output: k.output}
}

// testMeminfoEnv names a file the memory check reads instead of
// /proc/meminfo. It is a test seam, not a setting: TestMemoryCheckFailover
// gives each member's hagentd its own file (the checks are in the
// synchronized cluster section, so a path there would be the same file
// on every member) and writes a low MemAvailable into the primary's.
const testMeminfoEnv = "HAGENT_TEST_MEMINFO"

// maxMeminfo bounds what the memory check reads: /proc/meminfo is about
// 1.5 KiB.
const maxMeminfo = 64 << 10

// meminfoFile returns the reading of MemAvailable and MemTotal (kB) of
// path, /proc/meminfo when path is "".
func meminfoFile(path string) memReading {
	if path == "" {
		path = "/proc/meminfo"
	}
	return func() (available, total uint64, err error) {
		f, err := os.Open(path)
		if err != nil {
			return 0, 0, err
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxMeminfo))
		if err != nil {
			return 0, 0, err
		}
		return parseMeminfo(b)
	}
}

func parseMeminfo(b []byte) (available, total uint64, err error) {
	var haveA, haveT bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, perr := strconv.ParseUint(f[0], 10, 64)
		if perr != nil {
			continue
		}
		switch k {
		case "MemAvailable":
			available, haveA = n, true
		case "MemTotal":
			total, haveT = n, true
		}
	}
	if !haveA || !haveT {
		return 0, 0, errors.New("no MemAvailable or MemTotal in /proc/meminfo")
	}
	return available, total, nil
}

// checkLoop runs k every interval, from its offset, until ctx ends, and
// reports each state change to the run goroutine as a monitored item.
// One loop per check, each run waited for: at most one run of a check at
// a time, and a run longer than the interval skips ticks rather than
// queueing them (time.Ticker drops them), so a slow check never piles up
// processes.
func (a *Agent) checkLoop(ctx context.Context, k *checker) {
	first := time.NewTimer(k.offset)
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C:
	}
	t := time.NewTicker(k.cfg.Interval)
	defer t.Stop()
	for {
		changed, up := k.run(ctx)
		if ctx.Err() != nil {
			return // the run was cut short: not a result
		}
		if changed {
			st := k.status()
			a.log.Info("health check changed", "check", k.cfg.Name, "up", up, "result", st.Last, "count", st.Count, "output", st.Output)
			select {
			case a.linkCh <- linkEvent{name: checkPrefix + k.cfg.Name, up: up}:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
