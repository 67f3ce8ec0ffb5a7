package agent

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// hookJob is one hook run.
type hookJob struct {
	cmd, role, previous, reason, node string
	timeout                           time.Duration
	vcluster                          int // the vcluster whose role changed
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
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", j.cmd)
	cmd.Env = append(os.Environ(),
		"HAGENT_ROLE="+j.role,
		"HAGENT_PREVIOUS_ROLE="+j.previous,
		"HAGENT_REASON="+j.reason,
		"HAGENT_NODE="+j.node,
		"HAGENT_VCLUSTER="+strconv.Itoa(j.vcluster),
	)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	tail := tailOf(out.String(), 512)
	if ctx.Err() == context.DeadlineExceeded {
		r.log.Error("hook timed out", "role", j.role, "timeout", timeout, "output", tail)
		r.hist.add(Event{Time: time.Now(), Kind: "hook", Role: j.role, Reason: "hook timed out after " + timeout.String() + ": " + tail})
		return
	}
	if err != nil {
		r.log.Error("hook failed", "role", j.role, "error", err, "output", tail)
		r.hist.add(Event{Time: time.Now(), Kind: "hook", Role: j.role, Reason: "hook failed: " + err.Error() + ": " + tail})
		return
	}
	r.log.Info("hook ran", "role", j.role, "duration", d)
	r.hist.add(Event{Time: time.Now(), Kind: "hook", Role: j.role, Reason: "hook ran in " + d.Round(time.Millisecond).String()})
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
