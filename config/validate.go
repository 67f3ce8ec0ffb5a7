package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// wellKnownEtherTypes may not be used for hagent's frames.
var wellKnownEtherTypes = map[uint16]string{
	0x0800: "IPv4",
	0x0806: "ARP",
	0x86DD: "IPv6",
	0x8100: "802.1Q VLAN",
	0x88A8: "802.1ad QinQ",
}

// validate checks every value of a decoded configuration.
func (d *decoder) validate(c *Config) {
	switch {
	case !filepath.IsAbs(c.ControlSocket):
		d.errorf("control_socket", "%q is not an absolute path", c.ControlSocket)
	case len(c.ControlSocket) > 107:
		d.errorf("control_socket", "path is %d bytes long; a unix socket path is at most 107", len(c.ControlSocket))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		d.errorf("log_format", "%q is not a log format; want text or json", c.LogFormat)
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		d.errorf("log_level", "%q is not a log level; want trace, debug, info, warn or error", c.LogLevel)
	}
	if c.MetricsListen != "" {
		if ap, err := netip.ParseAddrPort(c.MetricsListen); err != nil || ap.Port() == 0 {
			d.errorf("metrics_listen", "%q is not an address and port such as 127.0.0.1:9650 or [::1]:9650", c.MetricsListen)
		}
	}

	n := &c.Node
	if msg := checkName(n.Name, MaxNameLen); msg != "" {
		d.errorf("node.name", "%s", msg)
	}
	if msg := checkSerial(n.Serial); msg != "" {
		d.errorf("node.serial", "%s", msg)
	}
	d.intRange("node.priority", n.Priority, 0, 255)
	d.intRange("node.vcluster2.priority", n.VCluster2.Priority, 0, 255)

	d.validateCluster("cluster", &c.Cluster)
	d.validateMgmt(c)
}

