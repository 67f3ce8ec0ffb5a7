package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// member is one node as the nemesis drives it. lab.Node is not safe for
// concurrent use: every call into it holds mu.
type member struct {
	n      *lab.Node
	mu     sync.Mutex
	params lab.Params
	// down: the nemesis stopped the agent and restarts it itself (the
	// watcher leaves it alone).
	down bool
	// busy: a process fault (kill, term, stop, reload) is in progress;
	// netBusy: the network faults in progress, by kind.
	busy    bool
	netBusy map[Kind]bool
}

// nemesis applies the schedule to the lab.
type nemesis struct {
	l       *lab.Lab
	sync    *lab.SyncDir
	members []*member
	witness int
	rec     *Record
	logf    func(string, ...any)
	// writesTo returns how many versions the file writer has written to
	// nodes other than except (a disk-full fault checks that the full node
	// was sent changes: it was not the primary the writer wrote to).
	writesTo func(except string) int
}

// start starts (or restarts) m's agent; a failure is recorded as an
// unexpected exit.
func (nm *nemesis) start(m *member) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n.Start(m.params)
}

// watch restarts agents that exited on their own, recording each such exit
// (a violation of agent-exits).
func (nm *nemesis) watch(ctx context.Context, m *member) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
		m.mu.Lock()
		exited, err := m.n.Exited()
		if !exited || m.down {
			m.mu.Unlock()
			continue
		}
		msg := "exit status 0"
		if err != nil {
			msg = err.Error()
		}
		nm.rec.addExit(Exit{At: time.Now(), Node: m.n.Name, Err: msg + " (not caused by the nemesis)\n" + m.n.Tail(30)})
		nm.logf("chaos: %s exited on its own: %s; restarting", m.n.Name, msg)
		m.n.Forget()
		if err := m.n.Start(m.params); err != nil {
			nm.logf("chaos: restart of %s: %v", m.n.Name, err)
		}
		m.mu.Unlock()
	}
}

// resolve picks the node for a fault from the facts (who holds the vMAC).
func (nm *nemesis) resolve(f Fault, idx int) (*member, string, string) {
	now := time.Now()
	nm.rec.mu.Lock()
	holders := nm.rec.holders(now)
	nm.rec.mu.Unlock()
	isHolder := func(m *member) bool {
		for _, h := range holders {
			if h == m.n.Name {
				return true
			}
		}
		return false
	}
	var cands []*member
	switch f.Target.Role {
	case "primary":
		for _, m := range nm.members {
			if isHolder(m) {
				cands = append(cands, m)
			}
		}
	case "secondary":
		for _, m := range nm.members {
			if !isHolder(m) {
				cands = append(cands, m)
			}
		}
	default:
		cands = []*member{nm.members[f.Target.Node%len(nm.members)]}
	}
	if f.Kind == Kill || f.Kind == Term {
		var keep []*member
		for _, m := range cands {
			if m != nm.members[nm.witness] {
				keep = append(keep, m)
			}
		}
		if len(keep) == 0 && len(cands) > 0 {
			return nil, "", "the witness is never restarted"
		}
		cands = keep
	}
	if len(cands) == 0 {
		return nil, "", "no " + f.Target.Role
	}
	m := cands[idx%len(cands)]
	role := "secondary"
	if isHolder(m) {
		role = "primary"
	}
	return m, role, ""
}

// claim marks m busy with kind; false when it already is.
func (m *member) claim(k Kind) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k.process() {
		if m.busy || m.down {
			return false
		}
		m.busy = true
		return true
	}
	if m.netBusy[k] {
		return false
	}
	m.netBusy[k] = true
	return true
}

func (m *member) unclaim(k Kind) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k.process() {
		m.busy = false
	} else {
		delete(m.netBusy, k)
	}
}

