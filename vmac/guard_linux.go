//go:build linux

package vmac

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Restore puts back what this node holds and something else took away:
// if the Manager holds the vMACs (after Take, before Release or Reset),
// every interface whose MAC is not its vMAC gets it again and every
// cluster address missing is added again; then one announcement round
// tells the segment. It reads the kernel's state under the Manager's lock,
// so it never undoes the Manager's own changes: a Release that ran before
// finds it holding nothing, a Take that ran before left everything in
// place. It returns one Restored per interface it changed.
func (m *Manager) Restore() ([]Restored, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || !m.owned {
		return nil, nil
	}
	var out []Restored
	var errs []error
	for _, ifc := range m.ifs {
		r := Restored{Interface: ifc.name}
		cur, err := m.currentMAC(ifc)
		if err != nil {
			errs = append(errs, fmt.Errorf("vmac: %s: %w", ifc.name, err))
			continue
		}
		if !bytes.Equal(cur, ifc.vmac) {
			if err := m.setMAC(ifc, ifc.vmac); err != nil {
				errs = append(errs, fmt.Errorf("vmac: %s: set vMAC %s again: %w", ifc.name, ifc.vmac, err))
			} else {
				r.Found, r.VMAC = cur, append(net.HardwareAddr(nil), ifc.vmac...)
			}
		}
		present, err := m.h.AddrList(ifc.link, netlink.FAMILY_ALL)
		if err != nil {
			errs = append(errs, fmt.Errorf("vmac: %s: list addresses: %w", ifc.name, err))
		} else {
			for i, a := range ifc.addrs {
				if hasAddr(present, a) {
					continue
				}
				if err := m.h.AddrReplace(ifc.link, a); err != nil {
					errs = append(errs, fmt.Errorf("vmac: %s: add %s again: %w", ifc.name, a.IPNet, err))
					continue
				}
				r.Addresses = append(r.Addresses, ifc.prefixes[i])
			}
		}
		if r.Found != nil || len(r.Addresses) > 0 {
			ifc.restores++
			out = append(out, r)
		}
	}
	if len(out) > 0 {
		// The neighbours may have given up on the address while it was
		// gone, and the switch learnt nothing while the MAC was another.
		if _, err := m.sendRoundLocked(); err != nil {
			m.log.Debug("announcement after a restore not sent", "error", err)
		}
	}
	return out, errors.Join(errs...)
}

// hasAddr reports whether present (an interface's addresses) holds a.
func hasAddr(present []netlink.Addr, a *netlink.Addr) bool {
	for _, p := range present {
		if p.IPNet != nil && p.IP.Equal(a.IP) && bytes.Equal(p.Mask, a.Mask) {
			return true
		}
	}
	return false
}

