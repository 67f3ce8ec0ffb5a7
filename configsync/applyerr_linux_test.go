package configsync

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hagent/hagent/internal/testutil"
)

// TestSyncApplyErrorReported: a secondary whose disk is full cannot apply
// what the primary sends; its status says why (LastApplyError) and its
// history says when it began and when it ended, instead of only a log
// line. Found by the chaos campaign's disk-full fault (issue 14).
func TestSyncApplyErrorReported(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	var mu sync.Mutex
	var events []string
	_, a, b := pair(t, 0, func(c *SyncConfig) {
		c.Period = 300 * time.Millisecond
		if strings.HasSuffix(c.Self, "b") {
			c.Event = func(kind, msg string) { mu.Lock(); events = append(events, kind+": "+msg); mu.Unlock() }
		}
	})
	testutil.Eventually(t, 10*time.Second, "initial sync", inSync(a, b))
	// A full file system under node-b's /etc/app. The ballast that fills
	// it lies on the same tmpfs but outside the synced tree: inside, it is
	// a file the primary does not have, and node-b's periodic sync deletes
	// it, which freed the space before the push (no ENOSPC) or before the
	// test removed it. The tmpfs is mounted beside the tree and its app/
	// directory bind-mounted onto node-b's /etc/app.
	fs := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", fs).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", fs).Run() })
	if err := os.Mkdir(fs+"/app", 0o755); err != nil {
		t.Fatal(err)
	}
	dir := b.root + "/etc/app"
	if out, err := exec.Command("mount", "--bind", fs+"/app", dir).CombinedOutput(); err != nil {
		t.Fatalf("bind mount: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	ballast, err := os.Create(fs + "/ballast")
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = ballast.Write(make([]byte, 4096))
	}
	ballast.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the tmpfs: %v", err)
	}
	a.write(t, "/etc/app/big.conf", strings.Repeat("x", 64<<10), 0o644)
	testutil.Eventually(t, 10*time.Second, "node-b reports the failed apply", func() bool {
		return strings.Contains(b.s.Status().LastApplyError, "no space left on device")
	})
	if ga, gb := a.s.Generation(), b.s.Generation(); gb >= ga {
		t.Errorf("node-b could not apply generation %d, yet claims %d", ga, gb)
	}
	has := func(s string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range events {
			if strings.Contains(e, s) {
				return true
			}
		}
		return false
	}
	if !has("apply: cannot apply the primary's files") {
		t.Errorf("no history event for the failing apply: %q", events)
	}
	// Freed: the periodic compare repairs it, and the error goes.
	if err := os.Remove(fs + "/ballast"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "repaired", func() bool { return b.read("/etc/app/big.conf") == a.read("/etc/app/big.conf") })
	testutil.Eventually(t, 5*time.Second, "error cleared", func() bool { return b.s.Status().LastApplyError == "" })
	testutil.Eventually(t, 5*time.Second, "generation caught up", func() bool { return b.s.Generation() == a.s.Generation() })
	if !has("apply: applying the primary's files works again") {
		t.Errorf("no history event for the recovery: %q", events)
	}
}
