package lab

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// LoadPort is the TCP port of the load server.
const LoadPort = 7008

// TCPLoad is a set of long-lived TCP connections from the client to the
// server through the cluster, each exchanging an 8-byte message (id,
// sequence) every Interval; the server echoes it and remembers the
// address and port each connection came from.
type TCPLoad struct {
	Interval time.Duration
	conns    []*loadConn
	connSet

	mu       sync.Mutex
	remotes  map[uint32]string // connection id → address:port seen by the server
	changed  int               // an id seen again from another address:port
	accepted int
}

type loadConn struct {
	connHealth // maxGap: the longest gap between echoes
	id         uint32
	lastOK     atomic.Int64 // unix ns of the last echo
	echoes     atomic.Uint64
}

func (t *TCPLoad) health() []*connHealth {
	out := make([]*connHealth, len(t.conns))
	for i, c := range t.conns {
		out[i] = &c.connHealth
	}
	return out
}

// StartTCPLoad opens n connections from the client namespace to a server
// in the server namespace (Spec.WAN).
func StartTCPLoad(l *Lab, n int, every time.Duration) (*TCPLoad, error) {
	return StartTCPLoadPort(l, n, every, LoadPort)
}

// StartTCPLoadPort is StartTCPLoad with a server port of its own (several
// loads side by side).
func StartTCPLoadPort(l *Lab, n int, every time.Duration, port int) (*TCPLoad, error) {
	t, err := listenTCPLoad(l, every, port)
	if err != nil {
		return nil, err
	}
	err = InNS(l.Client, func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		for i := 0; i < n; i++ {
			c, err := d.Dial("tcp4", net.JoinHostPort(ServerIPv4, fmt.Sprint(port)))
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			t.conns = append(t.conns, &loadConn{id: uint32(i), connHealth: connHealth{c: c}})
		}
		return nil
	})
	if err != nil {
		t.Stop()
		return nil, err
	}
	t.run()
	return t, nil
}

// listenTCPLoad starts the load's server in the server namespace.
func listenTCPLoad(l *Lab, every time.Duration, port int) (*TCPLoad, error) {
	t := &TCPLoad{Interval: every, remotes: map[uint32]string{}, connSet: connSet{stop: make(chan struct{})}}
	if err := InNS(l.Server, func() error {
		var err error
		t.ln, err = net.Listen("tcp4", net.JoinHostPort(ServerIPv4, fmt.Sprint(port)))
		return err
	}); err != nil {
		return nil, err
	}
	t.wg.Add(1)
	go t.serve()
	return t, nil
}

// run starts the writers and readers of the open connections.
func (t *TCPLoad) run() {
	now := time.Now().UnixNano()
	for _, c := range t.conns {
		c.lastOK.Store(now)
		t.wg.Add(2)
		go t.write(c)
		go t.read(c)
	}
}

func (t *TCPLoad) serve() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return
		}
		t.mu.Lock()
		t.accepted++
		t.mu.Unlock()
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer c.Close()
			go func() { <-t.stop; c.Close() }()
			buf := make([]byte, 8)
			first := true
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if first {
					first = false
					id := binary.BigEndian.Uint32(buf)
					t.mu.Lock()
					if old, ok := t.remotes[id]; ok && old != c.RemoteAddr().String() {
						t.changed++
					}
					t.remotes[id] = c.RemoteAddr().String()
					t.mu.Unlock()
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
}

func (t *TCPLoad) write(c *loadConn) {
	defer t.wg.Done()
	tk := time.NewTicker(t.Interval)
	defer tk.Stop()
	buf := make([]byte, 8)
	binary.BigEndian.PutUint32(buf, c.id)
	for seq := uint32(0); ; seq++ {
		binary.BigEndian.PutUint32(buf[4:], seq)
		if _, err := c.c.Write(buf); err != nil {
			c.fail(err)
			return
		}
		select {
		case <-t.stop:
			return
		case <-tk.C:
		}
	}
}

func (t *TCPLoad) read(c *loadConn) {
	defer t.wg.Done()
	buf := make([]byte, 8)
	for {
		if _, err := io.ReadFull(c.c, buf); err != nil {
			c.fail(err)
			return
		}
		now := time.Now().UnixNano()
		if gap := now - c.lastOK.Swap(now); gap > c.maxGap.Load() {
			c.maxGap.Store(gap)
		}
		c.echoes.Add(1)
	}
}

// LoadReport is what the connections saw.
type LoadReport struct {
	Conns    int
	Resets   int // connections reset (ECONNRESET/EPIPE)
	Errors   int // connections that failed in any way
	Stalled  int // connections without an echo for longer than the bound
	MaxStall time.Duration
	// RemoteChanged counts connections the server saw from another
	// address or port than before (a changed NAT mapping).
	RemoteChanged int
	Accepted      int // connections the server accepted (a reconnect adds one)
	FirstError    string
}

func (r LoadReport) String() string {
	return fmt.Sprintf("%d connections: %d reset, %d failed, %d stalled, longest stall %v, %d NAT mappings changed, %d accepted by the server%s",
		r.Conns, r.Resets, r.Errors, r.Stalled, r.MaxStall.Round(time.Millisecond), r.RemoteChanged, r.Accepted,
		map[bool]string{true: " (first error: " + r.FirstError + ")", false: ""}[r.FirstError != ""])
}

// Report counts resets, errors and stalls now: a connection is stalled
// when it has had no echo for longer than bound.
func (t *TCPLoad) Report(bound time.Duration) LoadReport {
	r := LoadReport{Conns: len(t.conns)}
	now := time.Now().UnixNano()
	for _, c := range t.conns {
		gap := max(c.maxGap.Load(), now-c.lastOK.Load())
		if time.Duration(gap) > r.MaxStall {
			r.MaxStall = time.Duration(gap)
		}
		if time.Duration(now-c.lastOK.Load()) > bound {
			r.Stalled++
		}
		if c.reset.Load() {
			r.Resets++
		}
		if e := c.errMsg.Load(); e != nil {
			r.Errors++
			if r.FirstError == "" {
				r.FirstError = e.(string)
			}
		}
	}
	t.mu.Lock()
	r.RemoteChanged, r.Accepted = t.changed, t.accepted
	t.mu.Unlock()
	return r
}

// ResetStalls forgets the gaps seen so far (to measure one failover).
func (t *TCPLoad) ResetStalls() { resetStalls(t.health()) }

// Stop closes every connection and the server.
func (t *TCPLoad) Stop() { t.close(t.health()) }
