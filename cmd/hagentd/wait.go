package main

import (
	"net"
	"os"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// waitInterfaces returns once every named interface exists, logging which
// are missing (once, then every minute). It returns false when SIGTERM or
// SIGINT arrives first.
func waitInterfaces(log hclog.Logger, names []string, sigs <-chan os.Signal) bool {
	missing := func() []string {
		var out []string
		for _, n := range names {
			if _, err := net.InterfaceByName(n); err != nil {
				out = append(out, n)
			}
		}
		return out
	}
	m := missing()
	if len(m) == 0 {
		return true
	}
	log.Warn("waiting for interfaces", "missing", m)
	lastLog := time.Now()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP {
				continue
			}
			log.Info("signal received while waiting for interfaces, stopping", "signal", s.String())
			return false
		case <-t.C:
		}
		if m = missing(); len(m) == 0 {
			log.Info("all interfaces present")
			return true
		}
		if time.Since(lastLog) > time.Minute {
			log.Warn("still waiting for interfaces", "missing", m)
			lastLog = time.Now()
		}
	}
}