// validateCluster checks a cluster section; path is its key ("cluster").
func (d *decoder) validateCluster(path string, c *Cluster) {
	k := func(key string) string { return joinKey(path, key) }

	if msg := checkText(c.GroupName, MaxGroupNameLen); msg != "" {
		d.errorf(k("group_name"), "%s", msg)
	}
	d.intRange(k("group_id"), c.GroupID, 0, 1023)
	switch {
	case c.PasswordFile == "" && c.Auth:
		d.errorf(k("password_file"), "required when auth is true")
	case c.PasswordFile != "" && !filepath.IsAbs(c.PasswordFile):
		d.errorf(k("password_file"), "%q is not an absolute path", c.PasswordFile)
	}
	// auth: false turns off heartbeat authentication only: the sync and
	// session channels never run without a key (TestNoAuthNeedsKey).
	if c.PasswordFile == "" && !c.Auth {
		if c.Sync.Enabled {
			d.errorf(k("auth"), "false without password_file: config sync would accept files and hook commands from anyone on the heartbeat segment; "+
				"set password_file (the key of the sync channel) or sync.enabled: false")
		}
		if c.SessionPickup.Enabled {
			d.errorf(k("auth"), "false without password_file: session pickup would accept connection-tracking entries from anyone on the heartbeat segment; "+
				"set password_file (the key of the session channel) or session_pickup.enabled: false")
		}
	}
	switch c.Mode {
	case "a-p":
	case ModeFGSP:
		// Every member keeps its own addresses: nothing to take over.
		if len(c.Interfaces) > 0 {
			d.errorf(k("interfaces"), "not used in mode fgsp: every member forwards with its own addresses (no virtual MAC, no cluster address); remove interfaces")
		}
		if c.VCluster2.Enabled {
			d.errorf(k("vcluster2"), "not used in mode fgsp: every member forwards all traffic (virtual clusters split the roles of a-p mode)")
		}
		if c.SessionPickup.Expectation {
			d.errorf(k("session_pickup.expectation"), "not supported in mode fgsp (expectations are copied one way, from the primary)")
		}
	case "a-a":
		d.errorf(k("mode"), "active-active mode \"a-a\" is not supported; want a-p or fgsp")
	default:
		d.errorf(k("mode"), "%q is not a mode; want a-p or fgsp", c.Mode)
	}
	if c.VCluster != 1 && c.VCluster != 2 {
		d.errorf(k("vcluster"), "%d is not a vcluster; want 1 or 2", c.VCluster)
	}

	// Heartbeat devices.
	if len(c.HBDevs) == 0 && !c.UnicastHB.Enabled {
		d.errorf(k("hbdev"), "at least one hbdev is required")
	}
	d.unicastHB(k("unicast_hb"), &c.UnicastHB, c.Mode)
	hbdevs := map[string]int{}
	for i, h := range c.HBDevs {
		p := indexKey(k("hbdev"), i)
		d.ifName(p+".name", h.Name)
		if first, dup := hbdevs[h.Name]; dup && h.Name != "" {
			d.errorf(p+".name", "%s is already hbdev[%d]", h.Name, first)
		} else {
			hbdevs[h.Name] = i
		}
		d.intRange(p+".priority", h.Priority, 0, 255)
	}

	// Timers.
	d.durRange(k("hb_interval"), c.HBInterval, 10*time.Millisecond, 60*time.Second)
	d.intRange(k("hb_lost_threshold"), c.HBLostThreshold, 1, 60)
	d.durRange(k("hello_holddown"), c.HelloHolddown, 0, 300*time.Second)
	d.durRange(k("carrier_debounce"), c.CarrierDebounce, 0, time.Second)
	d.durRange(k("uptime_diff_margin"), c.UptimeDiffMargin, 0, 65535*time.Second)
	d.durRange(k("failover_hold_time"), c.FailoverHoldTime, 0, 300*time.Second)
	d.durRange(k("monitor_holddown"), c.MonitorHolddown, 0, 60*time.Second)
	d.durRange(k("override_wait_time"), c.OverrideWaitTime, 0, 3600*time.Second)
	d.durRange(k("link_failed_signal"), c.LinkFailedSignal, 0, 60*time.Second)

	// Ethertypes.
	ets := []struct {
		key string
		v   uint16
	}{{"ha", c.EthType.HA}, {"hc", c.EthType.HC}, {"l2ep", c.EthType.L2EP}, {"session", c.EthType.Session}}
	used := map[uint16]string{}
	for _, et := range ets {
		p := k("eth_type." + et.key)
		switch {
		case d.isBad(p):
			// Already reported; its default would only confuse.
		case et.v < 0x0600:
			d.errorf(p, "%#04x is out of range 0x0600-0xffff (below 0x0600 is a frame length)", et.v)
		case wellKnownEtherTypes[et.v] != "":
			d.errorf(p, "%#04x is the %s Ethertype", et.v, wellKnownEtherTypes[et.v])
		case used[et.v] != "":
			d.errorf(p, "%#04x is already used by eth_type.%s", et.v, used[et.v])
		default:
			used[et.v] = et.key
		}
	}

	// Data interfaces, monitored links and pingservers of each vcluster.
	ifaces := map[string]string{}
	addrs := map[netip.Addr]string{}
	d.validateSection(path, "", c.Section(1), hbdevs, ifaces, addrs)
	if c.VCluster2.Enabled {
		if c.VCluster != 1 {
			d.errorf(k("vcluster2.enabled"), "needs vcluster: 1 (this node then runs both virtual clusters), not vcluster: %d", c.VCluster)
		}
		d.validateSection(path, "vcluster2.", c.Section(2), hbdevs, ifaces, addrs)
	}
	if !c.VCluster2.Enabled {
		// Checked as well when off, so a mistake shows before it is enabled.
		ps := &c.VCluster2.PingServer
		d.durRange(k("vcluster2.pingserver.interval"), ps.Interval, 100*time.Millisecond, 60*time.Second)
		d.intRange(k("vcluster2.pingserver.failover_threshold"), ps.FailoverThreshold, 1, 100)
		d.durRange(k("vcluster2.pingserver.flip_timeout"), ps.FlipTimeout, 0, 24*time.Hour)
	}

	d.intRange(k("arps"), c.ARPs, 1, 60)
	d.durRange(k("arps_interval"), c.ARPsInterval, time.Second, 20*time.Second)
	// 0 is off. Below 1s the refresh would be a broadcast flood that no
	// switch needs (MAC tables age in minutes; keepalived's
	// vrrp_garp_master_refresh counts whole seconds); above 1h it would
	// outlive every MAC and ARP ageing timer it is meant to beat.
	if c.ARPsRefresh != 0 {
		d.durRange(k("arps_refresh"), c.ARPsRefresh, time.Second, time.Hour)
	}

	d.validateSync(k("sync"), &c.Sync)

	// Session pickup.
	sp := &c.SessionPickup
	d.durRange(k("session_pickup.delay"), sp.Delay, 0, 3600*time.Second)
	d.durRange(k("session_pickup.defer"), sp.Defer, 0, time.Second)
	d.nameList(k("session_pickup.sync_dev"), sp.SyncDev)
	d.nameList(k("session_pickup.down_until_synced"), sp.DownUntilSynced)
	for i, n := range sp.SyncDev {
		if _, ok := hbdevs[n]; ok && n != "" {
			d.errorf(indexKey(k("session_pickup.sync_dev"), i), "%s is an hbdev; sync_dev lists dedicated devices (the hbdevs are the fallback)", n)
		}
	}
	for i, n := range sp.DownUntilSynced {
		if _, ok := hbdevs[n]; ok && n != "" {
			d.errorf(indexKey(k("session_pickup.down_until_synced"), i), "%s is an hbdev; it must stay up to receive the bulk copy", n)
		}
		if slices.Contains(sp.SyncDev, n) {
			d.errorf(indexKey(k("session_pickup.down_until_synced"), i), "%s is a sync_dev; it must stay up to receive the bulk copy", n)
		}
	}
	for i, p := range sp.Ignore {
		if !p.IsValid() {
			continue // reported by the decoder
		}
		for j := 0; j < i; j++ {
			if sp.Ignore[j] == p {
				d.errorf(indexKey(k("session_pickup.ignore"), i), "%s is already ignore[%d]", p, j)
			}
		}
	}
	if sp.Enabled && len(c.HBDevs) == 0 && len(sp.SyncDev) == 0 && !c.UnicastHB.Enabled {
		d.errorf(k("session_pickup.enabled"), "needs a path for the session channel: an hbdev, a sync_dev or unicast_hb")
	}
	if sp.Enabled && c.EthType.Session == 0 {
		d.errorf(k("eth_type.session"), "required when session_pickup is enabled")
	}

	// Hooks.
	for _, h := range []struct{ key, cmd string }{
		{"primary", c.Hooks.Primary}, {"secondary", c.Hooks.Secondary}, {"fault", c.Hooks.Fault},
	} {
		if msg := checkCommand(h.cmd, true); msg != "" {
			d.errorf(k("hooks."+h.key), "%s", msg)
		}
	}
	d.durRange(k("hooks.timeout"), c.Hooks.Timeout, time.Second, time.Hour)
	d.validateChecks(k, c.Checks)
	d.validateMgmtInterface(k, c)
	for i, n := range c.Hooks.Env {
		if msg := checkEnvName(n); msg != "" {
			d.errorf(fmt.Sprintf("%s[%d]", k("hooks.env"), i), "%s", msg)
		}
	}
}

