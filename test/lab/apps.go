package lab

// Real applications through the firewall pair (test/apps_test.go): Debian's
// servers in the server namespace (OpenSSH, vsftpd, dnsmasq, iperf3) and
// their clients in the client namespace (ssh, Python's ftplib, dig, ping,
// iperf3), each measured across a failover of the pair.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The applications' ports on the server.
const (
	IperfTCPPort = 5201
	IperfUDPPort = 5202
	FTPPasvMin   = 40000
	FTPPasvMax   = 40100
	// AppDNSName is the name dnsmasq answers with ServerIPv4.
	AppDNSName = "app.lab.test"
	// FTPFile is the file the FTP clients fetch, FTPFileSize its size.
	FTPFile     = "data.bin"
	FTPFileSize = 256 << 10
	// FTPSameLengthClient is a second address of the client, as long as
	// WANClusterIPv4: the helper's rewrite of its PORT keeps the length
	// (no sequence adjustment), where ClientIPv4's adds a byte.
	FTPSameLengthClient = "10.9.0.200"
)

// AppPackages are the Debian packages the suite runs, by the program that
// tells whether each is installed.
var AppPackages = map[string]string{
	"iperf3":  "iperf3",
	"sshd":    "openssh-server",
	"ssh":     "openssh-client",
	"vsftpd":  "vsftpd",
	"dnsmasq": "dnsmasq-base",
	"dig":     "bind9-dnsutils",
	"ping":    "iputils-ping",
	"python3": "python3",
}

// MissingAppPackages returns the packages of AppPackages whose program is
// not on PATH (nor in /usr/sbin).
func MissingAppPackages() []string {
	var out []string
	for prog, pkg := range AppPackages {
		if _, err := exec.LookPath(prog); err == nil {
			continue
		}
		if _, err := os.Stat("/usr/sbin/" + prog); err == nil {
			continue
		}
		out = append(out, pkg)
	}
	return out
}

// AppServers are the long-lived servers of the suite, in the server
// namespace, with their throwaway keys and files in Dir.
type AppServers struct {
	l   *Lab
	Dir string
	// ClientKey is the private key whose public half root's sshd accepts.
	ClientKey string
	// FTPLog is vsftpd's protocol log (the commands as the server got
	// them, after the firewall's FTP helper rewrote them).
	FTPLog string

	mu    sync.Mutex
	procs []*exec.Cmd
	iperf []*exec.Cmd // this run's iperf3 servers
}

// StartAppServers starts sshd, vsftpd and dnsmasq in the lab's server
// namespace, gives the client FTPSameLengthClient and waits until each
// server listens. The iperf3 servers are started
// per run (StartIperfServers): a one-off server never stays busy with a
// test whose client died.
func StartAppServers(l *Lab) (*AppServers, error) {
	if l.Server == "" {
		return nil, errors.New("lab: applications need a WAN lab")
	}
	s := &AppServers{l: l, Dir: filepath.Join(l.Dir, "apps")}
	if err := s.prepare(); err != nil {
		return nil, err
	}
	if err := ip("-n", l.Client, "addr", "add", FTPSameLengthClient+"/24", "dev", "eth0"); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	sshd := filepath.Join(s.Dir, "sshd_config")
	for _, c := range [][]string{
		{"/usr/sbin/sshd", "-D", "-e", "-f", sshd},
		{"/usr/sbin/vsftpd", filepath.Join(s.Dir, "vsftpd.conf")},
		{"/usr/sbin/dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
			"--listen-address=" + ServerIPv4, "--address=/" + AppDNSName + "/" + ServerIPv4,
			"--pid-file=" + filepath.Join(s.Dir, "dnsmasq.pid"), "--log-facility=" + filepath.Join(s.Dir, "dnsmasq.log")},
	} {
		if err := s.spawn(filepath.Base(c[0]), c...); err != nil {
			return nil, err
		}
	}
	if err := s.waitListening("tcp", 22, 21); err != nil {
		return nil, err
	}
	if err := s.waitListening("udp", 53); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// prepare writes the keys and configurations.
func (s *AppServers) prepare() error {
	empty, ftpRoot := filepath.Join(s.Dir, "empty"), filepath.Join(s.Dir, "ftp")
	for _, d := range []string{s.Dir, empty, ftpRoot, "/run/sshd"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// The anonymous FTP root is read by vsftpd as its ftp user (created by
	// the Debian package) after its chroot.
	if err := os.Chmod(ftpRoot, 0o755); err != nil {
		return err
	}
	data := make([]byte, FTPFileSize)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(ftpRoot, FTPFile), data, 0o644); err != nil {
		return err
	}
	host, client := filepath.Join(s.Dir, "host_key"), filepath.Join(s.Dir, "client_key")
	for _, k := range []string{host, client} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hagent-lab", "-f", k).CombinedOutput(); err != nil {
			return fmt.Errorf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(client + ".pub")
	if err != nil {
		return err
	}
	auth := filepath.Join(s.Dir, "authorized_keys")
	if err := os.WriteFile(auth, pub, 0o600); err != nil {
		return err
	}
	s.ClientKey = client
	s.FTPLog = filepath.Join(s.Dir, "vsftpd.log")
	sshd := fmt.Sprintf(`Port 22
ListenAddress %s
HostKey %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
LogLevel ERROR
`, ServerIPv4, host, filepath.Join(s.Dir, "sshd.pid"), auth)
	// vsftpd runs in a network namespace with listen=YES and a
	// listen_address, no seccomp sandbox and a secure_chroot_dir that
	// exists.
	// log_ftp_protocol records the PORT commands as the server gets them.
	// No isolation: vsftpd would give each session a network namespace of
	// its own, out of reach of KillNamespaceProcs (seen: sessions of dead
	// clients outliving the lab).
	vsftpd := fmt.Sprintf(`listen=YES
listen_ipv6=NO
listen_address=%s
background=NO
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
secure_chroot_dir=%s
anonymous_enable=YES
no_anon_password=YES
anon_root=%s
local_enable=NO
write_enable=NO
pasv_enable=YES
pasv_min_port=%d
pasv_max_port=%d
port_enable=YES
connect_from_port_20=YES
xferlog_enable=YES
xferlog_std_format=NO
log_ftp_protocol=YES
vsftpd_log_file=%s
syslog_enable=NO
`, ServerIPv4, empty, ftpRoot, FTPPasvMin, FTPPasvMax, s.FTPLog)
	if err := os.WriteFile(filepath.Join(s.Dir, "sshd_config"), []byte(sshd), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.Dir, "vsftpd.conf"), []byte(vsftpd), 0o600)
}

