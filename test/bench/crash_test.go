package bench

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/hagent/hagent/test/lab"
)

// linksDown sets every link of the node down over netlink, heartbeat links
// first, within a fraction of a millisecond: the box is dead to the
// network before its agent is killed, so nothing it does while dying
// reaches the peer, and the client's outage starts at the fault. (Killing
// first and then running `ip link set … down`, as lab's Node.Crash does,
// leaves the data port forwarding for the fork/exec time of ip, 5-60 ms on
// a loaded box, which hides part of the outage.)
func linksDown(n *lab.Node) error {
	h, err := netns.GetFromName(n.NS)
	if err != nil {
		return err
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return err
	}
	defer nh.Close()
	links, err := nh.LinkList()
	if err != nil {
		return err
	}
	var hb, data []netlink.Link
	for _, l := range links {
		name := l.Attrs().Name
		switch {
		case len(name) > 2 && name[:2] == "ha", name == "hbu":
			hb = append(hb, l)
		case len(name) > 4 && name[:4] == "port":
			data = append(data, l)
		}
	}
	for _, l := range append(hb, data...) {
		if err := nh.LinkSetDown(l); err != nil {
			return fmt.Errorf("%s %s down: %w", n.Name, l.Attrs().Name, err)
		}
	}
	return nil
}
