package configsync

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"sync"
	"time"
)

// stderrTailLen is how much of a failing command's stderr is kept.
const stderrTailLen = 2048

// tailBuffer keeps the last stderrTailLen bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > stderrTailLen {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-stderrTailLen:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.ToValidUTF8(t.buf, []byte("?")))
}

// runShell runs command with /bin/sh -c, killing it (and its process group
// where supported) after timeout. It returns the exit code (-1 if it did not
// exit normally) and the tail of stderr.
func runShell(ctx context.Context, command string, timeout time.Duration) (exit int, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	var tail tailBuffer
	cmd.Stderr = &tail
	cmd.WaitDelay = time.Second // do not hang on children keeping stderr open
	setProcessGroup(cmd)
	err = cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = errors.New("timed out after " + timeout.String())
	}
	exit = -1
	if cmd.ProcessState != nil {
		exit = cmd.ProcessState.ExitCode()
	}
	return exit, tail.String(), err
}