// checkEnvName validates a variable name of hooks.env: a shell name that
// is neither PATH nor HAGENT_* (the agent sets those).
func checkEnvName(n string) string {
	if n == "" || len(n) > 64 {
		return fmt.Sprintf("%q: a variable name is 1-64 bytes", n)
	}
	for i, r := range n {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return fmt.Sprintf("%q is not a variable name (letters, digits and '_', not starting with a digit)", n)
		}
	}
	if n == "PATH" || strings.HasPrefix(n, "HAGENT_") {
		return fmt.Sprintf("%s is set by hagentd for every hook", n)
	}
	return ""
}

// validateSync checks the sync section and cleans its paths in place.
func (d *decoder) validateSync(path string, s *Sync) {
	d.durRange(path+".period", s.Period, time.Second, 24*time.Hour)
	seen := map[string]int{}
	var ok []string // valid, unique, cleaned paths
	for i, p := range s.Paths {
		key := indexKey(path+".paths", i)
		if msg := checkSyncPath(p); msg != "" {
			d.errorf(key, "%s", msg)
			continue
		}
		p = filepath.Clean(p)
		s.Paths[i] = p
		if first, dup := seen[p]; dup {
			d.errorf(key, "%s is already paths[%d]", p, first)
			continue
		}
		seen[p] = i
		for _, q := range ok {
			if under(p, q) || under(q, p) {
				d.errorf(key, "%s and %s are nested; list only the outer one", p, q)
			}
		}
		ok = append(ok, p)
	}
	if len(s.OnChange) == 0 {
		return
	}
	keys := make([]string, 0, len(s.OnChange))
	for p := range s.OnChange {
		keys = append(keys, p)
	}
	sort.Strings(keys)
	clean := make(map[string]string, len(s.OnChange))
	for _, p := range keys {
		cmd := s.OnChange[p]
		key := path + ".on_change[" + strconv.Quote(p) + "]"
		if msg := checkSyncPath(p); msg != "" {
			d.errorf(key, "%s", msg)
			continue
		}
		cp := filepath.Clean(p)
		covered := false
		for _, q := range ok {
			if cp == q || under(cp, q) {
				covered = true
				break
			}
		}
		if !covered {
			d.errorf(key, "%s is not one of sync.paths nor under one", cp)
		}
		if msg := checkCommand(cmd, false); msg != "" {
			d.errorf(key, "%s", msg)
		}
		if _, dup := clean[cp]; dup {
			d.errorf(key, "%s is listed twice once cleaned", cp)
		}
		clean[cp] = cmd
	}
	s.OnChange = clean
}

