package lab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hagent/hagent/control"
)

// Node is one cluster member's namespace and, once started, its hagentd.
type Node struct {
	lab      *Lab
	Name     string
	NS       string
	Index    int
	Socket   string
	StateDir string // persistent state (-state-dir: epoch, sync generation)
	RunDir   string // runtime state (-run-dir: permanent MACs)
	Log      string // hagentd's log file
	// Binary is the hagentd to start; "" is Bin("hagentd").
	Binary string
	// Env is added to hagentd's environment (e.g. GODEBUG=gctrace=1).
	Env []string

	cmd  *exec.Cmd
	done chan error
}

// DefaultPassword is the lab's group key: at least config.MinKeyLen bytes
// (hagentd refuses a shorter key), written 0600.
const DefaultPassword = "lab-secret-lab-secret"

// Params are the knobs of a generated node configuration.
type Params struct {
	GroupID       int
	Priority      int
	Override      bool
	HBInterval    time.Duration // default 200ms
	LostThreshold int           // default 6
	HelloHolddown time.Duration // default 1s
	UptimeMargin  time.Duration // default 300s
	HoldTime      time.Duration
	Monitor       bool // monitor port1
	ARPs          int  // default 3
	ARPsInterval  time.Duration
	Realtime      bool
	NoIPv6        bool
	Hooks         map[string]string // role → command
	ClusterExtra  string            // YAML lines appended to the cluster section (indented 2)
	NodeExtra     string            // YAML lines appended to the node section (indented 2)
	Password      string            // default DefaultPassword
	// KeyFile is where the password is written; "" is one file shared by
	// every node (the cluster: section is synchronized).
	KeyFile string
	// Serial replaces the node's serial (default FGVM0000100<index>).
	Serial string
	// Direct marks every hbdev direct: true (carrier loss = peer loss);
	// CarrierDebounce sets carrier_debounce (0: the default).
	Direct          bool
	CarrierDebounce time.Duration
	// MetricsListen sets metrics_listen (in the node's namespace).
	MetricsListen string
	// HBDevs is how many of the heartbeat links (ha1, ha2…) are hbdevs;
	// 0 is all. The others are free (session_pickup.sync_dev).
	HBDevs int
	// UnicastPort sets unicast_hb.port (sync_port and session_port to the
	// next two) in a RoutedHB lab; 0 keeps the defaults (6065-6067).
	UnicastPort int
}

// Bin returns the path of a built binary (HAGENT_BIN or bin/ of the
// repository).
func Bin(name string) string {
	dir := os.Getenv("HAGENT_BIN")
	if dir == "" {
		dir = filepath.Join(RepoRoot(), "bin")
	}
	return filepath.Join(dir, name)
}

// RepoRoot returns the directory holding go.mod above the working
// directory (the working directory itself when there is none).
func RepoRoot() string {
	wd, _ := os.Getwd()
	for d := wd; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return wd
}

