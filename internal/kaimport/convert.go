package kaimport

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Note is a directive that was not translated (or only in part), with the
// line of keepalived.conf it is on.
type Note struct {
	Line int
	Msg  string
}

func (n Note) String() string { return fmt.Sprintf("line %d: %s", n.Line, n.Msg) }

// Result is the conversion of one keepalived.conf.
type Result struct {
	// YAML is the hagent.yaml text.
	YAML string
	// Notes list, in line order, every directive not translated.
	Notes []Note
}

// KeyFile is the password_file the output names: keepalived's auth_pass
// (8 characters at most, sent in clear) is never reused as hagent's key.
const KeyFile = "/etc/hagent/key"

// instance is what a vrrp_instance says that hagent can use.
type instance struct {
	name, iface  string
	line         int
	prio         int
	preempt      bool
	preemptDelay time.Duration
	advert       time.Duration
	vrid         int
	addrs        map[string][]string // interface → prefixes, in order
	ifOrder      []string
	unicastSrc   string
	unicastPeers []string
	track        []string
	notify       map[string]string // primary, secondary, fault
	notifyLine   map[string]int
	garpRefresh  time.Duration
	garpDelay    time.Duration
	scripts      []string
}

// script is a vrrp_script.
type script struct {
	name, command     string
	line              int
	interval, timeout time.Duration
	fall, rise        int
}

type converter struct {
	notes    []Note
	insts    []*instance
	scripts  map[string]*script
	sorder   []string
	routerID string
	gRefresh time.Duration
	gDelay   time.Duration
	groups   []*Stmt
}

func (c *converter) note(line int, format string, args ...any) {
	c.notes = append(c.notes, Note{Line: line, Msg: fmt.Sprintf(format, args...)})
}

// skip notes s and, for a block, that its contents were skipped with it.
func (c *converter) skip(s *Stmt, why string) {
	c.note(s.Line, "%s: %s", display(s), why)
}

func display(s *Stmt) string {
	if s.Name == "" {
		return "{ block"
	}
	return s.Name
}

// Convert parses a keepalived.conf and converts its VRRP part. A file
// that is not UTF-8 is refused, naming the first line that is not: what
// it would carry (a command, a name) cannot be written into an
// hagent.yaml as it is (FuzzParse found a notify command whose bytes
// came out as a YAML !!binary block that broke the output).
func Convert(src string) (*Result, error) {
	if !utf8.ValidString(src) {
		for i, l := range strings.Split(src, "\n") {
			if !utf8.ValidString(l) {
				return nil, fmt.Errorf("line %d: not valid UTF-8", i+1)
			}
		}
	}
	stmts, err := Parse(src)
	if err != nil {
		return nil, err
	}
	c := &converter{scripts: map[string]*script{}}
	for _, s := range stmts {
		c.top(s)
	}
	if len(c.insts) == 0 {
		c.note(0, "no vrrp_instance: nothing to convert")
	}
	y := c.emit()
	sort.SliceStable(c.notes, func(i, j int) bool { return c.notes[i].Line < c.notes[j].Line })
	return &Result{YAML: y, Notes: c.notes}, nil
}

func (c *converter) top(s *Stmt) {
	switch s.Name {
	case "global_defs":
		for _, k := range s.Children {
			switch k.Name {
			case "router_id":
				if len(k.Args) == 1 && printable(k.Args[0], 64) {
					c.routerID = k.Args[0]
				} else {
					c.skip(k, "not a node name hagent accepts")
				}
			case "vrrp_garp_master_refresh":
				c.gRefresh = c.seconds(k, 0)
			case "vrrp_garp_master_delay":
				c.gDelay = c.seconds(k, 0)
			default:
				c.skip(k, "global setting not translated")
			}
		}
	case "vrrp_instance":
		c.instance(s)
	case "vrrp_script":
		c.script(s)
	case "vrrp_sync_group":
		c.groups = append(c.groups, s)
		c.syncGroup(s)
	case "include":
		c.skip(s, "not followed: convert the included file too ("+strings.Join(s.Args, " ")+")")
	case "virtual_server", "virtual_server_group", "real_server":
		c.skip(s, "LVS load balancing is out of scope (hagent does not configure IPVS)")
	case "static_ipaddress", "static_routes", "static_rules":
		c.skip(s, "static addresses, routes and rules are not hagent's: keep them in the system's network configuration")
	default:
		c.other(s)
	}
}

