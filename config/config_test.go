package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// withIdentity pins the hostname and machine id used for defaults.
// machineID "" means the machine-id file does not exist.
func withIdentity(t *testing.T, host, machineID string) {
	t.Helper()
	oldHost, oldFile := hostname, machineIDFile
	t.Cleanup(func() { hostname, machineIDFile = oldHost, oldFile })
	hostname = func() (string, error) { return host, nil }
	machineIDFile = filepath.Join(t.TempDir(), "machine-id")
	if machineID != "" {
		if err := os.WriteFile(machineIDFile, []byte(machineID), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const testMachineID = "0123456789abcdef0123456789abcdef\n"

// base is the smallest valid cluster section; extra cluster keys appended
// to it start at line 4.
const base = "cluster:\n  password_file: /etc/hagent/key\n  hbdev: [{name: ha1}]\n"

func TestDefault(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	want := Config{
		ControlSocket: "/run/hagent/hagent.sock",
		LogFormat:     "text",
		LogLevel:      "info",
		Node: Node{
			Name:      "box1",
			Serial:    "HAGT0123456789AB",
			Priority:  128,
			VCluster2: NodeVCluster{Priority: 128}, Mgmt: NodeMgmt{Table: 200},
		},
		Cluster: Cluster{
			Auth:             true,
			Mode:             "a-p",
			VCluster:         1,
			HBInterval:       200 * time.Millisecond,
			HBLostThreshold:  6,
			HelloHolddown:    20 * time.Second,
			UptimeDiffMargin: 300 * time.Second,
			CarrierDebounce:  4 * time.Millisecond,
			MonitorHolddown:  time.Second,
			UnicastHB:        UnicastHB{Port: 6065, SyncPort: 6066, SessionPort: 6067},
			EthType:          EthTypes{HA: 0x8890, HC: 0x8891, L2EP: 0x8893, Session: 0x8892},
			PingServer:       PingServer{Interval: time.Second, FailoverThreshold: 5},
			ARPs:             5,
			ARPsInterval:     8 * time.Second,
			Sync:             Sync{Enabled: true, Period: 60 * time.Second},
			SessionPickup:    SessionPickup{NAT: true},
			Hooks:            Hooks{Timeout: 30 * time.Second},
			VCluster2:        VCluster2{PingServer: PingServer{Interval: time.Second, FailoverThreshold: 5}},
		},
	}
	if got := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Default() =\n%+v\nwant\n%+v", got, want)
	}

	// A minimal file gets the same defaults.
	got, err := Parse("min.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	want.Path = "min.yaml"
	want.Cluster.PasswordFile = "/etc/hagent/key"
	want.Cluster.HBDevs = []HBDev{{Name: "ha1"}}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("Parse(minimal) =\n%+v\nwant\n%+v", *got, want)
	}

	// Null values and empty name/serial also mean "default".
	got, err = Parse("null.yaml", []byte("control_socket:\nnode: {name: \"\", serial: \"\", priority: ~}\n"+base+"  hb_interval:\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Node, want.Node) || got.Cluster.HBInterval != DefaultHBInterval || got.ControlSocket != DefaultControlSocket {
		t.Errorf("nulls did not give defaults: %+v", got)
	}
}

func TestDeriveSerial(t *testing.T) {
	hostHash := func(h string) string {
		s := sha256.Sum256([]byte(h))
		return "HAGT" + strings.ToUpper(hex.EncodeToString(s[:])[:12])
	}
	tests := []struct {
		name, host, machineID, want string
	}{
		{"machine-id", "box1", testMachineID, "HAGT0123456789AB"},
		{"machine-id upper", "box1", "ABCDEF0123456789ABCDEF0123456789", "HAGTABCDEF012345"},
		{"missing machine-id", "box1", "", hostHash("box1")},
		{"other host", "box2", "", hostHash("box2")},
		{"malformed machine-id", "box1", "not-hex-at-all-really\n", hostHash("box1")},
		{"short machine-id", "box1", "0123\n", hostHash("box1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			withIdentity(t, tt.host, tt.machineID)
			c := Default()
			if c.Node.Serial != tt.want || c.Node.Name != tt.host {
				t.Errorf("name, serial = %q, %q; want %q, %q", c.Node.Name, c.Node.Serial, tt.host, tt.want)
			}
			if msg := checkSerial(c.Node.Serial); msg != "" {
				t.Errorf("derived serial is invalid: %s", msg)
			}
		})
	}
}

func TestExampleFile(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := newDecoder("testdata/example.yaml")
	c := d.parseConfig(data)
	if err := d.errorsOrNil(); err != nil {
		t.Fatalf("example does not parse:\n%v", err)
	}
	// Every key of the schema appears in the example.
	seen := map[string]bool{}
	for k := range d.lines {
		seen[normalizeKey(k)] = true
	}
	if len(d.known) < 50 {
		t.Fatalf("only %d schema keys recorded", len(d.known))
	}
	for k := range d.known {
		if !seen[normalizeKey(k)] {
			t.Errorf("example.yaml does not set %s", k)
		}
	}
	// Spot checks of parsed values.
	if c.Node.Name != "node-a" || c.Node.Priority != 200 || c.Cluster.GroupID != 10 {
		t.Errorf("node/cluster = %+v / %+v", c.Node, c.Cluster)
	}
	wantIfc := []Interface{
		{Name: "port1", Addresses: []netip.Prefix{netip.MustParsePrefix("10.9.0.100/24"), netip.MustParsePrefix("2001:db8:9::100/64")}},
		{Name: "port2", Addresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24")}},
	}
	if !reflect.DeepEqual(c.Cluster.Interfaces, wantIfc) {
		t.Errorf("interfaces = %v, want %v", c.Cluster.Interfaces, wantIfc)
	}
	if got := c.Cluster.Sync.OnChange["/etc/nftables.conf"]; got != "nft -f /etc/nftables.conf" {
		t.Errorf("on_change = %q", got)
	}
	if got := c.Cluster.PingServer.Targets; len(got) != 1 || got[0] != netip.MustParseAddr("10.9.0.254") {
		t.Errorf("targets = %v", got)
	}
}

// normalizeKey replaces list indexes and map keys by [].
func normalizeKey(k string) string {
	var b strings.Builder
	depth := 0
	for _, r := range k {
		switch {
		case r == '[':
			if depth == 0 {
				b.WriteString("[]")
			}
			depth++
		case r == ']' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestValidation(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	many := func(n int, item string) string {
		s := make([]string, n)
		for i := range s {
			s[i] = strings.ReplaceAll(item, "N", string(rune('a'+i%26))+string(rune('a'+i/26)))
		}
		return "[" + strings.Join(s, ", ") + "]"
	}
	tests := []struct {
		name, yaml, want string
	}{
		// Top level.
		{"control_socket relative", "control_socket: run/h.sock\n" + base, `t.yaml:1: control_socket: "run/h.sock" is not an absolute path`},
		{"control_socket long", "control_socket: /" + strings.Repeat("x", 107) + "\n" + base, "t.yaml:1: control_socket: path is 108 bytes long"},
		{"log_format", "log_format: xml\n" + base, `t.yaml:1: log_format: "xml" is not a log format`},
		{"log_level", "log_level: verbose\n" + base, `t.yaml:1: log_level: "verbose" is not a log level`},
		{"metrics_listen", "metrics_listen: localhost\n" + base, `t.yaml:1: metrics_listen: "localhost" is not an address and port`},
		{"metrics_listen port 0", "metrics_listen: 127.0.0.1:0\n" + base, `t.yaml:1: metrics_listen: "127.0.0.1:0" is not an address and port`},

		// Node.
		{"node priority high", "node:\n  priority: 256\n" + base, "t.yaml:2: node.priority: 256 is out of range 0-255"},
		{"node priority low", "node:\n  priority: -1\n" + base, "t.yaml:2: node.priority: -1 is out of range 0-255"},
		{"node name space", "node:\n  name: \"a b\"\n" + base, `t.yaml:2: node.name: "a b" contains ' '`},
		{"node name long", "node:\n  name: " + strings.Repeat("n", 65) + "\n" + base, "t.yaml:2: node.name: " + `"` + strings.Repeat("n", 65) + `" is longer than 64 bytes`},
		{"node serial char", "node:\n  serial: \"AB/CD\"\n" + base, `t.yaml:2: node.serial: "AB/CD" contains '/'`},
		{"node serial long", "node:\n  serial: " + strings.Repeat("S", 33) + "\n" + base, "t.yaml:2: node.serial: "},

		// Cluster identity and auth.
		{"group_id high", base + "  group_id: 1024\n", "t.yaml:4: cluster.group_id: 1024 is out of range 0-1023"},
		{"group_id low", base + "  group_id: -1\n", "t.yaml:4: cluster.group_id: -1 is out of range 0-1023"},
		{"group_name long", base + "  group_name: " + strings.Repeat("g", 33) + "\n", "t.yaml:4: cluster.group_name: "},
		{"group_name control", base + "  group_name: \"a\\tb\"\n", `t.yaml:4: cluster.group_name: "a\tb" contains the control character`},
		{"password_file missing", "cluster:\n  hbdev: [{name: ha1}]\n", "t.yaml:1: cluster.password_file: required when auth is true"},
		{"password_file empty", "cluster:\n  password_file: \"\"\n  hbdev: [{name: ha1}]\n", "t.yaml:2: cluster.password_file: required when auth is true"},
		{"password_file relative", "cluster:\n  password_file: key\n  hbdev: [{name: ha1}]\n", `t.yaml:2: cluster.password_file: "key" is not an absolute path`},
		{"mode a-a", base + "  mode: a-a\n", `t.yaml:4: cluster.mode: active-active mode "a-a" is not supported`},
		{"mode other", base + "  mode: x\n", `t.yaml:4: cluster.mode: "x" is not a mode; want a-p or fgsp`},
		{"fgsp interfaces", base + "  mode: fgsp\n  interfaces:\n    - {name: port1, addresses: [10.9.0.100/24]}\n", "t.yaml:5: cluster.interfaces: not used in mode fgsp"},
		{"fgsp vcluster2", base + "  mode: fgsp\n  vcluster2: {enabled: true}\n", "t.yaml:5: cluster.vcluster2: not used in mode fgsp"},
		{"fgsp expectation", base + "  mode: fgsp\n  session_pickup: {enabled: true, expectation: true}\n", "t.yaml:5: cluster.session_pickup.expectation: not supported in mode fgsp"},
		{"vcluster", base + "  vcluster: 3\n", "t.yaml:4: cluster.vcluster: 3 is not a vcluster; want 1 or 2"},
		{"vcluster zero", base + "  vcluster: 0\n", "t.yaml:4: cluster.vcluster: 0 is not a vcluster"},

		// Heartbeat devices.
		{"hbdev missing", "cluster:\n  password_file: /k\n", "t.yaml:1: cluster.hbdev: at least one hbdev is required"},
		{"hbdev empty", "cluster:\n  password_file: /k\n  hbdev: []\n", "t.yaml:3: cluster.hbdev: at least one hbdev is required"},
		{"no cluster at all", "node: {name: a}\n", "t.yaml:1: cluster.hbdev: at least one hbdev is required"},
		{"hbdev duplicate", "cluster:\n  password_file: /k\n  hbdev:\n    - {name: ha1}\n    - {name: ha1}\n", "t.yaml:5: cluster.hbdev[1].name: ha1 is already hbdev[0]"},
		{"hbdev priority", "cluster:\n  password_file: /k\n  hbdev:\n    - {name: ha1}\n    - name: ha2\n      priority: 256\n", "t.yaml:6: cluster.hbdev[1].priority: 256 is out of range 0-255"},
		{"hbdev no name", "cluster:\n  password_file: /k\n  hbdev:\n    - {priority: 3}\n", "t.yaml:4: cluster.hbdev[0].name: an interface name is required"},
		{"hbdev slash", "cluster:\n  password_file: /k\n  hbdev: [{name: a/b}]\n", `t.yaml:3: cluster.hbdev[0].name: interface name "a/b" contains '/'`},
		{"hbdev colon", "cluster:\n  password_file: /k\n  hbdev: [{name: \"eth0:1\"}]\n", `t.yaml:3: cluster.hbdev[0].name: interface name "eth0:1" contains ':'`},
		{"hbdev dotdot", "cluster:\n  password_file: /k\n  hbdev: [{name: ..}]\n", `t.yaml:3: cluster.hbdev[0].name: ".." is not a valid interface name`},
		{"hbdev dot", "cluster:\n  password_file: /k\n  hbdev: [{name: .}]\n", `t.yaml:3: cluster.hbdev[0].name: "." is not a valid interface name`},
		{"hbdev space", "cluster:\n  password_file: /k\n  hbdev: [{name: \"a b\"}]\n", `t.yaml:3: cluster.hbdev[0].name: interface name "a b" contains ' '`},
		{"hbdev long", "cluster:\n  password_file: /k\n  hbdev: [{name: abcdefghijklmnop}]\n", `t.yaml:3: cluster.hbdev[0].name: interface name "abcdefghijklmnop" is longer than 15 bytes`},
		{"hbdev too many", "cluster:\n  password_file: /k\n  hbdev: " + many(17, "{name: hN}") + "\n", "t.yaml:3: cluster.hbdev: 17 hbdevs; at most 16 allowed"},

		// Timers.
		{"hb_interval low", base + "  hb_interval: 5ms\n", "t.yaml:4: cluster.hb_interval: 5ms is out of range 10ms-1m"},
		{"hb_interval high", base + "  hb_interval: 61s\n", "t.yaml:4: cluster.hb_interval: 61s is out of range 10ms-1m"},
		{"hb_interval negative", base + "  hb_interval: -1s\n", "t.yaml:4: cluster.hb_interval: -1s is out of range"},
		{"hb_lost_threshold low", base + "  hb_lost_threshold: 0\n", "t.yaml:4: cluster.hb_lost_threshold: 0 is out of range 1-60"},
		{"hb_lost_threshold high", base + "  hb_lost_threshold: 61\n", "t.yaml:4: cluster.hb_lost_threshold: 61 is out of range 1-60"},
		{"unicast_hb one peer", base + "  unicast_hb: {enabled: true, peers: [10.99.1.1]}\n", "t.yaml:4: cluster.unicast_hb.peers: every member's address, this node's included: at least 2"},
		{"unicast_hb bad peer", base + "  unicast_hb: {peers: [10.99.1.1, nope]}\n", "t.yaml:4: cluster.unicast_hb.peers[1]:"},
		{"unicast_hb loopback peer", base + "  unicast_hb: {peers: [127.0.0.1, 10.99.1.1]}\n", "t.yaml:4: cluster.unicast_hb.peers[0]: 127.0.0.1 is not a member's unicast address"},
		{"unicast_hb same port", base + "  unicast_hb: {port: 7000, sync_port: 7000}\n", "t.yaml:4: cluster.unicast_hb.sync_port: 7000 is already port"},
		{"unicast_hb port range", base + "  unicast_hb: {port: 70000}\n", "t.yaml:4: cluster.unicast_hb.port: 70000 is out of range 1-65535"},
		{"no hbdev without unicast_hb", "cluster:\n  password_file: /k\n", "cluster.hbdev: at least one hbdev is required"},
		{"hello_holddown", base + "  hello_holddown: 301s\n", "t.yaml:4: cluster.hello_holddown: 301s is out of range 0s-5m"},
		{"hello_holddown negative", base + "  hello_holddown: -1ms\n", "t.yaml:4: cluster.hello_holddown: -1ms is out of range"},
		{"uptime_diff_margin", base + "  uptime_diff_margin: 65536s\n", "t.yaml:4: cluster.uptime_diff_margin: 65536s is out of range 0s-65535s"},
		{"failover_hold_time", base + "  failover_hold_time: 5m1s\n", "t.yaml:4: cluster.failover_hold_time: 301s is out of range 0s-5m"},
		{"monitor_holddown", base + "  monitor_holddown: 61s\n", "t.yaml:4: cluster.monitor_holddown: 61s is out of range 0s-1m"},
		{"monitor_holddown negative", base + "  monitor_holddown: -1s\n", "t.yaml:4: cluster.monitor_holddown: -1s is out of range"},
		{"override_wait_time", base + "  override_wait_time: 3601s\n", "t.yaml:4: cluster.override_wait_time: 3601s is out of range 0s-1h"},
		{"pingserver flip_timeout", base + "  pingserver: {flip_timeout: 25h}\n", "t.yaml:4: cluster.pingserver.flip_timeout: 25h is out of range 0s-24h"},
		{"vcluster2 pingserver flip_timeout", base + "  vcluster2: {pingserver: {flip_timeout: -1s}}\n", "cluster.vcluster2.pingserver.flip_timeout: -1s is out of range"},

		// Ethertypes.
		{"eth_type ipv4", base + "  eth_type: {ha: 0x0800}\n", "t.yaml:4: cluster.eth_type.ha: 0x0800 is the IPv4 Ethertype"},
		{"eth_type arp", base + "  eth_type: {hc: 0x0806}\n", "t.yaml:4: cluster.eth_type.hc: 0x0806 is the ARP Ethertype"},
		{"eth_type ipv6", base + "  eth_type: {l2ep: 0x86dd}\n", "t.yaml:4: cluster.eth_type.l2ep: 0x86dd is the IPv6 Ethertype"},
		{"eth_type vlan", base + "  eth_type: {session: 0x8100}\n", "t.yaml:4: cluster.eth_type.session: 0x8100 is the 802.1Q VLAN Ethertype"},
		{"eth_type qinq", base + "  eth_type: {session: \"0x88A8\"}\n", "t.yaml:4: cluster.eth_type.session: 0x88a8 is the 802.1ad QinQ Ethertype"},
		{"eth_type length", base + "  eth_type: {ha: 0x05ff}\n", "t.yaml:4: cluster.eth_type.ha: 0x05ff is out of range 0x0600-0xffff"},
		{"eth_type too big", base + "  eth_type: {ha: 0x10000}\n", "t.yaml:4: cluster.eth_type.ha: 0x10000 is out of range 0x0600-0xffff"},
		{"eth_type negative", base + "  eth_type: {ha: -1}\n", "t.yaml:4: cluster.eth_type.ha: want an Ethertype"},
		{"eth_type duplicate", base + "  eth_type:\n    ha: 0x9000\n    hc: 36864\n", "t.yaml:6: cluster.eth_type.hc: 0x9000 is already used by eth_type.ha"},
		{"eth_type default clash", base + "  eth_type: {session: 0x8890}\n", "t.yaml:4: cluster.eth_type.session: 0x8890 is already used by eth_type.ha"},

		// Interfaces and addresses.
		{"interfaces too many", base + "  interfaces: " + many(17, "{name: pN}") + "\n", "t.yaml:4: cluster.interfaces: 17 interfaces; at most 16 allowed"},
		{"interface duplicate", base + "  interfaces:\n    - {name: p1}\n    - {name: p1}\n", "t.yaml:6: cluster.interfaces[1].name: p1 is already interfaces[0]"},
		{"interface is hbdev", base + "  interfaces:\n    - {name: ha1}\n", "t.yaml:5: cluster.interfaces[0].name: ha1 is also an hbdev"},
		{"interface no name", base + "  interfaces:\n    - addresses: [10.0.0.1/24]\n", "t.yaml:5: cluster.interfaces[0].name: an interface name is required"},
		{"address no prefix", base + "  interfaces:\n    - name: p1\n      addresses: [10.9.0.100]\n", `t.yaml:6: cluster.interfaces[0].addresses[0]: want an address with its prefix length such as 10.9.0.100/24, got "10.9.0.100"`},
		{"address network", base + "  interfaces:\n    - name: p1\n      addresses: [10.9.0.0/24]\n", "t.yaml:6: cluster.interfaces[0].addresses[0]: 10.9.0.0/24 is the network address of its subnet"},
		{"address broadcast", base + "  interfaces:\n    - name: p1\n      addresses: [10.9.0.255/24]\n", "t.yaml:6: cluster.interfaces[0].addresses[0]: 10.9.0.255/24 is the broadcast address"},
		{"address v6 network", base + "  interfaces:\n    - name: p1\n      addresses: [\"2001:db8::/64\"]\n", "t.yaml:6: cluster.interfaces[0].addresses[0]: 2001:db8::/64 is the network address"},
		{"address multicast", base + "  interfaces:\n    - name: p1\n      addresses: [224.0.0.5/24]\n", "t.yaml:6: cluster.interfaces[0].addresses[0]: 224.0.0.5/24 is not a unicast host address"},
		{"address mapped", base + "  interfaces:\n    - name: p1\n      addresses: [\"::ffff:10.0.0.1/120\"]\n", "t.yaml:6: cluster.interfaces[0].addresses[0]: ::ffff:10.0.0.1/120 is an IPv4-mapped"},
		{"address duplicate across", base + "  interfaces:\n    - name: p1\n      addresses: [10.9.0.1/24]\n    - name: p2\n      addresses: [10.9.0.1/16]\n", "t.yaml:8: cluster.interfaces[1].addresses[0]: 10.9.0.1 is already at interfaces[0].addresses[0]"},
		{"address duplicate within", base + "  interfaces:\n    - name: p1\n      addresses:\n        - 10.9.0.1/24\n        - 10.9.0.1/24\n", "t.yaml:8: cluster.interfaces[0].addresses[1]: 10.9.0.1 is already at interfaces[0].addresses[0]"},
		{"addresses too many", base + "  interfaces:\n    - name: p1\n      addresses: " + many(65, "10.0.0.1/8") + "\n", "t.yaml:6: cluster.interfaces[0].addresses: 65 addresses; at most 64 allowed"},

		// Monitor and ping servers.
		{"monitor duplicate", base + "  monitor: [p1, p2, p1]\n", "t.yaml:4: cluster.monitor[2]: p1 is already monitor[0]"},
		{"monitor bad name", base + "  monitor: [\"a b\"]\n", `t.yaml:4: cluster.monitor[0]: interface name "a b" contains ' '`},
		{"targets without interfaces", base + "  pingserver:\n    targets: [10.0.0.1]\n", "t.yaml:4: cluster.pingserver.interfaces: required when pingserver.targets is set"},
		{"interfaces without targets", base + "  pingserver:\n    interfaces: [p1]\n", "t.yaml:4: cluster.pingserver.targets: required when pingserver.interfaces is set"},
		{"target bad", base + "  pingserver:\n    interfaces: [p1]\n    targets: [10.0.0.300]\n", `t.yaml:6: cluster.pingserver.targets[0]: want an IP address such as 10.9.0.254, got "10.0.0.300"`},
		{"target duplicate", base + "  pingserver:\n    interfaces: [p1]\n    targets:\n      - 10.0.0.1\n      - 10.0.0.1\n", "t.yaml:8: cluster.pingserver.targets[1]: 10.0.0.1 is already targets[0]"},
		{"target multicast", base + "  pingserver:\n    interfaces: [p1]\n    targets: [ff02::1]\n", "t.yaml:6: cluster.pingserver.targets[0]: ff02::1 is not a unicast address"},
		{"target zone", base + "  pingserver:\n    interfaces: [p1]\n    targets: [\"fe80::1%p1\"]\n", "t.yaml:6: cluster.pingserver.targets[0]: fe80::1%p1 has a zone"},
		{"target IPv6", base + "  interfaces: [{name: p1, addresses: [\"2001:db8::100/64\"]}]\n  pingserver:\n    interfaces: [p1]\n    targets: [\"2001:db8::1\"]\n", "t.yaml:7: cluster.pingserver.targets[0]: 2001:db8::1: only IPv4 targets are supported"},
		{"target off the interface's subnets", base + "  interfaces: [{name: p1, addresses: [10.9.0.100/24]}]\n  pingserver:\n    interfaces: [p1]\n    targets: [10.8.0.1]\n", "t.yaml:7: cluster.pingserver.targets[0]: 10.8.0.1 is not inside a cluster subnet of pingserver.interfaces [p1]"},
		{"ping interfaces duplicate", base + "  pingserver:\n    interfaces: [p1, p1]\n    targets: [10.0.0.1]\n", "t.yaml:5: cluster.pingserver.interfaces[1]: p1 is already interfaces[0]"},
		{"ping interval", base + "  pingserver: {interval: 50ms}\n", "t.yaml:4: cluster.pingserver.interval: 50ms is out of range 100ms-1m"},
		{"ping threshold low", base + "  pingserver: {failover_threshold: 0}\n", "t.yaml:4: cluster.pingserver.failover_threshold: 0 is out of range 1-100"},
		{"ping threshold high", base + "  pingserver: {failover_threshold: 101}\n", "t.yaml:4: cluster.pingserver.failover_threshold: 101 is out of range 1-100"},

		// Gratuitous ARPs.
		{"arps low", base + "  arps: 0\n", "t.yaml:4: cluster.arps: 0 is out of range 1-60"},
		{"arps high", base + "  arps: 61\n", "t.yaml:4: cluster.arps: 61 is out of range 1-60"},
		{"arps_interval low", base + "  arps_interval: 500ms\n", "t.yaml:4: cluster.arps_interval: 500ms is out of range 1s-20s"},
		{"arps_interval high", base + "  arps_interval: 21s\n", "t.yaml:4: cluster.arps_interval: 21s is out of range 1s-20s"},

		// Sync.
		{"sync path relative", base + "  sync:\n    paths: [etc/x]\n", `t.yaml:5: cluster.sync.paths[0]: "etc/x" is not an absolute path`},
		{"sync path root", base + "  sync:\n    paths: [/]\n", "t.yaml:5: cluster.sync.paths[0]: the root directory cannot be synchronized"},
		{"sync path root unclean", base + "  sync:\n    paths: [/etc/..]\n", "t.yaml:5: cluster.sync.paths[0]: the root directory cannot be synchronized"},
		{"sync path empty", base + "  sync:\n    paths: [\"\"]\n", "t.yaml:5: cluster.sync.paths[0]: a path is required"},
		{"sync path duplicate", base + "  sync:\n    paths:\n      - /etc/a\n      - /etc/b/../a/\n", "t.yaml:7: cluster.sync.paths[1]: /etc/a is already paths[0]"},
		{"sync path nested", base + "  sync:\n    paths:\n      - /etc/a/b\n      - /etc/a\n", "t.yaml:7: cluster.sync.paths[1]: /etc/a and /etc/a/b are nested"},
		{"sync period low", base + "  sync: {period: 500ms}\n", "t.yaml:4: cluster.sync.period: 500ms is out of range 1s-24h"},
		{"session_pickup delay high", base + "  session_pickup:\n    delay: 2h\n", "t.yaml:5: cluster.session_pickup.delay: 2h is out of range 0s-1h"},
		{"session_pickup unknown", base + "  session_pickup:\n    enable: true\n", "t.yaml:5: cluster.session_pickup.enable: unknown key"},
		{"session_pickup bad prefix", base + "  session_pickup:\n    ignore: [10.9.1.0/33]\n", "t.yaml:5: cluster.session_pickup.ignore[0]: "},
		{"session_pickup sync_dev hbdev", base + "  session_pickup:\n    sync_dev: [ha1]\n", "t.yaml:5: cluster.session_pickup.sync_dev[0]: ha1 is an hbdev"},
		{"session_pickup down hbdev", base + "  session_pickup:\n    down_until_synced: [ha1]\n", "t.yaml:5: cluster.session_pickup.down_until_synced[0]: ha1 is an hbdev"},
		{"session_pickup ignore dup", base + "  session_pickup:\n    ignore: [10.9.1.0/24, 10.9.1.7/24]\n", "t.yaml:5: cluster.session_pickup.ignore[1]: 10.9.1.0/24 is already ignore[0]"},
		{"sync period high", base + "  sync: {period: 25h}\n", "t.yaml:4: cluster.sync.period: 25h is out of range 1s-24h"},
		{"on_change not synced", base + "  sync:\n    paths: [/etc/a]\n    on_change:\n      /etc/ab: \"true\"\n", `t.yaml:7: cluster.sync.on_change["/etc/ab"]: /etc/ab is not one of sync.paths nor under one`},
		{"on_change relative", base + "  sync:\n    paths: [/etc/a]\n    on_change: {etc/a: \"true\"}\n", `t.yaml:6: cluster.sync.on_change["etc/a"]: "etc/a" is not an absolute path`},
		{"on_change no command", base + "  sync:\n    paths: [/etc/a]\n    on_change:\n      /etc/a: \"\"\n", `t.yaml:7: cluster.sync.on_change["/etc/a"]: a command is required`},
		{"on_change duplicate", base + "  sync:\n    paths: [/etc/a]\n    on_change:\n      /etc/a: x\n      /etc/a: y\n", `t.yaml:8: cluster.sync.on_change["/etc/a"]: duplicate key (first at line 7)`},
		{"on_change same once cleaned", base + "  sync:\n    paths: [/etc/a]\n    on_change:\n      /etc/a: x\n      /etc/a/: y\n", `cluster.sync.on_change["/etc/a/"]: /etc/a is listed twice once cleaned`},

		// Hooks.
		{"hooks timeout low", base + "  hooks: {timeout: 0s}\n", "t.yaml:4: cluster.hooks.timeout: 0s is out of range 1s-1h"},
		{"hooks timeout high", base + "  hooks: {timeout: 61m}\n", "t.yaml:4: cluster.hooks.timeout: 61m is out of range 1s-1h"},
		{"hooks blank", base + "  hooks:\n    fault: \"  \"\n", "t.yaml:5: cluster.hooks.fault: the command is only blanks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("no error; want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error:\n%v\nwant it to contain\n%s", err, tt.want)
			}
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is %T, want Errors", err)
			}
		})
	}
}

// TestValid checks that values at the edges of their ranges are accepted.
func TestValid(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	tests := []struct {
		name, yaml string
		check      func(c *Config) bool
	}{
		{"auth off without password", "cluster:\n  auth: false\n  sync: {enabled: false}\n  hbdev: [{name: ha1}]\n", func(c *Config) bool { return !c.Cluster.Auth && c.Cluster.PasswordFile == "" }},
		{"edges low", base + "  group_id: 0\n  hb_interval: 10ms\n  hb_lost_threshold: 1\n  hello_holddown: 0s\n  arps: 1\n  arps_interval: 1s\n  eth_type: {ha: 0x0600}\n",
			func(c *Config) bool {
				return c.Cluster.HBInterval == 10*time.Millisecond && c.Cluster.EthType.HA == 0x600
			}},
		{"edges high", "node: {priority: 255}\n" + base + "  group_id: 1023\n  hb_interval: 60s\n  hb_lost_threshold: 60\n  hello_holddown: 300s\n  uptime_diff_margin: 65535s\n  failover_hold_time: 5m\n  monitor_holddown: 60s\n  override_wait_time: 3600s\n  arps: 60\n  arps_interval: 20s\n  vcluster: 2\n  eth_type: {ha: 0xffff}\n",
			func(c *Config) bool {
				return c.Node.Priority == 255 && c.Cluster.GroupID == 1023 && c.Cluster.VCluster == 2 && c.Cluster.UptimeDiffMargin == 65535*time.Second &&
					c.Cluster.MonitorHolddown == time.Minute && c.Cluster.OverrideWaitTime == time.Hour
			}},
		{"node priority zero", "node: {priority: 0}\n" + base, func(c *Config) bool { return c.Node.Priority == 0 }},
		{"ethertype forms", base + "  eth_type: {ha: 36864, hc: \"0x9001\", l2ep: 0x9002, session: \"36867\"}\n",
			func(c *Config) bool {
				return c.Cluster.EthType == EthTypes{HA: 0x9000, HC: 0x9001, L2EP: 0x9002, Session: 0x9003}
			}},
		{"point-to-point addresses", base + "  interfaces:\n    - name: p1\n      addresses: [10.0.0.0/31, 10.0.0.3/32, \"2001:db8::/127\", \"fe80::1/64\"]\n",
			func(c *Config) bool { return len(c.Cluster.Interfaces[0].Addresses) == 4 }},
		{"sync paths cleaned", base + "  sync:\n    paths: [/etc/a/, /etc//b]\n    on_change: {/etc/a/x/: cmd}\n",
			func(c *Config) bool {
				return reflect.DeepEqual(c.Cluster.Sync.Paths, []string{"/etc/a", "/etc/b"}) && c.Cluster.Sync.OnChange["/etc/a/x"] == "cmd"
			}},
		{"sibling paths are not nested", base + "  sync:\n    paths: [/etc/a, /etc/ab]\n", func(c *Config) bool { return len(c.Cluster.Sync.Paths) == 2 }},
		{"anchors and aliases", "node: {name: &n box9}\ncluster:\n  password_file: /k\n  hbdev: &h [{name: ha1}]\n  monitor: [*n]\n",
			func(c *Config) bool { return c.Node.Name == "box9" && c.Cluster.Monitor[0] == "box9" }},
		{"monitor any interface", base + "  monitor: [ha1, port9]\n", func(c *Config) bool { return len(c.Cluster.Monitor) == 2 }},
		{"empty lists stay nil", base + "  monitor: []\n  interfaces: []\n  sync: {paths: [], on_change: {}}\n",
			func(c *Config) bool {
				return c.Cluster.Monitor == nil && c.Cluster.Interfaces == nil && c.Cluster.Sync.Paths == nil && c.Cluster.Sync.OnChange == nil
			}},
		{"session_pickup over unicast_hb alone", "cluster:\n  password_file: /k\n  hbdev: []\n  unicast_hb: {enabled: true, peers: [10.99.1.1, 10.99.2.1]}\n  session_pickup:\n    enabled: true\n",
			func(c *Config) bool {
				return c.Cluster.SessionPickup.Enabled && c.Cluster.UnicastHB.SessionPort == 6067
			}},
		{"log settings", "log_format: json\nlog_level: trace\n" + base, func(c *Config) bool { return c.LogFormat == "json" && c.LogLevel == "trace" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("t.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatalf("unexpected error:\n%v", err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected result: %+v", c)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	tests := []struct {
		name, yaml, want string
	}{
		// Unknown and duplicate keys.
		{"unknown cluster key", base + "  foo: 1\n", "t.yaml:4: cluster.foo: unknown key"},
		{"unknown top key", "nodes: {}\n" + base, "t.yaml:1: nodes: unknown key (did you mean node?)"},
		{"misspelt key", base + "  hb-interval: 1s\n", "t.yaml:4: cluster.hb-interval: unknown key (did you mean hb_interval?)"},
		{"unknown nested key", "cluster:\n  password_file: /k\n  hbdev:\n    - {name: ha1, prio: 3}\n", "t.yaml:4: cluster.hbdev[0].prio: unknown key (did you mean priority?)"},
		{"unknown eth_type key", base + "  eth_type:\n    hb: 0x9000\n", "t.yaml:5: cluster.eth_type.hb: unknown key"},
		{"duplicate key", base + "  arps: 3\n  arps: 4\n", "t.yaml:5: cluster.arps: duplicate key (first at line 4)"},
		{"merge key", "x: &x {arps: 3}\n" + base, "t.yaml:1: x: unknown key"},
		{"merge key inside", "cluster:\n  password_file: /k\n  hbdev: [{name: ha1}]\n  sync: {<<: {enabled: true}}\n", "t.yaml:4: cluster.sync.<<: merge keys are not supported"},
		{"non-string key", base + "  ? [a]\n  : 1\n", "t.yaml:4: cluster: want a key name, got a list"},

		// Type errors.
		{"int as text", "node:\n  priority: abc\n" + base, `t.yaml:2: node.priority: want an integer, got "abc"`},
		{"int as float", "node:\n  priority: 1.5\n" + base, `t.yaml:2: node.priority: want an integer, got "1.5"`},
		{"int quoted", "node:\n  priority: \"5\"\n" + base, `t.yaml:2: node.priority: want an integer, got "5"`},
		{"int overflow", "node:\n  priority: 99999999999999999999999\n" + base, `t.yaml:2: node.priority: want an integer`},
		{"duration bare int", base + "  hb_interval: 200\n", `t.yaml:4: cluster.hb_interval: want a duration such as "200ms", got "200"`},
		{"duration bad", base + "  hello_holddown: 20 seconds\n", `t.yaml:4: cluster.hello_holddown: want a duration such as "200ms", got "20 seconds"`},
		{"duration list", base + "  sync: {period: [1s]}\n", `t.yaml:4: cluster.sync.period: want a duration such as "200ms", got a list`},
		{"bool yes", base + "  auth: yes\n", `t.yaml:4: cluster.auth: want true or false, got "yes"`},
		{"bool int", "node: {override: 1}\n" + base, `t.yaml:1: node.override: want true or false, got "1"`},
		{"string as list", base + "  mode: [a-p]\n", "t.yaml:4: cluster.mode: want a string, got a list"},
		{"string as map", base + "  hooks: {primary: {a: b}}\n", "t.yaml:4: cluster.hooks.primary: want a string, got a mapping"},
		{"hbdev scalar", "cluster:\n  password_file: /k\n  hbdev: ha1\n", `t.yaml:3: cluster.hbdev: want a list, got "ha1"`},
		{"hbdev item scalar", "cluster:\n  password_file: /k\n  hbdev: [ha1]\n", `t.yaml:3: cluster.hbdev[0]: want a mapping, got "ha1"`},
		{"hbdev item null", "cluster:\n  password_file: /k\n  hbdev:\n    -\n", `t.yaml:4: cluster.hbdev[0]: want a mapping, got null`},
		{"cluster list", "cluster: [1]\n", "t.yaml:1: cluster: want a mapping, got a list"},
		{"node scalar", "node: 5\n" + base, `t.yaml:1: node: want a mapping, got "5"`},
		{"top scalar", "hello\n", `t.yaml:1: want a mapping of keys at the top level, got "hello"`},
		{"top list", "- a\n- b\n", "t.yaml:1: want a mapping of keys at the top level, got a list"},
		{"eth_type text", base + "  eth_type: {ha: abc}\n", `t.yaml:4: cluster.eth_type.ha: want an Ethertype such as 0x8890, got "abc"`},
		{"eth_type bool", base + "  eth_type: {ha: true}\n", `t.yaml:4: cluster.eth_type.ha: want an Ethertype such as 0x8890, got "true"`},
		{"addresses scalar", base + "  interfaces:\n    - name: p1\n      addresses: 10.0.0.1/24\n", `t.yaml:6: cluster.interfaces[0].addresses: want a list, got "10.0.0.1/24"`},
		{"on_change list", base + "  sync: {on_change: [a]}\n", "t.yaml:4: cluster.sync.on_change: want a mapping, got a list"},
		{"on_change value list", base + "  sync:\n    paths: [/a]\n    on_change: {/a: [x]}\n", `t.yaml:6: cluster.sync.on_change["/a"]: want a string, got a list`},
		{"invalid utf-8", base + "  group_name: \xff\xfe\n", "t.yaml:4: invalid leading UTF-8 octet"},
		{"nul byte", base + "  hooks: {primary: \"a\\0b\"}\n", "t.yaml:4: cluster.hooks.primary: contains a NUL character"},

		// Syntax errors.
		{"syntax flow", "cluster:\n  hbdev: [\n  x: y\n", "t.yaml:2: did not find expected ',' or ']'"},
		{"syntax mapping", "a: 1\nb: c: d\n", "t.yaml:2: mapping values are not allowed in this context"},
		{"syntax indent", "cluster:\n  password_file: /k\n hbdev: []\n", "t.yaml:3: did not find expected key"},
		{"syntax tab", "cluster:\n\thbdev: []\n", "t.yaml:2: found character that cannot start any token"},
		{"syntax quote", "a: 1\nb: \"abc\n", "t.yaml:2: found unexpected end of stream"},
		{"unknown anchor", "a: 1\nb: 2\nc: *nope\n", "t.yaml:3: unknown anchor 'nope' referenced"},
		{"two documents", base + "---\n" + base, "t.yaml:4: more than one YAML document; want one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("no error; want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error:\n%v\nwant it to contain\n%s", err, tt.want)
			}
		})
	}
}

// TestOneErrorPerMistake checks that a value that failed to decode does not
// also produce validation errors from its default.
func TestOneErrorPerMistake(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	tests := []struct{ name, yaml string }{
		{"hbdev type", "cluster:\n  password_file: /k\n  hbdev: ha1\n"},
		{"hbdev too many", "cluster:\n  password_file: /k\n  hbdev: [" + strings.Repeat("{name: a}, ", 17) + "]\n"},
		{"ethertype range", base + "  eth_type: {ha: 0x10000, hc: 0x8890}\n"},
		{"address", base + "  interfaces: [{name: p1, addresses: [bad]}]\n"},
		{"target", base + "  pingserver: {interfaces: [p1], targets: [bad]}\n"},
		{"password_file type", "cluster:\n  password_file: [x]\n  hbdev: [{name: ha1}]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			es, ok := err.(*Errors)
			if !ok {
				t.Fatalf("error is %T (%v), want *Errors", err, err)
			}
			if len(*es) != 1 {
				t.Errorf("got %d errors, want 1:\n%v", len(*es), err)
			}
		})
	}
}

func TestMultipleErrors(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	in := `log_format: xml
node:
  priority: 300
cluster:
  bogus: 1
  hbdev:
    - {name: ha1, priority: -1}
  hb_interval: 200
  mode: a-a
`
	_, err := Parse("m.yaml", []byte(in))
	want := []string{
		`m.yaml:1: log_format: "xml" is not a log format; want text or json`,
		"m.yaml:3: node.priority: 300 is out of range 0-255",
		"m.yaml:4: cluster.password_file: required when auth is true",
		"m.yaml:5: cluster.bogus: unknown key",
		"m.yaml:7: cluster.hbdev[0].priority: -1 is out of range 0-255",
		`m.yaml:8: cluster.hb_interval: want a duration such as "200ms", got "200"`,
		`m.yaml:9: cluster.mode: active-active mode "a-a" is not supported; want a-p or fgsp`,
	}
	if err == nil {
		t.Fatal("no error")
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
	var es *Errors
	if !errors.As(err, &es) || len(*es) != len(want) {
		t.Fatalf("errors.As(*Errors) failed or wrong count: %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Line != 1 || e.Key != "log_format" || e.File != "m.yaml" {
		t.Errorf("errors.As(*Error) = %+v", e)
	}
}

func TestTooManyErrors(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	var b strings.Builder
	b.WriteString(base + "  sync:\n    paths:\n")
	for i := 0; i < 200; i++ {
		b.WriteString("      - rel/path\n")
	}
	_, err := Parse("t.yaml", []byte(b.String()))
	es, ok := err.(*Errors)
	if !ok {
		t.Fatalf("error is %T", err)
	}
	if len(*es) != maxErrors+1 {
		t.Fatalf("got %d errors, want %d", len(*es), maxErrors+1)
	}
	if last := (*es)[maxErrors]; !strings.Contains(last.Msg, "too many errors; only the first 100 are shown") {
		t.Errorf("last error = %v", last)
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		e    Error
		want string
	}{
		{Error{File: "f.yaml", Line: 3, Key: "cluster.arps", Msg: "bad"}, "f.yaml:3: cluster.arps: bad"},
		{Error{File: "f.yaml", Line: 3, Msg: "syntax"}, "f.yaml:3: syntax"},
		{Error{File: "f.yaml", Msg: "no such file or directory"}, "f.yaml: no such file or directory"},
		{Error{Key: "k", Msg: "m"}, "k: m"},
	}
	for _, tt := range tests {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	es := Errors{&tests[0].e, &tests[1].e}
	if got, want := es.Error(), "f.yaml:3: cluster.arps: bad\nf.yaml:3: syntax"; got != want {
		t.Errorf("Errors.Error() = %q, want %q", got, want)
	}
}

func TestLoad(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := write("key", "s3cret-s3cret-s3cret\n")
	empty := write("empty", "\r\n")
	cfg := func(pw string) string {
		return "cluster:\n  group_id: 7\n  password_file: " + pw + "\n  hbdev: [{name: ha1}]\n"
	}
	tests := []struct {
		name, file, want string // want "" means success
	}{
		{"ok", write("ok.yaml", cfg(key)), ""},
		{"password file missing", write("missing.yaml", cfg(filepath.Join(dir, "nope"))), ":3: cluster.password_file: " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{"password file empty", write("empty.yaml", cfg(empty)), ":3: cluster.password_file: password file " + empty + " is empty"},
		{"password file is dir", write("dir.yaml", cfg(dir)), ":3: cluster.password_file: " + dir + " is not a regular file"},
		{"auth and sync off", write("noauth.yaml", "cluster:\n  auth: false\n  sync: {enabled: false}\n  password_file: "+filepath.Join(dir, "nope")+"\n  hbdev: [{name: ha1}]\n"), ""},
		{"auth off, sync on", write("noauth-sync.yaml", "cluster:\n  auth: false\n  password_file: "+filepath.Join(dir, "nope")+"\n  hbdev: [{name: ha1}]\n"), ":3: cluster.password_file: " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{"no such config", filepath.Join(dir, "absent.yaml"), "absent.yaml: no such file or directory"},
		{"too big", write("big.yaml", "#"+strings.Repeat("x", MaxFileSize)+"\n"), "big.yaml: file is larger than"},
		{"all errors together", write("both.yaml", "log_level: loud\n"+cfg(empty)), "both.yaml:1: log_level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.file)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if c.Path != tt.file || c.Cluster.HBDevs[0].Name != "ha1" {
					t.Errorf("config = %+v", c)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; want %q", tt.want)
			}
			if c != nil {
				t.Errorf("config returned with an error")
			}
			if _, ok := err.(*Errors); !ok {
				t.Errorf("error is %T, want *Errors", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error:\n%v\nwant it to contain\n%s", err, tt.want)
			}
		})
	}
	// Both problems of both.yaml are reported.
	_, err := Load(filepath.Join(dir, "both.yaml"))
	if es, ok := err.(*Errors); !ok || len(*es) != 2 {
		t.Errorf("both.yaml: want 2 errors, got %v", err)
	}
}

func TestPassword(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content *string // nil: file absent
		auth    bool
		want    string
		wantErr string
	}{
		{"plain", ptr(key16), true, key16, ""},
		{"newline", ptr(key16 + "\n"), true, key16, ""},
		{"crlf lines", ptr(key16 + "\r\n\r\n"), true, key16, ""},
		{"inner spaces kept", ptr(" a b " + key16 + "\n"), true, " a b " + key16, ""},
		{"binary kept", ptr("\x00\x01\xff" + key16 + "\n"), true, "\x00\x01\xff" + key16, ""},
		{"short", ptr(key16[1:] + "\n"), true, "", "holds 15 bytes, fewer than 16; make a good key with: (umask 077; head -c 32 /dev/urandom | base64 > "},
		{"empty", ptr(""), true, "", "is empty"},
		{"only newline", ptr("\r\n"), true, "", "is empty"},
		{"absent", nil, true, "", "no such file"},
		{"too big", ptr(strings.Repeat("k", MaxPasswordFileSize+1)), true, "", "larger than"},
		{"auth off", nil, false, "", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "key"+string(rune('a'+i)))
			if tt.content != nil {
				if err := os.WriteFile(p, []byte(*tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			c := Cluster{Auth: tt.auth, PasswordFile: p}
			got, err := c.Password()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.auth {
				if got != nil {
					t.Errorf("auth off: got %q, want nil", got)
				}
				return
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := (&Cluster{Auth: true}).Password(); err == nil {
		t.Error("no error with an empty password_file")
	}
}

func ptr(s string) *string { return &s }

// key16 is a key of exactly MinKeyLen bytes.
const key16 = "0123456789abcdef"

func TestHBDevsByPriority(t *testing.T) {
	tests := []struct {
		in, want []HBDev
	}{
		{nil, []HBDev{}},
		{[]HBDev{{Name: "a", Priority: 1}}, []HBDev{{Name: "a", Priority: 1}}},
		{[]HBDev{{Name: "a", Priority: 10}, {Name: "b", Priority: 50}, {Name: "c", Priority: 40}}, []HBDev{{Name: "b", Priority: 50}, {Name: "c", Priority: 40}, {Name: "a", Priority: 10}}},
		{[]HBDev{{Name: "a", Priority: 0}, {Name: "b", Priority: 5}, {Name: "c", Priority: 0}, {Name: "d", Priority: 5}}, []HBDev{{Name: "b", Priority: 5}, {Name: "d", Priority: 5}, {Name: "a", Priority: 0}, {Name: "c", Priority: 0}}},
	}
	for _, tt := range tests {
		c := Cluster{HBDevs: tt.in}
		before := append([]HBDev(nil), tt.in...)
		got := c.HBDevsByPriority()
		if len(got) != len(tt.want) || (len(got) > 0 && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("HBDevsByPriority(%v) = %v, want %v", tt.in, got, tt.want)
		}
		if !reflect.DeepEqual(c.HBDevs, before) {
			t.Errorf("HBDevsByPriority modified HBDevs: %v", c.HBDevs)
		}
	}
}

func TestHeartbeatEtherType(t *testing.T) {
	c := DefaultCluster()
	if got := c.HeartbeatEtherType(); got != 0x8890 {
		t.Errorf("default = %#x, want 0x8890", got)
	}
	c.Transparent = true
	if got := c.HeartbeatEtherType(); got != 0x8891 {
		t.Errorf("transparent = %#x, want 0x8891", got)
	}
	c.EthType.HC = 0x9999
	if got := c.HeartbeatEtherType(); got != 0x9999 {
		t.Errorf("transparent custom = %#x, want 0x9999", got)
	}
}
