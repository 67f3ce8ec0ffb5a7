package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Health check bounds and defaults (cluster.checks).
const (
	// MaxChecks is the number of health checks accepted.
	MaxChecks = 16
	// DefaultCheckInterval, DefaultCheckTimeout, DefaultCheckFall and
	// DefaultCheckRise are a check's interval, timeout, fall and rise
	// when they are not set.
	DefaultCheckInterval = 2 * time.Second
	DefaultCheckTimeout  = time.Second
	DefaultCheckFall     = 3
	DefaultCheckRise     = 2
	// DefaultMemoryThreshold is memory.threshold when memory is given
	// without one, in percent of MemTotal in use.
	DefaultMemoryThreshold = 90
)

// Check is one health check (cluster.checks[]): a command, the memory in
// use or a systemd unit's state, run every Interval. A check that failed
// Fall times in a row counts as a failed monitored link in every
// vcluster's election until it has passed Rise times in a row.
type Check struct {
	// Name names the check in status, history, metrics and hooks (name).
	Name string
	// Command is run without a shell, split into words (command); Shell
	// runs it with /bin/sh -c instead (shell).
	Command string
	Shell   bool
	// Memory makes this the memory check (memory): it fails while more
	// than MemoryThreshold percent of MemTotal is in use (memory.threshold).
	Memory          bool
	MemoryThreshold int
	// Systemd, when set, makes this the systemd check: it passes while
	// `systemctl is-active UNIT` does (systemd).
	Systemd string
	// Interval, Timeout, Fall and Rise: see the Keys table.
	Interval, Timeout time.Duration
	Fall, Rise        int
}

// Kind is "command", "memory" or "systemd".
func (c *Check) Kind() string {
	switch {
	case c.Memory:
		return "memory"
	case c.Systemd != "":
		return "systemd"
	}
	return "command"
}

// SplitCommand splits a check's command into words, without a shell:
// blanks separate words, '…' and "…" quote (no expansion of any kind), a
// backslash outside single quotes takes the next byte as it is.
func SplitCommand(s string) ([]string, error) {
	var out []string
	var w strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == '\'' && c != '\'':
			w.WriteByte(c)
		case c == '\\' && quote != '\'':
			if i+1 == len(s) {
				return nil, fmt.Errorf("the command ends with a backslash")
			}
			i++
			w.WriteByte(s[i])
			in = true
		case quote != 0 && c == quote:
			quote = 0
		case quote == 0 && (c == '\'' || c == '"'):
			quote, in = c, true
		case quote == 0 && (c == ' ' || c == '\t' || c == '\n'):
			if in {
				out = append(out, w.String())
				w.Reset()
				in = false
			}
		default:
			w.WriteByte(c)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unbalanced %c quote in the command", quote)
	}
	if in {
		out = append(out, w.String())
	}
	return out, nil
}

// checks decodes cluster.checks.
func (d *decoder) checks(path string, n *yaml.Node, out *[]Check) {
	*out = nil
	d.seq(path, n, MaxChecks, "checks", func(p string, v *yaml.Node) {
		c := Check{Interval: DefaultCheckInterval, Timeout: DefaultCheckTimeout, Fall: DefaultCheckFall, Rise: DefaultCheckRise}
		d.mapping(p, v, map[string]field{
			"name":     func(p string, v *yaml.Node) { d.str(p, v, &c.Name) },
			"command":  func(p string, v *yaml.Node) { d.str(p, v, &c.Command) },
			"shell":    func(p string, v *yaml.Node) { d.boolean(p, v, &c.Shell) },
			"systemd":  func(p string, v *yaml.Node) { d.str(p, v, &c.Systemd) },
			"interval": func(p string, v *yaml.Node) { d.duration(p, v, &c.Interval) },
			"timeout":  func(p string, v *yaml.Node) { d.duration(p, v, &c.Timeout) },
			"fall":     func(p string, v *yaml.Node) { d.integer(p, v, &c.Fall) },
			"rise":     func(p string, v *yaml.Node) { d.integer(p, v, &c.Rise) },
			"memory": func(p string, v *yaml.Node) {
				c.Memory, c.MemoryThreshold = true, DefaultMemoryThreshold
				d.mapping(p, v, map[string]field{
					"threshold": func(p string, v *yaml.Node) { d.percent(p, v, &c.MemoryThreshold) },
				})
			},
		})
		*out = append(*out, c)
	})
}