// other notes a directive the converter does not know; a conditional line
// (@ID, keepalived -i ID) or a parameter definition ($NAME) is named as
// such: which value applies depends on how keepalived was started.
func (c *converter) other(s *Stmt) {
	if strings.HasPrefix(s.Name, "@") || strings.HasPrefix(s.Name, "$") {
		c.skip(s, "conditional or parameter line not evaluated: write this node's value by hand ("+strings.Join(s.Args, " ")+")")
		return
	}
	c.skip(s, "not translated")
}

// seconds reads k's one argument as keepalived seconds (decimals allowed);
// def on error, with a note.
func (c *converter) seconds(k *Stmt, def time.Duration) time.Duration {
	if len(k.Args) >= 1 {
		if f, err := strconv.ParseFloat(k.Args[0], 64); err == nil && f >= 0 && f <= 86400 {
			return time.Duration(f * float64(time.Second)).Round(time.Millisecond)
		}
	}
	c.skip(k, "expected a number of seconds")
	return def
}

func (c *converter) integer(k *Stmt, lo, hi int) (int, bool) {
	if len(k.Args) >= 1 {
		if n, err := strconv.Atoi(k.Args[0]); err == nil && n >= lo && n <= hi {
			return n, true
		}
	}
	c.skip(k, fmt.Sprintf("expected an integer %d-%d", lo, hi))
	return 0, false
}

func (c *converter) instance(s *Stmt) {
	in := &instance{line: s.Line, prio: 100, preempt: true, advert: time.Second,
		addrs: map[string][]string{}, notify: map[string]string{}, notifyLine: map[string]int{}}
	if len(s.Args) > 0 {
		in.name = s.Args[0]
	}
	for _, k := range s.Children {
		if k.Name == "interface" && len(k.Args) == 1 {
			in.iface = k.Args[0]
		}
	}
	for _, k := range s.Children {
		switch k.Name {
		case "interface":
			if len(k.Args) != 1 || !validName(k.Args[0]) {
				c.skip(k, "expected one interface name")
				in.iface = ""
			}
		case "priority":
			if n, ok := c.integer(k, 1, 255); ok {
				in.prio = n
			}
		case "nopreempt":
			in.preempt = false
		case "preempt":
			in.preempt = true
		case "preempt_delay":
			in.preemptDelay = c.seconds(k, 0)
			if in.preemptDelay > time.Hour {
				c.note(k.Line, "preempt_delay %s: above override_wait_time's 1h: not translated", in.preemptDelay)
				in.preemptDelay = 0
			}
		case "advert_int":
			in.advert = c.seconds(k, time.Second)
		case "virtual_router_id":
			if n, ok := c.integer(k, 1, 255); ok {
				in.vrid = n
			}
		case "virtual_ipaddress", "virtual_ipaddress_excluded":
			for _, a := range k.Children {
				c.address(in, a)
			}
		case "unicast_src_ip":
			if len(k.Args) == 1 && validAddr(k.Args[0]) {
				in.unicastSrc = k.Args[0]
			} else {
				c.skip(k, "expected one unicast address")
			}
		case "unicast_peer":
			for _, a := range k.Children {
				if validAddr(a.Name) {
					in.unicastPeers = append(in.unicastPeers, a.Name)
					if len(a.Args) > 0 {
						c.note(a.Line, "unicast_peer %s: %s not translated", a.Name, strings.Join(a.Args, " "))
					}
				} else {
					c.skip(a, "not a unicast peer address")
				}
			}
		case "track_interface":
			for _, t := range k.Children {
				if !validName(t.Name) {
					c.skip(t, "not an interface name")
					continue
				}
				in.track = append(in.track, t.Name)
				if len(t.Args) > 0 {
					c.note(t.Line, "track_interface %s %s: hagent has no weights; a monitored link that fails ranks the node below every member with more links up", t.Name, strings.Join(t.Args, " "))
				}
			}
		case "track_script":
			for _, t := range k.Children {
				in.scripts = append(in.scripts, t.Name)
				if len(t.Args) > 0 {
					c.note(t.Line, "track_script %s %s: weight not translated", t.Name, strings.Join(t.Args, " "))
				}
			}
		case "notify_master", "notify_backup", "notify_fault":
			c.notify(in.notify, in.notifyLine, k)
		case "garp_master_refresh":
			in.garpRefresh = c.seconds(k, 0)
		case "garp_master_delay":
			in.garpDelay = c.seconds(k, 0)
		case "authentication":
			c.note(k.Line, "authentication: not reused; hagent authenticates with the key in %s (at least 16 bytes, the same on every member)", KeyFile)
		case "state":
			c.note(k.Line, "state %s: not needed; hagent elects by priority (and uptime unless override)", strings.Join(k.Args, " "))
		case "use_vmac", "vmac_xmit_base":
			c.note(k.Line, "%s: not needed; hagent always moves a virtual MAC with the addresses", k.Name)
		default:
			c.other(k)
		}
	}
	if in.iface == "" {
		c.note(s.Line, "vrrp_instance %s has no interface: its addresses need dev", in.name)
	}
	c.insts = append(c.insts, in)
}

