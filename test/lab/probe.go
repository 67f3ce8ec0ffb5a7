package lab

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"
)

// probePriority is the prober's SCHED_FIFO priority: below hagentd's
// realtime heartbeat path (50), above everything else in a test.
const probePriority = 40

// StartEcho runs a UDP echo responder on EchoPort in every node namespace
// (in this process; it answers only where the cluster address lives). It is
// stopped by Close.
func (l *Lab) StartEcho() error {
	for _, n := range l.Nodes {
		var c net.PacketConn
		if err := InNS(n.NS, func() error {
			var err error
			c, err = net.ListenPacket("udp", fmt.Sprintf(":%d", EchoPort))
			return err
		}); err != nil {
			return fmt.Errorf("echo on %s: %w", n.Name, err)
		}
		go func() {
			buf := make([]byte, 256)
			for {
				k, from, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = c.WriteTo(buf[:k], from)
			}
		}()
		l.echoes = append(l.echoes, func() { c.Close() })
	}
	return nil
}

// Probe sends a numbered UDP datagram to the cluster address every
// interval from the client namespace and records which were answered.
type Probe struct {
	conn     net.PacketConn
	target   *net.UDPAddr
	interval time.Duration
	start    time.Time

	// realtime: the sender got SCHED_FIFO (see send).
	realtime bool

	mu       sync.Mutex
	sent     []time.Time
	answered []bool
	stop     chan struct{}
	done     sync.WaitGroup
}

// Result is what a probe saw.
type Result struct {
	Sent, Answered int
	// Outage is the longest stretch from the first unanswered probe to the
	// next answered one (resolution: the probe interval). Zero: no loss.
	Outage time.Duration
	// OutageAt is when that stretch began.
	OutageAt time.Time
	// Recovered is false when the probe ended inside an outage.
	Recovered bool
	Lost      int
	Interval  time.Duration
}

func (r Result) String() string {
	s := fmt.Sprintf("sent %d, answered %d, lost %d, longest outage %s (probe every %s)",
		r.Sent, r.Answered, r.Lost, r.Outage.Round(time.Millisecond/10), r.Interval)
	if !r.Recovered {
		s += ", NOT RECOVERED"
	}
	return s
}

// StartProbe starts probing target (ClusterIPv4 or ClusterIPv6) every
// interval.
func (l *Lab) StartProbe(target string, interval time.Duration) (*Probe, error) {
	return StartProbeFrom(l.Client, target, interval)
}

// StartProbeFrom is StartProbe from namespace ns (the server namespace of
// a WAN lab, for a cluster address on port2).
func StartProbeFrom(ns, target string, interval time.Duration) (*Probe, error) {
	p := &Probe{interval: interval, stop: make(chan struct{}),
		target: &net.UDPAddr{IP: net.ParseIP(target), Port: EchoPort}}
	if err := InNS(ns, func() error {
		var err error
		p.conn, err = net.ListenPacket("udp", ":0")
		return err
	}); err != nil {
		return nil, err
	}
	p.start = time.Now()
	p.done.Add(2)
	go p.send()
	go p.recv()
	return p, nil
}

func (p *Probe) send() {
	defer p.done.Done()
	// The sender runs on a thread of its own under SCHED_FIFO (when this
	// process may) and sleeps in the kernel, not on a Go timer: on a busy
	// machine a timer fires late when the thread that runs it is not
	// scheduled, and a send gap of 10-20 ms then reads as an outage of
	// the cluster.
	rt, restore := realtimeThread(os.Getenv("HAGENT_PROBE_NO_FIFO") == "")
	defer restore()
	p.mu.Lock()
	p.realtime = rt
	p.mu.Unlock()
	buf := make([]byte, 16)
	for i := 0; ; i++ {
		select {
		case <-p.stop:
			return
		default:
		}
		next := p.start.Add(time.Duration(i) * p.interval)
		if d := time.Until(next); d > 0 {
			sleep(d)
		}
		now := time.Now()
		binary.BigEndian.PutUint64(buf, uint64(i))
		binary.BigEndian.PutUint64(buf[8:], uint64(now.UnixNano()))
		p.mu.Lock()
		p.sent = append(p.sent, now)
		p.answered = append(p.answered, false)
		p.mu.Unlock()
		_, _ = p.conn.WriteTo(buf, p.target)
	}
}