// Config renders the node's hagent.yaml for p.
func (n *Node) Config(p Params) (string, error) {
	if p.HBInterval == 0 {
		p.HBInterval = 200 * time.Millisecond
	}
	if p.LostThreshold == 0 {
		p.LostThreshold = 6
	}
	if p.HelloHolddown == 0 {
		p.HelloHolddown = time.Second
	}
	if p.UptimeMargin == 0 {
		p.UptimeMargin = 300 * time.Second
	}
	if p.ARPs == 0 {
		p.ARPs = 3
	}
	if p.ARPsInterval == 0 {
		p.ARPsInterval = time.Second
	}
	if p.Password == "" {
		p.Password = DefaultPassword
	}
	if p.Priority == 0 {
		p.Priority = 128
	}
	// One key path for every node: the cluster: section (password_file
	// included) is synchronized and must be the same everywhere.
	key := filepath.Join(n.lab.Dir, "key")
	if p.KeyFile != "" {
		key = p.KeyFile
	}
	if p.Serial == "" {
		p.Serial = fmt.Sprintf("FGVM%08d", 1000+n.Index)
	}
	if err := os.WriteFile(key, []byte(p.Password+"\n"), 0o600); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "control_socket: %s\nlog_level: debug\n", n.Socket)
	if p.MetricsListen != "" {
		fmt.Fprintf(&b, "metrics_listen: %q\n", p.MetricsListen)
	}
	fmt.Fprintf(&b, "node:\n  name: %s\n  serial: %s\n  priority: %d\n  override: %v\n  realtime: %v\n",
		n.Name, p.Serial, p.Priority, p.Override, p.Realtime)
	if p.NodeExtra != "" {
		for _, line := range strings.Split(strings.TrimRight(p.NodeExtra, "\n"), "\n") {
			b.WriteString("  " + line + "\n")
		}
	}
	fmt.Fprintf(&b, "cluster:\n  group_name: lab\n  group_id: %d\n  password_file: %s\n", p.GroupID, key)
	if n.lab.Spec.RoutedHB {
		b.WriteString("  hbdev: []\n  unicast_hb:\n    enabled: true\n    peers: [")
		for i := range n.lab.Spec.Nodes {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(UnicastAddr(i))
		}
		b.WriteString("]\n")
		if p.UnicastPort != 0 {
			fmt.Fprintf(&b, "    port: %d\n    sync_port: %d\n    session_port: %d\n", p.UnicastPort, p.UnicastPort+1, p.UnicastPort+2)
		}
	} else {
		b.WriteString("  hbdev:\n")
		hbdevs := n.lab.Spec.HBLinks
		if p.HBDevs > 0 {
			hbdevs = p.HBDevs
		}
		for h := 1; h <= hbdevs; h++ {
			fmt.Fprintf(&b, "    - {name: ha%d, priority: %d, direct: %v}\n", h, 100-h*10, p.Direct)
		}
	}
	if p.CarrierDebounce > 0 {
		fmt.Fprintf(&b, "  carrier_debounce: %s\n", p.CarrierDebounce)
	}
	fmt.Fprintf(&b, "  hb_interval: %s\n  hb_lost_threshold: %d\n  hello_holddown: %s\n  uptime_diff_margin: %s\n  failover_hold_time: %s\n",
		p.HBInterval, p.LostThreshold, p.HelloHolddown, p.UptimeMargin, p.HoldTime)
	b.WriteString("  interfaces:\n")
	for d := 1; d <= n.lab.Spec.DataLinks; d++ {
		if d == 1 {
			if p.NoIPv6 {
				fmt.Fprintf(&b, "    - {name: port1, addresses: [%s/24]}\n", ClusterIPv4)
			} else {
				fmt.Fprintf(&b, "    - {name: port1, addresses: [%s/24, \"%s/64\"]}\n", ClusterIPv4, ClusterIPv6)
			}
		} else {
			fmt.Fprintf(&b, "    - {name: port%d, addresses: [10.9.%d.100/24]}\n", d, d)
		}
	}
	if p.Monitor {
		b.WriteString("  monitor: [port1]\n")
	}
	fmt.Fprintf(&b, "  arps: %d\n  arps_interval: %s\n", p.ARPs, p.ARPsInterval)
	if len(p.Hooks) > 0 {
		b.WriteString("  hooks:\n")
		for role, cmd := range p.Hooks {
			fmt.Fprintf(&b, "    %s: %q\n", role, cmd)
		}
	}
	if p.ClusterExtra != "" {
		for _, line := range strings.Split(strings.TrimRight(p.ClusterExtra, "\n"), "\n") {
			b.WriteString("  " + line + "\n")
		}
	}
	return b.String(), nil
}

// Start writes the configuration and starts hagentd in the namespace, then
// waits until its control socket answers.
func (n *Node) Start(p Params) error {
	cfg, err := n.Config(p)
	if err != nil {
		return err
	}
	return n.StartYAML(cfg)
}

// ConfigPath is where the node's configuration is written.
func (n *Node) ConfigPath() string { return filepath.Join(n.lab.Dir, n.Name, "hagent.yaml") }

// StartYAML starts hagentd with the given configuration text.
func (n *Node) StartYAML(cfg string) error {
	if n.cmd != nil {
		return fmt.Errorf("%s already running", n.Name)
	}
	path := n.ConfigPath()
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return err
	}
	n.Log = filepath.Join(n.lab.Dir, n.Name, "hagentd.log")
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	bin := n.Binary
	if bin == "" {
		bin = Bin("hagentd")
	}
	cmd := exec.Command("ip", "netns", "exec", n.NS, bin, "-c", path, "-state-dir", n.StateDir, "-run-dir", n.RunDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if len(n.Env) > 0 {
		cmd.Env = append(os.Environ(), n.Env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	n.cmd = cmd
	n.done = make(chan error, 1)
	go func() { n.done <- cmd.Wait(); logf.Close() }()
	err = Eventually(10*time.Second, func() error {
		select {
		case err := <-n.done:
			n.done <- err
			return fmt.Errorf("hagentd exited: %v\n%s", err, n.Tail(20))
		default:
		}
		_, err := n.Status()
		return err
	})
	return err
}

// Running reports whether hagentd runs.
func (n *Node) Running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case err := <-n.done:
		n.done <- err
		return false
	default:
		return true
	}
}

// Exited reports whether a started hagentd has exited, and how (the error
// of its wait: nil for exit 0). Not started, or stopped through Kill or
// Stop: false.
func (n *Node) Exited() (bool, error) {
	if n.cmd == nil {
		return false, nil
	}
	select {
	case err := <-n.done:
		n.done <- err
		return true, err
	default:
		return false, nil
	}
}

// Forget drops an hagentd that has exited on its own (after Exited), so
// that the node can be started again.
func (n *Node) Forget() {
	if exited, _ := n.Exited(); exited {
		n.cmd = nil
	}
}

// Kill sends SIGKILL (a crash) and waits for the process to go.
func (n *Node) Kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
	n.cmd = nil
}

