package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Conntrackd is conntrackd (Debian's package) running in a node's
// namespace in FTFW mode over the node's ha1 link: the benchmarks' stand-in
// for hagent's session pickup, driven by keepalived with the
// primary-backup.sh notify script as conntrackd's documentation shows
// (/usr/share/doc/conntrackd/examples/sync).
type Conntrackd struct {
	Node   *Node
	Conf   string
	Log    string
	Script string // primary-backup.sh with this node's config and lock file
	cmd    *exec.Cmd
	done   chan error
}

// EnsureConntrackd returns the conntrackd binary, installing the Debian
// packages conntrackd and conntrack when missing.
func EnsureConntrackd() (string, error) {
	if p, err := exec.LookPath("conntrackd"); err == nil {
		return p, nil
	}
	if err := AptInstall("conntrackd", "conntrack"); err != nil {
		return "", err
	}
	return exec.LookPath("conntrackd")
}

// ConntrackdAddr is the node's address on ha1 for conntrackd's channel
// (the one keepalived's VRRP on ha1 uses too).
func (n *Node) ConntrackdAddr() string { return fmt.Sprintf("10.9.250.%d", n.Index+1) }

// StartConntrackd writes the node's conntrackd.conf (FTFW, UDP over ha1
// to peer, TCP only like the upstream example) and primary-backup.sh, and
// starts conntrackd in the foreground.
func (n *Node) StartConntrackd(peer *Node) (*Conntrackd, error) {
	return n.StartConntrackdMode(peer, "FTFW {\n\t\tDisableExternalCache Off\n\t}")
}

// StartConntrackdMode is StartConntrackd with the Sync Mode block given
// (after "Mode "): "FTFW {…}" or "NOTRACK {…}".
func (n *Node) StartConntrackdMode(peer *Node, mode string) (*Conntrackd, error) {
	bin, err := EnsureConntrackd()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(n.lab.Dir, n.Name)
	c := &Conntrackd{Node: n, Conf: filepath.Join(dir, "conntrackd.conf"), Log: filepath.Join(dir, "conntrackd.log"),
		Script: filepath.Join(dir, "primary-backup.sh")}
	if err := ip("-n", n.NS, "addr", "replace", n.ConntrackdAddr()+"/24", "dev", "ha1"); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`Sync {
	Mode %s
	UDP {
		IPv4_address %s
		IPv4_Destination_Address %s
		Port 3780
		Interface ha1
		SndSocketBuffer 1249280
		RcvSocketBuffer 1249280
		Checksum on
	}
}
General {
	HashSize 32768
	HashLimit 524288
	LogFile %s
	LockFile %s
	UNIX {
		Path %s
	}
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 8388608
	Filter From Userspace {
		Protocol Accept {
			TCP
		}
		Address Ignore {
			IPv4_address 127.0.0.1
			IPv4_address %s
			IPv4_address %s
		}
	}
}
`, mode, n.ConntrackdAddr(), peer.ConntrackdAddr(), c.Log, filepath.Join(dir, "conntrackd.lock"), c.Ctl(),
		n.ConntrackdAddr(), peer.ConntrackdAddr())
	if err := os.WriteFile(c.Conf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	script, err := os.ReadFile("/usr/share/doc/conntrackd/examples/sync/primary-backup.sh")
	if err != nil {
		return nil, fmt.Errorf("conntrackd's primary-backup.sh: %w", err)
	}
	s := strings.Replace(string(script), "CONNTRACKD_CONFIG=/etc/conntrackd/conntrackd.conf", "CONNTRACKD_CONFIG="+c.Conf, 1)
	s = strings.Replace(s, "CONNTRACKD_LOCK=/var/lock/conntrack.lock", "CONNTRACKD_LOCK="+filepath.Join(dir, "conntrackd.lock"), 1)
	if err := os.WriteFile(c.Script, []byte(s), 0o755); err != nil {
		return nil, err
	}
	_ = os.Remove(filepath.Join(dir, "conntrackd.lock"))
	logf, err := os.OpenFile(filepath.Join(dir, "conntrackd.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", "netns", "exec", n.NS, bin, "-C", c.Conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	c.cmd, c.done = cmd, make(chan error, 1)
	go func() { c.done <- cmd.Wait(); logf.Close() }()
	if err := Eventually(10*time.Second, func() error {
		select {
		case err := <-c.done:
			c.done <- err
			return fmt.Errorf("conntrackd exited: %v", err)
		default:
		}
		_, err := c.Run("-s")
		return err
	}); err != nil {
		c.Kill()
		return nil, err
	}
	return c, nil
}

// Ctl is the path of conntrackd's UNIX socket.
func (c *Conntrackd) Ctl() string {
	return filepath.Join(c.Node.lab.Dir, c.Node.Name, "conntrackd.ctl")
}

// Run runs `conntrackd -C conf ARGS` (a request to the running daemon).
func (c *Conntrackd) Run(args ...string) (string, error) {
	return Exec(c.Node.NS, append([]string{"conntrackd", "-C", c.Conf}, args...)...)
}

// PID returns the daemon's process id.
func (c *Conntrackd) PID() int {
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Kill stops conntrackd with SIGKILL (a crash).
func (c *Conntrackd) Kill() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
	c.cmd = nil
}
