package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A second lock of one run directory fails and names the holder's pid; once
// the holder is gone (the file closed, as when the process ends) the lock
// is free again: the systemd unit's ExecStopPost --release after the
// daemon exited must still work.
func TestRunDirLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run") // created by lockRunDir
	first, err := lockRunDir(dir)
	if err != nil {
		t.Fatalf("first lock: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, lockName))
	if err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(os.Getpid()) {
		t.Errorf("lock file holds %q (%v), want this pid %d", b, err, os.Getpid())
	}
	second, err := lockRunDir(dir)
	var re *runningError
	if !errors.As(err, &re) {
		if second != nil {
			second.Close()
		}
		t.Fatalf("second lock of %s: %v, want another hagentd is running", dir, err)
	}
	want := fmt.Sprintf("another hagentd (pid %d) is running", os.Getpid())
	if re.pid != os.Getpid() || !strings.Contains(err.Error(), want) {
		t.Errorf("second lock: %q, want it to say %q", err, want)
	}
	// Another run directory is another agent (the netns lab runs several
	// on one machine).
	other, err := lockRunDir(t.TempDir())
	if err != nil {
		t.Errorf("lock of another run directory: %v", err)
	} else {
		other.Close()
	}
	first.Close()
	again, err := lockRunDir(dir)
	if err != nil {
		t.Fatalf("lock after the holder closed it: %v", err)
	}
	again.Close()
}

// A pid that is not one (a corrupt or hostile lock file) is not named.
func TestLockHolderGarbage(t *testing.T) {
	for _, content := range []string{"", "abc\n", "-5\n", "99999999999999999999999999999999\n", strings.Repeat("1", 100)} {
		f, err := os.CreateTemp(t.TempDir(), "lock")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(content); err != nil {
			t.Fatal(err)
		}
		if pid := lockHolder(f); pid != 0 {
			t.Errorf("lock file %q: holder pid %d, want 0 (unknown)", content, pid)
		}
		f.Close()
	}
}

// writeConfig writes a configuration whose control socket is sock and
// returns its path. Its hbdev is lo and it has no data interface, so that
// even a hagentd that got past the refusal (the code before the lock)
// changes nothing on the machine running the test.
func writeConfig(t *testing.T, sock string) string {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("a-long-enough-lab-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("control_socket: %s\nnode:\n  name: n1\n  serial: FGVM00000001\ncluster:\n  password_file: %s\n"+
		"  hbdev: [{name: lo}]\n", sock, key)
	path := filepath.Join(dir, "hagent.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// hagentd and hagentd --release beside a running agent refuse with exit 1
// before touching anything, naming the running pid: whether it holds the
// run directory's lock, or (another run directory, the same
// configuration) answers on the control socket. Before the lock, both went
// on to agent.New / agent.Release (which reset the data interfaces of a
// live primary): hagentd failed only later, on the control socket, without
// a pid, and --release did its work and exited 0.
func TestRunRefusedBesideRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "hagent.sock")
	path := writeConfig(t, sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	runDir := t.TempDir()
	lock, err := lockRunDir(runDir)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	want := fmt.Sprintf("another hagentd (pid %d) is running", os.Getpid())
	for _, tc := range []struct {
		runDir, holds string
	}{
		{runDir, filepath.Join(runDir, lockName)},
		{t.TempDir(), sock}, // same configuration, another run directory
	} {
		for _, release := range []bool{false, true} {
			args := []string{"-c", path, "--run-dir", tc.runDir}
			if release {
				args = append(args, "--release")
			}
			var stdout, stderr bytes.Buffer
			code := run(args, &stdout, &stderr)
			if out := stderr.String(); code != 1 || !strings.Contains(out, want) || !strings.Contains(out, tc.holds) {
				t.Errorf("hagentd %v beside a running one: exit %d, output %q; want exit 1, %q and %s", args, code, out, want, tc.holds)
			}
		}
	}
}

// FuzzParsePid: whatever the lock file holds, parsePid returns 0 or the
// positive number it spells, and never panics.
func FuzzParsePid(f *testing.F) {
	for _, s := range []string{"1", "4242", "0", "-5", "+5", "abc", "", " 7", "2147483647", "2147483648", "99999999999", "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pid := parsePid(b)
		if pid < 0 {
			t.Fatalf("parsePid(%q) = %d", b, pid)
		}
		if pid > 0 && fmt.Sprint(pid) != strings.TrimLeft(string(b), "0") {
			t.Fatalf("parsePid(%q) = %d, not what it spells", b, pid)
		}
	})
}
