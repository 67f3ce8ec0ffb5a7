package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// KeepalivedParams are the knobs of a generated keepalived configuration:
// one VRRPv3 instance carrying ClusterIPv4 on port1, as the counterpart of
// an hagent node in the same lab (benchmarks compare the two).
type KeepalivedParams struct {
	AdvertInt time.Duration // advert_int, default 1s (keepalived accepts centiseconds)
	Priority  int           // default 100
	// Interface carries the VRRP adverts, default "ha1" (the lab's
	// heartbeat link, as hagent's hbdev). The node gets 10.9.250.<index+1>/24
	// on it, since VRRP needs a source address there. Use "port1" for
	// adverts on the data bridge; the node then gets 10.9.0.<index+1>/24.
	Interface string
	// TrackPort1 adds track_interface port1 (link failover).
	TrackPort1 bool
	// DontTrackPrimary sets dont_track_primary: a carrier loss of the VRRP
	// interface does not put the instance in FAULT (needed when adverts
	// run on a direct cable to the peer).
	DontTrackPrimary bool
	// NoPreempt sets nopreempt (the instance starts as BACKUP either way).
	NoPreempt bool
	VRID      int // virtual_router_id, default 51
	// RTPriority, when non-zero, sets vrrp_rt_priority (SCHED_RR for the
	// VRRP process), keepalived's counterpart of hagent's realtime.
	RTPriority int
	// ExtraVIPs are more virtual_ipaddress lines ("10.9.2.100/24 dev
	// port2"), after ClusterIPv4 on port1.
	ExtraVIPs []string
	// Notify are notify_master/notify_backup/notify_fault commands, by
	// state ("master", "backup", "fault").
	Notify map[string]string
}

// Keepalived is a keepalived process running in a node's namespace.
type Keepalived struct {
	Node    *Node
	Conf    string
	Log     string
	PIDFile string // main (parent) process
	VRRPPID string // VRRP child process

	cmd  *exec.Cmd
	done chan error
}

