package agent

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Realtime locks the process's memory (mlockall) and puts every thread of
// the process under SCHED_FIFO at prio, as keepalived's -r/-R do, so that
// heartbeats keep their cadence on a loaded box. Threads the Go runtime
// creates later inherit the policy from the thread that creates them.
func Realtime(prio int) error {
	// MCL_ONFAULT: lock pages as they are touched, not the Go runtime's
	// whole reservation (which would cost ~150 MB of RSS).
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT); err != nil {
		return fmt.Errorf("mlockall: %w", err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := schedFIFO(tid, prio); err != nil {
			return fmt.Errorf("sched_setscheduler(SCHED_FIFO): %w", err)
		}
	}
	return nil
}

func schedFIFO(tid, prio int) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(prio)}
	return unix.SchedSetAttr(tid, &attr, 0)
}
