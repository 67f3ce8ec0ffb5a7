package config

import (
	"strings"
	"testing"
	"time"
)

// TestSessionPickupDefer: session_pickup.defer defaults by mode (20ms in
// fgsp, off in a-p), an explicit value wins in both, and a value out of
// 0s-1s is one error naming file, line and key.
func TestSessionPickupDefer(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	fgsp := base + "  mode: fgsp\n"
	for _, tt := range []struct {
		name, yaml string
		want       time.Duration
	}{
		{"a-p default off", base, 0},
		{"fgsp default 20ms", fgsp, 20 * time.Millisecond},
		{"fgsp explicit off", fgsp + "  session_pickup: {defer: 0s}\n", 0},
		{"fgsp explicit", fgsp + "  session_pickup: {defer: 5ms}\n", 5 * time.Millisecond},
		{"a-p explicit", base + "  session_pickup: {defer: 1s}\n", time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("t.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatalf("unexpected error:\n%v", err)
			}
			if got := c.Cluster.SessionPickup.Defer; got != tt.want {
				t.Errorf("defer %v, want %v", got, tt.want)
			}
		})
	}
	for _, tt := range []struct{ name, yaml, want string }{
		{"high", fgsp + "  session_pickup:\n    defer: 2s\n", "t.yaml:6: cluster.session_pickup.defer: 2s is out of range 0s-1s"},
		{"negative", base + "  session_pickup:\n    defer: -1ms\n", "t.yaml:5: cluster.session_pickup.defer: -1ms is out of range 0s-1s"},
		{"not a duration", base + "  session_pickup:\n    defer: soon\n", "t.yaml:5: cluster.session_pickup.defer: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if n := strings.Count(err.Error(), "\n"); n > 0 {
				t.Errorf("%d errors, want one:\n%v", n+1, err)
			}
		})
	}
}
