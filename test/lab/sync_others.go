//go:build !linux

package lab

import (
	"fmt"
	"runtime"
)

// ExchangeDirs swaps two paths atomically; Linux only.
func ExchangeDirs(a, b string) error {
	return fmt.Errorf("lab: ExchangeDirs is not implemented on %s", runtime.GOOS)
}