// under reports whether p is strictly inside directory dir (both clean).
func under(p, dir string) bool {
	if dir == "/" {
		return p != "/"
	}
	return strings.HasPrefix(p, dir+string(os.PathSeparator))
}

func (d *decoder) intRange(key string, v, lo, hi int) {
	if v < lo || v > hi {
		d.errorf(key, "%d is out of range %d-%d", v, lo, hi)
	}
}

func (d *decoder) durRange(key string, v, lo, hi time.Duration) {
	if v < lo || v > hi {
		d.errorf(key, "%s is out of range %s-%s", formatDuration(v), formatDuration(lo), formatDuration(hi))
	}
}

// ifName checks one interface name.
func (d *decoder) ifName(key, name string) {
	if msg := checkIfName(name); msg != "" {
		d.errorf(key, "%s", msg)
	}
}

// nameList checks a list of interface names: valid and unique.
func (d *decoder) nameList(key string, names []string) {
	seen := map[string]int{}
	for i, n := range names {
		p := indexKey(key, i)
		if msg := checkIfName(n); msg != "" {
			d.errorf(p, "%s", msg)
			continue
		}
		if first, dup := seen[n]; dup {
			d.errorf(p, "%s is already %s[%d]", n, key[strings.LastIndexByte(key, '.')+1:], first)
			continue
		}
		seen[n] = i
	}
}

// checkIfName returns why name is not a valid Linux interface name, or "".
func checkIfName(name string) string {
	switch {
	case name == "":
		return "an interface name is required"
	case len(name) > 15:
		return fmt.Sprintf("interface name %q is longer than 15 bytes", name)
	case name == "." || name == "..":
		return fmt.Sprintf("%q is not a valid interface name", name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Sprintf("interface name %q contains %q; '/', ':' and spaces are not allowed", name, r)
		}
	}
	return ""
}

