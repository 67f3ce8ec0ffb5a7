package vmac

import (
	"context"
	"os"
	"path/filepath"
	"time"
)

// sysClassNet is where the kernel shows each interface's carrier.
var sysClassNet = "/sys/class/net"

// PollCarrier reports the carrier of the named interfaces, read from
// /sys/class/net/<name>/carrier every `every`, and calls fn with each
// change (and once per interface at the start). An interface that is
// missing or administratively down counts as down. It returns when ctx is
// done.
//
// Link notifications (WatchLinks) are not enough to act on a carrier loss
// within milliseconds: the kernel's linkwatch delivers a carrier-off
// notification up to a second late (it batches non-urgent link events, at
// most one run per second, system-wide; measured here: 0.5 s after a veth
// peer went down), while the carrier attribute reads the driver's carrier
// bit at once. One pread per interface per poll; the files stay open.
func PollCarrier(ctx context.Context, names []string, every time.Duration, fn func(name string, up bool)) error {
	files := make([]*os.File, len(names))
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	last := make([]int8, len(names)) // 0 unknown, 1 down, 2 up
	buf := make([]byte, 4)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for i, n := range names {
			up := false
			if files[i] == nil {
				files[i], _ = os.Open(filepath.Join(sysClassNet, n, "carrier"))
			}
			if f := files[i]; f != nil {
				if k, _ := f.ReadAt(buf, 0); k > 0 {
					up = buf[0] == '1'
				} else {
					// EINVAL while the interface is down, ENODEV once it is
					// gone (or renamed): open it again next time.
					f.Close()
					files[i] = nil
				}
			}
			state := int8(1)
			if up {
				state = 2
			}
			if state != last[i] {
				last[i] = state
				fn(n, up)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
