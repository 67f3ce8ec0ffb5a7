package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// lockName is the lock file inside the run directory. Whoever holds an
// exclusive flock on it is the one hagentd of that run directory; the file
// holds its pid for the message of the one refused.
const lockName = "hagentd.lock"

// runningError is the refusal of a second hagentd (or of a --release)
// beside a running one.
type runningError struct {
	pid  int    // the running hagentd's pid; 0 if it is not known
	what string // what shows it runs: the lock file or the control socket
}

func (e *runningError) Error() string {
	if e.pid > 0 {
		return fmt.Sprintf("another hagentd (pid %d) is running (it holds %s); this one changes nothing and exits", e.pid, e.what)
	}
	return fmt.Sprintf("another hagentd is running (it holds %s); this one changes nothing and exits", e.what)
}

// lockRunDir takes the exclusive lock of runDir (created 0700 if missing)
// and writes this process's pid into it. The lock lasts as long as the
// returned file is open, and the kernel drops it when the process ends
// however it ends, so the systemd unit's ExecStopPost (--release after the
// daemon is gone) finds it free. The file is opened close-on-exec: a hook
// does not inherit it. If another process holds the lock, the error is a
// *runningError naming that process's pid. Proved by TestRunDirLock and,
// end to end, test.TestSecondAgentRefused.
func lockRunDir(runDir string) (*os.File, error) {
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	path := filepath.Join(runDir, lockName)
	// O_NOFOLLOW: a symlink planted in the run directory does not make
	// hagentd create or truncate a file elsewhere.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &runningError{pid: lockHolder(f), what: path}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt(pid, 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// lockHolder reads the pid the holder of the lock wrote; 0 if there is none
// (yet: the holder writes it just after taking the lock, so an empty file
// is read once more after a moment) or it does not parse.
func lockHolder(f *os.File) int {
	for try := 0; try < 2; try++ {
		var b [24]byte // a pid and a newline; anything longer is not one
		n, err := f.ReadAt(b[:], 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0
		}
		if s := bytes.TrimSpace(b[:n]); len(s) > 0 {
			return parsePid(s)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0
}

// parsePid returns the pid written in b, or 0 if b is not a positive
// decimal number that fits a pid (FuzzParsePid).
func parsePid(b []byte) int {
	if len(b) == 0 || len(b) > 10 {
		return 0
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0
		}
	}
	pid, err := strconv.ParseInt(string(b), 10, 32)
	if err != nil || pid <= 0 {
		return 0
	}
	return int(pid)
}

// socketHolder reports whether something accepts connections on the
// control socket path (a hagentd started with another run directory but
// the same configuration) and its pid, from the socket's peer credentials
// (0 if they cannot be read). A stale socket file (its hagentd died)
// refuses the connection at once.
func socketHolder(path string) (pid int, answers bool) {
	c, err := net.DialTimeout("unix", path, 200*time.Millisecond)
	if err != nil {
		return 0, false
	}
	defer c.Close()
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, true
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, true
	}
	_ = raw.Control(func(fd uintptr) { pid = peerPid(fd) })
	return pid, true
}
