package agent

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// hookJob is one hook run.
type hookJob struct {
	cmd, role, previous, reason, node string
	check                             string // the health check that caused the role change, if one did
	timeout                           time.Duration
	vcluster                          int      // the vcluster whose role changed
	env                               []string // hooks.env: variables passed on from hagentd's environment
}

// hookRunner runs hooks one after another, in order, on a goroutine of its
// own, so a hook never delays a takeover and two hooks never overlap.
type hookRunner struct {
	log  hclog.Logger
	hist *history
	jobs chan hookJob
	done chan struct{}
}

func newHookRunner(log hclog.Logger, hist *history) *hookRunner {
	r := &hookRunner{log: log, hist: hist, jobs: make(chan hookJob, 64), done: make(chan struct{})}
	go r.loop()
	return r
}

// run queues a job; an empty command is a no-op. A full queue drops the job
// with an error in the log and history rather than block the caller.
func (r *hookRunner) run(j hookJob) {
	if strings.TrimSpace(j.cmd) == "" {
		return
	}
	select {
	case r.jobs <- j:
	default:
		r.log.Error("hook queue full, dropping hook", "role", j.role)
		r.hist.add(Event{Time: time.Now(), Kind: "hook", Role: j.role, Reason: "hook dropped: queue full"})
	}
}

func (r *hookRunner) loop() {
	defer close(r.done)
	for j := range r.jobs {
		r.exec(j)
	}
}

func (r *hookRunner) exec(j hookJob) {
	timeout := j.timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	res := runInGroup(context.Background(), []string{"/bin/sh", "-c", j.cmd}, hookEnv(j, os.LookupEnv), timeout)
	if !res.started {
		r.failed(j, res.err, "")
		return
	}
	err, d, timedOut, leftovers, tail := res.err, res.d, res.timedOut, res.leftovers, res.tail
	switch {
	case timedOut:
		r.log.Error("hook timed out; its process group was killed", "role", j.role, "timeout", timeout, "output", tail)
		r.hist.add(Event{Time: time.Now(), Kind: "hook", Role: j.role, Reason: "hook timed out after " + timeout.String() + ": " + tail})
	case err != nil:
		r.failed(j, err, tail)
	case leftovers:
		r.log.Warn("hook ran, but processes it started in the background were still running at the timeout: killed", "role", j.role, "duration", d, "timeout", timeout)
		r.hist.add(Event{Time: time.Now(), Kind: "hook", Role: j.role, Reason: "hook ran in " + d.Round(time.Millisecond).String() + "; its background processes were killed at the timeout (" + timeout.String() + ")"})
	default:
		r.log.Info("hook ran", "role", j.role, "duration", d)
		r.hist.add(Event{Time: time.Now(), Kind: "hook", Role: j.role, Reason: "hook ran in " + d.Round(time.Millisecond).String()})
	}
}

func (r *hookRunner) failed(j hookJob, err error, tail string) {
	r.log.Error("hook failed", "role", j.role, "error", err, "output", tail)
	r.hist.add(Event{Time: time.Now(), Kind: "hook", Role: j.role, Reason: "hook failed: " + err.Error() + ": " + tail})
}

// groupRun is the outcome of one runInGroup.
type groupRun struct {
	started   bool          // the command started (else err says why not)
	err       error         // the start error, or the exit status
	timedOut  bool          // the command itself ran into the timeout: its group was killed
	leftovers bool          // it exited, but what it left in its group was killed at the timeout
	d         time.Duration // how long the command ran
	tail      string        // the end of its output (standard output and error)
}

// runInGroup runs argv with the environment env in a process group of its
// own, the group killed at the timeout; hooks and health checks run this
// way.
// Ending parent kills the group too (an agent that stops does not wait
// for a check's timeout).
func runInGroup(parent context.Context, argv, env []string, timeout time.Duration) groupRun {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	// The command runs in a process group of its own, and the timeout
	// kills the whole group: a command that started children (`cmd &`, a
	// pipeline, a subshell) leaves nothing behind, where killing the
	// command alone would orphan them (TestHookTimeoutKillsGroup).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	// The output goes to a pipe this runner reads itself (not through
	// exec's copying goroutine, whose Wait would wait for every process
	// that inherited the pipe), into a buffer that keeps only its tail.
	pr, pw, err := os.Pipe()
	if err != nil {
		return groupRun{err: err}
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	start := time.Now()
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		return groupRun{err: err}
	}
	out := &tailBuffer{max: hookOutputMax}
	read := make(chan struct{})
	go func() { _, _ = io.Copy(out, pr); close(read) }()
	err = cmd.Wait()
	res := groupRun{started: true, err: err, d: time.Since(start)}
	res.timedOut = ctx.Err() == context.DeadlineExceeded // the command itself ran into the timeout
	// The command is gone; what it left in its group may run until the
	// timeout, then the group is killed.
	res.leftovers = waitGroup(ctx, cmd.Process.Pid) && !res.timedOut
	select {
	case <-read:
	case <-time.After(time.Second): // a process that left the group holds the pipe
	}
	pr.Close()
	<-read
	res.tail = tailOf(out.String(), 512)
	return res
}

