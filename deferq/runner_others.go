//go:build !linux

package deferq

import (
	"context"
	"errors"

	"github.com/hagent/hagent/sessionsync"
)

// Runner needs nfnetlink_queue (Linux): elsewhere it holds nothing.
type Runner struct{ cfg RunnerConfig }

// NewRunner returns a runner that holds nothing.
func NewRunner(cfg RunnerConfig) *Runner { return &Runner{cfg: cfg} }

// Acked does nothing.
func (r *Runner) Acked(sessionsync.Key) {}

// Run fails: no nfnetlink_queue.
func (r *Runner) Run(ctx context.Context, e Engine) error {
	return errors.New("defer needs Linux (nfnetlink_queue)")
}

// RemoveStale does nothing: no rule is installed here.
func RemoveStale() {}

// Status says the rule is not installed.
func (r *Runner) Status() Status {
	return Status{Defer: r.cfg.Max, Rule: "not installed: not Linux", KernelPassed: -1}
}
