// Package vmac owns the data-plane side of a takeover: the cluster's virtual
// MAC addresses, its cluster IP addresses, the gratuitous ARPs and unsolicited
// neighbour advertisements that move traffic to the new primary, and the
// netlink link watching that feeds link-failover monitoring.
//
// # Virtual MACs
//
// Every data interface of a vcluster gets a virtual MAC derived from the
// group id, the vcluster and the interface's position among the data
// interfaces sorted by name (see MAC and Assign):
//
//	group   0-255:  00:09:0f:09:<group>:<vcx><idx>
//	group 256-511:  e0:23:ff:fc:<group&0xff>:<vcx><idx>
//	group 512-767:  e0:23:ff:fd:<group&0xff>:<vcx><idx>
//	group 768-1023: e0:23:ff:fe:<group&0xff>:<vcx><idx>
//
// where vcx is 0 for vcluster 1 and 2 for vcluster 2 and idx is 0-15.
//
// # Takeover
//
// A Manager is built once at start-up (NewManager). It resolves the
// interfaces, remembers their permanent MACs in a state file so a crashed
// primary can restore them (Reset), prebuilds every announcement frame and
// opens the netlink handle and AF_PACKET sockets it needs, all in the
// caller's network namespace. Take then only issues netlink requests and
// socket writes, so the path from decision to the first gratuitous ARP on
// the wire stays in the sub-millisecond to low-millisecond range:
//
//  1. set each interface's MAC to its vMAC (a live change; only when the
//     driver answers EBUSY is the link taken down, changed and brought up);
//  2. add the cluster addresses (IPv6 with IFA_F_NODAD, so no DAD delay);
//  3. send one gratuitous ARP request per IPv4 address (sender HW = vMAC,
//     sender IP = target IP = the address, to ff:ff:ff:ff:ff:ff) and one
//     unsolicited neighbour advertisement per IPv6 address (RFC 4861
//     §7.2.6: to ff02::1 from the address, hop limit 255, Override set,
//     Solicited clear, target link-layer address option = vMAC);
//  4. a goroutine repeats step 3 ARPs-1 more times every ARPInterval.
//
// Release undoes steps 1 and 2; both are idempotent.
//
// # Keeping what is held
//
// While the Manager holds the vMACs, Guard follows the namespace's address
// and link notifications and puts back at once (Restore) a cluster address
// that something else removed (ip addr del or flush, a network manager, the
// kernel dropping IPv6 addresses when a link goes down) and the vMAC of an
// interface whose MAC something else changed, then announces again.
// Restore decides from the kernel's state under the Manager's lock, so it
// never fights the Manager's own Take and Release. Restores are rate
// limited: GuardBurst at once, then one per GuardRefill.
//
// # Link watching
//
// WatchLinks follows RTM_NEWLINK/RTM_DELLINK notifications and reports
// whether each named interface is up (IFF_UP and IFF_LOWER_UP).
//
// The Manager and WatchLinks are Linux-only; on other systems they return
// an error. MAC and Assign work everywhere.
package vmac
