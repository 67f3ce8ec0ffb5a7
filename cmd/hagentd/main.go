// Command hagentd is the hagent cluster agent: `hagentd -c FILE` runs in the
// foreground; `hagentd -c FILE --check` validates the configuration.
//
// Exit codes: 0 ok (also after a graceful stop), 1 runtime failure
// (including "another hagentd (pid N) is running": a second hagentd, or a
// --release, beside a running one changes nothing and exits 1), 2 bad
// usage or bad configuration (the message names file, line and key).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hagent/hagent/agent"
	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/internal/cli"
	"github.com/hagent/hagent/internal/kaimport"
)

// clockOffset shifts the agent's clock by a duration ("-1h"). It is empty
// in every shipped build; only the netns lab's test builds set it, with
// go build -ldflags "-X main.clockOffset=-1h", to start a node whose clock
// is wrong the way an appliance without RTC battery is. No flag, file or
// environment variable can set it.
var clockOffset string

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "import" {
		return kaimport.Command(args[1:], os.Stdin, stdout, stderr)
	}
	fs := flag.NewFlagSet("hagentd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	flags := cli.HagentdFlags(fs)
	path := &flags.Config
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "hagentd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if flags.Version {
		fmt.Fprintln(stdout, "hagentd", cli.Version)
		return 0
	}
	// LoadLocal: also refuse sync paths that cover this node's own files
	// (the configuration, the key, the state and run directories), for
	// --check and for a running daemon alike (TestCheck).
	local := config.Local{StateDir: flags.StateDir, RunDir: flags.RunDir}
	load := func() (*config.Config, error) { return config.LoadLocal(*path, local) }
	if flags.Release {
		// --release (the unit's ExecStopPost, after any exit) needs only
		// the interfaces: a key file made loose while the agent ran must
		// not leave its vMACs behind (TestReleaseIgnoresKey).
		load = func() (*config.Config, error) { return parseOnly(*path) }
	}
	cfg, err := load()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if flags.Check {
		fmt.Fprintln(stdout, "ok")
		printTrustNotes(stdout, &cfg.Cluster)
		if cfg.Node.Serial == config.DerivedSerial() {
			fmt.Fprintf(stdout, "note: node.serial is not set; the serial %s comes from /etc/machine-id (or the hostname).\n"+
				"      VMs cloned from one template share it, and two members with one serial split the cluster:\n"+
				"      set node.serial on each node, or give each clone its own machine id\n"+
				"      (rm /etc/machine-id && systemd-machine-id-setup).\n", cfg.Node.Serial)
		}
		for _, p := range cfg.Cluster.Sync.Paths {
			if p != "/etc" && !strings.HasPrefix(p, "/etc/") {
				fmt.Fprintf(stdout, "note: sync path %s is outside /etc: the shipped systemd unit keeps it read-only;\n"+
					"      add it with a drop-in (systemctl edit hagent): [Service] ReadWritePaths=%s\n", p, p)
			}
		}
		return 0
	}

	log := hclog.New(&hclog.LoggerOptions{
		Name: "hagentd", Output: stderr, Level: hclog.LevelFromString(cfg.LogLevel),
		JSONFormat: cfg.LogFormat == "json", TimeFormat: "2006-01-02T15:04:05.000Z07:00",
	})
	// One agent per run directory, before anything is touched: a second
	// hagentd, or a --release by hand, beside a running one would restore
	// the permanent MACs and remove the cluster addresses of a live
	// primary before it found the control socket taken. The lock is held
	// until this process ends (the deferred Close keeps the file open).
	if flags.RunDir == "" {
		flags.RunDir = agent.DefaultRunDir // what agent.New and Release use for ""
	}
	lock, err := lockRunDir(flags.RunDir)
	if err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	defer lock.Close()
	// The same configuration with another run directory: its control
	// socket answers.
	if pid, ok := socketHolder(cfg.ControlSocket); ok {
		log.Error("cannot start", "error", &runningError{pid: pid, what: "the control socket " + cfg.ControlSocket})
		return 1
	}
	if flags.Release {
		if err := agent.Release(cfg, flags.RunDir, log); err != nil {
			log.Error("release", "error", err)
			return 1
		}
		return 0
	}
	// The heartbeat path allocates nothing per frame; keep the heap small
	// and the collector rare for a daemon with a tiny live set.
	debug.SetGCPercent(400)
	debug.SetMemoryLimit(64 << 20)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	// Interfaces may appear after the agent (udev renames, late drivers):
	// wait for them, saying which, instead of failing the boot.
	if !waitInterfaces(log, agent.RequiredInterfaces(cfg), sigs) {
		return 0
	}
	opts := agent.Options{Config: cfg, Logger: log, StateDir: flags.StateDir, RunDir: flags.RunDir, Version: cli.Version}
	if clockOffset != "" {
		d, err := time.ParseDuration(clockOffset)
		if err != nil {
			fmt.Fprintln(stderr, "hagentd: bad clock offset of this build:", err)
			return 1
		}
		log.Warn("test build: the clock runs off by "+d.String(), "offset", d)
		opts.Now = func() time.Time { return time.Now().Add(d) }
	}
	a, err := agent.New(opts)
	if err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	srv, err := control.Listen(cfg.ControlSocket, a.Handle)
	if err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	go srv.Serve()
	defer srv.Close()

	if cfg.Node.Realtime {
		if err := agent.Realtime(50); err != nil {
			log.Warn("node.realtime: could not enable realtime scheduling", "error", err)
		} else {
			log.Info("realtime scheduling enabled (SCHED_FIFO 50, memory locked)")
		}
	}

	go func() {
		for s := range sigs {
			if s == syscall.SIGHUP {
				nc, err := config.LoadLocal(*path, local)
				if err != nil {
					log.Error("reload refused: the configuration is invalid; keeping the running one", "error", err)
					continue
				}
				if _, err := a.Reload(ctx, nc); err != nil {
					log.Error("reload failed", "error", err)
				}
				continue
			}
			log.Info("signal received, stopping", "signal", s.String())
			stop()
		}
	}()
	notifySystemd("READY=1")
	// Start-up garbage (package initialisation, config parsing, socket
	// setup) would sit in the heap until the next collection, which with
	// GC percent 400 and a tiny live set can be a long way off: hand it
	// back to the OS now.
	debug.FreeOSMemory()
	if err := a.Run(ctx); err != nil {
		log.Error("failed", "error", err)
		return 1
	}
	notifySystemd("STOPPING=1")
	return 0
}

// printTrustNotes prints what a weak setup means: heartbeats without
// authentication, and what the key is worth when a channel uses it.
func printTrustNotes(w io.Writer, c *config.Cluster) {
	if !c.Auth {
		note(w, config.NoAuthNote)
	}
	if c.PasswordFile != "" && (c.Sync.Enabled || c.SessionPickup.Enabled) {
		note(w, config.KeyNote)
	}
}

// note prints msg as a "note:" wrapped at about 100 columns.
func note(w io.Writer, msg string) {
	prefix, line := "note: ", ""
	for _, word := range strings.Fields(msg) {
		if line != "" && len(prefix)+len(line)+1+len(word) > 100 {
			fmt.Fprintln(w, prefix+line)
			prefix, line = "      ", ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	fmt.Fprintln(w, prefix+line)
}

// parseOnly reads and validates the configuration at path without looking
// at the key file or the node's directories.
func parseOnly(path string) (*config.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return config.Parse(path, data)
}
