package lab

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// ExchangeDirs swaps two paths on the same file system atomically
// (renameat2 RENAME_EXCHANGE): a whole new tree appears at once.
func ExchangeDirs(a, b string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("exchange %s and %s: %w", a, b, err)
	}
	return nil
}
