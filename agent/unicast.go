package agent

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/udplink"
)

// unicastLocal returns the address of u.Peers configured on this node
// (exactly one must be).
func unicastLocal(u *config.UnicastHB) (netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return netip.Addr{}, err
	}
	var mine []netip.Addr
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if ok && slices.Contains(u.Peers, ip.Unmap()) {
			mine = append(mine, ip.Unmap())
		}
	}
	switch len(mine) {
	case 0:
		return netip.Addr{}, fmt.Errorf("unicast_hb.peers: none of %v is an address of this node", u.Peers)
	case 1:
		return mine[0], nil
	}
	return netip.Addr{}, fmt.Errorf("unicast_hb.peers: %v are all addresses of this node; exactly one must be", mine)
}

// foreignLog rate-limits the log of datagrams from non-peers: a stranger
// spraying the port must not flood the log.
type foreignLog struct {
	mu   sync.Mutex
	last time.Time
	n    uint64
}

// openUnicast binds the unicast heartbeat link (port) of cfg, or a
// channel link (syncPort/sessionPort).
func (a *Agent) openUnicast(u *config.UnicastHB, port int, what string) (*udplink.Link, error) {
	local, err := unicastLocal(u)
	if err != nil {
		return nil, err
	}
	fl := &foreignLog{}
	l, err := udplink.Listen(udplink.Config{Local: local, Port: uint16(port), Peers: u.Peers,
		OnForeign: func(from netip.AddrPort) {
			fl.mu.Lock()
			fl.n++
			now := time.Now()
			if now.Sub(fl.last) < time.Minute {
				fl.mu.Unlock()
				return
			}
			n := fl.n
			fl.last, fl.n = now, 0
			fl.mu.Unlock()
			a.log.Warn("dropped datagrams from an address that is not a unicast_hb peer (before any cryptography)",
				"from", from.String(), "port", port, "channel", what, "dropped_since_last_log", n)
		}})
	if err != nil {
		return nil, fmt.Errorf("unicast_hb %s on %s:%d: %w", what, local, port, err)
	}
	return l, nil
}

// channelLinks opens the links of a reliable channel on Ethertype et:
// the devices first (in order: session pickup's sync_dev), then the hbdevs
// by priority, with the unicast_hb path (UDP port) among them by its own
// priority. name names the channel in errors ("sync", "session"), what its
// UDP socket in the log. The UDP link, if any, is returned too.
func (a *Agent) channelLinks(cfg *config.Config, et uint16, first []string, port int, name, what string) ([]heartbeat.Link, *udplink.Link, error) {
	var links []heartbeat.Link
	var ul *udplink.Link
	fail := func(err error) ([]heartbeat.Link, *udplink.Link, error) {
		for _, l := range links {
			l.Close()
		}
		if ul != nil && !slices.Contains(links, heartbeat.Link(ul)) {
			ul.Close()
		}
		return nil, nil, err
	}
	dial := func(n string) error {
		l, err := heartbeat.DialLink(n, et)
		if err != nil {
			return fmt.Errorf("%s channel on %s: %w", name, n, err)
		}
		links = append(links, l)
		return nil
	}
	for _, n := range first {
		if err := dial(n); err != nil {
			return fail(err)
		}
	}
	if u := &cfg.Cluster.UnicastHB; u.Enabled {
		l, err := a.openUnicast(u, port, what)
		if err != nil {
			return fail(err)
		}
		ul = l
	}
	placed := ul == nil
	for _, hb := range cfg.Cluster.HBDevsByPriority() {
		if !placed && cfg.Cluster.UnicastHB.Priority > hb.Priority {
			links, placed = append(links, ul), true
		}
		if err := dial(hb.Name); err != nil {
			return fail(err)
		}
	}
	if !placed {
		links = append(links, ul)
	}
	return links, ul, nil
}

// isUnicast reports whether l is a unicast_hb link.
func isUnicast(l heartbeat.Link) bool {
	_, ok := l.(*udplink.Link)
	return ok
}

// unicastMTU is the channel's frame size when a UDP path is among its
// links: an IPv6 datagram in a 1450-byte overlay (VXLAN) still fits.
const unicastMTU = 1380