// percent decodes 90 or "90%".
func (d *decoder) percent(path string, n *yaml.Node, out *int) {
	var s string
	d.str(path, n, &s)
	if d.bad[path] {
		return
	}
	v, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(s), "%"))
	if err != nil {
		d.typeErr(path, n, "a percentage such as 90%")
		return
	}
	*out = v
}

// CheckNameProblem says what is wrong with name as a health check's name,
// or "" when it is one: 1-32 bytes of A-Z a-z 0-9 . _ -.
func CheckNameProblem(name string) string {
	switch {
	case name == "" || len(name) > 32:
		return "a check name is 1-32 bytes"
	case strings.ContainsFunc(name, func(r rune) bool {
		return !(r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}):
		return "a check name is made of A-Z a-z 0-9 . _ -"
	}
	return ""
}

// validateChecks validates cluster.checks (k: the cluster key prefixer).
func (d *decoder) validateChecks(k func(string) string, list []Check) {
	names := map[string]int{}
	for i, c := range list {
		p := indexKey(k("checks"), i)
		if msg := CheckNameProblem(c.Name); msg != "" {
			d.errorf(p+".name", "%q: %s", c.Name, msg)
		}
		if first, dup := names[c.Name]; dup && c.Name != "" {
			d.errorf(p+".name", "%s is already checks[%d]", c.Name, first)
		} else {
			names[c.Name] = i
		}
		kinds := 0
		if c.Command != "" {
			kinds++
		}
		if c.Memory {
			kinds++
		}
		if c.Systemd != "" {
			kinds++
		}
		if kinds != 1 {
			d.errorf(p+".command", "a check has exactly one of command, memory and systemd")
		}
		if c.Command != "" {
			if msg := checkCommand(c.Command, false); msg != "" {
				d.errorf(p+".command", "%s", msg)
			} else if !c.Shell {
				if _, err := SplitCommand(c.Command); err != nil {
					d.errorf(p+".command", "%v", err)
				}
			}
		}
		if c.Shell && c.Command == "" {
			d.errorf(p+".shell", "shell applies to command only")
		}
		if c.Systemd != "" && (strings.ContainsAny(c.Systemd, " \t\n\x00/") || strings.HasPrefix(c.Systemd, "-") || len(c.Systemd) > 256) {
			d.errorf(p+".systemd", "%q is not a unit name", c.Systemd)
		}
		if c.Memory {
			d.intRange(p+".memory.threshold", c.MemoryThreshold, 1, 99)
		}
		d.durRange(p+".interval", c.Interval, 100*time.Millisecond, time.Hour)
		d.durRange(p+".timeout", c.Timeout, 10*time.Millisecond, time.Minute)
		d.intRange(p+".fall", c.Fall, 1, 100)
		d.intRange(p+".rise", c.Rise, 1, 100)
	}
}

// checksNode is the checks sequence, nil when there is none (so that the
// canonical bytes, and the checksum, of a section without checks are
// those of the releases before them).
func checksNode(list []Check) *yaml.Node {
	if len(list) == 0 {
		return nil
	}
	n := seqNode(false)
	for _, c := range list {
		m := mapNode(false, "name", strNode(c.Name))
		add := func(k string, v *yaml.Node) { m.Content = append(m.Content, strNode(k), v) }
		switch c.Kind() {
		case "memory":
			add("memory", mapNode(false, "threshold", intNode(c.MemoryThreshold)))
		case "systemd":
			add("systemd", strNode(c.Systemd))
		default:
			add("command", strNode(c.Command))
			add("shell", boolNode(c.Shell))
		}
		add("interval", durNode(c.Interval))
		add("timeout", durNode(c.Timeout))
		add("fall", intNode(c.Fall))
		add("rise", intNode(c.Rise))
		n.Content = append(n.Content, m)
	}
	return n
}