// Guard keeps what the Manager holds while it holds it: it follows the
// address and link notifications (RTM_DELADDR, RTM_NEWLINK) of the
// Manager's network namespace and, when a cluster address of a data
// interface is removed or the interface's MAC changes to something other
// than its vMAC (`ip addr del`, `ip addr flush`, `ip link set address`, a
// network manager, a second hagentd), calls Restore at once and report with
// what it put back (or the error). Restores are rate limited (GuardBurst,
// GuardRefill); a notification that arrives when none is allowed is acted
// on when the next one is. While the Manager holds nothing, notifications
// are dropped without a netlink request. If the subscription breaks (a
// receive buffer overrun), Guard subscribes again and checks once, as a
// change may have been missed.
//
// report is called from Guard's goroutine. Guard returns nil once ctx is
// done, or an error if the first subscription cannot be set up. Proved by
// TestGuardRestores and, end to end, test.TestGuardRestoresAddress.
func (m *Manager) Guard(ctx context.Context, report func([]Restored, error)) error {
	g := &guard{m: m, report: report, tokens: GuardBurst, at: time.Now(),
		addrs: map[int][]*netlink.Addr{}, vmacs: map[int]net.HardwareAddr{}}
	for _, ifc := range m.ifs { // fixed after NewManager
		idx := ifc.link.Attrs().Index
		g.addrs[idx] = ifc.addrs
		g.vmacs[idx] = ifc.vmac
	}
	first := true
	var warned time.Time // a subscription that keeps breaking warns once a minute
	for {
		err := g.run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if first && err != nil {
			return err
		}
		first = false
		if time.Since(warned) >= time.Minute {
			warned = time.Now()
			m.log.Warn("guard: netlink subscription broke; subscribing again and checking", "error", err)
		} else {
			m.log.Debug("guard: netlink subscription broke; subscribing again and checking", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(resubscribeDelay):
		}
	}
}

type guard struct {
	m      *Manager
	report func([]Restored, error)
	addrs  map[int][]*netlink.Addr  // ifindex → cluster addresses
	vmacs  map[int]net.HardwareAddr // ifindex → vMAC
	tokens float64                  // restores allowed now (≤ GuardBurst)
	at     time.Time                // when tokens was last brought up to date
}

// addrGone reports whether u removes a cluster address of a data interface.
func (g *guard) addrGone(u *netlink.AddrUpdate) bool {
	if u.NewAddr {
		return false
	}
	for _, a := range g.addrs[u.LinkIndex] {
		if a.IP.Equal(u.LinkAddress.IP) {
			return true
		}
	}
	return false
}

// macChanged reports whether u shows a data interface with another MAC
// than its vMAC.
func (g *guard) macChanged(u *netlink.LinkUpdate) bool {
	if u.Header.Type != unix.RTM_NEWLINK {
		return false
	}
	vmac, ok := g.vmacs[int(u.Index)]
	return ok && u.Link != nil && u.Link.Attrs() != nil && !bytes.Equal(u.Link.Attrs().HardwareAddr, vmac)
}

// allowed refills the bucket up to now and reports how long until a
// restore is allowed (0: now).
func (g *guard) allowed(now time.Time) time.Duration {
	g.tokens += float64(now.Sub(g.at)) / float64(GuardRefill)
	if g.tokens > GuardBurst {
		g.tokens = GuardBurst
	}
	g.at = now
	if g.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - g.tokens) * float64(GuardRefill))
}

// run subscribes and restores until ctx is done or a subscription breaks.
func (g *guard) run(ctx context.Context) error {
	done := make(chan struct{})
	ach := make(chan netlink.AddrUpdate, 64)
	lch := make(chan netlink.LinkUpdate, 64)
	var subscribed []func()
	defer func() {
		// Closing done closes the sockets, which ends the library's
		// receive goroutines; drain their channels so they never block.
		close(done)
		for _, drain := range subscribed {
			go drain()
		}
	}()
	errc := make(chan error, 1)
	onErr := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	ns := g.m.ns
	if err := netlink.AddrSubscribeWithOptions(ach, done, netlink.AddrSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("vmac: guard: subscribe to addresses: %w", err)
	}
	subscribed = append(subscribed, func() {
		for range ach {
		}
	})
	if err := netlink.LinkSubscribeWithOptions(lch, done, netlink.LinkSubscribeOptions{Namespace: &ns, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("vmac: guard: subscribe to links: %w", err)
	}
	subscribed = append(subscribed, func() {
		for range lch {
		}
	})
	broke := func() error {
		select {
		case err := <-errc:
			return fmt.Errorf("vmac: guard: %w", err)
		default:
			return errors.New("vmac: guard: subscription closed")
		}
	}

	// Subscribed: whatever changes from now on is seen. Check once for
	// what changed before (a first run, or a subscription that broke).
	pending := true
	timer := time.NewTimer(0)
	if !timer.Stop() {
		<-timer.C
	}
	defer timer.Stop()
	armed := false
	for {
		if pending && !armed {
			if wait := g.allowed(time.Now()); wait > 0 {
				timer.Reset(wait)
				armed = true
			} else {
				pending = false
				g.restore()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-ach:
			if !ok {
				return broke()
			}
			if g.addrGone(&u) && g.m.held.Load() {
				pending = true
			}
		case u, ok := <-lch:
			if !ok {
				return broke()
			}
			if g.macChanged(&u) && g.m.held.Load() {
				pending = true
			}
		case <-timer.C:
			armed = false
		}
	}
}

// restore runs Restore and reports; a restore that changed something or
// failed uses up one of the allowed restores.
func (g *guard) restore() {
	if !g.m.held.Load() {
		return
	}
	rs, err := g.m.Restore()
	if len(rs) == 0 && err == nil {
		return // everything in place: the Manager's own change, or nothing
	}
	g.tokens--
	if g.report != nil {
		g.report(rs, err)
	}
}
