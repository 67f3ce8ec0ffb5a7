package lab

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// AppResult is what one application saw across one failover.
type AppResult struct {
	App    string
	OK     bool   // it survived: traffic after the failover, nothing broken
	Figure string // the gap, loss or failed queries it measured
	Detail string // why it did not survive
}

// App is a client of one application, started before a failover and
// finished after it.
type App interface {
	Name() string
	// Start connects (logs in, transfers once) and returns when traffic
	// flows.
	Start() error
	// Finish drives traffic until settle, checks the application still
	// works and reports; fault is when the failover was forced.
	Finish(fault, settle time.Time) AppResult
	// Kill ends the client's processes (after Finish, or on a failure).
	Kill()
}

// lineProc is a client process in a namespace whose output lines are
// recorded with the time each was read.
type lineProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
	err   error // exit status, set before done closes

	mu    sync.Mutex
	lines []stampedLine
	more  chan struct{} // closed and replaced at each new line
}

type stampedLine struct {
	at   time.Time
	text string
}

// startLineProc starts args in namespace ns in its own process group (so
// Kill reaches the children of a shell), with a stdin pipe when stdin.
func startLineProc(ns string, stdin bool, args ...string) (*lineProc, error) {
	p := &lineProc{done: make(chan struct{}), more: make(chan struct{})}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	p.cmd.Stderr = &stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if stdin {
		if p.stdin, err = p.cmd.StdinPipe(); err != nil {
			return nil, err
		}
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, stampedLine{time.Now(), sc.Text()})
			close(p.more)
			p.more = make(chan struct{})
			p.mu.Unlock()
		}
		err := p.cmd.Wait()
		if err != nil && stderr.Len() > 0 {
			err = fmt.Errorf("%v: %s", err, lastLines(stderr.String(), 3))
		}
		p.err = err
		close(p.done)
	}()
	return p, nil
}

// waitLine waits up to timeout for a line, from the from-th on, that
// starts with prefix, and returns it with its index.
func (p *lineProc) waitLine(from int, prefix string, timeout time.Duration) (stampedLine, int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		for i := from; i < len(p.lines); i++ {
			if strings.HasPrefix(p.lines[i].text, prefix) {
				l := p.lines[i]
				p.mu.Unlock()
				return l, i, nil
			}
		}
		from = len(p.lines)
		more := p.more
		p.mu.Unlock()
		select {
		case <-more:
		case <-p.done:
			// the last lines are in: look once more, then give up
			p.mu.Lock()
			n := len(p.lines)
			p.mu.Unlock()
			if n > from {
				continue
			}
			return stampedLine{}, -1, fmt.Errorf("exited (%v) before %q", p.err, prefix)
		case <-deadline.C:
			return stampedLine{}, -1, fmt.Errorf("no %q within %v", prefix, timeout)
		}
	}
}

// waitLineAfter is waitLine for a line read after t.
func (p *lineProc) waitLineAfter(t time.Time, prefix string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for from := 0; ; {
		l, i, err := p.waitLine(from, prefix, time.Until(deadline))
		if err != nil || l.at.After(t) {
			return err
		}
		from = i + 1
	}
}

// snapshot returns the lines read so far.
func (p *lineProc) snapshot() []stampedLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]stampedLine(nil), p.lines...)
}

// signal sends sig to the process group, then waits up to timeout for the
// exit and kills the group if it has not come.
func (p *lineProc) signal(sig syscall.Signal, timeout time.Duration) {
	if p == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *lineProc) kill() { p.signal(syscall.SIGKILL, 5*time.Second) }