// spawn starts a server in the server namespace, its output in
// Dir/<name>.out.
func (s *AppServers) spawn(name string, args ...string) error {
	_, err := s.spawnCmd(name, args...)
	return err
}

func (s *AppServers) spawnCmd(name string, args ...string) (*exec.Cmd, error) {
	out, err := os.OpenFile(filepath.Join(s.Dir, name+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", s.l.Server}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() { cmd.Wait(); out.Close() }()
	s.mu.Lock()
	s.procs = append(s.procs, cmd)
	s.mu.Unlock()
	return cmd, nil
}

// waitListening waits until the server namespace listens on every port
// (proto "tcp" or "udp").
func (s *AppServers) waitListening(proto string, ports ...int) error {
	return EventuallyEvery(10*time.Second, 50*time.Millisecond, func() error {
		out, err := Exec(s.l.Server, "ss", "-Hln", "--"+proto)
		if err != nil {
			return err
		}
		for _, p := range ports {
			if !strings.Contains(out, fmt.Sprintf(":%d ", p)) {
				return fmt.Errorf("nothing listens on %s port %d in the server namespace (see %s)", proto, p, s.Dir)
			}
		}
		return nil
	})
}

// StartIperfServers starts two one-off iperf3 servers (IperfTCPPort,
// IperfUDPPort) and waits until they listen. The previous run's servers
// (still busy with a test whose client died) are killed first, and their
// ports waited free.
func (s *AppServers) StartIperfServers() error {
	s.mu.Lock()
	old := s.iperf
	s.iperf = nil
	s.mu.Unlock()
	for _, c := range old {
		_ = c.Process.Kill()
	}
	if err := EventuallyEvery(10*time.Second, 50*time.Millisecond, func() error {
		out, err := Exec(s.l.Server, "ss", "-Hltn", fmt.Sprintf("( sport = :%d or sport = :%d )", IperfTCPPort, IperfUDPPort))
		if err == nil && strings.TrimSpace(out) != "" {
			err = fmt.Errorf("the last run's iperf3 servers still listen: %s", out)
		}
		return err
	}); err != nil {
		return err
	}
	for _, p := range []int{IperfTCPPort, IperfUDPPort} {
		c, err := s.spawnCmd(fmt.Sprintf("iperf3-%d", p), "iperf3", "-s", "-1", "-B", ServerIPv4, "-p", fmt.Sprint(p))
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.iperf = append(s.iperf, c)
		s.mu.Unlock()
	}
	return s.waitListening("tcp", IperfTCPPort, IperfUDPPort)
}

// Close kills every server it started, then what is left in the server
// and client namespaces (sessions forked by sshd, clients of the apps).
func (s *AppServers) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.procs {
		if c.Process != nil {
			_ = c.Process.Kill()
		}
	}
	s.procs = nil
	KillNamespaceProcs(s.l.Server)
	KillNamespaceProcs(s.l.Client)
	killNamingDir(s.Dir)
}

// killNamingDir kills the processes whose command line names dir (this
// run's scratch directory, unique to it): what left the namespace, as a
// vsftpd session in a namespace of its own would.
func killNamingDir(dir string) {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range cmdlines {
		b, err := os.ReadFile(c)
		if err != nil || !strings.Contains(string(b), dir) {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(filepath.Base(filepath.Dir(c)), &pid); err == nil && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// KillNamespaceProcs kills the processes still running in namespace ns
// (`ip netns pids`): the sessions a server forked for its clients, which
// do not die with the server or the namespace's name.
func KillNamespaceProcs(ns string) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
