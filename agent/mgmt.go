package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
)

// The management interface (cluster.mgmt_interface with this node's
// node.mgmt). It is no part of the election: hagentd never changes its MAC
// nor puts a cluster address on it (validation keeps it out of every
// interface list), so each member answers on its own management addresses
// whatever its role. What hagentd does is the routing: the addresses go
// on the interface, and what leaves from them is looked up in a table of
// its own (a policy rule per address, priority config.MgmtRulePriority),
// which holds the management subnets and a default route via the
// gateway. Replies to a management client behind the gateway so leave by
// the management interface even though the main table's default route
// points at a data interface. The rules and routes are installed at
// start, put back within mgmtGuardEvery when something removes them (an
// operator, a link that went down and took its routes), and removed at
// stop; the addresses stay, so a stopped hagentd leaves the node
// reachable on its own subnet. TestMgmtInterface shows every role.

// mgmtGuardEvery is how often the management routing is checked and put
// back.
const mgmtGuardEvery = time.Second

// mgmtRouting owns the management interface's addresses, rules and
// routes.
type mgmtRouting struct {
	iface string
	cfg   config.NodeMgmt

	mu       sync.Mutex
	restores uint64 // rules, routes or addresses put back after the first install
	lastErr  string
	ok       bool // the last check found (or made) everything in place
}

// newMgmtRouting returns the routing of cfg's management interface, nil
// when there is none or the node has no management address.
func newMgmtRouting(cfg *config.Config) *mgmtRouting {
	if cfg.Cluster.MgmtInterface == "" || len(cfg.Node.Mgmt.Addresses) == 0 {
		return nil
	}
	m := cfg.Node.Mgmt
	m.Addresses = slices.Clone(m.Addresses)
	return &mgmtRouting{iface: cfg.Cluster.MgmtInterface, cfg: m}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// wantRoutes are the routes of the management table: each address's
// subnet on the interface (from the address), and the default route via
// the gateway.
func (m *mgmtRouting) wantRoutes(link int) []netlink.Route {
	var out []netlink.Route
	for _, p := range m.cfg.Addresses {
		out = append(out, netlink.Route{LinkIndex: link, Dst: ipNet(p.Masked()), Src: p.Addr().AsSlice(),
			Scope: netlink.SCOPE_LINK, Table: m.cfg.Table, Protocol: netlink.RouteProtocol(syscall.RTPROT_STATIC)})
	}
	if g := m.cfg.Gateway; g.IsValid() {
		any := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if g.Is6() {
			any = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		out = append(out, netlink.Route{LinkIndex: link, Dst: ipNet(any), Gw: g.AsSlice(),
			Table: m.cfg.Table, Protocol: netlink.RouteProtocol(syscall.RTPROT_STATIC)})
	}
	return out
}

// wantRules are the policy rules: from each address, the management table.
func (m *mgmtRouting) wantRules() []*netlink.Rule {
	var out []*netlink.Rule
	for _, p := range m.cfg.Addresses {
		r := netlink.NewRule()
		r.Src = ipNet(netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
		r.Table, r.Priority, r.Family = m.cfg.Table, config.MgmtRulePriority, family(p.Addr())
		out = append(out, r)
	}
	return out
}

func sameNet(a, b *net.IPNet) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	ao, ab := a.Mask.Size()
	bo, bb := b.Mask.Size()
	return a.IP.Equal(b.IP) && ao == bo && ab == bb
}

// routeDst is a listed route's destination; a default route may come
// without one.
func routeDst(r netlink.Route) *net.IPNet {
	if r.Dst != nil {
		return r.Dst
	}
	if r.Family == netlink.FAMILY_V6 {
		return ipNet(netip.PrefixFrom(netip.IPv6Unspecified(), 0))
	}
	return ipNet(netip.PrefixFrom(netip.IPv4Unspecified(), 0))
}

// ensure puts in place what is missing: the interface up, the addresses,
// the table's routes and the rules. It returns how many it (re)made.
func (m *mgmtRouting) ensure() (int, error) {
	l, err := netlink.LinkByName(m.iface)
	if err != nil {
		return 0, fmt.Errorf("management interface %s: %w", m.iface, err)
	}
	made := 0
	var errs []error
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Errorf("set %s up: %w", m.iface, err))
		} else {
			made++
		}
	}
	have, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return made, err
	}
	for _, p := range m.cfg.Addresses {
		if slices.ContainsFunc(have, func(a netlink.Addr) bool { return sameNet(a.IPNet, ipNet(p)) }) {
			continue
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p)}); err != nil && !errors.Is(err, syscall.EEXIST) {
			errs = append(errs, fmt.Errorf("add %s to %s: %w", p, m.iface, err))
			continue
		}
		made++
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: m.cfg.Table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return made, err
	}
	for _, r := range m.wantRoutes(l.Attrs().Index) {
		if slices.ContainsFunc(routes, func(h netlink.Route) bool {
			return h.LinkIndex == r.LinkIndex && sameNet(routeDst(h), r.Dst) && h.Gw.Equal(r.Gw)
		}) {
			continue
		}
		// A subnet route needs its address; a default route its subnet.
		// Both are in place above, except while IPv6 DAD runs: the next
		// check retries.
		if err := netlink.RouteReplace(&r); err != nil {
			errs = append(errs, fmt.Errorf("route %s in table %d: %w", r.Dst, m.cfg.Table, err))
			continue
		}
		made++
	}
	rules, err := netlink.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return made, err
	}
	for _, r := range m.wantRules() {
		if slices.ContainsFunc(rules, func(h netlink.Rule) bool {
			return h.Table == r.Table && h.Priority == r.Priority && sameNet(h.Src, r.Src)
		}) {
			continue
		}
		if err := netlink.RuleAdd(r); err != nil && !errors.Is(err, syscall.EEXIST) {
			errs = append(errs, fmt.Errorf("rule from %s lookup %d: %w", r.Src, r.Table, err))
			continue
		}
		made++
	}
	return made, errors.Join(errs...)
}