// killGroup kills the process group pgid.
func killGroup(pgid int) error {
	// Negative pid: the group whose id is pgid (the shell's pid).
	return syscall.Kill(-pgid, syscall.SIGKILL)
}

// groupGone reports whether no live process is left in the group pgid.
// kill(-pgid, 0) succeeds while a zombie of the group waits to be reaped
// (by init, or forever when hagentd itself is PID 1 in a container), so
// when it does, /proc decides: zombies do not count.
func groupGone(pgid int) bool {
	if syscall.Kill(-pgid, 0) == syscall.ESRCH {
		return true
	}
	live, err := groupLive(pgid)
	return err == nil && !live
}

// groupLive reports whether a process of group pgid that is not a zombie
// runs, from /proc (an error where there is no /proc).
func groupLive(pgid int) (bool, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return false, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return false, err
	}
	want := strconv.Itoa(pgid)
	for _, n := range names {
		if n[0] < '0' || n[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + n + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) >= 3 && f[2] == want && f[0] != "Z" && f[0] != "X" {
			return true, nil
		}
	}
	return false, nil
}

// hookGroupPoll is how often the runner looks whether a hook's leftover
// processes have ended (only while some are left: each look may read
// /proc).
const hookGroupPoll = 100 * time.Millisecond

// waitGroup waits, after a hook's shell has exited, until the hook's
// process group is empty, or until ctx ends: then it kills the group and
// waits (up to a second) for it to go. It reports whether it had to kill.
// A pgid cannot be reused while a process of the group lives, so the kill
// cannot hit another group.
func waitGroup(ctx context.Context, pgid int) (killed bool) {
	t := time.NewTicker(hookGroupPoll)
	defer t.Stop()
	for !groupGone(pgid) {
		select {
		case <-ctx.Done(): // the timeout, or the caller gave up
			_ = killGroup(pgid)
			killed = true
			for i := 0; i < 10 && !groupGone(pgid); i++ {
				<-t.C
			}
			return killed
		case <-t.C:
		}
	}
	return false
}

// hookOutputMax bounds the output kept of one hook run (its tail): a hook
// printing without end costs this much memory, not more.
const hookOutputMax = 4 << 10

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) > t.max {
		p = p[len(p)-t.max:]
	}
	if len(t.b)+len(p) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)+len(p)-t.max:]...)
	}
	t.b = append(t.b, p...)
	return n, nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// hookPATH is the PATH of every hook: the system directories, whatever
// PATH hagentd was started with.
const hookPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// hookEnv is a hook's whole environment: PATH (hookPATH), the HAGENT_
// variables of the role change, and the variables hooks.env names, taken
// from hagentd's environment (lookup) when they are set there. Nothing
// else of hagentd's environment (credentials of a unit, a debug variable,
// LD_PRELOAD) reaches a hook (TestHookEnvironment).
func hookEnv(j hookJob, lookup func(string) (string, bool)) []string {
	return minimalEnv(lookup, j.env,
		"HAGENT_ROLE="+j.role,
		"HAGENT_PREVIOUS_ROLE="+j.previous,
		"HAGENT_REASON="+j.reason,
		"HAGENT_NODE="+j.node,
		"HAGENT_VCLUSTER="+strconv.Itoa(j.vcluster),
		"HAGENT_CHECK="+j.check,
	)
}

// minimalEnv is the environment of a hook or a health check: PATH
// (hookPATH), the HAGENT_ variables given, and the variables names lists
// (hooks.env) taken from hagentd's environment (lookup) when set there.
func minimalEnv(lookup func(string) (string, bool), names []string, hagent ...string) []string {
	env := append([]string{"PATH=" + hookPATH}, hagent...)
	for _, n := range names {
		if n == "PATH" || strings.HasPrefix(n, "HAGENT_") {
			continue // the configuration refuses them; never override ours
		}
		if v, ok := lookup(n); ok {
			env = append(env, n+"="+v)
		}
	}
	return env
}

// close waits up to d for queued hooks to finish.
func (r *hookRunner) close(d time.Duration) {
	close(r.jobs)
	select {
	case <-r.done:
	case <-time.After(d):
	}
}

func tailOf(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
