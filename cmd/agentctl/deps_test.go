package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestAgentctlDoesNotLinkTheDaemon: agentctl is the operator's client of
// the control socket; it shares only names (internal/paths) and the wire
// types (control) with hagentd, never the daemon's package agent.
func TestAgentctlDoesNotLinkTheDaemon(t *testing.T) {
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Skipf("go list: %v: %s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "github.com/hagent/hagent/agent" || strings.HasPrefix(p, "github.com/hagent/hagent/agent/") {
			t.Errorf("agentctl links %s", p)
		}
	}
}