// checkName validates a node name: 1-max bytes of printable text without
// spaces.
func checkName(name string, max int) string {
	if name == "" {
		return "a name is required"
	}
	if len(name) > max {
		return fmt.Sprintf("%q is longer than %d bytes", name, max)
	}
	if !utf8.ValidString(name) { // heartbeats carry only valid UTF-8 (heartbeat.ValidString)
		return fmt.Sprintf("%q is not valid UTF-8", name)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Sprintf("%q contains %q; spaces and control characters are not allowed", name, r)
		}
	}
	return ""
}

// checkSerial validates a serial: 1-32 of A-Z a-z 0-9 . _ -.
func checkSerial(s string) string {
	if s == "" {
		return "a serial is required"
	}
	if len(s) > MaxSerialLen {
		return fmt.Sprintf("%q is longer than %d bytes", s, MaxSerialLen)
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Sprintf("%q contains %q; want letters, digits, '.', '_' or '-'", s, r)
		}
	}
	return ""
}

// checkText validates a free label of at most max bytes without control
// characters; empty is allowed.
func checkText(s string, max int) string {
	if len(s) > max {
		return fmt.Sprintf("%q is longer than %d bytes", s, max)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Sprintf("%q contains the control character %q", s, r)
		}
	}
	return ""
}

// checkCommand validates a shell command; empty is allowed when optional.
func checkCommand(cmd string, optional bool) string {
	switch {
	case strings.TrimSpace(cmd) == "" && cmd != "":
		return "the command is only blanks"
	case cmd == "" && !optional:
		return "a command is required"
	case strings.IndexByte(cmd, 0) >= 0:
		return "the command contains a NUL byte"
	}
	return ""
}

// checkSyncPath validates one synchronized path before cleaning.
func checkSyncPath(p string) string {
	switch {
	case p == "":
		return "a path is required"
	case !filepath.IsAbs(p):
		return fmt.Sprintf("%q is not an absolute path", p)
	case filepath.Clean(p) == "/":
		return "the root directory cannot be synchronized"
	case strings.ContainsAny(p, "\x00\n"):
		return fmt.Sprintf("%q contains a NUL or newline", p)
	}
	return ""
}

// checkHostPrefix validates a cluster address: a unicast host address with
// its prefix length, not the network (or IPv4 broadcast) address of its
// subnet.
func checkHostPrefix(p netip.Prefix) string {
	if !p.IsValid() {
		return "not an address with a prefix length"
	}
	a := p.Addr()
	switch {
	case a.Is4In6():
		return fmt.Sprintf("%s is an IPv4-mapped IPv6 address; write the IPv4 address", p)
	case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
		return fmt.Sprintf("%s is not a unicast host address", p)
	}
	hostBits := a.BitLen() - p.Bits()
	if hostBits >= 2 {
		if a == p.Masked().Addr() {
			return fmt.Sprintf("%s is the network address of its subnet; want a host address such as %s", p, p.Masked().Addr().Next())
		}
		if a.Is4() && a == lastAddr(p) {
			return fmt.Sprintf("%s is the broadcast address of its subnet", p)
		}
	}
	return ""
}

// lastAddr returns the highest address of p's subnet.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// checkPasswordFile verifies, when the key is in use (KeyInUse), that
// the key file meets the rules of readKey: a private regular file of root
// holding at least MinKeyLen bytes (Load only; the file is node-local
// state).
func (d *decoder) checkPasswordFile(c *Cluster) {
	if !c.KeyInUse() || c.PasswordFile == "" || !filepath.IsAbs(c.PasswordFile) {
		return
	}
	if _, err := readKey(c.PasswordFile); err != nil {
		d.errorf("cluster.password_file", "%v", err)
	}
}

