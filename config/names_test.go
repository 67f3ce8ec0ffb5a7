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

// TestHookEnvNames: hooks.env takes variable names, not PATH or HAGENT_*
// (the agent sets those), and an empty list keeps the canonical bytes of
// a section without the key.
func TestHookEnvNames(t *testing.T) {
	for n, bad := range map[string]bool{"TZ": false, "LANG": false, "http_proxy": false, "_X1": false,
		"": true, "1X": true, "A-B": true, "A=B": true, "PATH": true, "HAGENT_ROLE": true} {
		if got := checkEnvName(n) != ""; got != bad {
			t.Errorf("checkEnvName(%q) refuses: %v, want %v", n, got, bad)
		}
	}
	c := DefaultCluster()
	plain, err := clusterNode(c)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(plain.Content); i += 2 {
		if plain.Content[i].Value == "hooks" {
			for j := 0; j < len(plain.Content[i+1].Content); j += 2 {
				if plain.Content[i+1].Content[j].Value == "env" {
					t.Error("an empty hooks.env is written into the canonical section")
				}
			}
		}
	}
}
