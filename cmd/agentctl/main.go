// Command agentctl is the operator CLI of hagentd: `agentctl ha status`,
// `ha failover set|unset|status`, `ha history`, `ha synchronize`,
// `ha checksum`, `ha exposure`, `ha sessions [verify]`. It talks to the agent's unix socket.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/internal/cli"
	"github.com/hagent/hagent/sessionsync"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agentctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	flags := cli.AgentctlFlags(fs, os.Getenv)
	sock, timeout := &flags.Socket, &flags.Timeout
	fs.Usage = func() { fmt.Fprint(stderr, cli.AgentctlUsage()); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if flags.Version {
		fmt.Fprintln(stdout, "agentctl", cli.Version)
		return 0
	}
	rest := fs.Args()
	if len(rest) < 2 || rest[0] != "ha" {
		fs.Usage()
		return 2
	}
	cmd, opts := rest[1], rest[2:]
	asJSON := false
	vcn := 0 // --vcluster N (ha failover, ha history)
	var extra []string
	for i := 0; i < len(opts); i++ {
		switch o := opts[i]; {
		case o == "--json" || o == "-json":
			asJSON = true
		case o == "--vcluster" || o == "-vcluster" || strings.HasPrefix(o, "--vcluster=") || strings.HasPrefix(o, "-vcluster="):
			v, ok := strings.CutPrefix(strings.TrimLeft(o, "-"), "vcluster=")
			if !ok {
				if i+1 >= len(opts) {
					fmt.Fprintln(stderr, "agentctl: --vcluster needs 1 or 2")
					return 2
				}
				i++
				v = opts[i]
			}
			n, err := strconv.Atoi(v)
			if err != nil || (n != 1 && n != 2) {
				fmt.Fprintf(stderr, "agentctl: --vcluster %s: want 1 or 2\n", v)
				return 2
			}
			vcn = n
		default:
			extra = append(extra, o)
		}
	}
	call := func(c string, out any) bool {
		if err := control.Do(*sock, control.Request{Cmd: c, VCluster: vcn}, out, *timeout); err != nil {
			fmt.Fprintf(stderr, "agentctl: %v\n", err)
			if errors.Is(err, control.ErrNotRunning) {
				fmt.Fprintf(stderr, "agentctl: is hagentd running? (systemctl status hagent; or pass -s SOCKET)\n")
			}
			return false
		}
		return true
	}
	printJSON := func(v any) int {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			fmt.Fprintf(stderr, "agentctl: %v\n", err)
			return 1
		}
		return 0
	}
	switch cmd {
	case "status":
		var st control.Status
		if !call(control.CmdStatus, &st) {
			return 1
		}
		if asJSON {
			return printJSON(&st)
		}
		control.FormatStatus(stdout, &st, time.Now())
	case "failover":
		if len(extra) != 1 {
			fmt.Fprintln(stderr, "agentctl: ha failover set|unset|status [--vcluster N]")
			return 2
		}
		c := map[string]string{"set": control.CmdFailoverSet, "unset": control.CmdFailoverUnset, "status": control.CmdFailoverStatus}[extra[0]]
		if c == "" {
			fmt.Fprintf(stderr, "agentctl: ha failover %s: want set, unset or status\n", extra[0])
			return 2
		}
		var fs control.FailoverStatus
		if !call(c, &fs) {
			return 1
		}
		if asJSON {
			return printJSON(&fs)
		}
		state := "unset"
		if fs.Set {
			state = "set"
		}
		if fs.VCluster != 0 && vcn != 0 {
			fmt.Fprintf(stdout, "ha failover: %s (vcluster %d, role %s)\n", state, fs.VCluster, fs.Role)
		} else {
			fmt.Fprintf(stdout, "ha failover: %s (role %s)\n", state, fs.Role)
		}
	case "history":
		var h []control.Event
		if !call(control.CmdHistory, &h) {
			return 1
		}
		if vcn != 0 { // that vcluster's entries and the node's shared ones
			h = slices.DeleteFunc(h, func(e control.Event) bool { return e.VCluster != 0 && e.VCluster != vcn })
		}
		if asJSON {
			return printJSON(h)
		}
		control.FormatHistory(stdout, h)
	case "synchronize":
		var msg string
		if !call(control.CmdSynchronize, &msg) {
			return 1
		}
		fmt.Fprintln(stdout, msg)
	case "checksum":
		var c control.Checksums
		if !call(control.CmdChecksum, &c) {
			return 1
		}
		if asJSON {
			return printJSON(&c)
		}
		control.FormatChecksums(stdout, &c)
	case "sessions":
		if len(extra) == 1 && extra[0] == "verify" {
			var rs []sessionsync.VerifyResult
			if !call(control.CmdSessionsVerify, &rs) {
				return 1
			}
			if asJSON {
				return printJSON(rs)
			}
			control.FormatVerify(stdout, rs, 0)
			for i := range rs {
				if !rs[i].InSync() {
					return 1
				}
			}
			return 0
		}
		if len(extra) != 0 {
			fmt.Fprintln(stderr, "agentctl: ha sessions [verify] [--json]")
			return 2
		}
		var s sessionsync.Status
		if !call(control.CmdSessions, &s) {
			return 1
		}
		if asJSON {
			return printJSON(&s)
		}
		control.FormatSessions(stdout, &s)
	case "exposure":
		var e control.Exposure
		if !call(control.CmdExposure, &e) {
			return 1
		}
		if asJSON {
			return printJSON(&e)
		}
		control.FormatExposure(stdout, &e)
	default:
		fmt.Fprintf(stderr, "agentctl: unknown command ha %s\n", cmd)
		fs.Usage()
		return 2
	}
	return 0
}
