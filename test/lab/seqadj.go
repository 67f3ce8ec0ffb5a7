package lab

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Vsftpd is Debian's vsftpd serving anonymous downloads in the server
// namespace (Spec.WAN).
type Vsftpd struct {
	cmd  *exec.Cmd
	done chan struct{}
	// File is the name of the file it serves; Data its content.
	File string
	Data []byte
}

// StartVsftpd runs vsftpd on ServerIPv4:21 with anonymous read-only
// access to one file of size bytes of random data. Active mode (PORT)
// and passive mode are both on.
func (l *Lab) StartVsftpd(size int) (*Vsftpd, error) {
	bin, err := exec.LookPath("vsftpd")
	if err != nil {
		return nil, fmt.Errorf("lab: needs vsftpd (Debian package vsftpd)")
	}
	dir := filepath.Join(l.Dir, "ftp")
	root, empty := filepath.Join(dir, "root"), filepath.Join(dir, "empty")
	for _, d := range []string{root, empty} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	v := &Vsftpd{File: "data.bin", Data: make([]byte, size), done: make(chan struct{})}
	rand.Read(v.Data)
	if err := os.WriteFile(filepath.Join(root, v.File), v.Data, 0o644); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "vsftpd.conf")
	cfg := strings.Join([]string{
		"listen=YES", "listen_ipv6=NO", "listen_address=" + ServerIPv4, "background=NO",
		"anonymous_enable=YES", "no_anon_password=YES", "anon_root=" + root, "local_enable=NO", "write_enable=NO",
		"port_enable=YES", "connect_from_port_20=NO", "pasv_enable=YES",
		"seccomp_sandbox=NO", "secure_chroot_dir=" + empty, "xferlog_enable=NO", "dirmessage_enable=NO",
		// No isolation: a session in a network namespace of its own
		// outlives Stop (apps.go says the same of its vsftpd).
		"isolate=NO", "isolate_network=NO",
	}, "\n") + "\n"
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "vsftpd.log"))
	if err != nil {
		return nil, err
	}
	v.cmd = exec.Command("ip", "netns", "exec", l.Server, bin, conf)
	v.cmd.Stdout, v.cmd.Stderr = log, log
	if err := v.cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	go func() { v.cmd.Wait(); log.Close(); close(v.done) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var c net.Conn
		err := InNS(l.Server, func() (err error) {
			c, err = net.DialTimeout("tcp4", net.JoinHostPort(ServerIPv4, "21"), time.Second)
			return err
		})
		if err == nil {
			banner, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if strings.HasPrefix(banner, "220") {
				return v, nil
			}
			err = fmt.Errorf("banner %q", banner)
		}
		select {
		case <-v.done:
			out, _ := os.ReadFile(log.Name())
			return nil, fmt.Errorf("vsftpd exited: %s", out)
		default:
		}
		if time.Now().After(deadline) {
			v.Stop()
			return nil, fmt.Errorf("vsftpd does not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends vsftpd.
func (v *Vsftpd) Stop() {
	if v.cmd.Process != nil {
		v.cmd.Process.Kill()
	}
	<-v.done
}

// ftpClient is a Python ftplib session: it logs in, downloads the file
// once, prints "before <sha256> <bytes>", waits for a line on its input,
// downloads it again and prints "after <sha256> <bytes>" (or "error
// <what>"), for each line it reads, until its input ends.
const ftpClient = `
import ftplib, hashlib, sys
host, name, passive = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
ftp = ftplib.FTP()
ftp.connect(host, 21, timeout=8)
ftp.login()
ftp.set_pasv(passive)
def get(tag):
    buf = bytearray()
    try:
        ftp.retrbinary("RETR " + name, buf.extend)
        print(tag, hashlib.sha256(buf).hexdigest(), len(buf), flush=True)
    except Exception as e:
        print("error", type(e).__name__, str(e).replace("\n", " "), flush=True)
get("before")
for _ in sys.stdin:
    get("after")
try:
    ftp.quit()
except Exception:
    pass
`

// FTPSession is a running ftpClient in the client namespace.
type FTPSession struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string // closed at the client's end
}

// StartFTPClient logs in to the server as anonymous (active mode unless
// passive) and downloads file once; Before returns that download's line.
func (l *Lab) StartFTPClient(file string, passive bool) (*FTPSession, error) {
	p := "0"
	if passive {
		p = "1"
	}
	cmd := exec.Command("ip", "netns", "exec", l.Client, "python3", "-c", ftpClient, ServerIPv4, file, p)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &FTPSession{cmd: cmd, in: in, lines: make(chan string, 16)}
	go func() {
		r := bufio.NewReader(out)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				close(s.lines)
				return
			}
			s.lines <- strings.TrimSpace(line)
		}
	}()
	return s, nil
}

// Line reads the client's next line, or fails after timeout.
func (s *FTPSession) Line(timeout time.Duration) (string, error) {
	select {
	case l, ok := <-s.lines:
		if !ok {
			return "", fmt.Errorf("ftp client: ended")
		}
		return l, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("ftp client: no answer within %v", timeout)
	}
}

// Again makes the client download the file again over the same control
// connection.
func (s *FTPSession) Again() error {
	_, err := io.WriteString(s.in, "again\n")
	return err
}

// Close ends the client.
func (s *FTPSession) Close() {
	s.in.Close()
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}
