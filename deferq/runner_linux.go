package deferq

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/hagent/hagent/sessionsync"
	"github.com/hashicorp/go-hclog"
)

// stopDrain is how long a stopping runner keeps reading what the kernel
// queued before the rule was removed.
const stopDrain = 10 * time.Millisecond

// Runner holds the packets hagent's NFQUEUE rule sends it until the
// engine reports the flow in every live peer's kernel (Acked), or Max.
type Runner struct {
	cfg RunnerConfig
	log hclog.Logger

	mu       sync.Mutex
	stopping bool // Run is returning: nothing more is held
	q        *Queue[sessionsync.Key]
	nf       *nfqueue.Nfqueue
	wake     chan struct{}

	received, undecoded, verdictErrs atomic.Uint64
	ruleErr                          atomic.Pointer[string]
	installed                        atomic.Bool

	hitsMu sync.Mutex
	hitsAt time.Time
	hitsN  uint64
	hitsOK bool
}

// NewRunner returns a runner; Run starts it.
func NewRunner(cfg RunnerConfig) *Runner {
	if cfg.QueueNum == 0 {
		cfg.QueueNum = DefaultQueueNum
	}
	if cfg.Total <= 0 {
		cfg.Total = DefaultTotal
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Runner{cfg: cfg, log: cfg.Logger,
		q:    New[sessionsync.Key](Config{Max: cfg.Max, PerFlow: cfg.PerFlow, Total: cfg.Total}),
		wake: make(chan struct{}, 1)}
}

// Acked lets flow k's held packets go (sessionsync.Config.OnAcked).
func (r *Runner) Acked(k sessionsync.Key) {
	r.mu.Lock()
	vs := r.q.Ack(time.Now(), k, nil)
	r.mu.Unlock()
	r.verdicts(vs)
}

// Run binds the queue, installs the rule and holds packets until ctx is
// done; then it removes the rule, lets every held packet go and unbinds.
// The rule is removed on every return: a stopped agent leaves none.
func (r *Runner) Run(ctx context.Context, e Engine) error {
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      r.cfg.QueueNum,
		MaxQueueLen:  uint32(r.cfg.Total),
		Copymode:     nfqueue.NfQnlCopyPacket,
		MaxPacketLen: CopyLen,
		Flags:        nfqueue.NfQaCfgFlagFailOpen,
		AfFamily:     2, // AF_INET; the queue itself serves every family
		WriteTimeout: time.Second,
	})
	if err != nil {
		return fmt.Errorf("nfqueue: %w", err)
	}
	r.mu.Lock()
	r.nf = nf
	r.mu.Unlock()
	// The queue's reading stops (and unbinds, which drops what the
	// kernel still queues) only after the held packets were let go.
	qctx, cancel := context.WithCancel(context.Background())
	defer func() {
		r.removeRules()
		// Nothing is held from now on; what the kernel queued before the
		// rule went is still read (and let go) for a moment: the unbind
		// drops what is left in the kernel's queue.
		for range 2 {
			r.mu.Lock()
			r.stopping = true
			vs := r.q.Flush(time.Now(), nil)
			r.mu.Unlock()
			r.verdicts(vs)
			time.Sleep(stopDrain)
		}
		cancel()
		r.mu.Lock()
		r.nf = nil
		r.mu.Unlock()
		nf.Close()
	}()
	err = nf.RegisterWithErrorFunc(qctx, func(a nfqueue.Attribute) int {
		r.packet(e, a)
		return 0
	}, func(err error) int {
		if qctx.Err() != nil {
			return 1
		}
		r.log.Debug("nfqueue receive", "error", err)
		return 0 // ENOBUFS and the like: the queue is fail-open, go on
	})
	if err != nil {
		return fmt.Errorf("nfqueue bind: %w", err)
	}
	if err := r.installRules(); err != nil {
		msg := err.Error()
		r.ruleErr.Store(&msg)
		r.log.Error("defer: cannot install the NFQUEUE rule; new flows are not held", "error", err)
	}
	r.expireLoop(ctx)
	return nil
}

// packet takes one queued packet (the queue's reading goroutine).
func (r *Runner) packet(e Engine, a nfqueue.Attribute) {
	if a.PacketID == nil {
		return
	}
	id := *a.PacketID
	r.received.Add(1)
	if a.Payload == nil {
		r.undecoded.Add(1)
		r.accept(id)
		return
	}
	f, ok := FlowOfPacket(*a.Payload)
	if !ok {
		r.undecoded.Add(1)
		r.accept(id)
		return
	}
	if !e.Defer(&f) {
		r.accept(id) // no peer to wait for, or the flow is in theirs already
		return
	}
	k := f.Key()
	now := time.Now()
	r.mu.Lock()
	first := !r.q.Holding(k)
	held := !r.stopping && r.q.Hold(now, id, k)
	r.mu.Unlock()
	if !held {
		r.accept(id)
		return
	}
	if !e.Waiting(k) {
		// The acknowledgement came between Defer and Hold.
		r.Acked(k)
		return
	}
	if first {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// expireLoop lets go the flows whose time is up.
func (r *Runner) expireLoop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		r.mu.Lock()
		vs := r.q.Expire(now, nil)
		next, ok := r.q.Next()
		r.mu.Unlock()
		r.verdicts(vs)
		d := time.Hour
		if ok {
			d = max(next.Sub(now), 0)
		}
		t.Reset(d)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
		}
	}
}

