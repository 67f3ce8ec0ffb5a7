package agent

import (
	"errors"
	"io/fs"

	"golang.org/x/sys/unix"
)

// writable reports why dir cannot be written by this process (nil if it
// can, or if it does not exist yet: the syncer creates it).
func writable(dir string) error {
	err := unix.Access(dir, unix.W_OK)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
