//go:build !linux

package heartbeat

import (
	"fmt"
	"runtime"
)

// DialLink opens a heartbeat link on interface ifname for etherType. It is
// only implemented on Linux.
func DialLink(ifname string, etherType uint16) (Link, error) {
	return nil, fmt.Errorf("heartbeat: DialLink %s: not implemented on %s", ifname, runtime.GOOS)
}
