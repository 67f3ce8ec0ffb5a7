package kaimport

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hagent/hagent/config"
)

// q is s as a YAML scalar (quoted when it must be).
func q(s string) string {
	b, err := yaml.Marshal(s)
	if err != nil {
		return `""`
	}
	return strings.TrimSuffix(string(b), "\n")
}

// flow is items as a YAML flow sequence. An item of other than letters,
// digits and . _ / - is written as a JSON string (a valid YAML double-quoted
// scalar): a plain "::/128" is not an item in flow context (FuzzParse).
func flow(items []string) string {
	out := make([]string, len(items))
	for i, s := range items {
		out[i] = s
		if s == "" || strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-") != "" {
			b, _ := json.Marshal(s)
			out[i] = string(b)
		}
	}
	return "[" + strings.Join(out, ", ") + "]"
}

// clamp bounds d to lo-hi, noting a change.
func (c *converter) clamp(line int, what string, d, lo, hi time.Duration) time.Duration {
	if d < lo || d > hi {
		n := min(max(d, lo), hi)
		c.note(line, "%s %s is outside hagent's %s-%s: %s used", what, d, lo, hi, n)
		return n
	}
	return d
}

// vc is the instances that become one hagent vcluster.
type vc struct {
	insts []*instance
	ifs   []string
	addrs map[string][]string
}

func (v *vc) add(in *instance) {
	v.insts = append(v.insts, in)
	for _, ifn := range in.ifOrder {
		if _, ok := v.addrs[ifn]; !ok {
			v.ifs = append(v.ifs, ifn)
		}
		for _, p := range in.addrs[ifn] {
			if !slices.Contains(v.addrs[ifn], p) {
				v.addrs[ifn] = append(v.addrs[ifn], p)
			}
		}
	}
}

// split groups the instances: one vcluster, or two when the instances
// have exactly two priorities on disjoint interfaces (one node primary of
// each half: the keepalived active-active pair is hagent's vcluster2).
func (c *converter) split() []*vc {
	var prios []int
	for _, in := range c.insts {
		if !slices.Contains(prios, in.prio) {
			prios = append(prios, in.prio)
		}
	}
	one := &vc{addrs: map[string][]string{}}
	if len(prios) == 2 {
		hi, lo := &vc{addrs: map[string][]string{}}, &vc{addrs: map[string][]string{}}
		top := max(prios[0], prios[1])
		for _, in := range c.insts {
			if in.prio == top {
				hi.add(in)
			} else {
				lo.add(in)
			}
		}
		disjoint := len(hi.ifs) > 0 && len(lo.ifs) > 0
		for _, i := range hi.ifs {
			if slices.Contains(lo.ifs, i) {
				disjoint = false
			}
		}
		if disjoint {
			return []*vc{hi, lo}
		}
	}
	for _, in := range c.insts {
		one.add(in)
	}
	if len(prios) > 1 {
		c.note(c.insts[0].line, "instances with priorities %v merged into one cluster with priority %d: hagent's virtual MAC is per interface, so only instances on disjoint interfaces with two priorities become two vclusters", prios, c.insts[0].prio)
	}
	return []*vc{one}
}