func (r *Runner) accept(id uint32) {
	r.mu.Lock()
	nf := r.nf
	r.mu.Unlock()
	if nf == nil {
		return
	}
	if err := nf.SetVerdict(id, nfqueue.NfAccept); err != nil {
		r.verdictErrs.Add(1)
	}
}

func (r *Runner) verdicts(vs []Verdict) {
	for _, v := range vs {
		r.accept(v.ID)
	}
}

// Status returns the counters.
func (r *Runner) Status() Status {
	r.mu.Lock()
	st := Status{Stats: r.q.Stats()}
	r.mu.Unlock()
	st.Defer, st.QueueNum = r.cfg.Max, r.cfg.QueueNum
	st.Received, st.Undecoded, st.VerdictErrors = r.received.Load(), r.undecoded.Load(), r.verdictErrs.Load()
	st.Rule = "not installed"
	if r.installed.Load() {
		st.Rule = "installed"
	}
	if p := r.ruleErr.Load(); p != nil {
		st.Rule = "not installed: " + *p
	}
	st.KernelPassed = -1
	if r.installed.Load() {
		if hits, ok := r.hits(); ok {
			st.KernelPassed = max(int64(hits)-int64(st.Received), 0)
		}
	}
	return st
}

// hits reads the rule's packet counter, at most once a second (it runs
// iptables; a status is asked for often).
func (r *Runner) hits() (uint64, bool) {
	r.hitsMu.Lock()
	defer r.hitsMu.Unlock()
	if time.Since(r.hitsAt) >= time.Second {
		h, err := ruleHits(r.cfg.QueueNum)
		r.hitsAt, r.hitsN, r.hitsOK = time.Now(), h, err == nil
	}
	return r.hitsN, r.hitsOK
}

var tools = []string{"iptables", "ip6tables"}

func ipt(tool string, args ...string) error {
	out, err := exec.Command(tool, append([]string{"-w", "-t", "security"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// installRules creates hagent's chain with the NFQUEUE rules and the jump
// to it from FORWARD, replacing what an earlier process left. It fails
// when neither iptables nor ip6tables took every rule (then none is left).
func (r *Runner) installRules() error {
	r.removeRules()
	var errs []error
	any := false
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			errs = append(errs, fmt.Errorf("%s not found (install iptables: iptables-nft)", tool))
			continue
		}
		err := ipt(tool, "-N", Chain)
		for _, p := range r.cfg.Protocols {
			if err == nil {
				err = ipt(tool, "-A", Chain, "-p", p, "-m", "conntrack", "--ctstate", "NEW", "-m", "conntrack", "!", "--ctstate", "DNAT",
					"-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(r.cfg.QueueNum)), "--queue-bypass")
			}
		}
		if err == nil {
			err = ipt(tool, "-A", "FORWARD", "-j", Chain)
		}
		if err != nil {
			errs = append(errs, err)
			removeTool(tool)
			continue
		}
		any = true
	}
	if !any {
		return errors.Join(errs...)
	}
	if len(errs) > 0 {
		r.log.Warn("defer: a rule could not be installed", "error", errors.Join(errs...))
	}
	r.installed.Store(true)
	return nil
}

// removeRules removes the jumps to hagent's chain and the chain; what is
// not there is no error.
func (r *Runner) removeRules() {
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err == nil {
			removeTool(tool)
		}
	}
	r.installed.Store(false)
}

// RemoveStale removes a rule an earlier hagentd left (it was killed)
// when this one runs without defer: with no consumer the rule only lets
// packets pass, but it is not left behind.
func RemoveStale() {
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err == nil && ipt(tool, "-n", "-L", Chain) == nil {
			removeTool(tool)
		}
	}
}

func removeTool(tool string) {
	for i := 0; i < 16 && ipt(tool, "-D", "FORWARD", "-j", Chain) == nil; i++ {
	}
	_ = ipt(tool, "-F", Chain)
	_ = ipt(tool, "-X", Chain)
}

// ruleHits sums the packet counters of hagent's NFQUEUE rules.
func ruleHits(queue uint16) (uint64, error) {
	var total uint64
	for _, tool := range tools {
		out, err := exec.Command(tool, "-w", "-t", "security", "-L", Chain, "-v", "-x", "-n").Output()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) > 2 && strings.Contains(line, "NFQUEUE") && strings.Contains(line, "num "+strconv.Itoa(int(queue))) {
				if n, err := strconv.ParseUint(f[0], 10, 64); err == nil {
					total += n
				}
			}
		}
	}
	return total, nil
}
