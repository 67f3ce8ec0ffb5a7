package cli

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestHagentdFlags(t *testing.T) {
	fs := flag.NewFlagSet("hagentd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	h := HagentdFlags(fs)
	if err := fs.Parse([]string{"-c", "/x.yaml", "--check", "-state-dir", "/s", "--run-dir", "/r"}); err != nil {
		t.Fatal(err)
	}
	want := Hagentd{Config: "/x.yaml", Check: true, StateDir: "/s", RunDir: "/r"}
	if *h != want {
		t.Errorf("parsed %+v, want %+v", *h, want)
	}
}

func TestAgentctlFlags(t *testing.T) {
	for _, tt := range []struct {
		env, want string
	}{{"", "/run/hagent/hagent.sock"}, {"/tmp/a.sock", "/tmp/a.sock"}} {
		fs := flag.NewFlagSet("agentctl", flag.ContinueOnError)
		a := AgentctlFlags(fs, func(k string) string {
			if k == SocketEnv {
				return tt.env
			}
			return ""
		})
		if err := fs.Parse([]string{"-timeout", "2s"}); err != nil {
			t.Fatal(err)
		}
		if a.Socket != tt.want || a.Timeout != 2*time.Second {
			t.Errorf("env %q: socket %q timeout %v", tt.env, a.Socket, a.Timeout)
		}
	}
}

func TestAgentctlUsage(t *testing.T) {
	u := AgentctlUsage()
	for _, c := range AgentctlCommands {
		if !strings.Contains(u, "\n  "+c.Name+" ") || !strings.Contains(u, c.Summary) {
			t.Errorf("usage lacks %s:\n%s", c.Name, u)
		}
	}
	if got := AgentctlCommands[1].Synopsis(); got != "set|unset|status [--vcluster N] [--json]" {
		t.Errorf("failover synopsis = %q", got)
	}
	if !strings.Contains(u, "\n  sessions [verify] [--json] ") {
		t.Errorf("usage lacks ha sessions [verify]:\n%s", u)
	}
}
