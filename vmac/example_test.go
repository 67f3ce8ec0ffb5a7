package vmac_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/hagent/hagent/vmac"
)

func ExampleMAC() {
	for _, c := range []struct{ group, vc, idx int }{{10, 1, 3}, {10, 2, 3}, {300, 1, 0}} {
		mac, err := vmac.MAC(c.group, c.vc, c.idx)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(mac)
	}
	_, err := vmac.MAC(10, 1, 16)
	fmt.Println(err)
	// Output:
	// 00:09:0f:09:0a:03
	// 00:09:0f:09:0a:23
	// e0:23:ff:fc:2c:00
	// vmac: interface index 16 out of range 0-15
}

func ExampleAssign() {
	macs, err := vmac.Assign([]string{"port2", "port1"}, 10, 1)
	if err != nil {
		panic(err)
	}
	fmt.Println(macs["port1"], macs["port2"])
	// Output: 00:09:0f:09:0a:00 00:09:0f:09:0a:01
}

// The agent builds the Manager once at start-up, cleans up what a crashed
// predecessor may have left, and then takes or releases on role changes.
func ExampleManager() {
	m, err := vmac.NewManager(vmac.Config{
		GroupID:  10,
		VCluster: 1,
		Interfaces: []vmac.Interface{
			{Name: "port1", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.9.0.100/24")}},
		},
		ARPs:        5,
		ARPInterval: 8 * time.Second,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	if err := m.Reset(); err != nil {
		fmt.Println(err)
	}

	// On becoming primary:
	rep, err := m.Take()
	if err != nil {
		fmt.Println(err)
	}
	fmt.Println("first GARP after", rep.FirstGARP.Sub(rep.Start))

	// On becoming secondary:
	if err := m.Release(); err != nil {
		fmt.Println(err)
	}
}
