//go:build !linux

package agent

import (
	"fmt"
	"runtime"
)

// Realtime is not implemented outside Linux.
func Realtime(prio int) error {
	return fmt.Errorf("realtime scheduling is not implemented on %s", runtime.GOOS)
}