func (p *Probe) recv() {
	defer p.done.Done()
	buf := make([]byte, 64)
	for {
		n, _, err := p.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if n < 16 {
			continue
		}
		seq := int(binary.BigEndian.Uint64(buf))
		sentAt := time.Unix(0, int64(binary.BigEndian.Uint64(buf[8:])))
		if time.Since(sentAt) > time.Second {
			continue // too late to count as an answer
		}
		p.mu.Lock()
		if seq >= 0 && seq < len(p.answered) {
			p.answered[seq] = true
		}
		p.mu.Unlock()
	}
}

// realtimeThread locks the calling goroutine to its thread and, if fifo,
// puts the thread under SCHED_FIFO at probePriority; rt tells whether it
// got it. restore gives the thread the normal policy back and unlocks it,
// so that the runtime keeps it as an ordinary thread: a goroutine that
// ends locked ends its thread, and the kernel then SIGKILLs every agent
// that thread once started (the lab starts them with Pdeathsig, which is
// tied to the forking thread; TestRealtimeThreadKeepsChildren). If the
// policy cannot be reset the thread stays locked and ends with the
// goroutine rather than carry SCHED_FIFO into the pool.
func realtimeThread(fifo bool) (rt bool, restore func()) {
	runtime.LockOSThread()
	rt = fifo && setFIFO(probePriority) == nil
	return rt, func() {
		if !rt || setNormal() == nil {
			runtime.UnlockOSThread()
		}
	}
}

// Realtime reports whether the sender runs under SCHED_FIFO (see send);
// it is known once the first probe went out.
func (p *Probe) Realtime() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.realtime
}

// Snapshot computes the result so far, ignoring the last 300 ms (whose
// answers may still be in flight).
func (p *Probe) Snapshot() Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	cut := time.Now().Add(-300 * time.Millisecond)
	n := len(p.sent)
	for n > 0 && p.sent[n-1].After(cut) {
		n--
	}
	return p.result(n)
}

// Sample is one probe: when it was sent and whether it was answered (in
// time: within a second).
type Sample struct {
	Sent     time.Time
	Answered bool
}

// Samples returns a copy of every probe sent so far. Answers to the last
// few hundred milliseconds may still be in flight.
func (p *Probe) Samples() []Sample {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Sample, len(p.sent))
	for i := range p.sent {
		out[i] = Sample{Sent: p.sent[i], Answered: p.answered[i]}
	}
	return out
}

// Stop ends the probe, waits for late answers, and returns the result.
func (p *Probe) Stop() Result {
	close(p.stop)
	time.Sleep(200 * time.Millisecond)
	p.conn.Close()
	p.done.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.result(len(p.sent))
}

func (p *Probe) result(n int) Result {
	r := Result{Sent: n, Recovered: true, Interval: p.interval}
	first := -1
	for i := 0; i < n; i++ {
		if p.answered[i] {
			r.Answered++
			if first < 0 {
				first = i
			}
		} else {
			r.Lost++
		}
	}
	if first < 0 {
		r.Recovered = false
		return r
	}
	// Runs of loss after the first answer.
	for i := first; i < n; {
		if p.answered[i] {
			i++
			continue
		}
		j := i
		for j < n && !p.answered[j] {
			j++
		}
		var d time.Duration
		if j < n {
			d = p.sent[j].Sub(p.sent[i])
		} else {
			d = time.Since(p.sent[i])
			r.Recovered = false
		}
		if d > r.Outage {
			r.Outage, r.OutageAt = d, p.sent[i]
		}
		i = j
	}
	return r
}

// ClientNeighbor returns the MAC the client's neighbour table holds for ip.
func (l *Lab) ClientNeighbor(ip string) (string, error) {
	return Neighbor(l.Client, ip)
}

// Neighbor returns the MAC the neighbour table of namespace ns holds for ip.
func Neighbor(ns, ip string) (string, error) {
	out, err := exec.Command("ip", "-n", ns, "neigh", "show", ip).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip neigh: %v: %s", err, out)
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "lladdr" {
			return f[i+1], nil
		}
	}
	return "", fmt.Errorf("no neighbour entry for %s: %q", ip, strings.TrimSpace(string(out)))
}