var roleOf = map[string]string{"notify_master": "primary", "notify_backup": "secondary", "notify_fault": "fault"}

func (c *converter) notify(dst map[string]string, lines map[string]int, k *Stmt) {
	role := roleOf[k.Name]
	cmd := strings.Join(k.Args, " ")
	if cmd == "" || strings.ContainsAny(cmd, "\x00\n") {
		c.skip(k, "expected a command")
		return
	}
	dst[role], lines[role] = cmd, k.Line
	c.note(k.Line, "%s -> hooks.%s: keepalived passed the type, name and state as arguments; hagent passes HAGENT_ROLE and the other HAGENT_ variables instead", k.Name, role)
}

// address reads one virtual_ipaddress line: ADDR[/LEN] [dev IF] [label
// L] [brd B] [scope S]...
func (c *converter) address(in *instance, a *Stmt) {
	p, err := prefixOf(a.Name)
	if err != nil {
		c.skip(a, err.Error())
		return
	}
	dev := in.iface
	var rest []string
	for i := 0; i < len(a.Args); i++ {
		switch a.Args[i] {
		case "dev":
			if i+1 < len(a.Args) && validName(a.Args[i+1]) {
				dev = a.Args[i+1]
				i++
				continue
			}
		case "label", "brd", "broadcast", "scope":
			if i+1 < len(a.Args) {
				rest = append(rest, a.Args[i]+" "+a.Args[i+1])
				i++
				continue
			}
		}
		rest = append(rest, a.Args[i])
	}
	if len(rest) > 0 {
		c.note(a.Line, "%s: %s not translated", a.Name, strings.Join(rest, " "))
	}
	if dev == "" {
		c.note(a.Line, "%s: no dev and no instance interface: left out", a.Name)
		return
	}
	if _, ok := in.addrs[dev]; !ok {
		in.ifOrder = append(in.ifOrder, dev)
	}
	if !slices.Contains(in.addrs[dev], p) {
		in.addrs[dev] = append(in.addrs[dev], p)
	}
}

// prefixOf returns s as a prefix; a bare address gets keepalived's
// default length (/32, /128).
func prefixOf(s string) (string, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Zone() != "" {
			return "", fmt.Errorf("not an address with prefix length")
		}
		return p.String(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", fmt.Errorf("not an address")
	}
	return netip.PrefixFrom(a, a.BitLen()).String(), nil
}

func validAddr(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Zone() == "" && !a.IsUnspecified() && !a.IsMulticast()
}

// validName accepts an interface name (1-15 printable bytes, no space,
// / or :); config's own checks decide the rest.
func validName(s string) bool {
	return printable(s, 15) && !strings.ContainsAny(s, "/:")
}

// printable: 1-max bytes of printable ASCII without spaces.
func printable(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func (c *converter) script(s *Stmt) {
	sc := &script{line: s.Line, interval: time.Second, fall: 1, rise: 1}
	if len(s.Args) > 0 {
		sc.name = s.Args[0]
	}
	for _, k := range s.Children {
		switch k.Name {
		case "script":
			sc.command = strings.Join(k.Args, " ")
		case "interval":
			sc.interval = c.seconds(k, time.Second)
		case "timeout":
			sc.timeout = c.seconds(k, 0)
		case "fall":
			sc.fall, _ = c.integer(k, 1, 1000)
		case "rise":
			sc.rise, _ = c.integer(k, 1, 1000)
		case "weight":
			c.note(k.Line, "vrrp_script %s weight: hagent's checks fail the node, they do not weigh", sc.name)
		default:
			c.other(k)
		}
	}
	if sc.command == "" {
		c.note(s.Line, "vrrp_script %s has no script: its command is left empty", sc.name)
	}
	if _, dup := c.scripts[sc.name]; !dup {
		c.sorder = append(c.sorder, sc.name)
	}
	c.scripts[sc.name] = sc
}

// syncGroup: hagent moves every address of a vcluster together, as a sync
// group does; its notify scripts become hooks when no instance has one.
func (c *converter) syncGroup(s *Stmt) {
	for _, k := range s.Children {
		switch k.Name {
		case "group":
			c.note(k.Line, "vrrp_sync_group %s: hagent moves every address of a vcluster together already", strings.Join(s.Args, " "))
		case "notify_master", "notify_backup", "notify_fault":
			// Applied in emit when the instances have none.
		default:
			c.skip(k, "not translated")
		}
	}
}
