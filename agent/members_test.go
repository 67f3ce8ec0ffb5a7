package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hagent/hagent/config"
)

// TestAgentMemberLimitPerMode: an agent hears authentic heartbeats from 20
// senders; in mode a-p it forms a cluster of 4 (a fifth refused as
// always), in mode fgsp one of 16 (the 17th refused), and the refused
// senders' frames are counted as dropped.
func TestAgentMemberLimitPerMode(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte(testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode string
		want int
	}{{"a-p", 4}, {"fgsp", 16}} {
		t.Run(tc.mode, func(t *testing.T) {
			cfg, err := config.Parse("t.yaml", []byte(fmt.Sprintf(`
control_socket: %s/sock
node: {name: a, serial: SN-a, priority: 150}
cluster:
  mode: %s
  group_id: %d
  password_file: %s
  hbdev: [{name: ha1}]
  hb_interval: 20ms
  hb_lost_threshold: 3
  hello_holddown: 100ms
  sync: {enabled: false}
`, dir, tc.mode, fuzzGroup, key)))
			if err != nil {
				t.Fatal(err)
			}
			h := newFuzzHarness(t, cfg, t.TempDir())
			defer h.close()
			const senders = 20
			var prog []byte
			for i := range senders {
				// Serial S<8i+4>, a node id of its own, secondary.
				prog = append(prog, fuzzFrameOp(fuzzOpFrame, byte(8*i+4), 2, 100, 4, 1, byte(2+4*i))...)
			}
			h.run(prog)
			if n := len(h.a.m.Status().Members); n != tc.want {
				t.Fatalf("%d members, want %d", n, tc.want)
			}
			if d := h.a.links[0].dropped.Load(); d != senders+1-uint64(tc.want) {
				t.Fatalf("%d frames dropped, want %d (the senders refused)", d, senders+1-tc.want)
			}
		})
	}
}