// checkLocalPaths refuses sync paths that are, contain or lie inside one
// of this node's own files and directories: the configuration file at
// cfgPath, the key file, l.StateDir and l.RunDir. Both the paths as
// written and, where they exist, with their symbolic links resolved are
// compared, so a sync path reaching the key through a link is refused
// too.
func (d *decoder) checkLocalPaths(c *Config, cfgPath string, l Local) {
	if abs, err := filepath.Abs(cfgPath); err == nil {
		cfgPath = abs
	}
	local := []struct{ what, path string }{
		{"the configuration file", cfgPath},
		{"the key file (cluster.password_file)", c.Cluster.PasswordFile},
		{"the state directory", l.StateDir},
		{"the runtime directory", l.RunDir},
	}
	for i, p := range c.Cluster.Sync.Paths {
		if checkSyncPath(p) != "" {
			continue // reported by validateSync
		}
		for _, q := range local {
			if q.path == "" || !filepath.IsAbs(q.path) {
				continue
			}
			if overlaps(p, q.path) {
				d.errorf(indexKey("cluster.sync.paths", i), "%s covers %s %s: config sync would let a peer rewrite it; sync only what the members share", p, q.what, q.path)
				break
			}
		}
	}
}

// overlaps reports whether the paths a and b (absolute) are equal or one
// is inside the other, as written or with symbolic links resolved.
func overlaps(a, b string) bool {
	as, bs := withResolved(a), withResolved(b)
	for _, x := range as {
		for _, y := range bs {
			if x == y || under(x, y) || under(y, x) {
				return true
			}
		}
	}
	return false
}

// withResolved returns p cleaned and, when it differs and p exists, p with
// its symbolic links resolved.
func withResolved(p string) []string {
	p = filepath.Clean(p)
	if r, err := filepath.EvalSymlinks(p); err == nil && r != p {
		return []string{p, r}
	}
	return []string{p}
}

// PingServerInterfaces returns the pingserver interfaces of vcluster 1
// whose cluster subnets contain target: where target is probed.
func PingServerInterfaces(c *Cluster, target netip.Addr) []string {
	return c.Section(1).PingServerInterfaces(target)
}

// PingServerInterfaces returns the pingserver interfaces of s whose
// cluster subnets contain target: where target is probed.
func (s VClusterSection) PingServerInterfaces(target netip.Addr) []string {
	var out []string
	for _, name := range s.PingServer.Interfaces {
		for _, ifc := range s.Interfaces {
			if ifc.Name != name {
				continue
			}
			for _, p := range ifc.Addresses {
				if p.Masked().Contains(target) {
					out = append(out, name)
					break
				}
			}
		}
	}
	return out
}

// unicastHB checks cluster.unicast_hb.
func (d *decoder) unicastHB(p string, u *UnicastHB, mode string) {
	ports := map[int]string{}
	for _, x := range []struct {
		key  string
		port int
	}{{"port", u.Port}, {"sync_port", u.SyncPort}, {"session_port", u.SessionPort}} {
		d.intRange(p+"."+x.key, x.port, 1, 65535)
		if other, dup := ports[x.port]; dup {
			d.errorf(p+"."+x.key, "%d is already %s: each channel needs its own port", x.port, other)
		}
		ports[x.port] = x.key
	}
	d.intRange(p+".priority", u.Priority, 0, 255)
	seen := map[netip.Addr]int{}
	for i, a := range u.Peers {
		ip := indexKey(p+".peers", i)
		switch {
		case !a.IsValid():
			continue // reported by the decoder
		case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
			d.errorf(ip, "%s is not a member's unicast address", a)
		}
		if j, dup := seen[a]; dup {
			d.errorf(ip, "%s is already peers[%d]", a, j)
		}
		seen[a] = i
	}
	if u.Enabled && len(u.Peers) < 2 {
		d.errorf(p+".peers", "every member's address, this node's included: at least 2")
	}
	// The decoder allows the largest cluster of any mode (fgsp's).
	if n := MaxMembers(mode); len(u.Peers) > n {
		d.errorf(p+".peers", "%d addresses; a cluster in mode %s has at most %d members (%d in mode fgsp)", len(u.Peers), mode, n, MaxMembers(ModeFGSP))
	}
}

