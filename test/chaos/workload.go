package chaos

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// TCPPort is the TCP echo service of the server behind the pair.
const TCPPort = 7008

// ConnTarget says where the long-lived connections go: a server behind
// the pair (the client's default gateway is the cluster address; the
// primary forwards and masquerades, with session pickup on), so a
// connection lives on no node's socket and a failover must carry it.
type ConnTarget struct {
	Addr string // host:port the client dials
}

// serverEcho runs the greeting TCP echo service in the server namespace
// (in this process). The returned function stops it.
func serverEcho(l *lab.Lab) (func(), error) {
	var ln net.Listener
	if err := lab.InNS(l.Server, func() error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort(lab.ServerIPv4, fmt.Sprint(TCPPort)))
		return err
	}); err != nil {
		return nil, fmt.Errorf("tcp echo on the server: %w", err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				defer c.Close()
				if _, err := io.WriteString(c, "server\n"); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}, nil
}

// connWorkload keeps k connections open from the client namespace, each
// sending a line every period and waiting for its echo; a connection that
// breaks is recorded and replaced.
func connWorkload(ctx context.Context, l *lab.Lab, tgt ConnTarget, k int, period time.Duration, rec *Record, wg *sync.WaitGroup) {
	for id := 0; id < k; id++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(id), 7))
			for ctx.Err() == nil {
				oneConn(ctx, l, tgt, id, period, rng, rec)
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
	}
}

// oneConn runs one connection until it breaks (recorded) or ctx ends.
func oneConn(ctx context.Context, l *lab.Lab, tgt ConnTarget, id int, period time.Duration, rng *rand.Rand, rec *Record) {
	count := func(f func(*ConnStats)) { rec.mu.Lock(); f(&rec.Conns); rec.mu.Unlock() }
	var c net.Conn
	if err := lab.InNS(l.Client, func() error {
		var err error
		c, err = net.DialTimeout("tcp", tgt.Addr, time.Second)
		return err
	}); err != nil {
		count(func(s *ConnStats) { s.Refused++ })
		return
	}
	defer c.Close()
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	greet, err := r.ReadString('\n')
	if err != nil {
		count(func(s *ConnStats) { s.Refused++ })
		return
	}
	count(func(s *ConnStats) { s.Opened++ })
	if greet != "server\n" {
		count(func(s *ConnStats) { s.Refused++ })
		return
	}
	e := &ConnEnd{ID: id, Opened: time.Now()}
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		e.Port = a.Port
	}
	e.LastOK = e.Opened
	// Spread the connections over the period.
	t := time.NewTimer(time.Duration(rng.Int64N(int64(period))))
	defer t.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(period)
		msg := strconv.Itoa(seq) + "\n"
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err = io.WriteString(c, msg); err == nil {
			var got string
			if got, err = r.ReadString('\n'); err == nil && got != msg {
				err = fmt.Errorf("echo %q for %q", got, msg)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			e.At, e.Why = time.Now(), connWhy(err)
			rec.addConnEnd(*e)
			return
		}
		e.LastOK = time.Now()
		count(func(s *ConnStats) { s.Echoes++ })
	}
}

// whyStalled is a connection that went 3 s without its echo.
const whyStalled = "stalled 3s"

func connWhy(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, io.EOF):
		return "closed"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return whyStalled
	}
	return err.Error()
}

// fileName is the synchronized file the writer rewrites and the reader reads.
const fileName = "chaos.conf"

// fileContent is version v of the file: a header, a body whose length
// and bytes depend on v, and a SHA-256 trailer over both, so that a torn
// file, or a mix of two versions, never passes checkFile.
func fileContent(v int) []byte {
	size := 512 + (v*7919)%(32<<10)
	var b bytes.Buffer
	fmt.Fprintf(&b, "chaos version %d size %d\n", v, size)
	x := uint32(v)*2654435761 + 1
	for i := 0; i < size; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		c := 'a' + byte(x%26)
		if i%64 == 63 {
			c = '\n'
		}
		b.WriteByte(c)
	}
	sum := sha256.Sum256(b.Bytes())
	fmt.Fprintf(&b, "\nsha256 %x\n", sum)
	return b.Bytes()
}

// checkFile returns the version of a whole file, or why it is not one.
func checkFile(b []byte) (int, error) {
	i := bytes.LastIndex(b, []byte("\nsha256 "))
	if i < 0 || !bytes.HasSuffix(b, []byte("\n")) {
		return 0, fmt.Errorf("torn: no trailer (%d bytes)", len(b))
	}
	if fmt.Sprintf("%x", sha256.Sum256(b[:i])) != string(b[i+len("\nsha256 "):len(b)-1]) {
		return 0, fmt.Errorf("torn: checksum mismatch (%d bytes)", len(b))
	}
	var v, size int
	if _, err := fmt.Sscanf(string(b), "chaos version %d size %d\n", &v, &size); err != nil {
		return 0, fmt.Errorf("unknown header: %v", err)
	}
	return v, nil
}

// fileWorkload rewrites the file on the primary (the node holding the
// vMAC) every writeEvery and reads every node's copy every readEvery:
// each read must be a whole version that was written.
func fileWorkload(ctx context.Context, d *lab.SyncDir, nodes []*lab.Node, primary func() *lab.Node, rec *Record, wg *sync.WaitGroup) {
	const writeEvery, readEvery = 50 * time.Millisecond, 5 * time.Millisecond
	var written atomic.Int64
	written.Store(1) // version 1 is on every node before the start
	wg.Add(2)
	go func() {
		defer wg.Done()
		for v := 2; ; v++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(writeEvery):
			}
			p := primary()
			if p == nil {
				v--
				continue
			}
			written.Store(int64(v)) // before it can be read anywhere
			err := d.WriteFile(p, fileName, fileContent(v), 0o644)
			rec.mu.Lock()
			rec.Reads.Writes++
			if rec.WritesOn != nil {
				rec.WritesOn[p.Name]++
			}
			if err != nil {
				rec.Reads.WriteErrors++
			}
			rec.mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		for {
			for _, n := range nodes {
				b, err := os.ReadFile(d.File(n, fileName))
				v := 0
				if err == nil {
					v, err = checkFile(b)
				}
				if err == nil && int64(v) > written.Load() {
					err = fmt.Errorf("unknown: version %d was never written (latest %d)", v, written.Load())
				}
				rec.mu.Lock()
				rec.Reads.Reads++
				rec.mu.Unlock()
				if err != nil {
					rec.addBadRead(BadRead{At: time.Now(), Node: n.Name, Detail: err.Error()})
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(readEvery):
			}
		}
	}()
}
