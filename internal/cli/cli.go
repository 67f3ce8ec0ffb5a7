// Package cli defines the command lines of hagentd and agentctl: their
// flags, agentctl's commands and the version both print. The binaries parse
// their arguments with these definitions, and the man pages and the bash
// completion are generated from the same ones (deploy/gen), so the
// documentation cannot drift from the binaries.
package cli

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/hagent/hagent/internal/paths"
)

// Version is hagent's version, set at build time from git describe:
//
//	go build -ldflags "-X github.com/hagent/hagent/internal/cli.Version=$(git describe --tags --always --dirty)"
var Version = "0.1.0-dev"

// DefaultConfig is the configuration file hagentd reads unless -c says
// otherwise.
const DefaultConfig = paths.Config

// Hagentd holds hagentd's parsed flags.
type Hagentd struct {
	Config   string // -c
	Check    bool   // --check
	Release  bool   // --release
	Version  bool   // --version
	StateDir string // --state-dir
	RunDir   string // --run-dir
}

// HagentdFlags registers hagentd's flags on fs. A backquoted word in a
// usage string names the flag's argument (flag.UnquoteUsage).
func HagentdFlags(fs *flag.FlagSet) *Hagentd {
	h := &Hagentd{}
	fs.StringVar(&h.Config, "c", DefaultConfig, "configuration `file`")
	fs.BoolVar(&h.Check, "check", false, "validate the configuration, print ok or the errors, and exit")
	fs.BoolVar(&h.Release, "release", false, "release what a hagentd that died left on this node (the data interfaces' virtual MACs and cluster addresses) and exit; the systemd unit runs it as ExecStopPost")
	fs.BoolVar(&h.Version, "version", false, "print the version and exit")
	fs.StringVar(&h.StateDir, "state-dir", paths.StateDir, "`dir`ectory of the persistent state: heartbeat epoch, sync generation (kept across reboots)")
	fs.StringVar(&h.RunDir, "run-dir", paths.RunDir, "`dir`ectory of the runtime state: the interfaces' permanent MACs (cleared at boot)")
	return h
}

// SocketEnv names the environment variable that overrides agentctl's
// default control socket.
const SocketEnv = "HAGENT_SOCKET"

// Agentctl holds agentctl's parsed flags.
type Agentctl struct {
	Socket  string        // -s
	Timeout time.Duration // --timeout
	Version bool          // --version
}

// AgentctlFlags registers agentctl's flags on fs. getenv looks up
// SocketEnv for the default of -s (os.Getenv; the generators pass a
// function that finds nothing, so the pages show the built-in default).
func AgentctlFlags(fs *flag.FlagSet, getenv func(string) string) *Agentctl {
	a := &Agentctl{}
	sock := paths.Socket
	if v := getenv(SocketEnv); v != "" {
		sock = v
	}
	fs.StringVar(&a.Socket, "s", sock, "control `socket` of hagentd")
	fs.DurationVar(&a.Timeout, "timeout", 10*time.Second, "how long to wait for the agent")
	fs.BoolVar(&a.Version, "version", false, "print the version and exit")
	return a
}

// Command is one agentctl command, "agentctl ha NAME ARGS".
type Command struct {
	// Name is the word after "ha".
	Name string
	// Args are the words that may follow, one of them at a time
	// ("set", "unset", "status"); none for most commands.
	Args []string
	// Optional is true when the command also runs without one of Args.
	Optional bool
	// Options are the optional flags besides --json, as usage text
	// ("[--vcluster N]").
	Options string
	// JSON is whether the command takes --json.
	JSON bool
	// Summary says what it does, in one line.
	Summary string
}

// Synopsis returns the command's arguments as usage text: "set|unset|status"
// or "[--json]".
func (c Command) Synopsis() string {
	var parts []string
	if len(c.Args) > 0 && c.Optional {
		parts = append(parts, "["+strings.Join(c.Args, "|")+"]")
	} else if len(c.Args) > 0 {
		parts = append(parts, strings.Join(c.Args, "|"))
	}
	if c.Options != "" {
		parts = append(parts, c.Options)
	}
	if c.JSON {
		parts = append(parts, "[--json]")
	}
	return strings.Join(parts, " ")
}

// AgentctlCommands lists agentctl's commands in the order of its usage.
var AgentctlCommands = []Command{
	{Name: "status", JSON: true, Summary: `cluster status (FortiOS "get system ha status")`},
	{Name: "failover", Args: []string{"set", "unset", "status"}, Options: "[--vcluster N]", JSON: true, Summary: "step this node down and keep it out / back in (in vcluster N, default the first)"},
	{Name: "history", Options: "[--vcluster N]", JSON: true, Summary: "role changes with timestamps and reasons (vcluster N's and the node's)"},
	{Name: "synchronize", Summary: "force a full configuration sync now"},
	{Name: "checksum", JSON: true, Summary: "configuration checksums per member"},
	{Name: "exposure", JSON: true, Summary: "every socket and Ethertype the agent uses"},
	{Name: "sessions", Args: []string{"verify"}, Optional: true, JSON: true, Summary: "session pickup: bulk copies, counters, lag, errors; verify: compare this member's table with its primary's (exit 1 when they differ)"},
}

// AgentctlUsage is the text agentctl prints before its flags on a usage
// error.
func AgentctlUsage() string {
	var b strings.Builder
	b.WriteString("usage: agentctl [-s SOCKET] ha COMMAND\ncommands:\n")
	for _, c := range AgentctlCommands {
		fmt.Fprintf(&b, "  %-34s %s\n", strings.TrimSpace(c.Name+" "+c.Synopsis()), c.Summary)
	}
	return b.String()
}