// validateSection checks one vcluster's interfaces, monitor and pingserver;
// sub is "" for vcluster 1 and "vcluster2." for vcluster 2. ifaces and addrs
// collect the names and addresses seen so far (across both vclusters) with
// where they were seen.
func (d *decoder) validateSection(path, sub string, s VClusterSection, hbdevs map[string]int, ifaces map[string]string, addrs map[netip.Addr]string) {
	k := func(key string) string { return joinKey(path, sub+key) }
	for i, ifc := range s.Interfaces {
		p := indexKey(k("interfaces"), i)
		d.ifName(p+".name", ifc.Name)
		if first, dup := ifaces[ifc.Name]; dup && ifc.Name != "" {
			if strings.HasPrefix(first, "vcluster2.") == (sub != "") {
				d.errorf(p+".name", "%s is already %s", ifc.Name, first)
			} else {
				other := 1
				if sub == "" {
					other = 2
				}
				d.errorf(p+".name", "%s is already in vcluster %d (%s); an interface belongs to one vcluster only", ifc.Name, other, first)
			}
		} else {
			ifaces[ifc.Name] = indexKey(sub+"interfaces", i)
		}
		if _, ok := hbdevs[ifc.Name]; ok && ifc.Name != "" {
			d.errorf(p+".name", "%s is also an hbdev; a data interface cannot carry heartbeats", ifc.Name)
		}
		for j, a := range ifc.Addresses {
			ap := indexKey(p+".addresses", j)
			if msg := checkHostPrefix(a); msg != "" {
				d.errorf(ap, "%s", msg)
				continue
			}
			if first, dup := addrs[a.Addr()]; dup {
				d.errorf(ap, "%s is already at %s", a.Addr(), first)
				continue
			}
			addrs[a.Addr()] = strings.TrimPrefix(ap, path+".")
		}
	}

	d.nameList(k("monitor"), s.Monitor)

	// Ping servers.
	ps := &s.PingServer
	d.nameList(k("pingserver.interfaces"), ps.Interfaces)
	targets := map[netip.Addr]int{}
	for i, a := range ps.Targets {
		p := indexKey(k("pingserver.targets"), i)
		switch {
		case !a.IsValid():
			d.errorf(p, "not an IP address")
		case a.Zone() != "":
			d.errorf(p, "%s has a zone; the interface comes from pingserver.interfaces", a)
		case a.Is4In6():
			d.errorf(p, "%s is an IPv4-mapped IPv6 address; write %s", a, a.Unmap())
		case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
			d.errorf(p, "%s is not a unicast address of another host", a)
		default:
			if first, dup := targets[a]; dup {
				d.errorf(p, "%s is already targets[%d]", a, first)
			} else {
				targets[a] = i
			}
		}
	}
	if len(ps.Targets) > 0 && len(ps.Interfaces) == 0 {
		d.errorf(k("pingserver.interfaces"), "required when pingserver.targets is set")
	}
	if len(ps.Interfaces) > 0 && len(ps.Targets) == 0 {
		d.errorf(k("pingserver.targets"), "required when pingserver.interfaces is set")
	}
	// hagent checks targets with ARP probes from every member (a secondary
	// holds no address), so a target must be an IPv4 neighbour on a
	// pingserver interface: inside one of its cluster subnets.
	for i, a := range ps.Targets {
		if !a.IsValid() || !a.Is4() {
			if a.IsValid() && a.Is6() && !a.Is4In6() && a.Zone() == "" {
				d.errorf(indexKey(k("pingserver.targets"), i), "%s: only IPv4 targets are supported (checked with ARP probes)", a)
			}
			continue
		}
		if len(s.PingServerInterfaces(a)) == 0 && len(ps.Interfaces) > 0 {
			d.errorf(indexKey(k("pingserver.targets"), i), "%s is not inside a cluster subnet of pingserver.interfaces %v (targets are checked with ARP probes on the local segment)", a, ps.Interfaces)
		}
	}
	d.durRange(k("pingserver.interval"), ps.Interval, 100*time.Millisecond, 60*time.Second)
	d.intRange(k("pingserver.failover_threshold"), ps.FailoverThreshold, 1, 100)
	d.durRange(k("pingserver.flip_timeout"), ps.FlipTimeout, 0, 24*time.Hour)
}