func (c *converter) emit() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# hagent.yaml converted from keepalived.conf by `hagentd import keepalived`.\n")
	w("# Review it: every directive not translated is listed on standard error.\n")
	if len(c.insts) == 0 {
		w("# No vrrp_instance was found: nothing to convert.\n")
		return b.String()
	}
	vcs := c.split()
	first := vcs[0].insts[0]
	w("node:\n")
	if c.routerID != "" {
		w("  name: %s  # global_defs router_id\n", q(c.routerID))
	}
	pd := func(v *vc) (int, bool, time.Duration) {
		in := v.insts[0]
		for _, o := range v.insts[1:] {
			if o.preempt != in.preempt {
				c.note(o.line, "vrrp_instance %s: preempt differs from %s's; %s's is used", o.name, in.name, in.name)
			}
		}
		return in.prio, in.preempt, in.preemptDelay
	}
	prio, override, delay := pd(vcs[0])
	w("  priority: %d\n", prio)
	w("  override: %v  # keepalived %s\n", override, map[bool]string{true: "preempts (the default)", false: "nopreempt"}[override])
	if len(vcs) == 2 {
		p2, o2, d2 := pd(vcs[1])
		w("  vcluster2: {priority: %d, override: %v}\n", p2, o2)
		if d2 > 0 {
			w("  # vcluster 2: keepalived preempt_delay %s: hagent's override_wait_time (cluster:) applies to both vclusters\n", d2)
		}
	}

	w("cluster:\n")
	if delay > 0 && delay <= time.Hour {
		w("  override_wait_time: %s  # keepalived preempt_delay\n", fmtDur(delay))
	}
	if first.vrid > 0 {
		w("  group_id: %d  # virtual_router_id of %s\n", first.vrid, first.name)
	}
	w("  password_file: %s  # not keepalived's auth_pass: (umask 077; head -c 32 /dev/urandom | base64 > %s) on one member, copied to the others\n", KeyFile, KeyFile)

	// Heartbeats: keepalived's adverts went out on each instance's
	// interface; hagent's go on links that carry no cluster address, or
	// in unicast UDP.
	var data []string
	for _, v := range vcs {
		data = append(data, v.ifs...)
	}
	var src string
	var peers []string
	var hb []string
	advert := first.advert
	for _, in := range c.insts {
		if in.unicastSrc != "" && src == "" {
			src = in.unicastSrc
		}
		for _, p := range in.unicastPeers {
			if !slices.Contains(peers, p) && p != src {
				peers = append(peers, p)
			}
		}
		if in.iface != "" && !slices.Contains(data, in.iface) && !slices.Contains(hb, in.iface) {
			hb = append(hb, in.iface)
		}
		advert = min(advert, in.advert)
	}
	unicast := src != "" && len(peers) >= 1 && len(peers) <= 3
	if len(peers) > 0 && !unicast {
		c.note(first.line, "unicast_peer: needs unicast_src_ip and 1-3 peers to become unicast_hb (hagent clusters have at most 4 members)")
	}
	switch {
	case unicast:
		w("  unicast_hb:\n    enabled: true\n    peers: %s  # unicast_src_ip, then unicast_peer\n", flow(append([]string{src}, peers...)))
	case len(hb) > 0:
		w("  hbdev:\n")
		for _, h := range hb {
			w("    - name: %s  # carried keepalived's adverts\n", q(h))
		}
	default:
		w("  hbdev:\n    - name: ha1  # placeholder: keepalived sent its adverts on a data interface; give hagent a link of its own (or unicast_hb)\n")
		c.note(first.line, "heartbeat device: keepalived's adverts went out on a data interface; hagent needs another link: ha1 written as a placeholder")
	}
	w("  hb_interval: %s  # advert_int\n", fmtDur(c.clamp(first.line, "advert_int", advert, 10*time.Millisecond, 60*time.Second)))
	w("  hb_lost_threshold: 3  # as VRRP's master down interval, 3 adverts\n")

	section := func(indent string, v *vc) {
		if len(v.ifs) > 0 {
			w("%sinterfaces:\n", indent)
			for _, ifn := range v.ifs {
				w("%s  - name: %s\n%s    addresses: %s\n", indent, q(ifn), indent, flow(v.addrs[ifn]))
			}
		}
		var mon []string
		for _, in := range v.insts {
			for _, t := range in.track {
				if !slices.Contains(mon, t) {
					mon = append(mon, t)
				}
			}
		}
		if len(mon) > 0 {
			w("%smonitor: %s  # track_interface\n", indent, flow(mon))
		}
	}
	section("  ", vcs[0])

	refresh := c.gRefresh
	for _, in := range c.insts {
		if in.garpRefresh > 0 && (refresh == 0 || in.garpRefresh < refresh) {
			refresh = in.garpRefresh
		}
	}
	if refresh > 0 {
		w("  arps_refresh: %s  # garp_master_refresh\n", fmtDur(c.clamp(first.line, "garp_master_refresh", refresh, time.Second, time.Hour)))
	}
	delay = c.gDelay
	if first.garpDelay > 0 {
		delay = first.garpDelay
	}
	if delay > 0 {
		w("  arps_interval: %s  # garp_master_delay\n", fmtDur(c.clamp(first.line, "garp_master_delay", delay, time.Second, 20*time.Second)))
	}

	hooks := map[string]string{}
	for _, in := range c.insts {
		for role, cmd := range in.notify {
			if old, ok := hooks[role]; ok && old != cmd {
				c.note(in.notifyLine[role], "vrrp_instance %s: another notify command for %s; hagent has one hook per role, the first is used", in.name, role)
				continue
			}
			hooks[role] = cmd
		}
	}
	for _, g := range c.groups {
		for _, k := range g.Children {
			if role, ok := roleOf[k.Name]; ok {
				if _, have := hooks[role]; !have && len(k.Args) > 0 {
					hooks[role] = strings.Join(k.Args, " ")
					c.note(k.Line, "%s of vrrp_sync_group -> hooks.%s", k.Name, role)
				} else {
					c.note(k.Line, "%s of vrrp_sync_group: an instance's is used", k.Name)
				}
			}
		}
	}
	if len(hooks) > 0 {
		w("  hooks:  # notify_master, notify_backup, notify_fault (run with /bin/sh -c)\n")
		for _, role := range []string{"primary", "secondary", "fault"} {
			if cmd, ok := hooks[role]; ok {
				w("    %s: %s\n", role, q(cmd))
			}
		}
	}
	if len(vcs) == 2 {
		w("  vcluster2:  # the instances of the lower priority (%s)\n    enabled: true\n", names(vcs[1]))
		section("    ", vcs[1])
	}
	c.emitChecks(w)
	return b.String()
}