// waitExit waits up to timeout for the process to end by itself.
func (p *lineProc) waitExit(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// longestGap is the longest time between consecutive stamps, the first
// one included from start and the last one to end.
func longestGap(start, end time.Time, stamps []time.Time) time.Duration {
	var gap time.Duration
	prev := start
	for _, s := range append(stamps, end) {
		if d := s.Sub(prev); d > gap {
			gap = d
		}
		prev = s
	}
	return gap
}

func round(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }

// client is what every App holds: the lab, its process and when it
// started.
type client struct {
	l     *Lab
	p     *lineProc
	start time.Time
}

// run starts args in the client namespace and waits until it prints a
// line starting with first.
func (c *client) run(first string, args ...string) error {
	var err error
	if c.p, err = startLineProc(c.l.Client, false, args...); err != nil {
		return err
	}
	c.start = time.Now()
	_, _, err = c.p.waitLine(0, first, 10*time.Second)
	return err
}

// Kill ends the client's processes.
func (c *client) Kill() {
	if c.p != nil {
		c.p.kill()
	}
}

// ---- iperf3 ----

// Iperf is an iperf3 stream from the server to the client (-R: the
// client receives, so its 0.1 s intervals show what arrived), TCP at
// 20 Mbit/s or UDP at 2 Mbit/s (1000-byte datagrams). Limited rates: the
// two cores also run both agents.
type Iperf struct {
	client
	UDP bool
	Dur time.Duration
}

func (a *Iperf) Name() string {
	if a.UDP {
		return "iperf3-udp"
	}
	return "iperf3-tcp"
}

func (a *Iperf) Start() error {
	args := []string{"iperf3", "-c", ServerIPv4, "-R", "-J", "-i", "0.1", "-t", strconv.Itoa(int(a.Dur / time.Second)),
		"--connect-timeout", "3000", "--rcv-timeout", "6000"}
	if a.UDP {
		args = append(args, "-p", strconv.Itoa(IperfUDPPort), "-u", "-b", "2M", "-l", "1000")
	} else {
		args = append(args, "-p", strconv.Itoa(IperfTCPPort), "-b", "20M")
	}
	a.start = time.Now()
	var err error
	a.p, err = startLineProc(a.l.Client, false, args...)
	return err
}

type iperfSum struct {
	Start       float64 `json:"start"`
	Seconds     float64 `json:"seconds"`
	Bytes       int64   `json:"bytes"`
	Packets     int64   `json:"packets"`
	LostPackets int64   `json:"lost_packets"`
	LostPercent float64 `json:"lost_percent"`
	BitsPerSec  float64 `json:"bits_per_second"`
}

type iperfReport struct {
	Error     string `json:"error"`
	Intervals []struct {
		Sum iperfSum `json:"sum"`
	} `json:"intervals"`
	End struct {
		Sum         iperfSum `json:"sum"`
		SumReceived iperfSum `json:"sum_received"`
	} `json:"end"`
}

func (a *Iperf) Finish(fault, settle time.Time) AppResult {
	r := AppResult{App: a.Name()}
	if !a.p.waitExit(time.Until(a.start.Add(a.Dur + 8*time.Second))) {
		a.p.kill()
		r.Detail = "did not complete"
	}
	var lines []string
	for _, l := range a.p.snapshot() {
		lines = append(lines, l.text)
	}
	var rep iperfReport
	if err := json.Unmarshal([]byte(strings.Join(lines, "\n")), &rep); err != nil {
		r.Detail = strings.TrimSpace(r.Detail + fmt.Sprintf(" no report (%v, exit %v)", err, a.p.err))
		return r
	}
	// The longest run of 0.1 s intervals with nothing received, and what
	// arrived after the failover (the client's clock starts at its start).
	faultAt := fault.Sub(a.start).Seconds()
	var gap, run, last float64
	var after int64
	for _, iv := range rep.Intervals {
		if iv.Sum.Bytes == 0 {
			run += iv.Sum.Seconds
		} else {
			run, last = 0, iv.Sum.Start+iv.Sum.Seconds
		}
		gap = max(gap, run)
		if iv.Sum.Start >= faultAt {
			after += iv.Sum.Bytes
		}
	}
	if a.UDP {
		s := rep.End.Sum
		r.Figure = fmt.Sprintf("gap %.1fs, lost %d/%d datagrams (%.1f%%)", gap, s.LostPackets, s.Packets, s.LostPercent)
	} else {
		r.Figure = fmt.Sprintf("gap %.1fs, %.1f Mbit/s", gap, rep.End.SumReceived.BitsPerSec/1e6)
	}
	defer func() {
		if !r.OK {
			r.Detail += fmt.Sprintf(" (failover at %.1fs, last data at %.1fs, %d intervals)", faultAt, last, len(rep.Intervals))
		}
	}()
	switch {
	case rep.Error != "":
		r.Detail = strings.TrimSpace(r.Detail + " " + rep.Error)
	case a.p.err != nil:
		r.Detail = strings.TrimSpace(r.Detail + fmt.Sprintf(" exit %v", a.p.err))
	case after == 0:
		r.Detail = "nothing received after the failover"
	case faultAt > a.Dur.Seconds()-2:
		r.Detail = fmt.Sprintf("the failover came %.1fs into a %v stream: too late to tell", faultAt, a.Dur)
	default:
		r.OK = r.Detail == ""
	}
	return r
}

// ---- OpenSSH ----

// SSH is an interactive OpenSSH session: a shell loop on the server
// echoing each line the client sends, one every 100 ms.
type SSH struct {
	client
	Key string // the client's private key

	stop chan struct{}
	sent sync.WaitGroup
}

func (a *SSH) Name() string { return "ssh" }

func (a *SSH) Start() error {
	var err error
	a.p, err = startLineProc(a.l.Client, true, "ssh", "-F", "/dev/null", "-i", a.Key,
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
		"-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "root@"+ServerIPv4,
		`while read l; do echo "$l"; done`)
	if err != nil {
		return err
	}
	a.start = time.Now()
	if _, err := io.WriteString(a.p.stdin, "hello\n"); err != nil {
		return err
	}
	if _, _, err := a.p.waitLine(0, "hello", 10*time.Second); err != nil {
		return fmt.Errorf("ssh session: %w", err)
	}
	a.stop = make(chan struct{})
	a.sent.Add(1)
	go func() {
		defer a.sent.Done()
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-a.stop:
				return
			case <-tk.C:
				fmt.Fprintf(a.p.stdin, "line %d\n", i)
			}
		}
	}()
	return nil
}