// remove deletes the rules and the table's routes; the addresses stay.
func (m *mgmtRouting) remove() error {
	var errs []error
	for _, r := range m.wantRules() {
		if err := netlink.RuleDel(r); err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("rule from %s: %w", r.Src, err))
		}
	}
	l, err := netlink.LinkByName(m.iface)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	rs := m.wantRoutes(l.Attrs().Index)
	slices.Reverse(rs) // the default route before the subnet it goes through
	for _, r := range rs {
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, syscall.ESRCH) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("route %s in table %d: %w", r.Dst, m.cfg.Table, err))
		}
	}
	return errors.Join(errs...)
}

// check runs ensure and records the result; first says it is the install
// at start (what it makes is no restore).
func (a *Agent) mgmtCheck(m *mgmtRouting, first bool) {
	made, err := m.ensure()
	m.mu.Lock()
	prevErr := m.lastErr
	m.ok = err == nil
	m.lastErr = ""
	if err != nil {
		m.lastErr = err.Error()
	}
	if !first {
		m.restores += uint64(made)
	}
	m.mu.Unlock()
	switch {
	case err != nil && err.Error() != prevErr:
		a.log.Error("management interface routing", "interface", m.iface, "error", err)
	case first:
		a.log.Info("management interface routing installed", "interface", m.iface, "table", m.cfg.Table, "addresses", len(m.cfg.Addresses))
	case made > 0:
		a.log.Warn("management interface routing put back", "interface", m.iface, "restored", made)
		a.hist.add(Event{Time: a.now(), Kind: "mgmt", Reason: fmt.Sprintf("management routing of %s put back (%d rules, routes or addresses)", m.iface, made)})
	}
}

// mgmtGuard installs the management routing, keeps it in place until ctx
// ends, then removes it.
func (a *Agent) mgmtGuard(ctx context.Context, m *mgmtRouting) {
	a.mgmtCheck(m, true)
	t := time.NewTicker(mgmtGuardEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := m.remove(); err != nil {
				a.log.Warn("management interface routing not fully removed", "interface", m.iface, "error", err)
			}
			return
		case <-t.C:
			a.mgmtCheck(m, false)
		}
	}
}

// mgmtStatus is the management interface's part of `ha status`; nil
// without one.
func (a *Agent) mgmtStatus(cfg *config.Config) *control.Mgmt {
	name := cfg.Cluster.MgmtInterface
	if name == "" {
		return nil
	}
	out := &control.Mgmt{Interface: name}
	if ifi, err := net.InterfaceByName(name); err == nil {
		out.MAC = ifi.HardwareAddr.String()
	}
	for _, p := range cfg.Node.Mgmt.Addresses {
		out.Addresses = append(out.Addresses, p.String())
	}
	if g := cfg.Node.Mgmt.Gateway; g.IsValid() {
		out.Gateway = g.String()
	}
	if m := a.mgmt; m != nil {
		out.Table = m.cfg.Table
		m.mu.Lock()
		out.Routed, out.Restores, out.LastError = m.ok, m.restores, m.lastErr
		m.mu.Unlock()
	}
	return out
}

// mgmtIgnore are the session pickup ignore prefixes with the management
// addresses added: a flow to or from a management address belongs to this
// node alone (an ssh session to it), and a copy on the peer would only be
// a stale entry for an address the peer never has.
func mgmtIgnore(cfg *config.Config) []netip.Prefix {
	out := slices.Clone(cfg.Cluster.SessionPickup.Ignore)
	if cfg.Cluster.MgmtInterface == "" {
		return out
	}
	for _, p := range cfg.Node.Mgmt.Addresses {
		h := netip.PrefixFrom(p.Addr(), p.Addr().BitLen())
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}
