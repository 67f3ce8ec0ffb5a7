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
// change (and once per interface at the start). A carrier loss is reported
// only once every sample for `debounce` has been down, so a flap shorter
// than debounce is never reported (a sampled loss is never longer than the
// real one); a carrier that comes back is reported at the next sample. An
// interface that is missing or administratively down counts as down. It
// returns when ctx is done.
//
// Link notifications (WatchLinks) are not enough to act on a carrier loss
// within milliseconds: the kernel's linkwatch delivers a carrier-off
// notification up to a second late (it batches non-urgent link events, at
// most one run per second, system-wide; measured here: 0.5 s after a veth
// peer went down), while the carrier attribute reads the driver's carrier
// bit at once. One pread per interface per poll; the files stay open. The
// cost is the wake-ups: measured here about 3 % of a core for a bare 1 ms
// Go ticker.
func PollCarrier(ctx context.Context, names []string, every, debounce time.Duration, fn func(name string, up bool)) error {
	files := make([]*os.File, len(names))
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	const (
		unknown = iota
		down
		up
	)
	reported := make([]int8, len(names))
	downSince := make([]time.Time, len(names)) // first down sample of the current loss
	buf := make([]byte, 4)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		now := time.Now()
		for i, n := range names {
			isUp := false
			if files[i] == nil {
				files[i], _ = os.Open(filepath.Join(sysClassNet, n, "carrier"))
			}
			if f := files[i]; f != nil {
				if k, _ := f.ReadAt(buf, 0); k > 0 {
					isUp = buf[0] == '1'
				} else {
					// EINVAL while the interface is down, ENODEV once it is
					// gone (or renamed): open it again next time.
					f.Close()
					files[i] = nil
				}
			}
			switch {
			case isUp:
				downSince[i] = time.Time{}
				if reported[i] != up {
					reported[i] = up
					fn(n, true)
				}
			case reported[i] == unknown:
				reported[i] = down // down at the start: nothing to debounce
				fn(n, false)
			case reported[i] == up:
				if downSince[i].IsZero() {
					downSince[i] = now
				}
				if now.Sub(downSince[i]) >= debounce {
					reported[i] = down
					fn(n, false)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
