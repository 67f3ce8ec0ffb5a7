package lab

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// EnsureRsync makes sure rsync, ssh and sshd are installed, installing the
// Debian packages rsync and openssh-server with apt-get when one is missing
// (apt-get update first when the install fails).
func EnsureRsync() error {
	missing := false
	for _, p := range []string{"rsync", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = true
		}
	}
	if _, err := os.Stat(sshdPath); err != nil {
		missing = true
	}
	if !missing {
		return nil
	}
	return AptInstall("rsync", "openssh-server", "openssh-client")
}

const sshdPath = "/usr/sbin/sshd"

// SSHD is an sshd running in a node's namespace with a throwaway host key
// and a throwaway client key, accepting root by key only, for rsync
// comparisons. Its files live in the lab directory.
type SSHD struct {
	Node *Node
	Addr string // listen address (no port; port 22)
	Dir  string
	Key  string // client private key
	Log  string

	cmd  *exec.Cmd
	done chan error
}

// StartSSHD adds addr (CIDR, e.g. 10.9.0.2/24) to the node's port1 and
// starts sshd listening on it in the node's namespace (through `ip netns
// exec`, so it sees the node's SyncDir copies). In sshd's mount namespace
// root's ~/.bashrc is replaced by an empty file (see below). Stop it with
// Stop; Lab.Close does not know about it.
func (n *Node) StartSSHD(cidr string) (*SSHD, error) {
	if err := EnsureRsync(); err != nil {
		return nil, err
	}
	addr, _, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, err
	}
	if err := n.AddAddr("port1", cidr); err != nil {
		return nil, err
	}
	dir := filepath.Join(n.lab.Dir, n.Name, "sshd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &SSHD{Node: n, Addr: addr.String(), Dir: dir, Key: filepath.Join(dir, "client_key"), Log: filepath.Join(dir, "sshd.log")}
	hostKey := filepath.Join(dir, "host_key")
	for _, k := range []string{hostKey, s.Key} {
		_ = os.Remove(k)
		_ = os.Remove(k + ".pub")
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(s.Key + ".pub")
	if err != nil {
		return nil, err
	}
	auth := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(auth, pub, 0o600); err != nil {
		return nil, err
	}
	// Privilege separation directory sshd insists on.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "sshd_config")
	conf := strings.Join([]string{
		"ListenAddress " + s.Addr,
		"Port 22",
		"HostKey " + hostKey,
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"AuthorizedKeysFile " + auth,
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"PrintMotd no",
		"MaxStartups 100",
		"MaxSessions 100",
		"Subsystem sftp internal-sftp",
		"",
	}, "\n")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(s.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	// Remote commands run through root's login shell, and bash sources
	// ~/.bashrc for sshd. A heavy one (pyenv init: 0.5 s on the lab VM)
	// would be charged to every rsync run, so sshd's private mount
	// namespace (made by ip netns exec) gets an empty file over it.
	args := []string{"netns", "exec", n.NS, sshdPath, "-D", "-e", "-f", cfg}
	if home, err := os.UserHomeDir(); err == nil && os.Geteuid() == 0 {
		rc := filepath.Join(home, ".bashrc")
		if _, err := os.Stat(rc); err == nil {
			empty := filepath.Join(dir, "empty-bashrc")
			if err := os.WriteFile(empty, nil, 0o644); err != nil {
				return nil, err
			}
			args = []string{"netns", "exec", n.NS, "sh", "-c", `mount --bind "$1" "$2" && exec "$3" -D -e -f "$4"`,
				"sh", empty, rc, sshdPath, cfg}
		}
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	s.cmd = cmd
	s.done = make(chan error, 1)
	go func() { s.done <- cmd.Wait(); logf.Close() }()
	err = Eventually(10*time.Second, func() error {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("sshd exited: %v: %s", err, s.tail())
		default:
		}
		return InNS(n.NS, func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(s.Addr, "22"), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
	})
	if err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *SSHD) tail() string {
	b, _ := os.ReadFile(s.Log)
	return lastLines(string(b), 10)
}

// SSHCommand returns the ssh command line for rsync's -e: the throwaway
// key, no host key checks, batch mode. With mux, connections share one
// master connection (ControlMaster auto, kept 60 s), so a run pays no key
// exchange once the master is up.
func (s *SSHD) SSHCommand(mux bool) string {
	args := []string{"ssh", "-i", s.Key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "LogLevel=ERROR"}
	if mux {
		args = append(args, "-o", "ControlMaster=auto", "-o", "ControlPath="+filepath.Join(s.Dir, "mux-%C"), "-o", "ControlPersist=60")
	}
	return strings.Join(args, " ")
}

// Stop asks a multiplexing master, if any, to exit, then kills sshd.
func (s *SSHD) Stop() {
	if s.cmd == nil {
		return
	}
	// A ControlPersist master runs in the background of the client's
	// namespace; its socket is a file in Dir.
	if ms, _ := filepath.Glob(filepath.Join(s.Dir, "mux-*")); len(ms) > 0 {
		for _, m := range ms {
			_ = exec.Command("ssh", "-o", "ControlPath="+m, "-O", "exit", "x").Run()
		}
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}
