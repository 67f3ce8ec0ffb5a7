package config

import (
	"testing"

	"github.com/hagent/hagent/heartbeat"
)

// TestNodeNameIsWireText: every node name the configuration accepts is
// one a heartbeat may carry (heartbeat.ValidString), so a node never
// configures a name its peers would drop; invalid UTF-8 (reachable through
// the Go API, not through YAML) is refused.
func TestNodeNameIsWireText(t *testing.T) {
	for _, n := range []string{"a\xff", "a\xc3", "a\x1b", "a\u0085", "a\u2028", "a b"} {
		if checkName(n, MaxNameLen) == "" {
			t.Errorf("checkName(%q) accepts it", n)
		}
	}
	for _, n := range []string{"fw-a", "nœud", "名前", "x"} {
		if msg := checkName(n, MaxNameLen); msg != "" || !heartbeat.ValidString(n) {
			t.Errorf("%q: checkName %q, wire-valid %v", n, msg, heartbeat.ValidString(n))
		}
	}
	if MaxNameLen > heartbeat.MaxStringLen {
		t.Errorf("MaxNameLen %d exceeds what a heartbeat carries (%d)", MaxNameLen, heartbeat.MaxStringLen)
	}
}
