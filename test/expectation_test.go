package test

// Conntrack expectations (session_pickup.expectation): an active-FTP data
// connection announced before a failover opens after it.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// TestSessionPickupExpectation: the client (behind the masquerading pair)
// announces an active-FTP data port on a control connection to the server;
// node-a's FTP helper rewrites the PORT command to the cluster address and
// expects the server's connection to it. node-a crashes; the server then
// connects to the announced address: with expectation on, node-b has the
// expectation (and the control connection with its helper), tracks the
// connection as RELATED, NATs it to the client and its strict forward
// chain lets it through; with expectation off (the control) it cannot.
func TestSessionPickupExpectation(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("expectation=%v", on), func(t *testing.T) {
			l, a, b := firewallPairWith(t, fmt.Sprintf("session_pickup: {enabled: true, expectation: %v}\nsync: {enabled: false}", on))
			activeFTP(t, l, a, b, on)
		})
	}
}

func activeFTP(t *testing.T, l *lab.Lab, a, b *lab.Node, on bool) {
	if err := l.SetupFTPHelper(); err != nil {
		t.Fatal(err)
	}
	const dataPort = 50021
	// The server: reads the PORT command as it arrives (rewritten by the
	// helper) and answers it.
	announced := make(chan string, 1)
	var ln net.Listener
	if err := lab.InNS(l.Server, func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(lab.ServerIPv4, "21"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "220 lab ftp\r\n")
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(line, "USER ") {
				io.WriteString(c, "230 logged in\r\n")
			}
			if strings.HasPrefix(line, "PORT ") {
				announced <- strings.TrimSpace(strings.TrimPrefix(line, "PORT "))
				io.WriteString(c, "200 PORT command successful\r\n")
			}
		}
	}()
	// The client: listens for the data connection, then announces it.
	var dl net.Listener
	if err := lab.InNS(l.Client, func() (err error) {
		dl, err = net.Listen("tcp4", fmt.Sprintf("%s:%d", lab.ClientIPv4, dataPort))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	var ctl net.Conn
	if err := lab.InNS(l.Client, func() (err error) {
		ctl, err = net.DialTimeout("tcp4", net.JoinHostPort(lab.ServerIPv4, "21"), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	cr := bufio.NewReader(ctl)
	if _, err := cr.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	// A line before PORT: the helper parses a packet only where it knows
	// a line begins (after a newline it saw in that direction).
	io.WriteString(ctl, "USER anonymous\r\n")
	if line, err := cr.ReadString('\n'); err != nil || !strings.HasPrefix(line, "230") {
		t.Fatalf("USER answered %q, %v", line, err)
	}
	ip := strings.ReplaceAll(lab.ClientIPv4, ".", ",")
	fmt.Fprintf(ctl, "PORT %s,%d,%d\r\n", ip, dataPort>>8, dataPort&0xff)
	if line, err := cr.ReadString('\n'); err != nil || !strings.HasPrefix(line, "200") {
		t.Fatalf("PORT answered %q, %v", line, err)
	}
	var target string
	select {
	case p := <-announced:
		f := strings.Split(p, ",")
		if len(f) != 6 {
			t.Fatalf("PORT %q", p)
		}
		var hi, lo int
		fmt.Sscan(f[4], &hi)
		fmt.Sscan(f[5], &lo)
		target = fmt.Sprintf("%s.%s.%s.%s:%d", f[0], f[1], f[2], f[3], hi<<8|lo)
	case <-time.After(5 * time.Second):
		t.Fatal("the server saw no PORT command")
	}
	if !strings.HasPrefix(target, lab.WANClusterIPv4+":") {
		t.Fatalf("the server was told %s: the helper did not rewrite PORT to the cluster address", target)
	}
	xa, err := a.Expectations()
	if err != nil || len(xa) != 1 {
		t.Fatalf("node-a's expectations: %+v %v (want the helper's one)", xa, err)
	}
	if on {
		eventually(t, 5*time.Second, "the expectation copied to node-b", func() error {
			xb, err := b.Expectations()
			if err != nil {
				return err
			}
			if len(xb) != 1 || xb[0].Key() != xa[0].Key() || !xb[0].NAT || xb[0].NATAddr != xa[0].NATAddr {
				return fmt.Errorf("node-b's expectations %+v, node-a's %+v", xb, xa)
			}
			return nil
		})
	} else {
		consistently(t, time.Second, "no expectation on node-b", func() error {
			if xb, _ := b.Expectations(); len(xb) != 0 {
				return fmt.Errorf("node-b has %+v with expectation off", xb)
			}
			return nil
		})
	}
	a.Crash()
	eventually(t, 10*time.Second, "node-b takes over", func() error {
		if r := b.Role(); r != "primary" {
			return fmt.Errorf("node-b is %q", r)
		}
		return nil
	})
	// The server opens the data connection to what it was told.
	accepted := make(chan string, 1)
	go func() {
		c, err := dl.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 16)
		n, _ := io.ReadAtLeast(c, buf, 4)
		accepted <- string(buf[:n])
	}()
	var dialErr error
	err = lab.InNS(l.Server, func() error {
		c, err := net.DialTimeout("tcp4", target, 2*time.Second)
		if err != nil {
			dialErr = err
			return nil
		}
		defer c.Close()
		_, err = io.WriteString(c, "data")
		dialErr = err
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got string
	select {
	case got = <-accepted:
	case <-time.After(3 * time.Second):
	}
	t.Logf("measured: active FTP data connection after the failover, expectation %v: dial %v, client received %q", on, dialErr, got)
	if on && (dialErr != nil || got != "data") {
		t.Errorf("the data connection announced before the failover did not open through node-b: dial %v, received %q", dialErr, got)
		t.Logf("node-b sessions: %s", mustCtl(b, "ha", "sessions"))
	}
	if !on && dialErr == nil && got == "data" {
		t.Error("control: without expectation copying the data connection still opened: the test cannot tell")
	}
}
