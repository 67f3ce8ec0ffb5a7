package testutil

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeT records what Eventually reports and stops like t.Fatalf does.
type fakeT struct {
	testing.TB
	msg string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func run[C Cond](timeout time.Duration, cond C) string {
	f := &fakeT{}
	done := make(chan struct{})
	go func() { defer close(done); Eventually(f, timeout, "the thing", cond) }()
	<-done
	return f.msg
}

// TestEventually: both kinds of condition pass once they hold, and fail
// naming what was awaited and, for an error, the last one seen.
func TestEventually(t *testing.T) {
	n := 0
	if msg := run(time.Minute, func() bool { n++; return n == 3 }); msg != "" || n != 3 {
		t.Errorf("bool condition: %q after %d calls", msg, n)
	}
	n = 0
	if msg := run(time.Minute, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); msg != "" || n != 3 {
		t.Errorf("error condition: %q after %d calls", msg, n)
	}
	if msg := run(10*time.Millisecond, func() bool { return false }); !strings.Contains(msg, "the thing") {
		t.Errorf("false condition reported %q", msg)
	}
	if msg := run(10*time.Millisecond, func() error { return errors.New("seen 2 of 3") }); !strings.Contains(msg, "the thing") || !strings.Contains(msg, "seen 2 of 3") {
		t.Errorf("failing condition reported %q", msg)
	}
}

// TestPoll: the last error comes back wrapped once the timeout has passed,
// and not before.
func TestPoll(t *testing.T) {
	last := errors.New("last")
	start := time.Now()
	err := Poll(20*time.Millisecond, time.Millisecond, func() error { return last })
	if !errors.Is(err, last) {
		t.Fatalf("Poll = %v, want it to wrap %v", err, last)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("Poll gave up after %v, before its timeout", d)
	}
}
