package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/config"
)

// refreshConfig is the fuzz harness's plain configuration with one data
// interface and arps_refresh every 1s.
func refreshConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := *fuzzConfigs(t)[0]
	cfg.Cluster.Interfaces = []config.Interface{{Name: "port9"}}
	cfg.Cluster.ARPsRefresh = time.Second
	return &cfg
}

// TestARPsRefresh: with arps_refresh 1s, a node alone becomes primary and
// announces once per period, each gap within ±10% of 1s (plus one 20 ms
// tick); status shows the period, the last round and the count. A node
// hearing a higher-priority primary stays secondary and never announces.
// Without refreshARPs the primary announces only on takeover-related
// events, and the test fails on the count.
func TestARPsRefresh(t *testing.T) {
	const step = 20 * time.Millisecond
	t.Run("primary", func(t *testing.T) {
		h := newFuzzHarness(t, refreshConfig(t), t.TempDir())
		defer h.close()
		h.run([]byte{fuzzOpTime, 60, fuzzOpTime, 60})
		if r := h.a.m.Role(); r != cluster.RolePrimary {
			t.Fatalf("alone after the holddown: role %s", r)
		}
		_, _, _, base := h.nets[0].counts()
		var at []time.Time
		start := h.clock
		for h.clock.Sub(start) < 60*time.Second {
			h.clock = h.clock.Add(step)
			h.a.tick(h.clock)
			h.after(true)
			if _, _, _, n := h.nets[0].counts(); n != base+len(at) {
				if n != base+len(at)+1 {
					t.Fatalf("%d announcements in one tick", n-base-len(at))
				}
				at = append(at, h.clock)
			}
		}
		// The first period starts at the first tick as primary; 60 s holds
		// between 60/1.12 and 60/0.9 periods.
		if len(at) < 53 || len(at) > 67 {
			t.Fatalf("%d refresh rounds in 60s at 1s ±10%%, want 53-67", len(at))
		}
		distinct := map[time.Duration]bool{}
		for i := 1; i < len(at); i++ {
			gap := at[i].Sub(at[i-1])
			if gap < 900*time.Millisecond || gap > 1100*time.Millisecond+step {
				t.Errorf("gap %d is %s, want 900ms-1.12s", i, gap)
			}
			distinct[gap] = true
		}
		if len(distinct) < 3 {
			t.Errorf("gaps %v: not jittered", distinct)
		}
		t.Logf("%d rounds in 60s, %d distinct gaps", len(at), len(distinct))
		st := h.a.status()
		r := st.ARPsRefresh
		if r == nil || r.EveryMs != 1000 || r.Sent != uint64(len(at)) || r.LastAgoMs < 0 || r.LastAgoMs > 1200 {
			t.Fatalf("status arps_refresh %+v, want every 1000ms, sent %d, last within 1.2s", r, len(at))
		}
		// A live reload to 0s stops it (Key.Reload is live), and status
		// no longer shows it.
		off := *h.a.config()
		off.Cluster.ARPsRefresh = 0
		if pending := h.a.reload(&off); len(pending) != 0 {
			t.Fatalf("reload of arps_refresh waits for a restart: %v", pending)
		}
		_, _, _, before := h.nets[0].counts()
		for range 250 {
			h.clock = h.clock.Add(step)
			h.a.tick(h.clock)
			h.after(true)
		}
		if _, _, _, n := h.nets[0].counts(); n != before || h.a.status().ARPsRefresh != nil {
			t.Fatalf("after a reload to 0s: %d more announcements, status %+v", n-before, h.a.status().ARPsRefresh)
		}
		if s := r.String(); !strings.HasPrefix(s, "arps_refresh: 1s, last ") || !strings.HasSuffix(s, fmt.Sprintf(" ago, sent %d", len(at))) {
			t.Errorf("status line %q", s)
		}
	})
	t.Run("secondary", func(t *testing.T) {
		h := newFuzzHarness(t, refreshConfig(t), t.TempDir())
		defer h.close()
		// A primary of priority 250 heard every 20 ms for 5 s.
		for seq := byte(1); seq < 250; seq++ {
			h.run(fuzzFrameOp(fuzzOpFrame, 1, 3, 250, 4*3, seq, 2))
			h.clock = h.clock.Add(step)
			h.a.tick(h.clock)
			h.after(true)
			if r := h.a.m.Role(); seq > 10 && r != cluster.RoleSecondary {
				t.Fatalf("at %d: role %s, want secondary", seq, r)
			}
		}
		if _, takes, _, n := h.nets[0].counts(); takes != 0 || n != 0 {
			t.Fatalf("secondary: %d takeovers, %d announcements; want none", takes, n)
		}
		if r := h.a.status().ARPsRefresh; r == nil || r.Sent != 0 || r.LastAgoMs != -1 {
			t.Fatalf("secondary status arps_refresh %+v, want sent 0, none yet", r)
		}
	})
}