func (a *SSH) Finish(fault, settle time.Time) AppResult {
	r := AppResult{App: a.Name()}
	time.Sleep(time.Until(settle)) // typing goes on through the failover
	close(a.stop)
	a.sent.Wait()
	io.WriteString(a.p.stdin, "end\n")
	_, _, err := a.p.waitLine(0, "end", 8*time.Second)
	var stamps []time.Time
	echoedAfter := 0
	for _, l := range a.p.snapshot() {
		stamps = append(stamps, l.at)
		if l.at.After(fault) {
			echoedAfter++
		}
	}
	r.Figure = fmt.Sprintf("gap %s, %d lines echoed after the failover", round(longestGap(a.start, time.Now(), stamps)), echoedAfter)
	if err != nil {
		r.Detail = "session dead: " + err.Error()
		return r
	}
	a.p.stdin.Close()
	if !a.p.waitExit(5 * time.Second) {
		r.Detail = "session did not close"
		return r
	}
	r.OK = a.p.err == nil
	if !r.OK {
		r.Detail = fmt.Sprintf("exit %v", a.p.err)
	}
	return r
}

// ---- FTP ----

// appsFTPClient is a Python ftplib client: it logs in (anonymous), fetches
// FTPFile once, says "before", waits for a line on stdin (the failover has
// happened), fetches it again and says "after <bytes>". An active client
// announces its control connection's local address (argv[4] if given) in
// PORT.
const appsFTPClient = `
import ftplib, io, sys
host, mode, name = sys.argv[1], sys.argv[2], sys.argv[3]
src = (sys.argv[4], 0) if len(sys.argv) > 4 else None
def fetch(f):
    b = io.BytesIO()
    f.retrbinary('RETR ' + name, b.write)
    return len(b.getvalue())
try:
    f = ftplib.FTP(timeout=8)
    f.connect(host, 21, source_address=src)
    f.login()
    f.set_pasv(mode == 'passive')
    print('before', fetch(f), flush=True)
    sys.stdin.readline()
    print('after', fetch(f), flush=True)
    f.quit()
except Exception as e:
    print('error', repr(e), flush=True)
    sys.exit(1)
`

// FTP is an FTP session, active or passive, logged in and transferring
// before the failover, transferring again after it.
type FTP struct {
	client
	Passive bool
	// Source is the client's address for the session, "" for its own
	// (ClientIPv4).
	Source string
}

func (a *FTP) Name() string {
	switch {
	case a.Passive:
		return "ftp-passive"
	case a.Source == FTPSameLengthClient:
		return "ftp-active-samelen"
	}
	return "ftp-active"
}

func (a *FTP) Start() error {
	mode := "active"
	if a.Passive {
		mode = "passive"
	}
	args := []string{"python3", "-c", appsFTPClient, ServerIPv4, mode, FTPFile}
	if a.Source != "" {
		args = append(args, a.Source)
	}
	var err error
	if a.p, err = startLineProc(a.l.Client, true, args...); err != nil {
		return err
	}
	l, _, err := a.p.waitLine(0, "", 15*time.Second)
	if err == nil && l.text != fmt.Sprintf("before %d", FTPFileSize) {
		err = fmt.Errorf("first transfer: %q", l.text)
	}
	return err
}

