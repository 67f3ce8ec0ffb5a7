package lab

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// StreamPort is the TCP port of the stream server.
const StreamPort = 7009

// TCPStream is a set of bulk TCP transfers from the client to the server
// through the cluster, each writing at a fixed rate: unlike TCPLoad's small
// echoes, the sequence numbers advance by megabytes, so a conntrack entry
// whose window tracking is stale (seen packets long ago) no longer matches.
type TCPStream struct {
	conns []*streamConn
	connSet
}

type streamConn struct {
	connHealth              // maxGap: the longest gap in what the server received
	rx         atomic.Int64 // bytes the server received
	lastRx     atomic.Int64 // unix ns of the last bytes the server received
}

func (s *TCPStream) health() []*connHealth {
	out := make([]*connHealth, len(s.conns))
	for i, c := range s.conns {
		out[i] = &c.connHealth
	}
	return out
}

// StartTCPStream opens n connections from the client to the server
// (Spec.WAN), each sending rate bytes per second.
func StartTCPStream(l *Lab, n int, rate int) (*TCPStream, error) {
	s := &TCPStream{connSet: connSet{stop: make(chan struct{})}}
	if err := InNS(l.Server, func() error {
		var err error
		s.ln, err = net.Listen("tcp4", net.JoinHostPort(ServerIPv4, fmt.Sprint(StreamPort)))
		return err
	}); err != nil {
		return nil, err
	}
	accepted := make(chan net.Conn, n)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	err := InNS(l.Client, func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		for i := 0; i < n; i++ {
			c, err := d.Dial("tcp4", net.JoinHostPort(ServerIPv4, fmt.Sprint(StreamPort)))
			if err != nil {
				return fmt.Errorf("stream %d: %w", i, err)
			}
			s.conns = append(s.conns, &streamConn{connHealth: connHealth{c: c}})
		}
		return nil
	})
	if err != nil {
		s.Stop()
		return nil, err
	}
	now := time.Now().UnixNano()
	for _, c := range s.conns {
		c.lastRx.Store(now)
		var srv net.Conn
		select {
		case srv = <-accepted:
		case <-time.After(5 * time.Second):
			s.Stop()
			return nil, errors.New("lab: the stream server did not accept every connection")
		}
		s.wg.Add(2)
		go s.send(c, rate)
		go s.receive(c, srv)
	}
	return s, nil
}

func (s *TCPStream) send(c *streamConn, rate int) {
	defer s.wg.Done()
	const tick = 10 * time.Millisecond
	chunk := make([]byte, max(rate/int(time.Second/tick), 1))
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for {
		c.c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.c.Write(chunk); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				c.fail(err)
				return
			}
		}
		select {
		case <-s.stop:
			return
		case <-tk.C:
		}
	}
}

func (s *TCPStream) receive(c *streamConn, srv net.Conn) {
	defer s.wg.Done()
	defer srv.Close()
	go func() { <-s.stop; srv.Close() }()
	buf := make([]byte, 64<<10)
	for {
		n, err := srv.Read(buf)
		if n > 0 {
			now := time.Now().UnixNano()
			if gap := now - c.lastRx.Swap(now); gap > c.maxGap.Load() {
				c.maxGap.Store(gap)
			}
			c.rx.Add(int64(n))
		}
		if err != nil {
			if err != io.EOF {
				c.fail(err)
			}
			return
		}
	}
}

// StreamReport is what the transfers saw.
type StreamReport struct {
	Conns    int
	Resets   int // connections reset (ECONNRESET/EPIPE)
	Errors   int // connections that failed in any way
	Stalled  int // connections whose server received nothing for longer than the bound
	MaxStall time.Duration
	Bytes    int64 // received by the server, all connections
}

func (r StreamReport) String() string {
	return fmt.Sprintf("%d streams: %d reset, %d failed, %d stalled, longest stall %v, %.1f MB received",
		r.Conns, r.Resets, r.Errors, r.Stalled, r.MaxStall.Round(time.Millisecond), float64(r.Bytes)/1e6)
}

// Report counts resets, errors and stalls now.
func (s *TCPStream) Report(bound time.Duration) StreamReport {
	r := StreamReport{Conns: len(s.conns)}
	now := time.Now().UnixNano()
	for _, c := range s.conns {
		r.Bytes += c.rx.Load()
		if gap := time.Duration(max(c.maxGap.Load(), now-c.lastRx.Load())); gap > r.MaxStall {
			r.MaxStall = gap
		}
		if time.Duration(now-c.lastRx.Load()) > bound {
			r.Stalled++
		}
		if c.reset.Load() {
			r.Resets++
		}
		if c.errMsg.Load() != nil {
			r.Errors++
		}
	}
	return r
}

// ResetStalls forgets the gaps seen so far.
func (s *TCPStream) ResetStalls() { resetStalls(s.health()) }

// Stop closes every connection and the server.
func (s *TCPStream) Stop() { s.close(s.health()) }
