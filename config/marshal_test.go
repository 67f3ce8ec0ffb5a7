package config

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func exampleCluster(t *testing.T) Cluster {
	t.Helper()
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("testdata/example.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	return c.Cluster
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestMarshalClusterGolden(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	out, err := MarshalCluster(exampleCluster(t))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "example.cluster.golden", out)
}

func TestMarshalClusterRoundTrip(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	tricky := exampleCluster(t)
	tricky.GroupName = "true"
	tricky.Hooks = Hooks{
		Primary:   "echo 'a: b' # not a comment",
		Secondary: "printf '%s\\n' \"x\" && exit 0",
		Fault:     "line1\nline2",
		Timeout:   1500 * time.Millisecond,
	}
	tricky.Sync.OnChange = map[string]string{
		"/etc/hagent/scripts/z": "123",
		"/etc/hagent/scripts/a": "null",
		"/etc/nftables.conf":    "~",
	}
	tricky.HBInterval = 1234567 * time.Microsecond
	tricky.FailoverHoldTime = 90 * time.Second
	tricky.Transparent = true
	tricky.EthType = EthTypes{HA: 0x0600, HC: 0xffff, L2EP: 0x9000, Session: 0x88b5}
	tricky.Monitor = []string{"yes", "0x10", "port1"}
	tricky.PingServer.Targets = []netip.Addr{netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.254")}

	noAuth := DefaultCluster()
	noAuth.Auth = false
	noAuth.HBDevs = []HBDev{{Name: "ha1"}}
	noAuth.Sync.Enabled = false

	for name, c := range map[string]Cluster{"example": exampleCluster(t), "tricky": tricky, "minimal": noAuth} {
		t.Run(name, func(t *testing.T) {
			out, err := MarshalCluster(c)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseCluster("synced", out)
			if err != nil {
				t.Fatalf("ParseCluster:\n%v\ninput:\n%s", err, out)
			}
			if !reflect.DeepEqual(back, c) {
				t.Errorf("round trip changed the cluster\n got: %+v\nwant: %+v\nyaml:\n%s", back, c, out)
			}
			again, err := MarshalCluster(back)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, out) {
				t.Errorf("second marshal differs:\n%s\nvs\n%s", again, out)
			}
		})
	}
}

func TestMarshalClusterDeterministic(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	c := exampleCluster(t)
	c.Sync.Paths = []string{"/a", "/b", "/c", "/d"}
	c.Sync.OnChange = map[string]string{}
	for _, p := range []string{"/d/x", "/a", "/c/1", "/b/q", "/c/0", "/a/z"} {
		c.Sync.OnChange[p] = "cmd " + p
	}
	first, err := MarshalCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		// Rebuild the map so its iteration order varies.
		cp := c
		cp.Sync.OnChange = map[string]string{}
		for k, v := range c.Sync.OnChange {
			cp.Sync.OnChange[k] = v
		}
		out, err := MarshalCluster(cp)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, first) {
			t.Fatalf("marshal %d differs:\n%s\nvs\n%s", i, out, first)
		}
	}
	if i, j := bytes.Index(first, []byte("/a:")), bytes.Index(first, []byte("/d/x:")); i < 0 || j < 0 || i > j {
		t.Errorf("on_change not sorted:\n%s", first)
	}
	// Different values give different bytes.
	c.HBDevs[0].Priority++
	other, err := MarshalCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other, first) {
		t.Error("a changed priority gave the same bytes")
	}
}

func TestMarshalClusterInvalid(t *testing.T) {
	c := DefaultCluster()
	c.Interfaces = []Interface{{Name: "p1", Addresses: []netip.Prefix{{}}}}
	if _, err := MarshalCluster(c); err == nil {
		t.Error("no error for an invalid prefix")
	}
	c = DefaultCluster()
	c.PingServer.Targets = []netip.Addr{{}}
	if _, err := MarshalCluster(c); err == nil {
		t.Error("no error for an invalid target")
	}
}

func TestParseCluster(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"ok", "password_file: /k\nhbdev: [{name: ha1}]\n", ""},
		{"validated", "password_file: /k\nhbdev: [{name: ha1}]\narps: 0\n", "synced:3: cluster.arps: 0 is out of range 1-60"},
		{"missing key at top", "password_file: /k\n", "synced:1: cluster.hbdev: at least one hbdev is required"},
		{"node key rejected", "password_file: /k\nhbdev: [{name: ha1}]\nnode: {}\n", "synced:3: cluster.node: unknown key"},
		{"whole file rejected", "cluster:\n  hbdev: [{name: ha1}]\n", "synced:1: cluster.cluster: unknown key"},
		{"not a mapping", "[1, 2]\n", "synced:1: want a mapping of cluster keys, got a list"},
		{"syntax", "hbdev: [\n", "synced:2: did not find expected node content"},
		{"empty", "", "synced:1: cluster.password_file: required when auth is true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCluster("synced", []byte(tt.yaml))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.HBDevs[0].Name != "ha1" || c.HBInterval != DefaultHBInterval {
					t.Errorf("cluster = %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error:\n%v\nwant it to contain\n%s", err, tt.want)
			}
			if _, ok := err.(*Errors); !ok {
				t.Errorf("error is %T, want *Errors", err)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{200 * time.Millisecond, "200ms"},
		{20 * time.Second, "20s"},
		{300 * time.Second, "5m"},
		{90 * time.Second, "90s"},
		{24 * time.Hour, "24h"},
		{1500 * time.Microsecond, "1500us"},
		{7, "7ns"},
		{-time.Second, "-1s"},
	}
	for _, tt := range tests {
		got := formatDuration(tt.d)
		if got != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
		if back, err := time.ParseDuration(got); err != nil || back != tt.d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", got, back, err, tt.d)
		}
	}
}

// TestBadFiles checks the full error output for the files in
// testdata/bad against their .err golden files.
func TestBadFiles(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/bad files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(f)
			if err == nil {
				t.Fatal("no error")
			}
			golden(t, strings.TrimPrefix(strings.TrimSuffix(f, ".yaml")+".err", "testdata/"), []byte(err.Error()+"\n"))
		})
	}
}
