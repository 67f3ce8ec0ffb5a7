package lab

import (
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestRealtimeThreadKeepsChildren: an agent started with Pdeathsig from
// a thread the prober then runs on survives the prober. A goroutine that
// ends locked to its thread ends the thread, and the kernel SIGKILLs the
// children that thread forked: the prober did that to a node's agent
// right after a crash failover (TestCrashFailover, TestUnicastHeartbeat
// in a fresh-clone CI run). Several rounds, as the main thread is never
// ended (it is parked instead).
func TestRealtimeThreadKeepsChildren(t *testing.T) {
	for round := 0; round < 4; round++ {
		started := make(chan *exec.Cmd, 1)
		go func() {
			runtime.LockOSThread() // one thread for the start and the prober
			cmd := exec.Command("sleep", "30")
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				started <- nil
				return
			}
			_, restore := realtimeThread(true)
			restore()
			runtime.UnlockOSThread()
			started <- cmd // the goroutine ends here: its thread must live on
		}()
		cmd := <-started
		if cmd == nil {
			t.Fatal("cannot start sleep")
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			t.Fatalf("round %d: the child ended with the prober's thread: %v", round, err)
		case <-time.After(200 * time.Millisecond):
		}
		cmd.Process.Kill()
		<-exited
	}
}
