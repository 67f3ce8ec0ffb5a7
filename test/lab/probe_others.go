//go:build !linux

package lab

import (
	"errors"
	"time"
)

// setFIFO is not available here.
func setFIFO(int) error { return errors.ErrUnsupported }

// setNormal is not available here.
func setNormal() error { return errors.ErrUnsupported }

// sleep is time.Sleep.
func sleep(d time.Duration) { time.Sleep(d) }