// EnsureKeepalived returns the path of the keepalived binary, installing
// the Debian package with apt-get when it is missing (and apt-get update
// first when the install fails). Installing never starts the system
// service in a container with policy-rc.d; a system keepalived would not
// interfere anyway, since lab instances run in their own namespaces with
// their own configuration and pid files.
func EnsureKeepalived() (string, error) {
	if p, err := exec.LookPath("keepalived"); err == nil {
		return p, nil
	}
	if err := AptInstall("keepalived"); err != nil {
		return "", err
	}
	return exec.LookPath("keepalived")
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// KeepalivedConfig renders keepalived.conf for the node.
func (n *Node) KeepalivedConfig(p KeepalivedParams) string {
	p = p.withDefaults()
	var b strings.Builder
	fmt.Fprintf(&b, "global_defs {\n  router_id %s\n  vrrp_version 3\n  script_user root\n", n.Name)
	if p.RTPriority > 0 {
		fmt.Fprintf(&b, "  vrrp_rt_priority %d\n  vrrp_no_swap\n", p.RTPriority)
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "vrrp_instance VI_1 {\n  state BACKUP\n  interface %s\n  virtual_router_id %d\n  priority %d\n",
		p.Interface, p.VRID, p.Priority)
	fmt.Fprintf(&b, "  advert_int %s\n  accept\n", strconv.FormatFloat(p.AdvertInt.Seconds(), 'f', -1, 64))
	if p.NoPreempt {
		b.WriteString("  nopreempt\n")
	}
	if p.TrackPort1 {
		b.WriteString("  track_interface {\n    port1\n  }\n")
	}
	if p.DontTrackPrimary {
		// The VRRP interface losing carrier (a direct cable whose far end
		// died) must not fault the instance, or the backup never takes over.
		b.WriteString("  dont_track_primary\n")
	}
	for _, st := range []string{"master", "backup", "fault"} {
		if cmd := p.Notify[st]; cmd != "" {
			fmt.Fprintf(&b, "  notify_%s %q\n", st, cmd)
		}
	}
	fmt.Fprintf(&b, "  virtual_ipaddress {\n    %s/24 dev port1\n", ClusterIPv4)
	for _, v := range p.ExtraVIPs {
		fmt.Fprintf(&b, "    %s\n", v)
	}
	b.WriteString("  }\n}\n")
	return b.String()
}

func (p KeepalivedParams) withDefaults() KeepalivedParams {
	if p.AdvertInt == 0 {
		p.AdvertInt = time.Second
	}
	if p.Priority == 0 {
		p.Priority = 100
	}
	if p.Interface == "" {
		p.Interface = "ha1"
	}
	if p.VRID == 0 {
		p.VRID = 51
	}
	return p
}

// keepalivedAddr is the node's own address on the VRRP interface.
func (n *Node) keepalivedAddr(ifname string) string {
	if ifname == "port1" {
		return fmt.Sprintf("10.9.0.%d/24", n.Index+1)
	}
	return fmt.Sprintf("10.9.250.%d/24", n.Index+1)
}

// StartKeepalived writes the node's keepalived.conf and starts keepalived
// (VRRP only, in the foreground, logging to a file) in the node's
// namespace, then waits until its VRRP process is up. Stop it with Kill or
// Stop; Lab.Close does not know about it.
func (n *Node) StartKeepalived(p KeepalivedParams) (*Keepalived, error) {
	bin, err := EnsureKeepalived()
	if err != nil {
		return nil, err
	}
	p = p.withDefaults()
	dir := filepath.Join(n.lab.Dir, n.Name)
	k := &Keepalived{Node: n,
		Conf:    filepath.Join(dir, "keepalived.conf"),
		Log:     filepath.Join(dir, "keepalived.log"),
		PIDFile: filepath.Join(dir, "keepalived.pid"),
		VRRPPID: filepath.Join(dir, "keepalived-vrrp.pid"),
	}
	if err := ip("-n", n.NS, "addr", "replace", n.keepalivedAddr(p.Interface), "dev", p.Interface); err != nil {
		return nil, err
	}
	if err := os.WriteFile(k.Conf, []byte(n.KeepalivedConfig(p)), 0o600); err != nil {
		return nil, err
	}
	for _, f := range []string{k.PIDFile, k.VRRPPID} {
		_ = os.Remove(f)
	}
	logf, err := os.OpenFile(k.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logf, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	// -n: no daemon, -l: log to the console, -D: detailed log, -P: VRRP
	// only; own pid files so that instances (and any system keepalived)
	// never see each other.
	cmd := exec.Command("ip", "netns", "exec", n.NS, bin, "-n", "-l", "-D", "-P",
		"-f", k.Conf, "-p", k.PIDFile, "-r", k.VRRPPID, "-c", filepath.Join(dir, "keepalived-checkers.pid"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	k.cmd = cmd
	k.done = make(chan error, 1)
	go func() { k.done <- cmd.Wait(); logf.Close() }()
	err = Eventually(10*time.Second, func() error {
		if !k.Running() {
			return fmt.Errorf("keepalived exited:\n%s", k.Tail(20))
		}
		if _, err := readPID(k.VRRPPID); err != nil {
			return err
		}
		if k.State() == "" {
			return errors.New("VRRP instance not initialised yet")
		}
		return nil
	})
	if err != nil {
		k.Kill()
		return nil, err
	}
	return k, nil
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// PIDs returns the main process and, when it runs, the VRRP child.
func (k *Keepalived) PIDs() []int {
	if k.cmd == nil {
		return nil
	}
	pids := []int{k.cmd.Process.Pid}
	if pid, err := readPID(k.VRRPPID); err == nil && pid != pids[0] {
		pids = append(pids, pid)
	}
	return pids
}

// Running reports whether the main process runs.
func (k *Keepalived) Running() bool {
	if k.cmd == nil {
		return false
	}
	select {
	case err := <-k.done:
		k.done <- err
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to the VRRP child and the main process at once (a
// crash) and waits for the main process to go.
func (k *Keepalived) Kill() {
	if k.cmd == nil {
		return
	}
	for _, pid := range k.PIDs() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-k.done
	k.cmd = nil
}

// Stop sends SIGTERM (keepalived then sends a priority-0 advert and
// removes its addresses) and waits up to timeout for the exit.
func (k *Keepalived) Stop(timeout time.Duration) error {
	if k.cmd == nil {
		return nil
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
		k.cmd = nil
		return nil
	case <-time.After(timeout):
		k.Kill()
		return fmt.Errorf("keepalived on %s did not stop within %v", k.Node.Name, timeout)
	}
}

// State returns the VRRP instance's last state from the log: MASTER,
// BACKUP, FAULT, or "" before the first transition of this run.
func (k *Keepalived) State() string {
	b, err := os.ReadFile(k.Log)
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndex(s, "=== start "); i >= 0 {
		s = s[i:]
	}
	const mark = "Entering "
	i := strings.LastIndex(s, mark)
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+len(mark):])
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// Tail returns the last lines of the keepalived log.
func (k *Keepalived) Tail(lines int) string {
	b, err := os.ReadFile(k.Log)
	if err != nil {
		return ""
	}
	return lastLines(string(b), lines)
}

// FlushClusterAddr removes ClusterIPv4 from the node's port1, as a reboot
// would after a crash left it there.
func (n *Node) FlushClusterAddr() {
	_ = ip("-n", n.NS, "addr", "del", ClusterIPv4+"/24", "dev", "port1")
}
