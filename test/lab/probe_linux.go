package lab

import (
	"time"

	"golang.org/x/sys/unix"
)

// setFIFO puts the calling thread under SCHED_FIFO at prio.
func setFIFO(prio int) error {
	return unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: uint32(prio)}, 0)
}

// setNormal puts the calling thread back under SCHED_OTHER.
func setNormal() error {
	return unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}, 0)
}

// sleep sleeps d in the kernel (the calling thread, not a Go timer).
func sleep(d time.Duration) {
	ts := unix.NsecToTimespec(d.Nanoseconds())
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}