// round runs the faults of one round concurrently and returns when every
// one of them is healed.
func (nm *nemesis) round(ctx context.Context, ri int, r Round) {
	start := time.Now()
	var wg sync.WaitGroup
	for i, f := range r.Faults {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(start.Add(f.Offset))):
			}
			fr := &FaultRec{Fault: f, Round: ri}
			m, role, why := nm.resolve(f, ri+i)
			if m != nil && !m.claim(f.Kind) {
				m, why = nil, fmt.Sprintf("%s is busy with another fault of that kind", m.n.Name)
			}
			if m == nil {
				fr.Start, fr.Skipped = time.Now(), why
				nm.rec.addFault(fr)
				return
			}
			defer m.unclaim(f.Kind)
			fr.Node, fr.Role = m.n.Name, role
			fr.Start = time.Now()
			if err := nm.apply(ctx, m, fr); err != nil {
				fr.Note = strings.TrimSpace(fr.Note + " error: " + err.Error())
				nm.logf("chaos: %s on %s: %v", f.Kind, m.n.Name, err)
			}
			fr.End = time.Now()
			nm.rec.addFault(fr)
		}()
	}
	wg.Wait()
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// apply injects the fault, waits its duration, and heals it.
func (nm *nemesis) apply(ctx context.Context, m *member, fr *FaultRec) error {
	n := m.n
	switch fr.Kind {
	case Kill, Term:
		m.mu.Lock()
		m.down = true
		var err error
		if fr.Kind == Kill {
			n.Kill()
			nm.rec.addExit(Exit{At: time.Now(), Node: n.Name, Err: "SIGKILL", Expected: true})
		} else {
			t0 := time.Now()
			err = n.Stop(5 * time.Second)
			e := Exit{At: time.Now(), Node: n.Name, Err: "SIGTERM: exit status 0", Expected: err == nil}
			if err != nil {
				e.Err = fmt.Sprintf("SIGTERM: %v\n%s", err, n.Tail(30))
			}
			nm.rec.addExit(e)
			fr.Note = fmt.Sprintf("stopped in %s", ms(time.Since(t0)))
		}
		m.mu.Unlock()
		sleep(ctx, fr.Dur)
		m.mu.Lock()
		defer m.mu.Unlock()
		m.down = false
		if serr := n.Start(m.params); serr != nil {
			return fmt.Errorf("restart: %w", serr)
		}
		return err
	case Stop:
		if err := nm.signal(m, syscall.SIGSTOP); err != nil {
			return err
		}
		sleep(ctx, fr.Dur)
		return nm.signal(m, syscall.SIGCONT)
	case Reload:
		m.mu.Lock()
		defer m.mu.Unlock()
		old := m.params.Priority
		m.params.Priority = fr.Priority
		cfg, err := n.Config(m.params)
		if err != nil {
			return err
		}
		if err := os.WriteFile(n.ConfigPath(), []byte(cfg), 0o600); err != nil {
			return err
		}
		fr.Note = fmt.Sprintf("priority %d → %d", old, fr.Priority)
		return n.Signal(syscall.SIGHUP)
	case HBDown, DataFlap:
		ifname := "ha1"
		if fr.Kind == DataFlap {
			ifname = "port1"
		}
		if err := n.SetLink(ifname, false); err != nil {
			return err
		}
		sleep(ctx, fr.Dur)
		return n.SetLink(ifname, true)
	case HBLoss, Partition:
		table := fmt.Sprintf("chaos_%s_%d", strings.ReplaceAll(string(fr.Kind), "-", "_"), n.Index)
		port := fmt.Sprintf("n%dh1", n.Index)
		match := "ether type { 0x8890, 0x8893 } numgen random mod 100 < " + fmt.Sprint(fr.Pct)
		if fr.Kind == Partition {
			match = ""
		}
		rules := fmt.Sprintf("table bridge %s {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n  iifname %q %s drop\n  oifname %q %s drop\n }\n}\n",
			table, port, match, port, match)
		if err := nftIn(nm.l.Switch, rules); err != nil {
			return err
		}
		sleep(ctx, fr.Dur)
		return nftIn(nm.l.Switch, "delete table bridge "+table+"\n")
	case DiskFull:
		return nm.diskFull(ctx, m, fr)
	}
	return fmt.Errorf("unknown fault %q", fr.Kind)
}

func (nm *nemesis) signal(m *member, sig syscall.Signal) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n.Signal(sig)
}

// nftIn loads nft commands into a namespace.
func nftIn(ns, script string) error {
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, out)
	}
	return nil
}

// diskFull fills the small tmpfs under the node's synchronized directory
// with a ballast file (in its node-local directory, on the same file
// system), watches the node's status for the report, and frees it.
func (nm *nemesis) diskFull(ctx context.Context, m *member, fr *FaultRec) error {
	ballast := filepath.Join(nm.sync.LocalOn(m.n), "ballast")
	defer os.Remove(ballast)
	if err := fill(ballast); err != nil {
		return err
	}
	rep := DiskReport{Fault: fr}
	// The node must report it once it was sent changes: it was running
	// as a secondary, the primary on its hb link, and the writer wrote
	// elsewhere, for a second or more in all.
	var eligible time.Duration
	polls, failed, lastErr := 0, 0, ""
	deadline := time.Now().Add(fr.Dur)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		w0 := nm.writesTo(m.n.Name)
		sleep(ctx, 200*time.Millisecond)
		m.mu.Lock()
		alive := !m.down && !m.busy && !m.netBusy[HBDown] && !m.netBusy[HBLoss] && !m.netBusy[Partition]
		m.mu.Unlock()
		nm.rec.mu.Lock()
		alive = alive && !nm.rec.heldAt(m.n.Name, time.Now())
		nm.rec.mu.Unlock()
		if alive && nm.writesTo(m.n.Name) > w0 {
			eligible += 200 * time.Millisecond
		}
		if rep.Reported {
			continue
		}
		m.mu.Lock()
		st, err := m.n.Status()
		m.mu.Unlock()
		polls++
		if err != nil {
			failed++
			lastErr = err.Error()
			continue
		}
		var said []string
		said = append(said, st.Problems...)
		said = append(said, st.Config.LastError)
		for _, e := range st.History {
			said = append(said, e.Reason)
		}
		for _, s := range said {
			if strings.Contains(s, "no space left on device") {
				rep.Reported, rep.After, rep.Detail = true, time.Since(fr.Start), s
				break
			}
		}
	}
	rep.Pushed = eligible >= time.Second
	fr.Note = fmt.Sprintf("reported: %v (sent changes for %s; %d status polls, %d failed %s)", rep.Reported, eligible, polls, failed, firstLine(lastErr))
	if rep.Reported {
		fr.Note = fmt.Sprintf("reported after %s", ms(rep.After))
	}
	nm.rec.mu.Lock()
	nm.rec.Disk = append(nm.rec.Disk, rep)
	nm.rec.mu.Unlock()
	return nil
}

// fill writes zeros to path until the file system is full.
func fill(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, chunk := range []int{1 << 20, 4 << 10} {
		buf := make([]byte, chunk)
		for {
			if _, err := f.Write(buf); err != nil {
				if errors.Is(err, syscall.ENOSPC) {
					break
				}
				return err
			}
		}
	}
	return nil
}
