package vmac

import (
	"fmt"
	"net"
	"sort"
)

// MaxInterfaces is the number of data interfaces a vcluster can have: the
// interface index takes one hex digit of the virtual MAC.
const MaxInterfaces = 16

// MaxGroupID is the largest HA group id.
const MaxGroupID = 1023

// MAC returns the virtual MAC of data interface idx (the 0-based position of
// the interface among the vcluster's data interfaces sorted by name) in
// vcluster vc (1 or 2) of HA group groupID (0-1023), as FGCP forms it
// (docs/reference.md §5):
//
//	00:09:0f:09:<group hex>:<vcx><idx hex>
//
// with vcx 0 for vcluster 1 and 2 for vcluster 2, for groups 0-255. Groups
// 256-511, 512-767 and 768-1023 use the prefixes e0:23:ff:fc, e0:23:ff:fd and
// e0:23:ff:fe followed by the low 8 bits of the group id. For example group
// 10, vcluster 1, idx 3 gives 00:09:0f:09:0a:03 and vcluster 2 gives
// 00:09:0f:09:0a:23; group 300, vcluster 1, idx 0 gives e0:23:ff:fc:2c:00.
//
// It returns an error for a group id outside 0-1023, a vcluster other than 1
// or 2, or an idx outside 0-15.
func MAC(groupID, vcluster, idx int) (net.HardwareAddr, error) {
	if groupID < 0 || groupID > MaxGroupID {
		return nil, fmt.Errorf("vmac: group id %d out of range 0-%d", groupID, MaxGroupID)
	}
	var vcx byte
	switch vcluster {
	case 1:
		vcx = 0x00
	case 2:
		vcx = 0x20
	default:
		return nil, fmt.Errorf("vmac: vcluster %d invalid, must be 1 or 2", vcluster)
	}
	if idx < 0 || idx >= MaxInterfaces {
		return nil, fmt.Errorf("vmac: interface index %d out of range 0-%d", idx, MaxInterfaces-1)
	}

	var prefix [4]byte
	switch groupID >> 8 {
	case 0:
		prefix = [4]byte{0x00, 0x09, 0x0f, 0x09}
	case 1:
		prefix = [4]byte{0xe0, 0x23, 0xff, 0xfc}
	case 2:
		prefix = [4]byte{0xe0, 0x23, 0xff, 0xfd}
	case 3:
		prefix = [4]byte{0xe0, 0x23, 0xff, 0xfe}
	}
	return net.HardwareAddr{
		prefix[0], prefix[1], prefix[2], prefix[3],
		byte(groupID & 0xff),
		vcx | byte(idx),
	}, nil
}

// Assign returns the virtual MAC of every named data interface of vcluster
// vcluster in HA group groupID. The names are sorted and each interface's
// index is its position in the sorted list, so the result does not depend on
// the order of names. More than MaxInterfaces interfaces, an empty or
// duplicate name, or an invalid group or vcluster is an error.
func Assign(names []string, groupID, vcluster int) (map[string]net.HardwareAddr, error) {
	if len(names) > MaxInterfaces {
		return nil, fmt.Errorf("vmac: %d data interfaces, at most %d per vcluster", len(names), MaxInterfaces)
	}
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	out := make(map[string]net.HardwareAddr, len(sorted))
	for i, name := range sorted {
		if name == "" {
			return nil, fmt.Errorf("vmac: empty interface name")
		}
		if i > 0 && sorted[i-1] == name {
			return nil, fmt.Errorf("vmac: interface %q listed twice", name)
		}
		mac, err := MAC(groupID, vcluster, i)
		if err != nil {
			return nil, err
		}
		out[name] = mac
	}
	return out, nil
}