// Release runs `hagentd --release` with the node's last configuration, as
// the systemd unit's ExecStopPost does after hagentd died: the vMACs and
// cluster addresses it left go at once. Its output goes to the node's log.
func (n *Node) Release() error {
	bin := n.Binary
	if bin == "" {
		bin = Bin("hagentd")
	}
	out, err := exec.Command("ip", "netns", "exec", n.NS, bin, "-c", n.ConfigPath(), "-run-dir", n.RunDir, "--release").CombinedOutput()
	if f, ferr := os.OpenFile(n.Log, os.O_WRONLY|os.O_APPEND, 0o644); ferr == nil {
		f.Write(out)
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("%s: hagentd --release: %v: %s", n.Name, err, out)
	}
	return nil
}

// Signal sends sig to hagentd.
func (n *Node) Signal(sig syscall.Signal) error {
	if n.cmd == nil {
		return errors.New("not running")
	}
	return n.cmd.Process.Signal(sig)
}

// Stop sends SIGTERM and waits up to timeout for a clean exit; it returns
// the exit error (nil for exit 0).
func (n *Node) Stop(timeout time.Duration) error {
	if n.cmd == nil {
		return nil
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.done:
		n.cmd = nil
		return err
	case <-time.After(timeout):
		n.Kill()
		return fmt.Errorf("%s did not stop within %v", n.Name, timeout)
	}
}

// Status asks hagentd for `ha status --json`.
func (n *Node) Status() (*control.Status, error) {
	var st control.Status
	if err := control.Call(n.Socket, control.CmdStatus, &st, 2*time.Second); err != nil {
		return nil, err
	}
	return &st, nil
}

// Ctl runs agentctl against the node and returns its output.
func (n *Node) Ctl(args ...string) (string, error) {
	out, err := exec.Command(Bin("agentctl"), append([]string{"-s", n.Socket}, args...)...).CombinedOutput()
	return string(out), err
}

// Role returns the node's role ("" when it does not answer).
func (n *Node) Role() string {
	st, err := n.Status()
	if err != nil {
		return ""
	}
	return st.Role
}

// SetLink sets one of the node's interfaces up or down.
func (n *Node) SetLink(ifname string, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return ip("-n", n.NS, "link", "set", ifname, state)
}

// Crash makes the node a dead box: every interface goes down (heartbeat
// links first), then hagentd is killed. Links first, because a process
// killed first leaves its data port forwarding for the tens of
// milliseconds the `ip` commands take, which would hide part of the outage.
func (n *Node) Crash() {
	for _, h := range n.HBNames() {
		_ = n.SetLink(h, false)
	}
	for d := 1; d <= n.lab.Spec.DataLinks; d++ {
		_ = n.SetLink(fmt.Sprintf("port%d", d), false)
	}
	n.Kill()
}

// PID returns hagentd's process id (of the `ip netns exec` wrapper, which
// execs hagentd), 0 when not running.
func (n *Node) PID() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Revive brings every interface of the node back up (after Crash).
func (n *Node) Revive() error {
	for d := 1; d <= n.lab.Spec.DataLinks; d++ {
		if err := n.SetLink(fmt.Sprintf("port%d", d), true); err != nil {
			return err
		}
	}
	for _, h := range n.HBNames() {
		if err := n.SetLink(h, true); err != nil {
			return err
		}
	}
	if n.lab.Spec.RoutedHB {
		// The route through the router went with the link.
		return ip("-n", n.NS, "route", "replace", "10.99.0.0/16", "via", fmt.Sprintf("10.99.%d.254", n.Index+1))
	}
	return nil
}

// HBNames are the node's heartbeat interfaces: ha1… or, in a RoutedHB
// lab, hbu.
func (n *Node) HBNames() []string {
	if n.lab.Spec.RoutedHB {
		return []string{"hbu"}
	}
	var out []string
	for h := 1; h <= n.lab.Spec.HBLinks; h++ {
		out = append(out, fmt.Sprintf("ha%d", h))
	}
	return out
}

// Tail returns the last lines of the node's log.
func (n *Node) Tail(lines int) string {
	b, err := os.ReadFile(n.Log)
	if err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// MAC returns the current MAC of an interface of the node.
func (n *Node) MAC(ifname string) (net.HardwareAddr, error) {
	var hw net.HardwareAddr
	err := InNS(n.NS, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		hw = ifi.HardwareAddr
		return nil
	})
	return hw, err
}

// Addrs returns the addresses of an interface of the node.
func (n *Node) Addrs(ifname string) ([]string, error) {
	var out []string
	err := InNS(n.NS, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		as, err := ifi.Addrs()
		if err != nil {
			return err
		}
		for _, a := range as {
			out = append(out, a.String())
		}
		return nil
	})
	return out, err
}

// HasClusterAddr reports whether the node carries the cluster IPv4 address.
func (n *Node) HasClusterAddr() bool {
	as, _ := n.Addrs("port1")
	for _, a := range as {
		if strings.HasPrefix(a, ClusterIPv4+"/") {
			return true
		}
	}
	return false
}