func (a *FTP) Finish(fault, settle time.Time) AppResult {
	r := AppResult{App: a.Name()}
	asked := time.Now()
	io.WriteString(a.p.stdin, "go\n")
	l, _, err := a.p.waitLine(1, "", 20*time.Second)
	r.Figure = fmt.Sprintf("transfer after the failover took %s", round(time.Since(asked)))
	switch {
	case err != nil:
		r.Detail = err.Error()
	case l.text != fmt.Sprintf("after %d", FTPFileSize):
		r.Detail = l.text
	default:
		r.OK = true
	}
	return r
}

// ---- DNS ----

// DNS is dig in a loop (one query each 100 ms, each from a new source
// port: a new flow each), one try with a 1 s timeout each.
type DNS struct{ client }

func (a *DNS) Name() string { return "dns" }

func (a *DNS) Start() error {
	loop := fmt.Sprintf(`while :; do if [ "$(dig @%s +tries=1 +timeout=1 +short %s A)" = %s ]; then echo ok; else echo fail; fi; sleep 0.1; done`,
		ServerIPv4, AppDNSName, ServerIPv4)
	return a.run("ok", "sh", "-c", loop)
}

func (a *DNS) Finish(fault, settle time.Time) AppResult {
	r := AppResult{App: a.Name()}
	time.Sleep(time.Until(settle))
	// A starved loop may not have asked since: give it a bounded while.
	a.p.waitLineAfter(fault, "ok", 8*time.Second)
	end := time.Now()
	a.p.kill()
	var oks []time.Time
	failed, total, okAfter := 0, 0, 0
	lines := a.p.snapshot()
	for _, l := range lines {
		total++
		if l.text == "ok" {
			oks = append(oks, l.at)
			if l.at.After(fault) {
				okAfter++
			}
		} else {
			failed++
		}
	}
	r.Figure = fmt.Sprintf("%d/%d queries failed, gap %s", failed, total, round(longestGap(a.start, end, oks)))
	lastOK := len(lines) > 0 && lines[len(lines)-1].text == "ok"
	r.OK = okAfter > 0 && lastOK
	if !r.OK {
		r.Detail = fmt.Sprintf("%d answers after the failover, last query answered %v", okAfter, lastOK)
	}
	return r
}

// ---- ICMP echo ----

// Ping is iputils ping every 50 ms (-D stamps each reply).
type Ping struct{ client }

func (a *Ping) Name() string { return "icmp-echo" }

func (a *Ping) Start() error {
	return a.run("[", "ping", "-D", "-n", "-i", "0.05", "-W", "1", ServerIPv4)
}

func (a *Ping) Finish(fault, settle time.Time) AppResult {
	r := AppResult{App: a.Name()}
	time.Sleep(time.Until(settle))
	end := time.Now()
	a.p.signal(syscall.SIGINT, 3*time.Second)
	var replies []time.Time
	after := 0
	tx, rx := -1, -1
	for _, l := range a.p.snapshot() {
		if strings.HasPrefix(l.text, "[") && strings.Contains(l.text, "bytes from") {
			// [1733600000.123456] 64 bytes from …: the kernel's receive time
			sec, err := strconv.ParseFloat(strings.Trim(strings.Fields(l.text)[0], "[]"), 64)
			if err != nil {
				continue
			}
			at := time.Unix(0, int64(sec*1e9))
			replies = append(replies, at)
			if at.After(fault) {
				after++
			}
		}
		if strings.Contains(l.text, "packets transmitted") {
			fmt.Sscanf(l.text, "%d packets transmitted, %d received", &tx, &rx)
		}
	}
	r.Figure = fmt.Sprintf("gap %s, %d/%d echoes lost", round(longestGap(a.start, end, replies)), tx-rx, tx)
	r.OK = after > 0 && tx > 0
	if !r.OK {
		r.Detail = fmt.Sprintf("%d replies after the failover", after)
	}
	return r
}

// Apps returns the suite's clients but the iperf3 streams: an OpenSSH
// session, active FTP from ClientIPv4 (the helper's PORT rewrite to
// WANClusterIPv4 changes the length) and from FTPSameLengthClient (it
// keeps it), passive FTP, DNS and ICMP echo.
func (s *AppServers) Apps() []App {
	c := client{l: s.l}
	return []App{
		&SSH{client: c, Key: s.ClientKey},
		&FTP{client: c},
		&FTP{client: c, Source: FTPSameLengthClient},
		&FTP{client: c, Passive: true},
		&DNS{c},
		&Ping{c},
	}
}

// Streams returns the iperf3 TCP and UDP streams of dur.
func (s *AppServers) Streams(dur time.Duration) []App {
	c := client{l: s.l}
	return []App{&Iperf{client: c, Dur: dur}, &Iperf{client: c, UDP: true, Dur: dur}}
}