func names(v *vc) string {
	var out []string
	for _, in := range v.insts {
		out = append(out, in.name)
	}
	return strings.Join(out, ", ")
}

// emitChecks writes the vrrp_scripts the instances track as
// cluster.checks items (keepalived execs a script's words without a shell,
// as a check does). A script a check cannot express (its name, command or
// timings out of a check's ranges) is written commented, with a note.
func (c *converter) emitChecks(w func(string, ...any)) {
	var used []string
	for _, in := range c.insts {
		for _, n := range in.scripts {
			if _, ok := c.scripts[n]; !ok {
				c.note(in.line, "track_script %s: no vrrp_script of that name", n)
				continue
			}
			if !slices.Contains(used, n) {
				used = append(used, n)
			}
		}
	}
	for _, n := range c.sorder {
		if !slices.Contains(used, n) {
			c.note(c.scripts[n].line, "vrrp_script %s: tracked by no instance", n)
		}
	}
	var ok, bad []string
	for _, n := range used {
		if why := checkable(c.scripts[n]); why != "" {
			c.note(c.scripts[n].line, "vrrp_script %s: written commented: %s", n, why)
			bad = append(bad, n)
			continue
		}
		ok = append(ok, n)
	}
	item := func(prefix, n string) {
		s := c.scripts[n]
		w("%s  - name: %s\n", prefix, q(n))
		w("%s    command: %s\n", prefix, q(s.command))
		w("%s    interval: %s\n", prefix, fmtDur(s.interval))
		if s.timeout > 0 {
			w("%s    timeout: %s\n", prefix, fmtDur(s.timeout))
		}
		w("%s    fall: %d\n%s    rise: %d\n", prefix, max(s.fall, 1), prefix, max(s.rise, 1))
	}
	if len(ok) > 0 {
		w("  checks:  # track_script/vrrp_script: a failed check fails this member, as a failed monitored link\n")
		for _, n := range ok {
			item("  ", n)
		}
	}
	if len(bad) > 0 {
		w("# vrrp_scripts a check cannot express as they are (see the notes); fix, then move under checks:\n")
		for _, n := range bad {
			item("#", n)
		}
	}
}

// checkable says why script s cannot be a cluster.checks item as it is,
// or "" when it can: a name of 1-32 of A-Z a-z 0-9 . _ -, a command that
// splits into words, and timings within a check's ranges.
func checkable(s *script) string {
	if msg := config.CheckNameProblem(s.name); msg != "" {
		return msg
	}
	switch {
	case strings.TrimSpace(s.command) == "":
		return "it has no script"
	case s.interval < 100*time.Millisecond || s.interval > time.Hour:
		return "its interval is outside 100ms-1h"
	case s.timeout != 0 && (s.timeout < 10*time.Millisecond || s.timeout > time.Minute):
		return "its timeout is outside 10ms-1m"
	case s.fall > 100 || s.rise > 100:
		return "its fall or rise is above 100"
	}
	if _, err := config.SplitCommand(s.command); err != nil {
		return err.Error()
	}
	return ""
}

// fmtDur writes d as Go does (1s, 200ms, 1m30s), which hagent.yaml reads.
func fmtDur(d time.Duration) string { return d.String() }
