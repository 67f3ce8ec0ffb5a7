package test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// TestWaitsForInterfaces: hagentd started before its heartbeat interface
// exists waits for it (saying so) instead of failing, and then joins the
// cluster; stopped while waiting, it exits 0.
func TestWaitsForInterfaces(t *testing.T) {
	_, a, b := twoNodes(t)
	rename := func(from, to string) {
		t.Helper()
		for _, args := range [][]string{
			{"-n", a.NS, "link", "set", from, "down"},
			{"-n", a.NS, "link", "set", from, "name", to},
			{"-n", a.NS, "link", "set", to, "up"},
		} {
			if err := lab.IP(args...); err != nil {
				t.Fatal(err)
			}
		}
	}
	start(t, b, params(100, false))
	rename("ha1", "late0")
	done := make(chan error, 1)
	go func() { done <- a.Start(params(200, false)) }()
	eventually(t, 5*time.Second, "the wait is logged", func() error {
		log, _ := os.ReadFile(a.Log)
		if !strings.Contains(string(log), "waiting for interfaces") || !strings.Contains(string(log), "ha1") {
			return errorString("no 'waiting for interfaces' line naming ha1 yet")
		}
		return nil
	})
	rename("late0", "ha1")
	if err := <-done; err != nil {
		t.Fatalf("start after the interface appeared: %v", err)
	}
	eventually(t, 10*time.Second, "election once ha1 exists", func() error { return agree("node-a", a, b) })

	// Stopped while waiting: a clean exit (run directly: the lab's Node
	// waits for the control socket, which does not exist while waiting).
	if err := a.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	rename("ha1", "late0")
	var out lockedBuffer
	cmd := exec.Command("ip", "netns", "exec", a.NS, lab.Bin("hagentd"), "-c", a.ConfigPath(), "-state-dir", a.StateDir, "-run-dir", a.RunDir)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "waiting for interfaces") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no wait logged:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("SIGTERM while waiting: %v (want exit 0)\n%s", err, out.String())
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("hagentd did not stop while waiting")
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

// lockedBuffer is an io.Writer for exec's output goroutine that the test
// can read at the same time.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
