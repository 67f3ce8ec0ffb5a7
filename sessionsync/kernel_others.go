//go:build !linux

package sessionsync

import (
	"errors"
	"runtime"
	"syscall"
)

// KernelError is the kernel's answer to one record.
type KernelError struct {
	Op    string
	Errno syscall.Errno
}

func (e *KernelError) Error() string { return "ctnetlink " + e.Op + ": " + e.Errno.Error() }

// OpenKernel is not implemented on this GOOS.
func OpenKernel() (Table, error) {
	return nil, errors.New("sessionsync: ctnetlink is not implemented on " + runtime.GOOS)
}
